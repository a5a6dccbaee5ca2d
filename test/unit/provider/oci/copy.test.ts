import { describe, expect, it } from "vitest";
import { copyImage, executeCopy, inspectImage, planCopy, removeImage, summarizePlan } from "../../../../provider/oci/copy";
import type { FakeRegistry } from "./fakeregistry";
import { bytesFrom, copyRequest, digestOf, plain, seedFake, seedSignature, useRegistryPair } from "./fakeimages";

const pair = useRegistryPair();

function uploadsTo(reg: FakeRegistry): string[] {
  return reg.log.filter((l) => l.method === "PUT" && l.path.includes("/blobs/uploads/")).map((l) => l.query.get("digest") ?? "");
}

function manifestPuts(reg: FakeRegistry): string[] {
  return reg.log.filter((l) => l.method === "PUT" && l.path.includes("/manifests/")).map((l) => l.path.split("/manifests/")[1]!);
}

describe("copyImage between two registries", () => {
  it("copies a single manifest with its digest unchanged and every blob uploaded once", async () => {
    const img = seedFake(pair.src, "team/app", "v1", { layers: 3 });
    const r = await copyImage(copyRequest(`${pair.src.host}/team/app:v1`, `${pair.dst.host}/mirror/app`));
    expect(r.digest).toBe(img.digest);
    expect(r.sourceDigest).toBe(img.digest);
    expect(r.tagRef).toBe(`${pair.dst.host}/mirror/app:v1`);
    expect(r.pinnedRef).toBe(`${pair.dst.host}/mirror/app@${img.digest}`);
    expect(r.platforms).toEqual(["linux/amd64"]);
    expect(r.blobsCopied).toBe(4);
    expect(r.bytesCopied).toBeGreaterThan(3 * 2048);
    expect(pair.dst.manifests.get("mirror/app")?.get("v1")?.bytes.equals(img.bytes)).toBe(true);
    expect(new Set(uploadsTo(pair.dst))).toEqual(new Set(img.blobs));
  });

  it("answers an up-to-date target with exactly two HEAD requests and no writes", async () => {
    seedFake(pair.src, "team/app", "v1");
    await copyImage(copyRequest(`${pair.src.host}/team/app:v1`, `${pair.dst.host}/mirror/app`));
    pair.src.log.length = 0;
    pair.dst.log.length = 0;
    const r = await copyImage(copyRequest(`${pair.src.host}/team/app:v1`, `${pair.dst.host}/mirror/app`));
    expect(r.upToDate).toBe(true);
    expect([...pair.src.calls(), ...pair.dst.calls()]).toEqual([
      `HEAD /v2/team/app/manifests/v1 200`,
      `HEAD /v2/mirror/app/manifests/v1 200`,
    ]);
  });

  it("copies a multi-arch OCI index byte for byte, children before the index", async () => {
    const img = seedFake(pair.src, "team/app", "v2", { platforms: ["linux/amd64", "linux/arm64"] });
    const r = await copyImage(copyRequest(`${pair.src.host}/team/app:v2`, `${pair.dst.host}/mirror/app:v2`));
    expect(r.digest).toBe(img.digest);
    expect(r.platforms).toEqual(["linux/amd64", "linux/arm64"]);
    expect(r.platformsFiltered).toBe(false);
    expect(pair.dst.manifests.get("mirror/app")?.get("v2")?.bytes.equals(img.bytes)).toBe(true);
    const puts = manifestPuts(pair.dst);
    expect(puts[puts.length - 1]).toBe("v2");
    expect(puts.slice(0, -1).sort()).toEqual(img.children.map((c) => c.digest).sort());
    // every blob upload precedes the first manifest PUT
    const firstManifest = pair.dst.log.findIndex((l) => l.method === "PUT" && l.path.includes("/manifests/"));
    const lastBlob = pair.dst.log.map((l) => l.method === "PUT" && l.path.includes("/blobs/uploads/")).lastIndexOf(true);
    expect(lastBlob).toBeLessThan(firstManifest);
  });

  it("copies a Docker manifest list with its digest and media type unchanged", async () => {
    const img = seedFake(pair.src, "team/app", "dl", { platforms: ["linux/amd64", "linux/arm/v7"], format: "docker" });
    const r = await copyImage(copyRequest(`${pair.src.host}/team/app:dl`, `${pair.dst.host}/mirror/app`));
    expect(r.digest).toBe(img.digest);
    expect(r.mediaType).toBe("application/vnd.docker.distribution.manifest.list.v2+json");
    expect(pair.dst.manifests.get("mirror/app")?.get("dl")?.mediaType).toBe("application/vnd.docker.distribution.manifest.list.v2+json");
  });

  it("copies a platform subset as a new index holding only those children, and says the digest changed", async () => {
    const img = seedFake(pair.src, "team/app", "v3", { platforms: ["linux/amd64", "linux/arm64", "linux/s390x"] });
    const r = await copyImage(copyRequest(`${pair.src.host}/team/app:v3`, `${pair.dst.host}/mirror/app`, { platforms: ["linux/arm64"] }));
    expect(r.platformsFiltered).toBe(true);
    expect(r.sourceDigest).toBe(img.digest);
    expect(r.digest).not.toBe(img.digest);
    expect(r.platforms).toEqual(["linux/arm64"]);
    const stored = pair.dst.manifests.get("mirror/app")!.get("v3")!;
    expect(digestOf(stored.bytes)).toBe(r.digest);
    const doc = JSON.parse(stored.bytes.toString()) as { manifests: Array<{ digest: string }> };
    const arm = img.children.find((c) => c.platform === "linux/arm64")!;
    expect(doc.manifests.map((m) => m.digest)).toEqual([arm.digest]);
    expect(new Set(uploadsTo(pair.dst))).toEqual(new Set(arm.blobs));
  });

  it("re-running a platform-subset copy is up to date without uploading anything", async () => {
    seedFake(pair.src, "team/app", "v3", { platforms: ["linux/amd64", "linux/arm64"] });
    const req = copyRequest(`${pair.src.host}/team/app:v3`, `${pair.dst.host}/mirror/app`, { platforms: ["linux/amd64"] });
    const first = await copyImage(req);
    pair.dst.log.length = 0;
    const again = await copyImage(req);
    expect(again.upToDate).toBe(true);
    expect(again.digest).toBe(first.digest);
    expect(again.platformsFiltered).toBe(true);
    expect(pair.dst.calls()).toEqual([`HEAD /v2/mirror/app/manifests/v3 200`]);
  });

  it("refuses a platform the source index lacks and lists the ones it has", async () => {
    seedFake(pair.src, "team/app", "v3", { platforms: ["linux/amd64", "linux/arm64"] });
    await expect(
      planCopy(copyRequest(`${pair.src.host}/team/app:v3`, `${pair.dst.host}/mirror/app`, { platforms: ["linux/ppc64le"] })),
    ).rejects.toThrow(/platform linux\/ppc64le is not in the source index \(it has linux\/amd64, linux\/arm64\)/);
  });

  it("refuses a platform filter that a single-platform source does not match, and accepts one that does", async () => {
    seedFake(pair.src, "team/app", "one", { seed: "single" });
    await expect(
      planCopy(copyRequest(`${pair.src.host}/team/app:one`, `${pair.dst.host}/mirror/app`, { platforms: ["linux/arm64"] })),
    ).rejects.toThrow(/single-platform image for linux\/amd64, but platforms asks for linux\/arm64/);
    const ok = await copyImage(copyRequest(`${pair.src.host}/team/app:one`, `${pair.dst.host}/mirror/app`, { platforms: ["linux/amd64"] }));
    expect(ok.platformsFiltered).toBe(false);
  });

  it("uploads a blob shared by two platforms once", async () => {
    const shared = bytesFrom("shared", 4096);
    seedFake(pair.src, "team/app", "v4", { platforms: ["linux/amd64", "linux/arm64"], sharedLayer: shared });
    const plan = await planCopy(copyRequest(`${pair.src.host}/team/app:v4`, `${pair.dst.host}/mirror/app`));
    expect(plan.blobs.filter((b) => b.digest === digestOf(shared))).toHaveLength(1);
    await executeCopy(plan);
    expect(uploadsTo(pair.dst).filter((d) => d === digestOf(shared))).toHaveLength(1);
  });

  it("skips blobs the target already holds and reports them", async () => {
    const img = seedFake(pair.src, "team/app", "v1", { layers: 2 });
    const layer = bytesFrom("img/linux/amd64/layer0", 2048);
    pair.dst.putBlob("mirror/app", layer);
    const plan = await planCopy(copyRequest(`${pair.src.host}/team/app:v1`, `${pair.dst.host}/mirror/app`));
    expect(plan.blobs.find((b) => b.digest === digestOf(layer))?.action).toBe("skip");
    expect(summarizePlan(plan)).toMatch(/^2 blobs to upload \(2\.\d KiB\), 0 to mount, 1 already there; 1 manifest$/);
    const r = await executeCopy(plan);
    expect(r.blobsSkipped).toBe(1);
    expect(r.blobsCopied).toBe(2);
    expect(r.digest).toBe(img.digest);
  });

  it("never tags an incomplete image: a failed blob upload leaves the target tag absent", async () => {
    seedFake(pair.src, "team/app", "v1", { layers: 3 });
    let puts = 0;
    pair.dst.intercept = (req, res, url) => {
      if (req.method === "PUT" && url.pathname.includes("/blobs/uploads/") && ++puts === 2) {
        res.statusCode = 400;
        res.end(JSON.stringify({ errors: [{ code: "BLOB_UPLOAD_INVALID", message: "nope" }] }));
        return true;
      }
      return false;
    };
    await expect(copyImage(copyRequest(`${pair.src.host}/team/app:v1`, `${pair.dst.host}/mirror/app`))).rejects.toMatchObject({
      code: "HTTP_ERROR",
    });
    expect(manifestPuts(pair.dst)).toEqual([]);
    expect(pair.dst.manifests.get("mirror/app")).toBeUndefined();
  });

  it("fails with MANIFEST_UNKNOWN for a tag the source lacks", async () => {
    seedFake(pair.src, "team/app", "v1");
    await expect(copyImage(copyRequest(`${pair.src.host}/team/app:nope`, `${pair.dst.host}/mirror/app`))).rejects.toMatchObject({
      code: "MANIFEST_UNKNOWN",
      message: expect.stringMatching(/team\/app:nope: manifest not found \(404 MANIFEST_UNKNOWN\)\. Check the tag/),
    });
  });

  it("copies cosign signature tags of the copied digest", async () => {
    const img = seedFake(pair.src, "team/app", "v1");
    const sig = seedSignature(pair.src, "team/app", img.digest);
    const r = await copyImage(copyRequest(`${pair.src.host}/team/app:v1`, `${pair.dst.host}/mirror/app`));
    expect(r.signaturesCopied).toBe(1);
    expect(pair.dst.manifests.get("mirror/app")?.get(`${img.digest.replace(":", "-")}.sig`)?.digest).toBe(sig);
    expect(manifestPuts(pair.dst).at(-1)).toBe("v1");
  });

  it("copies OCI 1.1 referrers of the image by digest, before the tag", async () => {
    const img = seedFake(pair.src, "team/app", "v1");
    const payload = Buffer.from('{"sbom":true}');
    const empty = Buffer.from("{}");
    pair.src.putBlob("team/app", payload);
    pair.src.putBlob("team/app", empty);
    const referrer = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: "application/vnd.oci.image.manifest.v1+json",
        artifactType: "application/spdx+json",
        config: { mediaType: "application/vnd.oci.empty.v1+json", digest: digestOf(empty), size: empty.length },
        layers: [{ mediaType: "application/spdx+json", digest: digestOf(payload), size: payload.length }],
        subject: { mediaType: img.mediaType, digest: img.digest, size: img.bytes.length },
      }),
    );
    const refDigest = pair.src.putManifest("team/app", digestOf(referrer), referrer, "application/vnd.oci.image.manifest.v1+json");
    pair.src.intercept = (req, res, url) => {
      if (req.method !== "GET" || url.pathname !== `/v2/team/app/referrers/${img.digest}`) return false;
      res.setHeader("content-type", "application/vnd.oci.image.index.v1+json");
      res.end(
        JSON.stringify({
          schemaVersion: 2,
          mediaType: "application/vnd.oci.image.index.v1+json",
          manifests: [
            {
              mediaType: "application/vnd.oci.image.manifest.v1+json",
              digest: refDigest,
              size: referrer.length,
              artifactType: "application/spdx+json",
            },
          ],
        }),
      );
      return true;
    };
    const r = await copyImage(copyRequest(`${pair.src.host}/team/app:v1`, `${pair.dst.host}/mirror/app`));
    expect(r.signaturesCopied).toBe(1);
    expect(pair.dst.manifests.get("mirror/app")?.get(refDigest)?.bytes.equals(referrer)).toBe(true);
    expect(manifestPuts(pair.dst)).toEqual([refDigest, "v1"]);
  });

  it("leaves signatures behind when copySignatures is false", async () => {
    const img = seedFake(pair.src, "team/app", "v1");
    seedSignature(pair.src, "team/app", img.digest);
    const r = await copyImage(copyRequest(`${pair.src.host}/team/app:v1`, `${pair.dst.host}/mirror/app`, { copySignatures: false }));
    expect(r.signaturesCopied).toBe(0);
    expect(pair.dst.manifests.get("mirror/app")?.has(`${img.digest.replace(":", "-")}.sig`)).toBe(false);
  });
});

