// What an earlier run of the same request left in Glance, found by the request-key property every
// image gets at creation: a finished image is adopted, a queued one reused, and one stuck in
// saving/uploading/importing whose run is gone (Glance or the provider was killed mid-upload) is
// deleted, each said in the log. Without this a re-run waited 120 s in silence, published a new
// image, and the orphan outlived `destroy`.
import { hostname } from "node:os";
import { abortableSleep } from "../http/retry";
import { currentOwner, ownerIsGone, type Owner } from "../disk/owner";
import { deleteImage, getImage, listImages, patchImage, type GlanceClient, type GlanceImage } from "./images";
import { isImageyardError } from "../http/errors";

export const REQUEST_KEY_PROPERTY = "imageyard_request_key";
/** host/pid/start of the run that created the image: a later run can tell a dead run's leftover. */
export const RUN_PROPERTY = "imageyard_run";

const IN_FLIGHT = ["saving", "uploading", "importing"];
const FOUND = ["active", "deactivated", "queued", "killed", ...IN_FLIGHT];
const RANK: Record<string, number> = { active: 0, deactivated: 1, saving: 2, uploading: 2, importing: 2, queued: 3, killed: 4 };
/** How long an in-flight image of a run that may still live (another host) is given to finish. */
export const SETTLE_MS = 120_000;

export function runId(o: Owner = currentOwner()): string {
  return `${o.host}/${o.pid}/${o.start ?? ""}`;
}

function parseRun(v: unknown): Owner | undefined {
  const m = typeof v === "string" ? /^([^/]+)\/(\d+)\/(\d*)$/.exec(v) : null;
  return m ? { host: m[1] as string, pid: Number(m[2]), start: m[3] || undefined } : undefined;
}

/** Images of this owner with this name and request key, best first (active before queued). */
export async function findStarted(
  glance: GlanceClient,
  name: string,
  owner: string | undefined,
  key: string,
  signal?: AbortSignal,
): Promise<GlanceImage[]> {
  const found = await listImages(
    glance,
    { name, ...(owner ? { owner } : {}), visibility: "all", properties: { [REQUEST_KEY_PROPERTY]: key } },
    signal,
  );
  return found
    .filter(
      (i) => i[REQUEST_KEY_PROPERTY] === key && i.name === name && (owner === undefined || i.owner === owner) && FOUND.includes(i.status),
    )
    .sort((a, b) => (RANK[a.status] ?? 9) - (RANK[b.status] ?? 9));
}

export interface EarlierRun {
  /** A finished image to adopt. */
  finished?: GlanceImage;
  /** A queued image to upload into. */
  queued?: GlanceImage;
}

export interface LeftoverDeps {
  signal?: AbortSignal;
  log: (line: string) => void;
  pollMs?: number;
  /** How long to wait on an in-flight image whose run may be alive (default SETTLE_MS). */
  settleMs?: number;
}

/** Sorts out what earlier runs of `key` left: adopt, reuse, or delete (and say which). */
export async function resolveEarlierRuns(
  glance: GlanceClient,
  name: string,
  owner: string | undefined,
  key: string,
  deadline: number,
  deps: LeftoverDeps,
): Promise<EarlierRun> {
  const out: EarlierRun = {};
  for (const candidate of await findStarted(glance, name, owner, key, deps.signal)) {
    let img = candidate;
    if (IN_FLIGHT.includes(img.status)) {
      const run = parseRun(img[RUN_PROPERTY]);
      if (run && ownerIsGone(run)) {
        await discard(glance, img, `left ${img.status} by an interrupted run (pid ${run.pid} on ${run.host}, no longer running)`, deps);
        continue;
      }
      const settleMs = deps.settleMs ?? SETTLE_MS;
      const who = run
        ? run.host === hostname()
          ? `run pid ${run.pid}, still alive`
          : `a run on ${run.host}`
        : "a run this provider cannot check";
      deps.log(`${name}: image ${img.id} is ${img.status} (${who}); waiting up to ${Math.round(settleMs / 1000)} s for it to finish`);
      img = await settle(glance, img, Math.min(deadline, Date.now() + settleMs), deps);
      if (IN_FLIGHT.includes(img.status)) {
        await discard(glance, img, `still ${img.status} after ${Math.round(settleMs / 1000)} s with nothing finishing it`, deps);
        continue;
      }
    }
    if ((img.status === "active" || img.status === "deactivated") && !out.finished) {
      deps.log(`${name}: adopting image ${img.id} (${img.status}) that an earlier run published`);
      out.finished = img;
      return out;
    }
    if (img.status === "queued" && !out.queued) {
      deps.log(`${name}: reusing queued image ${img.id} that an earlier run created`);
      out.queued = img;
    } else if (img.status === "queued" || img.status === "killed") {
      await discard(glance, img, `left ${img.status} by an earlier run`, deps);
    }
  }
  return out;
}

async function discard(glance: GlanceClient, img: GlanceImage, why: string, deps: LeftoverDeps): Promise<void> {
  try {
    if (img.protected) await patchImage(glance, img.id, [{ op: "replace", path: "/protected", value: false }], deps.signal);
    await deleteImage(glance, img.id, deps.signal);
    deps.log(`${img.name ?? img.id}: deleted image ${img.id}, ${why}`);
  } catch (e) {
    if (!isImageyardError(e)) throw e;
    deps.log(`${img.name ?? img.id}: could not delete image ${img.id} (${why}): ${e.message}`);
  }
}

/** Poll gaps that double from `first` up to 5 s. */
export function pollGaps(first: number): () => number {
  let gap = first;
  return () => {
    const g = gap;
    gap = Math.min(5000, gap * 2);
    return g;
  };
}

/** Waits while an image is mid-upload or mid-import (an interrupted upload falls back to queued). */
async function settle(glance: GlanceClient, img: GlanceImage, deadline: number, deps: LeftoverDeps): Promise<GlanceImage> {
  const gap = pollGaps(deps.pollMs ?? 500);
  let cur = img;
  while (IN_FLIGHT.includes(cur.status) && Date.now() < deadline) {
    await abortableSleep(Math.max(10, Math.min(gap(), deadline - Date.now())), deps.signal);
    cur = await getImage(glance, cur.id, deps.signal);
  }
  return cur;
}
