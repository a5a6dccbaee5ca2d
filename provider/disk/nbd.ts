// The raw bytes of a qcow2/vmdk/vhdx/vdi/vhd image as a stream, without writing a raw file:
// qemu-nbd serves the image read-only on a unix socket in the scratch directory and a minimal
// NBD client (fixed-newstyle handshake, NBD_OPT_GO, simple-reply reads) reads it in order. This
// is what keeps scratch space at the size of the downloaded image for a qcow2 → raw upload.
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { rm } from "node:fs/promises";
import { connect, type Socket } from "node:net";
import { join } from "node:path";
import { Readable } from "node:stream";
import { DiskImageError, tailText } from "./errors";
import { qemuFormat, safePath, type DiskFormat } from "./qemu";

const NBDMAGIC = 0x4e42444d41474943n;
const IHAVEOPT = 0x49484156454f5054n;
const OPT_REPLY_MAGIC = 0x0003e889045565a9n;
const REQUEST_MAGIC = 0x25609513;
const SIMPLE_REPLY_MAGIC = 0x67446698;
const FLAG_FIXED_NEWSTYLE = 1;
const FLAG_NO_ZEROES = 2;
const OPT_GO = 7;
const REP_ACK = 1;
const REP_INFO = 3;
const INFO_EXPORT = 0;
const CMD_READ = 0;
const CMD_DISC = 2;

export interface RawStreamOptions {
  /** For messages: "download https://host/x.qcow2". */
  what: string;
  /** Where the socket goes (the operation's scratch directory). */
  socketDir: string;
  signal?: AbortSignal;
  /** Bytes per NBD read request. */
  requestBytes?: number;
  connectTimeoutMs?: number;
  /** Guest offset to start at (the rest of an image another reader began). */
  startAt?: number;
}

export function nbdArgv(file: string, format: DiskFormat, socket: string): string[] {
  // --shared=1: one client; without --persistent qemu-nbd exits when that client disconnects.
  return [
    "--read-only",
    "--shared=1",
    "--format",
    qemuFormat(format),
    "--socket",
    socket,
    "--cache=writeback",
    "--aio=threads",
    "--discard=ignore",
    safePath(file),
  ];
}

/** Streams the guest-visible (raw) content of `file` from `startAt` (default 0) to `size`. */
export function openRawStream(file: string, format: DiskFormat, size: number, opts: RawStreamOptions): Readable {
  return Readable.from(readRaw(file, format, size, opts), { objectMode: false, highWaterMark: 1 << 20 });
}

