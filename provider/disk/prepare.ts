// Turns a source (URL + checksum + format/compression hints) into exactly the bytes to upload
// in the target disk format, verifying on the way. One pass over the network: the download is
// hashed, decompressed and written to scratch as it arrives; nothing is written twice.
//
//   same format        → the scratch file itself (hashed while it was written)
//   anything → raw     → qemu-nbd serves the raw view of the scratch file (no raw file at all)
//   anything else      → qemu-img convert into scratch, source deleted, result hashed once
import { createReadStream, createWriteStream } from "node:fs";
import { stat, unlink } from "node:fs/promises";
import { Readable, Transform, type TransformCallback } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { Dispatcher } from "undici";
import { ImageyardError } from "../http/errors";
import type { ProgressSink } from "../http/progress";
import type { RetryPolicy } from "../http/retry";
import { fileNameOf, formatChecksum, MultiHash, parseChecksum, parseSums, pickSumsEntry, VerifyingStream, type Checksum, type HashAlgo } from "./checksum";
import { chooseCompression, COMPRESSION_MAGIC_BYTES, COMPRESSIONS, createDecompressor, type Compression, type CompressionOption } from "./decompress";
import { DiskImageError, downloadTarget } from "./errors";
import { capError, fetchText, openDownload, parseSourceUrl } from "./fetch";
import { openRawStream } from "./nbd";
import { assertSafeImage, checkImage, convertImage, detectFormat, DISK_FORMATS, estimateAllocated, FORMAT_PROBE_BYTES, imageInfo, type DiskFormat, type FormatProbe } from "./qemu";
import { defaultScratchBase, Scratch, type StatFs } from "./scratch";

export interface ImageSource {
  /** http(s):// or file:// URL of the image (possibly compressed). */
  url: string;
  /** `sha256:…`, `sha512:…`, `md5:…` or bare hex, of the file at `url` as downloaded. */
  checksum?: string;
  /** A SUMS file listing the file at `url` (GNU, BSD or Fedora CHECKSUM style). */
  checksumUrl?: string;
  /** What the user says the (decompressed) image is; checked against its magic bytes. */
  format?: DiskFormat;
  compression?: CompressionOption;
}

export interface PrepareOptions {
  /** The format Glance should receive. */
  diskFormat: DiskFormat;
  /** Base directory for scratch files (default os.tmpdir()/imageyard). */
  scratchDir?: string;
  /** Cap on downloaded bytes and on decompressed bytes. */
  maxBytes?: number;
  onProgress?: ProgressSink;
  signal?: AbortSignal;
  dispatcher?: Dispatcher;
  retry?: RetryPolicy;
  /** Fail when neither checksum nor checksumUrl is given. */
  requireChecksum?: boolean;
  /** How to produce raw from another format: stream it through qemu-nbd (default), or convert to a file. */
  rawVia?: "nbd" | "convert";
  /** qemu-img -o options for conversions (e.g. { compat: "1.1" }). */
  convertOptions?: Record<string, string>;
  /** For tests: a statfs replacement. */
  statFs?: StatFs;
}

export interface ImageDigests {
  size: number;
  md5: string;
  sha256: string;
  sha512: string;
}

export interface PreparedImage {
  diskFormat: DiskFormat;
  sourceFormat: DiskFormat;
  /** Decompression applied to the download, if any. */
  compression: Compression | undefined;
  /** Exact number of bytes open() yields. */
  size: number;
  virtualSize: number;
  /** The download's checksum: the one given (verified) or, without one, its sha256 (unverified). */
  sourceChecksum: Checksum & { verified: boolean };
  converted: boolean;
  /** "file": open() reads a scratch file; "nbd": open() streams the raw view through qemu-nbd. */
  mode: "file" | "nbd";
  /** Digests of the bytes open() yields, when known before reading (mode "file"). */
  sha512: string | undefined;
  md5: string | undefined;
  sha256: string | undefined;
  /** Digests of the bytes open() yields; in mode "nbd" it settles when one open() stream has been read to the end. */
  digests(): Promise<ImageDigests>;
  /** A fresh stream of exactly the bytes to upload; may be called again (e.g. for a retried upload). */
  open(): Readable;
  scratch: { dir: string; peakBytes: number };
  cleanup(): Promise<void>;
}

const FINAL_ALGOS: readonly HashAlgo[] = ["md5", "sha256", "sha512"];

