// The engine's flow against an in-process API server (test/support/fakekube.ts): apply, wait with
// per-node progress read from each agent's log, failures naming node, image and reason, deadlines,
// repair of a node that lost an image, removal. The real cluster runs the same code in test/integration/provider/node.
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { KubeClient } from "../../../../provider/node/kube";
import { applySet, observeSet, removeSet, repairSet, waitForSet } from "../../../../provider/node/prepull";
import type { SetSpec } from "../../../../provider/node/manifest";
import { agentLine, FakeKube, pullsSucceed } from "../../../support/fakekube";
import { caught } from "../../../support/caught";

const D1 = `sha256:${"1".repeat(64)}`;
const D2 = `sha256:${"2".repeat(64)}`;
const spec: SetSpec = {
  name: "core",
  namespace: "kube-system",
  agentImage: `r/agent@sha256:${"a".repeat(64)}`,
  containerdSocket: "/run/containerd/containerd.sock",
  pin: true,
  images: [
    { key: "r/busybox:1", pullRef: `r/busybox@${D1}`, digest: D1, retagAs: ["k8s.io/busybox:1"] },
    { key: "r/private/app:v1", pullRef: `r/private/app@${D2}`, digest: D2, retagAs: [], auth: true },
  ],
  authSecret: "core-auth",
};
const secrets = [{ name: "core-pull-agent", auths: [{ registry: "r", username: "u", password: "p" }] }];
const credentials = { [`r/private/app@${D2}`]: { username: "u", password: "p" } };

let kube: FakeKube;
let client: KubeClient;
beforeEach(async () => {
  kube = await new FakeKube(pullsSucceed).start();
  kube.addNode("node1", "containerd://1.6.20");
  kube.addNode("node2");
  client = new KubeClient({ server: kube.url, context: "fake", tls: {} });
});
afterEach(async () => {
  await client.close();
  await kube.close();
});

