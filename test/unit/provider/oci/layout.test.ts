import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { copyImage, forgetKnownLocations, inspectImage, removeImage } from "../../../../provider/oci/copy";
import { LayoutStore } from "../../../../provider/oci/layout";
import { parseLocation, resolveTarget } from "../../../../provider/oci/location";
import { FakeRegistry } from "./fakeregistry";
import { plain, seedFake } from "./fakeimages";

let reg: FakeRegistry;
let dir: string;

beforeEach(async () => {
  forgetKnownLocations();
  reg = await new FakeRegistry().start();
  dir = await mkdtemp(join(tmpdir(), "iy-layout-"));
});
afterEach(async () => {
  await reg.stop();
  await rm(dir, { recursive: true, force: true });
});

async function files(root: string): Promise<string[]> {
  return (await readdir(root, { recursive: true })).map(String).sort();
}

describe("OCI image layout", () => {
  it("carries a multi-arch image registry → layout → registry with its digest intact", async () => {
    const img = seedFake(reg, "team/app", "v1", { platforms: ["linux/amd64", "linux/arm64"] });
    const out = await copyImage({ source: `${reg.host}/team/app:v1`, target: `oci:${dir}`, sourceOptions: plain });
    expect(out.digest).toBe(img.digest);
    expect(out.tagRef).toBe(`oci:${dir}:v1`);
    const index = JSON.parse(await readFile(join(dir, "index.json"), "utf8"));
    expect(index.manifests).toEqual([
      { mediaType: img.mediaType, digest: img.digest, size: img.bytes.length, annotations: { "org.opencontainers.image.ref.name": "v1" } },
    ]);
    expect(JSON.parse(await readFile(join(dir, "oci-layout"), "utf8"))).toEqual({ imageLayoutVersion: "1.0.0" });
    expect((await files(dir)).filter((f) => f.endsWith(".tmp"))).toEqual([]);

    const back = await copyImage({ source: `oci-layout:${dir}:v1`, target: `${reg.host}/airgap/app`, targetOptions: plain });
    expect(back.digest).toBe(img.digest);
    expect(reg.manifests.get("airgap/app")?.get("v1")?.bytes.equals(img.bytes)).toBe(true);
  });

  it("finds the only image of an untagged layout, and is up to date on a second copy into it", async () => {
    const img = seedFake(reg, "team/app", "v1");
    await copyImage({ source: `${reg.host}/team/app:v1`, target: `oci:${dir}`, sourceOptions: plain });
    expect(await inspectImage(`oci:${dir}`)).toMatchObject({ digest: img.digest });
    const again = await copyImage({ source: `${reg.host}/team/app:v1`, target: `oci:${dir}`, sourceOptions: plain });
    expect(again.upToDate).toBe(true);
  });

  it("asks for a tag when the layout holds several images, naming them", async () => {
    seedFake(reg, "team/app", "v1");
    seedFake(reg, "team/app", "v2", { seed: "two" });
    await copyImage({ source: `${reg.host}/team/app:v1`, target: `oci:${dir}`, sourceOptions: plain });
    await copyImage({ source: `${reg.host}/team/app:v2`, target: `oci:${dir}`, sourceOptions: plain });
    await expect(copyImage({ source: `oci:${dir}`, target: `${reg.host}/x/y:z`, targetOptions: plain })).rejects.toThrow(
      /holds 2 images; name one as oci:.*:TAG \(tags: v1, v2\)/,
    );
    await expect(copyImage({ source: `oci:${dir}:v9`, target: `${reg.host}/x/y`, targetOptions: plain })).rejects.toMatchObject({
      code: "MANIFEST_UNKNOWN",
    });
  });

  it("refuses a source directory that is not a layout", async () => {
    await expect(copyImage({ source: `oci:${dir}/nothing:v1`, target: `${reg.host}/x/y`, targetOptions: plain })).rejects.toThrow(
      /not an OCI image layout/,
    );
  });

  it("never leaves a wrong blob in the layout when the source serves corrupt bytes", async () => {
    const img = seedFake(reg, "team/app", "v1", { layers: 1 });
    const layer = img.blobs[1]!;
    reg.intercept = (req, res, url) => {
      if (req.method === "GET" && url.pathname.endsWith(`/blobs/${layer}`)) {
        const data = Buffer.from(reg.blobs.get(layer)!);
        data[10] = data[10]! ^ 0xff;
        res.setHeader("content-length", String(data.length));
        res.end(data);
        return true;
      }
      return false;
    };
    await expect(copyImage({ source: `${reg.host}/team/app:v1`, target: `oci:${dir}`, sourceOptions: plain })).rejects.toMatchObject({
      code: "DIGEST_MISMATCH",
    });
    const store = new LayoutStore(dir);
    expect(await store.hasBlob(layer, 2048)).toBe(false);
    expect((await files(dir)).filter((f) => f.endsWith(".tmp"))).toEqual([]);
    expect(await store.headManifest("v1")).toBeUndefined();
  });

  it("removes a tag from index.json and keeps the blobs", async () => {
    const img = seedFake(reg, "team/app", "v1");
    await copyImage({ source: `${reg.host}/team/app:v1`, target: `oci:${dir}:keep`, sourceOptions: plain });
    const r = await removeImage(`oci:${dir}:keep`, img.digest);
    expect(r.tagDeleted).toBe(true);
    expect(JSON.parse(await readFile(join(dir, "index.json"), "utf8")).manifests).toEqual([]);
    expect(await new LayoutStore(dir).hasBlob(img.digest, img.bytes.length)).toBe(true);
    expect(await removeImage(`oci:${dir}/gone:keep`, img.digest)).toMatchObject({ tagDeleted: false });
    expect(await files(dir)).not.toContain("gone");
  });
});

describe("locations", () => {
  it("parses layout and registry locations, docker:// included", () => {
    expect(parseLocation("oci:/srv/x:v1")).toMatchObject({ kind: "layout", path: "/srv/x", tag: "v1" });
    expect(parseLocation("oci-layout:/srv/x")).toMatchObject({ kind: "layout", path: "/srv/x" });
    expect(parseLocation("docker://127.0.0.1:5001/team/app")).toMatchObject({
      kind: "registry",
      tagGiven: false,
      ref: { registry: "127.0.0.1:5001", repository: "team/app", tag: "latest" },
    });
    expect(() => parseLocation("oci:/srv/x:bad tag")).toThrow(/not a valid tag/);
  });

  it("gives a target without a tag the source's tag, and refuses a target digest", () => {
    const src = parseLocation("127.0.0.1:5001/team/app:v7");
    expect(resolveTarget(src, parseLocation("127.0.0.1:5002/mirror/app")).display).toBe("127.0.0.1:5002/mirror/app:v7");
    expect(resolveTarget(src, parseLocation("127.0.0.1:5002/mirror/app:pinned")).display).toBe("127.0.0.1:5002/mirror/app:pinned");
    expect(resolveTarget(src, parseLocation("oci:/tmp/l")).display).toBe("oci:/tmp/l:v7");
    const byDigest = parseLocation(`127.0.0.1:5001/team/app@sha256:${"a".repeat(64)}`);
    expect(resolveTarget(byDigest, parseLocation("127.0.0.1:5002/m/a")).display).toBe("127.0.0.1:5002/m/a");
    expect(() => resolveTarget(src, parseLocation(`127.0.0.1:5002/m/a@sha256:${"b".repeat(64)}`))).toThrow(/cannot name a digest/);
  });
});
