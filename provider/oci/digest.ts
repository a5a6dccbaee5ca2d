// Blob verification while streaming. The verifier sits between a source and a target and holds the
// newest chunk back until EOF proves size and digest right: a blob that does not match never
// reaches the target whole, so the target cannot commit it (its upload body fails before it ends).
import { createHash, type Hash } from "node:crypto";
import { Transform, Writable, type Readable, type TransformCallback } from "node:stream";
import { pipeline } from "node:stream/promises";
import { ImageyardError } from "../http/errors";
import { shortDigest } from "../http/progress";

export type DigestAlgorithm = "sha256" | "sha512";

const HEX_LENGTH: Record<DigestAlgorithm, number> = { sha256: 64, sha512: 128 };

/** The algorithm of "sha256:…"; throws UNSUPPORTED for anything we cannot hash. */
export function algorithmOf(digest: string): DigestAlgorithm {
  const alg = digest.slice(0, digest.indexOf(":"));
  if (alg !== "sha256" && alg !== "sha512") {
    throw new ImageyardError(
      "UNSUPPORTED",
      `verify ${digest}: digest algorithm "${alg}" is not supported (UNSUPPORTED). Use images addressed by sha256 or sha512.`,
    );
  }
  return alg;
}

/** The hex part of a digest, checked for the algorithm's length (safe to use in a file name). */
export function hexOf(digest: string): string {
  const alg = algorithmOf(digest);
  const hex = digest.slice(alg.length + 1);
  if (!new RegExp(`^[a-f0-9]{${HEX_LENGTH[alg]}}$`).test(hex)) {
    throw new ImageyardError(
      "INVALID_INPUT",
      `verify ${digest}: not a well-formed ${alg} digest (INVALID_INPUT). Check the manifest that names it.`,
    );
  }
  return hex;
}

export function digestBytes(bytes: Buffer | Uint8Array | string, algorithm: DigestAlgorithm = "sha256"): string {
  return `${algorithm}:${createHash(algorithm).update(bytes).digest("hex")}`;
}

export interface VerifyOptions {
  /** Expected digest ("sha256:…"). */
  digest: string;
  /** Expected size in bytes (from the descriptor). */
  size: number;
  /** Where the bytes come from, for messages: "127.0.0.1:5001/team/app". */
  from: string;
  /**
   * Bytes to hash but not pass on: a resumed upload re-reads the start of the blob to rebuild the
   * digest state, while the target already holds those bytes.
   */
  skip?: number;
  /** Running count of bytes read from the source. */
  onBytes?: (bytesRead: number) => void;
}

/** A pass-through stream that fails with DIGEST_MISMATCH or SIZE_MISMATCH rather than end wrongly. */
export class VerifyingStream extends Transform {
  /** Bytes read from the source so far. */
  bytesRead = 0;
  /** The verification failure, if any (also emitted as the stream's error). */
  failure: ImageyardError | undefined;
  private readonly hash: Hash;
  private held: Buffer | undefined;
  private heldAt = 0;
  private readonly skip: number;

  constructor(private readonly opts: VerifyOptions) {
    super();
    this.hash = createHash(algorithmOf(opts.digest));
    this.skip = Math.max(0, opts.skip ?? 0);
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    const buf = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk);
    const at = this.bytesRead;
    this.bytesRead += buf.length;
    if (this.bytesRead > this.opts.size) {
      // Fail as soon as the source overruns: no reason to read a runaway body to its end.
      return cb(this.fail("SIZE_MISMATCH", `expected ${this.opts.size} bytes, got more (at least ${this.bytesRead})`));
    }
    this.hash.update(buf);
    this.opts.onBytes?.(this.bytesRead);
    this.release();
    this.held = buf;
    this.heldAt = at;
    cb();
  }

  override _flush(cb: TransformCallback): void {
    if (this.bytesRead !== this.opts.size) {
      return cb(this.fail("SIZE_MISMATCH", `expected ${this.opts.size} bytes, got ${this.bytesRead}`));
    }
    const got = `${algorithmOf(this.opts.digest)}:${this.hash.digest("hex")}`;
    if (got !== this.opts.digest) {
      return cb(this.fail("DIGEST_MISMATCH", `expected ${this.opts.digest}, got ${got} after ${this.bytesRead} bytes`));
    }
    this.release();
    cb();
  }

  /** Passes the held chunk on, minus any part that falls in the skipped prefix. */
  private release(): void {
    const held = this.held;
    if (!held) return;
    this.held = undefined;
    const end = this.heldAt + held.length;
    if (end <= this.skip) return;
    this.push(this.heldAt >= this.skip ? held : held.subarray(this.skip - this.heldAt));
  }

  private fail(code: "DIGEST_MISMATCH" | "SIZE_MISMATCH", what: string): ImageyardError {
    this.held = undefined;
    this.failure = new ImageyardError(
      code,
      `blob ${shortDigest(this.opts.digest)}… from ${this.opts.from}: ${what} (${code}); nothing was committed to the target. ` +
        `The source served different content than its manifest names; check the source (or a proxy in between) and run again.`,
    );
    return this.failure;
  }
}

export function verifyingStream(opts: VerifyOptions): VerifyingStream {
  return new VerifyingStream(opts);
}

/** Reads a small blob (a config) whole, verified; `size` bounds what is held in memory. */
export async function readVerified(source: Readable, opts: VerifyOptions): Promise<Buffer> {
  const chunks: Buffer[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      chunks.push(chunk);
      cb();
    },
  });
  await pipeline(source, verifyingStream(opts), sink);
  return Buffer.concat(chunks);
}
