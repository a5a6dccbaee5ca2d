// Image references, parsed once and normalised the way Docker does ("alpine" →
// docker.io/library/alpine:latest), so every later step compares like with like.
import { ImageyardError } from "../http/errors";

export interface ImageReference {
  /** Host with optional port, e.g. "docker.io", "127.0.0.1:5001", "[::1]:5000". */
  registry: string;
  /** Path inside the registry, e.g. "library/alpine". */
  repository: string;
  tag?: string;
  /** "sha256:…" */
  digest?: string;
}

export const DOCKER_HUB = "docker.io";
const DOCKER_HUB_ALIASES = new Set(["index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"]);
const MAX_NAME = 255;

// The grammar of github.com/distribution/reference, restated.
const HOST_PART = "(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])";
const HOST = `(?:${HOST_PART}(?:\\.${HOST_PART})*|\\[[0-9a-fA-F:.]+(?:%[a-zA-Z0-9]+)?\\])`;
const DOMAIN_RE = new RegExp(`^${HOST}(?::[0-9]+)?$`);
const PATH_COMPONENT_RE = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const TAG_RE = /^[\w][\w.-]{0,127}$/;
const DIGEST_RE = /^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/;
const SHA256_HEX_RE = /^[a-f0-9]{64}$/;
const SHA512_HEX_RE = /^[a-f0-9]{128}$/;

const EXAMPLE = 'e.g. "alpine:3.20", "ghcr.io/org/app@sha256:<64 hex>" or "127.0.0.1:5001/team/app:v1"';

function invalid(input: string, why: string): ImageyardError {
  return new ImageyardError(
    "INVALID_INPUT",
    `parse image reference "${redactUserinfo(input)}": ${why}. Write it as [registry[:port]/]repository[:tag][@digest], ${EXAMPLE}.`,
  );
}

/**
 * Whether a reference carries user info ("robot:S3cret@host/repo"): an '@' whose right side holds
 * a '/' (a digest never does). People paste registry URLs with credentials; never echo them.
 */
export function hasUserinfo(input: string): boolean {
  const at = input.lastIndexOf("@");
  return at >= 0 && input.slice(at + 1).includes("/");
}

/** The reference with any user info replaced by "***", safe for messages and logs. */
export function redactUserinfo(input: string): string {
  if (!hasUserinfo(input)) return input;
  const scheme = /^[a-z][a-z0-9+.-]*:\/\//i.exec(input)?.[0] ?? "";
  return `${scheme}***${input.slice(input.lastIndexOf("@"))}`;
}

export interface ParseOptions {
  /** Where credentials belong instead, named when a reference carries some ("--dest-creds", "targetAuth"). */
  credentialsHint?: string;
}

/** Throws INVALID_INPUT unless `d` is a well-formed digest with a known algorithm's length. */
export function validateDigest(d: string, input = d): string {
  if (!DIGEST_RE.test(d)) throw invalid(input, `"${d}" is not a digest (algorithm:hex)`);
  const [alg, hex] = d.split(":", 2) as [string, string];
  if (alg === "sha256" && !SHA256_HEX_RE.test(hex))
    throw invalid(input, `a sha256 digest needs 64 lowercase hex characters, got ${hex.length}`);
  if (alg === "sha512" && !SHA512_HEX_RE.test(hex))
    throw invalid(input, `a sha512 digest needs 128 lowercase hex characters, got ${hex.length}`);
  if (alg !== "sha256" && alg !== "sha512") throw invalid(input, `unsupported digest algorithm "${alg}" (use sha256 or sha512)`);
  return d;
}

export function isValidTag(tag: string): boolean {
  return TAG_RE.test(tag);
}

