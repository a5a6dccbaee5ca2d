// The publishing pipeline, as named steps:
//   findStarted (adopt what an earlier, interrupted run began) → prepare (download, verify,
//   convert: provider/disk) → createImage → uploadData | webDownload → waitActive → verifyHashes →
//   finish (protect, deactivate).
// Any failure once an image exists deletes it (unless told to keep it) and rethrows the typed error
// with `imageId`, so nothing is orphaned and a caller can record what is left.
import { createHash } from "node:crypto";
import { redactUrl, ImageyardError, isImageyardError } from "../http/errors";
import type { ProgressSink } from "../http/progress";
import { abortableSleep } from "../http/retry";
import { prepareImage, type ImageSource, type PreparedImage, type PrepareOptions } from "../disk/prepare";
import { resolveChecksum } from "../disk/source";
import type { DiskFormat } from "../disk/qemu";
import { send } from "../http/client";
import { GlanceError, statusText } from "./errors";
import {
  createImage,
  deleteImage,
  getImage,
  getImageTasks,
  importImage,
  patchImage,
  uploadImageData,
  type GlanceClient,
  type GlanceImage,
  type GlanceTask,
} from "./images";
import { pollGaps, REQUEST_KEY_PROPERTY, resolveEarlierRuns, RUN_PROPERTY, runId } from "./leftovers";

export { findStarted, REQUEST_KEY_PROPERTY, RUN_PROPERTY } from "./leftovers";
import { applyAttributes, type ImageAttributes } from "./update";

export type { ImageAttributes } from "./update";

export interface PublishSpec extends ImageAttributes {
  source: ImageSource;
  diskFormat: DiskFormat;
  containerFormat: string;
  importMethod: "upload" | "web-download";
  /** Marks the image as this request's, for adoption after a crash; derived from the spec when omitted. */
  requestKey?: string;
  /** Leave a failed image in Glance instead of deleting it. */
  keepOnFailure?: boolean;
  scratchDir?: string;
  /** Deadline for the whole publish. Default 1 h. */
  timeoutMs?: number;
  /** Let a file:// source.url read this host's files. */
  allowLocalFiles?: boolean;
  /** Largest guest size accepted (default provider/disk's DEFAULT_MAX_VIRTUAL_SIZE). */
  maxVirtualSize?: number;
}

export interface PublishDeps {
  glance: GlanceClient;
  signal?: AbortSignal;
  onProgress?: ProgressSink;
  log?: (line: string) => void;
  /** provider/disk's prepareImage; injectable for tests. */
  prepare?: (source: ImageSource, opts: PrepareOptions) => Promise<PreparedImage>;
  /** First poll gap while waiting on Glance (doubles up to 5 s). */
  pollMs?: number;
  /** Set by publishImage: when waiting gives up (ms since the epoch). */
  deadline?: number;
  /** How long to wait on an earlier run's image that is still mid-upload (default 120 s). */
  settleMs?: number;
}

/** Time between the publish deadline and the hard abort of whatever still runs. */
const ABORT_GRACE_MS = 15_000;

export interface PublishResult {
  image: GlanceImage;
  /** An image an earlier run had started (or finished) was reused. */
  adopted: boolean;
  /** Bytes sent to Glance (0 for web-download and adoption). */
  uploadedBytes: number;
  /** How Glance's copy was checked against ours. */
  verified: "sha512" | "md5" | "none";
}

export const SOURCE_CHECKSUM_PROPERTY = "imageyard_source_checksum";

/** The failure of a publish, with the image it concerned and whether that image is still in Glance. */
export interface PublishFailureInfo {
  imageId?: string;
  imageKept?: boolean;
}

/** SCS image metadata as openstack-image-manager fills it. */
export function scsProperties(o: {
  name: string;
  url: string;
  buildDate?: string;
  login?: string;
  description?: string;
}): Record<string, string> {
  const p: Record<string, string> = { image_source: redactUrl(o.url), image_description: o.description ?? o.name };
  if (o.buildDate) p.image_build_date = o.buildDate;
  if (o.login) p.image_original_user = o.login;
  return p;
}

/** Stable across runs for the same request, so a re-run finds what a crashed run created. */
export function requestKeyOf(spec: Pick<PublishSpec, "name" | "source" | "diskFormat" | "containerFormat" | "importMethod">): string {
  const s = spec.source;
  return createHash("sha256")
    .update(
      JSON.stringify([
        spec.name,
        s.url,
        s.checksum ?? null,
        s.checksumUrl ?? null,
        spec.diskFormat,
        spec.containerFormat,
        spec.importMethod,
      ]),
    )
    .digest("hex")
    .slice(0, 32);
}

// ---------------------------------------------------------------- publish

