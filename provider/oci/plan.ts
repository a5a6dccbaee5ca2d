// The first half of a copy: look before moving anything. HEAD both sides (regsync's fast path),
// then walk the source image (index → children → config + layers, signatures) and decide per blob
// whether the target already has it, can mount it, or needs it uploaded. The plan is also what a
// preview shows (summarizePlan).
import { ImageyardError, isImageyardError } from "../http/errors";
import { formatBytes, type ProgressSink } from "../http/progress";
import { mapLimit } from "../http/retry";
import type { WaitBoard } from "../http/waits";
import { digestOfLocation, parseLocation, pinnedLocation, resolveTarget, tagOf, type ImageLocation } from "./location";
import { parsePlatform, type Descriptor } from "./manifest";
import { forgetManifests, type ManifestResponse, type RegistryClient, type RegistryOptions } from "./registry";
import { openRegistryStore, type ImageStore } from "./store";
import { collectImage, collectImageSignatures, MANIFEST_CONCURRENCY, type PlannedManifest, type WalkedManifest } from "./walk";

export type { ManifestRole, PlannedManifest } from "./walk";

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
   * Longest time either registry host may keep this copy paused by rate limits, counted per host
   * across every copy in the process (each side's rateLimitBudgetMs wins). Default 10 min.
   */
  rateLimitBudgetMs?: number;
  /**
   * When the target is already up to date, also read it (a few GETs) to report platforms and
   * totalSize. Default false: an up-to-date copy costs exactly two HEADs.
   */
  describe?: boolean;
  /**
   * Plan for a preview (MirroredImage's check) rather than a copy: the image's manifests and
   * blobs, without what only the copy needs, each a round trip more to the source: a single
   * image's platform (read from its config, unless platforms filters) and the signature look-ups.
   */
  preview?: boolean;
}

export type StoreSide = "source" | "target";

export interface CopyDeps {
  onProgress?: ProgressSink;
  signal?: AbortSignal;
  /** One deadline for the whole copy; on expiry the error (TIMEOUT) names what stalled. */
  timeoutMs?: number;
  /** A wait silent this long is reported ("waiting for … from …: 30 s"), and again each time. Default 30 s. */
  waitNoticeMs?: number;
  /** Where requests and transfers record what they wait for (copyImage makes one). */
  waits?: WaitBoard;
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
  /** A preview plan: signatures are looked up only when copying. */
  signaturesPending?: boolean;
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
  if (!ctx)
    throw new ImageyardError(
      "INVALID_INPUT",
      "execute copy: the plan was not made by planCopy in this process. Call planCopy (or copyImage) again.",
    );
  return ctx;
}

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

/** Forgets what this process learned of registries: where blobs are, and the manifests it read. */
export function forgetKnownLocations(): void {
  knownLocations.clear();
  forgetManifests();
}

// Stores -------------------------------------------------------------------------------------

/** Layout and archive stores load on first use: a registry-to-registry copy never needs them. */
export async function openStore(
  loc: ImageLocation,
  side: StoreSide,
  options: RegistryOptions | undefined,
  deps: CopyDeps,
): Promise<ImageStore> {
  if (loc.kind === "layout") return new (await import("./layout")).LayoutStore(loc.path, side === "source");
  if (loc.kind === "archive") return new (await import("./archive")).ArchiveStore(loc.format, loc.path, side);
  const registry = loc.ref.registry;
  const opts: RegistryOptions = { credentialsInput: side === "source" ? "sourceAuth" : "targetAuth", side, ...options };
  if (deps.signal && !opts.signal) opts.signal = deps.signal;
  if (deps.waits && !opts.waits) opts.waits = deps.waits;
  if (deps.onProgress && !opts.onProgress) opts.onProgress = deps.onProgress;
  return openRegistryStore(registry, loc.ref.repository, opts, deps.clients?.(registry, side));
}

// Planning -----------------------------------------------------------------------------------

