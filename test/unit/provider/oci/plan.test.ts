import { describe, expect, it } from "vitest";
import { executeCopy, planCopy, summarizePlan, type CopyPlan } from "../../../../provider/oci/copy";
import type { FakeRegistry } from "./fakeregistry";
import { bytesFrom, copyRequest, digestOf, OCI_INDEX, OCI_MANIFEST, seedFake, seedSignature, useRegistryPair } from "./fakeimages";

const pair = useRegistryPair();

const writes = (reg: FakeRegistry) => reg.log.filter((l) => l.method !== "GET" && l.method !== "HEAD");

/** An OCI manifest in `repo` whose layers are given descriptors (data pushed only for those with bytes). */
function manifestWith(
  reg: FakeRegistry,
  repo: string,
  layers: Array<{ data?: Buffer; descriptor?: Record<string, unknown> }>,
  arch = "amd64",
): { digest: string; bytes: Buffer } {
  const config = Buffer.from(JSON.stringify({ os: "linux", architecture: arch }));
  reg.putBlob(repo, config);
  const descs = layers.map((l) => {
    if (l.data) reg.putBlob(repo, l.data);
    return l.descriptor ?? { mediaType: "application/vnd.oci.image.layer.v1.tar", digest: digestOf(l.data!), size: l.data!.length };
  });
  const bytes = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: digestOf(config), size: config.length },
      layers: descs,
    }),
  );
  return { digest: reg.putManifest(repo, digestOf(bytes), bytes, OCI_MANIFEST), bytes };
}

