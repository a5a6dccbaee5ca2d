// Glance's import methods: which one a cloud allows (GET /v2/info/import, its enabled_import_methods),
// web-download (Glance fetches the URL, the mirror first) and glance-direct (stage our prepared
// bytes, then import). An import that stays `importing` past its own deadline is stuck: the image is
// deleted and the import started again, importRetries times, before the publish fails.
import { redactUrl, type ImageyardError, isImageyardError } from "../http/errors";
import { send } from "../http/client";
import { mirrorMayFallBack, sourceUrls } from "../disk/mirror";
import type { PreparedImage } from "../disk/prepare";
import { resolveChecksum } from "../disk/source";
import { GlanceError, statusText } from "./errors";
import { createImage, deleteImage, getImportMethods, importImage, stageImageData, type GlanceClient, type GlanceImage } from "./images";
import {
  cleanupOnFailure,
  createOptions,
  finish,
  verifyHashes,
  waitActive,
  type ImportMethodName,
  type PublishDeps,
  type PublishFailureInfo,
  type PublishResult,
  type PublishSpec,
} from "./steps";

export const DEFAULT_IMPORT_RETRIES = 2;
export const DEFAULT_IMPORT_TIMEOUT_MS = 30 * 60_000;

const FALLBACKS: Record<ImportMethodName, ImportMethodName[]> = {
  "web-download": ["web-download", "glance-direct", "upload"],
  "glance-direct": ["glance-direct", "upload"],
  upload: ["upload"],
};

/** How the method reads in a log line. */
export function describeMethod(m: ImportMethodName): string {
  return m === "glance-direct" ? "glance-direct (stage + import)" : m === "upload" ? "a plain upload (PUT /file)" : "web-download";
}

/**
 * The method asked for when the cloud enables it, else the next one down (web-download →
 * glance-direct → upload; upload needs no import method). A fallback is said in the log.
 */
export async function chooseImportMethod(
  glance: GlanceClient,
  spec: Pick<PublishSpec, "name" | "importMethod">,
  deps: Pick<PublishDeps, "signal" | "log">,
): Promise<ImportMethodName> {
  const wanted = spec.importMethod;
  if (wanted === "upload") return wanted;
  const log = deps.log ?? (() => {});
  let enabled: string[];
  try {
    enabled = await getImportMethods(glance, deps.signal);
  } catch (e) {
    if (!isImageyardError(e) || deps.signal?.aborted) throw e;
    log(`${spec.name}: could not read the cloud's import methods (${e.message}); trying ${wanted}`);
    return wanted;
  }
  const method = FALLBACKS[wanted].find((m) => m === "upload" || enabled.includes(m)) as ImportMethodName;
  if (method !== wanted)
    log(
      `${spec.name}: ${wanted} is not enabled on this cloud (Glance's enabled_import_methods: ${enabled.join(", ") || "none"}); using ${describeMethod(method)} instead${wanted === "web-download" ? ": the image is downloaded, verified and converted here" : ""}`,
    );
  return method;
}

/** One import's steps: make the image, start its import, wait for it and check the result. */
interface ImportSteps<T> {
  create(): Promise<GlanceImage>;
  start(id: string): Promise<void>;
  settle(id: string, deadline: number): Promise<T>;
}

