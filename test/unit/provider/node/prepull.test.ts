// The engine's flow against an in-process API server (test/support/fakekube.ts): apply, wait with
// per-node progress, failures naming node, image and reason, deadlines, repair of a node that lost
// an image, removal. The real cluster runs the same code in test/integration/provider/node.
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { KubeClient } from "../../../../provider/node/kube";
import { applySet, observeSet, removeSet, repairSet, waitForSet } from "../../../../provider/node/prepull";
import type { SetSpec } from "../../../../provider/node/manifest";
import { FakeKube, pullsSucceed } from "../../../support/fakekube";
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
    { key: "r/private/app:v1", pullRef: `r/private/app@${D2}`, digest: D2, retagAs: [], secret: "core-pull-0" },
  ],
};
const secrets = [{ name: "core-pull-0", auths: [{ registry: "r", username: "u", password: "p" }] }];

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
    await applySet(client, spec, secrets);
    const state = await waitForSet(client, spec, Date.now() + 5000, { log: (l) => lines.push(l), pollMs: 10 });
    expect(state).toMatchObject({ ready: 2, total: 2 });
    expect(state.nodes.map((n) => n.images["r/private/app:v1"])).toEqual([
      { state: "present", digest: D2 },
      { state: "present", digest: D2 },
    ]);
    expect(state.nodes[0]!.warnings[0]).toMatch(/pin not supported by containerd 1.6.20/);
    expect(kube.secrets.get("core-pull-0")!.metadata.ownerReferences![0]).toMatchObject({ kind: "DaemonSet", name: "core" });
    expect(lines).toContain("nodes ready 2/2");
  });

  it("fails naming node, image and the runtime's reason when one node's pull is refused", async () => {
    kube.kubelet = (node, pod, images) =>
      node === "node2"
        ? {
            init: [
              { name: "image-0", ready: false, imageID: images[0], state: { terminated: { exitCode: 0 } } },
              {
                name: "image-1",
                ready: false,
                state: { waiting: { reason: "ErrImagePull", message: "failed to authorize: 401 Unauthorized" } },
              },
            ],
            agentReady: false,
          }
        : pullsSucceed(node, pod, images);
    await applySet(client, spec, secrets);
    const e = await caught(waitForSet(client, spec, Date.now() + 5000, { pollMs: 10 }));
    expect(e.code).toBe("NODE_PULL_FAILED");
    expect(e.message).toMatch(
      /^pre-pull kube-system\/core: node2: r\/private\/app:v1: registry refused the credentials: ErrImagePull: failed to authorize: 401 Unauthorized\./,
    );
  });

  it("stops at the deadline saying which node waits for what", async () => {
    kube.kubelet = (node, pod, images) => (node === "node1" ? { init: [], agentReady: false } : pullsSucceed(node, pod, images));
    await applySet(client, spec, secrets);
    const e = await caught(waitForSet(client, spec, Date.now() + 300, { pollMs: 20 }));
    expect(e.code).toBe("TIMEOUT");
    expect(e.message).toMatch(/nodes ready 1\/2; node1: pod not started/);
  });

  it("sees a node that lost an image and repairs only that node's pod", async () => {
    await applySet(client, spec, secrets);
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
    await applySet(client, spec, secrets);
    await waitForSet(client, spec, Date.now() + 5000, { pollMs: 10 });
    kube.addNode("node3");
    expect(await observeSet(client, spec)).toMatchObject({ ready: 3, total: 3 });
  });

  it("drops Secrets of images that lost their credentials, and removes everything on delete", async () => {
    await applySet(client, spec, secrets);
    await applySet(client, { ...spec, images: [spec.images[0]!] }, []);
    expect(kube.secrets.size).toBe(0);
    await removeSet(client, "kube-system", "core", Date.now() + 5000, { pollMs: 10 });
    expect([kube.daemonSets.size, kube.pods.size]).toEqual([0, 0]);
  });

  it("refuses a namespace that does not exist, saying so", async () => {
    const e = await caught(applySet(client, { ...spec, namespace: "nope" }, []));
    expect(e.message).toMatch(/namespace nope does not exist \(404 NotFound\)/);
  });
});
