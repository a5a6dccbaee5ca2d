// The second half of a copy: carry out a plan. Blobs first (mount or stream, verified, a few at a
// time per host), then child manifests, signatures and referrers, and the tag last: a failure
// anywhere before that leaves the target tag where it was, never on an incomplete image.
import { ImageyardError, isImageyardError } from "../http/errors";
import { Limiter, mapLimit } from "../http/retry";
import { planContext, rememberBlob, type CopyDeps, type CopyPlan, type PlannedBlob } from "./plan";
import type { ImageStore } from "./store";

export interface CopyResult {
  /** Digest of what the target tag now points at. */
  digest: string;
  sourceDigest: string;
  /** "registry/repo@sha256:…" of the source. */
  sourceRef: string;
  /** The resolved target, "registry/repo:tag" (or pinnedRef when untagged). */
  targetRef: string;
  /** "registry/repo@sha256:…" of the target. */
  pinnedRef: string;
  /** "registry/repo:tag" of the target (pinnedRef when untagged). */
  tagRef: string;
  mediaType: string;
  /** "linux/amd64", … of the copied image ([] when up to date and not asked to describe). */
  platforms: string[];
  totalSize: number;
  blobsCopied: number;
  blobsMounted: number;
  blobsSkipped: number;
  bytesCopied: number;
  signaturesCopied: number;
  platformsFiltered: boolean;
  /** Nothing was written: the target already pointed at the digest. */
  upToDate: boolean;
}

const DEFAULT_CONCURRENCY = 4;
/** Whatever callers ask for, no more than this many blob transfers per target host per process. */
const hostLimiter = new Limiter(8);

export async function executeCopy(plan: CopyPlan, deps: CopyDeps = {}): Promise<CopyResult> {
  const ctx = planContext(plan);
  const onProgress = deps.onProgress ?? ctx.deps.onProgress;
  const signal = deps.signal ?? ctx.deps.signal;
  const waits = deps.waits ?? ctx.deps.waits;
  const { source, target } = ctx;
  const result: CopyResult = {
    digest: plan.digest,
    sourceDigest: plan.sourceDigest,
    sourceRef: plan.sourceRef,
    targetRef: plan.tagRef,
    pinnedRef: plan.pinnedRef,
    tagRef: plan.tagRef,
    mediaType: plan.mediaType,
    platforms: plan.platforms,
    totalSize: plan.totalSize,
    blobsCopied: 0,
    blobsMounted: 0,
    blobsSkipped: plan.totals.skip,
    bytesCopied: 0,
    signaturesCopied: 0,
    platformsFiltered: plan.platformsFiltered,
    upToDate: plan.upToDate,
  };
  if (plan.upToDate) {
    onProgress?.({ phase: "copy", item: plan.tagRef, done: true, message: `up to date at ${plan.digest}` });
    return result;
  }

  const hostKey = target.registry ?? target.name;
  const moving = plan.blobs.filter((b) => b.action !== "skip");
  await mapLimit(moving, ctx.request.concurrency ?? DEFAULT_CONCURRENCY, (b) =>
    hostLimiter.run(hostKey, async () => {
      checkCancelled(signal, plan);
      if (await mountBlob(target, b)) {
        result.blobsMounted++;
        onProgress?.({ phase: "blob", item: b.digest, done: true, message: `mounted from ${b.mountFrom}` });
        return;
      }
      await target.writeBlob({
        digest: b.digest,
        size: b.size,
        open: () => source.openBlob(b.digest),
        from: source.name,
        sourcePeer: source.peer,
        ...(waits ? { waits } : {}),
        onBytes: (n) => onProgress?.({ phase: "blob", item: b.digest, bytes: n, total: b.size }),
        ...(signal ? { signal } : {}),
      });
      result.blobsCopied++;
      result.bytesCopied += b.size;
      onProgress?.({ phase: "blob", item: b.digest, bytes: b.size, total: b.size, done: true });
    }),
  );
  if (target.registry && target.repository) for (const b of plan.blobs) rememberBlob(b.digest, target.registry, target.repository);

  const root = plan.manifests[plan.manifests.length - 1]!;
  for (const m of plan.manifests.slice(0, -1)) {
    if (m.action !== "put") continue;
    checkCancelled(signal, plan);
    await target.putManifest(m.tag, m.bytes, m.mediaType);
    if (m.role === "signature" || m.role === "referrer") result.signaturesCopied++;
    onProgress?.({ phase: "manifest", item: m.tag ?? m.digest, done: true });
  }
  checkCancelled(signal, plan);
  const stored = await target.putManifest(plan.tag, root.bytes, root.mediaType, { root: true });
  if (stored !== plan.digest) {
    throw new ImageyardError(
      "DIGEST_MISMATCH",
      `push ${plan.tagRef}: stored digest ${stored}, planned ${plan.digest} (DIGEST_MISMATCH). Report this: the manifest bytes changed between plan and push.`,
    );
  }
  onProgress?.({ phase: "manifest", item: plan.tagRef, done: true, message: plan.digest });
  return result;
}

/** Tries the planned mount; a registry that declines or refuses the source scope gets an upload. */
async function mountBlob(target: ImageStore, b: PlannedBlob): Promise<boolean> {
  if (b.action !== "mount" || !b.mountFrom || !target.mountBlob) return false;
  try {
    return await target.mountBlob(b.digest, b.mountFrom);
  } catch (e) {
    if (isImageyardError(e, "REGISTRY_DENIED") || isImageyardError(e, "REGISTRY_UNAUTHORIZED") || isImageyardError(e, "NAME_UNKNOWN"))
      return false;
    throw e;
  }
}

function checkCancelled(signal: AbortSignal | undefined, plan: CopyPlan): void {
  if (signal?.aborted) {
    throw new ImageyardError(
      "CANCELLED",
      `copy ${plan.source} → ${plan.tagRef}: cancelled before it finished (CANCELLED); the target tag was not changed. Run again to finish.`,
    );
  }
}
