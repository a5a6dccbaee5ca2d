// Manifests and indexes: parse and validate the shape once, expose the descriptors a copy walks
// (children of an index; config + layers of a manifest; the subject of a referrer).
import { ImageyardError } from "../http/errors";
import { algorithmOf, digestBytes } from "./digest";
import { baseMediaType, isIndex, isManifest, isSchema1, OCI_INDEX, OCI_MANIFEST } from "./media";

export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
  "os.version"?: string;
  "os.features"?: string[];
}

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  platform?: Platform;
  annotations?: Record<string, string>;
  urls?: string[];
  artifactType?: string;
}

export interface ParsedManifest {
  kind: "index" | "manifest";
  mediaType: string;
  /** sha256 of the exact bytes parsed. */
  digest: string;
  size: number;
  /** Entries of an index; empty for a manifest. */
  children: Descriptor[];
  /** Present for a manifest. */
  config?: Descriptor;
  /** Layers of a manifest; empty for an index. */
  layers: Descriptor[];
  subject?: Descriptor;
  artifactType?: string;
  annotations?: Record<string, string>;
}

const DIGEST_RE = /^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/;

export function digestOf(bytes: Buffer | Uint8Array | string): string {
  return digestBytes(bytes, "sha256");
}

/**
 * The type to PUT the bytes back with: the document's own mediaType (a registry refuses a PUT whose
 * Content-Type differs from it), else the served Content-Type, else what the shape says.
 */
export function manifestMediaType(bytes: Buffer, contentType: string | undefined): string {
  let doc: unknown;
  try {
    doc = JSON.parse(bytes.toString("utf8"));
  } catch {
    doc = undefined;
  }
  const own = (doc as { mediaType?: unknown } | undefined)?.mediaType;
  if (typeof own === "string" && own) return baseMediaType(own);
  const served = baseMediaType(contentType);
  if (served && served !== "application/json" && served !== "application/octet-stream" && served !== "text/plain") return served;
  return Array.isArray((doc as { manifests?: unknown } | undefined)?.manifests) ? OCI_INDEX : OCI_MANIFEST;
}

/** Returns `expected` when `bytes` hash to it; throws DIGEST_MISMATCH otherwise. */
export function verifyDigest(bytes: Buffer, expected: string, what: string): string {
  const got = digestBytes(bytes, algorithmOf(expected));
  if (got !== expected) {
    throw new ImageyardError(
      "DIGEST_MISMATCH",
      `${what}: expected ${expected}, got ${got} after ${bytes.length} bytes (DIGEST_MISMATCH). The registry served different content; nothing was written.`,
    );
  }
  return expected;
}

function invalid(what: string, why: string): ImageyardError {
  return new ImageyardError(
    "MANIFEST_INVALID",
    `parse ${what}: ${why} (MANIFEST_INVALID). The registry served a document that is not a valid OCI/Docker manifest; check the source image.`,
  );
}

