// ImageFromTar's lifecycle, and the image it builds run by a real kubelet: a static binary alone
// in a tar (no shell, no libc) becomes an image in the bed's registry, a pod of it on the
// Kubernetes test bed runs to Succeeded printing its line, and one of `/hello sleep` stays Running.
// What the cluster ran is read with kubectl, never through the project's code.
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { lifecycle, type ImageFromTarOutputs } from "../../../../provider/resources/imageFromTar.lifecycle";
import { digestOf } from "../../../testbed/images";
import { kubectl, useK8sTestbed, type K8sTestbed } from "../../../testbed/k8s";
import { repoRoot } from "../../../testbed/processes";
import { loadRegistryTestbed } from "../../../testbed/registry";
import { applyPod, waitPodPhase } from "../../../support/bedpods";
import { holdK8sBedForThisFile } from "../../../support/k8shold";

// One file at a time on the bed: others add and remove nodes.
holdK8sBedForThisFile();

// On by default like the other cluster tests; IY_K8S_E2E=0 leaves it out of a quick local run.
const enabled = process.env.IY_K8S_E2E !== "0";

const MS = 240_000;
const run = `tar${randomBytes(3).toString("hex")}`;
const HELLO_LINE = "hello from a shell-less image";
let tb: K8sTestbed;
let dir: string;
let built: ImageFromTarOutputs | undefined;
const pods: string[] = [];

const runPod = (name: string, image: string, command?: string[]) => {
  pods.push(name);
  return applyPod(tb, "default", name, { image, ...(command ? { command } : {}) });
};

beforeAll(async () => {
  if (!enabled) return;
  tb = await useK8sTestbed();
  dir = mkdtempSync(join(tmpdir(), "iy-tar-k8s-"));
}, 900_000);

afterAll(async () => {
  if (!enabled) return;
  for (const p of pods)
    await kubectl(tb, ["delete", "pod", "-n", "default", p, "--ignore-not-found", "--wait=false"]).catch(() => undefined);
  if (built) await lifecycle.delete(built.tagRef, built).catch(() => undefined);
  rmSync(dir, { recursive: true, force: true });
}, MS);

describe.runIf(enabled).sequential("an ImageFromTar image on the Kubernetes test bed", () => {
  it(
    "a static binary alone in a tar, built as FROM scratch + ADD + CMD, runs as a pod to Succeeded and prints its line",
    async () => {
      const tree = join(dir, "tree");
      mkdirSync(tree, { recursive: true });
      execFileSync("gcc", ["-Os", "-static", "-o", join(tree, "hello"), join(repoRoot(), "test", "testbed", "hello.c")]);
      execFileSync("tar", ["-cf", join(dir, "hello.tar"), "-C", tree, "hello"]);
      const inputs = { source: join(dir, "hello.tar"), target: `${tb.registries.plain.host}/${run}/hello:v1`, cmd: ["/hello"] };
      const checked = await lifecycle.check({}, inputs);
      expect(checked.failures).toEqual([]);
      built = (await lifecycle.create(checked.inputs)).outs;
      const upstream = loadRegistryTestbed(tb.stateDir).registries.upstream;
      expect(await digestOf(upstream, `${run}/hello:v1`)).toBe(built.digest);
      expect(built.digest).toBe(checked.inputs.digest);

      await runPod(`${run}-once`, built.pinnedRef);
      const p = await waitPodPhase(tb, "default", `${run}-once`, "Succeeded");
      expect(p.status.containerStatuses![0]!.imageID).toMatch(new RegExp(`@${built.digest}$`));
      expect((await kubectl(tb, ["logs", "-n", "default", `${run}-once`])).stdout.trim()).toBe(HELLO_LINE);
    },
    MS,
  );

  it(
    "the same image run as `/hello sleep` stays Running",
    async () => {
      await runPod(`${run}-sleep`, built!.pinnedRef, ["/hello", "sleep"]);
      const p = await waitPodPhase(tb, "default", `${run}-sleep`, "Running");
      expect(Object.keys(p.status.containerStatuses![0]!.state)).toEqual(["running"]);
    },
    MS,
  );
});
