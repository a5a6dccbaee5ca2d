// Plain pods on the Kubernetes test bed, made and watched with kubectl (never the project's code):
// what tests run to see an image through a real kubelet.
import { kubectl, type K8sTestbed } from "../testbed/k8s";
import { waitUntil } from "../testbed/processes";

export interface BedPod {
  metadata: { name: string; labels?: Record<string, string> };
  spec: { containers: { image: string }[]; initContainers?: { image: string }[] };
  status: {
    phase: string;
    containerStatuses?: { imageID: string; state: Record<string, unknown> }[];
    initContainerStatuses?: { imageID: string }[];
  };
}

/** One container pod; hostNetwork because the bed has no pod network. */
export async function applyPod(
  tb: K8sTestbed,
  namespace: string,
  name: string,
  container: { image: string; command?: string[]; args?: string[] },
  restartPolicy: "Always" | "Never" = "Never",
): Promise<void> {
  await kubectl(
    tb,
    ["apply", "-f", "-"],
    JSON.stringify({
      apiVersion: "v1",
      kind: "Pod",
      metadata: { name, namespace },
      spec: { hostNetwork: true, automountServiceAccountToken: false, restartPolicy, containers: [{ name: "c", ...container }] },
    }),
  );
}

export async function getPod(tb: K8sTestbed, namespace: string, name: string): Promise<BedPod> {
  return JSON.parse((await kubectl(tb, ["get", "pod", "-n", namespace, name, "-o", "json"])).stdout) as BedPod;
}

/** Waits for `phase`; a pod that fails instead throws with `kubectl describe`. */
export async function waitPodPhase(tb: K8sTestbed, namespace: string, name: string, phase: string, ms = 120_000): Promise<BedPod> {
  let last: BedPod | undefined;
  await waitUntil(`pod ${namespace}/${name} to be ${phase}`, ms, async () => {
    last = await getPod(tb, namespace, name);
    if (last.status.phase === "Failed" && phase !== "Failed")
      throw new Error(`pod ${namespace}/${name} failed: ${(await kubectl(tb, ["describe", "pod", "-n", namespace, name])).stdout}`);
    return last.status.phase === phase;
  });
  return last!;
}
