// MirrorWorkloads through the real engine (examples/mirror-workloads) on the Kubernetes test bed:
// a Deployment written with `docker.io/…` references (the bed's anonymous registry stands in for
// Docker Hub through `upstreams`) deploys, and its pods run from the mirror by digest — the
// runtime's imageID names the mirror, since the upstream image is unique to this run and no node
// ever pulled it under another name. verifyMirrorUse passes on the namespace, and fails (library
// and CLI) once a pod pulls from upstream directly. The same stack builds an image with
// ImageFromTar from a static binary and runs it as a Job whose log the test reads.
import { execFile, execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { verifyMirrorUse } from "../../provider/node/mirrorUse";
import { digestOf, dockerRef, MEDIA, OciLayoutWriter, runSkopeo, servesImage, skopeoFlags, type LayerEntry } from "../testbed/images";
import { kubectl, useK8sTestbed, type K8sTestbed } from "../testbed/k8s";
import { repoRoot, waitUntil } from "../testbed/processes";
import { applyPod, waitPodPhase, type BedPod } from "../support/bedpods";
import { loadRegistryTestbed, type RegistryEndpoint } from "../testbed/registry";
import { destroyLeftovers, exampleStack, MIRRORED_IMAGE_TYPE, resourcesOfType, type ProjectStack } from "./harness";
import { holdK8sBedForThisFile } from "../support/k8shold";

// One file at a time on the bed: others add and remove nodes.
holdK8sBedForThisFile();

// On by default (scripts/test.sh builds the @pulumi/kubernetes plugin); IY_K8S_E2E=0 leaves it out
// of a quick local run, since a cold bed is minutes of work.
const enabled = process.env.IY_K8S_E2E !== "0";

const STEP = 300_000;
const run = randomBytes(3).toString("hex");
const ns = `e2e-wl-${run}`;
const upstreamRepo = `wl-${run}/busybox`;
const HELLO_LINE = "hello from a shell-less image";
let tb: K8sTestbed;
let upstream: RegistryEndpoint;
let mirror: string;
let busyboxDigest: string;
let dir: string;
let main: ProjectStack;

const pods = async (selector: string) =>
  JSON.parse((await kubectl(tb, ["get", "pods", "-n", ns, "-l", selector, "-o", "json"])).stdout) as { items: BedPod[] };

/** Debian's static busybox with this run's id in its config: a digest no node has seen under any name. */
async function pushRunBusybox(): Promise<string> {
  const layout = join(dir, "busybox");
  const w = new OciLayoutWriter(layout);
  const entries: LayerEntry[] = [
    { type: "dir", path: "bin" },
    { type: "file", path: "bin/busybox", source: "/bin/busybox" },
    ...["sh", "sleep", "echo"].map((a): LayerEntry => ({ type: "symlink", path: `bin/${a}`, target: "busybox" })),
  ];
  const layer = await w.writeFilesLayer(entries);
  const cfg = w.writeJson(
    {
      architecture: "amd64",
      os: "linux",
      config: { Env: ["PATH=/bin", `IY_E2E_RUN=${run}`], Cmd: ["/bin/sh"] },
      rootfs: { type: "layers", diff_ids: [layer.diffId] },
    },
    MEDIA.ociConfig,
  );
  w.tag(w.writeJson({ schemaVersion: 2, mediaType: MEDIA.ociManifest, config: cfg, layers: [layer.descriptor] }, MEDIA.ociManifest), "1");
  await runSkopeo([
    "copy",
    "-q",
    "--preserve-digests",
    ...skopeoFlags(upstream, "dest"),
    `oci:${layout}:1`,
    dockerRef(upstream, `${upstreamRepo}:1`),
  ]);
  return digestOf(upstream, `${upstreamRepo}:1`);
}

/** test/testbed/hello.c, static, alone in a tar as /hello: the ImageFromTar input. */
function helloTar(): string {
  const tree = join(dir, "tree");
  mkdirSync(tree, { recursive: true });
  execFileSync("gcc", ["-Os", "-static", "-o", join(tree, "hello"), join(repoRoot(), "test", "testbed", "hello.c")]);
  execFileSync("tar", ["-cf", join(dir, "hello.tar"), "-C", tree, "hello"]);
  return join(dir, "hello.tar");
}

const cli = (args: string[]) =>
  new Promise<{ code: number; stdout: string; stderr: string }>((ok) =>
    execFile(process.execPath, [join(repoRoot(), "dist", "cli", "imageyard.js"), ...args], (err, stdout, stderr) =>
      ok({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    ),
  );

beforeAll(async () => {
  if (!enabled) return;
  tb = await useK8sTestbed();
  upstream = loadRegistryTestbed(tb.stateDir).registries.upstream;
  // The mirror: a prefix of the same anonymous registry, which every node can pull from.
  mirror = `${tb.registries.plain.host}/wl-${run}-mirror`;
  dir = mkdtempSync(join(tmpdir(), "iy-e2e-wl-"));
  busyboxDigest = await pushRunBusybox();
  main = await exampleStack("mirror-workloads", "e2e", {
    registry: { value: mirror },
    upstreams: { value: JSON.stringify({ "docker.io": tb.registries.plain.host }) },
    image: { value: `docker.io/${upstreamRepo}:1` },
    initImage: { value: `docker.io/${tb.images.scratch.repository}:${tb.images.scratch.tag}` },
    namespace: { value: ns },
    kubeconfig: { value: readFileSync(tb.kubeconfig, "utf8"), secret: true },
    hostNetwork: { value: "true" },
    command: { value: JSON.stringify(["/bin/sleep", "3600"]) },
    tar: { value: helloTar() },
    tarImage: { value: "tools/hello:v1" },
    tarCmd: { value: JSON.stringify(["/hello"]) },
  });
}, 900_000);

afterAll(async () => {
  if (!enabled) return;
  await kubectl(tb, ["delete", "pod", "-n", ns, "unmirrored", "--ignore-not-found", "--grace-period=0", "--force"]).catch(() => undefined);
  await destroyLeftovers(main, MIRRORED_IMAGE_TYPE, () => rmSync(dir, { recursive: true, force: true }));
}, STEP);

describe.runIf(enabled).sequential("MirrorWorkloads with the real pulumi engine on the Kubernetes test bed", () => {
  it(
    "up mirrors each docker.io image once and the Deployment's pods run from the mirror by digest",
    async () => {
      const res = await main.stack.up({ onOutput: main.onOutput("up-1"), onEvent: main.onEvent });
      expect(res.summary.result).toBe("succeeded");
      const scratch = tb.images.scratch;
      const pinnedBusybox = `${mirror}/${upstreamRepo}@${busyboxDigest}`;
      expect(res.outputs.deploymentImages!.value).toEqual([`${mirror}/${scratch.repository}@${scratch.digest}`, pinnedBusybox]);
      expect(await resourcesOfType(main.stack, MIRRORED_IMAGE_TYPE)).toHaveLength(2);
      expect(await digestOf(upstream, `wl-${run}-mirror/${upstreamRepo}:1`)).toBe(busyboxDigest);
      const list = await pods("app=mirrored");
      expect(list.items.length).toBe(1);
      for (const p of list.items) {
        expect(p.spec.containers.map((c) => c.image)).toEqual([pinnedBusybox]);
        expect(p.status.phase).toBe("Running");
        // Only the mirror ever served this digest to a node, so the runtime can name nothing else.
        expect(p.status.containerStatuses!.map((c) => c.imageID)).toEqual([pinnedBusybox]);
        expect(p.status.initContainerStatuses![0]!.imageID).toMatch(new RegExp(`@${scratch.digest}$`));
      }
      const report = await verifyMirrorUse({ mirror, kubeconfig: tb.kubeconfig, namespaces: [ns] });
      expect(report.containers.filter((c) => c.reason)).toEqual([]);
      expect(report.ok).toBe(true);
    },
    STEP,
  );

  it(
    "the ImageFromTar image, pushed into the mirror and left alone by the transform, runs as a Job and prints its line",
    async () => {
      const outs = await main.stack.outputs();
      const tool = outs.toolImage!.value as string;
      expect(tool).toBe(`${mirror}/tools/hello@${await digestOf(upstream, `wl-${run}-mirror/tools/hello:v1`)}`);
      const jobName = outs.jobName!.value as string;
      await waitUntil(`Job ${ns}/${jobName} to succeed`, 120_000, async () => {
        const p = (await pods(`job-name=${jobName}`)).items;
        return p.length === 1 && p[0]!.status.phase === "Succeeded";
      });
      const [p] = (await pods(`job-name=${jobName}`)).items;
      expect(p!.spec.containers.map((c) => c.image)).toEqual([tool]);
      // The build is reproducible: an earlier run may have left this digest on the node under its own name.
      expect(p!.status.containerStatuses![0]!.imageID).toMatch(new RegExp(`@${tool.split("@")[1]}$`));
      expect((await kubectl(tb, ["logs", "-n", ns, p!.metadata.name])).stdout.trim()).toBe(HELLO_LINE);
    },
    STEP,
  );

  it(
    "a second preview shows no changes",
    async () => {
      const res = await main.stack.preview({ onOutput: main.onOutput("preview-noop"), onEvent: main.onEvent });
      expect(Object.keys(res.changeSummary).filter((k) => k !== "same")).toEqual([]);
    },
    STEP,
  );

  it(
    "a pod pulling from upstream directly fails verifyMirrorUse (library and CLI) by name, and passes once it is gone",
    async () => {
      const direct = tb.images.busybox.ref;
      await applyPod(tb, ns, "unmirrored", { image: direct, command: ["/bin/sleep", "3600"] }, "Always");
      await waitPodPhase(tb, ns, "unmirrored", "Running");
      const report = await verifyMirrorUse({ mirror, kubeconfig: tb.kubeconfig, namespaces: [ns] });
      expect(report.ok).toBe(false);
      expect(report.containers.filter((c) => c.reason).map((c) => [c.pod, c.image])).toEqual([["unmirrored", direct]]);
      const byCli = await cli(["verify-mirror-use", "--mirror", mirror, "--kubeconfig", tb.kubeconfig, "--namespace", ns]);
      expect(byCli.code).toBe(1);
      expect(`${byCli.stdout}${byCli.stderr}`).toContain(`${ns}/unmirrored c: ${direct}`);
      await kubectl(tb, ["delete", "pod", "-n", ns, "unmirrored", "--grace-period=0", "--force"]);
      await waitUntil("pod unmirrored to be gone", 60_000, async () => (await pods("!app,!job-name")).items.length === 0);
      expect((await verifyMirrorUse({ mirror, kubeconfig: tb.kubeconfig, namespaces: [ns] })).ok).toBe(true);
    },
    STEP,
  );

  it(
    "dropping the init image previews as an update of the Deployment and the deletion of its mirror, and up applies it",
    async () => {
      await main.stack.removeConfig("initImage");
      const pre = await main.stack.preview({ onOutput: main.onOutput("preview-drop"), onEvent: main.onEvent });
      expect(pre.changeSummary.update).toBe(1);
      expect(pre.changeSummary.delete).toBe(1);
      expect(Object.keys(pre.changeSummary).filter((k) => !["same", "update", "delete"].includes(k))).toEqual([]);
      const res = await main.stack.up({ onOutput: main.onOutput("up-drop"), onEvent: main.onEvent });
      expect(res.outputs.deploymentImages!.value).toEqual([`${mirror}/${upstreamRepo}@${busyboxDigest}`]);
      expect(await servesImage(upstream, `wl-${run}-mirror/${tb.images.scratch.repository}:${tb.images.scratch.tag}`)).toBe(false);
    },
    STEP,
  );

  it(
    "destroy removes the namespace and the mirrored and built images, and leaves the upstream alone",
    async () => {
      const res = await main.stack.destroy({ onOutput: main.onOutput("destroy"), onEvent: main.onEvent });
      expect(res.summary.result).toBe("succeeded");
      await waitUntil(
        `namespace ${ns} to be gone`,
        120_000,
        async () => (await kubectl(tb, ["get", "ns", ns, "--ignore-not-found", "-o", "name"])).stdout.trim() === "",
      );
      for (const ref of [`wl-${run}-mirror/${upstreamRepo}:1`, `wl-${run}-mirror/tools/hello:v1`])
        expect(await servesImage(upstream, ref)).toBe(false);
      expect(await digestOf(upstream, `${upstreamRepo}:1`)).toBe(busyboxDigest);
    },
    STEP,
  );
});
