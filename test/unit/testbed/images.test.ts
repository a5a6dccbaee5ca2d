import { execFileSync } from "node:child_process";
import { createHash, createPublicKey, verify } from "node:crypto";
import { createReadStream, existsSync, mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pipeline } from "node:stream/promises";
import { createGunzip } from "node:zlib";
import { afterAll, describe, expect, it } from "vitest";
import {
  COSIGN_SIGNATURE_ANNOTATION,
  MEDIA,
  OciLayoutWriter,
  parseSize,
  signatureTag,
  writeImageLayout,
  type Descriptor,
} from "../../testbed/images";

const scratch = mkdtempSync(join(tmpdir(), "iy-images-"));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

function sha256File(path: string): string {
  return `sha256:${createHash("sha256").update(readFileSync(path)).digest("hex")}`;
}

async function gunzipDigest(path: string): Promise<string> {
  const h = createHash("sha256");
  await pipeline(createReadStream(path), createGunzip(), async (src: AsyncIterable<Buffer>) => {
    for await (const c of src) h.update(c);
  });
  return `sha256:${h.digest("hex")}`;
}

function blob(dir: string, d: Descriptor): string {
  return join(dir, "blobs", "sha256", d.digest.slice("sha256:".length));
}

function json<T = any>(dir: string, d: Descriptor): T {
  return JSON.parse(readFileSync(blob(dir, d), "utf8")) as T;
}

function expectBlobMatches(dir: string, d: Descriptor): void {
  const path = blob(dir, d);
  expect(existsSync(path), `${d.digest} exists`).toBe(true);
  expect(statSync(path).size).toBe(d.size);
  expect(sha256File(path)).toBe(d.digest);
}

