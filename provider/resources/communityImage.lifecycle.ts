// The CommunityImage lifecycle as plain functions (check, diff, create, update, read, delete) over
// the Glance and disk engines. No Pulumi import: the dynamic provider only forwards to these.
import type { Lifecycle } from "./forward";
import { isImageyardError } from "../http/errors";
import { lineProgress } from "../http/progress";
import { checkTimeouts, timeoutMs, type Timeouts } from "./timeouts";
import { changedKeys, compact, diffResult, isUnknown, providerChanged, type CheckFailure, type DiffResult } from "./diff";
import { checkImageSource, resolveChecksum, type ImageSource } from "../disk/source";
import { DISK_FORMATS, type DiskFormat } from "../disk/qemu";
import { resolveCloud } from "../glance/clouds";
import { CORE_ATTRIBUTES, CONTAINER_FORMATS, customProperties, findImage, glanceClient, VISIBILITIES, type GlanceClient, type GlanceImage, type Visibility } from "../glance/images";
import { KeystoneSession, type AuthOptions } from "../glance/keystone";
import { publishImage, REQUEST_KEY_PROPERTY, scsProperties, SOURCE_CHECKSUM_PROPERTY, type PublishFailureInfo, type PublishSpec } from "../glance/publish";
import { removeImage, updateImage, type ImageAttributes } from "../glance/update";

/** Explicit OpenStack credentials (all optional: they override the cloud's and OS_* values). */
export type CredentialsInput = Partial<AuthOptions>;

export interface CommunityImageInputs {
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
  importMethod?: "upload" | "web-download";
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
  /** Set by check from checksumUrl: a changed SUMS entry replaces the image. */
  resolvedChecksum?: string;
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
  /** For tests: a ready Glance client instead of resolving the cloud. */
  glance?: GlanceClient;
}

const DEFAULT_CREATE_S = 3600;
const NAME_MAX = 255;
const RESERVED = new Set([...CORE_ATTRIBUTES, REQUEST_KEY_PROPERTY, SOURCE_CHECKSUM_PROPERTY]);

// ---------------------------------------------------------------- check

export async function checkCommunityImage(olds: Partial<CommunityImageInputs>, news: CommunityImageInputs, deps: CommunityDeps = {}): Promise<{ inputs: CommunityImageInputs; failures: CheckFailure[] }> {
  const failures = validateCommunityImage(news);
  const inputs = normalizeInputs(news);
  if (failures.length > 0 || isUnknown(news.source)) return { inputs, failures };
  if (news.source.checksumUrl !== undefined) {
    const sameSource = olds.source?.url === news.source.url && olds.source?.checksumUrl === news.source.checksumUrl && olds.resolvedChecksum !== undefined;
    try {
      const c = await resolveChecksum(news.source);
      if (c) inputs.resolvedChecksum = `${c.algo}:${c.value}`;
    } catch (e) {
      // A SUMS host that is down must not break every preview of an existing image.
      if (sameSource && isImageyardError(e) && (e.retryable || e.code === "NETWORK_ERROR" || e.code === "TIMEOUT")) {
        (deps.log ?? console.log)(`warning: ${(e as Error).message}; keeping ${olds.resolvedChecksum}`);
        inputs.resolvedChecksum = olds.resolvedChecksum;
      } else {
        return { inputs, failures: [{ property: "source.checksumUrl", reason: (e as Error).message }] };
      }
    }
  }
  return { inputs, failures };
}

function normalizeInputs(news: CommunityImageInputs): CommunityImageInputs {
  const inputs: CommunityImageInputs = { ...news };
  delete inputs.resolvedChecksum;
  if (news.properties && !isUnknown(news.properties)) {
    inputs.properties = Object.fromEntries(Object.entries(news.properties).map(([k, v]) => [k, typeof v === "string" ? v : String(v)]));
  }
  return compact(inputs);
}

const PROP_EXAMPLE = 'e.g. { os_distro: "debian", os_version: "12", hw_disk_bus: "scsi" }';

