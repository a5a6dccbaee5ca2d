// The PrePullSet lifecycle as plain functions over the node engine (provider/node): check
// resolves every tag to the digest the nodes will pull, create/update apply one DaemonSet and wait
// for every covered node's runtime, read observes each node, delete removes what the set made.
import { isImageyardError, ImageyardError } from "../http/errors";
import { mapLimit } from "../http/retry";
import type { Lifecycle, OperationContext } from "./forward";
import { checkTimeouts, timeoutMs, type Timeouts } from "./timeouts";
import { changedKeys, compact, diffResult, isUnknown, providerChanged, type CheckFailure, type DiffResult } from "./diff";
import { registryOptions, type TlsInput } from "./mirroredImage.lifecycle";
import {
  decodeAuth,
  planImage,
  pullRefOf,
  resolveDigest,
  tagOf,
  type Credentials,
  type ImageEntry,
  type PlannedImage,
} from "../node/images";
import { authSecretName, DEFAULT_SOCKET, type NodeImage, type SetSpec, type Toleration } from "../node/manifest";
import { nodesOutput, type SetState } from "../node/status";
import { KubeClient, paths } from "../node/kube";
import { loadKubeconfig } from "../node/kubeconfig";
import * as engine from "../node/prepull";
import type { PullSecret } from "../node/prepull";
import { ensureAgentImage } from "../node/agentpush";
import { importArchives, readArchive, removeImagesFromNodes, type ArchiveInfo } from "../node/archive";

export interface PrePullInputs {
  /** The DaemonSet's name (the resource's name unless given). */
  name: string;
  namespace?: string;
  images: (string | ImageEntry)[];
  kubeconfig?: string;
  context?: string;
  nodeSelector?: Record<string, string>;
  tolerations?: Toleration[];
  parallelism?: number;
  pin?: boolean;
  removeImagesOnDelete?: boolean;
  containerdSocket?: string;
  agentRegistry?: string;
  /** `{username, password}`, or BOSH's base64 "user:pass" (check decodes it to the object). */
  agentRegistryAuth?: Credentials | string;
  agentRegistryTls?: TlsInput;
  agentImage?: string;
  timeouts?: Timeouts;
  /** Resolved by check (image key → digest): a moved tag shows in preview as this changing. */
  digests?: Record<string, string>;
}

export interface PrePullOutputs extends PrePullInputs {
  namespace: string;
  digests: Record<string, string>;
  /** node → image → digest, or "failed: …" / "pending: …". */
  nodes: Record<string, Record<string, string>>;
  ready: number;
  total: number;
  warnings: string[];
  agentImageRef: string;
  [key: string]: unknown;
}

export interface PrePullDeps {
  log?: (line: string) => void;
  /** Live progress lines (nodes ready x/y, imports); default: log. */
  progress?: (line: string) => void;
  pollMs?: number;
}

export const DEFAULT_NAMESPACE = "kube-system";
const DEFAULT_TIMEOUT_S = 1800;
const DEFAULT_DELETE_TIMEOUT_S = 300;
const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

const logOf = (deps: PrePullDeps) => deps.log ?? ((line: string) => console.log(line));
const messageOf = (e: unknown) => (e instanceof Error ? e.message : String(e));

// ---------------------------------------------------------------- check

