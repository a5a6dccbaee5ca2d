// The first half of a copy: look before moving anything. HEAD both sides (regsync's fast path),
// then walk the source image (index → children → config + layers, signatures) and decide per blob
// whether the target already has it, can mount it, or needs it uploaded. The plan is also what a
// preview shows (summarizePlan).
import { ImageyardError } from "../http/errors";
import { formatBytes, type ProgressSink } from "../http/progress";
import { mapLimit } from "../http/retry";
import { readVerified } from "./digest";
import { LayoutStore } from "./layout";
import { digestOfLocation, parseLocation, pinnedLocation, resolveTarget, tagOf, type ImageLocation } from "./location";
import { formatPlatform, parseManifest, parsePlatform, platformMatches, referencedDescriptors, type Descriptor, type ParsedManifest, type Platform } from "./manifest";
import type { ManifestResponse, RegistryClient, RegistryOptions } from "./registry";
import { openRegistryStore, type ImageStore } from "./store";

export interface CopyRequest {
  /** "registry/repo:tag", "registry/repo@sha256:…", "docker://…", "oci:PATH[:tag]". */
  source: string;
  /** A repository (the tag defaults to the source's), a full reference, or "oci:PATH[:tag]". */
  target: string;
  /** ["linux/amd64"]: copy only these from an index (a new index, so a new digest). Default: all. */
  platforms?: string[];
  /** Copy cosign-style sha256-<hex>.sig/.att/.sbom tags and OCI referrers. Default true. */
  copySignatures?: boolean;
  sourceOptions?: RegistryOptions;
  targetOptions?: RegistryOptions;
  /** Blobs in flight at once. Default 4. */
  concurrency?: number;
  /**
   * When the target is already up to date, also read it (a few GETs) to report platforms and
   * totalSize. Default false: an up-to-date copy costs exactly two HEADs.
   */
  describe?: boolean;
}

export type StoreSide = "source" | "target";

export interface CopyDeps {
  onProgress?: ProgressSink;
  signal?: AbortSignal;
  /** Supplies the registry client per registry and side (tests, benches counting requests). */
  clients?: (registry: string, side: StoreSide) => RegistryClient;
}

export type BlobAction = "skip" | "mount" | "upload";

export interface PlannedBlob {
  digest: string;
  size: number;
  mediaType: string;
  action: BlobAction;
  /** The repository (same registry as the target) to mount from. */
  mountFrom?: string;
}

export type ManifestRole = "image" | "index" | "child" | "signature" | "referrer";

export interface PlannedManifest {
  digest: string;
  mediaType: string;
  size: number;
  role: ManifestRole;
  /** Stored under this tag; by digest when absent. */
  tag?: string;
  platform?: string;
  action: "skip" | "put";
  /** The exact bytes to store (manifests are small). */
  bytes: Buffer;
}

export interface PlanTotals {
  blobs: number;
  upload: number;
  mount: number;
  skip: number;
  bytesToUpload: number;
  bytesToMount: number;
  manifestsToPut: number;
}

export interface CopyPlan {
  /** Source as given, normalised ("127.0.0.1:5001/team/app:v1"). */
  source: string;
  /** Resolved target ("127.0.0.1:5002/mirror/app:v1" or "oci:/dir:v1"). */
  target: string;
  sourceDigest: string;
  /** The digest the target ends up with (differs from sourceDigest only when platforms filtered). */
  digest: string;
  mediaType: string;
  /** The target tag; undefined means stored by digest only. */
  tag?: string;
  /** "registry/repo@sha256:…" of the source. */
  sourceRef: string;
  /** "registry/repo@sha256:…" of the target. */
  pinnedRef: string;
  /** "registry/repo:tag" of the target (pinnedRef when untagged). */
  tagRef: string;
  platforms: string[];
  platformsFiltered: boolean;
  /** The target tag already points at the digest: nothing to do. */
  upToDate: boolean;
  /** Bytes of every manifest and unique blob of the copied image (signatures excluded). */
  totalSize: number;
  /** Every manifest in push order; the tagged image is last. */
  manifests: PlannedManifest[];
  blobs: PlannedBlob[];
  signatures: number;
  totals: PlanTotals;
}