/** Offline validation: each message names the property, what is wrong, and a right example. */
export function validateCommunityImage(n: Partial<CommunityImageInputs>): CheckFailure[] {
  const failures: CheckFailure[] = [];
  const fail = (property: string, reason: string) => failures.push({ property, reason });
  const known = (v: unknown) => v !== undefined && !isUnknown(v);
  if (typeof n.name !== "string" || n.name.trim() === "") fail("name", 'name is required, e.g. "Debian 12 (20240717)"');
  else if (n.name.length > NAME_MAX) fail("name", `name has ${n.name.length} characters; Glance allows ${NAME_MAX}`);
  if (n.source === undefined || n.source === null || typeof n.source !== "object") {
    fail("source", 'source is required, e.g. { url: "https://cloud.debian.org/images/cloud/bookworm/latest/debian-12-generic-amd64.qcow2", checksumUrl: "https://cloud.debian.org/images/cloud/bookworm/latest/SHA512SUMS" }');
  } else if (!isUnknown(n.source)) {
    for (const p of checkImageSource(n.source, isUnknown(n.diskFormat) ? undefined : n.diskFormat)) fail(p.startsWith("diskFormat") ? "diskFormat" : "source", p);
  }
  if (n.diskFormat === undefined) fail("diskFormat", `diskFormat is required: one of ${DISK_FORMATS.join(", ")}, e.g. "raw" for Ceph-backed clouds, else "qcow2"`);
  else if (!isUnknown(n.diskFormat) && !DISK_FORMATS.includes(n.diskFormat) && (n.source === undefined || isUnknown(n.source))) {
    fail("diskFormat", `diskFormat "${n.diskFormat}" is not one of ${DISK_FORMATS.join(", ")}`);
  }
  if (known(n.containerFormat) && !(CONTAINER_FORMATS as readonly string[]).includes(n.containerFormat as string)) {
    fail("containerFormat", `containerFormat "${n.containerFormat}" is not one of ${CONTAINER_FORMATS.join(", ")}; disk images use "bare"`);
  }
  if (known(n.visibility) && !VISIBILITIES.includes(n.visibility as Visibility)) {
    fail("visibility", `visibility "${n.visibility}" is not one of ${VISIBILITIES.join(", ")} (community: usable by every project by ID, not listed by default)`);
  }
  for (const k of ["minDisk", "minRam"] as const) {
    const v = n[k];
    if (known(v) && !(Number.isInteger(v) && (v as number) >= 0)) fail(k, `${k} must be a whole number ≥ 0 (${k === "minDisk" ? "GiB, e.g. 8" : "MiB, e.g. 512"}), not ${JSON.stringify(v)}`);
  }
  if (known(n.properties)) {
    if (typeof n.properties !== "object" || n.properties === null || Array.isArray(n.properties)) fail("properties", `properties must be a map of strings, ${PROP_EXAMPLE}`);
    else
      for (const [k, v] of Object.entries(n.properties)) {
        if (RESERVED.has(k) || k.startsWith("os_glance_")) fail(`properties.${k}`, `"${k}" is a Glance attribute or one imageyard sets itself; use the resource's own input (name, minDisk, tags, …) or another key`);
        else if (k.length > 255) fail(`properties.${k.slice(0, 20)}…`, "property names are at most 255 characters");
        else if (!["string", "number", "boolean"].includes(typeof v) && !isUnknown(v)) fail(`properties.${k}`, `property values are strings (numbers and booleans are converted), not ${typeof v}; ${PROP_EXAMPLE}`);
      }
  }
  if (known(n.tags)) {
    if (!Array.isArray(n.tags) || n.tags.some((t) => typeof t !== "string" || t === "" || t.length > 255)) fail("tags", 'tags must be a list of non-empty strings, e.g. ["debian", "imageyard"]');
  }
  for (const k of ["protected", "hidden", "active", "keepOnFailure"] as const) {
    if (known(n[k]) && typeof n[k] !== "boolean") fail(k, `${k} must be true or false`);
  }
  if (known(n.importMethod) && n.importMethod !== "upload" && n.importMethod !== "web-download") {
    fail("importMethod", `importMethod "${n.importMethod}" is not one of upload (download, verify and convert here, then upload), web-download (Glance fetches the URL itself)`);
  }
  if (n.importMethod === "web-download" && n.source && !isUnknown(n.source)) {
    if (typeof n.source.url === "string" && !/^https?:\/\//i.test(n.source.url)) fail("source.url", "web-download needs an http(s) URL Glance can reach; a file: URL only works with importMethod upload");
    if (n.source.compression !== undefined && n.source.compression !== "none") fail("source.compression", "Glance's web-download does not decompress; use importMethod upload for compressed sources");
    const from = n.source.format ?? n.diskFormat;
    if (known(n.diskFormat) && from !== n.diskFormat && n.diskFormat !== "raw") {
      fail("diskFormat", `web-download converts only to Glance's image_conversion output format (raw); for ${from} → ${n.diskFormat} use importMethod upload`);
    }
  }
  if (known(n.buildDate) && !/^\d{4}-\d{2}-\d{2}$/.test(String(n.buildDate))) fail("buildDate", `buildDate must be YYYY-MM-DD, e.g. "2024-07-17", not "${n.buildDate}"`);
  if (known(n.cloud) && (typeof n.cloud !== "string" || n.cloud === "")) fail("cloud", 'cloud must be the name of an entry in clouds.yaml, e.g. "openstack"');
  if (known(n.credentials)) {
    const c = n.credentials as CredentialsInput;
    if (typeof c !== "object" || c === null) fail("credentials", 'credentials must be an object, e.g. { authUrl: "https://keystone:5000/v3", username: "demo", password: cfg.requireSecret("osPassword"), projectName: "demo" }');
    else {
      if (c.password !== undefined && c.applicationCredentialSecret !== undefined) fail("credentials", "credentials has both password and applicationCredentialSecret; give one way to authenticate");
      if (c.applicationCredentialSecret !== undefined && c.applicationCredentialId === undefined && c.applicationCredentialName === undefined) fail("credentials.applicationCredentialId", "an application credential needs applicationCredentialId (or applicationCredentialName with username)");
    }
  }
  for (const f of checkTimeouts(n.timeouts)) fail(f.property, f.reason);
  if (failures.length === 0 && !isUnknown(n.cloud) && !isUnknown(n.credentials)) {
    try {
      resolveCloud({ ...(n.cloud ? { cloud: n.cloud } : {}), explicit: n.credentials ?? {} });
    } catch (e) {
      fail(n.cloud ? "cloud" : "credentials", (e as Error).message);
    }
  }
  return failures;
}

// ---------------------------------------------------------------- diff

const REPLACE_KEYS = ["diskFormat", "containerFormat", "resolvedChecksum"] as const;
/** Attributes Glance holds, compared with what read() last observed (so drift is a change). */
const OBSERVED_KEYS = ["name", "visibility", "minDisk", "minRam", "protected", "hidden", "active"] as const;
/** Inputs Glance does not hold: a change updates state (and the credentials used next time) only. */
const LOCAL_KEYS = ["cloud", "credentials", "importMethod", "scratchDir", "timeouts", "keepOnFailure"] as const;

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
  return { ...scsProperties({ name: i.name, url: i.source.url, buildDate: i.buildDate, login: i.login, description: i.description }), ...(i.properties ?? {}) };
}

