// Hashing on a worker thread. A disk image pipeline hashes gigabytes (the download's checksum,
// the upload's sha512) while the main thread also receives, writes and sends those bytes. With
// cores to spare a worker takes the hashing off the main thread; on a 2-core machine shared with
// Glance it only added copies (bench: +2.5 s CPU and +150 MiB RSS for 2 GiB, no faster), so by
// default it is used from 4 cores up.
// Chunks are copied once into 1 MiB batches that are transferred to the worker; a bound on the
// bytes in flight gives backpressure. Small inputs never start a worker.
import { createHash, type Hash } from "node:crypto";
import { availableParallelism } from "node:os";
import { Worker } from "node:worker_threads";
import type { Digests, HashAlgo } from "./checksum";

const WORKER_SOURCE = `
const { parentPort } = require("node:worker_threads");
const { createHash } = require("node:crypto");
let hashes = [];
parentPort.on("message", (m) => {
  if (m.type === "init") hashes = m.algos.map((a) => [a, createHash(a)]);
  else if (m.type === "data") {
    for (const [, h] of hashes) h.update(m.buf);
    parentPort.postMessage({ type: "ack", n: m.buf.byteLength });
  } else if (m.type === "end") {
    const out = {};
    for (const [a, h] of hashes) out[a] = h.digest("hex");
    parentPort.postMessage({ type: "digest", out });
  }
});
`;

/** Bytes gathered before they are posted to the worker. */
const BATCH = 1024 * 1024;
/** Bytes posted but not yet hashed before update() makes the caller wait. */
const IN_FLIGHT = 8 * 1024 * 1024;
/** Below this many bytes hashing stays on the main thread (a worker costs ~30 ms to start). */
const WORKER_THRESHOLD = 8 * 1024 * 1024;

/**
 * Several digests over one pass of the bytes. Starts on the main thread and moves to a worker
 * once more than WORKER_THRESHOLD bytes have gone through.
 */
export class StreamHasher {
  private local: Array<[HashAlgo, Hash]>;
  private worker: Worker | undefined;
  private batch: Buffer[] = [];
  private batchBytes = 0;
  private inFlight = 0;
  private drained: Array<() => void> = [];
  private failure: Error | undefined;
  private result: ((d: Partial<Digests>) => void) | undefined;
  bytes = 0;

  private readonly offThread: boolean;

  constructor(
    private readonly algos: readonly HashAlgo[],
    opts: { offThread?: boolean } = {},
  ) {
    this.local = algos.map((a) => [a, createHash(a)]);
    this.offThread = opts.offThread ?? availableParallelism() >= 4;
  }

  /** Hashes a chunk; returns a promise only when too many bytes wait for the worker. */
  update(chunk: Buffer): Promise<void> | undefined {
    this.bytes += chunk.length;
    if (!this.worker) {
      if (!this.offThread || this.bytes <= WORKER_THRESHOLD) {
        for (const [, h] of this.local) h.update(chunk);
        if (this.offThread) this.early.push(chunk);
        return undefined;
      }
      // Hash states cannot move between threads: the worker starts over with the early bytes.
      this.startWorker();
      this.batch = this.early;
      this.batchBytes = this.early.reduce((n, b) => n + b.length, 0);
      this.early = [];
      this.local = [];
    }
    this.batch.push(chunk);
    this.batchBytes += chunk.length;
    if (this.batchBytes >= BATCH) this.post();
    if (this.failure) return Promise.reject(this.failure);
    if (this.inFlight <= IN_FLIGHT) return undefined;
    return new Promise((resolve) => this.drained.push(resolve));
  }

  private startWorker(): void {
    const worker = new Worker(WORKER_SOURCE, { eval: true });
    worker.unref();
    worker.on("message", (m: { type: string; n?: number; out?: Partial<Digests> }) => {
      if (m.type === "ack") {
        this.inFlight -= m.n as number;
        if (this.inFlight <= IN_FLIGHT) {
          const d = this.drained;
          this.drained = [];
          for (const f of d) f();
        }
      } else if (m.type === "digest") {
        this.result?.(m.out as Partial<Digests>);
        void worker.terminate();
      }
    });
    worker.on("error", (e) => {
      this.failure = e;
      const d = this.drained;
      this.drained = [];
      for (const f of d) f();
    });
    worker.postMessage({ type: "init", algos: this.algos });
    this.worker = worker;
  }

  /** Bytes hashed here before the worker started (≤ WORKER_THRESHOLD), to replay to it. */
  private early: Buffer[] = [];

  private post(): void {
    if (this.batch.length === 0 || !this.worker) return;
    // One copy into a buffer of our own, then transferred (not cloned): the chunks themselves
    // are still on their way downstream, and a cloned view would copy its whole backing store.
    const joined = Buffer.allocUnsafeSlow(this.batchBytes);
    let at = 0;
    for (const b of this.batch) at += b.copy(joined, at);
    this.inFlight += this.batchBytes;
    this.worker.postMessage({ type: "data", buf: joined }, [joined.buffer]);
    this.batch = [];
    this.batchBytes = 0;
  }

  /** The digests of everything passed to update(). */
  async digest(): Promise<Partial<Digests>> {
    if (!this.worker) {
      const out: Partial<Digests> = {};
      for (const [a, h] of this.local) out[a] = h.digest("hex");
      return out;
    }
    this.post();
    const worker = this.worker;
    return new Promise((resolve, reject) => {
      if (this.failure) return reject(this.failure);
      this.result = resolve;
      worker.once("error", reject);
      worker.postMessage({ type: "end" });
    });
  }

  /** Stops the worker without a result (the stream failed). */
  dispose(): void {
    void this.worker?.terminate();
    this.worker = undefined;
  }
}