describe("mounts", () => {
  it("mounts every blob from the source repository when source and target share a registry", async () => {
    const img = seedFake(pair.src, "team/app", "v1", { layers: 2 });
    const r = await copyImage(copyRequest(`${pair.src.host}/team/app:v1`, `${pair.src.host}/mirror/app`));
    expect(r.blobsMounted).toBe(3);
    expect(r.blobsCopied).toBe(0);
    expect(r.digest).toBe(img.digest);
    expect(pair.src.log.filter((l) => l.method === "POST" && l.query.get("from") === "team/app" && l.status === 201)).toHaveLength(3);
    expect(uploadsTo(pair.src)).toEqual([]);
  });

  it("mounts from a target repository an earlier copy in this process filled", async () => {
    seedFake(pair.src, "team/app", "v1", { layers: 2 });
    await copyImage(copyRequest(`${pair.src.host}/team/app:v1`, `${pair.dst.host}/mirror/one`));
    pair.dst.log.length = 0;
    const plan = await planCopy(copyRequest(`${pair.src.host}/team/app:v1`, `${pair.dst.host}/mirror/two`));
    expect(plan.blobs.every((b) => b.action === "mount" && b.mountFrom === "mirror/one")).toBe(true);
    const r = await executeCopy(plan);
    expect(r.blobsMounted).toBe(3);
    expect(uploadsTo(pair.dst)).toEqual([]);
  });

  it("falls back to an upload when the registry declines a mount", async () => {
    seedFake(pair.src, "team/app", "v1", { layers: 1 });
    await copyImage(copyRequest(`${pair.src.host}/team/app:v1`, `${pair.dst.host}/mirror/one`));
    pair.dst.repoBlobs.delete("mirror/one"); // the registry no longer links them there: mount answers 202
    const r = await copyImage(copyRequest(`${pair.src.host}/team/app:v1`, `${pair.dst.host}/mirror/two`));
    expect(r.blobsMounted).toBe(0);
    expect(r.blobsCopied).toBe(2);
  });
});

