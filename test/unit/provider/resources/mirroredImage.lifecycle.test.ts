// The MirroredImage lifecycle's offline logic: input validation (what `pulumi preview` shows for
// bad input) and the diff classification (what replaces, what updates, what is no change).
import { describe, expect, it } from "vitest";
import {
  copyRequest,
  diffMirror,
  outputsOf,
  registryOptions,
  validateMirror,
  type MirrorInputs,
  type MirrorOutputs,
} from "../../../../provider/resources/mirroredImage.lifecycle";
import { UNKNOWN } from "../../../../provider/resources/diff";

const base: MirrorInputs = { source: "127.0.0.1:5001/team/app:v1", target: "127.0.0.1:5002/mirror/app" };

function stateOf(inputs: MirrorInputs, digest = `sha256:${"a".repeat(64)}`): MirrorOutputs {
  return outputsOf(
    { ...inputs, sourceDigest: digest },
    {
      digest,
      sourceDigest: digest,
      sourceRef: `127.0.0.1:5001/team/app@${digest}`,
      targetRef: "127.0.0.1:5002/mirror/app:v1",
      pinnedRef: `127.0.0.1:5002/mirror/app@${digest}`,
      tagRef: "127.0.0.1:5002/mirror/app:v1",
      mediaType: "application/vnd.oci.image.index.v1+json",
      platforms: ["linux/amd64", "linux/arm64"],
      totalSize: 1234,
      blobsCopied: 3,
      blobsMounted: 0,
      blobsSkipped: 0,
      bytesCopied: 1200,
      signaturesCopied: 0,
      platformsFiltered: false,
      upToDate: false,
    },
  );
}

describe("validateMirror", () => {
  it("accepts a plain source and a target repository", () => {
    expect(validateMirror(base)).toEqual([]);
  });

  it("names the property and shows an example for a malformed source", () => {
    const f = validateMirror({ ...base, source: "UPPER/Case::bad" });
    expect(f).toHaveLength(1);
    expect(f[0]!.property).toBe("source");
    expect(f[0]!.reason).toMatch(/UPPER\/Case::bad/);
  });

  it("requires source and target", () => {
    const f = validateMirror({} as MirrorInputs);
    expect(f.map((x) => x.property).sort()).toEqual(["source", "target"]);
    expect(f.find((x) => x.property === "target")!.reason).toMatch(/e\.g\./);
  });

  it("refuses a target pinned by digest, suggesting the repository", () => {
    const f = validateMirror({ ...base, target: `127.0.0.1:5002/mirror/app@sha256:${"b".repeat(64)}` });
    expect(f[0]).toMatchObject({ property: "target" });
    expect(f[0]!.reason).toContain('"127.0.0.1:5002/mirror/app"');
  });

  it("refuses a target that is the source itself", () => {
    const f = validateMirror({ ...base, target: "127.0.0.1:5001/team/app" });
    expect(f[0]!.reason).toMatch(/same image as source/);
  });

  it("points at the bad platform entry by index", () => {
    const f = validateMirror({ ...base, platforms: ["linux/amd64", "amd64"] });
    expect(f).toEqual([{ property: "platforms[1]", reason: expect.stringMatching(/os\/arch/) }]);
  });

  it("wants both username and password in auth, without echoing them", () => {
    const f = validateMirror({ ...base, targetAuth: { username: "", password: "hunter2" } });
    expect(f[0]!.property).toBe("targetAuth");
    expect(f[0]!.reason).not.toContain("hunter2");
  });

  it("rejects a caCert that is not PEM and a non-positive timeout", () => {
    const f = validateMirror({ ...base, targetTls: { caCert: "not a cert" }, timeouts: { create: 0 } });
    expect(f.map((x) => x.property)).toEqual(["targetTls.caCert", "timeouts.create"]);
  });

  it("takes rateLimitWait as seconds or a duration and names it when it is neither", () => {
    expect(validateMirror({ ...base, rateLimitWait: "30m" })).toEqual([]);
    expect(validateMirror({ ...base, rateLimitWait: 90 })).toEqual([]);
    const f = validateMirror({ ...base, rateLimitWait: "soon" });
    expect(f).toEqual([
      { property: "rateLimitWait", reason: expect.stringMatching(/rateLimitWait must be .* like "90s", "30m", "1h"; got "soon"/) },
    ]);
  });

  it("leaves values unknown during preview alone", () => {
    expect(validateMirror({ ...base, target: UNKNOWN, platforms: [UNKNOWN], rateLimitWait: UNKNOWN })).toEqual([]);
  });

  it("accepts OCI layout locations on either side", () => {
    expect(validateMirror({ source: "oci:/srv/images/app:v1", target: "127.0.0.1:5002/mirror/app" })).toEqual([]);
    expect(validateMirror({ source: base.source, target: "oci-layout:/srv/carry" })).toEqual([]);
  });
});