/** Offline validation; returns the planned images when every entry parsed. */
export function validatePrePull(news: Partial<PrePullInputs>): {
  failures: CheckFailure[];
  images: PlannedImage[];
  agentRegistryAuth?: Credentials;
} {
  const failures: CheckFailure[] = [];
  const fail = (property: string, reason: string) => failures.push({ property, reason });
  const images: PlannedImage[] = [];
  if (typeof news.name !== "string" || !DNS_LABEL.test(news.name) || news.name.length > 50) {
    if (!isUnknown(news.name))
      fail(
        "name",
        `name must be a DNS label of at most 50 characters (lowercase letters, digits, '-'), e.g. "prepull-core"; got ${JSON.stringify(news.name)}`,
      );
  }
  if (
    news.namespace !== undefined &&
    !isUnknown(news.namespace) &&
    (typeof news.namespace !== "string" || !DNS_LABEL.test(news.namespace))
  ) {
    fail("namespace", `namespace must be a DNS label, e.g. "kube-system"; got ${JSON.stringify(news.namespace)}`);
  }
  if (!Array.isArray(news.images) || news.images.length === 0) {
    if (!isUnknown(news.images))
      fail(
        "images",
        'images is a non-empty list, e.g. ["127.0.0.1:5000/team/app:v1", { ref: "harbor.local/base:v2", auth: { username, password }, retagAs: "registry.k8s.io/base:v2" }]',
      );
  } else {
    const seen = new Map<string, number>();
    news.images.forEach((entry, i) => {
      if (isUnknown(entry)) return;
      try {
        const img = planImage(entry, i);
        const prev = seen.get(img.key);
        if (prev !== undefined) fail(`images[${i}]`, `${img.key} is listed twice (images[${prev}] and images[${i}]); list each image once`);
        seen.set(img.key, i);
        images.push(img);
      } catch (e) {
        fail((e as { property?: string }).property ?? `images[${i}]`, messageOf(e));
      }
    });
  }
  const sel = news.nodeSelector;
  if (
    sel !== undefined &&
    !isUnknown(sel) &&
    (typeof sel !== "object" || sel === null || Array.isArray(sel) || Object.values(sel).some((v) => typeof v !== "string"))
  ) {
    fail("nodeSelector", 'nodeSelector maps label to value, e.g. { "kubernetes.io/os": "linux" }');
  }
  if (news.tolerations !== undefined && !isUnknown(news.tolerations) && !Array.isArray(news.tolerations))
    fail("tolerations", 'tolerations is a list, e.g. [{ operator: "Exists" }]');
  if (news.parallelism !== undefined && !isUnknown(news.parallelism) && !(Number.isInteger(news.parallelism) && news.parallelism > 0)) {
    fail("parallelism", `parallelism is a positive whole number of nodes; got ${JSON.stringify(news.parallelism)}`);
  }
  if (news.containerdSocket !== undefined && !isUnknown(news.containerdSocket) && !String(news.containerdSocket).startsWith("/")) {
    fail(
      "containerdSocket",
      'containerdSocket is an absolute host path, e.g. "/run/k3s/containerd/containerd.sock" or "/var/lib/nodes/${NODE_NAME}/containerd.sock"',
    );
  }
  // The same forms as an image's auth, decoded once here.
  let agentRegistryAuth: Credentials | undefined;
  if (news.agentRegistryAuth !== undefined && !isUnknown(news.agentRegistryAuth)) {
    try {
      agentRegistryAuth = decodeAuth(news.agentRegistryAuth, "agentRegistryAuth");
    } catch (e) {
      fail("agentRegistryAuth", messageOf(e));
    }
  }
  if (news.agentImage === undefined && news.agentRegistry === undefined) {
    fail(
      "agentRegistry",
      'give agentRegistry (a registry every node can pull from, e.g. "registry.local:5000"; the agent image is copied there) or agentImage',
    );
  }
  failures.push(...checkTimeouts(news.timeouts));
  return { failures, images, ...(agentRegistryAuth ? { agentRegistryAuth } : {}) };
}

/** agentRegistryAuth as credentials (check already decoded a base64 string; the object passes as is). */
const agentAuth = (i: PrePullInputs): Credentials | undefined =>
  i.agentRegistryAuth === undefined ? undefined : decodeAuth(i.agentRegistryAuth, "agentRegistryAuth");

