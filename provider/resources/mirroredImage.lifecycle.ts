// The MirroredImage lifecycle as plain functions (check, diff, create, update, read, delete) over
// the copy engine. No Pulumi import: the dynamic provider only forwards to these, so they are
// testable alone and the serialized provider stays a few lines.
import { lineProgress, type ProgressSink } from "../http/progress";
import { ImageyardError, isImageyardError } from "../http/errors";
import { settle, unwrap } from "../http/retry";
import type { Lifecycle, OperationContext } from "./forward";
import { checkTimeouts, timeoutMs, timeoutSeconds, type TimeoutValue, type Timeouts } from "./timeouts";
import { changedKeys, compact, diffResult, isUnknown, providerChanged, type CheckFailure, type DiffResult } from "./diff";
import {
  copyImage,
  inspectImage,
  planCopy,
  removeImage,
  resolveTarget,
  summarizePlan,
  type CopyPlan,
  type CopyRequest,
  type CopyResult,
} from "../oci/copy";
import { RegistryClient, type RegistryOptions } from "../oci/registry";
import { parseLocation, type ImageLocation } from "../oci/location";
import { parsePlatform } from "../oci/manifest";

export interface AuthInput {
  username: string;
  password: string;
}

export interface TlsInput {
  insecure?: boolean;
  caCert?: string;
  certDir?: string;
}

export interface MirrorInputs {
  source: string;
  target: string;
  platforms?: string[];
  sourceAuth?: AuthInput;
  targetAuth?: AuthInput;
  sourceTls?: TlsInput;
  targetTls?: TlsInput;
  copySignatures?: boolean;
  timeouts?: Timeouts;
  /** How long each registry may keep us paused by rate limits, in all, per provider process (seconds or "30m"). */
  rateLimitWait?: TimeoutValue;
  /** Resolved by check from the upstream: a moved tag shows in preview as this input changing. */
  sourceDigest?: string;
}

export interface MirrorOutputs extends MirrorInputs {
  digest: string;
  pinnedRef: string;
  tagRef: string;
  mediaType: string;
  platforms: string[];
  /** The platforms input as given, so diff compares like with like. */
  platformFilter?: string[];
  platformsFiltered: boolean;
  totalSize: number;
  blobsCopied: number;
  blobsMounted: number;
  blobsSkipped: number;
  signaturesCopied: number;
  sourceDigest: string;
  sourceRef: string;
  targetRef: string;
  targetDigest: string;
  [key: string]: unknown;
}

export interface MirrorDeps {
  /** Where progress lines go; the provider's stdout reaches the engine's output. */
  log?: (line: string) => void;
  onProgress?: ProgressSink;
}

const DEFAULT_TIMEOUT_S = 3600;
const DEFAULT_DELETE_TIMEOUT_S = 300;

export function registryOptions(
  auth: AuthInput | undefined,
  tls: TlsInput | undefined,
  side?: "source" | "target",
  rateLimitWait?: TimeoutValue,
): RegistryOptions {
  // insecure alone lets the client try https unverified, then plain http (like crane)
  const opts: RegistryOptions = side ? { credentialsInput: `${side}Auth` } : {};
  // The paused time is counted per host in the process (provider/http/ratelimit), so every
  // MirroredImage of a stack draws on one budget per registry; this is that budget's size.
  const waitS = timeoutSeconds(rateLimitWait);
  if (waitS !== undefined) opts.rateLimitBudgetMs = waitS * 1000;
  if (auth) opts.credentials = { username: auth.username, password: auth.password };
  if (tls?.caCert || tls?.insecure) {
    opts.tls = {};
    if (tls.caCert) opts.tls.ca = [tls.caCert];
    if (tls.insecure) opts.tls.insecure = true;
  }
  if (tls?.certDir) opts.certDir = tls.certDir;
  return opts;
}

export function copyRequest(inputs: MirrorInputs): CopyRequest {
  const req: CopyRequest = {
    source: pinnedSource(inputs),
    target: inputs.target,
    copySignatures: inputs.copySignatures ?? true,
    describe: true,
    sourceOptions: registryOptions(inputs.sourceAuth, inputs.sourceTls, "source", inputs.rateLimitWait),
    targetOptions: registryOptions(inputs.targetAuth, inputs.targetTls, "target", inputs.rateLimitWait),
  };
  if (inputs.platforms && inputs.platforms.length > 0) req.platforms = inputs.platforms;
  return req;
}

/** Copy exactly what check resolved, so a tag that moves between preview and up can't slip in. */
function pinnedSource(inputs: MirrorInputs): string {
  if (!inputs.sourceDigest) return inputs.source;
  const loc = parseLocation(inputs.source);
  return loc.kind === "registry" && !loc.ref.digest ? `${inputs.source}@${inputs.sourceDigest}` : inputs.source;
}

