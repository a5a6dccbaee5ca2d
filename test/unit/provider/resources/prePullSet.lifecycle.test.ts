// The PrePullSet lifecycle's offline parts: check's validation (every message names the property
// and shows a right example), diff (what replaces, what updates, drift seen by read), and the
// node-side plan buildSpec derives from the inputs.
import { describe, expect, it } from "vitest";
import {
  buildSpec,
  diffPrePull,
  validatePrePull,
  type PrePullInputs,
  type PrePullOutputs,
} from "../../../../provider/resources/prePullSet.lifecycle";
import { UNKNOWN } from "../../../../provider/resources/diff";

const D1 = `sha256:${"1".repeat(64)}`;
const D2 = `sha256:${"2".repeat(64)}`;
const AGENT = `127.0.0.1:5000/imageyard/prepull-agent@sha256:${"a".repeat(64)}`;
const inputs = (over: Partial<PrePullInputs> = {}): PrePullInputs => ({
  name: "core",
  agentRegistry: "127.0.0.1:5000",
  images: [
    "127.0.0.1:5000/busybox:1.35",
    { ref: "127.0.0.1:5001/private/app:v1", auth: { username: "puller", password: "s3cret" }, retagAs: "registry.k8s.io/app:v1" },
  ],
  digests: { "127.0.0.1:5000/busybox:1.35": D1, "127.0.0.1:5001/private/app:v1": D2 },
  ...over,
});
const outputs = (over: Partial<PrePullOutputs> = {}): PrePullOutputs => ({
  ...inputs(),
  namespace: "kube-system",
  digests: inputs().digests!,
  nodes: {},
  ready: 2,
  total: 2,
  warnings: [],
  agentImageRef: AGENT,
  ...over,
});

describe("validatePrePull", () => {
  it("accepts a valid set and plans its images", () => {
    const { failures, images } = validatePrePull(inputs());
    expect(failures).toEqual([]);
    expect(images.map((i) => i.key)).toEqual(["127.0.0.1:5000/busybox:1.35", "127.0.0.1:5001/private/app:v1"]);
  });

  it("names each bad property with an example", () => {
    const { failures } = validatePrePull({
      name: "Core_Set",
      namespace: "Kube System",
      images: ["ok:1", { ref: "app:bad tag" }, "ok:1"],
      parallelism: 0,
      containerdSocket: "run/containerd.sock",
    });
    const props = failures.map((f) => f.property);
    expect(props).toEqual(
      expect.arrayContaining(["name", "namespace", "images[1].ref", "images[2]", "parallelism", "containerdSocket", "agentRegistry"]),
    );
    expect(failures.find((f) => f.property === "images[2]")!.reason).toMatch(/listed twice \(images\[0\] and images\[2\]\)/);
  });

  it("takes agentRegistryAuth as BOSH's base64 user:pass like an image's auth, and names it when malformed", () => {
    const ok = validatePrePull(inputs({ agentRegistryAuth: Buffer.from("robot:s3:cret").toString("base64") }));
    expect(ok.failures).toEqual([]);
    expect(ok.agentRegistryAuth).toEqual({ username: "robot", password: "s3:cret" });
    for (const bad of ["not base64!", { username: "", password: "x" }] as const) {
      const { failures } = validatePrePull(inputs({ agentRegistryAuth: bad as never }));
      expect(failures.map((f) => f.property)).toEqual(["agentRegistryAuth"]);
      expect(JSON.stringify(failures)).not.toContain("s3:cret");
    }
  });

  it("lets unknown values pass in preview", () => {
    expect(validatePrePull(inputs({ images: UNKNOWN as never })).failures).toEqual([]);
  });
});

describe("diffPrePull", () => {
  it("shows no change for the same inputs", () => {
    expect(diffPrePull(outputs(), inputs())).toEqual({ changes: false });
  });
  it("updates in place when a tag moved (the digest check resolved changed)", () => {
    expect(diffPrePull(outputs(), inputs({ digests: { ...inputs().digests, "127.0.0.1:5000/busybox:1.35": D2 } }))).toEqual({
      changes: true,
    });
  });
  it("replaces when namespace, name or context change", () => {
    expect(diffPrePull(outputs(), inputs({ namespace: "tools" })).replaces).toEqual(["namespace"]);
    expect(diffPrePull(outputs(), inputs({ namespace: "kube-system" }))).toEqual({ changes: false });
  });
  it("updates when read saw a node that lost an image or is not served", () => {
    expect(diffPrePull(outputs({ ready: 1, total: 2 }), inputs())).toEqual({ changes: true });
  });
});

describe("buildSpec", () => {
  it("pulls by digest, keeps the tag and retag names, and hands credentials to the agent by pull reference", () => {
    const { spec, secrets, credentials } = buildSpec(inputs(), AGENT);
    expect(spec).toMatchObject({
      name: "core",
      namespace: "kube-system",
      agentImage: AGENT,
      containerdSocket: "/run/containerd/containerd.sock",
      pin: false,
      authSecret: "core-auth",
    });
    expect(spec.images).toEqual([
      {
        key: "127.0.0.1:5000/busybox:1.35",
        pullRef: `127.0.0.1:5000/busybox@${D1}`,
        digest: D1,
        retagAs: [],
        tag: "127.0.0.1:5000/busybox:1.35",
      },
      {
        key: "127.0.0.1:5001/private/app:v1",
        pullRef: `127.0.0.1:5001/private/app@${D2}`,
        digest: D2,
        retagAs: ["registry.k8s.io/app:v1"],
        tag: "127.0.0.1:5001/private/app:v1",
        auth: true,
      },
    ]);
    expect(credentials).toEqual({ [`127.0.0.1:5001/private/app@${D2}`]: { username: "puller", password: "s3cret" } });
    expect(secrets).toEqual([]);
    const withAgentAuth = buildSpec(inputs({ agentRegistryAuth: { username: "a", password: "b" } }), AGENT);
    expect(withAgentAuth.secrets).toEqual([
      { name: "core-pull-agent", auths: [{ registry: "127.0.0.1:5000", username: "a", password: "b" }] },
    ]);
    expect(withAgentAuth.spec.agentPullSecret).toBe("core-pull-agent");
  });
  it("pulls an image with a platform by the platform's manifest digest, and says which platform", () => {
    const { spec } = buildSpec(inputs({ images: [{ ref: "127.0.0.1:5000/busybox:1.35", platform: "linux/arm64" }] }), AGENT);
    expect(spec.images[0]).toMatchObject({ pullRef: `127.0.0.1:5000/busybox@${D1}`, platform: "linux/arm64" });
    expect(spec.authSecret).toBeUndefined();
  });
  it("refuses to run without the digests check resolved", () => {
    expect(() => buildSpec(inputs({ digests: {} }), AGENT)).toThrow(/no resolved digest/);
  });
});
