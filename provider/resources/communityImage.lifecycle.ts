// The CommunityImage lifecycle as plain functions (check, diff, create, update, read, delete) over
// the Glance and disk engines. No Pulumi import: the dynamic provider only forwards to these.
import type { Lifecycle, OperationContext } from "./forward";
import { lineProgress } from "../http/progress";
import { redactUrl } from "../http/errors";
import { timeoutMs, timeoutSeconds, type Timeouts } from "./timeouts";
import { changedKeys, compact, diffResult, isUnknown, providerChanged, type DiffResult } from "./diff";
import { checkCommunityImage, parseSize } from "./communityImage.check";
import type { ImmutableSource } from "./communityImage.immutable";
import { applyMembers, membersChanged, readMembers, type MembersInputs } from "./communityImage.members";
import { whileRunning } from "../disk/cancel";
import type { ImageSource } from "../disk/source";
import type { DiskFormat } from "../disk/qemu";
import { resolveCloud } from "../glance/clouds";
import { customProperties, findImage, glanceClient, type GlanceClient, type GlanceImage, type Visibility } from "../glance/images";
import { KeystoneSession, type AuthOptions } from "../glance/keystone";
import { publishImage, scsProperties, type PublishFailureInfo, type PublishSpec } from "../glance/publish";
import { removeImage, updateImage, type ImageAttributes } from "../glance/update";

export { checkCommunityImage, parseSize, validateCommunityImage } from "./communityImage.check";

/** Explicit OpenStack credentials (all optional: they override the cloud's and OS_* values). */
export type CredentialsInput = Partial<AuthOptions>;

export interface CommunityImageInputs extends MembersInputs {
  name: string;
  source: ImageSource;
  diskFormat: DiskFormat;
  containerFormat?: string;
  visibility?: Visibility;
  minDisk?: number;
  minRam?: number;
  properties?: Record<string, string>;
  tags?: string[];
  protected?: boolean;
  hidden?: boolean;
  /** false: the image is deactivated. */
  active?: boolean;
  /** upload (default), glance-direct (stage + import) or web-download; one the cloud does not enable falls back (logged). */
  importMethod?: "upload" | "glance-direct" | "web-download";
  /** How often a stuck import (not active by importTimeout) is started again. Default 2. */
  importRetries?: number;
  /** When an import that is not active yet counts as stuck: seconds or "30m" (default 30 min). */
  importTimeout?: number | string;
  /** SCS metadata: image_original_user, image_build_date (YYYY-MM-DD), image_description. */
  login?: string;
  buildDate?: string;
  description?: string;
  cloud?: string;
  credentials?: CredentialsInput;
  scratchDir?: string;
  /** Seconds; Pulumi's customTimeouts do not reach dynamic providers. */
  timeouts?: Timeouts;
  keepOnFailure?: boolean;
  /** Let a file:// source.url read files of the host running the provider (off by default). */
  allowLocalFiles?: boolean;
  /** Largest guest size accepted: bytes, or "64GiB" (default 64 GiB). */
  maxVirtualSize?: number | string;
  /** Set by check from checksumUrl: a changed SUMS entry replaces the image. */
  resolvedChecksum?: string;
  /** A component's promise that this key never changes source: check refuses a change (./communityImage.immutable). */
  immutableSource?: ImmutableSource;
  /** The name while the data is uploaded; `name` is set once the image is active (catalog rotation). */
  publishName?: string;
}

export interface CommunityImageOutputs extends CommunityImageInputs {
  imageId: string;
  status: string;
  checksum: string;
  osHashAlgo: string;
  osHashValue: string;
  size: number;
  virtualSize: number;
  owner: string;
  /** The properties this resource sets (user properties + SCS metadata). */
  managedProperties: Record<string, string>;
  /** All custom properties of the image, as Glance has them. */
  properties: Record<string, string>;
  createdAt: string;
  updatedAt: string;
  [key: string]: unknown;
}

export interface CommunityDeps {
  log?: (line: string) => void;
  /** Live progress lines (default: log). */
  progress?: (line: string) => void;
  /** For tests: a ready Glance client instead of resolving the cloud. */
  glance?: GlanceClient;
  /** check() looks at the source's header and asks Keystone for a token (default true). */
  preflight?: boolean;
  /** Aborts the operation (default: the process receiving SIGTERM or SIGINT). */
  signal?: AbortSignal;
}