/** Problems with a source, as sentences naming the property (for a provider's check()). */
export function checkImageSource(source: ImageSource, diskFormat?: string): string[] {
  const problems: string[] = [];
  const tryIt = (f: () => unknown) => {
    try {
      f();
    } catch (e) {
      problems.push((e as Error).message);
    }
  };
  if (typeof source?.url !== "string" || source.url === "") problems.push('source.url is required, e.g. "https://cloud.debian.org/images/cloud/bookworm/latest/debian-12-generic-amd64.qcow2".');
  else tryIt(() => parseSourceUrl(source.url));
  if (source?.checksum !== undefined) tryIt(() => parseChecksum(source.checksum as string));
  if (source?.checksumUrl !== undefined) tryIt(() => parseSourceUrl(source.checksumUrl as string, "source.checksumUrl"));
  if (source?.checksum !== undefined && source?.checksumUrl !== undefined) problems.push("source.checksum and source.checksumUrl are both set; give one of them.");
  if (source?.format !== undefined && !DISK_FORMATS.includes(source.format)) problems.push(`source.format "${source.format}" is not one of ${DISK_FORMATS.join(", ")}.`);
  if (source?.compression !== undefined && !COMPRESSIONS.includes(source.compression)) problems.push(`source.compression "${source.compression}" is not one of ${COMPRESSIONS.join(", ")}.`);
  if (diskFormat !== undefined && !DISK_FORMATS.includes(diskFormat as DiskFormat)) problems.push(`diskFormat "${diskFormat}" is not one of ${DISK_FORMATS.join(", ")}.`);
  return problems;
}

/** The checksum the download must have: inline, or the strongest SUMS entry for the URL's file name. */
export async function resolveChecksum(source: ImageSource, opts: Pick<PrepareOptions, "dispatcher" | "signal" | "retry"> = {}): Promise<Checksum | undefined> {
  if (source.checksum !== undefined) return parseChecksum(source.checksum);
  if (source.checksumUrl === undefined) return undefined;
  const what = `read checksums ${source.checksumUrl}`;
  const text = await fetchText(source.checksumUrl, { ...opts, what });
  const { algo, value } = pickSumsEntry(parseSums(text), fileNameOf(source.url), what);
  return { algo, value };
}

export async function prepareImage(source: ImageSource, opts: PrepareOptions): Promise<PreparedImage> {
  const problems = checkImageSource(source, opts.diskFormat);
  if (problems.length > 0) throw new DiskImageError("INVALID_INPUT", problems.join(" "));
  if (opts.requireChecksum && source.checksum === undefined && source.checksumUrl === undefined) {
    throw new DiskImageError("INVALID_INPUT", "source.checksum or source.checksumUrl is required (requireChecksum is set), e.g. checksum: \"sha256:94e1…\".");
  }
  const what = downloadTarget(source.url);
  const expected = await resolveChecksum(source, opts);
  const scratch = await Scratch.create(opts.scratchDir ?? defaultScratchBase(), opts.statFs);
  try {
    return await prepareInto(scratch, source, expected, what, opts);
  } catch (e) {
    await scratch.remove();
    throw e;
  }
}