describe("OCI layout writer", () => {
  it("streams a 256 MiB layer to disk without holding it in memory", async () => {
    const w = new OciLayoutWriter(join(scratch, "big"));
    const before = process.memoryUsage().rss;
    let peak = before;
    const timer = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 10);
    const { descriptor } = await w.writeLayer({ name: "data/big.bin", size: 256 << 20, gzipLevel: 0 });
    clearInterval(timer);
    peak = Math.max(peak, process.memoryUsage().rss);
    expect(descriptor.size).toBeGreaterThan(256 << 20);
    expectBlobMatches(w.dir, descriptor);
    expect((peak - before) / (1 << 20)).toBeLessThan(64);
  });

  it("writes a single-platform OCI image whose digests, sizes, diff IDs and tag all match the files", async () => {
    const dir = join(scratch, "single");
    const img = await writeImageLayout(dir, "v1", { layers: 3, layerSize: "300K", seed: "unit" });
    expect(img.top.mediaType).toBe(MEDIA.ociManifest);
    expect(img.source).toBe(`oci:${dir}:v1`);
    expectBlobMatches(dir, img.top);
    const index = JSON.parse(readFileSync(join(dir, "index.json"), "utf8"));
    expect(index.manifests).toEqual([
      {
        mediaType: img.top.mediaType,
        digest: img.top.digest,
        size: img.top.size,
        annotations: { "org.opencontainers.image.ref.name": "v1" },
      },
    ]);
    expect(JSON.parse(readFileSync(join(dir, "oci-layout"), "utf8"))).toEqual({ imageLayoutVersion: "1.0.0" });
    const manifest = json(dir, img.top);
    expect(manifest.config.mediaType).toBe(MEDIA.ociConfig);
    expect(manifest.layers).toHaveLength(3);
    expectBlobMatches(dir, manifest.config);
    const config = json(dir, manifest.config);
    expect(config).toMatchObject({ os: "linux", architecture: "amd64" });
    for (const [i, l] of (manifest.layers as Descriptor[]).entries()) {
      expect(l.mediaType).toBe(MEDIA.ociLayer);
      expectBlobMatches(dir, l);
      // Random data does not compress: the blob is about as big as the data it holds.
      expect(l.size).toBeGreaterThan(300 * 1024);
      expect(await gunzipDigest(blob(dir, l))).toBe(config.rootfs.diff_ids[i]);
    }
    // An independent reader (GNU tar) sees one file of the requested size per layer.
    const listing = execFileSync("tar", ["-tvzf", blob(dir, manifest.layers[0])], { encoding: "utf8" });
    expect(listing).toMatch(/ 307200 .* data\/linux-amd64-layer000\.bin/);
    expect(img.blobs.map((b) => b.digest).sort()).toEqual(
      [manifest.config.digest, ...manifest.layers.map((l: Descriptor) => l.digest)].sort(),
    );
  });

  it("writes a multi-arch index whose children exist, carry platforms and share the first layers", async () => {
    const dir = join(scratch, "multi");
    const img = await writeImageLayout(dir, "v1", {
      layers: 2,
      layerSize: "64K",
      seed: 7,
      platforms: ["linux/amd64", "linux/arm64/v8"],
      sharedLayers: 1,
    });
    expect(img.top.mediaType).toBe(MEDIA.ociIndex);
    const index = json(dir, img.top);
    expect(index.manifests).toEqual(img.manifests);
    expect(index.manifests.map((m: Descriptor) => m.platform)).toEqual([
      { os: "linux", architecture: "amd64" },
      { os: "linux", architecture: "arm64", variant: "v8" },
    ]);
    const [amd, arm] = (index.manifests as Descriptor[]).map((m) => (expectBlobMatches(dir, m), json(dir, m)));
    expect(amd.layers[0]).toEqual(arm.layers[0]);
    expect(amd.layers[1].digest).not.toBe(arm.layers[1].digest);
    expect(json(dir, arm.config)).toMatchObject({ architecture: "arm64", variant: "v8" });
    // 3 distinct layers (one shared) + 2 configs
    expect(img.blobs).toHaveLength(5);
  });

  it("writes the Docker variant with Docker schema-2 media types and a skopeo dir: view of the same bytes", async () => {
    const dir = join(scratch, "docker");
    const img = await writeImageLayout(dir, "v1", {
      layers: 1,
      layerSize: "10K",
      seed: 1,
      format: "docker",
      platforms: ["linux/amd64", "linux/arm64"],
    });
    expect(img.top.mediaType).toBe(MEDIA.dockerList);
    const list = json(dir, img.top);
    expect(list.mediaType).toBe(MEDIA.dockerList);
    for (const m of img.manifests) {
      expect(m.mediaType).toBe(MEDIA.dockerManifest);
      const man = json(dir, m);
      expect(man.mediaType).toBe(MEDIA.dockerManifest);
      expect(man.config.mediaType).toBe(MEDIA.dockerConfig);
      expect(man.layers.map((l: Descriptor) => l.mediaType)).toEqual([MEDIA.dockerLayer]);
      expect(sha256File(join(dir, "dir", `${m.digest.slice(7)}.manifest.json`))).toBe(m.digest);
    }
    expect(img.source).toBe(`dir:${join(dir, "dir")}`);
    expect(sha256File(join(dir, "dir", "manifest.json"))).toBe(img.top.digest);
    for (const b of img.blobs) expect(sha256File(join(dir, "dir", b.digest.slice(7)))).toBe(b.digest);
  });

  it("gives the same digests for the same seed and different ones without a seed", async () => {
    const spec = { layers: 2, layerSize: "20K", seed: "same", platforms: ["linux/amd64", "linux/arm64"] };
    const a = await writeImageLayout(join(scratch, "seed-a"), "v1", spec);
    const b = await writeImageLayout(join(scratch, "seed-b"), "v1", spec);
    expect(b.top.digest).toBe(a.top.digest);
    const c = await writeImageLayout(join(scratch, "rand-c"), "v1", { layers: 1, layerSize: "20K" });
    const d = await writeImageLayout(join(scratch, "rand-d"), "v1", { layers: 1, layerSize: "20K" });
    expect(c.blobs[0]!.digest).not.toBe(d.blobs[0]!.digest);
  });

  it("writes a cosign-style signature tagged sha256-<hex>.sig whose payload names the image and verifies", async () => {
    const dir = join(scratch, "signed");
    const img = await writeImageLayout(dir, "v1", { layers: 1, layerSize: "1K", seed: 3, withSignature: true });
    const sig = img.signature!;
    expect(sig.tag).toBe(`sha256-${img.top.digest.slice(7)}.sig`);
    expect(signatureTag(img.top.digest)).toBe(sig.tag);
    const index = JSON.parse(readFileSync(join(dir, "index.json"), "utf8"));
    expect(index.manifests.find((m: Descriptor) => m.annotations?.["org.opencontainers.image.ref.name"] === sig.tag)?.digest).toBe(
      sig.manifest.digest,
    );
    const manifest = json(dir, sig.manifest);
    expect(manifest.mediaType).toBe(MEDIA.ociManifest);
    expect(manifest.layers).toHaveLength(1);
    const layer = manifest.layers[0] as Descriptor;
    expect(layer.mediaType).toBe(MEDIA.cosignPayload);
    expectBlobMatches(dir, layer);
    const payload = readFileSync(blob(dir, layer));
    expect(JSON.parse(payload.toString()).critical.image["docker-manifest-digest"]).toBe(img.top.digest);
    const signature = Buffer.from(layer.annotations![COSIGN_SIGNATURE_ANNOTATION]!, "base64");
    expect(verify(null, payload, createPublicKey(readFileSync(join(dir, "cosign.pub"), "utf8")), signature)).toBe(true);
    expect(verify(null, Buffer.from("tampered"), createPublicKey(sig.publicKeyPem), signature)).toBe(false);
  });

  it("parses sizes the way the bench and tests write them", () => {
    expect(parseSize("128M")).toBe(128 << 20);
    expect(parseSize("1GiB")).toBe(1 << 30);
    expect(parseSize("512k")).toBe(512 << 10);
    expect(parseSize(42)).toBe(42);
    expect(() => parseSize("lots")).toThrow(/expected bytes/);
  });
});