describe("describe and rate limits", () => {
  it("fills platforms and size of an up-to-date copy when asked to describe it", async () => {
    seedFake(pair.src, "team/app", "v2", { platforms: ["linux/amd64", "linux/arm64"] });
    const first = await copyImage(copyRequest(`${pair.src.host}/team/app:v2`, `${pair.dst.host}/mirror/app`));
    const fast = await copyImage(copyRequest(`${pair.src.host}/team/app:v2`, `${pair.dst.host}/mirror/app`));
    expect(fast).toMatchObject({ upToDate: true, platforms: [], totalSize: 0 });
    const described = await copyImage(copyRequest(`${pair.src.host}/team/app:v2`, `${pair.dst.host}/mirror/app`, { describe: true }));
    expect(described).toMatchObject({ upToDate: true, platforms: first.platforms, totalSize: first.totalSize, digest: first.digest });
  });

  it("waits as long as a 429's Retry-After asks before uploading the blob again", async () => {
    seedFake(pair.src, "team/app", "v1", { layers: 1 });
    let limitedAt = 0;
    let retriedAt = 0;
    pair.dst.intercept = (req, res, url) => {
      if (req.method === "PUT" && url.pathname.includes("/blobs/uploads/")) {
        if (!limitedAt) {
          limitedAt = Date.now();
          res.statusCode = 429;
          res.setHeader("retry-after", "1");
          res.end(JSON.stringify({ errors: [{ code: "TOOMANYREQUESTS", message: "slow down" }] }));
          return true;
        }
        retriedAt ||= Date.now();
      }
      return false;
    };
    const r = await copyImage(copyRequest(`${pair.src.host}/team/app:v1`, `${pair.dst.host}/mirror/app`, { concurrency: 1 }));
    expect(r.blobsCopied).toBe(2);
    expect(retriedAt - limitedAt).toBeGreaterThanOrEqual(950);
  });
});