/** Runs an import; a stuck one (not active by its own deadline) is deleted and started again. */
export async function importWithRetries<T>(
  spec: PublishSpec,
  deps: PublishDeps,
  what: string,
  steps: ImportSteps<T>,
): Promise<{ result: T; retries: number }> {
  const { glance } = deps;
  const log = deps.log ?? (() => {});
  const deadline = deps.deadline ?? Date.now() + (spec.timeoutMs ?? 3600_000);
  const retries = spec.importRetries ?? DEFAULT_IMPORT_RETRIES;
  const perAttempt = spec.importTimeoutMs ?? DEFAULT_IMPORT_TIMEOUT_MS;
  for (let attempt = 1; ; attempt++) {
    const last = attempt > retries;
    const image = await steps.create();
    const started = Date.now();
    const attemptDeadline = Math.min(deadline, started + perAttempt);
    try {
      // A stuck image is deleted even with keepOnFailure while attempts remain: the next one replaces it.
      const result = await cleanupOnFailure(glance, image.id, last ? spec : { ...spec, keepOnFailure: false }, log, async () => {
        await steps.start(image.id);
        return steps.settle(image.id, attemptDeadline);
      });
      return { result, retries: attempt - 1 };
    } catch (e) {
      const stuck = isImageyardError(e, "GLANCE_TIMEOUT") && attemptDeadline < deadline && !deps.signal?.aborted;
      if (!stuck) throw e;
      const secs = Math.round((Date.now() - started) / 1000);
      if (last) {
        const info = e as PublishFailureInfo;
        throw Object.assign(
          new GlanceError(
            "GLANCE_TIMEOUT",
            `${what}: the import was stuck on each of ${attempt} attempts (importRetries ${retries}): not active ${Math.round(perAttempt / 1000)} s after it started (importTimeout); last image ${image.id}${info.imageKept ? " (kept)" : ", deleted"}. Check Glance's import workers and that the source answers, or raise importTimeout for imports that take longer.`,
            { cause: e, imageId: image.id },
          ),
          { imageId: image.id, imageKept: info.imageKept } satisfies PublishFailureInfo,
        );
      }
      log(
        `${spec.name}: import stuck: image ${image.id} was not active ${secs} s after its import started (attempt ${attempt} of ${retries + 1}); it was deleted and the import starts again`,
      );
    }
  }
}

/**
 * Makes each attempt's image: first the one an earlier run left queued, if it was made for this
 * disk format (else it is deleted), then new ones.
 */
async function imageMaker(
  spec: PublishSpec,
  existing: GlanceImage | undefined,
  key: string,
  sourceChecksum: string | undefined,
  diskFormat: string,
  deps: PublishDeps,
): Promise<() => Promise<GlanceImage>> {
  const { glance, signal } = deps;
  let reuse = existing;
  if (existing && existing.disk_format !== diskFormat) {
    await deleteImage(glance, existing.id, signal);
    deps.log?.(`${existing.name}: deleted image ${existing.id} an earlier run left queued as ${existing.disk_format}`);
    reuse = undefined;
  }
  return async () => {
    const img = reuse ?? (await createImage(glance, createOptions(spec, key, sourceChecksum, diskFormat), signal));
    reuse = undefined;
    return img;
  };
}

// ---------------------------------------------------------------- glance-direct

/** Stages the prepared bytes and imports them (glance-direct), retrying a stuck import. */
export async function glanceDirect(
  spec: PublishSpec,
  prepared: PreparedImage,
  existing: GlanceImage | undefined,
  key: string,
  deps: PublishDeps,
): Promise<PublishResult> {
  const { glance, signal } = deps;
  const log = deps.log ?? (() => {});
  const checksum = `${prepared.sourceChecksum.algo}:${prepared.sourceChecksum.value}`;
  const create = await imageMaker(spec, existing, key, checksum, prepared.diskFormat, deps);
  const what = `glance-direct ${spec.name}`;
  const { result, retries } = await importWithRetries(spec, deps, what, {
    create,
    start: async (id) => {
      log(`${spec.name}: staging ${prepared.size} bytes (${prepared.diskFormat}) into image ${id}, then importing them (glance-direct)`);
      await stageImageData(glance, id, prepared.open(), prepared.size, signal);
      await importImage(glance, id, { name: "glance-direct" }, signal);
    },
    settle: async (id, deadline) => {
      const active = await waitActive(glance, id, deadline, what, deps);
      if (active.disk_format !== prepared.diskFormat) {
        throw new GlanceError(
          "GLANCE_IMPORT_FAILED",
          `${what}: Glance converted the staged ${prepared.diskFormat} to ${active.disk_format} (its image_conversion plugin), so its copy cannot be checked against ours (image ${id}). Set diskFormat to ${active.disk_format}, or importMethod "upload".`,
          { imageId: id },
        );
      }
      const digests = await prepared.digests();
      const verified = verifyHashes(active, digests, `${what} into image ${id}`);
      return { image: await finish(glance, active, spec, deps), verified };
    },
  });
  return { ...result, adopted: false, uploadedBytes: prepared.size, method: "glance-direct", importRetries: retries };
}