/** Parses and validates manifest or index bytes. `contentType` is the response header, if any. */
export function parseManifest(bytes: Buffer, contentType?: string, what = "manifest"): ParsedManifest {
  const digest = digestOf(bytes);
  const label = `${what} ${digest.slice(0, 19)}`;
  if (isSchema1(contentType)) {
    throw new ImageyardError(
      "UNSUPPORTED",
      `parse ${label}: Docker schema 1 manifests are not supported (UNSUPPORTED). Re-push the image with a current client (schema 2 or OCI).`,
    );
  }
  let doc: unknown;
  try {
    doc = JSON.parse(bytes.toString("utf8"));
  } catch (e) {
    throw invalid(label, `not JSON (${(e as Error).message})`);
  }
  if (!isObject(doc)) throw invalid(label, "not a JSON object");
  if (doc.schemaVersion === 1) {
    throw new ImageyardError(
      "UNSUPPORTED",
      `parse ${label}: Docker schema 1 manifests are not supported (UNSUPPORTED). Re-push the image with a current client (schema 2 or OCI).`,
    );
  }
  if (doc.schemaVersion !== 2) throw invalid(label, `schemaVersion is ${JSON.stringify(doc.schemaVersion)}, expected 2`);

  const bodyType = typeof doc.mediaType === "string" ? baseMediaType(doc.mediaType) : undefined;
  const headerType = contentType ? baseMediaType(contentType) : undefined;
  let mediaType = bodyType ?? (headerType && (isIndex(headerType) || isManifest(headerType)) ? headerType : undefined);
  // OCI allows mediaType to be absent; the shape then decides.
  mediaType ??= Array.isArray(doc.manifests) ? OCI_INDEX : OCI_MANIFEST;
  if (!isIndex(mediaType) && !isManifest(mediaType)) throw invalid(label, `unknown mediaType "${mediaType}"`);

  const out: ParsedManifest = {
    kind: isIndex(mediaType) ? "index" : "manifest",
    mediaType,
    digest,
    size: bytes.length,
    children: [],
    layers: [],
  };
  if (out.kind === "index") {
    if (!Array.isArray(doc.manifests)) throw invalid(label, "an index needs a manifests array");
    out.children = doc.manifests.map((d, i) => parseDescriptor(d, `${label} manifests[${i}]`));
  } else {
    if (!isObject(doc.config)) throw invalid(label, "a manifest needs a config descriptor");
    out.config = parseDescriptor(doc.config, `${label} config`);
    if (!Array.isArray(doc.layers)) throw invalid(label, "a manifest needs a layers array");
    out.layers = doc.layers.map((d, i) => parseDescriptor(d, `${label} layers[${i}]`));
  }
  if (doc.subject !== undefined) out.subject = parseDescriptor(doc.subject, `${label} subject`);
  if (typeof doc.artifactType === "string") out.artifactType = doc.artifactType;
  if (doc.annotations !== undefined) out.annotations = parseAnnotations(doc.annotations, label);
  return out;
}

/** Every blob or child manifest the document refers to (config first, then layers). */
export function referencedDescriptors(m: ParsedManifest): Descriptor[] {
  return m.kind === "index" ? [...m.children] : [...(m.config ? [m.config] : []), ...m.layers];
}

function parseDescriptor(v: unknown, where: string): Descriptor {
  if (!isObject(v)) throw invalid(where, "a descriptor must be an object");
  if (typeof v.mediaType !== "string" || v.mediaType === "") throw invalid(where, "descriptor mediaType is missing");
  if (typeof v.digest !== "string" || !DIGEST_RE.test(v.digest))
    throw invalid(where, `descriptor digest ${JSON.stringify(v.digest)} is malformed`);
  if (typeof v.size !== "number" || !Number.isSafeInteger(v.size) || v.size < 0)
    throw invalid(where, `descriptor size ${JSON.stringify(v.size)} is not a non-negative integer`);
  const d: Descriptor = { mediaType: v.mediaType, digest: v.digest, size: v.size };
  if (v.platform !== undefined) {
    const p = v.platform;
    if (!isObject(p) || typeof p.os !== "string" || typeof p.architecture !== "string")
      throw invalid(where, "platform needs os and architecture strings");
    const plat: Platform = { os: p.os, architecture: p.architecture };
    if (typeof p.variant === "string" && p.variant !== "") plat.variant = p.variant;
    if (typeof p["os.version"] === "string") plat["os.version"] = p["os.version"];
    if (Array.isArray(p["os.features"])) plat["os.features"] = p["os.features"].filter((x): x is string => typeof x === "string");
    d.platform = plat;
  }
  if (v.annotations !== undefined) d.annotations = parseAnnotations(v.annotations, where);
  if (v.urls !== undefined) {
    if (!Array.isArray(v.urls) || v.urls.some((u) => typeof u !== "string")) throw invalid(where, "urls must be an array of strings");
    d.urls = v.urls as string[];
  }
  if (typeof v.artifactType === "string") d.artifactType = v.artifactType;
  return d;
}