export async function publishImage(spec: PublishSpec, deps: PublishDeps): Promise<PublishResult> {
  const log = deps.log ?? (() => {});
  const timeoutMs = spec.timeoutMs ?? 3600_000;
  const deadline = Date.now() + timeoutMs;
  // Waits end at the deadline with a reason (GLANCE_TIMEOUT); the hard abort, a little later,
  // only stops transfers that hang, and leaves time to clean up.
  const hardStop = AbortSignal.timeout(timeoutMs + ABORT_GRACE_MS);
  const signal = deps.signal ? AbortSignal.any([deps.signal, hardStop]) : hardStop;
  const d: PublishDeps = { ...deps, signal, deadline };
  const { glance } = deps;
  const key = spec.requestKey ?? requestKeyOf(spec);
  const owner = await glance.session.projectId();

  // 1. An earlier run of this request may have created (or even finished) the image, or left one
  //    stuck mid-upload: adopt, reuse or delete it.
  const earlier = await resolveEarlierRuns(glance, spec.name, owner, key, deadline, {
    signal,
    log,
    pollMs: deps.pollMs,
    settleMs: deps.settleMs,
  });
  if (earlier.finished)
    return { image: await finish(glance, earlier.finished, spec, d), adopted: true, uploadedBytes: 0, verified: "none" };
  let image: GlanceImage | undefined = earlier.queued;

  if (spec.importMethod === "web-download") return webDownload(spec, image, key, d);

  // 2. Download, verify and convert before anything new appears in Glance.
  const prepare = deps.prepare ?? prepareImage;
  const prepared = await prepare(spec.source, {
    diskFormat: spec.diskFormat,
    scratchDir: spec.scratchDir,
    onProgress: deps.onProgress,
    signal,
    log,
    allowLocalFiles: spec.allowLocalFiles,
    maxVirtualSize: spec.maxVirtualSize,
  });
  try {
    const checksum = `${prepared.sourceChecksum.algo}:${prepared.sourceChecksum.value}`;
    image ??= await createImage(glance, createOptions(spec, key, checksum), signal);
    const id = image.id;
    return await cleanupOnFailure(glance, id, spec, log, async () => {
      log(`${spec.name}: uploading ${prepared.size} bytes (${prepared.diskFormat}) to image ${id}`);
      await uploadImageData(glance, id, prepared.open(), prepared.size, signal);
      const digests = await prepared.digests();
      const active = await waitActive(glance, id, deadline, `upload ${spec.name}`, d);
      const verified = verifyHashes(
        active,
        { size: digests.size, sha512: digests.sha512, md5: digests.md5 },
        `upload ${spec.name} to image ${id}`,
      );
      return { image: await finish(glance, active, spec, d), adopted: false, uploadedBytes: prepared.size, verified };
    });
  } finally {
    await prepared.cleanup();
  }
}

function createOptions(spec: PublishSpec, key: string, sourceChecksum: string | undefined, diskFormat: string = spec.diskFormat) {
  // protected is set last: a failed publish must still be able to delete its image.
  return {
    name: spec.name,
    disk_format: diskFormat,
    container_format: spec.containerFormat,
    visibility: spec.visibility,
    min_disk: spec.minDisk,
    min_ram: spec.minRam,
    os_hidden: spec.hidden,
    tags: [...spec.tags],
    properties: {
      ...spec.properties,
      [REQUEST_KEY_PROPERTY]: key,
      [RUN_PROPERTY]: runId(),
      ...(sourceChecksum ? { [SOURCE_CHECKSUM_PROPERTY]: sourceChecksum } : {}),
    },
  };
}

/** Runs the steps after the image exists; on failure deletes it (or keeps it) and tags the error. */
async function cleanupOnFailure<T>(
  glance: GlanceClient,
  id: string,
  spec: PublishSpec,
  log: (l: string) => void,
  steps: () => Promise<T>,
): Promise<T> {
  try {
    return await steps();
  } catch (e) {
    let kept = true;
    if (!spec.keepOnFailure) {
      try {
        // A fresh signal: the publish's own may be what just expired.
        const cleanupSignal = AbortSignal.timeout(60_000);
        await deleteImage(glance, id, cleanupSignal).catch(async (de: unknown) => {
          if (!isImageyardError(de, "GLANCE_PROTECTED")) throw de;
          await patchImage(glance, id, [{ op: "replace", path: "/protected", value: false }], cleanupSignal);
          await deleteImage(glance, id, cleanupSignal);
        });
        kept = false;
        log(`${spec.name}: deleted image ${id} after the failure`);
      } catch (cleanupError) {
        log(`${spec.name}: could not delete image ${id} after the failure: ${(cleanupError as Error).message}`);
      }
    }
    const timedOut = isImageyardError(e, "CANCELLED") && spec.timeoutMs !== undefined;
    const err = timedOut
      ? new GlanceError(
          "GLANCE_TIMEOUT",
          `publish ${spec.name}: not finished ${Math.round((spec.timeoutMs ?? 0) / 1000)} s after it started (${(e as Error).message}). Raise timeouts.create or check the network to the source and Glance.`,
          { cause: e, imageId: id },
        )
      : isImageyardError(e)
        ? e
        : new ImageyardError("GLANCE_ERROR", `publish ${spec.name}: ${(e as Error)?.message ?? String(e)}`, { cause: e });
    Object.assign(err, { imageId: id, imageKept: kept } satisfies PublishFailureInfo);
    throw err;
  }
}

