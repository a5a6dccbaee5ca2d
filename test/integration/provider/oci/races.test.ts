// Issue 7 §4.5–4.7 on the real test bed: concurrent copies of one image into one tag, credentials
// typed into a reference, and a 401 that points the credentials at a foreign plain-http realm.
import { randomBytes } from "node:crypto";
import { afterEach, beforeAll, describe, expect, it } from "vitest";
import { copyImage, forgetKnownLocations } from "../../../../provider/oci/copy";
import type { RegistryOptions } from "../../../../provider/oci/registry";
import { clearAuthCache } from "../../../../provider/oci/auth";
import { distributionError, startFaultProxy, startRealmRecorder, type FaultProxy, type RealmRecorder } from "../../../testbed/faultproxy";
import { digestOf, seedImage, type SeededImage } from "../../../testbed/images";
import { loadRegistryTestbed, type RegistryEndpoint } from "../../../testbed/registry";

const { upstream, mirror } = loadRegistryTestbed().registries;
const run = `r7-${Date.now().toString(36)}-${randomBytes(2).toString("hex")}`;

function options(ep: RegistryEndpoint | undefined, extra: RegistryOptions = {}): RegistryOptions {
  const o: RegistryOptions = { dockerConfig: false, scheme: "http", ...extra };
  if (ep?.username && !o.credentials) o.credentials = { username: ep.username, password: ep.password! };
  return o;
}

let image: SeededImage;
beforeAll(async () => {
  image = await seedImage(upstream, `${run}/app:v1`, { layers: 3, layerSize: "1M", seed: `r7-${run}` });
});

describe("§4.5 concurrent copies of one image into one tag", () => {
  it("30 copies at once of the same image to the same tag all succeed with the right digest", async () => {
    forgetKnownLocations();
    const target = `${mirror.host}/${run}/same`;
    const results = await Promise.allSettled(
      Array.from({ length: 30 }, () =>
        copyImage({ source: image.ref, target, sourceOptions: options(upstream), targetOptions: options(mirror) }),
      ),
    );
    const failed = results.flatMap((r) => (r.status === "rejected" ? [String((r.reason as Error).message)] : []));
    expect(failed).toEqual([]);
    expect(await digestOf(mirror, `${run}/same:v1`)).toBe(image.digest);
  }, 180_000);
});

describe("§4.5 the registry rejecting a verified blob with DIGEST_INVALID (the race's outcome, through a proxy)", () => {
  let proxy: FaultProxy | undefined;
  afterEach(async () => {
    await proxy?.close();
    proxy = undefined;
  });
  const invalid = distributionError("DIGEST_INVALID", "provided digest did not match uploaded content");

  it("looks whether the blob landed (another upload committed it) and finishes the copy", async () => {
    // The registry stores the blob; the answer says DIGEST_INVALID, as the losing side of the race hears.
    proxy = await startFaultProxy(mirror, [
      { method: "PUT", path: /\/blobs\/uploads\//, times: 1, fault: { kind: "replace", status: 400, body: invalid } },
    ]);
    const r = await copyImage({
      source: image.ref,
      target: `${proxy.host}/${run}/landed`,
      sourceOptions: options(upstream),
      targetOptions: options(mirror),
    });
    expect(r.digest).toBe(image.digest);
    expect(proxy.hits(0)).toBe(1);
    expect(proxy.requests.filter((q) => q.method === "HEAD" && /\/blobs\/sha256:/.test(q.path)).length).toBeGreaterThan(image.blobs.length);
  });

  it("retries once when the blob did not land, then says truthfully what happened", async () => {
    proxy = await startFaultProxy(mirror, [
      { method: "PUT", path: /\/blobs\/uploads\//, fault: { kind: "status", status: 400, body: invalid } },
    ]);
    const err = await copyImage({
      source: image.ref,
      target: `${proxy.host}/${run}/rejected`,
      sourceOptions: options(upstream),
      targetOptions: options(mirror),
      concurrency: 1,
    }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: "DIGEST_MISMATCH" });
    const msg = (err as Error).message;
    expect(msg).toMatch(
      /rejected the upload twice as not matching its digest \(400 DIGEST_INVALID\), although every byte sent was verified/,
    );
    expect(msg).not.toMatch(/changed in transit/);
    expect(proxy.requests.filter((q) => q.method === "PUT")).toHaveLength(2);
  });
});

describe("§4.6 credentials typed into a reference", () => {
  it("never echoes the password and says where credentials go", async () => {
    const err = await copyImage({
      source: image.ref,
      target: `robot:S3cret@${mirror.host}/${run}/x`,
      sourceOptions: options(upstream),
      targetOptions: { ...options(mirror), credentialsInput: "targetAuth" },
    }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: "INVALID_INPUT" });
    expect((err as Error).message).not.toContain("S3cret");
    expect((err as Error).message).toContain("targetAuth");
  });
});

describe("§4.7 a 401 whose Bearer realm is another host over plain http", () => {
  let proxy: FaultProxy | undefined;
  let recorder: RealmRecorder | undefined;
  afterEach(async () => {
    await proxy?.close();
    await recorder?.close();
    proxy = recorder = undefined;
    clearAuthCache();
  });

  async function foreignRealm(): Promise<{ p: FaultProxy; rec: RealmRecorder }> {
    recorder = await startRealmRecorder("127.0.0.2");
    proxy = await startFaultProxy(mirror, [
      {
        fault: {
          kind: "status",
          status: 401,
          headers: { "www-authenticate": `Bearer realm="${recorder.realm}",service="foreign"` },
          body: "{}",
        },
      },
    ]);
    return { p: proxy, rec: recorder };
  }

  it("refuses to send the credentials there and says why", async () => {
    const { p, rec } = await foreignRealm();
    const err = await copyImage({
      source: image.ref,
      target: `${p.host}/${run}/realm`,
      sourceOptions: options(upstream),
      targetOptions: { ...options(mirror), credentialsInput: "targetAuth" },
    }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: "REGISTRY_UNAUTHORIZED" });
    const msg = (err as Error).message;
    expect(msg).toContain(rec.host);
    expect(msg).toMatch(/plain http/);
    expect(msg).toContain("insecure");
    expect(msg).not.toContain(mirror.password!);
    expect(rec.authorizations.filter((a) => a !== undefined)).toEqual([]);
  });

  it("sends them when that host is explicitly insecure", async () => {
    const { p, rec } = await foreignRealm();
    await copyImage({
      source: image.ref,
      target: `${p.host}/${run}/realm-ok`,
      sourceOptions: options(upstream),
      targetOptions: { ...options(mirror), insecureHosts: [rec.host] },
    }).catch(() => undefined);
    expect(rec.authorizations.some((a) => a?.startsWith("Basic "))).toBe(true);
  });
});