function parseAnnotations(v: unknown, where: string): Record<string, string> {
  if (!isObject(v) || Object.values(v).some((x) => typeof x !== "string")) throw invalid(where, "annotations must map strings to strings");
  return v as Record<string, string>;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

// Platforms ------------------------------------------------------------------------------------

const ARCH_ALIASES: Record<string, Platform> = {
  x86_64: { os: "", architecture: "amd64" },
  "x86-64": { os: "", architecture: "amd64" },
  aarch64: { os: "", architecture: "arm64" },
  armhf: { os: "", architecture: "arm", variant: "v7" },
  armel: { os: "", architecture: "arm", variant: "v6" },
  i386: { os: "", architecture: "386" },
  i686: { os: "", architecture: "386" },
};
const PLATFORM_PART = /^[a-z0-9_.-]+$/;

/** "linux/amd64", "linux/arm64/v8", "linux/arm/v7", "windows/amd64:10.0.17763" (os.version). */
export function parsePlatform(s: string): Platform {
  const bad = (why: string) =>
    new ImageyardError(
      "INVALID_INPUT",
      `parse platform "${s}": ${why}. Write it as os/architecture[/variant], e.g. "linux/amd64" or "linux/arm64/v8".`,
    );
  if (typeof s !== "string" || s.trim() === "") throw bad("it is empty");
  let spec = s.trim().toLowerCase();
  let osVersion: string | undefined;
  const colon = spec.indexOf(":");
  if (colon >= 0) {
    osVersion = spec.slice(colon + 1);
    spec = spec.slice(0, colon);
    if (!osVersion) throw bad("the os version after ':' is empty");
  }
  const parts = spec.split("/");
  if (parts.length < 2 || parts.length > 3) throw bad("it needs two or three parts separated by '/'");
  for (const p of parts) if (!PLATFORM_PART.test(p)) throw bad(`"${p}" is not a valid platform component`);
  const p: Platform = { os: parts[0]!, architecture: parts[1]! };
  if (parts[2]) p.variant = parts[2];
  if (osVersion) p["os.version"] = osVersion;
  return normalizePlatform(p);
}

/** Canonical names (aarch64 → arm64, x86_64 → amd64) and default variants dropped (arm64/v8 → arm64). */
export function normalizePlatform(p: Platform): Platform {
  const alias = ARCH_ALIASES[p.architecture.toLowerCase()];
  const out: Platform = { os: p.os.toLowerCase(), architecture: alias?.architecture ?? p.architecture.toLowerCase() };
  const variant = p.variant?.toLowerCase() ?? alias?.variant;
  if (variant && !(out.architecture === "arm64" && (variant === "v8" || variant === "8"))) {
    out.variant = out.architecture === "arm" && /^[0-9]$/.test(variant) ? `v${variant}` : variant;
  }
  if (p["os.version"]) out["os.version"] = p["os.version"];
  if (p["os.features"]) out["os.features"] = p["os.features"];
  return out;
}

export function formatPlatform(p: Platform): string {
  let s = `${p.os}/${p.architecture}`;
  if (p.variant) s += `/${p.variant}`;
  if (p["os.version"]) s += `:${p["os.version"]}`;
  return s;
}

/**
 * Does an index entry's platform satisfy the requested one? A request without a variant takes any
 * variant ("linux/arm" matches v6 and v7); a request with os.version needs the same os.version.
 */
export function platformMatches(want: Platform, have: Platform | undefined): boolean {
  if (!have) return false;
  const w = normalizePlatform(want);
  const h = normalizePlatform(have);
  if (w.os !== h.os || w.architecture !== h.architecture) return false;
  if (w.variant !== undefined) {
    const hv = h.variant ?? (h.architecture === "arm" ? "v7" : undefined);
    if (w.variant !== hv) return false;
  }
  if (w["os.version"] !== undefined && w["os.version"] !== h["os.version"]) return false;
  return true;
}
