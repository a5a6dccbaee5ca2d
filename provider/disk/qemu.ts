// Disk formats and qemu-img. The format is learnt from magic bytes, never from the file name,
// and then always passed to qemu-img with -f, so qemu-img never probes. Images that would make
// qemu-img (or later a hypervisor) read other files of this host — a backing file, an external
// data file, a VMDK with separate extents — are refused before any conversion.
import { execFile, spawn } from "node:child_process";
import { DiskImageError, tailText } from "./errors";

/** Glance's names for the disk formats we can read or write. */
export type DiskFormat = "raw" | "qcow2" | "vmdk" | "vdi" | "vhd" | "vhdx" | "iso";
export const DISK_FORMATS: readonly DiskFormat[] = ["raw", "qcow2", "vmdk", "vdi", "vhd", "vhdx", "iso"];

/** qemu-img's driver name for a Glance disk format (an ISO is read as raw bytes). */
export function qemuFormat(f: DiskFormat): string {
  return f === "vhd" ? "vpc" : f === "iso" ? "raw" : f;
}

/** Bytes of the head needed to recognise every format (ISO 9660 sits at 0x8001). */
export const FORMAT_PROBE_BYTES = 0x9006;

export interface FormatProbe {
  format: DiskFormat;
  /** Why the image cannot be used as it is, found in the header alone. */
  unsafe?: string;
  unsupported?: string;
  /** From the header, when the format states it (qcow2). */
  virtualSize?: number;
}

/** Recognises the format from the first bytes, the way qemu's own probes do, without trusting names. */
export function detectFormat(head: Buffer): FormatProbe {
  const ascii = (off: number, len: number) => (head.length >= off + len ? head.subarray(off, off + len).toString("latin1") : "");
  if (head.length >= 4 && head.readUInt32BE(0) === 0x514649fb) return probeQcow2(head);
  if (ascii(0, 4) === "KDMV") return { format: "vmdk" };
  if (ascii(0, 21) === "# Disk DescriptorFile") {
    return { format: "vmdk", unsafe: "it is a VMDK descriptor whose data lives in separate extent files" };
  }
  if (ascii(0, 8) === "vhdxfile") return { format: "vhdx" };
  if (ascii(0, 8) === "conectix") return { format: "vhd" };
  if (head.length >= 0x44 && head.readUInt32LE(0x40) === 0xbeda107f) return { format: "vdi" };
  if (ascii(0, 6) === "LUKS\xba\xbe") return { format: "raw", unsupported: "it is a LUKS-encrypted volume" };
  for (const off of [0x8001, 0x8801, 0x9001]) if (ascii(off, 5) === "CD001") return { format: "iso" };
  return { format: "raw" };
}

const QCOW2_INCOMPAT_DATA_FILE = 1n << 2n;
const QCOW2_EXT_DATA_FILE = 0x44415441;

function probeQcow2(head: Buffer): FormatProbe {
  if (head.length < 72) return { format: "qcow2", unsupported: "the qcow2 header is truncated" };
  const version = head.readUInt32BE(4);
  if (version < 2) return { format: "qcow2", unsupported: `it is qcow version ${version}, not qcow2` };
  const probe: FormatProbe = { format: "qcow2", virtualSize: Number(head.readBigUInt64BE(24)) };
  if (head.readBigUInt64BE(8) !== 0n) probe.unsafe = "it has a backing file";
  if (head.readUInt32BE(32) !== 0) probe.unsupported = "it is encrypted";
  if (version >= 3 && head.length >= 104) {
    if ((head.readBigUInt64BE(72) & QCOW2_INCOMPAT_DATA_FILE) !== 0n) probe.unsafe = "it has an external data file";
    // Header extensions follow the header; a data-file name extension alone is enough to refuse.
    let off = head.readUInt32BE(100);
    while (off + 8 <= head.length && off < 65536) {
      const type = head.readUInt32BE(off);
      const len = head.readUInt32BE(off + 4);
      if (type === 0) break;
      if (type === QCOW2_EXT_DATA_FILE) probe.unsafe = "it has an external data file";
      off += 8 + Math.ceil(len / 8) * 8;
    }
  }
  return probe;
}

export interface QemuImageInfo {
  format: string;
  "virtual-size": number;
  "actual-size"?: number;
  "backing-filename"?: string;
  "full-backing-filename"?: string;
  encrypted?: boolean;
  "dirty-flag"?: boolean;
  "format-specific"?: { type?: string; data?: Record<string, unknown> };
}

export interface QemuOptions {
  signal?: AbortSignal;
  /** For messages: "download https://host/x.qcow2". */
  what: string;
  timeoutMs?: number;
}

export function infoArgv(file: string, format: DiskFormat): string[] {
  return ["info", "--output=json", "-f", qemuFormat(format), safePath(file)];
}

export function checkArgv(file: string, format: DiskFormat): string[] {
  return ["check", "--output=json", "-f", qemuFormat(format), safePath(file)];
}