// ---------------------------------------------------------------- check

export async function checkMirror(
  olds: Partial<MirrorInputs>,
  news: MirrorInputs,
  deps: MirrorDeps = {},
): Promise<{ inputs: MirrorInputs; failures: CheckFailure[] }> {
  const failures = validateMirror(news);
  const inputs: MirrorInputs = { ...news };
  delete inputs.sourceDigest;
  if (failures.length > 0 || isUnknown(news.source) || isUnknown(news.sourceAuth) || isUnknown(news.sourceTls)) {
    return { inputs, failures };
  }
  const log = deps.log ?? ((line: string) => console.log(line));
  const sameSource = olds.source === news.source && olds.sourceDigest !== undefined;
  const targetKnown = !isUnknown(news.target) && !isUnknown(news.targetAuth) && !isUnknown(news.targetTls);
  // The engine checks resources one at a time, so a fleet pays every serial round trip of check
  // once per image. A new mirror is always planned: plan it (unpinned) and probe the push while the
  // tag resolves, instead of one after the other.
  const speculate = olds.sourceDigest === undefined && targetKnown;
  const early = speculate ? { plan: settle(planPreview(inputs)), probe: settle(probePush(inputs)) } : undefined;
  try {
    const info = await inspectImage(news.source, registryOptions(news.sourceAuth, news.sourceTls, "source", news.rateLimitWait));
    if (!info)
      throw new ImageyardError(
        "MANIFEST_UNKNOWN",
        `resolve ${news.source}: not found in the source registry. Check the tag and repository name.`,
      );
    inputs.sourceDigest = info.digest;
  } catch (e) {
    // An upstream that is down must not break every preview of an existing mirror: keep what we
    // had and say so. New or changed sources must resolve.
    if (sameSource && isImageyardError(e) && (e.code === "NETWORK_ERROR" || e.code === "TIMEOUT" || e.retryable)) {
      log(`warning: ${messageOf(e)}; keeping the last resolved digest ${olds.sourceDigest}`);
      inputs.sourceDigest = olds.sourceDigest;
      return { inputs, failures };
    }
    return { inputs, failures: [{ property: propertyFor(e, "source"), reason: messageOf(e) }] };
  }
  const moved = inputs.sourceDigest !== olds.sourceDigest || olds.target !== news.target;
  if (moved && targetKnown) {
    try {
      const pending = early ?? { plan: settle(planPreview(inputs)), probe: settle(probePush(inputs)) };
      let plan = unwrap(await pending.plan);
      // The tag moved between the two reads: plan exactly the digest check resolved.
      if (plan.sourceDigest !== inputs.sourceDigest) plan = await planPreview(inputs);
      // A pull-only account is fine for a mirror that is already up to date.
      if (!plan.upToDate) unwrap(await pending.probe);
      log(`${news.target}: ${summarizePlan(plan)}`);
    } catch (e) {
      return { inputs, failures: [{ property: propertyFor(e, "target"), reason: messageOf(e) }] };
    }
  }
  return { inputs, failures };
}

/** What preview shows of a copy, without the look-ups only the copy needs (one round trip to the source). */
function planPreview(inputs: MirrorInputs): Promise<CopyPlan> {
  return planCopy({ ...copyRequest(inputs), preview: true });
}

/**
 * Reads alone can't tell a pull-only account from one that may push; opening an upload session
 * and cancelling it can, before anything is copied.
 */
async function probePush(inputs: MirrorInputs): Promise<void> {
  const target = resolveTarget(parseLocation(inputs.source), parseLocation(inputs.target));
  if (target.kind !== "registry") return;
  const client = new RegistryClient(
    target.ref.registry,
    registryOptions(inputs.targetAuth, inputs.targetTls, "target", inputs.rateLimitWait),
  );
  await client.cancelUpload(await client.startUpload(target.ref.repository));
}

