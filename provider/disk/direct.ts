// Upload straight from the download, with no scratch at all, for sources already in the target
// format (qcow2 → qcow2, raw → raw, possibly compressed). The stream is verified on the way: the
// verifier holds back the end of the download until its digest matches, so a bad source makes
// the upload fail instead of completing. The format is checked from the header alone (backing
// file, external data file, encryption); qemu-img never sees these bytes, so a structurally
// corrupt image is only caught by the checksum. Use prepareImage when that matters more than
// scratch space.
import { pipeline, type Readable } from "node:stream";
import type { Checksum } from "./checksum";
import type { Compression } from "./decompress";
import { DiskImageError } from "./errors";
import type { ImageDigests } from "./prepare";
import { FORMAT_PROBE_BYTES, detectFormat, type DiskFormat } from "./qemu";
import { checkProbe, maxVirtualSizeOf, openSource, sameBytes, sourceChecksumOf, type ImageSource, type SourceOptions } from "./source";
import { finalAlgos, HashingPassThrough, imageBytesCap, peek, type FinalDigests } from "./streams";

export interface StreamedImage {
  diskFormat: DiskFormat;
  sourceFormat: DiskFormat;
  compression: Compression | undefined;
  /** Bytes the stream will yield, when known up front (an uncompressed source with Content-Length). */
  size: number | undefined;
  /** From the qcow2 header; for raw, equal to size when known. */
  virtualSize: number | undefined;
  /** The live, verified stream of the bytes to upload; read it once. */
  stream: Readable;
  /** Settles when the stream has ended and the source checksum was verified; rejects if it failed. */
  done(): Promise<ImageDigests & { sourceChecksum: Checksum & { verified: boolean } }>;
}

/** Opens the source and returns the bytes to upload as a live stream, or fails if a conversion is needed. */
export async function streamImage(source: ImageSource, opts: SourceOptions): Promise<StreamedImage> {
  const src = await openSource(source, opts);
  const { what } = src;
  let digests: FinalDigests | undefined;
  let bytes = 0;
  const hasher = new HashingPassThrough(finalAlgos(opts.hashes), (d, n) => {
    digests = d as FinalDigests;
    bytes = n;
  });
  let failure: unknown;
  const imageBytes = pipeline([src.body, ...src.stages] as unknown as [Readable, NodeJS.ReadWriteStream], (e) => {
    if (e) failure = e;
  }) as unknown as Readable;
  const { head, stream } = await peek(imageBytes, FORMAT_PROBE_BYTES);
  if (failure) throw failure;
  const probe = detectFormat(head);
  try {
    checkProbe(probe, source.format, what, maxVirtualSizeOf(opts));
    if (!sameBytes(probe.format, opts.diskFormat)) {
      throw new DiskImageError(
        "INVALID_INPUT",
        `${what}: the image is ${probe.format} and diskFormat is ${opts.diskFormat}; a conversion needs scratch space. Use prepareImage, or set diskFormat to ${probe.format}.`,
      );
    }
  } catch (e) {
    stream.destroy();
    throw e;
  }
  let counted = 0;
  const cap = imageBytesCap(opts, what);
  const out = pipeline(
    stream,
    async function* (chunks: AsyncIterable<Buffer>) {
      for await (const c of chunks) {
        counted += c.length;
        if (counted > cap.bytes) throw cap.error();
        yield c;
      }
    },
    hasher,
    () => {},
  ) as unknown as Readable;
  const finished = new Promise<ImageDigests & { sourceChecksum: Checksum & { verified: boolean } }>((resolve, reject) => {
    out.once("error", reject);
    out.once("end", () => {
      if (!digests) return reject(new DiskImageError("SIZE_MISMATCH", `${what}: the stream ended without a digest`));
      resolve({ size: bytes, ...digests, sourceChecksum: sourceChecksumOf(src, source, opts.onProgress) });
    });
  });
  finished.catch(() => {});
  const size = src.compression ? undefined : src.download.total;
  return {
    diskFormat: opts.diskFormat,
    sourceFormat: probe.format,
    compression: src.compression,
    size,
    virtualSize: probe.virtualSize ?? (probe.format === "raw" ? size : undefined),
    stream: out,
    done: () => finished,
  };
}
