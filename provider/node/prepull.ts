// The PrePullSet engine: apply the set's objects, wait (with a deadline and per-node progress read
// from each node's agent) until every covered node's runtime holds every image, observe the set
// for read, repair nodes that lost an image (their pods are recreated: the agent pulls again), and
// remove it all.
import { ImageyardError, isImageyardError } from "../http/errors";
import { mapLimit } from "../http/retry";
import { paths, type KubeClient, type KubeObject } from "./kube";
import {
  AGENT_CONTAINER,
  ANNOTATION_IMAGES,
  buildAuthSecret,
  buildDaemonSet,
  buildPullSecret,
  DEFAULT_TOLERATIONS,
  imagesHash,
  LABEL_SET,
  type DockerAuth,
  type SetSpec,
} from "./manifest";
import { type AgentLog, coveredNodes, failuresOf, parseAgentLog, setState, type Node, type Pod, type SetState } from "./status";

export interface PullSecret {
  name: string;
  auths: DockerAuth[];
}

export interface EngineDeps {
  log?: (line: string) => void;
  /** Poll interval while waiting (ms). */
  pollMs?: number;
  now?: () => number;
}

/**
 * What waitForSet waits for: "ready" (every node's agent ready: each image and retag name is in
 * the runtime) or "agents" (every node runs the current spec's agent with every registry image
 * present: a set with archives, whose agents can be ready only after the archives are streamed in).
 */
export type WaitUntil = "ready" | "agents";

interface DaemonSet extends KubeObject {
  spec?: unknown;
  status?: { desiredNumberScheduled?: number; numberReady?: number; updatedNumberScheduled?: number; observedGeneration?: number };
}

const selector = (name: string) => ({ labelSelector: `${LABEL_SET}=${name}` });
const dsTarget = (spec: { namespace: string; name: string }) => `DaemonSet ${spec.namespace}/${spec.name}`;

/**
 * Creates or replaces the set's Secrets and DaemonSet; Secrets are owned by the DaemonSet.
 * `credentials` (pull reference → credentials) go into spec.authSecret, which the agent mounts.
 */
export async function applySet(
  client: KubeClient,
  spec: SetSpec,
  secrets: PullSecret[],
  credentials: Record<string, { username: string; password: string }> = {},
): Promise<void> {
  const ns = spec.namespace;
  const ns404 = await client.get(paths.namespace(ns), `read namespace ${ns}`);
  if (!ns404)
    throw new ImageyardError(
      "KUBE_NOT_FOUND",
      `apply ${dsTarget(spec)}: namespace ${ns} does not exist (404 NotFound). Create it first or choose another namespace.`,
    );
  const objects = secrets.map((s) => buildPullSecret(ns, s.name, spec.name, s.auths));
  if (spec.authSecret) objects.push(buildAuthSecret(ns, spec.authSecret, spec.name, credentials));
  for (const s of objects) await upsert(client, paths.secrets(ns), paths.secret(ns, s.metadata.name), s, `Secret ${ns}/${s.metadata.name}`);
  const ds = await upsert<DaemonSet>(client, paths.daemonSets(ns), paths.daemonSet(ns, spec.name), buildDaemonSet(spec), dsTarget(spec));
  const owner = [{ apiVersion: "apps/v1", kind: "DaemonSet", name: spec.name, uid: ds.metadata.uid!, blockOwnerDeletion: false }];
  for (const s of objects)
    await client.mergePatch(
      paths.secret(ns, s.metadata.name),
      { metadata: { ownerReferences: owner } },
      `own Secret ${ns}/${s.metadata.name}`,
    );
  // Secrets no longer needed (no image has credentials any more) go.
  const keep = new Set(objects.map((s) => s.metadata.name));
  for (const old of await client.list<KubeObject>(paths.secrets(ns), `list Secrets of ${dsTarget(spec)}`, selector(spec.name))) {
    if (!keep.has(old.metadata.name)) await client.remove(paths.secret(ns, old.metadata.name), `delete Secret ${ns}/${old.metadata.name}`);
  }
}

async function upsert<T extends KubeObject>(
  client: KubeClient,
  collection: string,
  path: string,
  body: KubeObject,
  what: string,
): Promise<T> {
  const cur = await client.get<KubeObject>(path, `read ${what}`);
  if (!cur) return client.create<T>(collection, body, `create ${what}`);
  const next = { ...body, metadata: { ...body.metadata, resourceVersion: cur.metadata.resourceVersion } };
  return client.replace<T>(path, next, `update ${what}`);
}

/**
 * Reads nodes, pods and, for pods whose agent runs but is not ready, the agent's log (what it has
 * pulled, is pulling, or why it failed) and, once it pulled everything, the probe's last message
 * (which name the runtime lost). `currentHash` (while waiting on a rollout): pods of an older spec
 * count as being replaced.
 */
