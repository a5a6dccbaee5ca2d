// Where an image lives: a registry reference, or an OCI image layout directory on disk
// ("oci:PATH[:tag]", "oci-layout:PATH[:tag]"), so one copy moves images registry ↔ registry,
// registry → layout and layout → registry (air-gapped hand-over).
import { resolve as resolvePath } from "node:path";
import { ImageyardError } from "../http/errors";
import {
  formatReference,
  isValidTag,
  parseReference,
  redactUserinfo,
  validateDigest,
  type ImageReference,
  type ParseOptions,
} from "./reference";

export type ImageLocation = RegistryLocation | LayoutLocation | ArchiveLocation;

export interface RegistryLocation {
  kind: "registry";
  ref: ImageReference;
  /** Whether the input named a tag (parseReference fills in "latest" otherwise). */
  tagGiven: boolean;
  /** "127.0.0.1:5001/team/app:v1" */
  display: string;
}

export interface LayoutLocation {
  kind: "layout";
  /** Absolute directory path. */
  path: string;
  tag?: string;
  digest?: string;
  /** "oci:/srv/images/app:v1" */
  display: string;
}

/**
 * A tar file as skopeo names it: "docker-archive:PATH[:docker-reference|:@N]" (docker save) or
 * "oci-archive:PATH[:tag]" (a tarred OCI layout). As in skopeo, PATH ends at the first colon.
 */
export interface ArchiveLocation {
  kind: "archive";
  format: "docker-archive" | "oci-archive";
  /** Absolute file path. */
  path: string;
  /** oci-archive: a tag in index.json; docker-archive: a RepoTags reference or "@N". */
  ref?: string;
  digest?: string;
  display: string;
}

const LAYOUT_PREFIXES = ["oci-layout:", "oci:"];
const ARCHIVE_FORMATS = ["docker-archive", "oci-archive"] as const;

/** Parses "docker://host/repo:tag", "host/repo@sha256:…", "oci:/dir:tag" or "oci-layout:dir". */
export function parseLocation(input: string, opts: ParseOptions = {}): ImageLocation {
  if (typeof input !== "string")
    throw new ImageyardError(
      "INVALID_INPUT",
      `parse image location ${String(input)}: not a string. Write it as a reference ("127.0.0.1:5001/team/app:v1") or "oci:PATH[:tag]".`,
    );
  const format = ARCHIVE_FORMATS.find((f) => input.startsWith(`${f}:`));
  if (format) return parseArchive(input, format, input.slice(format.length + 1));
  const prefix = LAYOUT_PREFIXES.find((p) => input.startsWith(p));
  if (prefix) return parseLayout(input, input.slice(prefix.length));
  const raw = input.startsWith("docker://") ? input.slice("docker://".length) : input;
  const ref = parseReference(raw, opts);
  const name = raw.split("@")[0]!;
  const tagGiven = name.lastIndexOf(":") > name.lastIndexOf("/");
  return { kind: "registry", ref, tagGiven, display: formatReference(ref) };
}

function parseLayout(input: string, rest: string): LayoutLocation {
  const bad = (why: string) =>
    new ImageyardError(
      "INVALID_INPUT",
      `parse image location "${redactUserinfo(input)}": ${why}. Write an OCI layout as oci:PATH[:tag] or oci:PATH@sha256:<64 hex>, e.g. "oci:/srv/images/app:v1".`,
    );
  let path = rest;
  let tag: string | undefined;
  let digest: string | undefined;
  const at = path.lastIndexOf("@");
  if (at > path.lastIndexOf("/")) {
    digest = path.slice(at + 1);
    path = path.slice(0, at);
    try {
      validateDigest(digest);
    } catch {
      throw bad(`"${digest}" is not a sha256/sha512 digest`);
    }
  }
  const colon = path.lastIndexOf(":");
  if (colon > path.lastIndexOf("/")) {
    tag = path.slice(colon + 1);
    path = path.slice(0, colon);
    if (!isValidTag(tag)) throw bad(`"${tag}" is not a valid tag`);
  }
  if (path === "") throw bad("the directory path is missing");
  const loc: LayoutLocation = { kind: "layout", path: resolvePath(path), display: "" };
  if (tag !== undefined) loc.tag = tag;
  if (digest !== undefined) loc.digest = digest;
  loc.display = formatLocation(loc);
  return loc;
}

