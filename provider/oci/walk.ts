// Walking an image: index → children → config + layers, the platform subset, and the cosign
// signature tags and OCI referrers that travel with it. Reads only; the planner decides.
import { ImageyardError } from "../http/errors";
import { mapLimit, settle, unwrap } from "../http/retry";
import { readVerified } from "./digest";
import {
  formatPlatform,
  parseManifest,
  platformMatches,
  referencedDescriptors,
  type Descriptor,
  type ParsedManifest,
  type Platform,
} from "./manifest";
import type { ManifestResponse } from "./registry";
import type { ImageStore } from "./store";

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

export const MANIFEST_CONCURRENCY = 4;
const MAX_CONFIG_BYTES = 8 * 1024 * 1024;
const SIGNATURE_SUFFIXES = ["sig", "att", "sbom"];
/** Children whose signature tags we look for; an index with more is unusual and each costs HEADs. */
const MAX_SIGNED_CHILDREN = 16;

// The image itself --------------------------------------------------------------------------

export interface WalkedManifest extends PlannedManifest {
  blobDescriptors: Descriptor[];
}

export interface CollectedImage {
  root: WalkedManifest;
  digest: string;
  /** Children in push order (deepest first). */
  manifests: WalkedManifest[];
  blobs: Map<string, Descriptor>;
  platforms: string[];
  filtered: boolean;
  totalSize: number;
  /** Signature tags and referrers found (collectImage with signatures: true), in push order. */
  signatures: WalkedManifest[];
}