describe("prepull engine", () => {
  it("applies Secrets owned by the DaemonSet and waits until every node holds every image, logging progress", async () => {
    const lines: string[] = [];
    await applySet(client, spec, secrets, credentials);
    const state = await waitForSet(client, spec, Date.now() + 5000, { log: (l) => lines.push(l), pollMs: 10 });
    expect(state).toMatchObject({ ready: 2, total: 2 });
    expect(state.nodes.map((n) => n.images["r/private/app:v1"])).toEqual([
      { state: "present", digest: D2 },
      { state: "present", digest: D2 },
    ]);
    expect(state.nodes[0]!.warnings[0]).toMatch(/pin not supported by containerd 1.6.20/);
    for (const s of ["core-pull-agent", "core-auth"])
      expect(kube.secrets.get(s)!.metadata.ownerReferences![0]).toMatchObject({ kind: "DaemonSet", name: "core" });
    const auth = (kube.secrets.get("core-auth") as unknown as { data: Record<string, string> }).data["auth.json"]!;
    expect(JSON.parse(Buffer.from(auth, "base64").toString())).toEqual(credentials);
    expect(lines).toContain("nodes ready 2/2");
  });

  it("fails naming node, image and the runtime's reason when one node's agent logs a refused pull", async () => {
    kube.kubelet = (node, pod, images) =>
      node === "node2"
        ? {
            agentReady: false,
            log:
              agentLine({ event: "runtime", runtime: "v2.4.2" }) +
              agentLine({ image: images[0]!.ref, state: "present", digest: D1 }) +
              agentLine({ image: images[1]!.ref, state: "pulling" }) +
              agentLine({ image: images[1]!.ref, state: "failed", error: "failed to authorize: 401 Unauthorized" }) +
              agentLine({ event: "retry", seconds: 5 }),
          }
        : pullsSucceed(node, pod, images);
    await applySet(client, spec, secrets, credentials);
    const e = await caught(waitForSet(client, spec, Date.now() + 5000, { pollMs: 10 }));
    expect(e.code).toBe("NODE_PULL_FAILED");
    expect(e.message).toMatch(
      /^pre-pull kube-system\/core: node2: r\/private\/app:v1: registry refused the credentials: failed to authorize: 401 Unauthorized\./,
    );
  });

  it("reports what each node's agent is pulling while it waits", async () => {
    const lines: string[] = [];
    let pulling = true;
    kube.kubelet = (node, pod, images) =>
      node === "node1" && pulling
        ? {
            agentReady: false,
            log: agentLine({ image: images[0]!.ref, state: "pulling" }) + agentLine({ event: "progress", bytes: 3 << 20 }),
          }
        : pullsSucceed(node, pod, images);
    await applySet(client, spec, secrets, credentials);
    const log = (l: string) => {
      lines.push(l);
      pulling = !l.includes("pulling"); // the pull finishes once the engine has reported it
    };
    await waitForSet(client, spec, Date.now() + 5000, { log, pollMs: 10 });
    expect(lines).toContain("nodes ready 1/2; node1: pulling r/busybox:1 (3.0 MiB so far)");
  });

  it("names the agent image when the kubelet cannot pull it", async () => {
    kube.kubelet = (node, pod, images) =>
      node === "node1"
        ? { agentReady: false, log: "", waiting: { reason: "ImagePullBackOff", message: "failed to resolve reference: not found" } }
        : pullsSucceed(node, pod, images);
    await applySet(client, spec, secrets, credentials);
    const e = await caught(waitForSet(client, spec, Date.now() + 5000, { pollMs: 10 }));
    expect(e.message).toContain(`node1: r/busybox:1: agent image ${spec.agentImage}: image not found in the registry: ImagePullBackOff`);
  });

  it("stops at the deadline saying which node waits for what", async () => {
    kube.kubelet = (node, pod, images) => (node === "node1" ? { agentReady: false, log: "" } : pullsSucceed(node, pod, images));
    await applySet(client, spec, secrets, credentials);
    const e = await caught(waitForSet(client, spec, Date.now() + 300, { pollMs: 20 }));
    expect(e.code).toBe("TIMEOUT");
    expect(e.message).toMatch(/nodes ready 1\/2; node1: queued: r\/busybox:1/);
  });

  it("sees a node that lost an image and repairs only that node's pod", async () => {
    await applySet(client, spec, secrets, credentials);
    await waitForSet(client, spec, Date.now() + 5000, { pollMs: 10 });
    const lostOn = [...kube.pods.values()].find((p) => p.spec.nodeName === "node2")!.metadata.name;
    kube.kubelet = (node, pod, images) => ({ ...pullsSucceed(node, pod, images), agentReady: pod.metadata.name !== lostOn });
    kube.events.push({ pod: lostOn, message: "Readiness probe failed: missing from the runtime: k8s.io/busybox:1" });
    const state = await observeSet(client, spec);
    expect(state.ready).toBe(1);
    expect(state.nodes[1]!.images["r/busybox:1"]).toEqual({
      state: "failed",
      reason: "readiness: missing from the runtime: k8s.io/busybox:1",
    });
    kube.kubelet = pullsSucceed;
    expect(await repairSet(client, spec, state)).toEqual(["node2"]);
    expect(kube.pods.has(lostOn)).toBe(false);
    expect(await waitForSet(client, spec, Date.now() + 5000, { pollMs: 10 })).toMatchObject({ ready: 2, total: 2 });
  });

  it("covers a node that joins later with no new apply", async () => {
    await applySet(client, spec, secrets, credentials);
    await waitForSet(client, spec, Date.now() + 5000, { pollMs: 10 });
    kube.addNode("node3");
    expect(await observeSet(client, spec)).toMatchObject({ ready: 3, total: 3 });
  });

  it("drops Secrets of images that lost their credentials, and removes everything on delete", async () => {
    await applySet(client, spec, secrets, credentials);
    const { authSecret: _none, ...plain } = spec;
    await applySet(client, { ...plain, images: [spec.images[0]!] }, []);
    expect(kube.secrets.size).toBe(0);
    await removeSet(client, "kube-system", "core", Date.now() + 5000, { pollMs: 10 });
    expect([kube.daemonSets.size, kube.pods.size]).toEqual([0, 0]);
  });

  it("refuses a namespace that does not exist, saying so", async () => {
    const e = await caught(applySet(client, { ...spec, namespace: "nope" }, []));
    expect(e.message).toMatch(/namespace nope does not exist \(404 NotFound\)/);
  });
});
