// A look at the first bytes of a source, for a provider's check(): its compression, its format
// and (from the header) the guest size it declares, so a preview can refuse an image over the
// size bound before anything is downloaded in full. Reads at most a few hundred KiB.
import { open } from "node:fs/promises";
import { pipeline, type Readable } from "node:stream";
import { fileURLToPath } from "node:url";
import { send } from "../http/client";
import { chooseCompression, COMPRESSION_MAGIC_BYTES, createDecompressor, type Compression } from "./decompress";
import { downloadTarget } from "./errors";
import { openDownload } from "./fetch";
import { detectFormat, FORMAT_PROBE_BYTES, type FormatProbe } from "./qemu";
import { expandedCap, type ImageSource, type SourceOptions } from "./source";
import { peek } from "./streams";
import { NO_RETRY } from "../http/retry";

export interface SourceProbe extends FormatProbe {
  compression: Compression | undefined;
  /** Bytes of the file at the URL, when the server (Content-Length) or file system says. */
  total: number | undefined;
  /**
   * Bytes once decompressed, where the compression records it: gzip's trailer (ISIZE, when it can
   * only mean one size), a zstd frame header's content size. Undefined otherwise.
   */
  uncompressedBytes: number | undefined;
}

/** Enough of the start for a compression magic and a whole zstd frame header. */
const HEAD_BYTES = Math.max(COMPRESSION_MAGIC_BYTES, 18);

/** Compressed bytes read at most while looking for the decompressed header. */
const MAX_PROBE_INPUT = 4 * 1024 * 1024;

export async function probeSource(
  source: ImageSource,
  opts: Pick<SourceOptions, "allowLocalFiles" | "signal" | "dispatcher" | "retry"> = {},
): Promise<SourceProbe> {
  const what = downloadTarget(source.url);
  const dl = await openDownload(source.url, { ...opts, retry: opts.retry ?? NO_RETRY });
  const { head, stream } = await peek(dl.stream, HEAD_BYTES);
  try {
    const compression = chooseCompression(source.compression ?? "auto", head, what);
    let input = 0;
    const counted = async function* (chunks: AsyncIterable<Buffer>) {
      for await (const c of chunks) {
        input += c.length;
        if (input > MAX_PROBE_INPUT) return;
        yield c;
      }
    };
    const bytes: Readable = compression
      ? (pipeline(stream, counted, createDecompressor(compression, what), () => {}) as unknown as Readable)
      : stream;
    const parts: Buffer[] = [];
    let n = 0;
    try {
      for await (const c of bytes) {
        parts.push(c as Buffer);
        n += (c as Buffer).length;
        if (n >= FORMAT_PROBE_BYTES) break;
      }
    } catch (e) {
      // A decompressor cut off mid-stream complains; what it produced before is what we need.
      if (n === 0) throw e;
    } finally {
      bytes.destroy();
    }
    const probe = detectFormat(Buffer.concat(parts).subarray(0, FORMAT_PROBE_BYTES));
    if (probe.virtualSize === undefined && probe.format === "raw" && !compression && dl.total !== undefined) probe.virtualSize = dl.total;
    let uncompressedBytes = compression === undefined ? dl.total : compression === "zst" ? zstdContentSize(head) : undefined;
    if (compression === "gz" && dl.total !== undefined)
      uncompressedBytes = gzipSize(await gzipTrailer(source.url, dl.total, opts).catch(() => undefined), probe);
    return { ...probe, compression, total: dl.total, uncompressedBytes };
  } finally {
    stream.destroy();
  }
}

/** The first zstd frame's Frame_Content_Size (RFC 8878 3.1.1.1), when the header carries it. */
export function zstdContentSize(head: Buffer): number | undefined {
  if (head.length < 6 || head.readUInt32LE(0) !== 0xfd2fb528) return undefined;
  const fhd = head[4] as number;
  const fcsFlag = fhd >> 6;
  const single = (fhd >> 5) & 1;
  const fcsBytes = [single ? 1 : 0, 2, 4, 8][fcsFlag] as number;
  if (fcsBytes === 0) return undefined;
  const at = 5 + (single ? 0 : 1) + ([0, 1, 2, 4][fhd & 3] as number);
  if (head.length < at + fcsBytes) return undefined;
  if (fcsBytes === 1) return head[at];
  if (fcsBytes === 2) return head.readUInt16LE(at) + 256;
  if (fcsBytes === 4) return head.readUInt32LE(at);
  const n = head.readBigUInt64LE(at);
  return n <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(n) : undefined;
}

/** The last 4 bytes of a gzip file (ISIZE: the uncompressed size modulo 2^32), by a Range request. */
async function gzipTrailer(
  url: string,
  total: number,
  opts: Pick<SourceOptions, "allowLocalFiles" | "signal" | "dispatcher">,
): Promise<number | undefined> {
  if (total < 18) return undefined;
  if (url.startsWith("file:")) {
    if (!opts.allowLocalFiles) return undefined;
    const fh = await open(fileURLToPath(url));
    try {
      const buf = Buffer.alloc(4);
      await fh.read(buf, 0, 4, total - 4);
      return buf.readUInt32LE(0);
    } finally {
      await fh.close();
    }
  }
  const res = await send({
    method: "GET",
    url,
    headers: { range: `bytes=${total - 4}-${total - 1}` },
    ok: [200, 206],
    operation: `read the gzip trailer of ${url}`,
    dispatcher: opts.dispatcher,
    signal: opts.signal,
  });
  if (res.status !== 206) {
    // No Range support: the whole file would come; do not read it for a preview.
    res.body.destroy();
    return undefined;
  }
  const buf = Buffer.from(await res.body.arrayBuffer());
  return buf.length === 4 ? buf.readUInt32LE(0) : undefined;
}

/**
 * ISIZE is the size modulo 2^32: trusted when it can only mean one size, i.e. the image's
 * virtual size (from its header) bounds the decompressed file below the next 4 GiB step.
 */
function gzipSize(isize: number | undefined, probe: FormatProbe): number | undefined {
  if (isize === undefined) return undefined;
  if (probe.virtualSize === undefined) return undefined;
  return isize + 2 ** 32 > expandedCap(probe.virtualSize) ? isize : undefined;
}