/** Polls until the image is active; a kill, a failed import or the deadline is an error naming the reason. */
export async function waitActive(
  glance: GlanceClient,
  id: string,
  deadline: number,
  what: string,
  deps: Pick<PublishDeps, "signal" | "pollMs">,
): Promise<GlanceImage> {
  const gap = pollGaps(deps.pollMs ?? 500);
  for (;;) {
    const img = await getImage(glance, id, deps.signal);
    if (img.status === "active") return img;
    const failedStores = typeof img.os_glance_failed_import === "string" ? img.os_glance_failed_import : "";
    const importing = typeof img.os_glance_importing_to_stores === "string" ? img.os_glance_importing_to_stores : "";
    if (img.status === "killed" || (img.status === "queued" && failedStores !== "" && importing === "")) {
      // The image can fall back to queued a moment before its task is marked failed.
      let reason = await taskReason(glance, id, deps.signal);
      for (const until = Date.now() + 5000; reason?.includes(" processing") && Date.now() < until; ) {
        await abortableSleep(250, deps.signal);
        reason = await taskReason(glance, id, deps.signal);
      }
      throw new GlanceError(
        "GLANCE_IMPORT_FAILED",
        `${what}: Glance reports the import of image ${id} failed${reason ? `: ${reason}` : ""} (status ${img.status}${failedStores ? `, os_glance_failed_import ${failedStores}` : ""}). Check that Glance can fetch the URL and that the data is a valid image of the declared format.`,
        { imageId: id },
      );
    }
    if (Date.now() >= deadline) {
      const reason = await taskReason(glance, id, deps.signal).catch(() => undefined);
      throw new GlanceError(
        "GLANCE_TIMEOUT",
        `${what}: image ${id} is still ${img.status} at the deadline${reason ? `; last task: ${reason}` : ""} (status ${img.status}). Raise the timeout, or check Glance's import workers and image_size_cap.`,
        { imageId: id, retryable: true },
      );
    }
    await abortableSleep(Math.max(50, Math.min(gap(), deadline - Date.now())), deps.signal);
  }
}

/** The most recent import task's message, which is where Glance explains a failure. */
export async function taskReason(glance: GlanceClient, id: string, signal?: AbortSignal): Promise<string | undefined> {
  let tasks: GlanceTask[];
  try {
    tasks = await getImageTasks(glance, id, signal);
  } catch {
    return undefined;
  }
  const byTime = [...tasks].sort((a, b) => (a.updated_at ?? a.created_at ?? "").localeCompare(b.updated_at ?? b.created_at ?? ""));
  const failed = byTime.filter((t) => t.status === "failure").pop();
  const last = failed ?? byTime.pop();
  if (!last) return undefined;
  const msg = (last.message ?? "").replace(/\s+/g, " ").trim();
  return `task ${last.id} ${last.status}${msg ? `: ${msg}` : ""}`;
}

/** Glance's size and hashes must be those of the bytes we computed; md5 only when Glance has no sha512. */
export function verifyHashes(img: GlanceImage, local: { size: number; sha512?: string; md5?: string }, what: string): "sha512" | "md5" {
  if (img.size !== null && img.size !== local.size) {
    throw new GlanceError(
      "SIZE_MISMATCH",
      `${what}: Glance stored ${img.size} bytes but ${local.size} were sent (image ${img.id}). The upload was cut or altered; it has been discarded.`,
      { imageId: img.id },
    );
  }
  if (img.os_hash_algo === "sha512" && local.sha512) {
    if (img.os_hash_value !== local.sha512) {
      throw new GlanceError(
        "CHECKSUM_MISMATCH",
        `${what}: Glance's os_hash_value sha512:${String(img.os_hash_value).slice(0, 16)}… differs from the uploaded bytes' sha512:${local.sha512.slice(0, 16)}… (image ${img.id}). It has been discarded; run again.`,
        { imageId: img.id },
      );
    }
    return "sha512";
  }
  if (local.md5 && img.checksum) {
    if (img.checksum !== local.md5) {
      throw new GlanceError(
        "CHECKSUM_MISMATCH",
        `${what}: Glance's checksum md5:${img.checksum} differs from the uploaded bytes' md5:${local.md5} (image ${img.id}). It has been discarded; run again.`,
        { imageId: img.id },
      );
    }
    return "md5";
  }
  throw new GlanceError(
    "CHECKSUM_MISMATCH",
    `${what}: Glance returned no hash to compare (os_hash_algo ${img.os_hash_algo ?? "none"}) for image ${img.id}; refusing to trust it.`,
    { imageId: img.id },
  );
}