export async function collectImage(
  store: ImageStore,
  root: ManifestResponse,
  wanted: Platform[] | undefined,
  label: string,
  opts: { signatures?: boolean; platform?: boolean } = {},
): Promise<CollectedImage> {
  const parsed = parseManifest(root.bytes, root.mediaType, label);
  const manifests: WalkedManifest[] = [];
  const blobs = new Map<string, Descriptor>();
  let bytes = root.bytes;
  let platforms: string[] = [];
  let filtered = false;
  let kept: Descriptor[] = [];
  if (parsed.kind === "index") {
    kept = wanted ? selectPlatforms(parsed, wanted, label) : parsed.children;
    if (kept.length < parsed.children.length) {
      filtered = true;
      bytes = filteredIndex(root.bytes, new Set(kept.map((c) => c.digest)));
    }
    platforms = [...new Set(kept.filter((c) => c.platform && c.platform.os !== "unknown").map((c) => formatPlatform(c.platform!)))];
  }
  // Signatures are looked up while the image is walked, not after: on a distant registry each
  // stage is a round trip, and a fleet pays check's serial ones once per image.
  const firstSubjects = [...(filtered ? [] : [root.digest]), ...kept.slice(0, MAX_SIGNED_CHILDREN).map((c) => c.digest)];
  const signaturesP = opts.signatures ? settle(collectSignatures(store, firstSubjects, filtered ? undefined : root.digest)) : undefined;
  try {
    if (parsed.kind === "index") {
      await walkChildren(store, kept, manifests, blobs, label, 0);
    } else {
      addBlobs(parsed, blobs);
      // The platform is reported, not needed, unless platforms filters: a preview skips it.
      const platform = wanted || opts.platform !== false ? await configPlatform(store, parsed, label) : undefined;
      if (wanted && !(platform && wanted.some((w) => platformMatches(w, platform)))) {
        throw new ImageyardError(
          "INVALID_INPUT",
          `copy ${label}: the source is a single-platform image${platform ? ` for ${formatPlatform(platform)}` : " without a platform in its config"}, but platforms asks for ${wanted.map(formatPlatform).join(", ")}. Drop platforms, or pick an image that has them.`,
        );
      }
      if (platform) platforms = [formatPlatform(platform)];
    }
  } finally {
    await signaturesP;
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
  const image: CollectedImage = { root: top, digest, manifests, blobs, platforms, filtered, totalSize, signatures: [] };
  if (signaturesP) {
    // Children of nested indexes are known only now; rare, so they cost a round trip more.
    image.signatures = [...unwrap(await signaturesP), ...(await collectImageSignatures(store, image, new Set(firstSubjects)))];
  }
  return image;
}

async function walkChildren(
  store: ImageStore,
  children: Descriptor[],
  out: WalkedManifest[],
  blobs: Map<string, Descriptor>,
  label: string,
  depth: number,
): Promise<void> {
  if (depth > 3)
    throw new ImageyardError(
      "MANIFEST_INVALID",
      `copy ${label}: indexes nest deeper than 3 levels (MANIFEST_INVALID). Check the source image.`,
    );
  const fetched = await mapLimit(children, MANIFEST_CONCURRENCY, async (c) => ({ c, m: await store.getManifest(c.digest) }));
  for (const { c, m } of fetched) {
    const parsed = parseManifest(m.bytes, m.mediaType, `${label}@${c.digest}`);
    if (parsed.kind === "index") await walkChildren(store, parsed.children, out, blobs, label, depth + 1);
    else addBlobs(parsed, blobs);
    const w: WalkedManifest = {
      digest: m.digest,
      mediaType: parsed.mediaType,
      size: m.bytes.length,
      role: "child",
      action: "put",
      bytes: m.bytes,
      blobDescriptors: parsed.kind === "index" ? [] : referencedBlobs(parsed),
    };
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

/** Whether a tag is one of the cosign scheme's (it names a signature, never an image). */
export function isSignatureTag(tag: string): boolean {
  return new RegExp(`^sha256-[0-9a-f]{64}\\.(${SIGNATURE_SUFFIXES.join("|")})$`).test(tag);
}

/** The cosign-scheme tags that may sign `digest`: sha256-<hex>.sig, .att, .sbom. */
export function signatureTags(digest: string): string[] {
  return SIGNATURE_SUFFIXES.map((s) => `${digest.replace(":", "-")}.${s}`);
}

/**
 * Signature tags and referrers of a walked image: of the image itself (unless filtered: a new
 * index has none) and of its children, leaving out subjects already looked up.
 */
export async function collectImageSignatures(
  store: ImageStore,
  image: CollectedImage,
  done = new Set<string>(),
): Promise<WalkedManifest[]> {
  const children = image.manifests.filter((m) => m.role === "child").slice(0, MAX_SIGNED_CHILDREN);
  const subjects = [...(image.filtered ? [] : [image.digest]), ...children.map((m) => m.digest)].filter((d) => !done.has(d));
  const referred = image.filtered || done.has(image.digest) ? undefined : image.digest;
  return subjects.length > 0 || referred ? collectSignatures(store, subjects, referred) : [];
}

/**
 * Cosign-scheme signature tags and OCI referrers of the image (unless filtered: a new index has
 * none) and of its children. Every look-up starts at once: each is one round trip to the source.
 */
async function collectSignatures(source: ImageStore, subjects: string[], imageDigest: string | undefined): Promise<WalkedManifest[]> {
  const tags = subjects.flatMap(signatureTags);
  // Registries without the OCI 1.1 API answer 404 (undefined); other failures only cost the extras.
  const referrersP = imageDigest && source.referrers ? source.referrers(imageDigest).catch(() => undefined) : undefined;
  const [found, refs] = await Promise.all([
    mapLimit(tags, MANIFEST_CONCURRENCY, async (t) => ((await source.headManifest(t)) ? t : undefined)),
    referrersP,
  ]);
  const wanted: { ref: string; role: "signature" | "referrer"; tag?: string }[] = [
    ...found.filter((t): t is string => t !== undefined).map((t) => ({ ref: t, role: "signature" as const, tag: t })),
    ...(refs ?? []).map((r) => ({ ref: r.digest, role: "referrer" as const })),
  ];
  return mapLimit(wanted, MANIFEST_CONCURRENCY, async (w) => ({
    ...(await walkOne(source, w.ref)),
    role: w.role,
    ...(w.tag ? { tag: w.tag } : {}),
  }));
}

async function walkOne(store: ImageStore, reference: string): Promise<WalkedManifest> {
  const m = await store.getManifest(reference);
  const parsed = parseManifest(m.bytes, m.mediaType, `${store.name}:${reference}`);
  const blobs = parsed.kind === "index" ? [] : referencedBlobs(parsed);
  return {
    digest: m.digest,
    mediaType: parsed.mediaType,
    size: m.bytes.length,
    role: "signature",
    action: "put",
    bytes: m.bytes,
    blobDescriptors: blobs,
  };
}
