// verifyMirrorUse: every container image of every pod in a cluster, and whether the mirror serves
// it. Atmosphere checks this with a kubectl one-liner read by eye; this is the same listing as a
// check a pipeline can fail on. What counts is the pod spec's image (what the kubelet pulls, after
// Docker's normalisation: "alpine" is docker.io/library/alpine); the status imageID is reported
// but not judged, because containerd names an image by whichever of its repo digests it lists
// first, so a mirrored image also pulled from upstream may show the upstream name.
import { existsSync } from "node:fs";
import { resolve } from "node:path";
import type { Dispatcher } from "undici";
import { ImageyardError } from "../http/errors";
import { DOCKER_HUB, parseReference } from "../oci/reference";
import { KubeClient, type KubeList, type KubeObject } from "./kube";
import { loadKubeconfig, type KubeconfigSource } from "./kubeconfig";

export interface MirrorUseOptions {
  /** The mirror(s): "host[:port]" or "host[:port]/prefix"; an image is served from the mirror if it is under one. */
  mirror: string | string[];
  /** A kubeconfig file's path or the document itself; else $KUBECONFIG or ~/.kube/config, like kubectl. */
  kubeconfig?: string;
  /** Context to use instead of current-context. */
  context?: string;
  /** Only these namespaces (default: all). */
  namespaces?: string[];
  /** Also fail images that are not pinned by digest (`@sha256:…`): a tag can move under a running pod. */
  requireDigest?: boolean;
  /** For tests and benches: the connection pool to use. */
  dispatcher?: Dispatcher;
  /** Deadline for each API request (default 60 s). */
  requestTimeoutMs?: number;
  env?: NodeJS.ProcessEnv;
}

export type ContainerKind = "container" | "initContainer" | "ephemeralContainer";

export interface ContainerImageUse {
  namespace: string;
  pod: string;
  container: string;
  kind: ContainerKind;
  /** The image as the pod spec writes it. */
  image: string;
  /** What the runtime reports it runs (status imageID), once it has started. */
  imageID?: string;
  fromMirror: boolean;
  /** Why this container fails the check; absent when it passes. */
  reason?: string;
}

export interface MirrorUseReport {
  /** No container has a reason to fail. */
  ok: boolean;
  pods: number;
  containers: ContainerImageUse[];
}

interface Mirror {
  host: string;
  prefix: string;
  text: string;
}

interface PodSpecContainer {
  name: string;
  image?: string;
}
interface PodStatusContainer {
  name: string;
  imageID?: string;
}
interface ListedPod extends KubeObject {
  spec?: { containers?: PodSpecContainer[]; initContainers?: PodSpecContainer[]; ephemeralContainers?: PodSpecContainer[] };
  status?: {
    containerStatuses?: PodStatusContainer[];
    initContainerStatuses?: PodStatusContainer[];
    ephemeralContainerStatuses?: PodStatusContainer[];
  };
}

/** Pods per page: a large cluster is read in pages, never one unbounded answer. */
const PAGE = 500;
const NAMESPACE_RE = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const HUB_ALIASES = new Set(["index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"]);

function invalid(what: string, hint: string): ImageyardError {
  return new ImageyardError("INVALID_INPUT", `verify mirror use: ${what}. ${hint}.`);
}