interface PlanContext {
  source: ImageStore;
  target: ImageStore;
  request: CopyRequest;
  deps: CopyDeps;
}

/** Stores behind a plan, kept off the plan object so printing a plan never shows credentials. */
const contexts = new WeakMap<CopyPlan, PlanContext>();

export function planContext(plan: CopyPlan): PlanContext {
  const ctx = contexts.get(plan);
  if (!ctx) throw new ImageyardError("INVALID_INPUT", "execute copy: the plan was not made by planCopy in this process. Call planCopy (or copyImage) again.");
  return ctx;
}

const MANIFEST_CONCURRENCY = 4;
const MAX_CONFIG_BYTES = 8 * 1024 * 1024;
const SIGNATURE_SUFFIXES = ["sig", "att", "sbom"];
/** Children whose signature tags we look for; an index with more is unusual and each costs HEADs. */
const MAX_SIGNED_CHILDREN = 16;

// Known locations ----------------------------------------------------------------------------

/** digest → "registry/repo" places known to hold it, so later copies in this process can mount. */
const knownLocations = new Map<string, Set<string>>();
const MAX_KNOWN = 20_000;

export function rememberBlob(digest: string, registry: string, repository: string): void {
  let s = knownLocations.get(digest);
  if (!s) {
    if (knownLocations.size >= MAX_KNOWN) knownLocations.delete(knownLocations.keys().next().value!);
    s = new Set();
    knownLocations.set(digest, s);
  }
  s.add(`${registry}/${repository}`);
}

/** A repository on `registry` other than `repository` known to hold the blob. */
export function mountSource(digest: string, registry: string, repository: string): string | undefined {
  for (const place of knownLocations.get(digest) ?? []) {
    if (place.startsWith(`${registry}/`) && place !== `${registry}/${repository}`) return place.slice(registry.length + 1);
  }
  return undefined;
}

export function forgetKnownLocations(): void {
  knownLocations.clear();
}

// Stores -------------------------------------------------------------------------------------

export function openStore(loc: ImageLocation, side: StoreSide, options: RegistryOptions | undefined, deps: CopyDeps): ImageStore {
  if (loc.kind === "layout") return new LayoutStore(loc.path, side === "source");
  const registry = loc.ref.registry;
  const opts: RegistryOptions = { credentialsInput: side === "source" ? "sourceAuth" : "targetAuth", ...options };
  if (deps.signal && !opts.signal) opts.signal = deps.signal;
  return openRegistryStore(registry, loc.ref.repository, opts, deps.clients?.(registry, side));
}

// Planning -----------------------------------------------------------------------------------

