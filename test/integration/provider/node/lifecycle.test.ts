// The PrePullSet lifecycle end to end with real registries (digests, the agent image pushed) and an
// in-process API server standing in for the cluster: create's outputs, read seeing a node that lost
// an image, update repairing it, a failed create handing Pulumi the id and what exists, delete.
// The same flow on real nodes: prepull.test.ts (Kubernetes test bed).
import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  checkPrePull,
  createPrePull,
  deletePrePull,
  diffPrePull,
  readPrePull,
  updatePrePull,
  type PrePullInputs,
  type PrePullOutputs,
} from "../../../../provider/resources/prePullSet.lifecycle";
import { agentLayout } from "../../../../provider/node/agentimage";
import { seedImage, type SeededImage } from "../../../testbed/images";
import { loadRegistryTestbed } from "../../../testbed/registry";
import { agentLine, FakeKube, pullsSucceed } from "../../../support/fakekube";
import { caught } from "../../../support/caught";

const { upstream, mirror } = loadRegistryTestbed().registries;
const run = `lc-${Date.now().toString(36)}-${randomBytes(2).toString("hex")}`;
let kube: FakeKube;
let news: PrePullInputs;
let app: SeededImage;
let priv: SeededImage;
const lines: string[] = [];
const deps = { log: (l: string) => lines.push(l), pollMs: 20 };

beforeAll(async () => {
  kube = await new FakeKube(pullsSucceed).start();
  kube.addNode("node1", "containerd://1.6.20");
  kube.addNode("node2");
  const kubeconfig = kube.kubeconfig();
  [app, priv] = await Promise.all([
    seedImage(upstream, `${run}/app:v1`, { layers: 1, layerSize: "16K", seed: `${run}-a` }),
    seedImage(mirror, `${run}/private:v1`, { layers: 1, layerSize: "16K", seed: `${run}-p` }),
  ]);
  const checked = await checkPrePull(
    {},
    {
      name: "core",
      kubeconfig,
      agentRegistry: upstream.host,
      pin: true,
      timeouts: { create: 10, update: 10, delete: 10 },
      images: [
        { ref: app.ref, retagAs: "registry.k8s.io/app:v1" },
        { ref: priv.ref, auth: { username: mirror.username!, password: mirror.password! } },
      ],
    },
    deps,
  );
  expect(checked.failures).toEqual([]);
  news = checked.inputs;
}, 120_000);

afterAll(() => kube.close());

describe("PrePullSet lifecycle (real registries, in-process API server)", () => {
  let outs: PrePullOutputs;

  it("create pushes the agent, applies the set and returns per-node digests, counts and pin warnings", async () => {
    const { id, outs: o } = await createPrePull(news, deps);
    outs = o;
    expect(id).toBe("kube-system/core");
    const { digest } = await agentLayout();
    expect(outs.agentImageRef).toBe(`${upstream.host}/imageyard/prepull-agent@${digest}`);
    expect(outs).toMatchObject({ ready: 2, total: 2, digests: { [app.ref]: app.digest, [priv.ref]: priv.digest } });
    expect(outs.nodes).toEqual({
      node1: { [app.ref]: app.digest, [priv.ref]: priv.digest },
      node2: { [app.ref]: app.digest, [priv.ref]: priv.digest },
    });
    expect(outs.warnings).toEqual([expect.stringMatching(/^node1: pin not supported by containerd 1\.6\.20/)]);
    // the private image's credentials went into the Secret the agent mounts, keyed by what it pulls
    const secret = kube.secrets.get("core-auth")!;
    const auth = JSON.parse(Buffer.from((secret.data as Record<string, string>)["auth.json"]!, "base64").toString());
    expect(Object.keys(auth)).toEqual([`${mirror.host}/${run}/private@${priv.digest}`]);
    expect(JSON.stringify(kube.daemonSets.get("core"))).not.toContain(mirror.password!);
    expect(lines).toContain("kube-system/core: 2/2 nodes hold 2 image(s)");
  }, 60_000);

  it("read sees a node that lost an image; diff proposes an update; update repairs that node", async () => {
    const pod = [...kube.pods.values()].find((p) => p.spec.nodeName === "node2")!.metadata.name;
    kube.kubelet = (node, p, images) => ({ ...pullsSucceed(node, p, images), agentReady: p.metadata.name !== pod });
    kube.events.push({ pod, message: "Readiness probe failed: missing from the runtime: registry.k8s.io/app:v1" });
    const { props } = await readPrePull("kube-system/core", outs);
    expect(props).toMatchObject({ ready: 1, total: 2 });
    expect(props!.nodes.node2![app.ref]).toMatch(/^failed: readiness: missing from the runtime: registry\.k8s\.io\/app:v1/);
    expect(diffPrePull(props!, news).changes).toBe(true);
    // the node keeps reporting the loss until its pod is replaced
    outs = await updatePrePull(props!, news, deps);
    expect(outs).toMatchObject({ ready: 2, total: 2 });
    expect(kube.pods.has(pod)).toBe(false);
    expect(diffPrePull(outs, news)).toEqual({ changes: false });
    expect(lines.some((l) => l.startsWith(`node2: recreating ${pod}`))).toBe(true);
  }, 60_000);

  it("a create that fails on a node hands Pulumi the set's id, what exists, and the reason", async () => {
    kube.kubelet = (node, p, images) =>
      node === "node1"
        ? {
            agentReady: false,
            log: agentLine({ image: images[0]!.ref, state: "failed", error: "write /var/lib/containerd/…: no space left on device" }),
          }
        : pullsSucceed(node, p, images);
    const e = (await caught(createPrePull({ ...news, name: "broken" }, deps))) as Error & {
      id?: string;
      properties?: PrePullOutputs;
      reasons?: string[];
    };
    expect(e.message).toMatch(
      new RegExp(
        `node1: ${app.ref.replace(/[.]/g, "\\.")}: no space left on the node: write /var/lib/containerd/…: no space left on device`,
      ),
    );
    expect(e.id).toBe("kube-system/broken");
    expect(e.properties).toMatchObject({ name: "broken", ready: 1, total: 2 });
    expect(e.reasons).toEqual([e.message]);
    await deletePrePull("kube-system/broken", e.properties!, deps);
    kube.kubelet = pullsSucceed;
  }, 60_000);

  it("delete removes the DaemonSet, its Secrets and pods; read then reports it gone", async () => {
    await deletePrePull("kube-system/core", outs, deps);
    expect([kube.daemonSets.size, kube.secrets.size, kube.pods.size]).toEqual([0, 0, 0]);
    expect(await readPrePull("kube-system/core", outs)).toEqual({});
  }, 60_000);
});
