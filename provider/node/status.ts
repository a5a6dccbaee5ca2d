// Per-node state of a PrePullSet, read from what the API server knows: which nodes the set must
// cover (node selector, taints vs tolerations), each node's agent pod, the agent's log (one JSON
// line per event: an image pulling, present with its digest, or failed with the runtime's words)
// and its readiness (its probe fails when the runtime lost a name).
import { formatBytes } from "../http/progress";
import type { KubeObject } from "./kube";
import { AGENT_CONTAINER, ANNOTATION_IMAGES, namesOf, type NodeImage, type Toleration } from "./manifest";
interface ContainerState {
  waiting?: { reason?: string; message?: string };
  running?: { startedAt?: string };
  terminated?: { exitCode: number; reason?: string; message?: string };
}
export interface ContainerStatus {
  name: string;
  ready: boolean;
  /** false until the startup probe passed (absent on API servers older than 1.16). */
  started?: boolean;
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

/** Names the runtime's reason in words a person acts on: auth, not found, no space. */
export function classifyPullError(message: string): string {
  const m = message.toLowerCase();
  // containerd 1.6 words a 401 "…: 401 Unauthorized", containerd 2 "authorization failed: no basic auth credentials".
  if (/401|unauthorized|authentication required|authorization failed|no basic auth credentials|denied|403|forbidden/.test(m))
    return "registry refused the credentials";
  if (/not found|404|manifest unknown/.test(m)) return "image not found in the registry";
  if (/no space left/.test(m)) return "no space left on the node";
  if (/timeout|deadline exceeded|i\/o timeout/.test(m)) return "registry timed out";
  if (/connection refused|no such host|network is unreachable/.test(m)) return "registry unreachable from the node";
  return "pull failed";
}

/** The kubelet's reasons for not starting the agent container: its image, or the container. */
const PULL_FAILURES = new Set(["ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull", "RegistryUnavailable"]);
const CONTAINER_FAILURES = new Set([
  "CrashLoopBackOff",
  "CreateContainerError",
  "CreateContainerConfigError",
  "RunContainerError",
  "StartError",
]);

/** One line of the agent's log (provider/node/agent/main.go, Event). */
interface AgentEvent {
  image?: string;
  state?: "pulling" | "present" | "failed";
  digest?: string;
  pinned?: boolean;
  warning?: string;
  error?: string;
  event?: "runtime" | "progress" | "retry" | "done" | "warning";
  runtime?: string;
  bytes?: number;
  seconds?: number;
}

/** What one node's agent has said so far: the last word on each image, and where it is. */
export interface AgentLog {
  images: Map<string, AgentEvent>;
  /** Bytes the runtime is downloading right now. */
  bytes?: number;
  /** Seconds to the next attempt at the failed images. */
  retryIn?: number;
  /** Every registry image was pulled, named and pinned. */
  done: boolean;
  warnings: string[];
}

/** Reads the agent's log (lines that are not its JSON are skipped). */
export function parseAgentLog(text: string): AgentLog {
  const out: AgentLog = { images: new Map(), done: false, warnings: [] };
  for (const line of text.split("\n")) {
    if (!line.startsWith("{")) continue;
    let ev: AgentEvent;
    try {
      ev = JSON.parse(line) as AgentEvent;
    } catch {
      continue;
    }
    if (ev.image) {
      out.images.set(ev.image, ev);
      if (ev.warning) out.warnings.push(ev.warning);
    } else if (ev.event === "progress") out.bytes = ev.bytes;
    else if (ev.event === "retry") {
      out.retryIn = ev.seconds;
      delete out.bytes;
    } else if (ev.event === "done") out.done = true;
    else if (ev.event === "warning" && ev.warning) out.warnings.push(ev.warning);
  }
  return out;
}

function fromLog(img: NodeImage, log: AgentLog | undefined): ImageState {
  if (img.archive) return { state: "pending", reason: "archive not imported on this node yet" };
  const ev = log?.images.get(img.pullRef);
  if (ev?.state === "present" && ev.digest) return { state: "present", digest: ev.digest };
  if (ev?.state === "failed") {
    const msg = ev.error ?? "failed";
    return { state: "failed", reason: `${classifyPullError(msg)}: ${msg}` };
  }
  if (ev?.state === "pulling")
    return { state: "pending", reason: `pulling ${img.key}${log?.bytes ? ` (${formatBytes(log.bytes)} so far)` : ""}` };
  return { state: "pending", reason: log ? `queued: ${img.key}` : "agent starting" };
}

/**
 * Builds one node's state from its pod (or its absence) and its agent's log. With `currentHash`, a
 * pod of an older spec or one being deleted only means "being replaced": what it reports is no
 * longer the answer.
 */
export function nodeState(
  node: Node,
  pod: Pod | undefined,
  images: NodeImage[],
  pin: boolean,
  probe?: string,
  currentHash?: string,
  log?: AgentLog,
): NodeState {
  const runtime = node.status?.nodeInfo?.containerRuntimeVersion;
  const out: NodeState = { node: node.metadata.name, images: {}, ready: false, warnings: [] };
  if (runtime) out.runtime = runtime;
  if (pin && runtime && !pinSupported(runtime))
    out.warnings.push(
      `pin not supported by ${runtime.replace("://", " ")} (io.cri-containerd.pinned needs containerd 1.7+): kubelet image GC may remove these images`,
    );
  const all = (s: ImageState) => {
    for (const img of images) out.images[img.key] = s;
    return out;
  };
  if (!pod) return all({ state: "pending", reason: "no prepull pod on this node yet" });
  out.pod = pod.metadata.name;
  const hash = pod.metadata.annotations?.[ANNOTATION_IMAGES];
  if (hash) out.podHash = hash;
  if (pod.metadata.deletionTimestamp || (currentHash !== undefined && hash !== currentHash))
    return all({ state: "pending", reason: "pod being replaced" });
  const agent = (pod.status?.containerStatuses ?? []).find((s) => s.name === AGENT_CONTAINER);
  const w = agent?.state?.waiting;
  if (w?.reason && PULL_FAILURES.has(w.reason)) {
    const msg = w.message ?? w.reason;
    return all({ state: "failed", reason: `agent image ${agent?.image ?? ""}: ${classifyPullError(msg)}: ${w.reason}: ${msg}`.trim() });
  }
  if (w?.reason && CONTAINER_FAILURES.has(w.reason))
    return all({ state: "failed", reason: `agent ${w.reason}: ${agent?.lastState?.terminated?.message ?? w.message ?? ""}`.trim() });
  out.ready = !!agent?.ready;
  if (out.ready) {
    // The probe passed: the runtime holds every image at the digest pulled (or imported).
    for (const img of images) out.images[img.key] = { state: "present", digest: img.digest };
    return out;
  }
  if (!agent?.state?.running) return all({ state: "pending", reason: "agent starting" });
  for (const img of images) out.images[img.key] = fromLog(img, log);
  if (agent.started !== undefined && log?.done && !probe && images.every((img) => out.images[img.key]?.state === "present")) {
    // The agent pulled and named every image and said so, each with the digest the runtime
    // reported, and no readiness probe has failed since: the node is done now, not when the
    // kubelet next runs a probe (the startup probe within a second; the readiness probe only on
    // its 10 s tick after that). A lost name fails readiness, and its event names it (below).
    out.ready = true;
    return out;
  }
  if (log?.done && probe) {
    // Every image was pulled, yet the agent is not ready: its probe says which name is gone.
    for (const img of images) {
      const names = [img.pullRef, ...namesOf(img)];
      if (names.some((n) => probe.includes(n))) out.images[img.key] = { state: "failed", reason: `readiness: ${probe}` };
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
  logs: Map<string, AgentLog> = new Map(),
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
      const name = pod?.metadata.name ?? "";
      return nodeState(n, pod, images, pin, probes.get(name), currentHash, logs.get(name));
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