const DEFAULT_CREATE_S = 3600;

// ---------------------------------------------------------------- diff

const REPLACE_KEYS = ["diskFormat", "containerFormat", "resolvedChecksum"] as const;
/** Attributes Glance holds, compared with what read() last observed (so drift is a change). */
const OBSERVED_KEYS = ["name", "visibility", "minDisk", "minRam", "protected", "hidden", "active"] as const;
/** Inputs Glance does not hold: a change updates state (and the credentials used next time) only. */
const LOCAL_KEYS = [
  "cloud",
  "credentials",
  "importMethod",
  "importRetries",
  "importTimeout",
  "scratchDir",
  "timeouts",
  "keepOnFailure",
  "allowLocalFiles",
  "maxVirtualSize",
] as const;

/** The Glance attributes the inputs ask for (defaults filled, SCS metadata merged). */
export function wantedAttributes(i: CommunityImageInputs): ImageAttributes {
  return {
    name: i.name,
    visibility: i.visibility ?? "community",
    minDisk: i.minDisk ?? 0,
    minRam: i.minRam ?? 0,
    properties: managedProperties(i),
    tags: i.tags ?? [],
    protected: i.protected ?? false,
    hidden: i.hidden ?? false,
    active: i.active ?? true,
  };
}

export function managedProperties(i: CommunityImageInputs): Record<string, string> {
  return {
    ...scsProperties({ name: i.name, url: i.source.url, buildDate: i.buildDate, login: i.login, description: i.description }),
    ...(i.properties ?? {}),
  };
}

export function diffCommunityImage(olds: CommunityImageOutputs, news: CommunityImageInputs): DiffResult {
  const replaces: string[] = [];
  const updates: string[] = [];
  const o = olds.source ?? ({} as ImageSource);
  const n = news.source ?? ({} as ImageSource);
  if (isUnknown(n) || o.url !== n.url || (o.checksum ?? "") !== (n.checksum ?? "") || (o.checksumUrl ?? "") !== (n.checksumUrl ?? ""))
    replaces.push("source");
  // Another mirror yields the same verified bytes: state takes it, the image stays.
  else if ((o.mirrorUrl ?? "") !== (n.mirrorUrl ?? "")) updates.push("source");
  for (const k of REPLACE_KEYS) if (!sameOr(olds[k], news[k], k === "containerFormat" ? "bare" : undefined)) replaces.push(k);
  const want = isUnknown(news.source) ? undefined : wantedAttributes(news);
  if (want) {
    const seen: Partial<ImageAttributes> = observedAttributes(olds);
    for (const k of OBSERVED_KEYS) {
      if (isUnknown(news[k]) || !sameOr(seen[k], want[k])) updates.push(k);
    }
    if (isUnknown(news.tags) || !sameSet(olds.tags ?? [], want.tags)) updates.push("tags");
    if (isUnknown(news.properties) || propertiesDiffer(olds, want.properties)) updates.push("properties");
  }
  updates.push(...changedKeys<CommunityImageInputs>(olds, news, LOCAL_KEYS));
  if (membersChanged(olds, news)) updates.push("members");
  if (providerChanged(olds, news as unknown as Record<string, unknown>)) updates.push("__provider");
  return diffResult(updates, replaces);
}

function sameOr(a: unknown, b: unknown, dflt?: unknown): boolean {
  return JSON.stringify(a ?? dflt) === JSON.stringify(b ?? dflt);
}

function sameSet(a: readonly string[], b: readonly string[]): boolean {
  return JSON.stringify([...new Set(a)].sort()) === JSON.stringify([...new Set(b)].sort());
}

/** Wanted properties differ from what Glance has, or a property we set before is still there but no longer wanted. */
function propertiesDiffer(olds: CommunityImageOutputs, want: Record<string, string>): boolean {
  const seen = olds.properties ?? {};
  if (Object.entries(want).some(([k, v]) => seen[k] !== v)) return true;
  return Object.keys(olds.managedProperties ?? {}).some((k) => !(k in want) && seen[k] !== undefined);
}

function observedAttributes(o: CommunityImageOutputs): Partial<ImageAttributes> {
  return {
    name: o.name,
    visibility: o.visibility,
    minDisk: o.minDisk,
    minRam: o.minRam,
    protected: o.protected,
    hidden: o.hidden,
    active: o.active,
  };
}

