// copyImage against the real distribution 2.8 registries of the test bed. Images are seeded with
// skopeo and digests checked with skopeo, so the engine is judged by an independent tool.
import { randomBytes } from "node:crypto";
import { createServer, request as httpRequest, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { copyImage, forgetKnownLocations, inspectImage, planCopy, removeImage, type CopyRequest } from "../../../../provider/oci/copy";
import { RegistryClient, type RegistryOptions } from "../../../../provider/oci/registry";
import { digestOf, seedImage, type SeededImage } from "../../../testbed/images";
import {
  defaultStateDir,
  loadRegistryTestbed,
  readRequests,
  requestLogMark,
  startRegistry,
  type RegistryEndpoint,
  type RegistryHandle,
} from "../../../testbed/registry";

const tb = loadRegistryTestbed();
const { upstream, mirror, tls, token } = tb.registries;
const run = `b2-${Date.now().toString(36)}-${randomBytes(2).toString("hex")}`;
const quickRetry = { attempts: 3, minDelayMs: 50, maxDelayMs: 200, maxRetryAfterMs: 2000 };

/** Registry options for an endpoint of the test bed: its credentials and CA, no docker config. */
function options(ep: RegistryEndpoint, extra: RegistryOptions = {}): RegistryOptions {
  const o: RegistryOptions = { dockerConfig: false, retry: quickRetry, ...extra };
  const user = ep.pushUser ?? (ep.username ? { username: ep.username, password: ep.password! } : undefined);
  if (user && !o.credentials) o.credentials = user;
  if (ep.certDir) o.certDir = ep.certDir;
  return o;
}

function req(source: string, target: string, from: RegistryEndpoint, to: RegistryEndpoint, extra: Partial<CopyRequest> = {}): CopyRequest {
  return { source, target, sourceOptions: options(from), targetOptions: options(to), ...extra };
}

let single: SeededImage;
let multi: SeededImage;
let list: SeededImage;

beforeAll(async () => {
  forgetKnownLocations();
  [single, multi, list] = await Promise.all([
    seedImage(upstream, `${run}/single:v1`, { layers: 2, layerSize: "256K", seed: "b2-single" }),
    seedImage(upstream, `${run}/multi:v1`, {
      layers: 2,
      layerSize: "256K",
      platforms: ["linux/amd64", "linux/arm64", "linux/arm/v7"],
      sharedLayers: 1,
      seed: "b2-multi",
      withSignature: true,
    }),
    seedImage(upstream, `${run}/list:v1`, {
      layers: 1,
      layerSize: "128K",
      platforms: ["linux/amd64", "linux/arm64"],
      format: "docker",
      seed: "b2-list",
    }),
  ]);
});

describe("copyImage against distribution 2.8", () => {
  it("copies a single-platform image to an htpasswd registry with the digest unchanged", async () => {
    const r = await copyImage(req(single.ref, `${mirror.host}/${run}/single`, upstream, mirror));
    expect(r.digest).toBe(single.digest);
    expect(r.blobsCopied).toBe(single.blobs.length);
    expect(await digestOf(mirror, `${run}/single:v1`)).toBe(single.digest);
  });

  it("copies a multi-arch OCI index byte for byte, its signature tag with it", async () => {
    const r = await copyImage(req(multi.ref, `${mirror.host}/${run}/multi`, upstream, mirror));
    expect(r.digest).toBe(multi.digest);
    expect(r.platforms).toEqual(["linux/amd64", "linux/arm64", "linux/arm/v7"]);
    expect(r.signaturesCopied).toBe(1);
    expect(await digestOf(mirror, `${run}/multi:v1`)).toBe(multi.digest);
    expect(await digestOf(mirror, `${run}/multi:${multi.signature!.tag}`)).toBe(multi.signature!.digest);
    // one shared layer across three platforms is uploaded once; the signature adds its config and payload
    expect(r.blobsCopied).toBe(multi.blobs.length + 2);
  });

  it("copies a Docker manifest list with its digest unchanged", async () => {
    const r = await copyImage(req(list.ref, `${mirror.host}/${run}/list`, upstream, mirror));
    expect(r.digest).toBe(list.digest);
    expect(r.mediaType).toBe("application/vnd.docker.distribution.manifest.list.v2+json");
    expect(await digestOf(mirror, `${run}/list:v1`)).toBe(list.digest);
  });

  it("copies a platform subset as a new index whose digest the registry confirms", async () => {
    const r = await copyImage(req(multi.ref, `${mirror.host}/${run}/arm64-only:v1`, upstream, mirror, { platforms: ["linux/arm64"] }));
    expect(r.platformsFiltered).toBe(true);
    expect(r.digest).not.toBe(multi.digest);
    expect(r.platforms).toEqual(["linux/arm64"]);
    expect(await digestOf(mirror, `${run}/arm64-only:v1`)).toBe(r.digest);
  });

  it("finds an up-to-date target with at most two requests in all", async () => {
    await copyImage(req(single.ref, `${mirror.host}/${run}/noop`, upstream, mirror));
    const marks = [requestLogMark(upstream), requestLogMark(mirror)];
    let counted = 0;
    const counting = (ep: RegistryEndpoint) => options(ep, { onRequest: () => counted++ });
    const r = await copyImage({
      source: single.ref,
      target: `${mirror.host}/${run}/noop`,
      sourceOptions: counting(upstream),
      targetOptions: counting(mirror),
    });
    expect(r.upToDate).toBe(true);
    expect(counted).toBeLessThanOrEqual(2);
    // the registries' own access logs agree (lines appear once responses complete)
    const deadline = Date.now() + 3000;
    let logged = 0;
    while (Date.now() < deadline) {
      // only this image's repositories: other test files share the registries
      const ours = (e: { path: string }) => e.path.includes(`/${run}/single/`) || e.path.includes(`/${run}/noop/`);
      logged = readRequests(upstream, marks[0]).filter(ours).length + readRequests(mirror, marks[1]).filter(ours).length;
      if (logged >= counted) break;
      await new Promise((res) => setTimeout(res, 20));
    }
    expect(logged).toBe(counted);
  });

  it("mounts every blob when source and target are repositories of one registry", async () => {
    const r = await copyImage(req(single.ref, `${upstream.host}/${run}/mounted`, upstream, upstream));
    expect(r.blobsMounted).toBe(single.blobs.length);
    expect(r.blobsCopied).toBe(0);
    expect(await digestOf(upstream, `${run}/mounted:v1`)).toBe(single.digest);
  });

  it("copies to the TLS registry (CA from certDir) and to the token registry", async () => {
    const a = await copyImage(req(single.ref, `${tls.host}/${run}/single`, upstream, tls));
    expect(a.digest).toBe(single.digest);
    expect(await digestOf(tls, `${run}/single:v1`)).toBe(single.digest);
    const b = await copyImage(req(list.ref, `${token.host}/${run}/list`, upstream, token));
    expect(b.digest).toBe(list.digest);
    expect(await digestOf(token, `${run}/list:v1`)).toBe(list.digest);
  });

  it("refuses wrong credentials with REGISTRY_UNAUTHORIZED and tags nothing", async () => {
    const bad = {
      ...options(mirror),
      credentials: { username: mirror.username!, password: "wrong-password" },
      credentialsInput: "targetAuth",
    };
    const err = await copyImage({
      source: single.ref,
      target: `${mirror.host}/${run}/badcreds`,
      sourceOptions: options(upstream),
      targetOptions: bad,
    }).catch((e: unknown) => e);
    expect(err).toMatchObject({
      code: "REGISTRY_UNAUTHORIZED",
      message: expect.stringMatching(/registry refused the credentials \(401.*\)\. Check targetAuth for 127\.0\.0\.1:\d+/),
    });
    expect((err as Error).message).not.toContain("wrong-password");
    expect(await inspectImage(`${mirror.host}/${run}/badcreds:v1`, options(mirror))).toBeUndefined();
  });

  it("fails with MANIFEST_UNKNOWN for a tag the source does not have", async () => {
    await expect(copyImage(req(`${upstream.host}/${run}/single:nope`, `${mirror.host}/${run}/x`, upstream, mirror))).rejects.toMatchObject({
      code: "MANIFEST_UNKNOWN",
      message: expect.stringContaining(`${run}/single:nope: manifest not found (404 MANIFEST_UNKNOWN)`),
    });
  });

  it("removes a mirror: the manifest goes when no other tag holds it, and a second removal is fine", async () => {
    await copyImage(req(single.ref, `${mirror.host}/${run}/removable`, upstream, mirror));
    const first = await removeImage(`${mirror.host}/${run}/removable:v1`, single.digest, options(mirror));
    expect(first).toMatchObject({ tagDeleted: true, manifestDeleted: true });
    expect(await inspectImage(`${mirror.host}/${run}/removable:v1`, options(mirror))).toBeUndefined();
    const again = await removeImage(`${mirror.host}/${run}/removable:v1`, single.digest, options(mirror));
    expect(again.manifestDeleted).toBe(false);
  });

  it("removing a signed multi-arch mirror also removes its signature tag and child manifests", async () => {
    const repo = `${run}/signed-removable`;
    const r = await copyImage(req(multi.ref, `${mirror.host}/${repo}`, upstream, mirror));
    expect(r.signaturesCopied).toBe(1);
    const out = await removeImage(`${mirror.host}/${repo}:v1`, multi.digest, options(mirror));
    expect(out).toMatchObject({ manifestDeleted: true, note: expect.stringMatching(/also removed 4 signature\/child manifests/) });
    const client = new RegistryClient(mirror.host, options(mirror));
    expect(await client.listTags(repo).catch(() => [])).toEqual([]);
    for (const child of multi.manifests) expect(await client.headManifest(repo, child.digest)).toBeUndefined();
  });
});

describe("a source that serves corrupt blob bytes", () => {
  let proxy: Server;
  let proxyHost: string;
  let corrupted = 0;

  beforeAll(async () => {
    const layer = single.blobs[single.blobs.length - 1]!.digest;
    // Forwards to upstream; flips one byte of one layer on its way through.
    proxy = createServer((inReq, inRes) => {
      const out = httpRequest(
        { host: "127.0.0.1", port: upstream.port, method: inReq.method, path: inReq.url, headers: inReq.headers },
        (upRes) => {
          inRes.writeHead(upRes.statusCode ?? 502, upRes.headers);
          let flipped = inReq.method !== "GET" || !inReq.url?.endsWith(`/blobs/${layer}`);
          upRes.on("data", (chunk: Buffer) => {
            if (!flipped) {
              chunk = Buffer.from(chunk);
              chunk[Math.floor(chunk.length / 2)]! ^= 0x01;
              flipped = true;
              corrupted++;
            }
            inRes.write(chunk);
          });
          upRes.on("end", () => inRes.end());
        },
      );
      inReq.pipe(out);
    });
    await new Promise<void>((r) => proxy.listen(0, "127.0.0.1", r));
    proxyHost = `127.0.0.1:${(proxy.address() as AddressInfo).port}`;
  });
  afterAll(() => new Promise<void>((r) => proxy.close(() => r())));

  it("fails with DIGEST_MISMATCH, commits no such blob and creates no tag", async () => {
    const err = await copyImage({
      source: `${proxyHost}/${run}/single:v1`,
      target: `${mirror.host}/${run}/corrupt`,
      sourceOptions: { scheme: "http", dockerConfig: false, retry: quickRetry },
      targetOptions: options(mirror),
    }).catch((e: unknown) => e);
    expect(corrupted).toBeGreaterThan(0);
    expect(err).toMatchObject({ code: "DIGEST_MISMATCH" });
    expect((err as Error).message).toMatch(
      /^blob sha256:[0-9a-f]{12}… from 127\.0\.0\.1:\d+\/.*: expected sha256:[0-9a-f]{64}, got sha256:[0-9a-f]{64} after \d+ bytes \(DIGEST_MISMATCH\); nothing was committed/,
    );
    const layer = single.blobs[single.blobs.length - 1]!;
    expect(await new RegistryClient(mirror.host, options(mirror)).headBlob(`${run}/corrupt`, layer.digest)).toBeUndefined();
    expect(await inspectImage(`${mirror.host}/${run}/corrupt:v1`, options(mirror))).toBeUndefined();
  });
});

describe("a copy interrupted by the target registry dying", () => {
  let target: RegistryHandle;
  let big: SeededImage;

  beforeAll(async () => {
    target = await startRegistry(defaultStateDir(), "b2-crash", { auth: "none", tls: false });
    big = await seedImage(upstream, `${run}/big:v1`, { layers: 2, layerSize: "48M", gzipLevel: 0, seed: "b2-big" });
  }, 300_000);
  afterAll(async () => {
    await target?.stop().catch(() => undefined);
  });

  it("fails without tagging, then a re-run after the restart completes with the right digest", async () => {
    let killing: Promise<void> | undefined;
    const request = req(big.ref, `${target.endpoint.host}/${run}/big`, upstream, target.endpoint);
    const err = await copyImage(request, {
      onProgress: (ev) => {
        if (ev.phase === "blob" && (ev.bytes ?? 0) > 8 * 1024 * 1024 && !killing) killing = target.kill();
      },
    }).catch((e: unknown) => e);
    await killing;
    expect(killing).toBeDefined();
    expect(err).toMatchObject({ retryable: true });
    await target.start();
    expect(await inspectImage(`${target.endpoint.host}/${run}/big:v1`, options(target.endpoint))).toBeUndefined();
    const r = await copyImage(request);
    expect(r.digest).toBe(big.digest);
    expect(await digestOf(target.endpoint, `${run}/big:v1`)).toBe(big.digest);
  }, 300_000);

  // distribution 2.8 keeps the session across a restart but refuses it when the bytes on disk
  // differ from the offset in its signed _state (always, after a broken body): the engine must ask,
  // hear "gone", and start that blob again. The resume-from-Range path is covered by unit tests.
  it("finishes in the same run when the target restarts mid-blob: asks for the session, then restarts the blob", async () => {
    forgetKnownLocations();
    let restarting: Promise<unknown> | undefined;
    const patient = { ...options(target.endpoint), retry: { attempts: 12, minDelayMs: 200, maxDelayMs: 1000, maxRetryAfterMs: 2000 } };
    const r = await copyImage(
      {
        source: big.ref,
        target: `${target.endpoint.host}/${run}/resumed`,
        sourceOptions: options(upstream),
        targetOptions: patient,
        concurrency: 1,
      },
      {
        onProgress: (ev) => {
          if (ev.phase === "blob" && (ev.bytes ?? 0) > 16 * 1024 * 1024 && !restarting)
            restarting = target.kill().then(() => target.start());
        },
      },
    );
    await restarting;
    expect(restarting).toBeDefined();
    expect(r.digest).toBe(big.digest);
    expect(await digestOf(target.endpoint, `${run}/resumed:v1`)).toBe(big.digest);
    const log = readRequests(target.endpoint, 0);
    expect(log.some((l) => l.method === "GET" && l.path.includes(`/${run}/resumed/blobs/uploads/`))).toBe(true);
    expect(log.filter((l) => l.method === "PUT" && l.path.includes(`/${run}/resumed/blobs/uploads/`) && l.status === 201)).toHaveLength(
      big.blobs.length,
    );
  }, 300_000);

  it("plans nothing to upload for the completed copy", async () => {
    const plan = await planCopy(req(big.ref, `${target.endpoint.host}/${run}/big`, upstream, target.endpoint));
    expect(plan.upToDate).toBe(true);
  });
});
