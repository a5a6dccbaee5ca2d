// verifyMirrorUse and `imageyard verify-mirror-use` on the real Kubernetes test bed: a pod whose
// images come from the bed's plain registry (the "mirror") passes, with the runtime's imageIDs
// reported; a pod running an image from the bed's other registry fails the check and the CLI
// exits 1 naming it. Pods are made with kubectl, never through the project's code.
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { verifyMirrorUse } from "../../../../provider/node/mirrorUse";
import { kubectl, useK8sTestbed, type K8sTestbed } from "../../../testbed/k8s";
import { waitUntil } from "../../../testbed/processes";
import { holdK8sBedForThisFile } from "../../../support/k8shold";

// One file at a time on the bed: others add and remove nodes.
holdK8sBedForThisFile();

const MS = 240_000;
const cli = join(__dirname, "..", "..", "..", "..", "dist", "cli", "imageyard.js");
const ns = `mu-${Date.now().toString(36).slice(-6)}`;
let tb: K8sTestbed;

function pod(name: string, containers: { name: string; image: string; command: string[] }[], initContainers = [] as typeof containers) {
  return {
    apiVersion: "v1",
    kind: "Pod",
    metadata: { name, namespace: ns },
    spec: {
      hostNetwork: true,
      automountServiceAccountToken: false,
      enableServiceLinks: false,
      terminationGracePeriodSeconds: 0,
      tolerations: [{ operator: "Exists" }],
      imagePullSecrets: [{ name: "auth" }],
      initContainers,
      containers,
    },
  };
}

async function runningPod(spec: ReturnType<typeof pod>): Promise<void> {
  await kubectl(tb, ["apply", "-f", "-"], JSON.stringify(spec));
  await waitUntil(`pod ${ns}/${spec.metadata.name} to run`, 120_000, async () => {
    const phase = (await kubectl(tb, ["get", "pod", "-n", ns, spec.metadata.name, "-o", "jsonpath={.status.phase}"])).stdout;
    if (phase === "Failed")
      throw new Error(`pod ${spec.metadata.name} failed: ${(await kubectl(tb, ["describe", "pod", "-n", ns, spec.metadata.name])).stdout}`);
    return phase === "Running";
  });
}

function runCli(args: string[]): Promise<{ status: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [cli, ...args], { timeout: 60_000 }, (err, stdout, stderr) =>
      resolve({ status: err ? ((err as { code?: number }).code ?? -1) : 0, stdout, stderr }),
    );
  });
}

beforeAll(async () => {
  if (!existsSync(cli)) throw new Error(`${cli} is missing: build first (tsc -p tsconfig.json)`);
  tb = await useK8sTestbed();
  await kubectl(tb, ["create", "namespace", ns]);
  const { host, username, password } = tb.registries.auth;
  await kubectl(tb, [
    "create",
    "secret",
    "docker-registry",
    "auth",
    "-n",
    ns,
    `--docker-server=${host}`,
    `--docker-username=${username}`,
    `--docker-password=${password}`,
  ]);
}, 900_000);

afterAll(async () => {
  if (tb) await kubectl(tb, ["delete", "namespace", ns, "--wait=false"]);
}, MS);

describe("verifyMirrorUse on a real cluster", () => {
  it(
    "passes a pod whose init container and container come from the mirror by digest, reporting what the runtime runs",
    async () => {
      const { busybox, scratch } = tb.images;
      await runningPod(
        pod(
          "mirrored",
          [{ name: "main", image: busybox.pinnedRef, command: ["/bin/sleep", "3600"] }],
          [{ name: "init", image: scratch.pinnedRef, command: ["/hello"] }],
        ),
      );
      const report = await verifyMirrorUse({
        mirror: tb.registries.plain.host,
        kubeconfig: tb.kubeconfig,
        namespaces: [ns],
        requireDigest: true,
      });
      expect(report).toMatchObject({ ok: true, pods: 1 });
      expect(report.containers.map((c) => [c.kind, c.container, c.fromMirror])).toEqual([
        ["initContainer", "init", true],
        ["container", "main", true],
      ]);
      expect(report.containers[1]!.imageID).toMatch(new RegExp(`@${busybox.digest}$`));
      expect(report.containers[0]!.imageID).toMatch(new RegExp(`@${scratch.digest}$`));
    },
    MS,
  );

  it(
    "fails a pod running an image from another registry, and the CLI exits 1 naming it",
    async () => {
      const { privateBusybox } = tb.images;
      await runningPod(pod("elsewhere", [{ name: "main", image: privateBusybox.ref, command: ["/bin/sleep", "3600"] }]));
      const plain = tb.registries.plain.host;
      const report = await verifyMirrorUse({ mirror: plain, kubeconfig: tb.kubeconfig, namespaces: [ns] });
      expect(report.ok).toBe(false);
      expect(report.containers.filter((c) => !c.fromMirror)).toEqual([
        expect.objectContaining({
          pod: "elsewhere",
          container: "main",
          image: privateBusybox.ref,
          reason: `served from ${tb.registries.auth.host}, not the mirror (${plain})`,
        }),
      ]);

      const failed = await runCli(["verify-mirror-use", "--mirror", plain, "--kubeconfig", tb.kubeconfig, "--namespace", ns]);
      expect(failed.status, failed.stderr).toBe(1);
      expect(failed.stdout).toBe(
        `${ns}/elsewhere main: ${privateBusybox.ref}: served from ${tb.registries.auth.host}, not the mirror (${plain})\n`,
      );
      expect(failed.stderr).toMatch(/2 pods, 3 containers: 1 container in 1 pod not served from the mirror/);

      // Both registries named as mirrors: the same cluster passes.
      const passed = await runCli([
        "verify-mirror-use",
        "--mirror",
        `${plain},${tb.registries.auth.host}`,
        "--kubeconfig",
        tb.kubeconfig,
        "--namespace",
        ns,
      ]);
      expect(passed, passed.stderr).toMatchObject({ status: 0, stdout: "" });
    },
    MS,
  );

  it(
    "reads every namespace when none is named: the bed's own pods are listed too",
    async () => {
      const report = await verifyMirrorUse({ mirror: tb.registries.plain.host, kubeconfig: tb.kubeconfig });
      expect(
        report.containers
          .filter((c) => c.namespace === ns)
          .map((c) => c.pod)
          .sort(),
      ).toEqual(["elsewhere", "mirrored", "mirrored"]);
    },
    MS,
  );
});
