// The OCI copy engine's entry points: copyImage (= planCopy + executeCopy), inspectImage (one
// HEAD) and removeImage (delete semantics for a mirror that goes away). Everything a dynamic
// provider or the CLI needs is exported from here.
import { existsSync } from "node:fs";
import { isImageyardError } from "../http/errors";
import { mapLimit } from "../http/retry";
import { withDeadline } from "./deadline";
import { executeCopy, type CopyResult } from "./execute";
import { digestOfLocation, parseLocation, tagOf } from "./location";
import { planCopy, summarizePlan, type CopyDeps, type CopyRequest } from "./plan";
import { parseManifest } from "./manifest";
import { RegistryClient, type ManifestInfo, type RegistryOptions } from "./registry";
import { isSignatureTag, signatureTags } from "./walk";

export { withDeadline } from "./deadline";
export { executeCopy, type CopyResult } from "./execute";
export {
  forgetKnownLocations,
  planCopy,
  summarizePlan,
  type BlobAction,
  type CopyDeps,
  type CopyPlan,
  type CopyRequest,
  type ManifestRole,
  type PlannedBlob,
  type PlannedManifest,
  type PlanTotals,
  type StoreSide,
} from "./plan";
export { formatLocation, parseLocation, resolveTarget, type ImageLocation } from "./location";

/** Plans, then executes: the whole copy, within deps.timeoutMs (or the deadline of deps.signal). */
export async function copyImage(request: CopyRequest, deps: CopyDeps = {}): Promise<CopyResult> {
  return withDeadline(request, deps, async (d) => {
    const plan = await planCopy(request, d);
    if (!plan.upToDate) d.onProgress?.({ phase: "plan", item: plan.tagRef, message: summarizePlan(plan) });
    return executeCopy(plan, d);
  });
}

/** Digest, media type and size of an image (one HEAD); undefined when it is not there. */
export async function inspectImage(ref: string, options: RegistryOptions = {}): Promise<ManifestInfo | undefined> {
  const loc = parseLocation(ref);
  const id = digestOfLocation(loc) ?? tagOf(loc) ?? "";
  if (loc.kind === "layout") return new (await import("./layout")).LayoutStore(loc.path, true).headManifest(id);
  if (loc.kind === "archive")
    return existsSync(loc.path) ? new (await import("./archive")).ArchiveStore(loc.format, loc.path, "source").headManifest(id) : undefined;
  return new RegistryClient(loc.ref.registry, options).headManifest(loc.ref.repository, id);
}

export interface RemoveResult {
  tagDeleted: boolean;
  manifestDeleted: boolean;
  /** Why something was left in place, for the log. */
  note?: string;
}

export interface RemoveOptions extends RegistryOptions {
  /** Other tags HEADed to see whether they share the manifest; beyond this the manifest stays. Default 100. */
  maxTagChecks?: number;
}

/**
 * Deletes what a copy made, and nothing else: the tag where the registry can delete tags; the
 * manifest by digest only when no other tag of the repository points at it. A tag that has
 * moved to another digest is someone else's now and stays. Anything already gone is success.
 */
export async function removeImage(targetRef: string, digest: string, options: RemoveOptions = {}): Promise<RemoveResult> {
  const loc = parseLocation(targetRef);
  if (loc.kind === "archive") {
    const r = await (await import("./archive")).removeArchive(loc.format, loc.path, digest);
    return { tagDeleted: r.removed, manifestDeleted: r.removed, ...(r.note ? { note: r.note } : {}) };
  }
  const tag = loc.kind === "registry" ? (loc.tagGiven ? loc.ref.tag : undefined) : loc.tag;
  if (loc.kind === "layout") {
    const layout = new (await import("./layout")).LayoutStore(loc.path);
    const tagDeleted = tag !== undefined && (await layout.removeTag(tag));
    return { tagDeleted, manifestDeleted: false, note: "blobs stay in the layout directory (other tags may share them)" };
  }
  const client = new RegistryClient(loc.ref.registry, options);
  const repo = loc.ref.repository;
  let tagDeleted = false;
  if (tag !== undefined) {
    const now = await client.headManifest(repo, tag);
    if (now && now.digest !== digest) {
      return { tagDeleted: false, manifestDeleted: false, note: `tag ${tag} now points at ${now.digest}, not ${digest}; left it alone` };
    }
    if (now) tagDeleted = (await client.deleteTag(repo, tag)) === "deleted";
  }

  let tags: string[];
  try {
    tags = await client.listTags(repo);
  } catch (e) {
    if (isImageyardError(e, "NAME_UNKNOWN")) return { tagDeleted, manifestDeleted: false, note: "the repository is already gone" };
    throw e;
  }
  // Signature tags point at signature manifests, never at an image: they hold nothing up.
  const others = tags.filter((t) => t !== tag && !isSignatureTag(t));
  const cap = options.maxTagChecks ?? 100;
  if (others.length > cap) {
    return {
      tagDeleted,
      manifestDeleted: false,
      note: `the repository has ${others.length} other tags (more than ${cap} to check); kept manifest ${digest}`,
    };
  }
  const heads = await mapLimit(others, 4, (t) => client.headManifest(repo, t));
  const holder = others.find((_t, i) => heads[i]?.digest === digest);
  if (holder !== undefined)
    return { tagDeleted, manifestDeleted: false, note: `tag ${holder} still points at ${digest}; kept the manifest` };

  // What the copy wrote along with the image: children of an index and cosign signature tags.
  const root = await client.getManifest(repo, digest).catch(() => undefined);
  const children = root ? parseManifest(root.bytes, root.mediaType).children.map((c) => c.digest) : [];
  try {
    const manifestDeleted = await client.deleteManifest(repo, digest);
    if (!manifestDeleted) return { tagDeleted, manifestDeleted, note: "the manifest was already gone" };
    // Deleting the manifest takes every tag on it, ours included where tag deletion is unsupported.
    const extras = await removeCompanions(client, repo, [digest, ...children], others.length === 0 ? children : []);
    return { tagDeleted: tag !== undefined, manifestDeleted, ...(extras ? { note: extras } : {}) };
  } catch (e) {
    if (isImageyardError(e, "UNSUPPORTED")) {
      return {
        tagDeleted,
        manifestDeleted: false,
        note: `the registry does not allow deletes (UNSUPPORTED); ${tagDeleted ? "the manifest stays" : "the tag and manifest stay"}. Enable deletes on the registry (storage.delete.enabled) to clean up`,
      };
    }
    throw e;
  }
}

/**
 * Signatures of a deleted image are orphans, so they go too; its child manifests go only when the
 * repository has no other tag that could share them (a wider check would mean reading every index).
 */
async function removeCompanions(client: RegistryClient, repo: string, signed: string[], children: string[]): Promise<string | undefined> {
  const sigTags = signed.flatMap(signatureTags);
  const sigs = await mapLimit(sigTags, 4, (t) => client.headManifest(repo, t));
  const doomed = [...new Set([...sigs.flatMap((m) => (m ? [m.digest] : [])), ...children])];
  await mapLimit(doomed, 4, (d) => client.deleteManifest(repo, d));
  const kept = children.length === 0 && signed.length > 1 ? "; child manifests stay (other tags in the repository may share them)" : "";
  const removed = doomed.length > 0 ? `also removed ${doomed.length} signature/child manifest${doomed.length === 1 ? "" : "s"}` : "";
  return removed || kept ? `${removed}${kept}`.replace(/^; /, "") : undefined;
}
