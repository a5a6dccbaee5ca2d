// Per-node state of a PrePullSet, read from what the API server already knows: which nodes the
// set must cover (node selector, taints vs tolerations), each node's pod, its init containers
// (one per image: imageID is the digest the runtime holds, a waiting reason is the runtime's
// pull error) and the agent's readiness (its probe fails when the runtime lost a name).
import type { KubeObject } from "./kube";
import { AGENT_CONTAINER, ANNOTATION_IMAGES, initContainerName, type NodeImage, type Toleration } from "./manifest";

interface ContainerState {
  waiting?: { reason?: string; message?: string };
  running?: { startedAt?: string };
  terminated?: { exitCode: number; reason?: string; message?: string };
}
export interface ContainerStatus {
  name: string;
  ready: boolean;
  restartCount?: number;
  image?: string;
  imageID?: string;
  state?: ContainerState;
  lastState?: ContainerState;
}
export interface Pod extends KubeObject {
  spec: { nodeName?: string };
  status?: {
    phase?: string;
    reason?: string;
    message?: string;
    conditions?: { type: string; status: string; reason?: string; message?: string }[];
    initContainerStatuses?: ContainerStatus[];
    containerStatuses?: ContainerStatus[];
  };
}
export interface Taint {
  key: string;
  value?: string;
  effect: string;
}
export interface Node extends KubeObject {
  spec?: { taints?: Taint[]; unschedulable?: boolean };
  status?: { nodeInfo?: { containerRuntimeVersion?: string; architecture?: string }; conditions?: { type: string; status: string }[] };
}

/** One image on one node: the digest the runtime holds, or why not. */
export type ImageState = { state: "present"; digest: string } | { state: "pending"; reason: string } | { state: "failed"; reason: string };

export interface NodeState {
  node: string;
  /** containerd://1.6.20 */
  runtime?: string;
  pod?: string;
  /** The pod's imageyard.dev/images annotation: which spec it runs. */
  podHash?: string;
  images: Record<string, ImageState>;
  /** The agent container is ready: every image and retag name is in the runtime. */
  ready: boolean;
  warnings: string[];
}

export interface SetState {
  nodes: NodeState[];
  ready: number;
  total: number;
}

/** Whether the tolerations let a pod onto a node with these taints (NoSchedule/NoExecute). */
export function tolerates(tolerations: Toleration[], taints: Taint[] = []): boolean {
  return taints
    .filter((t) => t.effect === "NoSchedule" || t.effect === "NoExecute")
    .every((t) =>
      tolerations.some((tol) => {
        if (tol.effect && tol.effect !== t.effect) return false;
        if (tol.operator === "Exists") return !tol.key || tol.key === t.key;
        return tol.key === t.key && (tol.value ?? "") === (t.value ?? "");
      }),
    );
}

/** Nodes the DaemonSet must cover. */
export function coveredNodes(nodes: Node[], nodeSelector: Record<string, string> | undefined, tolerations: Toleration[]): Node[] {
  return nodes.filter((n) => {
    const labels = n.metadata.labels ?? {};
    const selected = Object.entries(nodeSelector ?? {}).every(([k, v]) => labels[k] === v);
    return selected && tolerates(tolerations, n.spec?.taints);
  });
}

/** containerd honours io.cri-containerd.pinned from 1.7 on. */
export function pinSupported(runtime: string | undefined): boolean {
  const m = /^containerd:\/\/v?(\d+)\.(\d+)/.exec(runtime ?? "");
  if (!m) return false;
  const [major, minor] = [Number(m[1]), Number(m[2])];
  return major > 1 || (major === 1 && minor >= 7);
}

/** The digest part of a kubelet imageID ("repo@sha256:…", "docker-pullable://…@sha256:…", "sha256:…"). */
export function digestOfImageId(imageID: string | undefined): string | undefined {
  const m = /(sha256:[a-f0-9]{64})$/.exec(imageID ?? "");
  return m?.[1];
}

/** Names the runtime's reason in words a person acts on: auth, not found, no space. */
export function classifyPullError(message: string): string {
  const m = message.toLowerCase();
  if (/401|unauthorized|authentication required|denied|403|forbidden/.test(m)) return "registry refused the credentials";
  if (/not found|404|manifest unknown/.test(m)) return "image not found in the registry";
  if (/no space left/.test(m)) return "no space left on the node";
  if (/timeout|deadline exceeded|i\/o timeout/.test(m)) return "registry timed out";
  if (/connection refused|no such host|network is unreachable/.test(m)) return "registry unreachable from the node";
  return "pull failed";
}

const PULL_FAILURES = new Set([
  "ErrImagePull",
  "ImagePullBackOff",
  "InvalidImageName",
  "ErrImageNeverPull",
  "RegistryUnavailable",
  "ErrInvalidImageName",
]);
const CONTAINER_FAILURES = new Set([
  "CrashLoopBackOff",
  "CreateContainerError",
  "CreateContainerConfigError",
  "RunContainerError",
  "StartError",
]);

