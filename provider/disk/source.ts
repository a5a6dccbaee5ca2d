// What a disk image source is and how it is opened: validation for a provider's check(), the
// checksum to enforce (inline or from a SUMS file), and the verified, decompressed byte stream
// that both prepareImage (via scratch) and streamImage (no scratch) start from.
import type { Readable } from "node:stream";
import type { Dispatcher } from "undici";
import type { ProgressSink } from "../http/progress";
import type { RetryPolicy } from "../http/retry";
import { fileNameOf, formatChecksum, parseChecksum, parseSums, pickSumsEntry, VerifyingStream, type Checksum, type HashAlgo } from "./checksum";
import { chooseCompression, COMPRESSION_MAGIC_BYTES, COMPRESSIONS, createDecompressor, type Compression, type CompressionOption } from "./decompress";
import { DiskImageError, downloadTarget } from "./errors";
import { fetchText, openDownload, parseSourceUrl, type Download } from "./fetch";
import { DISK_FORMATS, type DiskFormat, type FormatProbe } from "./qemu";
import { peek } from "./streams";

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
}

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
export async function resolveChecksum(source: ImageSource, opts: Pick<SourceOptions, "dispatcher" | "signal" | "retry"> = {}): Promise<Checksum | undefined> {
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

export function checkProbe(probe: FormatProbe, declared: DiskFormat | undefined, what: string): void {
  if (probe.unsafe) {
    throw new DiskImageError("UNSAFE_IMAGE", `${what}: refused: ${probe.unsafe}, which would make qemu-img read files of this host. Flatten the image first (qemu-img convert) or use another source.`);
  }
  if (probe.unsupported) throw new DiskImageError("UNSUPPORTED", `${what}: ${probe.unsupported}; it cannot be published. Use another source.`);
  if (declared !== undefined && !sameBytes(probe.format, declared) && !(declared === "iso" && probe.format === "raw")) {
    throw new DiskImageError("INVALID_INPUT", `${what}: source.format is "${declared}" but the data is ${probe.format} (by its magic bytes). Fix source.format or leave it out.`);
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
  const problems = checkImageSource(source, opts.diskFormat);
  if (problems.length > 0) throw new DiskImageError("INVALID_INPUT", problems.join(" "));
  if (opts.requireChecksum && source.checksum === undefined && source.checksumUrl === undefined) {
    throw new DiskImageError("INVALID_INPUT", 'source.checksum or source.checksumUrl is required (requireChecksum is set), e.g. checksum: "sha256:94e1…".');
  }
  const what = downloadTarget(source.url);
  const expected = await resolveChecksum(source, opts);
  const download = await openDownload(source.url, { dispatcher: opts.dispatcher, signal: opts.signal, onProgress: opts.onProgress, maxBytes: opts.maxBytes, retry: opts.retry });
  const { head, stream: body } = await peek(download.stream, COMPRESSION_MAGIC_BYTES);
  let compression: Compression | undefined;
  try {
    compression = chooseCompression(source.compression ?? "auto", head, what);
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
  progress?.({ phase: "verify", item: fileNameOf(source.url), done: true, message: expected ? `${formatChecksum(expected).slice(0, 19)}… ok` : "no checksum given; computed sha256" });
  return expected ? { ...expected, verified: true } : { algo: "sha256", value: src.verifier.digests.sha256 as string, verified: false };
}