/** Offline validation: every message names what is wrong and shows a right example. */
export function validateMirror(news: Partial<MirrorInputs>): CheckFailure[] {
  const failures: CheckFailure[] = [];
  const fail = (property: string, reason: string) => failures.push({ property, reason });
  let source: ImageLocation | undefined;
  let target: ImageLocation | undefined;
  if (typeof news.source !== "string" || news.source === "") {
    fail("source", 'source is required, e.g. "docker.io/library/alpine:3.20"');
  } else if (!isUnknown(news.source)) {
    try {
      source = parseLocation(news.source);
    } catch (e) {
      fail("source", messageOf(e));
    }
  }
  if (typeof news.target !== "string" || news.target === "") {
    fail("target", 'target is required, e.g. "registry.example.com:5000/mirror/alpine"');
  } else if (!isUnknown(news.target)) {
    try {
      target = parseLocation(news.target);
      if (target.kind === "registry" && target.ref.digest) {
        fail(
          "target",
          `target ${news.target} names a digest; give a repository or repository:tag, e.g. "${target.ref.registry}/${target.ref.repository}"`,
        );
      }
    } catch (e) {
      fail("target", messageOf(e));
    }
  }
  if (source && target) {
    try {
      const t = resolveTarget(source, target);
      if (sameLocation(source, t)) fail("target", "target is the same image as source; choose another repository");
    } catch (e) {
      fail("target", messageOf(e));
    }
  }
  if (news.platforms !== undefined && !isUnknown(news.platforms)) {
    if (!Array.isArray(news.platforms)) fail("platforms", 'platforms must be a list, e.g. ["linux/amd64", "linux/arm64"]');
    else
      news.platforms.forEach((p, i) => {
        try {
          parsePlatform(p);
        } catch {
          fail(`platforms[${i}]`, `"${String(p)}" is not a platform; use os/arch[/variant], e.g. "linux/arm64/v8"`);
        }
      });
  }
  for (const key of ["sourceAuth", "targetAuth"] as const) {
    const a = news[key];
    if (a === undefined || isUnknown(a)) continue;
    if (typeof a !== "object" || a === null || typeof a.username !== "string" || a.username === "" || typeof a.password !== "string") {
      fail(key, `${key} needs a username and a password, e.g. { username: "robot", password: config.requireSecret("registryPassword") }`);
    }
  }
  for (const key of ["sourceTls", "targetTls"] as const) {
    const t = news[key];
    if (t === undefined || isUnknown(t)) continue;
    if (typeof t !== "object" || t === null)
      fail(key, `${key} must be an object like { caCert: "-----BEGIN CERTIFICATE-----…" } or { insecure: true }`);
    else if (t.caCert !== undefined && !String(t.caCert).includes("-----BEGIN CERTIFICATE-----"))
      fail(`${key}.caCert`, "caCert must be a PEM certificate (-----BEGIN CERTIFICATE-----…)");
  }
  failures.push(...checkTimeouts(news.timeouts));
  const wait = news.rateLimitWait;
  if (wait !== undefined && !isUnknown(wait) && timeoutSeconds(wait) === undefined)
    fail(
      "rateLimitWait",
      `rateLimitWait must be a positive number of seconds or a duration like "90s", "30m", "1h"; got ${JSON.stringify(wait)}`,
    );
  return failures;
}

function sameLocation(a: ImageLocation, b: ImageLocation): boolean {
  if (a.kind === "registry" && b.kind === "registry") {
    return a.ref.registry === b.ref.registry && a.ref.repository === b.ref.repository && (a.ref.tag ?? "") === (b.ref.tag ?? "");
  }
  if (a.kind === "archive" && b.kind === "archive") return a.path === b.path;
  return a.kind === "layout" && b.kind === "layout" && a.path === b.path && a.tag === b.tag;
}

function propertyFor(e: unknown, side: "source" | "target"): string {
  if (isImageyardError(e) && (e.code === "REGISTRY_UNAUTHORIZED" || e.code === "REGISTRY_DENIED")) return `${side}Auth`;
  return side;
}