export async function planCopy(request: CopyRequest, deps: CopyDeps = {}): Promise<CopyPlan> {
  const sourceLoc = parseLocation(request.source);
  const targetLoc = resolveTarget(sourceLoc, parseLocation(request.target));
  const source = openStore(sourceLoc, "source", request.sourceOptions, deps);
  const target = openStore(targetLoc, "target", request.targetOptions, deps);
  const wanted = request.platforms?.length ? request.platforms.map(parsePlatform) : undefined;
  const pinned = digestOfLocation(sourceLoc);
  const tag = tagOf(targetLoc);
  const sourceId = pinned ?? tagOf(sourceLoc) ?? "";

  // The fast path: one HEAD per side answers "already there" without reading anything else.
  const [sourceHead, targetHead] = await Promise.all([
    pinned ? undefined : source.headManifest(sourceId),
    tag !== undefined ? target.headManifest(tag) : pinned ? target.headManifest(pinned) : undefined,
  ]);
  if (!pinned && !sourceHead) throw notFound(source, sourceId);
  const sourceDigest = pinned ?? sourceHead!.digest;
  const base = { source: sourceLoc.display, target: targetLoc.display, sourceDigest, sourceRef: pinnedLocation(sourceLoc, sourceDigest), ...(tag !== undefined ? { tag } : {}) };
  const ctx: PlanContext = { source, target, request, deps };

  if (!wanted && targetHead?.digest === sourceDigest) {
    const plan = upToDatePlan(base, targetLoc, targetHead.mediaType, tag);
    if (request.describe) await describeInto(plan, target);
    contexts.set(plan, ctx);
    return plan;
  }

  const root = await source.getManifest(sourceDigest);
  const image = await collectImage(source, root, wanted, sourceLoc.display);
  if (wanted && targetHead?.digest === image.digest) {
    const plan = upToDatePlan(base, targetLoc, targetHead.mediaType, tag);
    Object.assign(plan, { digest: image.digest, pinnedRef: pinnedLocation(targetLoc, image.digest), platforms: image.platforms, platformsFiltered: image.filtered, totalSize: image.totalSize });
    if (tag === undefined) plan.tagRef = plan.pinnedRef;
    contexts.set(plan, ctx);
    return plan;
  }

  let signatures: WalkedManifest[] = [];
  if (request.copySignatures !== false) signatures = await collectSignatures(source, image, sourceDigest);
  if (tag !== undefined) image.root.tag = tag;
  const manifests = [...image.manifests, ...signatures.filter((m) => m.role !== "referrer"), image.root];
  // Referrers name their subject; they go after it, still before nothing else depends on them.
  manifests.splice(manifests.length - 1, 0, ...signatures.filter((m) => m.role === "referrer"));
  const blobs = new Map(image.blobs);
  for (const s of signatures) for (const d of s.blobDescriptors) if (!blobs.has(d.digest)) blobs.set(d.digest, d);

  if (source.registry && source.repository) for (const d of blobs.keys()) rememberBlob(d, source.registry, source.repository);
  await decideManifests(target, manifests);
  const planned = await decideBlobs(target, blobs, manifests);
  const plan: CopyPlan = {
    ...base,
    digest: image.digest,
    mediaType: image.root.mediaType,
    pinnedRef: pinnedLocation(targetLoc, image.digest),
    tagRef: tag !== undefined ? targetLoc.display : pinnedLocation(targetLoc, image.digest),
    platforms: image.platforms,
    platformsFiltered: image.filtered,
    upToDate: false,
    totalSize: image.totalSize,
    manifests: manifests.map(stripBlobs),
    blobs: planned,
    signatures: signatures.length,
    totals: totalsOf(planned, manifests),
  };
  contexts.set(plan, ctx);
  return plan;
}

function upToDatePlan(base: Pick<CopyPlan, "source" | "target" | "sourceDigest" | "sourceRef"> & { tag?: string }, targetLoc: ImageLocation, mediaType: string, tag: string | undefined): CopyPlan {
  const pinnedRef = pinnedLocation(targetLoc, base.sourceDigest);
  return {
    ...base,
    digest: base.sourceDigest,
    mediaType,
    pinnedRef,
    tagRef: tag !== undefined ? targetLoc.display : pinnedRef,
    platforms: [],
    platformsFiltered: false,
    upToDate: true,
    totalSize: 0,
    manifests: [],
    blobs: [],
    signatures: 0,
    totals: totalsOf([], []),
  };
}

/** Fills platforms and totalSize of an up-to-date plan by reading the target's copy. */
async function describeInto(plan: CopyPlan, target: ImageStore): Promise<void> {
  const image = await collectImage(target, await target.getManifest(plan.digest), undefined, target.name);
  plan.platforms = image.platforms;
  plan.totalSize = image.totalSize;
}