export async function checkPrePull(
  olds: Partial<PrePullInputs>,
  news: PrePullInputs,
  deps: PrePullDeps = {},
): Promise<{ inputs: PrePullInputs; failures: CheckFailure[] }> {
  const inputs: PrePullInputs = { ...news };
  delete inputs.digests;
  const { failures, images, agentRegistryAuth } = validatePrePull(news);
  if (agentRegistryAuth) inputs.agentRegistryAuth = agentRegistryAuth;
  if (failures.length > 0 || isUnknown(news.images)) return { inputs, failures };
  const digests: Record<string, string> = {};
  const resolved = await mapLimit(images, 4, async (img, i): Promise<CheckFailure | undefined> => {
    try {
      if (img.kind === "archive") {
        digests[img.key] = (await readArchive(img.archive!)).digest;
      } else {
        digests[img.key] = await resolveDigest(img, registryOptions(img.auth, undefined, undefined));
      }
      return undefined;
    } catch (e) {
      // A registry that is down must not break every preview of a set that already holds the
      // image: keep the digest the nodes have and say so. New images must resolve.
      const known = olds.digests?.[img.key];
      if (known && isImageyardError(e) && (e.code === "NETWORK_ERROR" || e.code === "TIMEOUT" || e.retryable)) {
        logOf(deps)(`warning: ${img.key}: ${messageOf(e)}; keeping the digest the nodes hold, ${known}`);
        digests[img.key] = known;
        return undefined;
      }
      const auth = isImageyardError(e) && (e.code === "REGISTRY_UNAUTHORIZED" || e.code === "REGISTRY_DENIED");
      return { property: `images[${i}]${auth ? ".auth" : ""}`, reason: `${img.key}: ${messageOf(e)}` };
    }
  });
  failures.push(...resolved.filter((f): f is CheckFailure => f !== undefined));
  if (failures.length > 0) return { inputs, failures };
  inputs.digests = Object.fromEntries(images.map((i) => [i.key, digests[i.key]!]));
  for (const [k, d] of Object.entries(inputs.digests))
    if (olds.digests?.[k] && olds.digests[k] !== d) logOf(deps)(`${k}: ${olds.digests[k]} → ${d}`);
  if (!isUnknown(news.kubeconfig) && !isUnknown(news.context)) {
    try {
      await withClient(news, (c) => c.version());
    } catch (e) {
      failures.push({
        property: news.context && isImageyardError(e, "KUBE_CONFIG") ? "context" : "kubeconfig",
        reason: `cannot reach the cluster for ${news.images.length} image(s): ${messageOf(e)}`,
      });
    }
  }
  return { inputs, failures };
}

// ---------------------------------------------------------------- diff

const REPLACE_KEYS = ["name", "namespace", "context"] as const;
const UPDATE_KEYS = [
  "images",
  "digests",
  "nodeSelector",
  "tolerations",
  "parallelism",
  "pin",
  "removeImagesOnDelete",
  "containerdSocket",
  "agentRegistry",
  "agentRegistryAuth",
  "agentRegistryTls",
  "agentImage",
  "kubeconfig",
  "timeouts",
] as const;

export function diffPrePull(olds: PrePullOutputs, news: PrePullInputs): DiffResult {
  const o = { ...olds, namespace: olds.namespace ?? DEFAULT_NAMESPACE };
  const n = { ...news, namespace: news.namespace ?? DEFAULT_NAMESPACE };
  const replaces = changedKeys<PrePullInputs>(o, n, REPLACE_KEYS);
  const updates = changedKeys<PrePullInputs>(o, n, UPDATE_KEYS);
  // read() saw a node that lost an image or is not served yet: the next up repairs it.
  if (typeof olds.ready === "number" && typeof olds.total === "number" && olds.ready < olds.total) updates.push("nodes");
  if (providerChanged(olds, news as unknown as Record<string, unknown>)) updates.push("__provider");
  return diffResult(updates, replaces);
}

// ---------------------------------------------------------------- create / update / read / delete

async function withClient<T>(inputs: Pick<PrePullInputs, "kubeconfig" | "context">, f: (c: KubeClient) => Promise<T>): Promise<T> {
  const src: { kubeconfig?: string; context?: string } = {};
  if (inputs.kubeconfig) src.kubeconfig = inputs.kubeconfig;
  if (inputs.context) src.context = inputs.context;
  const client = new KubeClient(loadKubeconfig(src));
  try {
    return await f(client);
  } finally {
    await client.close();
  }
}

/**
 * The node-side plan: images with pull refs, the credentials the agent gets (by pull ref, through
 * a Secret), agent image, socket, placement. An archive image answers to the names the archive
 * carries (read by the caller) and its retagAs.
 */
