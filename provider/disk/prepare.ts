// Turns a source (URL + checksum + format/compression hints) into exactly the bytes to upload
// in the target disk format, verifying on the way. One pass over the network: the download is
// hashed, decompressed and written to scratch as it arrives; nothing is written twice.
//
//   same format              → the scratch file itself (hashed while it was written)
//   uncompressed → raw       → guest ranges read from the scratch file at qemu-img map's offsets
//   compressed → raw         → qemu-img convert to a sparse raw file, or qemu-nbd if space is short
//   anything else            → qemu-img convert into scratch, source deleted
// Whatever is not hashed during the download is hashed while open() is read, i.e. during upload.
import { createReadStream } from "node:fs";
import { stat, unlink } from "node:fs/promises";
import { pipeline as pipe, Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { ImageyardError } from "../http/errors";
import { fileNameOf, type Checksum } from "./checksum";
import type { Compression } from "./decompress";
import { DiskImageError } from "./errors";
import { mapImage, openExtentStream, unreadableMap } from "./extents";
import { followQcow2, GrowingFile, type FollowRecord } from "./follow";
import { appendRun, compareRuns, parseQcow2Header, type GuestRun, type Qcow2Header } from "./qcow2";
import { openRawStream } from "./nbd";
import {
  assertSafeImage,
  checkImage,
  convertImage,
  estimateAllocated,
  FORMAT_PROBE_BYTES,
  imageInfo,
  type DiskFormat,
  type FormatProbe,
} from "./qemu";
import { defaultScratchBase, Scratch, type StatFs } from "./scratch";
import {
  checkProbe,
  checkVirtualSize,
  maxVirtualSizeOf,
  openSource,
  sameBytes,
  sourceChecksumOf,
  type ImageSource,
  type OpenedSource,
  type SourceOptions,
} from "./source";
import { finalAlgos, FormatSniffer, HashingPassThrough, HoldLast, imageBytesCap, type FinalDigests } from "./streams";

export type { ImageSource, SourceOptions } from "./source";
export { checkImageSource, resolveChecksum } from "./source";

export interface PrepareOptions extends SourceOptions {
  /** Base directory for scratch files (default os.tmpdir()/imageyard). */
  scratchDir?: string;
  /**
   * How to produce raw from another format. "auto" (default): read an uncompressed image straight
   * from its file (no raw file written); a compressed one is converted to a sparse raw file when
   * scratch has room, else streamed through qemu-nbd. "convert" and "nbd" force one way.
   */
  rawVia?: "auto" | "convert" | "nbd";
  /**
   * qcow2 → raw with a checksum: return as soon as the header is in and let open() stream the raw
   * bytes while the download continues (default true). The stream's end still waits for the
   * checksum, qemu-img info/check, and qemu-img map agreeing with what was streamed.
   */
  follow?: boolean;
  /** qemu-img -o options for conversions (e.g. { compat: "1.1" }). */
  convertOptions?: Record<string, string>;
  /** For tests: a statfs replacement. */
  statFs?: StatFs;
  /** Lines worth a person's attention (a reclaimed scratch directory). */
  log?: (line: string) => void;
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
  /**
   * "file": open() reads a scratch file (the download itself, or qemu-img's output);
   * "extents": open() reads the guest ranges of the downloaded image directly (uncompressed → raw);
   * "nbd": open() streams the raw view through qemu-nbd;
   * "follow": open() streams a qcow2's raw view while it is still downloading (its end waits for
   * the checksum and qemu-img's checks).
   */
  mode: "file" | "extents" | "nbd" | "follow";
  /** Digests of the bytes open() yields, when known before reading (no conversion: hashed while downloading). */
  sha512: string | undefined;
  /** Only when requested in `hashes`. */
  md5: string | undefined;
  /** Only when requested in `hashes`. */
  sha256: string | undefined;
  /** Digests of the bytes open() yields; when the fields above are undefined it settles once an open() stream has been read to the end. */
  digests(): Promise<ImageDigests>;
  /** A fresh stream of exactly the bytes to upload; may be called again (e.g. for a retried upload). */
  open(): Readable;
  scratch: { dir: string; peakBytes: number };
  cleanup(): Promise<void>;
}

export async function prepareImage(source: ImageSource, opts: PrepareOptions): Promise<PreparedImage> {
  const src = await openSource(source, opts);
  const scratch = await Scratch.create(opts.scratchDir ?? defaultScratchBase(), opts.statFs, opts.log).catch((e) => {
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
  const sniffer = new FormatSniffer(FORMAT_PROBE_BYTES, imageBytesCap(opts, what), (probe) => {
    checkProbe(probe, source.format, what, maxVirtualSizeOf(opts));
    return sameBytes(probe.format, opts.diskFormat) ? finalAlgos(opts.hashes) : [];
  });
  const file = scratch.path(`source.${compression ? "decompressed" : "img"}`);
  const growing = new GrowingFile(file);
  // The download may outlive this call (follow mode); cleanup() stops it through this signal.
  const stop = new AbortController();
  const signal = opts.signal ? AbortSignal.any([opts.signal, stop.signal]) : stop.signal;
  const downloaded = pipeline([src.body, ...src.stages, sniffer, growing], { signal }).catch((e: unknown) => {
    const err = writeError(e, what, scratch.dir) as Error;
    growing.fail(err);
    throw err;
  });
  downloaded.catch(() => {});
  const settleDownload = async () => {
    stop.abort();
    await downloaded.catch(() => {});
  };
  try {
    const probe = await Promise.race([sniffer.probed, downloaded.then(() => sniffer.probe as FormatProbe)]);
    if (canFollow(probe, src, opts)) {
      const parsed = parseQcow2Header(sniffer.head);
      if ("header" in parsed) return followResult(parsed.header, { scratch, source, src, opts, growing, downloaded, settleDownload });
      progress?.({ phase: "convert", item: fileNameOf(source.url), message: `not streaming while downloading (${parsed.unsupported})` });
    }
    await downloaded;
  } catch (e) {
    await settleDownload();
    throw e;
  }
  await scratch.sample();
  const sourceChecksum = sourceChecksumOf(src, source, progress);

  const probe = sniffer.probe as FormatProbe;
  const sourceFormat = probe.format;
  const qopts = { what, signal: opts.signal };
  const info = await imageInfo(file, sourceFormat, qopts);
  assertSafeImage(info, sourceFormat, what);
  checkVirtualSize({ format: sourceFormat, virtualSize: info["virtual-size"] }, maxVirtualSizeOf(opts), what);
  const check = await checkImage(file, sourceFormat, qopts);
  const virtualSize = info["virtual-size"];
  const common = { diskFormat: opts.diskFormat, sourceFormat, compression, virtualSize, sourceChecksum };
  const cleanup = () => scratch.remove();
  const scratchInfo = () => ({ dir: scratch.dir, peakBytes: scratch.peak });

  if (sameBytes(sourceFormat, opts.diskFormat)) {
    const d = sniffer.finalDigests();
    return unconvertedResult(common, file, { size: sniffer.bytes, ...d }, scratchInfo, cleanup);
  }

  if (opts.diskFormat === "raw") {
    const via = opts.rawVia ?? "auto";
    if (via === "auto") {
      // Uncompressed images are read straight from the file at the offsets qemu-img map gives.
      const extents = await mapImage(file, sourceFormat, qopts);
      const why =
        (check["compressed-clusters"] ?? 0) > 0
          ? "it has compressed clusters"
          : unreadableMap(extents, virtualSize, (await stat(file)).size);
      if (why === undefined) {
        return streamedResult(
          opts,
          common,
          "extents",
          () => openExtentStream(file, extents, { signal: opts.signal }),
          virtualSize,
          scratchInfo,
          cleanup,
        );
      }
      progress?.({ phase: "convert", item: fileNameOf(source.url), message: `cannot read the ${sourceFormat} directly (${why})` });
    }
    // Compressed images: a sparse raw file is fastest when scratch has room for it; otherwise
    // qemu-nbd serves the raw view without writing one.
    const convertNeeds = await estimateAllocated(file, sourceFormat, "raw", qopts);
    const roomToConvert = await scratch.hasSpace(convertNeeds);
    if (via === "nbd" || (via === "auto" && !roomToConvert)) {
      return streamedResult(
        opts,
        common,
        "nbd",
        () => openRawStream(file, sourceFormat, virtualSize, { what, socketDir: scratch.dir, signal: opts.signal }),
        virtualSize,
        scratchInfo,
        cleanup,
      );
    }
  }

  const target = scratch.path(`converted.${opts.diskFormat}`);
  await scratch.ensureSpace(
    await estimateAllocated(file, sourceFormat, opts.diskFormat, qopts),
    what,
    `the conversion to ${opts.diskFormat}`,
  );
  const stopTracking = scratch.track();
  try {
    await convertImage(
      { source: file, sourceFormat, target, targetFormat: opts.diskFormat, options: opts.convertOptions },
      {
        ...qopts,
        onPercent: (pct) =>
          progress?.({
            phase: "convert",
            item: fileNameOf(source.url),
            bytes: Math.round((pct / 100) * virtualSize),
            total: virtualSize,
            done: pct >= 100,
          }),
      },
    );
  } finally {
    await stopTracking();
  }
  // The source is no longer needed; free its space before anything reads the result.
  await unlink(file);
  const size = (await stat(target)).size;
  // Hashed on the first read, so hashing overlaps the upload instead of preceding it.
  return streamedResult(opts, common, "file", () => createReadStream(target, { highWaterMark: 1 << 20 }), size, scratchInfo, cleanup);
}

/** A result whose digests are computed while open() is read; they settle on the first complete read. */
function streamedResult(
  opts: PrepareOptions,
  common: CommonFields,
  mode: PreparedImage["mode"],
  openBytes: () => Readable,
  size: number,
  scratchInfo: () => PreparedImage["scratch"],
  cleanup: () => Promise<void>,
): PreparedImage {
  let settled: ImageDigests | undefined;
  let resolveDigests!: (d: ImageDigests) => void;
  const digestsReady = new Promise<ImageDigests>((r) => (resolveDigests = r));
  return {
    ...common,
    size,
    converted: true,
    mode,
    sha512: undefined,
    md5: undefined,
    sha256: undefined,
    digests: () => digestsReady,
    open: () => {
      const bytes = openBytes();
      const hasher = new HashingPassThrough(finalAlgos(opts.hashes), (d, n) => {
        if (settled || n !== size) return;
        settled = { size: n, ...(d as FinalDigests) };
        resolveDigests(settled);
      });
      bytes.on("error", (e) => hasher.destroy(e));
      hasher.on("close", () => bytes.destroy());
      return bytes.pipe(hasher);
    },
    get scratch() {
      return scratchInfo();
    },
    cleanup,
  };
}

/**
 * Upload while downloading: a qcow2 going to raw, with a checksum to enforce, read in guest order
 * as it arrives. (Without a checksum the source's sha256 would only be known at the end, and it
 * is recorded on the image when the image is created.)
 */
function canFollow(probe: FormatProbe, src: OpenedSource, opts: PrepareOptions): boolean {
  return (
    (opts.follow ?? true) &&
    probe.format === "qcow2" &&
    opts.diskFormat === "raw" &&
    (opts.rawVia ?? "auto") === "auto" &&
    src.expected !== undefined
  );
}

interface FollowContext {
  scratch: Scratch;
  source: ImageSource;
  src: OpenedSource;
  opts: PrepareOptions;
  growing: GrowingFile;
  downloaded: Promise<void>;
  settleDownload: () => Promise<void>;
}

function followResult(h: Qcow2Header, ctx: FollowContext): PreparedImage {
  const { scratch, src, opts, growing, downloaded } = ctx;
  const { what } = src;
  const file = growing.path;
  const qopts = { what, signal: opts.signal };
  let verified: Promise<void> | undefined;
  // After the download: the checksum (the verifier failed the pipeline otherwise), then qemu-img's
  // own view of the file, exactly as for an image downloaded first.
  const verifyDownload = () =>
    (verified ??= (async () => {
      await downloaded;
      await scratch.sample();
      sourceChecksumOf(src, ctx.source, opts.onProgress);
      const info = await imageInfo(file, "qcow2", qopts);
      assertSafeImage(info, "qcow2", what);
      if (info["virtual-size"] !== h.virtualSize)
        throw new DiskImageError(
          "QEMU_FAILED",
          `${what}: the qcow2 header says ${h.virtualSize} bytes, qemu-img info ${info["virtual-size"]}`,
        );
      await checkImage(file, "qcow2", qopts);
    })());
  const verifyRuns = async (record: FollowRecord) => {
    await verifyDownload();
    const upTo = record.fallbackAt ?? h.virtualSize;
    if (upTo === 0) return;
    const theirs: GuestRun[] = [];
    for (const e of await mapImage(file, "qcow2", qopts))
      appendRun(theirs, { start: e.start, length: e.length, offset: e.data && !e.zero ? e.offset : undefined });
    const diff = compareRuns(record.runs, theirs, upTo);
    if (diff) {
      throw new DiskImageError(
        "QEMU_FAILED",
        `${what}: the qcow2 as streamed disagrees with qemu-img map (${diff}); the upload was stopped before its end. Set rawVia to "convert" to let qemu-img convert it.`,
      );
    }
  };
  const openBytes = () => {
    const record: FollowRecord = { runs: [] };
    const raw = Readable.from(
      followQcow2(growing, h, {
        what,
        record,
        signal: opts.signal,
        fallback: async (at) => {
          await verifyDownload();
          return openRawStream(file, "qcow2", h.virtualSize, { what, socketDir: scratch.dir, signal: opts.signal, startAt: at });
        },
      }),
      { objectMode: false, highWaterMark: 1024 * 1024 },
    );
    return pipe(raw, new HoldLast(() => verifyRuns(record)), () => {}) as unknown as Readable;
  };
  const common = {
    diskFormat: opts.diskFormat,
    sourceFormat: "qcow2" as const,
    compression: src.compression,
    virtualSize: h.virtualSize,
    // Enforced: the upload cannot complete unless the download matches it.
    sourceChecksum: { ...(src.expected as Checksum), verified: true },
  };
  const cleanup = async () => {
    await ctx.settleDownload();
    await scratch.remove();
  };
  return streamedResult(opts, common, "follow", openBytes, h.virtualSize, () => ({ dir: scratch.dir, peakBytes: scratch.peak }), cleanup);
}

type CommonFields = Pick<PreparedImage, "diskFormat" | "sourceFormat" | "compression" | "virtualSize" | "sourceChecksum">;

/** The downloaded file is already what to upload; its digests were computed while it was written. */
function unconvertedResult(
  common: CommonFields,
  file: string,
  d: ImageDigests,
  scratchInfo: () => PreparedImage["scratch"],
  cleanup: () => Promise<void>,
): PreparedImage {
  return {
    ...common,
    size: d.size,
    converted: false,
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
    return new DiskImageError(
      "NO_SPACE",
      `${what}: the scratch directory ${dir} ran out of space while writing the image. Free space there or set scratchDir to a larger file system.`,
      { cause: e },
    );
  }
  if (err?.name === "AbortError" && !(e instanceof ImageyardError))
    return new DiskImageError("CANCELLED", `${what}: cancelled`, { cause: e });
  return e;
}