export async function observeSet(
  client: KubeClient,
  spec: Pick<SetSpec, "name" | "namespace" | "images" | "nodeSelector" | "tolerations" | "pin">,
  currentHash?: string,
): Promise<SetState> {
  const [nodes, pods] = await Promise.all([
    client.list<Node>(paths.nodes(), "list nodes"),
    client.list<Pod>(paths.pods(spec.namespace), `list pods of ${dsTarget(spec)}`, selector(spec.name)),
  ]);
  const covered = coveredNodes(nodes, spec.nodeSelector, spec.tolerations ?? DEFAULT_TOLERATIONS);
  const probes = new Map<string, string>();
  const logs = new Map<string, AgentLog>();
  await mapLimit(pods, 8, async (p) => {
    const agent = p.status?.containerStatuses?.find((c) => c.name === AGENT_CONTAINER);
    if (!agent?.state?.running || agent.ready || p.metadata.deletionTimestamp) return;
    if (currentHash !== undefined && p.metadata.annotations?.[ANNOTATION_IMAGES] !== currentHash) return;
    // Best effort: a container that just restarted answers 400 for a moment; the next poll reads it.
    const text = await client
      .text(paths.podLog(spec.namespace, p.metadata.name), `read the agent's log in pod ${spec.namespace}/${p.metadata.name}`, {
        container: AGENT_CONTAINER,
      })
      .catch((e: unknown) => {
        // No right to read logs is the user's to fix (RBAC pods/log), not a passing state.
        if (isImageyardError(e) && (e.code === "KUBE_FORBIDDEN" || e.code === "KUBE_UNAUTHORIZED")) throw e;
        return undefined;
      });
    if (text === undefined) return;
    const log = parseAgentLog(text);
    logs.set(p.metadata.name, log);
    if (log.done) {
      const msg = await probeMessage(client, spec.namespace, p);
      if (msg) probes.set(p.metadata.name, msg);
    }
  });
  return setState(covered, pods, spec.images, spec.pin, probes, currentHash, logs);
}

interface KubeEvent extends KubeObject {
  reason?: string;
  message?: string;
  lastTimestamp?: string;
  eventTime?: string;
}

/** The latest readiness-probe failure the kubelet recorded for a pod (names the lost image). */
async function probeMessage(client: KubeClient, ns: string, pod: Pod): Promise<string | undefined> {
  const events = await client.list<KubeEvent>(paths.events(ns), `list events of pod ${ns}/${pod.metadata.name}`, {
    fieldSelector: `involvedObject.name=${pod.metadata.name},reason=Unhealthy`,
  });
  // Startup-probe failures ("not pulled every image yet") say nothing about a lost name.
  const last = events
    .filter((e) => e.message?.startsWith("Readiness probe failed:"))
    .sort((a, b) => (a.lastTimestamp ?? a.eventTime ?? "").localeCompare(b.lastTimestamp ?? b.eventTime ?? ""))
    .pop();
  return last?.message?.replace(/^Readiness probe failed:\s*/, "").trim();
}

function progressLine(state: SetState): string {
  const busy = state.nodes
    .filter((n) => !n.ready)
    .map((n) => {
      const pending = Object.entries(n.images).find(([, s]) => s.state !== "present");
      return pending ? `${n.node}: ${pending[1].state === "pending" ? pending[1].reason : pending[0]}` : `${n.node}: retag/pin/check`;
    });
  return `nodes ready ${state.ready}/${state.total}${busy.length ? `; ${busy.join("; ")}` : ""}`;
}

/**
 * Waits until the DaemonSet has rolled out the current spec and every covered node is ready, or
 * a node reports a failure (thrown as NODE_PULL_FAILED naming node, image and reason), or the
 * deadline passes (thrown naming the nodes still waiting and for what).
 */