function initState(st: ContainerStatus | undefined, image: NodeImage, before: string | undefined): ImageState {
  if (!st) return { state: "pending", reason: "pod not started" };
  const w = st.state?.waiting;
  if (w?.reason && PULL_FAILURES.has(w.reason)) {
    const msg = w.message ?? w.reason;
    return { state: "failed", reason: `${classifyPullError(msg)}: ${w.reason}: ${msg}` };
  }
  if (w?.reason && CONTAINER_FAILURES.has(w.reason))
    return { state: "failed", reason: `${w.reason}: ${w.message ?? st.lastState?.terminated?.message ?? ""}`.trim() };
  const t = st.state?.terminated;
  if (t && t.exitCode === 0) {
    const digest = digestOfImageId(st.imageID);
    return digest ? { state: "present", digest } : { state: "pending", reason: "pulled; the runtime reported no digest yet" };
  }
  if (t) return { state: "failed", reason: `no-op container exited ${t.exitCode}: ${t.message ?? t.reason ?? ""}`.trim() };
  if (st.state?.running) return { state: "pending", reason: "pulled, starting" };
  return { state: "pending", reason: before ? `waiting for ${before}` : `pulling ${image.key}` };
}

/**
 * Builds one node's state from its pod (or its absence). With `currentHash`, a pod of an older
 * spec or one being deleted only means "being replaced": what it reports is no longer the answer.
 */
export function nodeState(
  node: Node,
  pod: Pod | undefined,
  images: NodeImage[],
  pin: boolean,
  probe?: string,
  currentHash?: string,
): NodeState {
  const runtime = node.status?.nodeInfo?.containerRuntimeVersion;
  const out: NodeState = { node: node.metadata.name, images: {}, ready: false, warnings: [] };
  if (runtime) out.runtime = runtime;
  if (pin && runtime && !pinSupported(runtime))
    out.warnings.push(
      `pin not supported by ${runtime.replace("://", " ")} (io.cri-containerd.pinned needs containerd 1.7+): kubelet image GC may remove these images`,
    );
  if (!pod) {
    for (const img of images) out.images[img.key] = { state: "pending", reason: "no prepull pod on this node yet" };
    return out;
  }
  out.pod = pod.metadata.name;
  const hash = pod.metadata.annotations?.[ANNOTATION_IMAGES];
  if (hash) out.podHash = hash;
  if (pod.metadata.deletionTimestamp || (currentHash !== undefined && hash !== currentHash)) {
    for (const img of images) out.images[img.key] = { state: "pending", reason: "pod being replaced" };
    return out;
  }
  const inits = new Map((pod.status?.initContainerStatuses ?? []).map((s) => [s.name, s]));
  const agent = (pod.status?.containerStatuses ?? []).find((s) => s.name === AGENT_CONTAINER);
  out.ready = !!agent?.ready && !pod.metadata.deletionTimestamp;
  let before: string | undefined;
  images.forEach((img, i) => {
    const name = initContainerName(i);
    let st: ImageState;
    if (img.archive)
      st = out.ready ? { state: "present", digest: img.digest } : { state: "pending", reason: "archive not imported on this node yet" };
    else st = initState(inits.get(name), img, before);
    if (st.state !== "present") before ??= img.key;
    out.images[img.key] = st;
  });
  if (!out.ready && agent) {
    // Every init container succeeded but the agent is not ready: it failed, or its probe says a name is gone.
    const w = agent.state?.waiting;
    const failed =
      w?.reason && CONTAINER_FAILURES.has(w.reason)
        ? `agent ${w.reason}: ${agent.lastState?.terminated?.message ?? w.message ?? ""}`.trim()
        : undefined;
    const lost = probe ? `readiness: ${probe}` : undefined;
    const why = failed ?? lost;
    if (why) {
      for (const img of images) {
        const cur = out.images[img.key];
        if (cur?.state === "present" && (failed || probe?.includes(img.pullRef) || img.retagAs.some((r) => probe?.includes(r))))
          out.images[img.key] = { state: "failed", reason: why };
      }
    }
  }
  return out;
}

/** The whole set: every covered node, in name order. */
export function setState(
  nodes: Node[],
  pods: Pod[],
  images: NodeImage[],
  pin: boolean,
  probes: Map<string, string> = new Map(),
  currentHash?: string,
): SetState {
  const byNode = new Map<string, Pod>();
  for (const p of pods) {
    const n = p.spec.nodeName;
    if (!n) continue;
    const prev = byNode.get(n);
    // During a rollout a node briefly has two pods: the live one counts.
    if (!prev || (prev.metadata.deletionTimestamp && !p.metadata.deletionTimestamp)) byNode.set(n, p);
  }
  const states = [...nodes]
    .sort((a, b) => a.metadata.name.localeCompare(b.metadata.name))
    .map((n) => {
      const pod = byNode.get(n.metadata.name);
      return nodeState(n, pod, images, pin, pod ? probes.get(pod.metadata.name) : undefined, currentHash);
    });
  return { nodes: states, ready: states.filter((s) => s.ready).length, total: states.length };
}

/** Every failure as "node: image: reason". */
export function failuresOf(state: SetState): string[] {
  return state.nodes.flatMap((n) =>
    Object.entries(n.images)
      .filter(([, s]) => s.state === "failed")
      .map(([k, s]) => `${n.node}: ${k}: ${(s as { reason: string }).reason}`),
  );
}

/** Outputs: node → image → digest, or "failed: …" / "pending: …". */
export function nodesOutput(state: SetState): Record<string, Record<string, string>> {
  return Object.fromEntries(
    state.nodes.map((n) => [
      n.node,
      Object.fromEntries(Object.entries(n.images).map(([k, s]) => [k, s.state === "present" ? s.digest : `${s.state}: ${s.reason}`])),
    ]),
  );
}