// ---------------------------------------------------------------- web-download

/** Glance fetches the mirror (then url, if the mirror fails), retrying a stuck import. */
export async function webDownload(
  spec: PublishSpec,
  existing: GlanceImage | undefined,
  key: string,
  deps: PublishDeps,
): Promise<PublishResult> {
  const { glance, signal } = deps;
  const log = deps.log ?? (() => {});
  // The checksum belongs to url's file (a SUMS entry is found by its name), and holds for the mirror too.
  const expected = await resolveChecksum(spec.source, { signal, allowLocalFiles: spec.allowLocalFiles });
  const sourceFormat = spec.source.format ?? spec.diskFormat;
  const create = await imageMaker(spec, existing, key, expected ? `${expected.algo}:${expected.value}` : undefined, sourceFormat, deps);
  const deadline = deps.deadline ?? Date.now() + (spec.timeoutMs ?? 3600_000);
  const urls = sourceUrls(spec.source);
  for (const [i, uri] of urls.entries()) {
    const mirror = i < urls.length - 1;
    const what = `web-download ${redactUrl(uri)}`;
    try {
      const { result, retries } = await importWithRetries(spec, deps, what, {
        create,
        start: async (id) => {
          log(
            `${spec.name}: Glance imports ${redactUrl(uri)}${mirror ? " (the mirror)" : urls.length > 1 ? " (url, after the mirror failed)" : ""} into image ${id} (web-download${sourceFormat !== spec.diskFormat ? `, converting ${sourceFormat} → ${spec.diskFormat}` : ""})`,
          );
          await importImage(glance, id, { name: "web-download", uri }, signal);
        },
        settle: async (id, until) => {
          const active = await waitActive(glance, id, until, what, deps).catch(async (e: unknown) => {
            throw isImageyardError(e, "GLANCE_IMPORT_FAILED") ? await withUrlProbe(e, uri, signal) : e;
          });
          return settleWebDownload(spec, active, expected, sourceFormat, what, deps);
        },
      });
      return { ...result, adopted: false, uploadedBytes: 0, method: "web-download", sourceUrl: uri, importRetries: retries };
    } catch (e) {
      if (!mirror || !mirrorMayFallBack(e, signal) || Date.now() >= deadline) throw e;
      log(`${spec.name}: the mirror ${redactUrl(uri)} failed (${(e as Error).message}); falling back to ${redactUrl(spec.source.url)}`);
    }
  }
  throw new Error("unreachable: the last URL either returns or throws");
}

async function settleWebDownload(
  spec: PublishSpec,
  active: GlanceImage,
  expected: Awaited<ReturnType<typeof resolveChecksum>>,
  sourceFormat: string,
  what: string,
  deps: PublishDeps,
): Promise<Pick<PublishResult, "image" | "verified">> {
  const id = active.id;
  if (active.disk_format !== spec.diskFormat) {
    throw new GlanceError(
      "GLANCE_IMPORT_FAILED",
      `${what}: image ${id} ended up ${active.disk_format}, not ${spec.diskFormat} (Glance's image_conversion output format differs). Set diskFormat to ${active.disk_format}, or use importMethod "upload" to convert locally.`,
      { imageId: id },
    );
  }
  let verified: PublishResult["verified"] = "none";
  // Glance hashes what it stored: that equals the source only when nothing was converted.
  if (expected && sourceFormat === spec.diskFormat && (expected.algo === "sha512" || expected.algo === "md5")) {
    verified = verifyHashes(
      active,
      { size: active.size ?? 0, ...(expected.algo === "sha512" ? { sha512: expected.value } : { md5: expected.value }) },
      what,
    );
  } else if (expected) {
    deps.log?.(
      `${spec.name}: Glance fetched the data itself; its hashes cannot be compared with ${expected.algo}:${expected.value.slice(0, 12)}…${sourceFormat !== spec.diskFormat ? " after conversion" : ""}`,
    );
  }
  return { image: await finish(deps.glance, active, spec, deps), verified };
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
      mapError: (ctx) => new GlanceError("HTTP_ERROR", String(ctx.status), { status: ctx.status }),
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