async function prepareInto(scratch: Scratch, source: ImageSource, expected: Checksum | undefined, what: string, opts: PrepareOptions): Promise<PreparedImage> {
  const progress = opts.onProgress;
  const dl = await openDownload(source.url, { dispatcher: opts.dispatcher, signal: opts.signal, onProgress: progress, maxBytes: opts.maxBytes, retry: opts.retry });
  const { head, stream: body } = await peek(dl.stream, COMPRESSION_MAGIC_BYTES);
  const compression = chooseCompression(source.compression ?? "auto", head, what);
  // Compressed data expands to an unknown size; the check covers the download itself, and a
  // full disk later still fails cleanly (NO_SPACE) with the scratch removed.
  await scratch.ensureSpace(dl.total ?? 0, what, "the download");

  const verifier = new VerifyingStream({ expected, algos: ["sha256"], what });
  const sniffer = new FormatSniffer(FORMAT_PROBE_BYTES, opts.maxBytes, what, (probe) => {
    checkProbe(probe, source.format, what);
    return sameBytes(probe.format, opts.diskFormat) ? FINAL_ALGOS : [];
  });
  const file = scratch.path(`source.${compression ? "decompressed" : "img"}`);
  const stages: NodeJS.ReadWriteStream[] = [verifier];
  if (compression) stages.push(createDecompressor(compression, what));
  stages.push(sniffer);
  try {
    await pipeline([body, ...stages, createWriteStream(file)], { signal: opts.signal });
  } catch (e) {
    throw writeError(e, what, scratch.dir);
  }
  await scratch.sample();
  const downloaded = verifier.digests;
  const sourceChecksum = expected ? { ...expected, verified: true } : { algo: "sha256" as const, value: downloaded.sha256 as string, verified: false };
  progress?.({ phase: "verify", item: fileNameOf(source.url), done: true, message: expected ? `${formatChecksum(expected).slice(0, 19)}… ok` : "no checksum given; computed sha256" });

  const probe = sniffer.probe as FormatProbe;
  const sourceFormat = probe.format;
  const qopts = { what, signal: opts.signal };
  const info = await imageInfo(file, sourceFormat, qopts);
  assertSafeImage(info, sourceFormat, what);
  await checkImage(file, sourceFormat, qopts);
  const virtualSize = info["virtual-size"];
  const common = { diskFormat: opts.diskFormat, sourceFormat, compression, virtualSize, sourceChecksum };
  const cleanup = () => scratch.remove();
  const scratchInfo = () => ({ dir: scratch.dir, peakBytes: scratch.peak });

  if (sameBytes(sourceFormat, opts.diskFormat)) {
    const d = sniffer.finalDigests();
    return fileResult(common, file, { size: sniffer.bytes, ...d }, false, scratchInfo, cleanup);
  }

  if (opts.diskFormat === "raw" && (opts.rawVia ?? "nbd") === "nbd") {
    let settled: ImageDigests | undefined;
    let resolveDigests!: (d: ImageDigests) => void;
    const digestsReady = new Promise<ImageDigests>((r) => (resolveDigests = r));
    return {
      ...common,
      size: virtualSize,
      converted: true,
      mode: "nbd",
      sha512: undefined,
      md5: undefined,
      sha256: undefined,
      digests: () => digestsReady,
      open: () => {
        const raw = openRawStream(file, sourceFormat, virtualSize, { what, socketDir: scratch.dir, signal: opts.signal });
        const hasher = new HashingPassThrough(FINAL_ALGOS, (d, bytes) => {
          if (settled || bytes !== virtualSize) return;
          settled = { size: bytes, ...(d as Omit<ImageDigests, "size">) };
          resolveDigests(settled);
        });
        raw.on("error", (e) => hasher.destroy(e));
        return raw.pipe(hasher);
      },
      get scratch() {
        return scratchInfo();
      },
      cleanup,
    };
  }

  const target = scratch.path(`converted.${opts.diskFormat}`);
  await scratch.ensureSpace(await estimateAllocated(file, sourceFormat, opts.diskFormat, qopts), what, `the conversion to ${opts.diskFormat}`);
  const stopTracking = scratch.track();
  try {
    await convertImage(
      { source: file, sourceFormat, target, targetFormat: opts.diskFormat, options: opts.convertOptions },
      { ...qopts, onPercent: (pct) => progress?.({ phase: "convert", item: fileNameOf(source.url), bytes: Math.round((pct / 100) * virtualSize), total: virtualSize, done: pct >= 100 }) },
    );
  } finally {
    await stopTracking();
  }
  // The source is no longer needed; free its space before anything reads the result.
  await unlink(file);
  const hash = new MultiHash(FINAL_ALGOS);
  for await (const chunk of createReadStream(target, { highWaterMark: 1 << 20, signal: opts.signal })) hash.update(chunk as Buffer);
  const d = hash.digest() as Omit<ImageDigests, "size">;
  const size = (await stat(target)).size;
  if (hash.bytes !== size) throw new DiskImageError("SIZE_MISMATCH", `${what}: hashed ${hash.bytes} bytes of the converted image but it has ${size}`);
  return fileResult(common, target, { size, ...d }, true, scratchInfo, cleanup);
}

type CommonFields = Pick<PreparedImage, "diskFormat" | "sourceFormat" | "compression" | "virtualSize" | "sourceChecksum">;

function fileResult(common: CommonFields, file: string, d: ImageDigests, converted: boolean, scratchInfo: () => PreparedImage["scratch"], cleanup: () => Promise<void>): PreparedImage {
  return {
    ...common,
    size: d.size,
    converted,
    mode: "file",
    sha512: d.sha512,
    md5: d.md5,
    sha256: d.sha256,
    digests: () => Promise.resolve(d),
    open: () => createReadStream(file, { highWaterMark: 1 << 20 }),
    get scratch() {
      return scratchInfo();
    },
    cleanup,
  };
}

/** Same bytes on the wire: an ISO is published as raw bytes, and raw as ISO. */
function sameBytes(a: DiskFormat, b: DiskFormat): boolean {
  return a === b || (a === "iso" && b === "raw");
}

