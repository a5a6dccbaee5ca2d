// Stream pieces of the disk pipeline: look at the first bytes without losing them, learn the
// format on the way through, hash what is finally uploaded.
import { Readable, Transform, type TransformCallback } from "node:stream";
import type { HashAlgo } from "./checksum";
import { StreamHasher } from "./hasher";
import { capError } from "./fetch";
import { expandedCap, maxVirtualSizeOf, tooLarge, type SourceOptions } from "./source";
import { detectFormat, type FormatProbe } from "./qemu";

/**
 * Digests of the bytes to upload. sha512 always: it is Glance's os_hash_value, the end-to-end
 * check. md5 (Glance's legacy `checksum`) and sha256 only on request: each digest is another CPU
 * pass over the whole image (md5 alone is ~3 s per 2 GiB here), and the CPU is shared with Glance.
 */
export interface FinalDigests {
  sha512: string;
  md5?: string;
  sha256?: string;
}

export function finalAlgos(extra: readonly HashAlgo[] = []): readonly HashAlgo[] {
  return ["sha512", ...new Set(extra.filter((a) => a !== "sha512"))];
}

/** Reads the first `n` bytes (or all, if shorter) and returns them with a stream that replays them. */
export async function peek(stream: Readable, n: number): Promise<{ head: Buffer; stream: Readable }> {
  const it = stream[Symbol.asyncIterator]();
  const chunks: Buffer[] = [];
  let len = 0;
  let done = false;
  while (len < n) {
    const r = await it.next();
    if (r.done) {
      done = true;
      break;
    }
    chunks.push(r.value as Buffer);
    len += (r.value as Buffer).length;
  }
  async function* replay(): AsyncGenerator<Buffer> {
    try {
      yield* chunks;
      if (done) return;
      for (;;) {
        const r = await it.next();
        if (r.done) return;
        yield r.value as Buffer;
      }
    } finally {
      await it.return?.();
    }
  }
  return { head: Buffer.concat(chunks).subarray(0, n), stream: Readable.from(replay(), { objectMode: false }) };
}

/**
 * Holds the first bytes until the format is known, then lets everything through, hashing the
 * final bytes only when they are the ones to upload (no conversion), and capping the
 * decompressed size.
 */
export class FormatSniffer extends Transform {
  private pending: Buffer[] = [];
  private pendingLen = 0;
  private hash: StreamHasher | undefined;
  probe: FormatProbe | undefined;
  /** The first bytes, as probed. */
  head: Buffer = Buffer.alloc(0);
  bytes = 0;
  /** Settles when the format is known (or the check of it failed). */
  readonly probed: Promise<FormatProbe>;
  private settleProbe!: { resolve: (p: FormatProbe) => void; reject: (e: unknown) => void };

  constructor(
    private readonly headBytes: number,
    /** Most bytes allowed through, and the error past it. */
    private readonly cap: { bytes: number; error: () => Error } | undefined,
    private readonly decide: (probe: FormatProbe) => readonly HashAlgo[],
  ) {
    super({ highWaterMark: 1 << 20 });
    this.probed = new Promise<FormatProbe>((resolve, reject) => (this.settleProbe = { resolve, reject }));
    this.probed.catch(() => {});
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.bytes += chunk.length;
    if (this.cap && this.bytes > this.cap.bytes) return cb(this.cap.error());
    if (this.probe) {
      const wait = this.hash?.update(chunk);
      if (wait) return void wait.then(() => cb(null, chunk), cb);
      return cb(null, chunk);
    }
    this.pending.push(chunk);
    this.pendingLen += chunk.length;
    if (this.pendingLen >= this.headBytes) return this.release(cb);
    cb();
  }

  override _flush(cb: TransformCallback): void {
    const finish = () => {
      if (!this.hash) return cb();
      this.hash.digest().then((d) => {
        this.digests = d as FinalDigests;
        cb();
      }, cb);
    };
    if (!this.probe) {
      return this.release((err, head) => {
        if (err) return cb(err);
        if (head) this.push(head);
        finish();
      });
    }
    finish();
  }

  private digests: FinalDigests | undefined;

  private release(cb: TransformCallback): void {
    const head = Buffer.concat(this.pending);
    this.pending = [];
    this.head = head;
    try {
      this.probe = detectFormat(head);
      const algos = this.decide(this.probe);
      if (algos.length > 0) this.hash = new StreamHasher(algos);
    } catch (e) {
      this.settleProbe.reject(e);
      return cb(e as Error);
    }
    this.settleProbe.resolve(this.probe);
    const wait = this.hash?.update(head);
    if (wait) return void wait.then(() => cb(null, head), cb);
    cb(null, head);
  }

  override _destroy(err: Error | null, cb: (e?: Error | null) => void): void {
    this.hash?.dispose();
    cb(err);
  }

  /** Digests of every byte that passed, when the format called for them; after the stream ended. */
  finalDigests(): FinalDigests {
    if (!this.digests) throw new Error("FormatSniffer: final bytes were not hashed");
    return this.digests;
  }
}

/** The bound on image bytes after decompression: maxBytes, and what maxVirtualSize allows. */
export function imageBytesCap(
  opts: Pick<SourceOptions, "maxBytes" | "maxVirtualSize">,
  what: string,
): { bytes: number; error: () => Error } {
  const max = maxVirtualSizeOf(opts);
  const byVirtual = expandedCap(max);
  if (opts.maxBytes !== undefined && opts.maxBytes < byVirtual)
    return { bytes: opts.maxBytes, error: () => capError(`${what} (decompressed)`, opts.maxBytes as number) };
  return {
    bytes: byVirtual,
    error: () => tooLarge(`${what} (decompressed)`, `the image grew past ${byVirtual} bytes while decompressing`, max),
  };
}

/** Hashes what passes and reports the digests when the stream ends. */
export class HashingPassThrough extends Transform {
  private readonly hash: StreamHasher;
  constructor(
    algos: readonly HashAlgo[],
    private readonly onEnd: (d: Partial<Record<HashAlgo, string>>, bytes: number) => void,
  ) {
    super({ highWaterMark: 1 << 20 });
    this.hash = new StreamHasher(algos);
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    const wait = this.hash.update(chunk);
    if (wait) wait.then(() => cb(null, chunk), cb);
    else cb(null, chunk);
  }
  override _flush(cb: TransformCallback): void {
    this.hash.digest().then((d) => {
      this.onEnd(d, this.hash.bytes);
      cb();
    }, cb);
  }
  override _destroy(err: Error | null, cb: (e?: Error | null) => void): void {
    this.hash.dispose();
    cb(err);
  }
}

/**
 * Holds back the latest chunk and releases the last one only after `gate` resolves, so the
 * consumer (an upload) cannot complete before the checks behind the gate have passed.
 */
export class HoldLast extends Transform {
  private held: Buffer | undefined;
  constructor(private readonly gate: () => Promise<void>) {
    super({ highWaterMark: 1 << 20 });
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    const prev = this.held;
    this.held = chunk;
    cb(null, prev);
  }
  override _flush(cb: TransformCallback): void {
    this.gate().then(
      () => cb(null, this.held),
      (e: Error) => cb(e),
    );
  }
}
