// Stream decompression of gz, bz2, xz and zstd, detected by magic bytes (never the extension:
// distributions name compressed images `.img` and plain ones `.qcow2.xz` alike). gzip (and zstd
// when this Node has it) runs in node:zlib; bzip2 and xz run as their programs, spawned with argv
// and never through a shell.
import { spawn } from "node:child_process";
import { Duplex } from "node:stream";
import * as zlib from "node:zlib";
import { ImageyardError } from "../http/errors";
import { DiskImageError, tailText } from "./errors";

export type Compression = "gz" | "bz2" | "xz" | "zst";
/** The programs' names, accepted as well as the file suffixes. */
export type CompressionAlias = "gzip" | "bzip2" | "zstd";
export type CompressionOption = "auto" | "none" | Compression | CompressionAlias;
export const COMPRESSIONS: readonly CompressionOption[] = ["auto", "none", "gz", "bz2", "xz", "zst", "gzip", "bzip2", "zstd"];
const ALIASES: Record<CompressionAlias, Compression> = { gzip: "gz", bzip2: "bz2", zstd: "zst" };

/** "gzip" → "gz", "bzip2" → "bz2", "zstd" → "zst"; anything else as it is. */
export function normalizeCompression(option: CompressionOption): Exclude<CompressionOption, CompressionAlias> {
  return (ALIASES as Record<string, Compression>)[option] ?? (option as Exclude<CompressionOption, CompressionAlias>);
}

/** Bytes needed to recognise every supported compression. */
export const COMPRESSION_MAGIC_BYTES = 6;

export function detectCompression(head: Buffer): Compression | undefined {
  if (head.length >= 3 && head[0] === 0x1f && head[1] === 0x8b && head[2] === 0x08) return "gz";
  if (head.length >= 4 && head.subarray(0, 3).toString("latin1") === "BZh" && (head[3] as number) >= 0x31 && (head[3] as number) <= 0x39)
    return "bz2";
  if (head.length >= 6 && head.subarray(0, 6).equals(Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]))) return "xz";
  if (head.length >= 4 && head.readUInt32LE(0) === 0xfd2fb528) return "zst";
  return undefined;
}

/**
 * Decides what to decompress with: `auto` follows the magic bytes; an explicit choice must agree
 * with them, since a mismatch means the source is not what the user thinks it is.
 */
export function chooseCompression(given: CompressionOption, head: Buffer, what: string): Compression | undefined {
  const found = detectCompression(head);
  const option = normalizeCompression(given);
  if (option === "auto") return found;
  if (option === "none") {
    if (found)
      throw new DiskImageError(
        "INVALID_INPUT",
        `${what}: source.compression is "none" but the data starts with ${found} magic bytes. Set source.compression to "auto" or "${found}".`,
      );
    return undefined;
  }
  if (found !== option) {
    throw new DiskImageError(
      "INVALID_INPUT",
      `${what}: source.compression is "${option}" but the data ${found ? `is ${found}` : "is not compressed"}. Set source.compression to "auto".`,
    );
  }
  return found;
}

const PROGRAMS: Record<Exclude<Compression, "gz">, string> = { bz2: "bzip2", xz: "xz", zst: "zstd" };

export function decompressorArgv(kind: Exclude<Compression, "gz">): [string, string[]] {
  // -q: no warnings on stderr for a clean stream; -c: to stdout; -d: decompress.
  return [PROGRAMS[kind], ["-d", "-c", "-q"]];
}

/** A duplex that takes compressed bytes and yields decompressed ones. */
export function createDecompressor(kind: Compression, what: string): Duplex {
  if (kind === "gz") return wrapZlib(zlib.createGunzip({ chunkSize: 1 << 20 }), kind, what);
  const zstd = (zlib as unknown as { createZstdDecompress?: (o?: object) => Duplex }).createZstdDecompress;
  if (kind === "zst" && typeof zstd === "function") return wrapZlib(zstd({ chunkSize: 1 << 20 }), kind, what);
  const [cmd, args] = decompressorArgv(kind);
  return new ProgramDuplex(cmd, args, `${what}: ${kind} decompression`);
}

function wrapZlib(stream: Duplex, kind: Compression, what: string): Duplex {
  // zlib errors say "incorrect header check"; say which file and what to do. Our own errors (a
  // failed download or a cancel, destroying the pipeline) pass through as they are.
  const orig = stream.destroy.bind(stream);
  stream.destroy = (err?: Error) => {
    if (err && !(err instanceof ImageyardError)) {
      err = new DiskImageError(
        "INVALID_INPUT",
        `${what}: ${kind} decompression failed (${(err as NodeJS.ErrnoException).code ?? err.message}). The file is damaged or not ${kind}; check source.url and source.compression.`,
        { cause: err },
      );
    }
    return orig(err);
  };
  return stream;
}

/** Runs a filter program (stdin → stdout) as a stream; a non-zero exit fails it with stderr. */
class ProgramDuplex extends Duplex {
  private readonly child;
  private stderr = "";
  private stdoutEnded = false;
  private exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;

  constructor(
    cmd: string,
    args: string[],
    private readonly what: string,
  ) {
    super({ readableHighWaterMark: 1 << 20, writableHighWaterMark: 1 << 20 });
    this.child = spawn(cmd, args, { stdio: ["pipe", "pipe", "pipe"] });
    this.child.on("error", (e) =>
      this.destroy(
        new DiskImageError(
          "UNSUPPORTED",
          `${what}: cannot run ${cmd} (${(e as NodeJS.ErrnoException).code ?? e.message}). Install it (Debian: bzip2, xz-utils, zstd).`,
          { cause: e },
        ),
      ),
    );
    this.child.stderr.setEncoding("utf8");
    this.child.stderr.on("data", (d: string) => {
      if (this.stderr.length < 8192) this.stderr += d;
    });
    this.child.stdout.on("data", (chunk: Buffer) => {
      if (!this.push(chunk)) this.child.stdout.pause();
    });
    this.child.stdout.on("end", () => {
      this.stdoutEnded = true;
      this.settle();
    });
    this.child.stdin.on("error", () => {
      /* EPIPE when the program died early; the exit status carries the reason */
    });
    this.child.on("close", (code, signal) => {
      this.exit = { code, signal };
      this.settle();
    });
  }

  private settle(): void {
    if (!this.exit || !this.stdoutEnded || this.destroyed) return;
    const { code, signal } = this.exit;
    if (code === 0) this.push(null);
    else
      this.destroy(
        new DiskImageError(
          "INVALID_INPUT",
          `${this.what} failed (${code === null ? `signal ${signal}` : `exit ${code}`}): ${tailText(this.stderr) || "no message"}. The file is damaged or not in that format; check source.url and source.compression.`,
        ),
      );
  }

  override _read(): void {
    this.child.stdout.resume();
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (e?: Error | null) => void): void {
    if (this.child.stdin.destroyed) return cb();
    this.child.stdin.write(chunk, () => cb());
  }

  override _final(cb: (e?: Error | null) => void): void {
    this.child.stdin.end(() => cb());
  }

  override _destroy(err: Error | null, cb: (e?: Error | null) => void): void {
    if (this.exit === undefined) this.child.kill("SIGKILL");
    cb(err);
  }
}