export function measureArgv(file: string, format: DiskFormat, target: DiskFormat): string[] {
  return ["measure", "--output=json", "-f", qemuFormat(format), "-O", qemuFormat(target), safePath(file)];
}

export interface ConvertRequest {
  source: string;
  sourceFormat: DiskFormat;
  target: string;
  targetFormat: DiskFormat;
  /** `-o` creation options, e.g. { compat: "1.1" } or { subformat: "streamOptimized" }. */
  options?: Record<string, string>;
}

export function convertArgv(req: ConvertRequest): string[] {
  const argv = ["convert", "-p", "-f", qemuFormat(req.sourceFormat), "-O", qemuFormat(req.targetFormat)];
  const opts = Object.entries(req.options ?? {});
  for (const [k, v] of opts) {
    if (!/^[a-z_0-9-]+$/i.test(k) || /[,\s]/.test(v))
      throw new DiskImageError("INVALID_INPUT", `convert option ${k}=${v}: not a plain qemu-img -o option`);
  }
  if (opts.length > 0) argv.push("-o", opts.map(([k, v]) => `${k}=${v}`).join(","));
  // Out-of-order writes let qemu-img keep several requests in flight; safe for any target we
  // create fresh, and the output is only read once qemu-img has exited.
  argv.push("-W", safePath(req.source), safePath(req.target));
  return argv;
}

/**
 * qemu-img reads "proto:..." and "json:{...}" names as protocols; only absolute paths of our own
 * scratch files are ever passed, and this makes sure of it.
 */
export function safePath(p: string): string {
  if (!p.startsWith("/") || p.includes(":"))
    throw new DiskImageError("INVALID_INPUT", `qemu-img path ${p}: only absolute scratch paths without ':' are passed to qemu-img`);
  return p;
}

interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

function runQemuImg(argv: string[], opts: QemuOptions): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    execFile(
      "qemu-img",
      argv,
      { signal: opts.signal, timeout: opts.timeoutMs ?? 120_000, maxBuffer: 16 * 1024 * 1024, encoding: "utf8" },
      (err, stdout, stderr) => {
        if (err && typeof (err as { code?: unknown }).code !== "number") {
          const e = err as NodeJS.ErrnoException & { killed?: boolean };
          if (e.name === "AbortError")
            return reject(new DiskImageError("CANCELLED", `${opts.what}: qemu-img ${argv[0]} cancelled`, { cause: err }));
          if (e.code === "ENOENT")
            return reject(
              new DiskImageError("UNSUPPORTED", `${opts.what}: qemu-img is not installed. Install qemu-utils.`, { cause: err }),
            );
          return reject(
            new DiskImageError(
              "QEMU_FAILED",
              `${opts.what}: qemu-img ${argv[0]} did not finish (${e.killed ? "timed out" : e.message}). The image may be malformed.`,
              { cause: err },
            ),
          );
        }
        resolve({ code: err ? (err as { code: number }).code : 0, stdout, stderr });
      },
    );
  });
}

function qemuFailed(opts: QemuOptions, step: string, r: RunResult, hint: string): DiskImageError {
  return new DiskImageError(
    "QEMU_FAILED",
    `${opts.what}: qemu-img ${step} failed (exit ${r.code}): ${tailText(r.stderr || r.stdout) || "no message"}. ${hint}`,
  );
}

export async function imageInfo(file: string, format: DiskFormat, opts: QemuOptions): Promise<QemuImageInfo> {
  const r = await runQemuImg(infoArgv(file, format), { ...opts, timeoutMs: opts.timeoutMs ?? 60_000 });
  if (r.code !== 0) throw qemuFailed(opts, "info", r, `The file is not a readable ${format} image; check source.url and source.format`);
  try {
    return JSON.parse(r.stdout) as QemuImageInfo;
  } catch (e) {
    throw new DiskImageError("QEMU_FAILED", `${opts.what}: qemu-img info printed no JSON`, { cause: e });
  }
}

/** Refuses images that reference host files or that we cannot publish as they are. */
export function assertSafeImage(info: QemuImageInfo, format: DiskFormat, what: string): void {
  const unsafe = (why: string) =>
    new DiskImageError(
      "UNSAFE_IMAGE",
      `${what}: refused: ${why}, which would make qemu-img read files of this host. Flatten the image first (qemu-img convert to a standalone ${format}) or use another source.`,
    );
  const backing = info["backing-filename"] ?? info["full-backing-filename"];
  if (backing !== undefined) throw unsafe(`the image has a backing file (${backing})`);
  const data = info["format-specific"]?.data ?? {};
  if (data["data-file"] !== undefined) throw unsafe(`the image has an external data file (${String(data["data-file"])})`);
  if (format === "vmdk") {
    const createType = String(data["create-type"] ?? "");
    if (!["monolithicSparse", "streamOptimized"].includes(createType))
      throw unsafe(`the VMDK create type is "${createType}" (only monolithicSparse and streamOptimized are self-contained)`);
    const extents = (data.extents as Array<{ filename?: string }> | undefined) ?? [];
    if (extents.length > 1) throw unsafe(`the VMDK has ${extents.length} extents`);
  }
  if (info.encrypted) throw new DiskImageError("UNSUPPORTED", `${what}: the image is encrypted. Publish an unencrypted image.`);
  if (data.corrupt === true)
    throw new DiskImageError("QEMU_FAILED", `${what}: qemu-img reports the ${format} image as corrupt. Check source.url.`);
  if (info.format !== qemuFormat(format))
    throw new DiskImageError("QEMU_FAILED", `${what}: qemu-img read the image as ${info.format}, expected ${qemuFormat(format)}`);
}