async function* readRaw(file: string, format: DiskFormat, size: number, opts: RawStreamOptions): AsyncGenerator<Buffer> {
  const sockPath = join(opts.socketDir, `nbd-${randomBytes(6).toString("hex")}.sock`);
  const child = spawn("qemu-nbd", nbdArgv(file, format, sockPath), { stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  let exit: string | undefined;
  let spawnError: Error | undefined;
  child.stderr.setEncoding("utf8");
  child.stderr.on("data", (d: string) => {
    if (stderr.length < 8192) stderr += d;
  });
  child.on("error", (e) => (spawnError = e));
  child.on("close", (code, sig) => (exit = code === null ? `signal ${sig}` : `exit ${code}`));
  const failed = (why: string, cause?: unknown) =>
    new DiskImageError(
      "QEMU_FAILED",
      `${opts.what}: reading the ${format} image through qemu-nbd failed: ${why}${stderr ? ` (${tailText(stderr)})` : ""}. The image may be corrupt; check source.url.`,
      { cause },
    );

  let socket: Socket | undefined;
  const onAbort = () => socket?.destroy(new DiskImageError("CANCELLED", `${opts.what}: cancelled`));
  opts.signal?.addEventListener("abort", onAbort, { once: true });
  try {
    socket = await connectWhenReady(
      sockPath,
      opts.connectTimeoutMs ?? 15_000,
      () => spawnError ?? (exit ? new Error(`qemu-nbd ended (${exit})`) : undefined),
      opts.signal,
    );
    const reader = new SocketReader(socket);
    const exportSize = await negotiate(socket, reader).catch((e) => {
      throw failed(`handshake: ${(e as Error).message}`, e);
    });
    if (exportSize !== size) throw failed(`the export has ${exportSize} bytes, qemu-img info said ${size}`);
    const step = opts.requestBytes ?? 4 * 1024 * 1024;
    let handle = 1n;
    for (let off = opts.startAt ?? 0; off < size; ) {
      const n = Math.min(step, size - off);
      socket.write(request(CMD_READ, handle, off, n));
      const hdr = await reader.exact(16);
      if (hdr.readUInt32BE(0) !== SIMPLE_REPLY_MAGIC) throw failed("bad reply magic");
      const err = hdr.readUInt32BE(4);
      if (err !== 0) throw failed(`read of ${n} bytes at offset ${off} returned error ${err}${err === 5 ? " (EIO)" : ""}`);
      if (hdr.readBigUInt64BE(8) !== handle) throw failed("reply for another request");
      yield* reader.stream(n);
      off += n;
      handle++;
    }
    socket.write(request(CMD_DISC, handle, 0, 0));
    socket.end();
  } catch (e) {
    if (e instanceof DiskImageError) throw e;
    throw failed((e as Error).message, e);
  } finally {
    opts.signal?.removeEventListener("abort", onAbort);
    socket?.destroy();
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
    await rm(sockPath, { force: true }).catch(() => {});
  }
}

function request(type: number, handle: bigint, offset: number, length: number): Buffer {
  const b = Buffer.alloc(28);
  b.writeUInt32BE(REQUEST_MAGIC, 0);
  b.writeUInt16BE(0, 4);
  b.writeUInt16BE(type, 6);
  b.writeBigUInt64BE(handle, 8);
  b.writeBigUInt64BE(BigInt(offset), 16);
  b.writeUInt32BE(length, 24);
  return b;
}

/** Fixed-newstyle handshake with NBD_OPT_GO on the default export; returns its size. */
async function negotiate(socket: Socket, reader: SocketReader): Promise<number> {
  const greet = await reader.exact(18);
  if (greet.readBigUInt64BE(0) !== NBDMAGIC || greet.readBigUInt64BE(8) !== IHAVEOPT) throw new Error("not a newstyle NBD server");
  const flags = greet.readUInt16BE(16);
  if (!(flags & FLAG_FIXED_NEWSTYLE)) throw new Error("server lacks fixed-newstyle negotiation");
  const clientFlags = Buffer.alloc(4);
  clientFlags.writeUInt32BE(FLAG_FIXED_NEWSTYLE | (flags & FLAG_NO_ZEROES), 0);
  const opt = Buffer.alloc(16 + 6);
  opt.writeBigUInt64BE(IHAVEOPT, 0);
  opt.writeUInt32BE(OPT_GO, 8);
  opt.writeUInt32BE(6, 12);
  opt.writeUInt32BE(0, 16); // export name length: the default export
  opt.writeUInt16BE(0, 20); // no extra info requests
  socket.write(Buffer.concat([clientFlags, opt]));
  let size: number | undefined;
  for (;;) {
    const hdr = await reader.exact(20);
    if (hdr.readBigUInt64BE(0) !== OPT_REPLY_MAGIC) throw new Error("bad option reply magic");
    const type = hdr.readUInt32BE(12);
    const len = hdr.readUInt32BE(16);
    const data = len > 0 ? await reader.exact(len) : Buffer.alloc(0);
    if (type & 0x80000000) throw new Error(`option refused (${type & 0x7fffffff}): ${data.toString("utf8")}`);
    if (type === REP_INFO && data.length >= 12 && data.readUInt16BE(0) === INFO_EXPORT) size = Number(data.readBigUInt64BE(2));
    if (type === REP_ACK) break;
  }
  if (size === undefined) throw new Error("server sent no export size");
  return size;
}

async function connectWhenReady(path: string, timeoutMs: number, gone: () => Error | undefined, signal?: AbortSignal): Promise<Socket> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const dead = gone();
    if (dead) throw dead;
    if (signal?.aborted) throw new DiskImageError("CANCELLED", "cancelled");
    try {
      return await new Promise<Socket>((resolve, reject) => {
        const s = connect(path);
        s.once("connect", () => {
          s.off("error", reject);
          resolve(s);
        });
        s.once("error", reject);
      });
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if ((code !== "ENOENT" && code !== "ECONNREFUSED") || Date.now() > deadline) throw e;
      await new Promise((r) => setTimeout(r, 20));
    }
  }
}

/** Exact-length reads over a socket, with backpressure, without concatenating large bodies. */
class SocketReader {
  private bufs: Buffer[] = [];
  private len = 0;
  private ended = false;
  private error: Error | undefined;
  private wake: (() => void) | undefined;
  private static readonly HIGH = 8 * 1024 * 1024;

  constructor(private readonly socket: Socket) {
    socket.on("data", (b: Buffer) => {
      this.bufs.push(b);
      this.len += b.length;
      if (this.len > SocketReader.HIGH) socket.pause();
      this.notify();
    });
    socket.on("end", () => {
      this.ended = true;
      this.notify();
    });
    socket.on("error", (e) => {
      this.error = e;
      this.notify();
    });
    socket.on("close", () => {
      this.ended = true;
      this.notify();
    });
  }

  private notify(): void {
    const w = this.wake;
    this.wake = undefined;
    w?.();
  }

  private async need(n: number): Promise<void> {
    while (this.len < n) {
      if (this.error) throw this.error;
      if (this.ended) throw new Error("connection closed early");
      this.socket.resume();
      await new Promise<void>((r) => (this.wake = r));
    }
  }

  private take(n: number): Buffer {
    const out: Buffer[] = [];
    let left = n;
    while (left > 0) {
      const b = this.bufs[0] as Buffer;
      if (b.length <= left) {
        out.push(b);
        this.bufs.shift();
        left -= b.length;
      } else {
        out.push(b.subarray(0, left));
        this.bufs[0] = b.subarray(left);
        left = 0;
      }
    }
    this.len -= n;
    if (this.len < SocketReader.HIGH) this.socket.resume();
    return out.length === 1 ? (out[0] as Buffer) : Buffer.concat(out);
  }

  async exact(n: number): Promise<Buffer> {
    await this.need(n);
    return this.take(n);
  }

  /** Yields the next n bytes as they arrive. */
  async *stream(n: number): AsyncGenerator<Buffer> {
    let left = n;
    while (left > 0) {
      if (this.len === 0) await this.need(1);
      const b = this.bufs[0] as Buffer;
      const part = b.length <= left ? b : b.subarray(0, left);
      yield this.take(part.length);
      left -= part.length;
    }
  }
}
