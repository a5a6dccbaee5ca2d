// A look at the first bytes of a source, for a provider's check(): its compression, its format
// and (from the header) the guest size it declares, so a preview can refuse an image over the
// size bound before anything is downloaded in full. Reads at most a few hundred KiB.
import { pipeline, type Readable } from "node:stream";
import { chooseCompression, COMPRESSION_MAGIC_BYTES, createDecompressor, type Compression } from "./decompress";
import { downloadTarget } from "./errors";
import { openDownload } from "./fetch";
import { detectFormat, FORMAT_PROBE_BYTES, type FormatProbe } from "./qemu";
import type { ImageSource, SourceOptions } from "./source";
import { peek } from "./streams";
import { NO_RETRY } from "../http/retry";

export interface SourceProbe extends FormatProbe {
  compression: Compression | undefined;
  /** Bytes of the file at the URL, when the server or file system says. */
  total: number | undefined;
}

/** Compressed bytes read at most while looking for the decompressed header. */
const MAX_PROBE_INPUT = 4 * 1024 * 1024;

export async function probeSource(
  source: ImageSource,
  opts: Pick<SourceOptions, "allowLocalFiles" | "signal" | "dispatcher" | "retry"> = {},
): Promise<SourceProbe> {
  const what = downloadTarget(source.url);
  const dl = await openDownload(source.url, { ...opts, retry: opts.retry ?? NO_RETRY });
  const { head, stream } = await peek(dl.stream, COMPRESSION_MAGIC_BYTES);
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
    return { ...probe, compression, total: dl.total };
  } finally {
    stream.destroy();
  }
}