export interface CheckResult {
  "check-errors"?: number;
  corruptions?: number;
  "compressed-clusters"?: number;
  "allocated-clusters"?: number;
}

/** Metadata consistency check (qcow2, vdi, vhdx); leaks are harmless, corruption is not. */
export async function checkImage(file: string, format: DiskFormat, opts: QemuOptions): Promise<CheckResult> {
  if (!["qcow2", "vdi", "vhdx"].includes(format)) return {};
  const r = await runQemuImg(checkArgv(file, format), opts);
  let result: CheckResult | undefined;
  try {
    result = JSON.parse(r.stdout) as CheckResult;
  } catch {
    /* no JSON when qemu-img could not open the file at all */
  }
  // 0 clean, 3 leaked clusters only, 63 check not supported; 1 and 2 mean it cannot be read safely.
  if (r.code === 0 || r.code === 3 || r.code === 63) return result ?? {};
  const summary = result ? `${result.corruptions ?? 0} corruptions, ${result["check-errors"] ?? 0} check errors; ` : "";
  const first = r.stderr.trim().split("\n")[0] ?? "";
  throw new DiskImageError(
    "QEMU_FAILED",
    `${opts.what}: qemu-img check failed (exit ${r.code}): ${summary}${tailText(first, 300) || "no message"}. The image is corrupt or truncated; check source.url and its checksum.`,
  );
}

export interface MeasureResult {
  required: number;
  "fully-allocated": number;
}

export async function measureImage(file: string, format: DiskFormat, target: DiskFormat, opts: QemuOptions): Promise<MeasureResult> {
  const r = await runQemuImg(measureArgv(file, format, target), opts);
  if (r.code !== 0) throw qemuFailed(opts, "measure", r, "The image cannot be measured; check source.format");
  return JSON.parse(r.stdout) as MeasureResult;
}

/**
 * Bytes a converted file will really occupy. qemu-img writes raw output sparse, so a raw target
 * needs its allocated data, which is what a qcow2 measurement reports (`measure -O raw` would
 * answer the full virtual size); vmdk, vdi, vhd and vhdx cannot be measured, and their sparse
 * subformats hold about what a qcow2 holds.
 */
export async function estimateAllocated(file: string, format: DiskFormat, _target: DiskFormat, opts: QemuOptions): Promise<number> {
  const m = await measureImage(file, format, "qcow2", opts);
  return m.required;
}

/** Percentages from `qemu-img convert -p` ("    (42.00/100%)\r"). */
export function parseConvertProgress(text: string): number[] {
  return [...text.matchAll(/\((\d+(?:\.\d+)?)\/100%\)/g)].map((m) => Number(m[1]));
}

export async function convertImage(req: ConvertRequest, opts: QemuOptions & { onPercent?: (pct: number) => void }): Promise<void> {
  const argv = convertArgv(req);
  await new Promise<void>((resolve, reject) => {
    const child = spawn("qemu-img", argv, { stdio: ["ignore", "pipe", "pipe"], signal: opts.signal });
    let stderr = "";
    child.stdout.setEncoding("utf8");
    child.stdout.on("data", (d: string) => {
      for (const pct of parseConvertProgress(d)) opts.onPercent?.(pct);
    });
    child.stderr.setEncoding("utf8");
    child.stderr.on("data", (d: string) => {
      if (stderr.length < 16384) stderr += d;
    });
    child.on("error", (e) => {
      if (e.name === "AbortError") reject(new DiskImageError("CANCELLED", `${opts.what}: conversion cancelled`, { cause: e }));
      else
        reject(
          new DiskImageError(
            "UNSUPPORTED",
            `${opts.what}: cannot run qemu-img (${(e as NodeJS.ErrnoException).code ?? e.message}). Install qemu-utils.`,
            { cause: e },
          ),
        );
    });
    child.on("close", (code, signal) => {
      if (code === 0) return resolve();
      if (opts.signal?.aborted) return; // the 'error' handler reported the cancellation
      const noSpace = /No space left on device/i.test(stderr);
      reject(
        new DiskImageError(
          noSpace ? "NO_SPACE" : "QEMU_FAILED",
          `${opts.what}: qemu-img convert -f ${qemuFormat(req.sourceFormat)} -O ${qemuFormat(req.targetFormat)} failed (${code === null ? `signal ${signal}` : `exit ${code}`}): ${tailText(stderr) || "no message"}. ${noSpace ? "Free space in the scratch directory or set scratchDir." : "The image may be corrupt; check source.url and source.format."}`,
        ),
      );
    });
  });
}