function notFound(store: ImageStore, reference: string): ImageyardError {
  const what = reference === "" ? store.name : `${store.name}${reference.includes(":") ? "@" : ":"}${reference}`;
  return new ImageyardError("MANIFEST_UNKNOWN", `pull ${what}: manifest not found (404 MANIFEST_UNKNOWN). Check the tag and repository name.`, { status: 404 });
}

// Walking the image --------------------------------------------------------------------------

interface WalkedManifest extends PlannedManifest {
  blobDescriptors: Descriptor[];
}

interface CollectedImage {
  root: WalkedManifest;
  digest: string;
  /** Children in push order (deepest first). */
  manifests: WalkedManifest[];
  blobs: Map<string, Descriptor>;
  platforms: string[];
  filtered: boolean;
  totalSize: number;
}

async function collectImage(store: ImageStore, root: ManifestResponse, wanted: Platform[] | undefined, label: string): Promise<CollectedImage> {
  const parsed = parseManifest(root.bytes, root.mediaType, label);
  const manifests: WalkedManifest[] = [];
  const blobs = new Map<string, Descriptor>();
  let bytes = root.bytes;
  let platforms: string[] = [];
  let filtered = false;

  if (parsed.kind === "index") {
    const kept = wanted ? selectPlatforms(parsed, wanted, label) : parsed.children;
    if (kept.length < parsed.children.length) {
      filtered = true;
      bytes = filteredIndex(root.bytes, new Set(kept.map((c) => c.digest)));
    }
    platforms = [...new Set(kept.filter((c) => c.platform && c.platform.os !== "unknown").map((c) => formatPlatform(c.platform!)))];
    await walkChildren(store, kept, manifests, blobs, label, 0);
  } else {
    addBlobs(parsed, blobs);
    const platform = await configPlatform(store, parsed, label);
    if (wanted && !(platform && wanted.some((w) => platformMatches(w, platform)))) {
      throw new ImageyardError(
        "INVALID_INPUT",
        `copy ${label}: the source is a single-platform image${platform ? ` for ${formatPlatform(platform)}` : " without a platform in its config"}, but platforms asks for ${wanted.map(formatPlatform).join(", ")}. Drop platforms, or pick an image that has them.`,
      );
    }
    if (platform) platforms = [formatPlatform(platform)];
  }
  const digest = filtered ? parseManifest(bytes).digest : root.digest;
  const top: WalkedManifest = {
    digest,
    mediaType: parsed.mediaType,
    size: bytes.length,
    role: parsed.kind === "index" ? "index" : "image",
    action: "put",
    bytes,
    blobDescriptors: parsed.kind === "index" ? [] : referencedBlobs(parsed),
  };
  let totalSize = bytes.length;
  for (const m of manifests) totalSize += m.size;
  for (const b of blobs.values()) totalSize += b.size;
  return { root: top, digest, manifests, blobs, platforms, filtered, totalSize };
}

async function walkChildren(store: ImageStore, children: Descriptor[], out: WalkedManifest[], blobs: Map<string, Descriptor>, label: string, depth: number): Promise<void> {
  if (depth > 3) throw new ImageyardError("MANIFEST_INVALID", `copy ${label}: indexes nest deeper than 3 levels (MANIFEST_INVALID). Check the source image.`);
  const fetched = await mapLimit(children, MANIFEST_CONCURRENCY, async (c) => ({ c, m: await store.getManifest(c.digest) }));
  for (const { c, m } of fetched) {
    const parsed = parseManifest(m.bytes, m.mediaType, `${label}@${c.digest}`);
    if (parsed.kind === "index") await walkChildren(store, parsed.children, out, blobs, label, depth + 1);
    else addBlobs(parsed, blobs);
    const w: WalkedManifest = { digest: m.digest, mediaType: parsed.mediaType, size: m.bytes.length, role: "child", action: "put", bytes: m.bytes, blobDescriptors: parsed.kind === "index" ? [] : referencedBlobs(parsed) };
    if (c.platform) w.platform = formatPlatform(c.platform);
    out.push(w);
  }
}

