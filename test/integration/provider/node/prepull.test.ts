// PrePullSet's lifecycle against the real Kubernetes test bed: node1 on containerd 1.6, node2 on
// containerd v2, a node3 that joins later. What the nodes hold is checked with crictl and ctr
// from the bed (never through the project's code); pods that use retag and archive names with
// pull policy Never (or IfNotPresent and a name no registry serves) prove the runtime serves them
// with no registry, past kubelet >= 1.35's credential verification. The busybox used is a variant
// made for this run, so no kubelet of the bed pulled its image ID before (another test's pod would
// leave the kubelet's per-ID pull record, docs/kubernetes-testbed.md pitfall 17).
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
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
import {
  addK8sNode,
  ctr,
  kubectl,
  loadK8sTestbed,
  removeK8sNode,
  useK8sTestbed,
  type K8sImage,
  type K8sTestbed,
} from "../../../testbed/k8s";
import { pushBusyboxVariant } from "../../../testbed/k8simages";
import { loadRegistryTestbed } from "../../../testbed/registry";
import { waitUntil } from "../../../testbed/processes";
import { caught } from "../../../support/caught";
import { holdK8sBedForThisFile } from "../../../support/k8shold";
import { criImagesOn, hasDigest, hasTag, runsOffline } from "../../../support/bedpods";

// One file at a time on the bed: others add and remove nodes.
holdK8sBedForThisFile();

const MS = 240_000;
let tb: K8sTestbed;
/** busybox as only this run has it (see the header). */
let busybox: K8sImage;
const run = `pp${Date.now().toString(36).slice(-5)}`;
const RETAG = `registry.k8s.io/imageyard-${run}/busybox:1.35`;
const logs: string[] = [];
const deps = { log: (l: string) => logs.push(l), pollMs: 500 };
const created: PrePullOutputs[] = [];

const criImages = (node: string) => criImagesOn(tb, node);

async function inputs(name: string, over: Partial<PrePullInputs>): Promise<PrePullInputs> {
  const news: PrePullInputs = {
    name,
    kubeconfig: readFileSync(tb.kubeconfig, "utf8"),
    containerdSocket: `${tb.dir}/nodes/\${NODE_NAME}/containerd.sock`,
    agentRegistry: tb.registries.plain.host,
    images: [],
    timeouts: { create: 180, update: 180, delete: 120 },
    ...over,
  };
  const { inputs: checked, failures } = await checkPrePull({}, news, deps);
  expect(failures).toEqual([]);
  return checked;
}
async function create(i: PrePullInputs): Promise<PrePullOutputs> {
  const { outs } = await createPrePull(i, deps);
  created.push(outs);
  return outs;
}

beforeAll(async () => {
  tb = await useK8sTestbed();
  busybox = await pushBusyboxVariant(join(tb.dir, "images"), loadRegistryTestbed().registries.upstream, run);
}, 900_000);

afterAll(async () => {
  for (const o of created.reverse()) await deletePrePull(`${o.namespace}/${o.name}`, o, deps).catch(() => undefined);
  await removeK8sNode("node3").catch(() => undefined);
}, MS);