describe("resuming an interrupted blob upload", () => {
  it("asks the registry what it kept and sends only the rest with PATCH", async () => {
    const img = seedFake(pair.src, "team/big", "v1", { layers: 1, layerSize: 256 * 1024 });
    const layer = img.blobs[1]!;
    let cut = false;
    pair.dst.intercept = (req, res, url) => {
      const id = url.pathname.split("/blobs/uploads/")[1];
      if (!cut && req.method === "PUT" && id && url.searchParams.get("digest") === layer) {
        cut = true;
        // Keep the first 100 000 bytes as if they had reached disk, then drop the connection.
        pair.dst.uploads.get(id)!.chunks.push(bytesFrom("img/linux/amd64/layer0", 256 * 1024).subarray(0, 100_000));
        pair.dst.uploads.get(id)!.size = 100_000;
        res.socket?.destroy();
        return true;
      }
      return false;
    };
    const r = await copyImage(copyRequest(`${pair.src.host}/team/big:v1`, `${pair.dst.host}/mirror/big`));
    expect(cut).toBe(true);
    expect(r.digest).toBe(img.digest);
    const patch = pair.dst.log.find((l) => l.method === "PATCH");
    expect(patch).toBeDefined();
    expect(pair.dst.log.some((l) => l.method === "GET" && l.path.includes("/blobs/uploads/") && l.status === 204)).toBe(true);
    expect(pair.dst.blobs.get(layer)?.length).toBe(256 * 1024);
  });
});