/** Children matching any wanted platform, plus attestations (buildx) attached to those children. */
function selectPlatforms(index: ParsedManifest, wanted: Platform[], label: string): Descriptor[] {
  const missing = wanted.filter((w) => !index.children.some((c) => platformMatches(w, c.platform)));
  if (missing.length > 0) {
    const have = index.children.filter((c) => c.platform && c.platform.os !== "unknown").map((c) => formatPlatform(c.platform!));
    throw new ImageyardError(
      "INVALID_INPUT",
      `copy ${label}: platform ${missing.map(formatPlatform).join(", ")} is not in the source index (it has ${have.join(", ") || "no platforms"}). Choose from those, or drop platforms to copy all.`,
    );
  }
  const kept = index.children.filter((c) => wanted.some((w) => platformMatches(w, c.platform)));
  const keptDigests = new Set(kept.map((c) => c.digest));
  return index.children.filter((c) => keptDigests.has(c.digest) || keptDigests.has(c.annotations?.["vnd.docker.reference.digest"] ?? ""));
}

/** The index with only the kept entries; every other field stays as the source wrote it. */
function filteredIndex(bytes: Buffer, keep: Set<string>): Buffer {
  const doc = JSON.parse(bytes.toString("utf8")) as { manifests: Array<{ digest: string }> };
  doc.manifests = doc.manifests.filter((m) => keep.has(m.digest));
  return Buffer.from(JSON.stringify(doc));
}

function referencedBlobs(m: ParsedManifest): Descriptor[] {
  // Foreign (non-distributable) layers live at their URLs, not in the registry: never copied.
  return referencedDescriptors(m).filter((d) => !(d.urls && d.urls.length > 0));
}

function addBlobs(m: ParsedManifest, blobs: Map<string, Descriptor>): void {
  for (const d of referencedBlobs(m)) if (!blobs.has(d.digest)) blobs.set(d.digest, d);
}

/** The os/architecture of a single manifest, from its (small) config blob, verified. */
async function configPlatform(store: ImageStore, m: ParsedManifest, label: string): Promise<Platform | undefined> {
  const c = m.config;
  if (!c || c.size > MAX_CONFIG_BYTES || !/(container\.image|image\.config)/.test(c.mediaType)) return undefined;
  const bytes = await readVerified(await store.openBlob(c.digest), { digest: c.digest, size: c.size, from: label });
  try {
    const doc = JSON.parse(bytes.toString("utf8")) as { os?: unknown; architecture?: unknown; variant?: unknown };
    if (typeof doc.os !== "string" || typeof doc.architecture !== "string") return undefined;
    const p: Platform = { os: doc.os, architecture: doc.architecture };
    if (typeof doc.variant === "string" && doc.variant) p.variant = doc.variant;
    return p;
  } catch {
    return undefined;
  }
}

// Signatures and referrers -------------------------------------------------------------------

async function collectSignatures(source: ImageStore, image: CollectedImage, sourceDigest: string): Promise<WalkedManifest[]> {
  const subjects = image.filtered ? [] : [sourceDigest];
  subjects.push(...image.manifests.filter((m) => m.role === "child").slice(0, MAX_SIGNED_CHILDREN).map((m) => m.digest));
  const tags = subjects.flatMap((d) => SIGNATURE_SUFFIXES.map((s) => `${d.replace(":", "-")}.${s}`));
  const found = await mapLimit(tags, MANIFEST_CONCURRENCY, async (t) => ((await source.headManifest(t)) ? t : undefined));
  const out: WalkedManifest[] = [];
  for (const tag of found) {
    if (!tag) continue;
    out.push({ ...(await walkOne(source, tag)), role: "signature", tag });
  }
  if (!image.filtered && source.referrers) {
    // Registries without the OCI 1.1 API answer 404 (undefined); other failures only cost the extras.
    const refs = await source.referrers(sourceDigest).catch(() => undefined);
    for (const r of refs ?? []) out.push({ ...(await walkOne(source, r.digest)), role: "referrer" });
  }
  return out;
}

