// qcow2 → raw while the qcow2 is still downloading. The download is written to scratch by a
// GrowingFile that knows how many bytes are on disk; a reader walks the guest clusters in order
// and reads each one from the file as soon as it has arrived (qemu-img writes images in guest
// order, so the upload trails the download closely), emitting zeros without waiting at all.
// When it meets something it does not read itself (a compressed cluster), it waits for the
// download and the qemu-img checks, then continues from that guest offset through qemu-nbd.
// The end of the stream is held back until the download is verified and qemu-img map agrees
// with every run this reader emitted (see prepare.ts).
import { open, type FileHandle } from "node:fs/promises";
import type { Readable } from "node:stream";
import { Writable } from "node:stream";
import { DiskImageError } from "./errors";
import { READ_PIECE } from "./extents";
import { appendRun, clusterLocation, l2TableOffset, type GuestRun, type Qcow2Header } from "./qcow2";

/** The scratch file being written, with a way to wait until a byte range is on disk. */
export class GrowingFile extends Writable {
  private fh: FileHandle | undefined;
  /** Bytes written to the file so far. */
  durable = 0;
  private ended = false;
  private failure: Error | undefined;
  private waiters: Array<() => void> = [];
  // The last bytes written, kept so a reader right behind the download takes them from memory
  // instead of reading back what was just written (that read-back cost ~2 s of system time per
  // GiB on the bench machine). Bounded: never more than RECENT_BYTES.
  private recent: Array<{ pos: number; buf: Buffer }> = [];
  private recentBytes = 0;
  private static readonly RECENT_BYTES = 16 * 1024 * 1024;

  constructor(readonly path: string) {
    super({ highWaterMark: 4 * 1024 * 1024 });
  }

  override _construct(cb: (e?: Error | null) => void): void {
    open(this.path, "w").then(
      (fh) => {
        this.fh = fh;
        cb();
      },
      (e: Error) => cb(e),
    );
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (e?: Error | null) => void): void {
    this.writeBatch([chunk]).then(() => cb(), cb);
  }

  // Batches what queued up while the previous write ran into one writev (fewer syscalls and
  // thread-pool hops than one write per 64 KiB network chunk).
  override _writev(chunks: Array<{ chunk: Buffer }>, cb: (e?: Error | null) => void): void {
    // Every failure (ENOSPC above all) must reach cb: a rejection lost here left the pipeline
    // waiting for ever, with the provider and Pulumi's cancel hanging behind it.
    this.writeBatch(chunks.map((c) => c.chunk)).then(() => cb(), cb);
  }

  private async writeBatch(bufs: Buffer[]): Promise<void> {
    const total = bufs.reduce((n, b) => n + b.length, 0);
    const { bytesWritten } = await (this.fh as FileHandle).writev(bufs, this.durable);
    // A short writev leaves the rest; write it plainly.
    if (bytesWritten < total) await this.writeAll(Buffer.concat(bufs).subarray(bytesWritten), bytesWritten);
    this.remember(bufs);
    this.durable += total;
    this.wake();
  }

  private remember(bufs: Buffer[]): void {
    let pos = this.durable;
    for (const buf of bufs) {
      this.recent.push({ pos, buf });
      this.recentBytes += buf.length;
      pos += buf.length;
    }
    while (this.recentBytes > GrowingFile.RECENT_BYTES && this.recent.length > 1) {
      this.recentBytes -= (this.recent.shift() as { buf: Buffer }).buf.length;
    }
  }

  /** Bytes [offset, offset+length) if they are among the last ones written, else undefined. */
  readRecent(offset: number, length: number): Buffer | undefined {
    const first = this.recent[0];
    if (!first || offset < first.pos || offset + length > this.durable) return undefined;
    const parts: Buffer[] = [];
    let need = length;
    let at = offset;
    for (const { pos, buf } of this.recent) {
      if (pos + buf.length <= at) continue;
      const part = buf.subarray(at - pos, Math.min(buf.length, at - pos + need));
      parts.push(part);
      need -= part.length;
      at += part.length;
      if (need === 0) break;
    }
    if (need !== 0) return undefined;
    return parts.length === 1 ? (parts[0] as Buffer) : Buffer.concat(parts, length);
  }

  private async writeAll(chunk: Buffer, skip = 0): Promise<void> {
    let done = 0;
    while (done < chunk.length) {
      const { bytesWritten } = await (this.fh as FileHandle).write(chunk, done, chunk.length - done, this.durable + skip + done);
      done += bytesWritten;
    }
  }

  override _final(cb: (e?: Error | null) => void): void {
    this.ended = true;
    this.wake();
    (this.fh as FileHandle).close().then(() => cb(), cb);
  }