// ---------------------------------------------------------------- web-download

async function webDownload(spec: PublishSpec, existing: GlanceImage | undefined, key: string, deps: PublishDeps): Promise<PublishResult> {
  const { glance } = deps;
  const signal = deps.signal;
  const log = deps.log ?? (() => {});
  const expected = await resolveChecksum(spec.source, { signal, allowLocalFiles: spec.allowLocalFiles });
  const sourceFormat = spec.source.format ?? spec.diskFormat;
  const image =
    existing ??
    (await createImage(
      glance,
      createOptions(spec, key, expected ? `${expected.algo}:${expected.value}` : undefined, sourceFormat),
      signal,
    ));
  const id = image.id;
  const deadline = deps.deadline ?? Date.now() + (spec.timeoutMs ?? 3600_000);
  return cleanupOnFailure(glance, id, spec, log, async () => {
    log(
      `${spec.name}: Glance imports ${redactUrl(spec.source.url)} into image ${id} (web-download${sourceFormat !== spec.diskFormat ? `, converting ${sourceFormat} → ${spec.diskFormat}` : ""})`,
    );
    await importImage(glance, id, { name: "web-download", uri: spec.source.url }, signal);
    const active = await waitActive(glance, id, deadline, `web-download ${redactUrl(spec.source.url)}`, deps).catch(async (e: unknown) => {
      throw isImageyardError(e, "GLANCE_IMPORT_FAILED") ? await withUrlProbe(e, spec.source.url, signal) : e;
    });
    if (active.disk_format !== spec.diskFormat) {
      throw new GlanceError(
        "GLANCE_IMPORT_FAILED",
        `web-download ${redactUrl(spec.source.url)}: image ${id} ended up ${active.disk_format}, not ${spec.diskFormat} (Glance's image_conversion output format differs). Set diskFormat to ${active.disk_format}, or use importMethod "upload" to convert locally.`,
        { imageId: id },
      );
    }
    let verified: PublishResult["verified"] = "none";
    // Glance hashes what it stored: that equals the source only when nothing was converted.
    if (expected && sourceFormat === spec.diskFormat && (expected.algo === "sha512" || expected.algo === "md5")) {
      verified = verifyHashes(
        active,
        { size: active.size ?? 0, ...(expected.algo === "sha512" ? { sha512: expected.value } : { md5: expected.value }) },
        `web-download ${redactUrl(spec.source.url)}`,
      );
    } else if (expected) {
      log(
        `${spec.name}: Glance fetched the data itself; its hashes cannot be compared with ${expected.algo}:${expected.value.slice(0, 12)}…${sourceFormat !== spec.diskFormat ? " after conversion" : ""}`,
      );
    }
    return { image: await finish(glance, active, spec, deps), adopted: false, uploadedBytes: 0, verified };
  });
}

/**
 * Glance's task message for a failed web-download is often only "Task failed due to Internal
 * Error": ask the URL ourselves and add what it answers here (it may differ from what Glance sees).
 */
async function withUrlProbe(e: ImageyardError, url: string, signal?: AbortSignal): Promise<ImageyardError> {
  let seen: string;
  try {
    const res = await send({
      method: "HEAD",
      url,
      ok: [],
      operation: `probe ${redactUrl(url)}`,
      signal,
      mapError: (ctx) => new ImageyardError("HTTP_ERROR", String(ctx.status), { status: ctx.status }),
    });
    seen = `answers ${res.status}`;
  } catch (probe) {
    const status = (probe as ImageyardError).status;
    seen = status !== undefined ? `answers ${statusText(status)}` : `cannot be reached (${(probe as Error).message.split(": ").pop()})`;
  }
  const at = e.message.lastIndexOf(" (status ");
  const message =
    at > 0 ? `${e.message.slice(0, at)} (the URL ${seen} from here; ${e.message.slice(at + 2)}` : `${e.message} The URL ${seen} from here.`;
  return new GlanceError("GLANCE_IMPORT_FAILED", message, { cause: e, imageId: (e as GlanceError).imageId });
}

// ---------------------------------------------------------------- finish and update

/** Brings a published image to the wanted attributes: protect, deactivate, and fix any drift. */
async function finish(
  glance: GlanceClient,
  img: GlanceImage,
  spec: ImageAttributes,
  deps: Pick<PublishDeps, "signal">,
): Promise<GlanceImage> {
  return applyAttributes(glance, img, spec, Object.keys(spec.properties), deps.signal);
}