export function parseReference(input: string, opts: ParseOptions = {}): ImageReference {
  if (typeof input !== "string" || input.trim() === "") throw invalid(String(input), "the reference is empty");
  if (hasUserinfo(input)) {
    const where = opts.credentialsHint ?? "--src-creds / --dest-creds (CLI) or sourceAuth / targetAuth";
    throw new ImageyardError(
      "INVALID_INPUT",
      `parse image reference "${redactUserinfo(input)}": a reference cannot carry credentials (user:password@). Put the credentials in ${where} instead, and write the reference as [registry[:port]/]repository[:tag][@digest].`,
    );
  }
  const raw = input.trim();
  if (raw !== input) throw invalid(input, "the reference has leading or trailing white space");
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(raw)) throw invalid(input, "drop the URL scheme (no http:// or docker://)");
  if (SHA256_HEX_RE.test(raw)) throw invalid(input, "a bare 64-character hex string is an image ID, not a reference");

  let rest = raw;
  let digest: string | undefined;
  const at = rest.indexOf("@");
  if (at >= 0) {
    digest = validateDigest(rest.slice(at + 1), input);
    rest = rest.slice(0, at);
  }

  // A ':' after the last '/' separates the tag; earlier ones belong to a registry port.
  let tag: string | undefined;
  const colon = rest.lastIndexOf(":");
  if (colon > rest.lastIndexOf("/")) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!TAG_RE.test(tag))
      throw invalid(input, `"${tag}" is not a valid tag (letters, digits, '_', '.', '-'; at most 128; not starting with '.' or '-')`);
  }
  if (rest === "") throw invalid(input, "the repository name is missing");

  let registry: string;
  let repository: string;
  const slash = rest.indexOf("/");
  const first = slash < 0 ? "" : rest.slice(0, slash);
  // Docker's rule: the first component is a registry only if it looks like a host.
  if (slash < 0 || (!/[.:]/.test(first) && first !== "localhost" && first.toLowerCase() === first)) {
    registry = DOCKER_HUB;
    repository = rest;
  } else {
    registry = first;
    repository = rest.slice(slash + 1);
    if (!DOMAIN_RE.test(registry)) throw invalid(input, `"${registry}" is not a valid registry host[:port]`);
  }
  if (DOCKER_HUB_ALIASES.has(registry)) registry = DOCKER_HUB;
  if (registry === DOCKER_HUB && !repository.includes("/")) repository = `library/${repository}`;

  if (repository === "") throw invalid(input, "the repository name is missing");
  for (const part of repository.split("/")) {
    if (part !== part.toLowerCase()) throw invalid(input, "repository names must be lowercase");
    if (!PATH_COMPONENT_RE.test(part)) {
      throw invalid(
        input,
        `"${part}" is not a valid repository path component (lowercase letters, digits, separated by '.', '_', '__' or '-')`,
      );
    }
  }
  if (registry.length + 1 + repository.length > MAX_NAME) throw invalid(input, `the name is longer than ${MAX_NAME} characters`);

  const ref: ImageReference = { registry, repository };
  if (tag !== undefined) ref.tag = tag;
  if (digest !== undefined) ref.digest = digest;
  if (tag === undefined && digest === undefined) ref.tag = "latest";
  return ref;
}

/** "registry/repo:tag@digest", omitting what is absent. */
export function formatReference(ref: ImageReference): string {
  let s = repositoryOf(ref);
  if (ref.tag !== undefined) s += `:${ref.tag}`;
  if (ref.digest !== undefined) s += `@${ref.digest}`;
  return s;
}

/** The short form a person types: "alpine:3.20" for docker.io/library/alpine:3.20. */
export function familiarName(ref: ImageReference): string {
  let name = repositoryOf(ref);
  if (ref.registry === DOCKER_HUB) name = ref.repository.startsWith("library/") ? ref.repository.slice(8) : ref.repository;
  return formatReference({ ...ref, registry: "", repository: name }).replace(/^\//, "");
}

export function withTag(ref: ImageReference, tag: string): ImageReference {
  if (!TAG_RE.test(tag)) throw invalid(`${repositoryOf(ref)}:${tag}`, `"${tag}" is not a valid tag`);
  return { registry: ref.registry, repository: ref.repository, tag };
}

export function withDigest(ref: ImageReference, digest: string): ImageReference {
  validateDigest(digest, `${repositoryOf(ref)}@${digest}`);
  const out: ImageReference = { registry: ref.registry, repository: ref.repository, digest };
  if (ref.tag !== undefined) out.tag = ref.tag;
  return out;
}

/** "registry/repo" */
export function repositoryOf(ref: ImageReference): string {
  return `${ref.registry}/${ref.repository}`;
}

/** What to ask the registry for: the digest when pinned, else the tag. */
export function identifierOf(ref: ImageReference): string {
  return ref.digest ?? ref.tag ?? "latest";
}

/** The host that serves the API for a registry name. */
export function apiHost(registry: string): string {
  return registry === DOCKER_HUB || DOCKER_HUB_ALIASES.has(registry) ? "registry-1.docker.io" : registry;
}

/** Loopback and "localhost" hosts, where registries commonly speak plain HTTP. */
export function isLoopbackRegistry(registry: string): boolean {
  const host = registry.replace(/:[0-9]+$/, "").replace(/^\[|\]$/g, "");
  return host === "localhost" || host.endsWith(".localhost") || host === "::1" || /^127\./.test(host);
}

/** Whether a manifest reference is a digest ("sha256:…") rather than a tag. */
export function isDigest(reference: string): boolean {
  return /^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/.test(reference);
}
