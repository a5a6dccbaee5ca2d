// Per-node state from what the API server reports: covered nodes, each image's digest or the
// runtime's reason, the agent's readiness, pin support by runtime version.
import { describe, expect, it } from "vitest";
import {
  classifyPullError,
  coveredNodes,
  digestOfImageId,
  failuresOf,
  nodesOutput,
  pinSupported,
  setState,
  tolerates,
  type Node,
  type Pod,
} from "../../../../provider/node/status";
import type { NodeImage } from "../../../../provider/node/manifest";

const D1 = `sha256:${"1".repeat(64)}`;
const D2 = `sha256:${"2".repeat(64)}`;
const images: NodeImage[] = [
  { key: "r/busybox:1", pullRef: `r/busybox@${D1}`, digest: D1, retagAs: ["k8s.io/busybox:1"] },
  { key: "r/app:v1", pullRef: `r/app@${D2}`, digest: D2, retagAs: [] },
];
const node = (name: string, runtime = "containerd://2.4.2", taints: Node["spec"] = {}): Node => ({
  metadata: { name, labels: { "kubernetes.io/hostname": name } },
  spec: taints,
  status: { nodeInfo: { containerRuntimeVersion: runtime } },
});
const done = (name: string, id: string) => ({ name, ready: false, imageID: id, state: { terminated: { exitCode: 0 } } });
function pod(nodeName: string, init: unknown[], agentReady: boolean): Pod {
  return {
    metadata: { name: `core-${nodeName}`, annotations: { "imageyard.dev/images": "h" } },
    spec: { nodeName },
    status: { initContainerStatuses: init as never, containerStatuses: [{ name: "agent", ready: agentReady, state: { running: {} } }] },
  };
}

describe("which nodes a set covers", () => {
  it("matches the node selector and tolerates taints only as the tolerations allow", () => {
    const cp = node("cp", undefined, { taints: [{ key: "node-role.kubernetes.io/control-plane", effect: "NoSchedule" }] });
    const soft = node("soft", undefined, { taints: [{ key: "x", effect: "PreferNoSchedule" }] });
    const all = [node("a"), cp, soft];
    expect(coveredNodes(all, undefined, [{ operator: "Exists" }]).map((n) => n.metadata.name)).toEqual(["a", "cp", "soft"]);
    expect(coveredNodes(all, undefined, []).map((n) => n.metadata.name)).toEqual(["a", "soft"]);
    expect(coveredNodes(all, { "kubernetes.io/hostname": "cp" }, [{ operator: "Exists" }]).map((n) => n.metadata.name)).toEqual(["cp"]);
    expect(tolerates([{ key: "node-role.kubernetes.io/control-plane", operator: "Exists", effect: "NoSchedule" }], cp.spec!.taints)).toBe(
      true,
    );
    expect(tolerates([{ key: "other", operator: "Equal", value: "v" }], cp.spec!.taints)).toBe(false);
  });
});

describe("node state", () => {
  it("reports each image's digest from the init container's imageID once the node is ready", () => {
    const s = setState(
      [node("n1")],
      [pod("n1", [done("install-agent", "x"), done("image-0", `r/busybox@${D1}`), done("image-1", `docker-pullable://r/app@${D2}`)], true)],
      images,
      false,
    );
    expect(s).toMatchObject({ ready: 1, total: 1 });
    expect(nodesOutput(s)).toEqual({ n1: { "r/busybox:1": D1, "r/app:v1": D2 } });
  });

  it("names node, image and the runtime's reason when a pull is refused", () => {
    const refused = {
      name: "image-1",
      ready: false,
      state: {
        waiting: {
          reason: "ErrImagePull",
          message: 'failed to pull and unpack image "r/app@sha256:…": failed to resolve reference: pull access denied, 401 Unauthorized',
        },
      },
    };
    const s = setState([node("n2")], [pod("n2", [done("image-0", `r/busybox@${D1}`), refused], false)], images, false);
    expect(failuresOf(s)).toHaveLength(1);
    expect(failuresOf(s)[0]).toMatch(/^n2: r\/app:v1: registry refused the credentials: ErrImagePull: .*401 Unauthorized/);
  });

  it("shows a node with no pod yet as pending for every image, and counts it in total", () => {
    const s = setState(
      [node("n1"), node("new")],
      [pod("n1", [done("image-0", `r/busybox@${D1}`), done("image-1", `r/app@${D2}`)], true)],
      images,
      false,
    );
    expect(s).toMatchObject({ ready: 1, total: 2 });
    expect(nodesOutput(s).new!["r/app:v1"]).toBe("pending: no prepull pod on this node yet");
    expect(failuresOf(s)).toEqual([]);
  });

  it("marks the image the readiness probe names as lost when the agent stops being ready", () => {
    const p = pod("n1", [done("image-0", `r/busybox@${D1}`), done("image-1", `r/app@${D2}`)], false);
    const s = setState([node("n1")], [p], images, false, new Map([[p.metadata.name, `missing from the runtime: r/busybox@${D1}`]]));
    expect(s.ready).toBe(0);
    expect(nodesOutput(s).n1!["r/busybox:1"]).toMatch(/^failed: readiness: missing from the runtime/);
    expect(nodesOutput(s).n1!["r/app:v1"]).toBe(D2);
  });

  it("says per node where pinning is not supported (containerd 1.6) rather than claiming it", () => {
    const s = setState([node("old", "containerd://1.6.20"), node("new", "containerd://2.4.2")], [], images, true);
    expect(s.nodes.find((n) => n.node === "old")!.warnings[0]).toMatch(/pin not supported by containerd 1.6.20/);
    expect(s.nodes.find((n) => n.node === "new")!.warnings).toEqual([]);
    expect([pinSupported("containerd://1.7.0"), pinSupported("containerd://1.6.20"), pinSupported("cri-o://1.30")]).toEqual([
      true,
      false,
      false,
    ]);
  });
});

describe("helpers", () => {
  it("takes the digest from any imageID form", () => {
    expect(digestOfImageId(`docker.io/library/busybox@${D1}`)).toBe(D1);
    expect(digestOfImageId(D2)).toBe(D2);
    expect(digestOfImageId("busybox:1")).toBeUndefined();
  });
  it("classifies the runtime's messages: auth, not found, no space", () => {
    expect(classifyPullError("unexpected status from HEAD request: 401 Unauthorized")).toBe("registry refused the credentials");
    expect(classifyPullError("failed to resolve reference: …: not found")).toBe("image not found in the registry");
    expect(classifyPullError("write /var/lib/containerd/…: no space left on device")).toBe("no space left on the node");
  });
});

describe("pods being replaced", () => {
  it("do not count as failures while a rollout or repair replaces them", () => {
    const p = pod(
      "n1",
      [
        done("image-0", `r/busybox@${D1}`),
        { name: "image-1", ready: false, state: { waiting: { reason: "ErrImagePull", message: "401 Unauthorized" } } },
      ],
      false,
    );
    expect(failuresOf(setState([node("n1")], [p], images, false))).toHaveLength(1);
    expect(failuresOf(setState([node("n1")], [p], images, false, new Map(), "newer-spec"))).toEqual([]);
    const deleting = { ...p, metadata: { ...p.metadata, deletionTimestamp: "2026-11-29T05:00:00Z" } };
    expect(nodesOutput(setState([node("n1")], [deleting], images, false))).toEqual({
      n1: { "r/busybox:1": "pending: pod being replaced", "r/app:v1": "pending: pod being replaced" },
    });
  });
});
