// Faults found by probing `imageyard copy` (issue 7 §4), reproduced on the real distribution 2.8
// registries of the test bed through a fault-injecting proxy (test/testbed/faultproxy.ts): a
// stalled blob, rate limits, a source that cuts a body, a cancelled copy's upload sessions.
import { randomBytes } from "node:crypto";
import { existsSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { afterEach, beforeAll, describe, expect, it } from "vitest";
import { formatEvent, type ProgressEvent } from "../../../../provider/http/progress";
import { copyImage, forgetKnownLocations, inspectImage, type CopyRequest } from "../../../../provider/oci/copy";
import type { RegistryOptions } from "../../../../provider/oci/registry";
import { distributionError, startFaultProxy, type FaultProxy, type FaultRule } from "../../../testbed/faultproxy";
import { digestOf, seedImage, type SeededImage } from "../../../testbed/images";
import { loadRegistryTestbed, type RegistryEndpoint } from "../../../testbed/registry";

const { upstream, mirror } = loadRegistryTestbed().registries;
const run = `f7-${Date.now().toString(36)}-${randomBytes(2).toString("hex")}`;
const quickRetry = { attempts: 3, minDelayMs: 50, maxDelayMs: 200, maxRetryAfterMs: 5000 };

function options(ep: RegistryEndpoint | undefined, extra: RegistryOptions = {}): RegistryOptions {
  const o: RegistryOptions = { dockerConfig: false, retry: quickRetry, scheme: "http", ...extra };
  if (ep?.username && !o.credentials) o.credentials = { username: ep.username, password: ep.password! };
  return o;
}

let image: SeededImage;
let layer: string;
let proxy: FaultProxy | undefined;

async function proxied(ep: RegistryEndpoint, rules: FaultRule[]): Promise<FaultProxy> {
  proxy = await startFaultProxy(ep, rules);
  return proxy;
}

beforeAll(async () => {
  image = await seedImage(upstream, `${run}/app:v1`, { layers: 2, layerSize: "512K", seed: "f7-app" });
  // The largest blob is a layer (the config is small and read while planning).
  layer = [...image.blobs].sort((a, b) => b.size - a.size)[0]!.digest;
});

afterEach(async () => {
  await proxy?.close();
  proxy = undefined;
  forgetKnownLocations();
});

/** A copy from the source behind the proxy to a fresh repository of the mirror. */
function fromProxy(p: FaultProxy, repo: string, extra: Partial<CopyRequest> = {}): CopyRequest {
  return {
    source: `${p.host}/${run}/app:v1`,
    target: `${mirror.host}/${run}/${repo}`,
    sourceOptions: options(undefined),
    targetOptions: options(mirror),
    ...extra,
  };
}

const blobPath = () => new RegExp(`/blobs/${layer}$`);
const short = () => layer.slice(0, "sha256:".length + 12);

describe("§4.1 a source that never answers one blob", () => {
  it("ends at the engine's deadline with TIMEOUT naming the blob and the stalled registry, after 'waiting for' lines", async () => {
    const p = await proxied(upstream, [{ method: "GET", path: blobPath(), fault: { kind: "stall" } }]);
    const lines: string[] = [];
    const started = Date.now();
    const err = await copyImage(fromProxy(p, "stalled"), {
      timeoutMs: 5000,
      waitNoticeMs: 1000,
      onProgress: (ev: ProgressEvent) => lines.push(formatEvent(ev)),
    }).catch((e: unknown) => e);
    const took = Date.now() - started;
    expect(err).toMatchObject({ code: "TIMEOUT" });
    expect((err as Error).message).toContain(short());
    expect((err as Error).message).toContain(`source registry ${p.host}`);
    expect(took).toBeLessThan(10_000);
    expect(
      lines.some((l) => l.includes(`waiting for blob ${short()}`) && l.includes(p.host) && /: [1-4] s$/.test(l)),
      lines.join("\n"),
    ).toBe(true);
    expect(await inspectImage(`${mirror.host}/${run}/stalled:v1`, options(mirror))).toBeUndefined();
  });

  it("turns the lifecycle's AbortSignal.timeout into TIMEOUT naming the blob too (not CANCELLED)", async () => {
    // Every blob stalls (the config read while planning too), so the 2 s cannot race the plan.
    const p = await proxied(upstream, [{ method: "GET", path: /\/blobs\/sha256:/, fault: { kind: "stall" } }]);
    const err = await copyImage(fromProxy(p, "stalled-signal"), { signal: AbortSignal.timeout(2000) }).catch((e: unknown) => e);
    expect(err).toMatchObject({
      code: "TIMEOUT",
      message: expect.stringMatching(/waiting for blob sha256:[0-9a-f]{12} from the source registry 127\.0\.0\.1:\d+/),
    });
  });
});

describe("§4.2 rate limits", () => {
  it("waits out 429 + Retry-After: 1 on the first 5 requests and finishes the copy", async () => {
    const p = await proxied(upstream, [
      {
        times: 5,
        fault: { kind: "status", status: 429, headers: { "retry-after": "1" }, body: distributionError("TOOMANYREQUESTS", "slow down") },
      },
    ]);
    const r = await copyImage(fromProxy(p, "ratelimited"));
    expect(p.hits(0)).toBe(5);
    expect(r.digest).toBe(image.digest);
    expect(await digestOf(mirror, `${run}/ratelimited:v1`)).toBe(image.digest);
  });

  it("waits out 429s on streamed blob uploads too, without spending the blob's attempts", async () => {
    // Three 429s on PUTs, against a blob retry policy of 3 attempts: only a paced retry gets through.
    const p = await proxied(upstream, [
      { method: "PUT", path: /\/blobs\/uploads\//, times: 3, fault: { kind: "status", status: 429, headers: { "retry-after": "1" } } },
    ]);
    const repo = `${run}/ratelimited-put`;
    const r = await copyImage({
      source: image.ref,
      target: `${p.host}/${repo}`,
      sourceOptions: options(upstream),
      targetOptions: options(undefined),
      concurrency: 1,
    });
    expect(r.digest).toBe(image.digest);
    expect(p.hits(0)).toBe(3);
    expect(await digestOf(upstream, `${repo}:v1`)).toBe(image.digest);
  });

  it("pauses every request to a host that said RateLimit-Remaining: 0 until RateLimit-Reset", async () => {
    const p = await proxied(upstream, [
      {
        path: /\/manifests\//,
        times: 1,
        fault: { kind: "headers", headers: { "ratelimit-limit": "100;w=60", "ratelimit-remaining": "0;w=60", "ratelimit-reset": "2" } },
      },
    ]);
    // Pinned by digest, so the manifest GET is the only request to the source until it answers.
    const r = await copyImage(fromProxy(p, "reset", { source: `${p.host}/${run}/app@${image.digest}` }));
    expect(r.digest).toBe(image.digest);
    const [first, second] = p.requests;
    expect(first!.path).toContain("/manifests/");
    expect(second!.at - first!.at).toBeGreaterThanOrEqual(1800);
  });

  it("shares one budget per registry host across copies: the second copy finds it spent", async () => {
    // On a blob GET: a copy needs every one (a 429 on an optional look-up, such as referrers, only
    // costs the extras), and blobs are read again by each copy (manifests come from this process's cache).
    const rules = (): FaultRule[] => [
      { method: "GET", path: /\/blobs\//, times: 1, fault: { kind: "status", status: 429, headers: { "retry-after": "2" } } },
    ];
    const p = await proxied(upstream, rules());
    // Pinned by digest, so the first request is the one the copy needs (no HEAD to race a GET).
    const pinned = { source: `${p.host}/${run}/app@${image.digest}`, rateLimitBudgetMs: 3000 };
    const first = await copyImage(fromProxy(p, "budget-a", pinned));
    expect(first.digest).toBe(image.digest);
    p.setRules(rules());
    const err = await copyImage(fromProxy(p, "budget-b", pinned)).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: "TOO_MANY_REQUESTS", retryable: false });
    expect((err as Error).message).toMatch(new RegExp(`${p.host.replace(/\./g, "\\.")}.*rate-limit.*budget`));
  });
});

describe("§4.3 a source that cuts a blob mid-body", () => {
  it("names the source registry as the side that failed, not the healthy target", async () => {
    const p = await proxied(upstream, [{ method: "GET", path: blobPath(), fault: { kind: "cut", afterBytes: 100_000 } }]);
    const err = await copyImage(fromProxy(p, "cut")).catch((e: unknown) => e);
    const msg = (err as Error).message;
    expect(msg).toContain(`source registry ${p.host}`);
    expect(msg).not.toContain(`cannot reach ${mirror.host}`);
    expect(msg).toMatch(/after \d+ of \d+ bytes/);
    expect(err).toMatchObject({ retryable: true });
  });

  it("still finishes when the source cuts the body only once", async () => {
    const p = await proxied(upstream, [{ method: "GET", path: blobPath(), times: 1, fault: { kind: "cut", afterBytes: 100_000 } }]);
    const r = await copyImage(fromProxy(p, "cut-once"));
    expect(r.digest).toBe(image.digest);
  });
});

/**
 * Upload sessions a registry still holds for a repository: distribution's _uploads/<id> with its
 * `startedat` or `data` (a cancelled one keeps at most an empty hashstates directory).
 */
function openSessions(ep: RegistryEndpoint, repo: string): string[] {
  const dir = join(ep.dataDir, "docker", "registry", "v2", "repositories", repo, "_uploads");
  if (!existsSync(dir)) return [];
  return readdirSync(dir).filter((id) => existsSync(join(dir, id, "startedat")) || existsSync(join(dir, id, "data")));
}

describe("§4.4 a target on a full disk", () => {
  const full = distributionError(
    "UNKNOWN",
    "unknown error",
    "filesystem: write /var/lib/registry/docker/registry/v2/repositories/x/_uploads/y/data: no space left on device",
  );

  it("surfaces the registry's detail as NO_SPACE and leaves no upload session open", async () => {
    const p = await proxied(upstream, [{ method: "PUT", path: /\/blobs\/uploads\//, fault: { kind: "status", status: 500, body: full } }]);
    const repo = `${run}/full`;
    const err = await copyImage({
      source: image.ref,
      target: `${p.host}/${repo}`,
      sourceOptions: options(upstream),
      targetOptions: options(undefined),
    }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: "NO_SPACE" });
    expect((err as Error).message).toContain("no space left on device");
    expect((err as Error).message).toContain(`target registry ${p.host}`);
    expect(p.requests.some((r) => r.method === "POST")).toBe(true);
    expect(openSessions(upstream, repo)).toEqual([]);
  });

  it("cancels the upload sessions of a copy that ran out of time", async () => {
    const p = await proxied(upstream, [{ method: "PUT", path: /\/blobs\/uploads\//, fault: { kind: "stall" } }]);
    const repo = `${run}/stalled-upload`;
    const err = await copyImage(
      { source: image.ref, target: `${p.host}/${repo}`, sourceOptions: options(upstream), targetOptions: options(undefined) },
      { timeoutMs: 2000 },
    ).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: "TIMEOUT", message: expect.stringContaining(`target registry ${p.host}`) });
    expect(p.requests.filter((r) => r.method === "POST").length).toBeGreaterThan(0);
    const deadline = Date.now() + 5000;
    while (openSessions(upstream, repo).length > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    expect(openSessions(upstream, repo)).toEqual([]);
  });
});