export async function planCopy(request: CopyRequest, deps: CopyDeps = {}): Promise<CopyPlan> {
  const hint = (o: RegistryOptions | undefined, side: StoreSide) => ({ credentialsHint: o?.credentialsInput ?? `${side}Auth` });
  const sourceLoc = parseLocation(request.source, hint(request.sourceOptions, "source"));
  const targetLoc = resolveTarget(sourceLoc, parseLocation(request.target, hint(request.targetOptions, "target")));
  const budget = (o: RegistryOptions | undefined): RegistryOptions | undefined =>
    request.rateLimitBudgetMs === undefined || o?.rateLimitBudgetMs !== undefined
      ? o
      : { ...o, rateLimitBudgetMs: request.rateLimitBudgetMs };
  const source = await openStore(sourceLoc, "source", budget(request.sourceOptions), deps);
  const target = await openStore(targetLoc, "target", budget(request.targetOptions), deps);
  const wanted = request.platforms?.length ? request.platforms.map(parsePlatform) : undefined;
  const pinned = digestOfLocation(sourceLoc);
  const tag = tagOf(targetLoc);
  const sourceId = pinned ?? tagOf(sourceLoc) ?? "";

  // The fast path: one HEAD per side answers "already there" without reading anything else.
  // Both sides at once (regsync's fast path). When the target holds nothing under the tag, the
  // source manifest is needed anyway: GET it by tag right then rather than after the source's
  // HEAD, one round trip less to a distant upstream (check pays it once per image, serially).
  const sourceHeadP = pinned ? undefined : source.headManifest(sourceId);
  void sourceHeadP?.catch(() => undefined);
  const targetHead = await (tag !== undefined ? target.headManifest(tag) : pinned ? target.headManifest(pinned) : undefined);
  let root: ManifestResponse | undefined;
  if (!pinned && !targetHead && source.kind === "registry") root = await manifestOrNotFound(source, sourceId);
  const sourceHead = root ?? (sourceHeadP ? await sourceHeadP : undefined);
  if (!pinned && !sourceHead) throw notFound(source, sourceId);
  const sourceDigest = pinned ?? sourceHead!.digest;
  const base = {
    source: sourceLoc.display,
    target: targetLoc.display,
    sourceDigest,
    sourceRef: pinnedLocation(sourceLoc, sourceDigest),
    ...(tag !== undefined ? { tag } : {}),
  };
  const ctx: PlanContext = { source, target, request, deps };

  if (!wanted && targetHead?.digest === sourceDigest) {
    const plan = upToDatePlan(base, targetLoc, targetHead.mediaType, tag);
    if (request.describe) await describeInto(plan, target);
    contexts.set(plan, ctx);
    return plan;
  }

  // Signatures are looked up during the walk unless the plan may still turn out up to date.
  const withSignatures = request.copySignatures !== false && !request.preview;
  const signaturesEarly = withSignatures && !(wanted && targetHead);
  const image = await collectImage(source, root ?? (await source.getManifest(sourceDigest)), wanted, sourceLoc.display, {
    signatures: signaturesEarly,
    platform: !request.preview,
  });
  if (wanted && targetHead?.digest === image.digest) {
    const plan = upToDatePlan(base, targetLoc, targetHead.mediaType, tag);
    Object.assign(plan, {
      digest: image.digest,
      pinnedRef: pinnedLocation(targetLoc, image.digest),
      platforms: image.platforms,
      platformsFiltered: image.filtered,
      totalSize: image.totalSize,
    });
    if (tag === undefined) plan.tagRef = plan.pinnedRef;
    contexts.set(plan, ctx);
    return plan;
  }

  let signatures = image.signatures;
  if (withSignatures && !signaturesEarly) signatures = await collectImageSignatures(source, image);
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
    ...(request.preview && request.copySignatures !== false ? { signaturesPending: true } : {}),
    totals: totalsOf(planned, manifests),
  };
  contexts.set(plan, ctx);
  return plan;
}

function upToDatePlan(
  base: Pick<CopyPlan, "source" | "target" | "sourceDigest" | "sourceRef"> & { tag?: string },
  targetLoc: ImageLocation,
  mediaType: string,
  tag: string | undefined,
): CopyPlan {
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

/** GET by tag; a missing tag reads as check and copy word it for a HEAD. */
async function manifestOrNotFound(store: ImageStore, reference: string): Promise<ManifestResponse> {
  try {
    return await store.getManifest(reference);
  } catch (e) {
    if (isImageyardError(e) && e.status === 404) throw notFound(store, reference);
    throw e;
  }
}

function notFound(store: ImageStore, reference: string): ImageyardError {
  const what = reference === "" ? store.name : `${store.name}${reference.includes(":") ? "@" : ":"}${reference}`;
  return new ImageyardError(
    "MANIFEST_UNKNOWN",
    `pull ${what}: manifest not found (404 MANIFEST_UNKNOWN). Check the tag and repository name.`,
    { status: 404 },
  );
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
  const parts = [
    `${t.upload} blob${t.upload === 1 ? "" : "s"} to upload (${formatBytes(t.bytesToUpload)})`,
    `${t.mount} to mount`,
    `${t.skip} already there`,
  ];
  let line = `${parts.join(", ")}; ${t.manifestsToPut} manifest${t.manifestsToPut === 1 ? "" : "s"}`;
  if (plan.signatures > 0) line += ` (${plan.signatures} signature${plan.signatures === 1 ? "" : "s"})`;
  else if (plan.signaturesPending) line += " (and any signatures, found when copying)";
  if (plan.platformsFiltered) line += `; platforms ${plan.platforms.join(", ")} only: new digest ${plan.digest}`;
  return line;
}
