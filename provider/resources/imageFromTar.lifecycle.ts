// The ImageFromTar lifecycle as plain functions over the build engine (provider/oci/build). check
// hashes the layer (streaming, nothing stored) so a changed tar shows in preview as an update with
// the new digest; create/update push it; read looks at the target; delete removes what was made.
import { lineProgress } from "../http/progress";
import { ImageyardError } from "../http/errors";
import { buildImage, planBuild, type BuildRequest, type BuildResult } from "../oci/build";
import { inspectImage, removeImage } from "../oci/copy";
import { parseLocation } from "../oci/location";
import { parsePlatform } from "../oci/manifest";
import { changedKeys, compact, diffResult, isUnknown, providerChanged, type CheckFailure, type DiffResult } from "./diff";
import type { Lifecycle, OperationContext } from "./forward";
import { registryOptions, type AuthInput, type TlsInput } from "./mirroredImage.lifecycle";
import { checkTimeouts, timeoutMs, type Timeouts } from "./timeouts";

export interface ImageFromTarInputs {
  source: string;
  target: string;
  entrypoint?: string[];
  cmd?: string[];
  env?: Record<string, string>;
  workingDir?: string;
  user?: string;
  labels?: Record<string, string>;
  exposedPorts?: string[];
  platform?: string;
  /** "0:0" style owner for every entry, or "keep". Default "0:0". */
  chown?: string;
  mtime?: number;
  compression?: "gzip" | "none";
  targetAuth?: AuthInput;
  targetTls?: TlsInput;
  timeouts?: Timeouts;
  /** Set by check: the image digest the input builds to. */
  digest?: string;
}

export interface ImageFromTarOutputs extends ImageFromTarInputs {
  digest: string;
  pinnedRef: string;
  tagRef: string;
  configDigest: string;
  layerDigest: string;
  diffId: string;
  layerSize: number;
  /** What the target pointed at when last observed ("" when missing). */
  targetDigest: string;
  [key: string]: unknown;
}

const DEFAULT_TIMEOUT_S = 3600;

export function buildRequest(i: ImageFromTarInputs): BuildRequest {
  const req: BuildRequest = { source: i.source, target: i.target, targetOptions: registryOptions(i.targetAuth, i.targetTls, "target") };
  for (const k of [
    "entrypoint",
    "cmd",
    "env",
    "workingDir",
    "user",
    "labels",
    "exposedPorts",
    "platform",
    "mtime",
    "compression",
  ] as const) {
    if (i[k] !== undefined) (req as unknown as Record<string, unknown>)[k] = i[k];
  }
  if (i.chown === "keep") req.owner = null;
  else if (i.chown !== undefined) {
    const [uid, gid] = i.chown.split(":").map(Number);
    req.owner = { uid: uid!, gid: gid ?? uid! };
  }
  return req;
}

export function validateImageFromTar(n: Partial<ImageFromTarInputs>): CheckFailure[] {
  const failures: CheckFailure[] = [];
  const fail = (property: string, reason: string) => failures.push({ property, reason });
  if (typeof n.source !== "string" || n.source === "")
    fail("source", 'source is required: a tar file or a directory, e.g. "./image/ovl.tar"');
  if (typeof n.target !== "string" || n.target === "")
    fail("target", 'target is required, e.g. "127.0.0.1:5000/library/metallb:latest" or "oci-archive:/tmp/metallb.tar:latest"');
  else if (!isUnknown(n.target)) {
    try {
      const loc = parseLocation(n.target);
      if ((loc.kind === "registry" && loc.ref.digest) || (loc.kind !== "registry" && loc.digest))
        fail("target", "target names a digest; give repository:tag (the build decides the digest)");
    } catch (e) {
      fail("target", (e as Error).message);
    }
  }
  for (const k of ["entrypoint", "cmd", "exposedPorts"] as const) {
    const v = n[k];
    if (v !== undefined && !isUnknown(v) && (!Array.isArray(v) || v.some((x) => typeof x !== "string")))
      fail(k, `${k} must be a list of strings, e.g. ["/bin/controller"]`);
  }
  for (const k of ["env", "labels"] as const) {
    const v = n[k];
    if (
      v !== undefined &&
      !isUnknown(v) &&
      (typeof v !== "object" || v === null || Array.isArray(v) || Object.values(v).some((x) => typeof x !== "string"))
    )
      fail(k, `${k} must map names to strings, e.g. { LOG_LEVEL: "debug" }`);
  }
  (n.exposedPorts ?? []).forEach((p, i) => {
    if (typeof p === "string" && !/^\d{1,5}(\/(tcp|udp|sctp))?$/.test(p))
      fail(`exposedPorts[${i}]`, `"${p}" is not a port; write "8080" or "53/udp"`);
  });
  if (n.platform !== undefined && !isUnknown(n.platform)) {
    try {
      parsePlatform(n.platform);
    } catch {
      fail("platform", `"${n.platform}" is not a platform; use os/arch[/variant], e.g. "linux/arm64"`);
    }
  }
  if (n.chown !== undefined && !isUnknown(n.chown) && !(n.chown === "keep" || /^\d+(:\d+)?$/.test(n.chown)))
    fail("chown", `chown is "uid:gid" (numbers, e.g. "0:0") or "keep"`);
  if (n.mtime !== undefined && !isUnknown(n.mtime) && !(Number.isInteger(n.mtime) && n.mtime >= 0))
    fail("mtime", "mtime is seconds since the epoch (an integer ≥ 0), e.g. 0 or 1700000000");
  if (n.compression !== undefined && !isUnknown(n.compression) && n.compression !== "gzip" && n.compression !== "none")
    fail("compression", 'compression is "gzip" or "none"');
  failures.push(...checkTimeouts(n.timeouts));
  return failures;
}

