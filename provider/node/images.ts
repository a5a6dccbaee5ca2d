// What a PrePullSet's `images` entries mean: a registry reference (normalised, resolved to the
// digest the nodes will pull, one request each), with credentials in either form users have
// (`{username, password}`, or BOSH's base64 "user:pass"), retag names (validated, normalised), an
// optional platform; or a docker-archive:/oci-archive: tarball for nodes that reach no registry.
import { resolve as resolvePath } from "node:path";
import { ImageyardError } from "../http/errors";
import { parsePlatform, parseManifest, platformMatches, formatPlatform } from "../oci/manifest";
import { formatReference, parseReference, repositoryOf, type ImageReference } from "../oci/reference";
import { RegistryClient, type RegistryOptions } from "../oci/registry";

export interface Credentials {
  username: string;
  password: string;
}

/** One entry as users write it (a string is `{ ref }`). */
export interface ImageEntry {
  ref: string;
  /** `{ username, password }`, or BOSH's base64 "user:pass". */
  auth?: Credentials | string;
  retagAs?: string | string[];
  /** "linux/arm64": pull exactly this platform's manifest on every node. */
  platform?: string;
}

export type ArchiveFormat = "docker-archive" | "oci-archive";

export interface PlannedImage {
  /** Normalised reference or "docker-archive:/abs/path": the key of every output map. */
  key: string;
  kind: "registry" | "archive";
  ref?: ImageReference;
  archive?: { format: ArchiveFormat; path: string };
  retagAs: string[];
  auth?: Credentials;
  platform?: string;
}

const ARCHIVE_PREFIXES: ArchiveFormat[] = ["docker-archive", "oci-archive"];
const REF_EXAMPLE = 'e.g. "127.0.0.1:5000/team/app:v1", "docker.io/library/nginx:1.27" or "docker-archive:/srv/images/app.tar"';

function invalid(property: string, why: string): ImageyardError {
  const e = new ImageyardError("INVALID_INPUT", `${property}: ${why}`);
  (e as ImageyardError & { property?: string }).property = property;
  return e;
}

/** Decodes BOSH's base64 "user:pass", or checks a `{username, password}` object. */
export function decodeAuth(auth: Credentials | string, property: string): Credentials {
  if (typeof auth === "string") {
    const text = Buffer.from(auth, "base64").toString("utf8");
    const colon = text.indexOf(":");
    if (!/^[A-Za-z0-9+/=\s]+$/.test(auth) || colon <= 0)
      throw invalid(
        property,
        'a string auth is base64 of "user:password" (BOSH\'s form), e.g. "dXNlcjpwYXNz"; or give { username, password }',
      );
    return { username: text.slice(0, colon), password: text.slice(colon + 1) };
  }
  if (!auth || typeof auth !== "object" || typeof auth.username !== "string" || auth.username === "" || typeof auth.password !== "string") {
    throw invalid(
      property,
      'auth needs a username and a password, e.g. { username: "robot", password: config.requireSecret("registryPassword") }',
    );
  }
  return { username: auth.username, password: auth.password };
}

/** Normalises a retag name: a tagged reference, never a digest (a name points at the image). */
export function normaliseRetag(name: string, property: string): string {
  let ref: ImageReference;
  try {
    ref = parseReference(name);
  } catch (e) {
    throw invalid(property, (e as Error).message);
  }
  if (ref.digest)
    throw invalid(property, `retagAs "${name}" names a digest; give a name with a tag, e.g. "registry.k8s.io/debian-base:v2.0.0"`);
  return formatReference(ref);
}

/** Parses one entry; throws INVALID_INPUT naming `images[i]…`. */
export function planImage(entry: string | ImageEntry, i: number): PlannedImage {
  const property = `images[${i}]`;
  const e: ImageEntry = typeof entry === "string" ? { ref: entry } : entry;
  if (!e || typeof e !== "object" || typeof e.ref !== "string" || e.ref === "")
    throw invalid(`${property}.ref`, `each image needs a ref, ${REF_EXAMPLE}`);
  const retags = e.retagAs === undefined ? [] : Array.isArray(e.retagAs) ? e.retagAs : [e.retagAs];
  const retagAs = retags.map((r, j) => normaliseRetag(r, `${property}.retagAs${Array.isArray(e.retagAs) ? `[${j}]` : ""}`));
  const out: PlannedImage = { key: "", kind: "registry", retagAs };
  const prefix = ARCHIVE_PREFIXES.find((p) => e.ref.startsWith(`${p}:`));
  if (prefix) {
    const path = resolvePath(e.ref.slice(prefix.length + 1));
    out.kind = "archive";
    out.archive = { format: prefix, path };
    out.key = `${prefix}:${path}`;
    if (e.auth !== undefined) throw invalid(`${property}.auth`, "an archive needs no credentials; remove auth");
    return out;
  }
  try {
    out.ref = parseReference(e.ref);
  } catch (err) {
    throw invalid(`${property}.ref`, (err as Error).message);
  }
  out.key = formatReference(out.ref);
  if (e.auth !== undefined) out.auth = decodeAuth(e.auth, `${property}.auth`);
  if (e.platform !== undefined) {
    try {
      out.platform = formatPlatform(parsePlatform(e.platform));
    } catch {
      throw invalid(`${property}.platform`, `"${e.platform}" is not a platform; use os/arch[/variant], e.g. "linux/arm64"`);
    }
  }
  return out;
}

/**
 * The digest the nodes pull, with one manifest request (a HEAD; a GET of the index when a
 * platform is asked for). A digest reference is taken as it is.
 */
export async function resolveDigest(img: PlannedImage, options: RegistryOptions): Promise<string> {
  const ref = img.ref!;
  const client = new RegistryClient(ref.registry, options);
  if (!img.platform) {
    if (ref.digest) return ref.digest;
    const info = await client.headManifest(ref.repository, ref.tag ?? "latest");
    if (!info)
      throw new ImageyardError(
        "MANIFEST_UNKNOWN",
        `resolve ${img.key}: not found in the registry (404 MANIFEST_UNKNOWN). Check the tag and repository name.`,
      );
    return info.digest;
  }
  const m = await client.getManifest(ref.repository, ref.digest ?? ref.tag ?? "latest");
  const parsed = parseManifest(m.bytes, m.mediaType, img.key);
  if (parsed.kind === "manifest") return m.digest;
  const want = parsePlatform(img.platform);
  const child = parsed.children.find((c) => platformMatches(want, c.platform));
  if (!child)
    throw new ImageyardError(
      "MANIFEST_UNKNOWN",
      `resolve ${img.key}: the image has no ${img.platform} manifest. Choose one of its platforms or drop platform.`,
    );
  return child.digest;
}

/** The tagged name the user wrote (registry/repo:tag), which nodes answer to as after `crictl pull`; none for a digest reference. */
export function tagOf(img: PlannedImage): string | undefined {
  return img.ref?.tag && !img.ref.digest ? `${repositoryOf(img.ref)}:${img.ref.tag}` : undefined;
}

/** What the agent pulls: repository@digest (a digest never moves under a running set). */
export function pullRefOf(img: PlannedImage, digest: string): string {
  return `${repositoryOf(img.ref!)}@${digest}`;
}