function parseArchive(input: string, format: ArchiveLocation["format"], rest: string): ArchiveLocation {
  const bad = (why: string) =>
    new ImageyardError(
      "INVALID_INPUT",
      `parse image location "${input}": ${why}. Write it as ${format}:PATH[:${format === "oci-archive" ? "tag" : "repo:tag"}], e.g. "${format}:/srv/images.tar:${format === "oci-archive" ? "v1" : "team/app:v1"}".`,
    );
  let path = rest;
  let digest: string | undefined;
  const pinned = /^(.*)@(sha(?:256|512):[0-9a-f]+)$/.exec(rest);
  if (pinned && !pinned[1]!.includes(":")) {
    path = pinned[1]!;
    digest = pinned[2]!;
    try {
      validateDigest(digest);
    } catch {
      throw bad(`"${digest}" is not a sha256/sha512 digest`);
    }
  }
  const colon = path.indexOf(":");
  const ref = colon >= 0 ? path.slice(colon + 1) : undefined;
  if (colon >= 0) path = path.slice(0, colon);
  if (path === "") throw bad("the file path is missing");
  if (ref !== undefined) {
    if (format === "oci-archive" && !isValidTag(ref)) throw bad(`"${ref}" is not a valid tag`);
    if (format === "docker-archive" && !/^@\d+$/.test(ref)) {
      try {
        if (parseReference(ref).digest) throw new Error("digest");
      } catch {
        throw bad(`"${ref}" is not a repo:tag reference (or @N for the N-th image)`);
      }
    }
  }
  const loc: ArchiveLocation = { kind: "archive", format, path: resolvePath(path), display: "" };
  if (ref !== undefined && ref !== "") loc.ref = ref;
  if (digest !== undefined) loc.digest = digest;
  loc.display = formatLocation(loc);
  return loc;
}

export function formatLocation(loc: ImageLocation): string {
  if (loc.kind === "registry") return formatReference(loc.ref);
  if (loc.kind === "archive")
    return `${loc.format}:${loc.path}${loc.ref !== undefined ? `:${loc.ref}` : ""}${loc.digest !== undefined ? `@${loc.digest}` : ""}`;
  return `oci:${loc.path}${loc.tag !== undefined ? `:${loc.tag}` : ""}${loc.digest !== undefined ? `@${loc.digest}` : ""}`;
}

/** The tag a location names, if any (a registry ref without an explicit tag still means "latest" as a source). */
export function tagOf(loc: ImageLocation): string | undefined {
  if (loc.kind === "archive") return loc.ref;
  return loc.kind === "registry" ? loc.ref.tag : loc.tag;
}

export function digestOfLocation(loc: ImageLocation): string | undefined {
  return loc.kind === "registry" ? loc.ref.digest : loc.digest;
}

/**
 * The target a copy writes: a target without a tag takes the source's tag (skopeo and crane do the
 * same); a source pinned only by digest gives an untagged copy, stored by digest.
 */
export function resolveTarget(source: ImageLocation, target: ImageLocation): ImageLocation {
  if (digestOfLocation(target) !== undefined) {
    throw new ImageyardError(
      "INVALID_INPUT",
      `copy to ${target.display}: a target cannot name a digest (the copy decides it). Give a repository or repository:tag, e.g. "${target.display.split("@")[0]}".`,
    );
  }
  if (target.kind === "archive") return archiveTarget(source, target);
  const explicit = target.kind === "registry" ? (target.tagGiven ? target.ref.tag : undefined) : target.tag;
  const tag = explicit ?? plainTag(source);
  if (target.kind === "registry") {
    const ref: ImageReference = { registry: target.ref.registry, repository: target.ref.repository };
    if (tag !== undefined) ref.tag = tag;
    return { kind: "registry", ref, tagGiven: tag !== undefined, display: formatReference(ref) };
  }
  const out: LayoutLocation = { kind: "layout", path: target.path, display: "" };
  if (tag !== undefined) out.tag = tag;
  out.display = formatLocation(out);
  return out;
}

/** The tag part of a source (a docker-archive's "repo:tag" gives "tag"; "@N" gives none). */
function plainTag(source: ImageLocation): string | undefined {
  const t = tagOf(source);
  if (source.kind !== "archive" || source.format === "oci-archive" || t === undefined) return t;
  return t.startsWith("@") ? undefined : parseReference(t).tag;
}

/** An archive target names its image as given, else after the source (docker-archive: repo:tag). */
function archiveTarget(source: ImageLocation, target: ArchiveLocation): ArchiveLocation {
  if (target.ref !== undefined) return target;
  let ref: string | undefined;
  if (target.format === "oci-archive") ref = plainTag(source);
  else if (source.kind === "registry" && source.ref.tag !== undefined)
    ref = formatReference({ registry: source.ref.registry, repository: source.ref.repository, tag: source.ref.tag });
  else if (source.kind === "archive" && source.format === "docker-archive" && source.ref !== undefined && !source.ref.startsWith("@"))
    ref = source.ref;
  const out: ArchiveLocation = { ...target };
  if (ref !== undefined) out.ref = ref;
  out.display = formatLocation(out);
  return out;
}

/** "registry/repo@sha256:…" or "oci:/dir@sha256:…" */
export function pinnedLocation(loc: ImageLocation, digest: string): string {
  if (loc.kind === "registry") return formatReference({ registry: loc.ref.registry, repository: loc.ref.repository, digest });
  if (loc.kind === "archive") return `${loc.format}:${loc.path}@${digest}`;
  return `oci:${loc.path}@${digest}`;
}