export async function checkImageFromTar(
  _olds: Partial<ImageFromTarInputs>,
  news: ImageFromTarInputs,
): Promise<{ inputs: ImageFromTarInputs; failures: CheckFailure[] }> {
  const inputs: ImageFromTarInputs = { ...news };
  delete inputs.digest;
  const failures = validateImageFromTar(news);
  const unknown = Object.values(news).some(isUnknown);
  if (failures.length > 0 || unknown) return { inputs, failures };
  try {
    inputs.digest = (await planBuild(buildRequest(inputs))).digest;
  } catch (e) {
    return { inputs, failures: [{ property: "source", reason: (e as Error).message }] };
  }
  return { inputs, failures };
}

const UPDATE_KEYS = [
  "source",
  "digest",
  "entrypoint",
  "cmd",
  "env",
  "workingDir",
  "user",
  "labels",
  "exposedPorts",
  "platform",
  "chown",
  "mtime",
  "compression",
  "targetAuth",
  "targetTls",
  "timeouts",
] as const;

export function diffImageFromTar(olds: ImageFromTarOutputs, news: ImageFromTarInputs): DiffResult {
  const replaces = isUnknown(news.target) || olds.target !== news.target ? ["target"] : [];
  const updates = changedKeys<ImageFromTarInputs>(olds, news, UPDATE_KEYS);
  if (olds.targetDigest !== undefined && olds.targetDigest !== olds.digest) updates.push("targetDigest");
  if (providerChanged(olds, news as unknown as Record<string, unknown>)) updates.push("__provider");
  return diffResult(updates, replaces);
}

async function build(inputs: ImageFromTarInputs, op: "create" | "update", ctx?: OperationContext): Promise<ImageFromTarOutputs> {
  const signal = AbortSignal.timeout(timeoutMs(inputs.timeouts, op, DEFAULT_TIMEOUT_S));
  const r: BuildResult = await buildImage(buildRequest(inputs), { signal, ...(ctx ? { onProgress: lineProgress(ctx.progress) } : {}) });
  if (inputs.digest && r.digest !== inputs.digest) {
    throw new ImageyardError(
      "DIGEST_MISMATCH",
      `build ${inputs.target}: ${inputs.source} now builds to ${r.digest}, the preview saw ${inputs.digest} (DIGEST_MISMATCH). The input changed during the run; run up again.`,
    );
  }
  (ctx?.log ?? console.log)(`${r.tagRef}: ${r.digest}${r.upToDate ? " (already there)" : ` (layer ${r.layerSize} bytes)`}`);
  return compact({
    ...inputs,
    digest: r.digest,
    pinnedRef: r.pinnedRef,
    tagRef: r.tagRef,
    configDigest: r.configDigest,
    layerDigest: r.layerDigest,
    diffId: r.diffId,
    layerSize: r.layerSize,
    targetDigest: r.digest,
  });
}

export const lifecycle: Lifecycle<ImageFromTarInputs, ImageFromTarOutputs> = {
  check: (olds, news) => checkImageFromTar(olds, news),
  diff: (_id, olds, news) => diffImageFromTar(olds, news),
  create: async (inputs, ctx) => {
    const outs = await build(inputs, "create", ctx);
    return { id: outs.tagRef, outs };
  },
  update: (_id, _olds, news, ctx) => build(news, "update", ctx),
  read: async (id, props) => {
    if (!props?.tagRef)
      throw new ImageyardError("UNSUPPORTED", `read ${id}: importing an ImageFromTar is not supported. Declare the resource instead.`);
    const info = await inspectImage(props.tagRef, registryOptions(props.targetAuth, props.targetTls, "target"));
    return { id, props: { ...props, targetDigest: info?.digest ?? "" } };
  },
  delete: async (id, props, ctx) => {
    const signal = AbortSignal.timeout(timeoutMs(props.timeouts, "delete", 300));
    const r = await removeImage(props.tagRef ?? id, props.digest, {
      ...registryOptions(props.targetAuth, props.targetTls, "target"),
      signal,
    });
    if (r.note) (ctx?.log ?? console.log)(`${props.tagRef ?? id}: ${r.note}`);
  },
};
