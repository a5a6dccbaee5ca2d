// What every component that makes MirroredImages passes through to them, and the one place that
// rewrites an upstream reference onto a mirror registry (keeping the repository path).
import { formatReference, parseReference, type ImageReference } from "../provider/oci/reference";
import type { MirroredImageArgs } from "../provider/resources/mirroredImage";

/** MirroredImage arguments shared by every mirrored entry of a component. */
export type MirrorOptions = Pick<
  MirroredImageArgs,
  "platforms" | "sourceAuth" | "targetAuth" | "sourceTls" | "targetTls" | "copySignatures" | "timeouts" | "rateLimitWait"
>;

export function mirrorArgs(o: MirrorOptions): MirrorOptions {
  const out: MirrorOptions = {};
  for (const k of [
    "platforms",
    "sourceAuth",
    "targetAuth",
    "sourceTls",
    "targetTls",
    "copySignatures",
    "timeouts",
    "rateLimitWait",
  ] as const) {
    if (o[k] !== undefined) (out as Record<string, unknown>)[k] = o[k];
  }
  return out;
}

/** "host[:port]" and an optional path prefix from "host[:port][/prefix]". */
export function parseRegistry(registry: string): { host: string; prefix: string } {
  const [host, ...rest] = registry
    .replace(/^docker:\/\//, "")
    .replace(/\/+$/, "")
    .split("/");
  return { host: host!, prefix: rest.join("/") };
}

/** quay.io/vexxhost/keystone:zed → HOST/[PREFIX/]vexxhost/keystone:zed (tag and digest kept). */
export function rewriteReference(ref: string | ImageReference, registry: string): ImageReference {
  const r = typeof ref === "string" ? parseReference(ref) : ref;
  const { host, prefix } = parseRegistry(registry);
  const out: ImageReference = { registry: host, repository: prefix ? `${prefix}/${r.repository}` : r.repository };
  if (r.tag !== undefined) out.tag = r.tag;
  if (r.digest !== undefined) out.digest = r.digest;
  return out;
}

/** The MirroredImage target for a source: the rewritten repository, with the source's tag if it has one. */
export function mirrorTarget(source: string, registry: string): string {
  const r = rewriteReference(source, registry);
  return formatReference({ registry: r.registry, repository: r.repository, ...(r.tag !== undefined ? { tag: r.tag } : {}) });
}