export function buildSpec(
  inputs: PrePullInputs,
  agentImage: string,
  archives: Map<string, ArchiveInfo> = new Map(),
): { spec: SetSpec; secrets: PullSecret[]; credentials: Record<string, Credentials> } {
  const planned = inputs.images.map((e, i) => planImage(e, i));
  const secrets: PullSecret[] = [];
  const credentials: Record<string, Credentials> = {};
  const images: NodeImage[] = planned.map((img) => {
    const digest = inputs.digests?.[img.key];
    if (!digest)
      throw new ImageyardError("INVALID_INPUT", `pre-pull ${img.key}: no resolved digest (check did not run). Run pulumi up again.`);
    if (img.kind === "archive") {
      const names = archives.get(img.key)?.names ?? [];
      return { key: img.key, pullRef: names[0] ?? img.key, digest, retagAs: img.retagAs, archive: true };
    }
    const out: NodeImage = { key: img.key, pullRef: pullRefOf(img, digest), digest, retagAs: img.retagAs };
    const tag = tagOf(img);
    if (tag) out.tag = tag;
    if (img.platform) out.platform = img.platform;
    if (img.auth) {
      credentials[out.pullRef] = { username: img.auth.username, password: img.auth.password };
      out.auth = true;
    }
    return out;
  });
  const spec: SetSpec = {
    name: inputs.name,
    namespace: inputs.namespace ?? DEFAULT_NAMESPACE,
    images,
    agentImage,
    containerdSocket: inputs.containerdSocket ?? DEFAULT_SOCKET,
    pin: inputs.pin ?? false,
  };
  if (Object.keys(credentials).length) spec.authSecret = authSecretName(inputs.name);
  if (inputs.agentRegistryAuth && inputs.agentRegistry && !inputs.agentImage) {
    const name = `${inputs.name}-pull-agent`;
    secrets.push({ name, auths: [{ registry: registryKey(inputs.agentRegistry.split("/")[0]!), ...agentAuth(inputs)! }] });
    spec.agentPullSecret = name;
  }
  if (inputs.nodeSelector) spec.nodeSelector = inputs.nodeSelector;
  if (inputs.tolerations) spec.tolerations = inputs.tolerations;
  if (inputs.parallelism) spec.parallelism = inputs.parallelism;
  return { spec, secrets, credentials };
}

function registryKey(registry: string): string {
  return registry === "docker.io" ? "https://index.docker.io/v1/" : registry;
}

function outputsOf(inputs: PrePullInputs, spec: SetSpec, state: SetState | undefined, agentImageRef: string): PrePullOutputs {
  return compact({
    ...inputs,
    namespace: spec.namespace,
    digests: inputs.digests ?? {},
    nodes: state ? nodesOutput(state) : {},
    ready: state?.ready ?? 0,
    total: state?.total ?? 0,
    warnings: state ? [...new Set(state.nodes.flatMap((n) => n.warnings.map((w) => `${n.node}: ${w}`)))] : [],
    agentImageRef,
  });
}

