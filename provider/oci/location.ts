// Where an image lives: a registry reference, or an OCI image layout directory on disk
// ("oci:PATH[:tag]", "oci-layout:PATH[:tag]"), so one copy moves images registry ↔ registry,
// registry → layout and layout → registry (air-gapped hand-over).
import { resolve as resolvePath } from "node:path";
import { ImageyardError } from "../http/errors";
import { formatReference, isValidTag, parseReference, redactUserinfo, validateDigest, type ImageReference, type ParseOptions } from "./reference";

export type ImageLocation = RegistryLocation | LayoutLocation;

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

const LAYOUT_PREFIXES = ["oci-layout:", "oci:"];

/** Parses "docker://host/repo:tag", "host/repo@sha256:…", "oci:/dir:tag" or "oci-layout:dir". */
export function parseLocation(input: string, opts: ParseOptions = {}): ImageLocation {
  if (typeof input !== "string") throw new ImageyardError("INVALID_INPUT", `parse image location ${String(input)}: not a string. Write it as a reference ("127.0.0.1:5001/team/app:v1") or "oci:PATH[:tag]".`);
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
    new ImageyardError("INVALID_INPUT", `parse image location "${redactUserinfo(input)}": ${why}. Write an OCI layout as oci:PATH[:tag] or oci:PATH@sha256:<64 hex>, e.g. "oci:/srv/images/app:v1".`);
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

export function formatLocation(loc: ImageLocation): string {
  if (loc.kind === "registry") return formatReference(loc.ref);
  return `oci:${loc.path}${loc.tag !== undefined ? `:${loc.tag}` : ""}${loc.digest !== undefined ? `@${loc.digest}` : ""}`;
}

/** The tag a location names, if any (a registry ref without an explicit tag still means "latest" as a source). */
export function tagOf(loc: ImageLocation): string | undefined {
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
    throw new ImageyardError("INVALID_INPUT", `copy to ${target.display}: a target cannot name a digest (the copy decides it). Give a repository or repository:tag, e.g. "${target.display.split("@")[0]}".`);
  }
  const explicit = target.kind === "registry" ? (target.tagGiven ? target.ref.tag : undefined) : target.tag;
  const tag = explicit ?? tagOf(source);
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

/** "registry/repo@sha256:…" or "oci:/dir@sha256:…" */
export function pinnedLocation(loc: ImageLocation, digest: string): string {
  if (loc.kind === "registry") return formatReference({ registry: loc.ref.registry, repository: loc.ref.repository, digest });
  return `oci:${loc.path}@${digest}`;
}
