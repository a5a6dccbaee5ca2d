// PrePullSet through the real engine: examples/kubernetes-prepull (MirroredImage → PrePullSet → a
// @pulumi/kubernetes Deployment with imagePullPolicy Never) on the Kubernetes test bed (node1 on
// containerd 1.6, node2 on v2), one stack walking the lifecycle in order. What the nodes hold is
// checked with crictl and ctr from the bed, not through imageyard. The source is a busybox variant
// made for this run: had a kubelet of the bed pulled its image ID under another name (other files
// run the bed's own busybox), kubelet >= 1.35 would refuse the mirror's name to the Never-pull pod
// (docs/kubernetes-testbed.md pitfall 17; the README's PrePullSet notes say the same to users).
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { addK8sNode, ctr, kubectl, loadK8sTestbed, removeK8sNode, useK8sTestbed, type K8sTestbed } from "../testbed/k8s";
import { waitUntil } from "../testbed/processes";
import { pushBusyboxVariant } from "../testbed/k8simages";
import { loadRegistryTestbed } from "../testbed/registry";
import { destroyLeftovers, exampleStack, previewCounts, resourcesOfType, type ProjectStack } from "./harness";
import { criImagesOn, prePullSetObjects } from "../support/bedpods";
import { holdK8sBedForThisFile } from "../support/k8shold";

// One file at a time on the bed: others add and remove nodes.
holdK8sBedForThisFile();

const STEP = 300_000;
const PREPULL_TYPE = "pulumi-nodejs:dynamic/imageyard:PrePullSet";
const run = randomBytes(3).toString("hex");
let tb: K8sTestbed;
let main: ProjectStack;
let mirrorRepo: string;

/** The PrePullSet's state as the engine holds it (refresh updates it; stack outputs only change on up). */
const prePullState = async () => {
  const [r] = await resourcesOfType(main.stack, PREPULL_TYPE);
  return r!.outputs as { ready: number; total: number; nodes: Record<string, Record<string, string>> };
};

const digestsOn = async (node: string) => (await criImagesOn(tb, node)).flatMap((i) => i.repoDigests);

beforeAll(async () => {
  tb = await useK8sTestbed();
  const plain = tb.registries.plain.host;
  mirrorRepo = `${plain}/e2e-${run}/mirror/busybox`;
  const source = await pushBusyboxVariant(join(tb.dir, "images"), loadRegistryTestbed().registries.upstream, `e2e-${run}`);
  main = await exampleStack("kubernetes-prepull", "e2e", {
    source: { value: source.ref },
    mirror: { value: mirrorRepo },
    kubeconfig: { value: readFileSync(tb.kubeconfig, "utf8"), secret: true },
    containerdSocket: { value: `${tb.dir}/nodes/\${NODE_NAME}/containerd.sock` },
    hostNetwork: { value: "true" },
    command: { value: JSON.stringify(["/bin/sleep", "3600"]) },
  });
}, 900_000);

afterAll(() => destroyLeftovers(main, PREPULL_TYPE, () => removeK8sNode("node3").catch(() => undefined)), STEP);

describe.sequential("PrePullSet with the real pulumi engine", () => {
  let pinned: string;

  it(
    "up mirrors, pre-pulls onto every node (crictl sees the digest) and the Never-pull Deployment becomes ready",
    async () => {
      const res = await main.stack.up({ onOutput: main.onOutput("up-1"), onEvent: main.onEvent });
      expect(res.summary.result).toBe("succeeded");
      pinned = res.outputs.pinnedRef!.value as string;
      const digest = pinned.split("@")[1]!;
      expect(res.outputs.ready!.value).toBe(2);
      expect(res.outputs.total!.value).toBe(2);
      for (const node of ["node1", "node2"]) expect(await digestsOn(node)).toContain(pinned);
      expect((res.outputs.nodes!.value as Record<string, Record<string, string>>).node1![pinned]).toBe(digest);
      const avail = (
        await kubectl(tb, [
          "get",
          "deployment",
          "-n",
          "default",
          res.outputs.deploymentName!.value as string,
          "-o",
          "jsonpath={.status.availableReplicas}",
        ])
      ).stdout;
      expect(avail).toBe("1");
      expect(main.log.all()).toMatch(/nodes ready 2\/2/);
    },
    STEP,
  );

  it(
    "a second preview shows no changes",
    async () => {
      expect(await previewCounts(main, "preview-nochange")).toMatchObject({ update: 0, replace: 0 });
    },
    STEP,
  );

  it(
    "a node that joins later gets the image without an up, and refresh counts it",
    async () => {
      await addK8sNode("node3", { runtime: "containerd2" });
      tb = loadK8sTestbed(); // the bed's state now lists node3
      await waitUntil("node3 to hold the pinned image", 120_000, async () => (await digestsOn("node3")).includes(pinned));
      await waitUntil("refresh to count node3 ready", 60_000, async () => {
        await main.stack.refresh({ onOutput: main.onOutput("refresh-node3") });
        const outs = await prePullState();
        return outs.ready === 3 && outs.total === 3;
      });
    },
    STEP,
  );

  it(
    "an image removed by hand shows in refresh, preview proposes an update, and up restores it",
    async () => {
      await ctr(tb, "node1", ["images", "rm", pinned]);
      await waitUntil("refresh to see node1 lost the image", 90_000, async () => {
        await main.stack.refresh({ onOutput: main.onOutput("refresh-lost") });
        return (await prePullState()).nodes.node1![pinned]!.startsWith("failed:");
      });
      const pre = await main.stack.preview({ onOutput: main.onOutput("preview-repair"), onEvent: main.onEvent });
      expect(pre.changeSummary.update).toBeGreaterThanOrEqual(1);
      const res = await main.stack.up({ onOutput: main.onOutput("up-repair"), onEvent: main.onEvent });
      expect(res.outputs.ready!.value).toBe(3);
      expect(await digestsOn("node1")).toContain(pinned);
    },
    STEP,
  );

  it(
    "destroy removes the DaemonSet and Secrets and leaves the images on the nodes",
    async () => {
      const res = await main.stack.destroy({ onOutput: main.onOutput("destroy"), onEvent: main.onEvent });
      expect(res.summary.result).toBe("succeeded");
      expect(await prePullSetObjects(tb, "prepull")).toBe("");
      expect(await digestsOn("node2")).toContain(pinned);
    },
    STEP,
  );
});