async function run(inputs: PrePullInputs, op: "create" | "update", deps: PrePullDeps): Promise<PrePullOutputs> {
  const log = logOf(deps);
  const progress = deps.progress ?? log;
  const deadline = Date.now() + timeoutMs(inputs.timeouts, op, DEFAULT_TIMEOUT_S);
  const agentImageRef =
    inputs.agentImage ?? (await ensureAgentImage(inputs.agentRegistry!, agentAuth(inputs), inputs.agentRegistryTls, log));
  const archives = new Map<string, ArchiveInfo>();
  for (const img of inputs.images.map((e, i) => planImage(e, i))) if (img.archive) archives.set(img.key, await readArchive(img.archive));
  const { spec, secrets, credentials } = buildSpec(inputs, agentImageRef, archives);
  const id = `${spec.namespace}/${spec.name}`;
  return withClient(inputs, async (client) => {
    await engine.applySet(client, spec, secrets, credentials);
    try {
      if (op === "update") await engine.repairSet(client, spec, await engine.observeSet(client, spec), { log: progress });
      const waitDeps = { log: progress, ...(deps.pollMs ? { pollMs: deps.pollMs } : {}) };
      const hasArchives = spec.images.some((i) => i.archive);
      // An agent is ready only once its node holds every archive: with archives, wait for the
      // agents to run, stream the archives in, then wait for readiness.
      let state = await engine.waitForSet(client, spec, deadline, waitDeps, hasArchives ? "agents" : "ready");
      if (hasArchives) {
        await importArchives(
          client,
          spec,
          inputs.images.map((e, i) => planImage(e, i)),
          archives,
          deadline,
          progress,
        );
        state = await engine.waitForSet(client, spec, deadline, waitDeps);
      }
      for (const n of state.nodes) for (const w of n.warnings) log(`${n.node}: ${w}`);
      log(`${id}: ${state.ready}/${state.total} nodes hold ${spec.images.length} image(s)`);
      return outputsOf(inputs, spec, state, agentImageRef);
    } catch (e) {
      // The DaemonSet exists: hand Pulumi its id and what is known, so nothing is orphaned.
      const state = await engine.observeSet(client, spec).catch(() => undefined);
      throw Object.assign(e instanceof Error ? e : new Error(String(e)), {
        id,
        properties: outputsOf(inputs, spec, state, agentImageRef),
        reasons: [messageOf(e)],
      });
    }
  });
}

export async function createPrePull(inputs: PrePullInputs, deps: PrePullDeps = {}): Promise<{ id: string; outs: PrePullOutputs }> {
  const outs = await run(inputs, "create", deps);
  return { id: `${outs.namespace}/${inputs.name}`, outs };
}

export function updatePrePull(_olds: PrePullOutputs, news: PrePullInputs, deps: PrePullDeps = {}): Promise<PrePullOutputs> {
  return run(news, "update", deps);
}

export async function readPrePull(id: string, props?: PrePullOutputs): Promise<{ id?: string; props?: PrePullOutputs }> {
  if (!props?.agentImageRef) {
    throw new ImageyardError(
      "UNSUPPORTED",
      `read ${id}: importing a PrePullSet is not supported. Declare the resource instead: an up adopts a DaemonSet of the same name.`,
    );
  }
  const { spec } = buildSpec(props, props.agentImageRef);
  return withClient(props, async (client) => {
    if (!(await client.get(paths.daemonSet(spec.namespace, spec.name), `read DaemonSet ${id}`))) return {};
    const state = await engine.observeSet(client, spec);
    return { id, props: outputsOf(props, spec, state, props.agentImageRef) };
  });
}

export async function deletePrePull(id: string, props: PrePullOutputs, deps: PrePullDeps = {}): Promise<void> {
  const log = logOf(deps);
  const deadline = Date.now() + timeoutMs(props.timeouts, "delete", DEFAULT_DELETE_TIMEOUT_S);
  const ns = props.namespace ?? DEFAULT_NAMESPACE;
  await withClient(props, async (client) => {
    if (props.removeImagesOnDelete && props.agentImageRef) {
      await removeImagesFromNodes(client, ns, props.name, deadline, log);
    }
    await engine.removeSet(client, ns, props.name, deadline, deps.pollMs ? { pollMs: deps.pollMs } : {});
    log(`${id}: DaemonSet and Secrets removed${props.removeImagesOnDelete ? "" : "; images stay on the nodes"}`);
  });
}

/** The dynamic provider's view of this module (provider/resources/forward.ts). */
export const lifecycle: Lifecycle<PrePullInputs, PrePullOutputs> = {
  check: (olds, news) => checkPrePull(olds, news),
  diff: (_id, olds, news) => diffPrePull(olds, news),
  create: (inputs, ctx) => createPrePull(inputs, depsOf(ctx)),
  update: (_id, olds, news, ctx) => updatePrePull(olds, news, depsOf(ctx)),
  read: (id, props) => readPrePull(id, props),
  delete: (id, props, ctx) => deletePrePull(id, props, depsOf(ctx)),
};

/** Progress lines are live-only; the summary and warnings stay. */
function depsOf(ctx: OperationContext | undefined): PrePullDeps {
  return ctx ? { log: ctx.log, progress: ctx.progress } : {};
}