describe("PrePullSet on a real cluster", () => {
  let main: PrePullOutputs;
  let mainInputs: PrePullInputs;

  it(
    "puts every image on every node (crictl sees each digest, the tag and the retag name), pins where containerd can",
    async () => {
      const { privateBusybox, scratch } = tb.images;
      const { username, password } = tb.registries.auth;
      mainInputs = await inputs(`main-${run}`, {
        pin: true,
        images: [
          { ref: busybox.ref, retagAs: RETAG },
          { ref: privateBusybox.ref, auth: { username: username!, password: password! } },
          scratch.ref,
        ],
      });
      main = await create(mainInputs);
      expect(main).toMatchObject({
        ready: 2,
        total: 2,
        digests: { [busybox.ref]: busybox.digest, [privateBusybox.ref]: privateBusybox.digest, [scratch.ref]: scratch.digest },
      });
      for (const node of ["node1", "node2"]) {
        const imgs = await criImages(node);
        for (const img of [busybox, privateBusybox, scratch]) expect(hasDigest(imgs, img.digest), `${node} holds ${img.ref}`).toBeDefined();
        expect(hasTag(imgs, RETAG), `${node} answers to ${RETAG}`).toBeDefined();
        expect(hasTag(imgs, busybox.ref), `${node} answers to ${busybox.ref}`).toBeDefined();
        expect(main.nodes[node]![busybox.ref]).toBe(busybox.digest);
      }
      expect(hasDigest(await criImages("node2"), busybox.digest)!.pinned).toBe(true);
      expect(main.warnings.join("\n")).toMatch(/node1: pin not supported by containerd 1\.6/);
    },
    MS,
  );

  it(
    "a pod naming the retag with imagePullPolicy Never starts on each node; with IfNotPresent too, though no registry serves that name",
    async () => {
      await runsOffline(tb, "node1", RETAG, ["/bin/true"]);
      await runsOffline(tb, "node2", RETAG, ["/bin/true"]);
      await runsOffline(tb, "node2", RETAG, ["/bin/true"], "IfNotPresent");
      await runsOffline(tb, "node1", busybox.ref, ["/bin/true"]);
    },
    MS,
  );

  it(
    "check on unchanged inputs resolves the same digests: no diff",
    async () => {
      const again = await inputs(`main-${run}`, { pin: true, images: mainInputs.images });
      expect(diffPrePull(main, again).changes).toBe(false);
    },
    MS,
  );

  it(
    "an image removed by hand (ctr images rm) shows in read, and update restores it",
    async () => {
      const bb = busybox;
      await ctr(tb, "node1", ["images", "rm", RETAG]);
      let seen: PrePullOutputs | undefined;
      await waitUntil("read to see node1 lost the retag name", 60_000, async () => {
        seen = (await readPrePull(`kube-system/${main.name}`, main)).props;
        return seen!.nodes.node1![bb.ref]!.startsWith("failed:");
      });
      expect(seen!.nodes.node1![bb.ref]).toContain(RETAG);
      expect(seen!.ready).toBe(1);
      expect(diffPrePull(seen!, mainInputs).changes).toBe(true);
      main = await updatePrePull(seen!, mainInputs, deps);
      expect(main).toMatchObject({ ready: 2, total: 2 });
      expect(hasTag(await criImages("node1"), RETAG)).toBeDefined();
    },
    MS,
  );

  it(
    "a node that joins later gets every image with no new apply",
    async () => {
      await addK8sNode("node3", { runtime: "containerd2" });
      tb = loadK8sTestbed(); // the bed's state now lists node3
      await waitUntil("node3 to hold every image", 120_000, async () => {
        const imgs = await criImages("node3");
        return [busybox, tb.images.privateBusybox, tb.images.scratch].every((i) => hasDigest(imgs, i.digest)) && !!hasTag(imgs, RETAG);
      });
      await waitUntil(
        "read to count node3 ready",
        60_000,
        async () => (await readPrePull(`kube-system/${main.name}`, main)).props!.ready === 3,
      );
    },
    MS,
  );

  it(
    "wrong credentials fail naming the image, the node and the registry's refusal; the DaemonSet is reported for cleanup",
    async () => {
      // check resolves with the wrong password too, so make check pass with the right one and apply the wrong one.
      const ok = await inputs(`badauth-${run}`, {
        images: [
          { ref: tb.images.privateScratch.ref, auth: { username: tb.registries.auth.username!, password: tb.registries.auth.password! } },
        ],
      });
      const bad = {
        ...ok,
        images: [{ ref: tb.images.privateScratch.ref, auth: { username: tb.registries.auth.username!, password: "wrong" } }],
      };
      const e = (await caught(createPrePull(bad, deps))) as Error & { id?: string; properties?: PrePullOutputs };
      expect(e.message).toMatch(
        new RegExp(`node\\d: ${tb.images.privateScratch.ref.replace(/[.]/g, "\\.")}: registry refused the credentials`),
      );
      expect(e.id).toBe(`kube-system/badauth-${run}`);
      created.push(e.properties!);
    },
    MS,
  );

  it(
    "check fails naming the image when the registry refuses the credentials",
    async () => {
      const { failures } = await checkPrePull(
        {},
        {
          name: `x-${run}`,
          agentRegistry: tb.registries.plain.host,
          kubeconfig: readFileSync(tb.kubeconfig, "utf8"),
          images: [{ ref: tb.images.privateScratch.ref, auth: { username: "puller", password: "wrong" } }],
        },
        deps,
      );
      expect(failures).toHaveLength(1);
      expect(failures[0]).toMatchObject({ property: "images[0].auth", reason: expect.stringContaining(tb.images.privateScratch.ref) });
    },
    MS,
  );

  it(
    "imports a docker-archive onto nodes that reach no registry; a pod runs from it with pull policy Never",
    async () => {
      const dir = mkdtempSync(join(tmpdir(), "iy-archive-"));
      const file = join(dir, "busybox.tar");
      const name = `registry.invalid/${run}/offline-busybox:1`;
      // an image ID of its own: what the archive holds reaches the node through the import only
      const src = await pushBusyboxVariant(join(tb.dir, "images"), loadRegistryTestbed().registries.upstream, `${run}-archive`);
      execFileSync("skopeo", ["copy", "-q", "--src-tls-verify=false", `docker://${src.ref}`, `docker-archive:${file}:${name}`]);
      const outs = await create(
        await inputs(`archive-${run}`, { images: [`docker-archive:${file}`], nodeSelector: { "kubernetes.io/hostname": "node2" } }),
      );
      expect(outs).toMatchObject({ ready: 1, total: 1 });
      expect(hasTag(await criImages("node2"), name)).toBeDefined();
      await runsOffline(tb, "node2", name, ["/bin/true"]);
    },
    MS,
  );

  it(
    "delete removes the DaemonSet and Secrets; the images stay on the nodes",
    async () => {
      await deletePrePull(`kube-system/${main.name}`, main, deps);
      created.splice(created.indexOf(main), 1);
      expect(
        (
          await kubectl(tb, ["get", "ds,secrets", "-n", "kube-system", "-l", `imageyard.dev/prepullset=${main.name}`, "-o", "name"])
        ).stdout.trim(),
      ).toBe("");
      expect(hasDigest(await criImages("node1"), busybox.digest)).toBeDefined();
    },
    MS,
  );
});
