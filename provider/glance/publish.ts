// The publishing pipeline, as named steps:
//   findStarted (adopt what an earlier, interrupted run began) → chooseImportMethod (what the cloud
//   enables) → prepare (download from the mirror or url, verify, convert: provider/disk) →
//   createImage → uploadData | glanceDirect | webDownload (./importing) → waitActive →
//   verifyHashes → finish (protect, deactivate). The shared steps live in ./steps.
// Any failure once an image exists deletes it (unless told to keep it) and rethrows the typed error
// with `imageId`, so nothing is orphaned and a caller can record what is left.
import { createHash } from "node:crypto";
import { redactUrl } from "../http/errors";
import { withMirror } from "../disk/mirror";
import { prepareImage } from "../disk/prepare";
import { createImage, uploadImageData, type GlanceImage } from "./images";
import { chooseImportMethod, describeMethod, glanceDirect, webDownload } from "./importing";
import { resolveEarlierRuns } from "./leftovers";
import {
  ABORT_GRACE_MS,
  cleanupOnFailure,
  createOptions,
  finish,
  verifyHashes,
  waitActive,
  type PublishDeps,
  type PublishResult,
  type PublishSpec,
} from "./steps";

export { findStarted, REQUEST_KEY_PROPERTY, RUN_PROPERTY } from "./leftovers";
export type { ImageAttributes } from "./update";
export {
  SOURCE_CHECKSUM_PROPERTY,
  taskReason,
  verifyHashes,
  waitActive,
  type ImportMethodName,
  type PublishDeps,
  type PublishFailureInfo,
  type PublishResult,
  type PublishSpec,
} from "./steps";
export { DEFAULT_IMPORT_RETRIES, DEFAULT_IMPORT_TIMEOUT_MS } from "./importing";

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
    return {
      image: await finish(glance, earlier.finished, spec, d),
      adopted: true,
      uploadedBytes: 0,
      verified: "none",
      method: spec.importMethod,
      importRetries: 0,
    };
  const queued: GlanceImage | undefined = earlier.queued;

  const method = await chooseImportMethod(glance, spec, d);
  if (method === "web-download") return webDownload(spec, queued, key, d);

  // 2. Download (the mirror first), verify and convert before anything new appears in Glance.
  const prepare = deps.prepare ?? prepareImage;
  const { result: prepared, choice } = await withMirror(
    spec.source,
    { signal, allowLocalFiles: spec.allowLocalFiles },
    (single, c) =>
      prepare(single, {
        diskFormat: spec.diskFormat,
        scratchDir: spec.scratchDir,
        onProgress: deps.onProgress,
        signal,
        log,
        allowLocalFiles: spec.allowLocalFiles,
        maxVirtualSize: spec.maxVirtualSize,
        // A mirror's bytes are verified to the end before anything is uploaded, so a bad mirror
        // can still fall back to url; without one, a qcow2 → raw upload may start while downloading.
        ...(c.mirror ? { follow: false } : {}),
      }),
    (line) => log(`${spec.name}: ${line}`),
  );
  const from = ` from ${choice.mirror ? "the mirror " : ""}${redactUrl(choice.url)}`;
  try {
    if (method === "glance-direct") return { ...(await glanceDirect(spec, prepared, queued, key, d)), sourceUrl: choice.url };
    const checksum = `${prepared.sourceChecksum.algo}:${prepared.sourceChecksum.value}`;
    const image = queued ?? (await createImage(glance, createOptions(spec, key, checksum), signal));
    const id = image.id;
    return await cleanupOnFailure(glance, id, spec, log, async () => {
      log(`${spec.name}: uploading ${prepared.size} bytes (${prepared.diskFormat})${from} to image ${id} by ${describeMethod("upload")}`);
      await uploadImageData(glance, id, prepared.open(), prepared.size, signal);
      const digests = await prepared.digests();
      const active = await waitActive(glance, id, deadline, `upload ${spec.name}`, d);
      const verified = verifyHashes(
        active,
        { size: digests.size, sha512: digests.sha512, md5: digests.md5 },
        `upload ${spec.name} to image ${id}`,
      );
      return {
        image: await finish(glance, active, spec, d),
        adopted: false,
        uploadedBytes: prepared.size,
        verified,
        method: "upload",
        sourceUrl: choice.url,
        importRetries: 0,
      };
    });
  } finally {
    await prepared.cleanup();
  }
}