describe("inspectImage and removeImage", () => {
  it("inspects with one HEAD and answers undefined for a missing tag", async () => {
    const img = seedFake(pair.src, "team/app", "v1");
    pair.src.log.length = 0;
    expect(await inspectImage(`${pair.src.host}/team/app:v1`, plain)).toMatchObject({ digest: img.digest });
    expect(await inspectImage(`${pair.src.host}/team/app:v9`, plain)).toBeUndefined();
    expect(pair.src.calls()).toHaveLength(2);
  });

  it("deletes the manifest when no other tag points at it, and treats a second delete as success", async () => {
    const img = seedFake(pair.src, "team/app", "v1");
    const first = await removeImage(`${pair.src.host}/team/app:v1`, img.digest, plain);
    expect(first).toMatchObject({ tagDeleted: true, manifestDeleted: true });
    expect(pair.src.manifests.get("team/app")?.has("v1")).toBe(false);
    const again = await removeImage(`${pair.src.host}/team/app:v1`, img.digest, plain);
    expect(again.manifestDeleted).toBe(false);
    expect(again.note).toMatch(/already gone/);
  });

  it("keeps a manifest another tag still points at", async () => {
    const img = seedFake(pair.src, "team/app", "v1");
    pair.src.putManifest("team/app", "stable", img.bytes, img.mediaType);
    const r = await removeImage(`${pair.src.host}/team/app:v1`, img.digest, plain);
    expect(r.manifestDeleted).toBe(false);
    expect(r.note).toMatch(/tag stable still points at/);
    expect(pair.src.manifests.get("team/app")?.has("stable")).toBe(true);
  });

  it("leaves a tag that moved to another digest alone", async () => {
    const img = seedFake(pair.src, "team/app", "v1");
    const other = seedFake(pair.src, "team/app", "v1", { seed: "other" });
    const r = await removeImage(`${pair.src.host}/team/app:v1`, img.digest, plain);
    expect(r).toMatchObject({ tagDeleted: false, manifestDeleted: false });
    expect(pair.src.manifests.get("team/app")?.get("v1")?.digest).toBe(other.digest);
  });
});
