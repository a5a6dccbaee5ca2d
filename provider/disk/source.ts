// What a disk image source is and how it is opened: validation for a provider's check(), the
// checksum to enforce (inline or from a SUMS file), and the verified, decompressed byte stream
// that both prepareImage (via scratch) and streamImage (no scratch) start from.
import type { Readable } from "node:stream";
import type { Dispatcher } from "undici";
import { formatBytes, type ProgressSink } from "../http/progress";
import type { RetryPolicy } from "../http/retry";
import {
  fileNameOf,
  formatChecksum,
  parseChecksum,
  parseSums,
  pickSumsEntry,
  VerifyingStream,
  type Checksum,
  type HashAlgo,
} from "./checksum";
import {
  chooseCompression,
  COMPRESSION_MAGIC_BYTES,
  COMPRESSIONS,
  createDecompressor,
  type Compression,
  type CompressionOption,
} from "./decompress";
import { DiskImageError, downloadTarget } from "./errors";
import { fetchText, openDownload, parseSourceUrl, type Download } from "./fetch";
import { DISK_FORMATS, type DiskFormat, type FormatProbe } from "./qemu";
import { peek } from "./streams";

export interface ImageSource {
  /** http(s):// or file:// URL of the image (possibly compressed). */
  url: string;
  /**
   * Tried before `url`; when it fails (unreachable, an HTTP error, a checksum mismatch, data that
   * is not the image) the download falls back to `url`. Verified against the same checksum, which a
   * checksumUrl gives for `url`'s file name.
   */
  mirrorUrl?: string;
  /**
   * `sha256:…`, `sha512:…`, `md5:…` or bare hex, of the file at `url` as downloaded; or
   * "unverified" to publish without a checksum on purpose.
   */
  checksum?: string;
  /** A SUMS file listing the file at `url` (GNU, BSD or Fedora CHECKSUM style). */
  checksumUrl?: string;
  /** What the user says the (decompressed) image is; checked against its magic bytes. */
  format?: DiskFormat;
  compression?: CompressionOption;
}

/** Options shared by prepareImage and streamImage. */
export interface SourceOptions {
  /** The format Glance should receive. */
  diskFormat: DiskFormat;
  /** Cap on downloaded bytes and on decompressed bytes. */
  maxBytes?: number;
  onProgress?: ProgressSink;
  signal?: AbortSignal;
  dispatcher?: Dispatcher;
  retry?: RetryPolicy;
  /** Fail when neither checksum nor checksumUrl is given. */
  requireChecksum?: boolean;
  /** Digests of the bytes to upload besides sha512 (always computed): "md5", "sha256". */
  hashes?: readonly HashAlgo[];
  /** Let file:// URLs read this host's files (off by default). */
  allowLocalFiles?: boolean;
  /** Largest virtual (guest) size accepted, checked from the header, qemu-img info and while decompressing. */
  maxVirtualSize?: number;
}

/** Default bound on an image's guest size: a small file must not expand into terabytes of upload. */
export const DEFAULT_MAX_VIRTUAL_SIZE = 64 * 1024 ** 3;

/** The bound in force for these options. */
export function maxVirtualSizeOf(opts: Pick<SourceOptions, "maxVirtualSize">): number {
  return opts.maxVirtualSize ?? DEFAULT_MAX_VIRTUAL_SIZE;
}

/** The opt-out of verification, spelled out so preview and state show it. */
export const UNVERIFIED = "unverified";

export function isUnverified(source: Pick<ImageSource, "checksum">): boolean {
  return source.checksum === UNVERIFIED;
}

export interface SourceCheckOptions {
  allowLocalFiles?: boolean;
  /** A checksum, a checksumUrl or checksum: "unverified" must be given. */
  requireChecksum?: boolean;
}