export async function waitForSet(
  client: KubeClient,
  spec: SetSpec,
  deadline: number,
  deps: EngineDeps = {},
  until: WaitUntil = "ready",
): Promise<SetState> {
  const log = deps.log ?? (() => {});
  const now = deps.now ?? Date.now;
  const started = now();
  let last = "";
  for (;;) {
    // Quick at first, so a small set is seen done within a quarter second; 1 s once it runs
    // longer (each poll lists nodes and pods and reads the log of every agent not yet ready).
    const poll = deps.pollMs ?? Math.min(1000, 250 + (now() - started) / 15);
    const ds = await client.get<DaemonSet>(paths.daemonSet(spec.namespace, spec.name), `read ${dsTarget(spec)}`);
    if (!ds) throw new ImageyardError("KUBE_NOT_FOUND", `wait for ${dsTarget(spec)}: it was deleted while waiting (404). Run again.`);
    const hash = imagesHash(spec);
    const state = await observeSet(client, spec, hash);
    const line = progressLine(state);
    if (line !== last) log(line);
    last = line;
    const failures = failuresOf(state);
    if (failures.length > 0) {
      throw new ImageyardError(
        "NODE_PULL_FAILED",
        `pre-pull ${spec.namespace}/${spec.name}: ${failures.join("; ")}. Fix the image or its credentials and run again.`,
      );
    }
    const rolled =
      (ds.status?.observedGeneration ?? 0) >= (ds.metadata.generation ?? 0) &&
      (ds.status?.updatedNumberScheduled ?? 0) >= (ds.status?.desiredNumberScheduled ?? 0);
    if (rolled && state.ready === state.total) return state;
    if (rolled && until === "agents" && (await agentsUp(client, spec, state, hash))) return state;
    if (now() >= deadline) {
      throw new ImageyardError(
        "TIMEOUT",
        `pre-pull ${spec.namespace}/${spec.name}: not every node ready before the deadline (${line}). Raise timeouts or check the nodes.`,
        { retryable: true },
      );
    }
    await new Promise((r) => setTimeout(r, poll));
  }
}

/** Every covered node runs the current spec's agent and holds every registry image (archives aside). */
async function agentsUp(client: KubeClient, spec: SetSpec, state: SetState, hash: string): Promise<boolean> {
  const pods = await podsByNode(client, spec.namespace, spec.name);
  return state.nodes.every((n) => {
    const pod = pods.get(n.node);
    const agent = pod?.status?.containerStatuses?.find((c) => c.name === AGENT_CONTAINER);
    return (
      !!pod &&
      pod.metadata.annotations?.[ANNOTATION_IMAGES] === hash &&
      !!agent?.state?.running &&
      spec.images.every((img) => img.archive || n.images[img.key]?.state === "present")
    );
  });
}

/**
 * Deletes the pods of nodes that are not ready although they run the current spec (a lost image,
 * a failed pull): the DaemonSet recreates them and the kubelet pulls again. Pods of an older spec
 * are the DaemonSet's rollout to replace.
 */
export async function repairSet(client: KubeClient, spec: SetSpec, state: SetState, deps: EngineDeps = {}): Promise<string[]> {
  const log = deps.log ?? (() => {});
  const repaired: string[] = [];
  const current = imagesHash(spec);
  for (const n of state.nodes) {
    if (n.ready || !n.pod || n.podHash !== current) continue;
    log(
      `${n.node}: recreating ${n.pod} (${
        Object.entries(n.images)
          .filter(([, s]) => s.state !== "present")
          .map(([k]) => k)
          .join(", ") || "agent not ready"
      })`,
    );
    await client.remove(paths.pod(spec.namespace, n.pod), `delete pod ${spec.namespace}/${n.pod}`);
    repaired.push(n.node);
  }
  return repaired;
}

/** Removes the DaemonSet and Secrets and waits until the pods are gone. */
export async function removeSet(client: KubeClient, ns: string, name: string, deadline: number, deps: EngineDeps = {}): Promise<void> {
  const now = deps.now ?? Date.now;
  await client.remove(paths.daemonSet(ns, name), `delete DaemonSet ${ns}/${name}`);
  for (const s of await client.list<KubeObject>(paths.secrets(ns), `list Secrets of DaemonSet ${ns}/${name}`, selector(name))) {
    await client.remove(paths.secret(ns, s.metadata.name), `delete Secret ${ns}/${s.metadata.name}`);
  }
  for (;;) {
    const pods = await client.list<Pod>(paths.pods(ns), `list pods of DaemonSet ${ns}/${name}`, selector(name));
    if (pods.length === 0) return;
    if (now() >= deadline) {
      throw new ImageyardError(
        "TIMEOUT",
        `delete DaemonSet ${ns}/${name}: ${pods.length} pod(s) still terminating at the deadline (${pods.map((p) => p.metadata.name).join(", ")}). Check the nodes' kubelets.`,
        { retryable: true },
      );
    }
    await new Promise((r) => setTimeout(r, deps.pollMs ?? 1000));
  }
}

/** Pods currently serving the set, by node (for exec: archive import, image removal). */
export async function podsByNode(client: KubeClient, ns: string, name: string): Promise<Map<string, Pod>> {
  const pods = await client.list<Pod>(paths.pods(ns), `list pods of DaemonSet ${ns}/${name}`, selector(name));
  return new Map(pods.filter((p) => p.spec.nodeName && !p.metadata.deletionTimestamp).map((p) => [p.spec.nodeName!, p]));
}
