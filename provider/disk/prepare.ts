// Turns a source (URL + checksum + format/compression hints) into exactly the bytes to upload
// in the target disk format, verifying on the way. One pass over the network: the download is
// hashed, decompressed and written to scratch as it arrives; nothing is written twice.
//
//   same format        → the scratch file itself (hashed while it was written)
//   anything → raw     → qemu-nbd serves the raw view of the scratch file (no raw file at all)
//   anything else      → qemu-img convert into scratch, source deleted, result hashed once
import { createReadStream, createWriteStream } from "node:fs";
import { stat, unlink } from "node:fs/promises";
import type { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { ImageyardError } from "../http/errors";
import { fileNameOf, MultiHash, type Checksum } from "./checksum";
import type { Compression } from "./decompress";
import { DiskImageError } from "./errors";
import { openRawStream } from "./nbd";
import { assertSafeImage, checkImage, convertImage, estimateAllocated, FORMAT_PROBE_BYTES, imageInfo, type DiskFormat, type FormatProbe } from "./qemu";
import { defaultScratchBase, Scratch, type StatFs } from "./scratch";
import { checkProbe, openSource, sameBytes, sourceChecksumOf, type ImageSource, type OpenedSource, type SourceOptions } from "./source";
import { FINAL_ALGOS, FormatSniffer, HashingPassThrough, type FinalDigests } from "./streams";

export type { ImageSource, SourceOptions } from "./source";
export { checkImageSource, resolveChecksum } from "./source";

export interface PrepareOptions extends SourceOptions {
  /** Base directory for scratch files (default os.tmpdir()/imageyard). */
  scratchDir?: string;
  /** How to produce raw from another format: stream it through qemu-nbd (default), or convert to a file. */
  rawVia?: "nbd" | "convert";
  /** qemu-img -o options for conversions (e.g. { compat: "1.1" }). */
  convertOptions?: Record<string, string>;
  /** For tests: a statfs replacement. */
  statFs?: StatFs;
}

export interface ImageDigests extends FinalDigests {
  size: number;
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


export async function prepareImage(source: ImageSource, opts: PrepareOptions): Promise<PreparedImage> {
  const src = await openSource(source, opts);
  const scratch = await Scratch.create(opts.scratchDir ?? defaultScratchBase(), opts.statFs).catch((e) => {
    src.body.destroy();
    throw e;
  });
  try {
    return await prepareInto(scratch, source, src, opts);
  } catch (e) {
    src.body.destroy();
    await scratch.remove();
    throw e;
  }
}

async function prepareInto(scratch: Scratch, source: ImageSource, src: OpenedSource, opts: PrepareOptions): Promise<PreparedImage> {
  const { what, compression } = src;
  const progress = opts.onProgress;
  // Compressed data expands to an unknown size; the check covers the download itself, and a
  // full disk later still fails cleanly (NO_SPACE) with the scratch removed.
  await scratch.ensureSpace(src.download.total ?? 0, what, "the download");
  const sniffer = new FormatSniffer(FORMAT_PROBE_BYTES, opts.maxBytes, what, (probe) => {
    checkProbe(probe, source.format, what);
    return sameBytes(probe.format, opts.diskFormat) ? FINAL_ALGOS : [];
  });
  const file = scratch.path(`source.${compression ? "decompressed" : "img"}`);
  try {
    await pipeline([src.body, ...src.stages, sniffer, createWriteStream(file)], { signal: opts.signal });
  } catch (e) {
    throw writeError(e, what, scratch.dir);
  }
  await scratch.sample();
  const sourceChecksum = sourceChecksumOf(src, source, progress);

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

function writeError(e: unknown, what: string, dir: string): unknown {
  const err = e as NodeJS.ErrnoException;
  if (err?.code === "ENOSPC") {
    return new DiskImageError("NO_SPACE", `${what}: the scratch directory ${dir} ran out of space while writing the image. Free space there or set scratchDir to a larger file system.`, { cause: e });
  }
  if (err?.name === "AbortError" && !(e instanceof ImageyardError)) return new DiskImageError("CANCELLED", `${what}: cancelled`, { cause: e });
  return e;
}