/** Problems with a source, as sentences naming the property (for a provider's check()). */
export function checkImageSource(source: ImageSource, diskFormat?: string, opts: SourceCheckOptions = {}): string[] {
  const problems: string[] = [];
  const tryIt = (f: () => unknown) => {
    try {
      f();
    } catch (e) {
      problems.push((e as Error).message);
    }
  };
  if (typeof source?.url !== "string" || source.url === "")
    problems.push('source.url is required, e.g. "https://cloud.debian.org/images/cloud/bookworm/latest/debian-12-generic-amd64.qcow2".');
  else tryIt(() => parseSourceUrl(source.url, "source.url", opts.allowLocalFiles ?? false));
  if (source?.mirrorUrl !== undefined)
    tryIt(() => parseSourceUrl(source.mirrorUrl as string, "source.mirrorUrl", opts.allowLocalFiles ?? false));
  if (source?.checksum !== undefined && !isUnverified(source)) tryIt(() => parseChecksum(source.checksum as string));
  if (source?.checksumUrl !== undefined)
    tryIt(() => parseSourceUrl(source.checksumUrl as string, "source.checksumUrl", opts.allowLocalFiles ?? false));
  if (opts.requireChecksum && source?.checksum === undefined && source?.checksumUrl === undefined) {
    problems.push(
      'source.checksum or source.checksumUrl is required, so the download is verified: e.g. checksum: "sha256:94e1…" or checksumUrl: "https://cloud.debian.org/images/cloud/bookworm/latest/SHA512SUMS". To publish an image nobody can verify, set checksum: "unverified".',
    );
  }
  if (source?.checksum !== undefined && source?.checksumUrl !== undefined)
    problems.push("source.checksum and source.checksumUrl are both set; give one of them.");
  if (source?.format !== undefined && !DISK_FORMATS.includes(source.format))
    problems.push(`source.format "${source.format}" is not one of ${DISK_FORMATS.join(", ")}.`);
  if (source?.compression !== undefined && !COMPRESSIONS.includes(source.compression))
    problems.push(`source.compression "${source.compression}" is not one of ${COMPRESSIONS.join(", ")}.`);
  if (diskFormat !== undefined && !DISK_FORMATS.includes(diskFormat as DiskFormat))
    problems.push(`diskFormat "${diskFormat}" is not one of ${DISK_FORMATS.join(", ")}.`);
  return problems;
}

/** The checksum the download must have: inline, or the strongest SUMS entry for the URL's file name. */
export async function resolveChecksum(
  source: ImageSource,
  opts: Pick<SourceOptions, "dispatcher" | "signal" | "retry" | "allowLocalFiles"> = {},
): Promise<Checksum | undefined> {
  if (isUnverified(source)) return undefined;
  if (source.checksum !== undefined) return parseChecksum(source.checksum);
  if (source.checksumUrl === undefined) return undefined;
  const what = `read checksums ${source.checksumUrl}`;
  const text = await fetchText(source.checksumUrl, { ...opts, what });
  const { algo, value } = pickSumsEntry(parseSums(text), fileNameOf(source.url), what);
  return { algo, value };
}

/** Same bytes on the wire: an ISO is published as raw bytes, and raw as ISO. */
export function sameBytes(a: DiskFormat, b: DiskFormat): boolean {
  return a === b || (a === "iso" && b === "raw");
}

export function checkProbe(probe: FormatProbe, declared: DiskFormat | undefined, what: string, maxVirtualSize?: number): void {
  checkVirtualSize(probe, maxVirtualSize, what);
  if (probe.unsafe) {
    throw new DiskImageError(
      "UNSAFE_IMAGE",
      `${what}: refused: ${probe.unsafe}, which would make qemu-img read files of this host. Flatten the image first (qemu-img convert) or use another source.`,
    );
  }
  if (probe.unsupported)
    throw new DiskImageError("UNSUPPORTED", `${what}: ${probe.unsupported}; it cannot be published. Use another source.`);
  if (declared !== undefined && !sameBytes(probe.format, declared) && !(declared === "iso" && probe.format === "raw")) {
    throw new DiskImageError(
      "INVALID_INPUT",
      `${what}: source.format is "${declared}" but the data is ${probe.format} (by its magic bytes). Fix source.format or leave it out.`,
    );
  }
}