describe("diffMirror", () => {
  const olds = stateOf(base);
  const same = { ...base, sourceDigest: olds.sourceDigest };

  it("reports no change for unchanged inputs and an unmoved upstream", () => {
    expect(diffMirror(olds, same)).toEqual({ changes: false });
  });

  it("updates in place when the upstream tag moved", () => {
    expect(diffMirror(olds, { ...same, sourceDigest: `sha256:${"c".repeat(64)}` })).toEqual({ changes: true });
  });

  it("replaces when the target repository changes", () => {
    expect(diffMirror(olds, { ...same, target: "127.0.0.1:5002/other/app" })).toMatchObject({
      changes: true,
      replaces: ["target"],
      deleteBeforeReplace: false,
    });
  });

  it("replaces when the source tag changes and the target tag follows it", () => {
    expect(diffMirror(olds, { ...same, source: "127.0.0.1:5001/team/app:v2" })).toMatchObject({ replaces: ["target"] });
  });

  it("treats an explicit target tag equal to the default as the same target", () => {
    expect(diffMirror(olds, { ...same, target: "127.0.0.1:5002/mirror/app:v1" })).toEqual({ changes: false });
  });

  it("updates when the platform filter or signature copying changes", () => {
    expect(diffMirror(olds, { ...same, platforms: ["linux/amd64"] })).toEqual({ changes: true });
    expect(diffMirror(olds, { ...same, copySignatures: false })).toEqual({ changes: true });
  });

  it("updates when credentials change, so state never keeps stale ones", () => {
    expect(diffMirror(olds, { ...same, targetAuth: { username: "u", password: "p" } })).toEqual({ changes: true });
  });

  it("shows no change when only rateLimitWait changes: it steers the waiting, not the mirror", () => {
    expect(diffMirror(stateOf({ ...base, rateLimitWait: "10m" }), { ...same, rateLimitWait: "1h" })).toEqual({ changes: false });
  });

  it("updates when refresh saw the mirror tag missing (drift)", () => {
    expect(diffMirror({ ...olds, targetDigest: "" }, same)).toEqual({ changes: true });
  });

  it("updates when the provider's code changed between deployments", () => {
    const o = { ...olds, __provider: "exports.handler = v1" };
    expect(diffMirror(o, { ...same, __provider: "exports.handler = v2" } as MirrorInputs)).toEqual({ changes: true });
    expect(diffMirror(o, { ...same, __provider: "exports.handler = v1" } as MirrorInputs)).toEqual({ changes: false });
  });

  it("replaces conservatively when the target is not known yet", () => {
    expect(diffMirror(olds, { ...same, target: UNKNOWN })).toMatchObject({ replaces: ["target"] });
  });
});

describe("registryOptions", () => {
  it("maps auth and TLS inputs onto the registry client's options", () => {
    expect(registryOptions({ username: "u", password: "p" }, { caCert: "-----BEGIN CERTIFICATE-----x", certDir: "/etc/certs" })).toEqual({
      credentials: { username: "u", password: "p" },
      tls: { ca: ["-----BEGIN CERTIFICATE-----x"] },
      certDir: "/etc/certs",
    });
    expect(registryOptions(undefined, { insecure: true })).toEqual({ tls: { insecure: true } });
    expect(registryOptions(undefined, undefined, "target")).toEqual({ credentialsInput: "targetAuth" });
    expect(registryOptions(undefined, undefined)).toEqual({});
  });

  it("turns rateLimitWait into the per-host rate-limit budget on both sides of a copy", () => {
    expect(registryOptions(undefined, undefined, "source", "1h30m")).toEqual({
      credentialsInput: "sourceAuth",
      rateLimitBudgetMs: 5_400_000,
    });
    const req = copyRequest({ ...base, rateLimitWait: 45 });
    expect([req.sourceOptions?.rateLimitBudgetMs, req.targetOptions?.rateLimitBudgetMs]).toEqual([45_000, 45_000]);
    expect(copyRequest(base).sourceOptions?.rateLimitBudgetMs).toBeUndefined();
  });
});

describe("outputsOf", () => {
  it("keeps the inputs, adds the copy result and records the platform filter separately", () => {
    const o = outputsOf({ ...base, platforms: ["linux/amd64"] }, { ...stateOf(base), bytesCopied: 0, upToDate: true } as never);
    expect(o.platformFilter).toEqual(["linux/amd64"]);
    expect(o.targetDigest).toBe(o.digest);
    expect(o).not.toHaveProperty("upToDate");
  });
});