async function walkOne(store: ImageStore, reference: string): Promise<WalkedManifest> {
  const m = await store.getManifest(reference);
  const parsed = parseManifest(m.bytes, m.mediaType, `${store.name}:${reference}`);
  const blobs = parsed.kind === "index" ? [] : referencedBlobs(parsed);
  return { digest: m.digest, mediaType: parsed.mediaType, size: m.bytes.length, role: "signature", action: "put", bytes: m.bytes, blobDescriptors: blobs };
}

// Deciding what the target needs -------------------------------------------------------------

async function decideManifests(target: ImageStore, manifests: WalkedManifest[]): Promise<void> {
  const others = manifests.slice(0, -1);
  await mapLimit(others, MANIFEST_CONCURRENCY, async (m) => {
    const have = await target.headManifest(m.tag ?? m.digest);
    if (have?.digest === m.digest) m.action = "skip";
  });
}

/**
 * checkExistingBlob for every unique blob, then a mount where a repository of the target registry
 * is known to hold it. Blobs named only by manifests the target already has are not checked: a
 * registry accepts a manifest only once it holds its blobs.
 */
async function decideBlobs(target: ImageStore, blobs: Map<string, Descriptor>, manifests: WalkedManifest[]): Promise<PlannedBlob[]> {
  const needed = new Set<string>();
  for (const m of manifests) if (m.action === "put") for (const d of m.blobDescriptors) needed.add(d.digest);
  return mapLimit([...blobs.values()], MANIFEST_CONCURRENCY, async (d) => {
    const b: PlannedBlob = { digest: d.digest, size: d.size, mediaType: d.mediaType, action: "skip" };
    if (!needed.has(d.digest) || (await target.hasBlob(d.digest, d.size))) return b;
    const from = target.registry && target.repository ? mountSource(d.digest, target.registry, target.repository) : undefined;
    if (from) return { ...b, action: "mount", mountFrom: from };
    return { ...b, action: "upload" };
  });
}

function stripBlobs(m: WalkedManifest): PlannedManifest {
  const { blobDescriptors: _unused, ...rest } = m;
  return rest;
}

function totalsOf(blobs: PlannedBlob[], manifests: PlannedManifest[]): PlanTotals {
  const t: PlanTotals = { blobs: blobs.length, upload: 0, mount: 0, skip: 0, bytesToUpload: 0, bytesToMount: 0, manifestsToPut: 0 };
  for (const b of blobs) {
    t[b.action]++;
    if (b.action === "upload") t.bytesToUpload += b.size;
    if (b.action === "mount") t.bytesToMount += b.size;
  }
  t.manifestsToPut = manifests.filter((m) => m.action === "put").length;
  return t;
}

/** One line for a preview: "3 blobs to upload (24.0 MiB), 2 to mount, 1 already there; 2 manifests". */
export function summarizePlan(plan: CopyPlan): string {
  if (plan.upToDate) return `up to date (${plan.digest})`;
  const t = plan.totals;
  const parts = [`${t.upload} blob${t.upload === 1 ? "" : "s"} to upload (${formatBytes(t.bytesToUpload)})`, `${t.mount} to mount`, `${t.skip} already there`];
  let line = `${parts.join(", ")}; ${t.manifestsToPut} manifest${t.manifestsToPut === 1 ? "" : "s"}`;
  if (plan.signatures > 0) line += ` (${plan.signatures} signature${plan.signatures === 1 ? "" : "s"})`;
  if (plan.platformsFiltered) line += `; platforms ${plan.platforms.join(", ")} only: new digest ${plan.digest}`;
  return line;
}