function messageOf(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

// ---------------------------------------------------------------- diff

// rateLimitWait is absent on purpose: it steers how a copy waits, not what the mirror holds, so
// changing it is no reason to touch every image of a stack.
const UPDATE_KEYS = ["source", "sourceDigest", "copySignatures", "sourceAuth", "targetAuth", "sourceTls", "targetTls", "timeouts"] as const;

export function diffMirror(olds: MirrorOutputs, news: MirrorInputs): DiffResult {
  const replaces: string[] = [];
  if (isUnknown(news.target) || isUnknown(news.source) || targetKey(olds) !== targetKey(news)) replaces.push("target");
  const updates = changedKeys<MirrorInputs>(olds, news, UPDATE_KEYS);
  if (!samePlatforms(olds.platformFilter, news.platforms)) updates.push("platforms");
  // read() saw the mirror tag missing or moved: the next up puts it back.
  if (olds.targetDigest !== undefined && olds.digest !== undefined && olds.targetDigest !== olds.digest) updates.push("targetDigest");
  if (providerChanged(olds, news as unknown as Record<string, unknown>)) updates.push("__provider");
  return diffResult(updates, replaces);
}

/** The target tag a set of inputs resolves to: changing it means a new resource. */
function targetKey(i: Pick<MirrorInputs, "source" | "target">): string {
  try {
    return resolveTarget(parseLocation(i.source), parseLocation(i.target)).display;
  } catch {
    return `${i.target}`;
  }
}

function samePlatforms(a: string[] | undefined, b: string[] | undefined): boolean {
  const norm = (x: string[] | undefined) => [...(x ?? [])].sort().join(",");
  return norm(a) === norm(b);
}

// ---------------------------------------------------------------- create / update / read / delete

export async function createMirror(inputs: MirrorInputs, deps: MirrorDeps = {}): Promise<{ id: string; outs: MirrorOutputs }> {
  const outs = await runCopy(inputs, "create", deps);
  return { id: outs.tagRef, outs };
}

export async function updateMirror(_olds: MirrorOutputs, news: MirrorInputs, deps: MirrorDeps = {}): Promise<MirrorOutputs> {
  return runCopy(news, "update", deps);
}

async function runCopy(inputs: MirrorInputs, op: "create" | "update", deps: MirrorDeps): Promise<MirrorOutputs> {
  const log = deps.log ?? ((line: string) => console.log(line));
  const signal = AbortSignal.timeout(timeoutMs(inputs.timeouts, op, DEFAULT_TIMEOUT_S));
  const result = await copyImage(copyRequest(inputs), { onProgress: deps.onProgress ?? lineProgress(log), signal });
  log(
    `${result.tagRef}: ${result.digest} (${result.blobsCopied} blobs copied, ${result.blobsMounted} mounted, ${result.blobsSkipped} already there` +
      `${result.signaturesCopied ? `, ${result.signaturesCopied} signatures` : ""})`,
  );
  return outputsOf(inputs, result);
}

export function outputsOf(inputs: MirrorInputs, r: CopyResult): MirrorOutputs {
  return compact({
    ...inputs,
    platformFilter: inputs.platforms,
    digest: r.digest,
    pinnedRef: r.pinnedRef,
    tagRef: r.tagRef,
    mediaType: r.mediaType,
    platforms: r.platforms,
    platformsFiltered: r.platformsFiltered,
    totalSize: r.totalSize,
    blobsCopied: r.blobsCopied,
    blobsMounted: r.blobsMounted,
    blobsSkipped: r.blobsSkipped,
    signaturesCopied: r.signaturesCopied,
    sourceDigest: r.sourceDigest,
    sourceRef: r.sourceRef,
    targetRef: r.targetRef,
    targetDigest: r.digest,
  });
}

export async function readMirror(id: string, props?: MirrorOutputs): Promise<{ id: string; props: MirrorOutputs }> {
  if (!props?.tagRef) {
    throw new ImageyardError(
      "UNSUPPORTED",
      `read ${id}: importing a MirroredImage is not supported (pulumi import of dynamic resources is broken upstream). Declare the resource instead: an unchanged mirror is adopted by a no-op copy.`,
    );
  }
  const info = await inspectImage(props.tagRef, registryOptions(props.targetAuth, props.targetTls, "target", props.rateLimitWait));
  return { id, props: { ...props, targetDigest: info?.digest ?? "" } };
}

export async function deleteMirror(id: string, props: MirrorOutputs, deps: MirrorDeps = {}): Promise<void> {
  const log = deps.log ?? ((line: string) => console.log(line));
  const signal = AbortSignal.timeout(timeoutMs(props.timeouts, "delete", DEFAULT_DELETE_TIMEOUT_S));
  const outcome = await removeImage(props.tagRef ?? id, props.digest, {
    ...registryOptions(props.targetAuth, props.targetTls, "target", props.rateLimitWait),
    signal,
  });
  if (outcome.note) log(`${props.tagRef ?? id}: ${outcome.note}`);
}

/** The dynamic provider's view of this module (provider/resources/forward.ts). */
export const lifecycle: Lifecycle<MirrorInputs, MirrorOutputs> = {
  check: (olds, news) => checkMirror(olds, news),
  diff: (_id, olds, news) => diffMirror(olds, news),
  create: (inputs, ctx) => createMirror(inputs, depsOf(ctx)),
  update: (_id, olds, news, ctx) => updateMirror(olds, news, depsOf(ctx)),
  read: (id, props) => readMirror(id, props),
  delete: (id, props, ctx) => deleteMirror(id, props, depsOf(ctx)),
};

/** Progress lines are live-only; the summary and notes stay. */
function depsOf(ctx: OperationContext | undefined): MirrorDeps {
  return ctx ? { log: ctx.log, onProgress: lineProgress(ctx.progress) } : {};
}
