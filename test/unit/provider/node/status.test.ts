// Per-node state from what the API server reports: covered nodes, each image's digest or the
// runtime's reason from the agent's log, the agent's readiness, pin support by runtime version.
import { describe, expect, it } from "vitest";
import {
  type AgentLog,
  classifyPullError,
  coveredNodes,
  failuresOf,
  nodesOutput,
  parseAgentLog,
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
function pod(nodeName: string, agentReady: boolean): Pod {
  return {
    metadata: { name: `core-${nodeName}`, annotations: { "imageyard.dev/images": "h" } },
    spec: { nodeName },
    status: { containerStatuses: [{ name: "agent", ready: agentReady, state: { running: {} } }] },
  };
}
const line = (e: Record<string, unknown>) => `${JSON.stringify(e)}\n`;
const logOf = (...events: Record<string, unknown>[]): AgentLog => parseAgentLog(events.map(line).join(""));
const present = (ref: string) => ({ image: ref, state: "present", digest: ref.split("@")[1] });

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
  it("takes every image's digest from the set once the agent is ready (its probe checked the runtime)", () => {
    const s = setState([node("n1")], [pod("n1", true)], images, false);
    expect(s).toMatchObject({ ready: 1, total: 1 });
    expect(nodesOutput(s)).toEqual({ n1: { "r/busybox:1": D1, "r/app:v1": D2 } });
  });

  it("reads progress from the agent's log while it pulls: present with the digest it logged, pulling, queued", () => {
    const p = pod("n1", false);
    const log = logOf(present(`r/busybox@${D1}`), { image: `r/app@${D2}`, state: "pulling" }, { event: "progress", bytes: 2048 });
    const s = setState([node("n1")], [p], images, false, new Map(), undefined, new Map([[p.metadata.name, log]]));
    expect(nodesOutput(s).n1).toEqual({ "r/busybox:1": D1, "r/app:v1": "pending: pulling r/app:v1 (2.0 KiB so far)" });
    const early = setState([node("n1")], [p], images, false, new Map(), undefined, new Map([[p.metadata.name, logOf()]]));
    expect(nodesOutput(early).n1!["r/app:v1"]).toBe("pending: queued: r/app:v1");
  });

  it("names node, image and the runtime's reason when the agent logs a refused pull", () => {
    const p = pod("n2", false);
    const log = logOf(present(`r/busybox@${D1}`), {
      image: `r/app@${D2}`,
      state: "failed",
      error: 'failed to pull and unpack image "r/app@sha256:…": failed to resolve reference: pull access denied, 401 Unauthorized',
    });
    const s = setState([node("n2")], [p], images, false, new Map(), undefined, new Map([[p.metadata.name, log]]));
    expect(failuresOf(s)).toHaveLength(1);
    expect(failuresOf(s)[0]).toMatch(/^n2: r\/app:v1: registry refused the credentials: failed to pull and unpack .*401 Unauthorized/);
  });

  it("names the agent image when the kubelet cannot pull it, for every image of that node", () => {
    const p = pod("n1", false);
    p.status!.containerStatuses = [
      {
        name: "agent",
        ready: false,
        image: "r/agent@sha256:aa",
        state: { waiting: { reason: "ErrImagePull", message: "no space left on device" } },
      },
    ];
    expect(failuresOf(setState([node("n1")], [p], images, false))).toEqual([
      "n1: r/busybox:1: agent image r/agent@sha256:aa: no space left on the node: ErrImagePull: no space left on device",
      "n1: r/app:v1: agent image r/agent@sha256:aa: no space left on the node: ErrImagePull: no space left on device",
    ]);
  });

  it("shows a node with no pod yet as pending for every image, and counts it in total", () => {
    const s = setState([node("n1"), node("new")], [pod("n1", true)], images, false);
    expect(s).toMatchObject({ ready: 1, total: 2 });
    expect(nodesOutput(s).new!["r/app:v1"]).toBe("pending: no prepull pod on this node yet");
    expect(failuresOf(s)).toEqual([]);
  });

  it("marks the image whose name the readiness probe says is gone as lost once the agent had pulled everything", () => {
    const p = pod("n1", false);
    const log = logOf(present(`r/busybox@${D1}`), present(`r/app@${D2}`), { event: "done" });
    const probe = new Map([[p.metadata.name, "missing from the runtime: k8s.io/busybox:1"]]);
    const s = setState([node("n1")], [p], images, false, probe, undefined, new Map([[p.metadata.name, log]]));
    expect(s.ready).toBe(0);
    expect(nodesOutput(s).n1!["r/busybox:1"]).toBe("failed: readiness: missing from the runtime: k8s.io/busybox:1");
    expect(nodesOutput(s).n1!["r/app:v1"]).toBe(D2);
  });

  it("counts a node done once its agent logged every image present, before the kubelet's probes run; a failed readiness probe wins", () => {
    const starting = pod("n1", false);
    starting.status!.containerStatuses![0]!.started = false;
    const done = logOf(present(`r/busybox@${D1}`), present(`r/app@${D2}`), { event: "done" });
    const logs = new Map([[starting.metadata.name, done]]);
    const s = setState([node("n1")], [starting], images, false, new Map(), undefined, logs);
    expect(s).toMatchObject({ ready: 1, total: 1 });
    expect(nodesOutput(s)).toEqual({ n1: { "r/busybox:1": D1, "r/app:v1": D2 } });
    // Not done yet: one image still pulling.
    const pulling = logOf(present(`r/busybox@${D1}`), { image: `r/app@${D2}`, state: "pulling" });
    expect(
      setState([node("n1")], [starting], images, false, new Map(), undefined, new Map([[starting.metadata.name, pulling]])).ready,
    ).toBe(0);
    // The startup probe passed and readiness has not run yet (its tick is 10 s): still done.
    const started = pod("n1", false);
    started.status!.containerStatuses![0]!.started = true;
    const startedLogs = new Map([[started.metadata.name, done]]);
    expect(setState([node("n1")], [started], images, false, new Map(), undefined, startedLogs).ready).toBe(1);
    // Readiness failed since: the old "done" does not make it ready.
    const failed = new Map([[started.metadata.name, "missing from the runtime: k8s.io/busybox:1"]]);
    expect(setState([node("n1")], [started], images, false, failed, undefined, startedLogs).ready).toBe(0);
    // An API server that does not report `started` (before 1.16): only the pod's readiness counts.
    const old = pod("n1", false);
    expect(setState([node("n1")], [old], images, false, new Map(), undefined, new Map([[old.metadata.name, done]])).ready).toBe(0);
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
  it("reads the agent's log: the last word per image wins, other lines are skipped", () => {
    const log = parseAgentLog(
      `not json\n${line({ image: "a", state: "failed", error: "x" })}${line({ event: "retry", seconds: 10 })}${line({ image: "a", state: "pulling" })}`,
    );
    expect(log.images.get("a")).toEqual({ image: "a", state: "pulling" });
    expect(log).toMatchObject({ retryIn: 10, done: false });
  });
  it("classifies the runtime's messages: auth, not found, no space", () => {
    expect(classifyPullError("unexpected status from HEAD request: 401 Unauthorized")).toBe("registry refused the credentials");
    expect(classifyPullError("failed to resolve image: authorization failed: no basic auth credentials")).toBe(
      "registry refused the credentials",
    );
    expect(classifyPullError("failed to resolve reference: …: not found")).toBe("image not found in the registry");
    expect(classifyPullError("write /var/lib/containerd/…: no space left on device")).toBe("no space left on the node");
  });
});

describe("pods being replaced", () => {
  it("do not count as failures while a rollout or repair replaces them", () => {
    const p = pod("n1", false);
    const logs = new Map([[p.metadata.name, logOf({ image: `r/app@${D2}`, state: "failed", error: "401 Unauthorized" })]]);
    expect(failuresOf(setState([node("n1")], [p], images, false, new Map(), undefined, logs))).toHaveLength(1);
    expect(failuresOf(setState([node("n1")], [p], images, false, new Map(), "newer-spec", logs))).toEqual([]);
    const deleting = { ...p, metadata: { ...p.metadata, deletionTimestamp: "2026-11-29T05:00:00Z" } };
    expect(nodesOutput(setState([node("n1")], [deleting], images, false))).toEqual({
      n1: { "r/busybox:1": "pending: pod being replaced", "r/app:v1": "pending: pod being replaced" },
    });
  });
});