export function diffCommunityImage(olds: CommunityImageOutputs, news: CommunityImageInputs): DiffResult {
  const replaces: string[] = [];
  const o = olds.source ?? ({} as ImageSource);
  const n = news.source ?? ({} as ImageSource);
  if (isUnknown(n) || o.url !== n.url || (o.checksum ?? "") !== (n.checksum ?? "") || (o.checksumUrl ?? "") !== (n.checksumUrl ?? "")) replaces.push("source");
  for (const k of REPLACE_KEYS) if (!sameOr(olds[k], news[k], k === "containerFormat" ? "bare" : undefined)) replaces.push(k);
  const want = isUnknown(news.source) ? undefined : wantedAttributes(news);
  const updates: string[] = [];
  if (want) {
    const seen: Partial<ImageAttributes> = observedAttributes(olds);
    for (const k of OBSERVED_KEYS) {
      if (isUnknown(news[k]) || !sameOr(seen[k], want[k])) updates.push(k);
    }
    if (isUnknown(news.tags) || !sameSet(olds.tags ?? [], want.tags)) updates.push("tags");
    if (isUnknown(news.properties) || propertiesDiffer(olds, want.properties)) updates.push("properties");
  }
  updates.push(...changedKeys<CommunityImageInputs>(olds, news, LOCAL_KEYS));
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
  return { name: o.name, visibility: o.visibility, minDisk: o.minDisk, minRam: o.minRam, protected: o.protected, hidden: o.hidden, active: o.active };
}