export interface OpenedSource {
  /** "download https://host/x.qcow2", for messages. */
  what: string;
  expected: Checksum | undefined;
  download: Download;
  compression: Compression | undefined;
  /** The download as it arrives, compression magic already read. */
  body: Readable;
  /** Hashes (and verifies) the download; withholds its end until the digest is right. */
  verifier: VerifyingStream;
  /** verifier, then the decompressor if any: the stages that turn `body` into image bytes. */
  stages: NodeJS.ReadWriteStream[];
}

/** Validates the source, resolves its checksum and opens the download (first response received). */
export async function openSource(source: ImageSource, opts: SourceOptions): Promise<OpenedSource> {
  const problems = checkImageSource(source, opts.diskFormat, opts);
  if (problems.length > 0) throw new DiskImageError("INVALID_INPUT", problems.join(" "));
  const what = downloadTarget(source.url);
  const expected = await resolveChecksum(source, opts);
  const download = await openDownload(source.url, {
    dispatcher: opts.dispatcher,
    signal: opts.signal,
    onProgress: opts.onProgress,
    maxBytes: opts.maxBytes,
    retry: opts.retry,
    allowLocalFiles: opts.allowLocalFiles,
  });
  const { head, stream: body } = await peek(download.stream, COMPRESSION_MAGIC_BYTES);
  let compression: Compression | undefined;
  try {
    compression = chooseCompression(source.compression ?? "auto", head, what);
    // Uncompressed, the file is the image: over the bound (with room for qcow2/vmdk metadata) it cannot fit.
    const max = maxVirtualSizeOf(opts);
    if (!compression && download.total !== undefined && download.total > expandedCap(max))
      throw tooLarge(what, `the file has ${download.total} bytes`, max);
  } catch (e) {
    body.destroy();
    throw e;
  }
  const verifier = new VerifyingStream({ expected, algos: ["sha256"], what });
  const stages: NodeJS.ReadWriteStream[] = [verifier];
  if (compression) stages.push(createDecompressor(compression, what));
  return { what, expected, download, compression, body, verifier, stages };
}

/** The download's checksum once it has been read: the one enforced, or its sha256 for the record. */
export function sourceChecksumOf(src: OpenedSource, source: ImageSource, progress?: ProgressSink): Checksum & { verified: boolean } {
  const { expected } = src;
  const none = isUnverified(source) ? 'unverified (source.checksum is "unverified")' : "no checksum given";
  progress?.({
    phase: "verify",
    item: fileNameOf(source.url),
    done: true,
    message: expected ? `${formatChecksum(expected).slice(0, 19)}… ok` : `${none}; computed sha256`,
  });
  return expected ? { ...expected, verified: true } : { algo: "sha256", value: src.verifier.digests.sha256 as string, verified: false };
}

/** Bytes an image file of at most `maxVirtualSize` guest bytes can take: metadata adds a little. */
export function expandedCap(maxVirtualSize: number): number {
  return maxVirtualSize + Math.max(Math.ceil(maxVirtualSize / 32), 16 * 1024 * 1024);
}

export function tooLarge(what: string, found: string, maxVirtualSize: number): DiskImageError {
  return new DiskImageError(
    "SIZE_MISMATCH",
    `${what}: ${found}, over maxVirtualSize ${formatBytes(maxVirtualSize)} (${maxVirtualSize} bytes); nothing was uploaded. Raise maxVirtualSize if the image is meant to be this large, or check source.url.`,
  );
}

/** Fails when a probed header declares a guest larger than the bound. */
export function checkVirtualSize(
  probe: Pick<FormatProbe, "format" | "virtualSize">,
  maxVirtualSize: number | undefined,
  what: string,
): void {
  if (maxVirtualSize === undefined || probe.virtualSize === undefined || probe.virtualSize <= maxVirtualSize) return;
  throw tooLarge(
    what,
    `the ${probe.format} header declares a virtual size of ${formatBytes(probe.virtualSize)} (${probe.virtualSize} bytes)`,
    maxVirtualSize,
  );
}
