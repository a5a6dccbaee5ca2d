// Plain pods on the Kubernetes test bed, made and watched with kubectl (never the project's code):
// what tests run to see an image through a real kubelet.
import { randomBytes } from "node:crypto";
import { crictl, kubectl, type K8sTestbed } from "../testbed/k8s";
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

/** An image as `crictl images -o json` lists it. */
export interface CriImage {
  repoTags: string[];
  repoDigests: string[];
  pinned?: boolean;
}

/** What node `node`'s runtime holds, asked with the bed's crictl. */
export async function criImagesOn(tb: K8sTestbed, node: string): Promise<CriImage[]> {
  return (JSON.parse((await crictl(tb, node, ["images", "-o", "json"])).stdout) as { images: CriImage[] }).images;
}

export const hasDigest = (imgs: CriImage[], digest: string) => imgs.find((i) => i.repoDigests.some((d) => d.endsWith(`@${digest}`)));
export const hasTag = (imgs: CriImage[], tag: string) => imgs.find((i) => i.repoTags.includes(tag));

/**
 * A pod on `node` that runs `image` with imagePullPolicy Never (or IfNotPresent for a name no
 * reachable registry serves): only the node's own store can serve it.
 */
export async function runsOffline(
  tb: K8sTestbed,
  node: string,
  image: string,
  command: string[],
  pullPolicy: "Never" | "IfNotPresent" = "Never",
): Promise<void> {
  const name = `offline-${randomBytes(4).toString("hex")}`;
  const pod = {
    apiVersion: "v1",
    kind: "Pod",
    metadata: { name, namespace: "default" },
    spec: {
      nodeName: node,
      hostNetwork: true,
      restartPolicy: "Never",
      automountServiceAccountToken: false,
      enableServiceLinks: false,
      tolerations: [{ operator: "Exists" }],
      containers: [{ name: "c", image, imagePullPolicy: pullPolicy, command }],
    },
  };
  await kubectl(tb, ["apply", "-f", "-"], JSON.stringify(pod));
  try {
    await waitPodPhase(tb, "default", name, "Succeeded", 60_000);
  } finally {
    await kubectl(tb, ["delete", "pod", "-n", "default", name, "--wait=false"]);
  }
}

/** The DaemonSet and Secrets of PrePullSet `set` still in the cluster (kubectl names; empty once deleted). */
export async function prePullSetObjects(tb: K8sTestbed, set: string, namespace = "kube-system"): Promise<string> {
  return (await kubectl(tb, ["get", "ds,secrets", "-n", namespace, "-l", `imageyard.dev/prepullset=${set}`, "-o", "name"])).stdout.trim();
}