function checkProbe(probe: FormatProbe, declared: DiskFormat | undefined, what: string): void {
  if (probe.unsafe) {
    throw new DiskImageError("UNSAFE_IMAGE", `${what}: refused: ${probe.unsafe}, which would make qemu-img read files of this host. Flatten the image first (qemu-img convert) or use another source.`);
  }
  if (probe.unsupported) throw new DiskImageError("UNSUPPORTED", `${what}: ${probe.unsupported}; it cannot be published. Use another source.`);
  if (declared !== undefined && !sameBytes(probe.format, declared) && !(declared === "iso" && probe.format === "raw")) {
    throw new DiskImageError("INVALID_INPUT", `${what}: source.format is "${declared}" but the data is ${probe.format} (by its magic bytes). Fix source.format or leave it out.`);
  }
}

function writeError(e: unknown, what: string, dir: string): unknown {
  const err = e as NodeJS.ErrnoException;
  if (err?.code === "ENOSPC") {
    return new DiskImageError("NO_SPACE", `${what}: the scratch directory ${dir} ran out of space while writing the image. Free space there or set scratchDir to a larger file system.`, { cause: e });
  }
  if (err?.name === "AbortError" && !(e instanceof ImageyardError)) return new DiskImageError("CANCELLED", `${what}: cancelled`, { cause: e });
  return e;
}

/** Reads the first `n` bytes (or all, if shorter) and returns them with a stream that replays them. */
export async function peek(stream: Readable, n: number): Promise<{ head: Buffer; stream: Readable }> {
  const it = stream[Symbol.asyncIterator]();
  const chunks: Buffer[] = [];
  let len = 0;
  let done = false;
  while (len < n) {
    const r = await it.next();
    if (r.done) {
      done = true;
      break;
    }
    chunks.push(r.value as Buffer);
    len += (r.value as Buffer).length;
  }
  async function* replay(): AsyncGenerator<Buffer> {
    try {
      yield* chunks;
      if (done) return;
      for (;;) {
        const r = await it.next();
        if (r.done) return;
        yield r.value as Buffer;
      }
    } finally {
      await it.return?.();
    }
  }
  return { head: Buffer.concat(chunks).subarray(0, n), stream: Readable.from(replay(), { objectMode: false }) };
}

/**
 * Holds the first bytes until the format is known, then lets everything through, hashing the
 * final bytes only when they are the ones to upload (no conversion), and capping the
 * decompressed size.
 */
class FormatSniffer extends Transform {
  private pending: Buffer[] = [];
  private pendingLen = 0;
  private hash: MultiHash | undefined;
  probe: FormatProbe | undefined;
  bytes = 0;

  constructor(
    private readonly headBytes: number,
    private readonly maxBytes: number | undefined,
    private readonly what: string,
    private readonly decide: (probe: FormatProbe) => readonly HashAlgo[],
  ) {
    super({ highWaterMark: 1 << 20 });
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.bytes += chunk.length;
    if (this.maxBytes !== undefined && this.bytes > this.maxBytes) return cb(capError(`${this.what} (decompressed)`, this.maxBytes));
    if (this.probe) {
      this.hash?.update(chunk);
      return cb(null, chunk);
    }
    this.pending.push(chunk);
    this.pendingLen += chunk.length;
    if (this.pendingLen >= this.headBytes) return this.release(cb);
    cb();
  }

  override _flush(cb: TransformCallback): void {
    if (!this.probe) return this.release(cb);
    cb();
  }

  private release(cb: TransformCallback): void {
    const head = Buffer.concat(this.pending);
    this.pending = [];
    try {
      this.probe = detectFormat(head);
      const algos = this.decide(this.probe);
      if (algos.length > 0) this.hash = new MultiHash(algos);
    } catch (e) {
      return cb(e as Error);
    }
    this.hash?.update(head);
    cb(null, head);
  }

  finalDigests(): Omit<ImageDigests, "size"> {
    if (!this.hash) throw new Error("FormatSniffer: final bytes were not hashed");
    return this.hash.digest() as Omit<ImageDigests, "size">;
  }
}

/** Hashes what passes and reports the digests when the stream ends. */
class HashingPassThrough extends Transform {
  private readonly hash: MultiHash;
  constructor(
    algos: readonly HashAlgo[],
    private readonly onEnd: (d: Partial<Record<HashAlgo, string>>, bytes: number) => void,
  ) {
    super({ highWaterMark: 1 << 20 });
    this.hash = new MultiHash(algos);
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.hash.update(chunk);
    cb(null, chunk);
  }
  override _flush(cb: TransformCallback): void {
    this.onEnd(this.hash.digest(), this.hash.bytes);
    cb();
  }
}