// ---------------------------------------------------------------- create / update / read / delete

async function connect(i: Pick<CommunityImageInputs, "cloud" | "credentials">, deps: CommunityDeps, signal?: AbortSignal): Promise<GlanceClient> {
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
    keepOnFailure: i.keepOnFailure ?? false,
    timeoutMs: timeoutMs(i.timeouts, "create", DEFAULT_CREATE_S),
    ...(i.scratchDir ? { scratchDir: i.scratchDir } : {}),
  };
}

export async function createCommunityImage(inputs: CommunityImageInputs, deps: CommunityDeps = {}): Promise<{ id: string; outs: CommunityImageOutputs }> {
  const log = deps.log ?? ((line: string) => console.log(line));
  const spec = publishSpecOf(inputs);
  const glance = await connect(inputs, deps);
  try {
    const r = await publishImage(spec, { glance, log, onProgress: lineProgress(log) });
    log(`${inputs.name}: image ${r.image.id} ${r.image.status} (${r.adopted ? "adopted" : `${r.uploadedBytes} bytes uploaded`}, verified ${r.verified})`);
    return { id: r.image.id, outs: outputsOf(inputs, r.image) };
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

export async function updateCommunityImage(id: string, olds: CommunityImageOutputs, news: CommunityImageInputs, deps: CommunityDeps = {}): Promise<CommunityImageOutputs> {
  const signal = AbortSignal.timeout(timeoutMs(news.timeouts, "update", 600));
  const glance = await connect(news, deps, signal);
  const img = await updateImage(glance, id, { properties: olds.managedProperties ?? {} }, wantedAttributes(news), signal);
  return outputsOf(news, img);
}

export async function readCommunityImage(id: string, props: CommunityImageOutputs | undefined, deps: CommunityDeps = {}): Promise<{ id?: string; props?: CommunityImageOutputs }> {
  const glance = await connect(props ?? {}, deps);
  const img = await findImage(glance, id);
  if (!img || img.status === "deleted" || img.status === "pending_delete") return {};
  if (props?.source) return { id, props: outputsOf(props, img, props.managedProperties) };
  // No state (an import): describe the image from what Glance has.
  const inputs: CommunityImageInputs = { name: img.name ?? "", source: { url: String(img.image_source ?? "") }, diskFormat: (img.disk_format ?? "raw") as DiskFormat };
  return { id, props: outputsOf(inputs, img, {}) };
}

export async function deleteCommunityImage(id: string, props: CommunityImageOutputs, deps: CommunityDeps = {}): Promise<void> {
  const log = deps.log ?? ((line: string) => console.log(line));
  const signal = AbortSignal.timeout(timeoutMs(props.timeouts, "delete", 300));
  const glance = await connect(props, deps, signal);
  const existed = await removeImage(glance, id, signal);
  if (!existed) log(`${props.name ?? id}: image ${id} was already gone from Glance`);
}

/** The dynamic provider's view of this module (provider/resources/forward.ts). */
export const lifecycle: Lifecycle<CommunityImageInputs, CommunityImageOutputs> = {
  check: (olds, news) => checkCommunityImage(olds, news),
  diff: (_id, olds, news) => diffCommunityImage(olds, news),
  create: (inputs) => createCommunityImage(inputs),
  update: (id, olds, news) => updateCommunityImage(id, olds, news),
  read: (id, props) => readCommunityImage(id, props),
  delete: (id, props) => deleteCommunityImage(id, props),
};