// ---------------------------------------------------------------- create / update / read / delete

async function connect(
  i: Pick<CommunityImageInputs, "cloud" | "credentials">,
  deps: CommunityDeps,
  signal?: AbortSignal,
): Promise<GlanceClient> {
  if (deps.glance) return deps.glance;
  const { auth } = resolveCloud({ ...(i.cloud ? { cloud: i.cloud } : {}), explicit: i.credentials ?? {} });
  return glanceClient(new KeystoneSession(auth, { signal }));
}

export function outputsOf(inputs: CommunityImageInputs, img: GlanceImage, managed = managedProperties(inputs)): CommunityImageOutputs {
  return compact({
    ...inputs,
    imageId: img.id,
    name: img.name ?? "",
    status: img.status,
    checksum: img.checksum ?? "",
    osHashAlgo: img.os_hash_algo ?? "",
    osHashValue: img.os_hash_value ?? "",
    size: img.size ?? 0,
    virtualSize: img.virtual_size ?? 0,
    diskFormat: (img.disk_format ?? inputs.diskFormat) as DiskFormat,
    containerFormat: img.container_format ?? inputs.containerFormat ?? "bare",
    visibility: img.visibility,
    owner: img.owner ?? "",
    minDisk: img.min_disk,
    minRam: img.min_ram,
    protected: img.protected,
    hidden: Boolean(img.os_hidden),
    active: img.status !== "deactivated",
    tags: [...(img.tags ?? [])].sort(),
    properties: customProperties(img),
    managedProperties: managed,
    createdAt: img.created_at,
    updatedAt: img.updated_at,
  });
}

export function publishSpecOf(i: CommunityImageInputs): PublishSpec {
  const source: ImageSource = { ...i.source };
  // Upload exactly what check resolved, so a SUMS file that changes between preview and up can't slip in.
  if (i.resolvedChecksum && source.checksum === undefined) {
    source.checksum = i.resolvedChecksum;
    delete source.checksumUrl;
  }
  return {
    ...wantedAttributes(i),
    source,
    diskFormat: i.diskFormat,
    containerFormat: i.containerFormat ?? "bare",
    importMethod: i.importMethod ?? "upload",
    ...(i.importRetries !== undefined ? { importRetries: i.importRetries } : {}),
    ...(i.importTimeout !== undefined ? { importTimeoutMs: (timeoutSeconds(i.importTimeout) as number) * 1000 } : {}),
    keepOnFailure: i.keepOnFailure ?? false,
    timeoutMs: timeoutMs(i.timeouts, "create", DEFAULT_CREATE_S),
    ...(i.scratchDir ? { scratchDir: i.scratchDir } : {}),
    ...(i.allowLocalFiles ? { allowLocalFiles: true } : {}),
    ...(i.maxVirtualSize !== undefined ? { maxVirtualSize: parseSize(i.maxVirtualSize) } : {}),
  };
}

export async function createCommunityImage(
  inputs: CommunityImageInputs,
  deps: CommunityDeps = {},
): Promise<{ id: string; outs: CommunityImageOutputs }> {
  const log = deps.log ?? ((line: string) => console.log(line));
  const spec = { ...publishSpecOf(inputs), ...(inputs.publishName ? { name: inputs.publishName } : {}) };
  const glance = await connect(inputs, deps);
  try {
    const r = await stoppable(deps, log, (signal) =>
      publishImage(spec, { glance, log, onProgress: lineProgress(deps.progress ?? log), signal }),
    );
    const how = r.adopted
      ? "adopted"
      : `${r.method === "web-download" ? "Glance downloaded it" : `${r.uploadedBytes} bytes by ${r.method}`}${r.sourceUrl ? ` from ${r.sourceUrl === inputs.source.mirrorUrl ? "the mirror " : ""}${redactUrl(r.sourceUrl)}` : ""}`;
    log(
      `${inputs.name}: image ${r.image.id} ${r.image.status} (${how}${r.importRetries ? `, ${r.importRetries} stuck import(s) retried` : ""}, verified ${r.verified})`,
    );
    return { id: r.image.id, outs: await finishCreate(glance, r.image, inputs) };
  } catch (e) {
    const info = e as PublishFailureInfo;
    // The image is still in Glance (keepOnFailure, or its deletion failed): record it in state.
    if (info.imageId && info.imageKept) {
      const img = await findImage(glance, info.imageId).catch(() => undefined);
      if (img) Object.assign(e as object, { id: img.id, properties: outputsOf(inputs, img), reasons: [(e as Error).message] });
    }
    throw e;
  }
}