describe("planCopy", () => {
  it("writes nothing, lists children before the index and every blob to upload for an empty target", async () => {
    const img = seedFake(pair.src, "team/app", "v1", { platforms: ["linux/amd64", "linux/arm/v7"], layers: 2, layerSize: 1000 });
    const plan = await planCopy(copyRequest(`${pair.src.host}/team/app:v1`, `${pair.dst.host}/mirror/app`));
    expect(writes(pair.src)).toEqual([]);
    expect(writes(pair.dst)).toEqual([]);
    expect(plan.manifests.map((m) => [m.role, m.platform ?? "", m.tag ?? "", m.action])).toEqual([
      ["child", "linux/amd64", "", "put"],
      ["child", "linux/arm/v7", "", "put"],
      ["index", "", "v1", "put"],
    ]);
    expect(plan.manifests.at(-1)!.bytes.equals(img.bytes)).toBe(true);
    expect(plan.blobs.every((b) => b.action === "upload")).toBe(true);
    expect(plan.totals.bytesToUpload).toBe(plan.blobs.reduce((n, b) => n + b.size, 0));
    expect(plan.totalSize).toBe(plan.totals.bytesToUpload + plan.manifests.reduce((n, m) => n + m.size, 0));
    expect(plan.tagRef).toBe(`${pair.dst.host}/mirror/app:v1`);
    expect(plan.sourceRef).toBe(`${pair.src.host}/team/app@${img.digest}`);
  });

  it("does not HEAD the blobs of child manifests the target already has", async () => {
    const img = seedFake(pair.src, "team/app", "v1", { platforms: ["linux/amd64", "linux/arm64"] });
    const amd = img.children.find((c) => c.platform === "linux/amd64")!;
    await executeCopy(await planCopy(copyRequest(`${pair.src.host}/team/app@${amd.digest}`, `${pair.dst.host}/mirror/app:amd`)));
    pair.dst.log.length = 0;
    const plan = await planCopy(copyRequest(`${pair.src.host}/team/app:v1`, `${pair.dst.host}/mirror/app`));
    expect(plan.manifests.find((m) => m.digest === amd.digest)?.action).toBe("skip");
    const headed = pair.dst.log.filter((l) => l.method === "HEAD" && l.path.includes("/blobs/")).map((l) => l.path.split("/blobs/")[1]);
    expect(headed.some((d) => amd.blobs.includes(d!) && !img.children.find((c) => c.platform === "linux/arm64")!.blobs.includes(d!))).toBe(
      false,
    );
  });

  it("keeps a filtered platform's buildx attestation and drops the others'", async () => {
    const amd = manifestWith(pair.src, "team/app", [{ data: bytesFrom("amd", 500) }]);
    const arm = manifestWith(pair.src, "team/app", [{ data: bytesFrom("arm", 500) }], "arm64");
    const att = (of: string, seed: string) => ({ ...manifestWith(pair.src, "team/app", [{ data: bytesFrom(seed, 100) }], "unknown"), of });
    const atts = [att(amd.digest, "att-amd"), att(arm.digest, "att-arm")];
    const index = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: OCI_INDEX,
        manifests: [
          { mediaType: OCI_MANIFEST, digest: amd.digest, size: amd.bytes.length, platform: { os: "linux", architecture: "amd64" } },
          { mediaType: OCI_MANIFEST, digest: arm.digest, size: arm.bytes.length, platform: { os: "linux", architecture: "arm64" } },
          ...atts.map((a) => ({
            mediaType: OCI_MANIFEST,
            digest: a.digest,
            size: a.bytes.length,
            platform: { os: "unknown", architecture: "unknown" },
            annotations: { "vnd.docker.reference.digest": a.of, "vnd.docker.reference.type": "attestation-manifest" },
          })),
        ],
      }),
    );
    pair.src.putManifest("team/app", "v1", index, OCI_INDEX);
    const plan = await planCopy(copyRequest(`${pair.src.host}/team/app:v1`, `${pair.dst.host}/mirror/app`, { platforms: ["linux/arm64"] }));
    expect(plan.platforms).toEqual(["linux/arm64"]);
    expect(plan.manifests.filter((m) => m.role === "child").map((m) => m.digest)).toEqual([arm.digest, atts[1]!.digest]);
    const kept = JSON.parse(plan.manifests.at(-1)!.bytes.toString()) as { manifests: Array<{ digest: string }> };
    expect(kept.manifests.map((m) => m.digest)).toEqual([arm.digest, atts[1]!.digest]);
    expect(summarizePlan(plan)).toMatch(new RegExp(`; platforms linux/arm64 only: new digest ${plan.digest}$`));
  });

  it("leaves foreign (non-distributable) layers out of the blobs to copy", async () => {
    const foreign = {
      mediaType: "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
      digest: digestOf(Buffer.from("windows base")),
      size: 12,
      urls: ["https://example.invalid/layer"],
    };
    const local = bytesFrom("local", 300);
    const m = manifestWith(pair.src, "team/win", [{ descriptor: foreign }, { data: local }]);
    pair.src.putManifest("team/win", "v1", m.bytes, OCI_MANIFEST);
    const plan = await planCopy(copyRequest(`${pair.src.host}/team/win:v1`, `${pair.dst.host}/mirror/win`));
    expect(plan.blobs.map((b) => b.digest)).not.toContain(foreign.digest);
    expect(plan.blobs.map((b) => b.digest)).toContain(digestOf(local));
  });

  it("finds cosign .sig, .att and .sbom tags of the image and of each child", async () => {
    const img = seedFake(pair.src, "team/app", "v1", { platforms: ["linux/amd64", "linux/arm64"] });
    seedSignature(pair.src, "team/app", img.digest, "sig");
    seedSignature(pair.src, "team/app", img.digest, "att");
    seedSignature(pair.src, "team/app", img.children[1]!.digest, "sbom");
    const plan = await planCopy(copyRequest(`${pair.src.host}/team/app:v1`, `${pair.dst.host}/mirror/app`));
    expect(plan.signatures).toBe(3);
    expect(
      plan.manifests
        .filter((m) => m.role === "signature")
        .map((m) => m.tag!.slice(-4))
        .sort(),
    ).toEqual([".att", ".sig", "sbom"]);
    expect(plan.manifests.at(-1)!.role).toBe("index");
    expect(summarizePlan(plan)).toContain("(3 signatures)");
  });
});

describe("summarizePlan and executeCopy's contract", () => {
  it("says up to date with the digest when there is nothing to do", async () => {
    const img = seedFake(pair.src, "team/app", "v1");
    await executeCopy(await planCopy(copyRequest(`${pair.src.host}/team/app:v1`, `${pair.dst.host}/mirror/app`)));
    const plan = await planCopy(copyRequest(`${pair.src.host}/team/app:v1`, `${pair.dst.host}/mirror/app`));
    expect(summarizePlan(plan)).toBe(`up to date (${img.digest})`);
  });

  it("refuses to execute a plan that planCopy did not make in this process", async () => {
    seedFake(pair.src, "team/app", "v1");
    const plan = await planCopy(copyRequest(`${pair.src.host}/team/app:v1`, `${pair.dst.host}/mirror/app`));
    const copied = JSON.parse(JSON.stringify(plan)) as CopyPlan;
    await expect(executeCopy(copied)).rejects.toThrow(/not made by planCopy in this process/);
  });
});