  override _destroy(err: Error | null, cb: (e?: Error | null) => void): void {
    // After a clean finish the stream is destroyed too (autoDestroy): that is not a failure.
    if (err) this.failure ??= err;
    else if (!this.ended) this.failure ??= new DiskImageError("CANCELLED", `write ${this.path}: the download stopped before its end`);
    this.ended = true;
    this.wake();
    const fh = this.fh;
    this.fh = undefined;
    if (fh)
      fh.close().then(
        () => cb(err),
        () => cb(err),
      );
    else cb(err);
  }

  /** Marks the download failed (so readers stop waiting) without destroying the writer twice. */
  fail(e: Error): void {
    this.failure ??= e;
    this.ended = true;
    this.wake();
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  /** Resolves once bytes [0, end) are on disk; fails if the download failed or ended short. */
  async waitFor(end: number, what: string): Promise<void> {
    while (this.durable < end) {
      if (this.failure) throw this.failure;
      // _final runs after every write completed: the file is whole and shorter than asked.
      if (this.ended)
        throw new DiskImageError(
          "QEMU_FAILED",
          `${what}: the qcow2 points at byte ${end} but the file has ${this.durable} bytes. The image is corrupt or truncated; check source.url.`,
        );
      await new Promise<void>((r) => this.waiters.push(r));
    }
  }
}

export interface FollowRecord {
  runs: GuestRun[];
  /** Guest offset from which qemu-nbd supplied the bytes, if it did. */
  fallbackAt?: number;
}

const PIECE = 4 * 1024 * 1024;
const ZEROS = Buffer.alloc(PIECE);

export interface FollowOptions {
  what: string;
  /** Receives every run emitted (merged) and where qemu took over, for the cross-check against qemu-img map. */
  record: FollowRecord;
  /** Continues from a guest offset when this reader cannot (returns the rest of the raw bytes). */
  fallback: (guestOffset: number) => Promise<Readable>;
  signal?: AbortSignal;
}

/** The guest bytes of a qcow2 that is still being written, in order. */
export async function* followQcow2(file: GrowingFile, h: Qcow2Header, opts: FollowOptions): AsyncGenerator<Buffer> {
  const { what } = opts;
  const cs = h.clusterSize;
  const perL2 = cs / 8;
  const clusters = Math.ceil(h.virtualSize / cs);
  await file.waitFor(h.l1TableOffset + Math.ceil(clusters / perL2) * 8, what);
  const fh = await open(file.path, "r");
  try {
    const readAt = async (offset: number, length: number): Promise<Buffer> => {
      await file.waitFor(offset + length, what);
      const recent = file.readRecent(offset, length);
      if (recent) return recent;
      const buf = Buffer.allocUnsafe(length);
      let got = 0;
      while (got < length) {
        const { bytesRead } = await fh.read(buf, got, length - got, offset + got);
        if (bytesRead === 0) throw new DiskImageError("QEMU_FAILED", `${what}: the qcow2 file ended at byte ${offset + got}`);
        got += bytesRead;
      }
      return buf;
    };
    const l1 = await readAt(h.l1TableOffset, Math.ceil(clusters / perL2) * 8);
    let l2Index = -1;
    let l2: Buffer | undefined;
    // The run being gathered: zeros (offset undefined) or contiguous host bytes.
    let run: GuestRun | undefined;
    const flush = async function* (): AsyncGenerator<Buffer> {
      if (!run) return;
      const r = run;
      run = undefined;
      appendRun(opts.record.runs, r);
      if (r.offset === undefined) yield ZEROS.subarray(0, r.length);
      else
        for (let done = 0; done < r.length; done += READ_PIECE) yield await readAt(r.offset + done, Math.min(READ_PIECE, r.length - done));
    };
    for (let c = 0; c < clusters; c++) {
      if (opts.signal?.aborted) throw new DiskImageError("CANCELLED", `${what}: cancelled`);
      const start = c * cs;
      const length = Math.min(cs, h.virtualSize - start);
      const li = Math.floor(c / perL2);
      if (li !== l2Index) {
        l2Index = li;
        const at = l2TableOffset(l1.readBigUInt64BE(li * 8));
        l2 = at === undefined ? undefined : await readAt(at, cs);
      }
      const loc = l2 ? clusterLocation(l2.readBigUInt64BE((c % perL2) * 8), h.version) : ({ kind: "zero" } as const);
      if (loc.kind === "compressed") {
        yield* flush();
        opts.record.fallbackAt = start;
        const rest = await opts.fallback(start);
        for await (const chunk of rest) yield chunk as Buffer;
        return;
      }
      const offset = loc.kind === "data" ? loc.offset : undefined;
      const continues =
        run !== undefined &&
        run.length + length <= PIECE &&
        (offset === undefined ? run.offset === undefined : run.offset !== undefined && run.offset + run.length === offset);
      if (!continues) {
        yield* flush();
        run = { start, length, offset };
      } else (run as GuestRun).length += length;
    }
    yield* flush();
  } finally {
    await fh.close();
  }
}