/** An image published under publishName gets its real name now that it is active; then its members. */
async function finishCreate(glance: GlanceClient, img: GlanceImage, inputs: CommunityImageInputs): Promise<CommunityImageOutputs> {
  try {
    const named = img.name === inputs.name ? img : await updateImage(glance, img.id, undefined, wantedAttributes(inputs));
    return { ...outputsOf(inputs, named), ...(await applyMembers(glance, img.id, inputs)) };
  } catch (e) {
    // Recorded in state as it is: the next up finishes it (diff sees the name and the members).
    throw Object.assign(e as object, { id: img.id, properties: outputsOf(inputs, img), reasons: [(e as Error).message] });
  }
}

export async function updateCommunityImage(
  id: string,
  olds: CommunityImageOutputs,
  news: CommunityImageInputs,
  deps: CommunityDeps = {},
): Promise<CommunityImageOutputs> {
  return stoppable(deps, console.log, async (stop) => {
    const signal = AbortSignal.any([AbortSignal.timeout(timeoutMs(news.timeouts, "update", 600)), stop]);
    const glance = await connect(news, deps, signal);
    const img = await updateImage(glance, id, { properties: olds.managedProperties ?? {} }, wantedAttributes(news), signal);
    return { ...outputsOf(news, img), ...(await applyMembers(glance, id, news, signal)) };
  });
}

/** Runs `fn` with deps.signal, or else with one that a SIGTERM/SIGINT to this process aborts. */
function stoppable<T>(deps: CommunityDeps, log: (line: string) => void, fn: (signal: AbortSignal) => Promise<T>): Promise<T> {
  return deps.signal ? fn(deps.signal) : whileRunning(fn, log);
}

export async function readCommunityImage(
  id: string,
  props: CommunityImageOutputs | undefined,
  deps: CommunityDeps = {},
): Promise<{ id?: string; props?: CommunityImageOutputs }> {
  const glance = await connect(props ?? {}, deps);
  const img = await findImage(glance, id);
  if (!img || img.status === "deleted" || img.status === "pending_delete") return {};
  if (props?.source) return { id, props: { ...outputsOf(props, img, props.managedProperties), ...(await readMembers(glance, id, props)) } };
  // No state (an import): describe the image from what Glance has.
  const inputs: CommunityImageInputs = {
    name: img.name ?? "",
    source: { url: String(img.image_source ?? "") },
    diskFormat: (img.disk_format ?? "raw") as DiskFormat,
  };
  return { id, props: outputsOf(inputs, img, {}) };
}

export async function deleteCommunityImage(id: string, props: CommunityImageOutputs, deps: CommunityDeps = {}): Promise<void> {
  const log = deps.log ?? ((line: string) => console.log(line));
  await stoppable(deps, log, async (stop) => {
    const signal = AbortSignal.any([AbortSignal.timeout(timeoutMs(props.timeouts, "delete", 300)), stop]);
    const glance = await connect(props, deps, signal);
    const existed = await removeImage(glance, id, signal);
    if (!existed) log(`${props.name ?? id}: image ${id} was already gone from Glance`);
  });
}

/** The dynamic provider's view of this module (provider/resources/forward.ts). */
export const lifecycle: Lifecycle<CommunityImageInputs, CommunityImageOutputs> = {
  check: (olds, news) => checkCommunityImage(olds, news),
  diff: (_id, olds, news) => diffCommunityImage(olds, news),
  create: (inputs, ctx) => createCommunityImage(inputs, depsOf(ctx)),
  update: (id, olds, news, ctx) => updateCommunityImage(id, olds, news, depsOf(ctx)),
  read: (id, props) => readCommunityImage(id, props),
  delete: (id, props, ctx) => deleteCommunityImage(id, props, depsOf(ctx)),
};

/** Progress lines are live-only; the summary and notes stay. */
function depsOf(ctx: OperationContext | undefined): CommunityDeps {
  return ctx ? { log: ctx.log, progress: ctx.progress } : {};
}