/** "host[:port][/prefix]" → host (Docker Hub's aliases folded into docker.io) and path prefix. */
export function parseMirror(text: string): Mirror {
  const bare = text
    .trim()
    .replace(/^(?:docker|https?):\/\//, "")
    .replace(/\/+$/, "");
  const [host = "", ...rest] = bare.split("/");
  const prefix = rest.join("/");
  let checked: string;
  try {
    // The reference grammar validates host and path; "x" stands in for a repository name.
    const r = parseReference(`${host}/${prefix ? `${prefix}/` : ""}x`);
    checked = r.registry === DOCKER_HUB && !/[.:]/.test(host) && host !== "localhost" ? "" : r.registry;
  } catch {
    checked = "";
  }
  if (host === "" || checked === "")
    throw invalid(
      `mirror "${text}" is not a registry host[:port][/prefix]`,
      'Write it like "registry.local:5000" or "127.0.0.1:5001/mirror"',
    );
  const lower = host.toLowerCase();
  return { host: HUB_ALIASES.has(lower) ? DOCKER_HUB : lower, prefix, text };
}

/** Whether the mirror serves `image`; otherwise why not. */
export function judgeImage(image: string, mirrors: Mirror[], requireDigest: boolean): { fromMirror: boolean; reason?: string } {
  let ref: ReturnType<typeof parseReference>;
  try {
    ref = parseReference(image);
  } catch (e) {
    return { fromMirror: false, reason: `not an image reference the runtime can pull (${(e as Error).message})` };
  }
  const under = mirrors.some(
    (m) => ref.registry === m.host && (m.prefix === "" || ref.repository === m.prefix || ref.repository.startsWith(`${m.prefix}/`)),
  );
  const names = mirrors.map((m) => m.text).join(", ");
  if (!under) {
    const sameHost = mirrors.some((m) => m.host === ref.registry);
    return {
      fromMirror: false,
      reason: sameHost
        ? `served from ${ref.registry}/${ref.repository}, outside the mirror's prefix (${names})`
        : `served from ${ref.registry}, not the mirror (${names})`,
    };
  }
  if (requireDigest && !ref.digest) return { fromMirror: true, reason: "from the mirror but not pinned by digest (@sha256:…)" };
  return { fromMirror: true };
}

/** The document for loadKubeconfig: a path is read through KUBECONFIG so relative paths in it resolve beside it. */
function kubeconfigSource(o: MirrorUseOptions): KubeconfigSource {
  const env = o.env ?? process.env;
  const src: KubeconfigSource = { env };
  if (o.context !== undefined) src.context = o.context;
  const k = o.kubeconfig;
  if (k === undefined || k.trim() === "") return src;
  const looksLikeDocument = /[\n{]/.test(k) || /^\s*(apiVersion|kind|clusters|contexts|users|current-context)\s*:/m.test(k);
  if (looksLikeDocument) return { ...src, kubeconfig: k };
  if (!existsSync(k)) throw invalid(`kubeconfig ${resolve(k)} does not exist`, "Give the path of a kubeconfig file or the document itself");
  return { ...src, env: { ...env, KUBECONFIG: resolve(k) } };
}

/** Every pod of the namespaces (all when none is named), page by page. */
async function listPods(client: KubeClient, namespaces: string[] | undefined): Promise<ListedPod[]> {
  const bases = namespaces ? namespaces.map((ns) => `/api/v1/namespaces/${encodeURIComponent(ns)}/pods`) : ["/api/v1/pods"];
  const out: ListedPod[] = [];
  for (const base of bases) {
    let cont = "";
    do {
      const qs = new URLSearchParams({ limit: String(PAGE), ...(cont ? { continue: cont } : {}) });
      const page = await client.get<KubeList<ListedPod>>(`${base}?${qs}`, `list pods ${base.replace(/^\/api\/v1\//, "")}`);
      out.push(...(page?.items ?? []));
      cont = page?.metadata?.continue ?? "";
    } while (cont !== "");
  }
  return out;
}

function containersOf(pod: ListedPod, mirrors: Mirror[], requireDigest: boolean): ContainerImageUse[] {
  const groups: [ContainerKind, PodSpecContainer[] | undefined, PodStatusContainer[] | undefined][] = [
    ["initContainer", pod.spec?.initContainers, pod.status?.initContainerStatuses],
    ["container", pod.spec?.containers, pod.status?.containerStatuses],
    ["ephemeralContainer", pod.spec?.ephemeralContainers, pod.status?.ephemeralContainerStatuses],
  ];
  return groups.flatMap(([kind, specs, statuses]) =>
    (specs ?? []).map((c) => {
      const image = c.image ?? "";
      const use: ContainerImageUse = {
        namespace: pod.metadata.namespace ?? "",
        pod: pod.metadata.name,
        container: c.name,
        kind,
        image,
        ...judgeImage(image, mirrors, requireDigest),
      };
      const imageID = statuses?.find((s) => s.name === c.name)?.imageID;
      if (imageID) use.imageID = imageID;
      return use;
    }),
  );
}

/** Lists every container image of every pod and judges each against the mirror(s). */
export async function verifyMirrorUse(opts: MirrorUseOptions): Promise<MirrorUseReport> {
  const mirrorList = (Array.isArray(opts.mirror) ? opts.mirror : [opts.mirror]).filter((m) => m.trim() !== "");
  if (mirrorList.length === 0) throw invalid("no mirror given", 'Name the mirror registry, e.g. "registry.local:5000/mirror"');
  const mirrors = mirrorList.map(parseMirror);
  const namespaces = opts.namespaces?.length ? [...new Set(opts.namespaces)] : undefined;
  for (const ns of namespaces ?? [])
    if (!NAMESPACE_RE.test(ns)) throw invalid(`"${ns}" is not a namespace name`, "Use lowercase letters, digits and '-'");
  const connection = loadKubeconfig(kubeconfigSource(opts));
  const client = new KubeClient(connection, {
    ...(opts.dispatcher ? { dispatcher: opts.dispatcher } : {}),
    ...(opts.requestTimeoutMs ? { requestTimeoutMs: opts.requestTimeoutMs } : {}),
  });
  try {
    const pods = await listPods(client, namespaces);
    const containers = pods.flatMap((p) => containersOf(p, mirrors, opts.requireDigest ?? false));
    return { ok: containers.every((c) => c.reason === undefined), pods: pods.length, containers };
  } finally {
    await client.close();
  }
}

/** The offenders as lines a person reads in a pipeline log: "ns/pod container (kind) image: reason". */
export function describeOffenders(report: MirrorUseReport): string[] {
  return report.containers
    .filter((c) => c.reason !== undefined)
    .map((c) => `${c.namespace}/${c.pod} ${c.kind === "container" ? "" : `${c.kind} `}${c.container}: ${c.image}: ${c.reason}`);
}
