// The steps of a publish that every way of getting data into Glance shares: the image's create
// options, the cleanup when a later step fails, the wait for `active`, and the check of Glance's
// hashes against ours. provider/glance/publish.ts runs them for an upload, ./importing.ts for the
// import methods (web-download, glance-direct).
import { ImageyardError, isImageyardError } from "../http/errors";
import { abortableSleep } from "../http/retry";
import type { ProgressSink } from "../http/progress";
import type { ImageSource, PreparedImage, PrepareOptions } from "../disk/prepare";
import type { DiskFormat } from "../disk/qemu";
import { GlanceError } from "./errors";
import { deleteImage, getImage, getImageTasks, patchImage, type GlanceClient, type GlanceImage, type GlanceTask } from "./images";
import { pollGaps, REQUEST_KEY_PROPERTY, RUN_PROPERTY, runId } from "./leftovers";
import { applyAttributes, type ImageAttributes } from "./update";

export interface PublishSpec extends ImageAttributes {
  source: ImageSource;
  diskFormat: DiskFormat;
  containerFormat: string;
  /**
   * upload: PUT the prepared bytes; glance-direct: stage them and import; web-download: Glance
   * fetches the URL. An import method the cloud does not enable falls back (web-download →
   * glance-direct → upload), and the log says so.
   */
  importMethod: ImportMethodName;
  /** An import still not active this long after it started is stuck: its image is deleted and the import tried again. Default 30 min. */
  importTimeoutMs?: number;
  /** How many times a stuck import is started again before the publish fails. Default 2. */
  importRetries?: number;
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

export type ImportMethodName = "upload" | "glance-direct" | "web-download";

/** Time between the publish deadline and the hard abort of whatever still runs. */
export const ABORT_GRACE_MS = 15_000;

export interface PublishResult {
  image: GlanceImage;
  /** An image an earlier run had started (or finished) was reused. */
  adopted: boolean;
  /** Bytes sent to Glance (0 for web-download and adoption). */
  uploadedBytes: number;
  /** How Glance's copy was checked against ours. */
  verified: "sha512" | "md5" | "none";
  /** How the data got in: the method asked for, or the one it fell back to. */
  method: ImportMethodName;
  /** The URL the data came from (the mirror, or url when there is none or the mirror failed). */
  sourceUrl?: string;
  /** Imports that were stuck and started again. */
  importRetries: number;
}

export const SOURCE_CHECKSUM_PROPERTY = "imageyard_source_checksum";

/** The failure of a publish, with the image it concerned and whether that image is still in Glance. */
export interface PublishFailureInfo {
  imageId?: string;
  imageKept?: boolean;
}

export function createOptions(spec: PublishSpec, key: string, sourceChecksum: string | undefined, diskFormat: string = spec.diskFormat) {
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
export async function cleanupOnFailure<T>(
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

// ---------------------------------------------------------------- finish and update

/** Brings a published image to the wanted attributes: protect, deactivate, and fix any drift. */
export async function finish(
  glance: GlanceClient,
  img: GlanceImage,
  spec: ImageAttributes,
  deps: Pick<PublishDeps, "signal">,
): Promise<GlanceImage> {
  return applyAttributes(glance, img, spec, Object.keys(spec.properties), deps.signal);
}
