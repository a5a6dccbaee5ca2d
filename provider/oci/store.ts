// One small interface over the places images live (a registry repository, an OCI layout on disk),
// so the planner and executor are written once for registry ↔ registry, registry → layout and
// layout → registry. Blob writes verify what they store; see digest.ts.
import { pipeline } from "node:stream/promises";
import { Writable, type Readable } from "node:stream";
import { ImageyardError, isImageyardError } from "../http/errors";
import { shortDigest } from "../http/progress";
import { abortableSleep, backoffDelay, DEFAULT_RETRY, isPaced, isRetryable, type RetryPolicy } from "../http/retry";
import type { Wait, WaitBoard } from "../http/waits";
import { digestBytes, verifyingStream } from "./digest";
import type { Descriptor } from "./manifest";
import { RegistryClient, type ManifestInfo, type ManifestResponse, type RegistryOptions, type UploadSession } from "./registry";

export interface BlobWrite {
  digest: string;
  size: number;
  /** Opens the blob at its source, from the first byte. */
  open: () => Promise<Readable>;
  /** Where the bytes come from, for messages. */
  from: string;
  /** Who serves them: "the source registry 127.0.0.1:5001" (default: `from`). */
  sourcePeer?: string;
  /** Where the transfer records what it waits for (the source's bytes, then the target's answer). */
  waits?: WaitBoard;
  /** Bytes read from the source so far in the current attempt. */
  onBytes?: (bytes: number) => void;
  signal?: AbortSignal;
}

export interface ImageStore {
  readonly kind: "registry" | "layout" | "archive";
  /** "127.0.0.1:5001/team/app" or "oci:/srv/images" */
  readonly name: string;
  /** Who answers, for messages: "the source registry 127.0.0.1:5001", "the layout /srv/images". */
  readonly peer: string;
  /** Registry host and repository, for mounts and the known-locations map; layouts have none. */
  readonly registry?: string;
  readonly repository?: string;
  /** One cheap look-up of a tag or digest; undefined when absent. */
  headManifest(reference: string): Promise<ManifestInfo | undefined>;
  /** The manifest bytes, verified against the digest asked for (or the registry's claim). */
  getManifest(reference: string): Promise<ManifestResponse>;
  /**
   * Stores a manifest under a tag, or by digest when `tag` is undefined; returns its digest.
   * `root` marks the image itself (a layout lists an untagged root in index.json, not its children).
   */
  putManifest(tag: string | undefined, bytes: Buffer, mediaType: string, opts?: { root?: boolean }): Promise<string>;
  openBlob(digest: string): Promise<Readable>;
  hasBlob(digest: string, size: number): Promise<boolean>;
  /** Cross-repository mount within the same registry; false when the registry declined. */
  mountBlob?(digest: string, fromRepository: string): Promise<boolean>;
  /** Streams a blob in, verifying it; never leaves a wrong or partial blob committed. */
  writeBlob(w: BlobWrite): Promise<void>;
  listTags(): Promise<string[]>;
  /** OCI 1.1 referrers; undefined when the store has no referrers API. */
  referrers?(digest: string): Promise<Descriptor[] | undefined>;
}

/** One blob transfer is started or resumed this often, waiting longer each time (about 15 s in all). */
const BLOB_RETRY: RetryPolicy = { ...DEFAULT_RETRY, attempts: 6, minDelayMs: 500, maxDelayMs: 8000 };

export class RegistryStore implements ImageStore {
  readonly kind = "registry" as const;
  readonly name: string;
  readonly peer: string;

  constructor(
    readonly client: RegistryClient,
    readonly registry: string,
    readonly repository: string,
    /** Attempts and backoff for starting or resuming one blob transfer. */
    private readonly blobRetry: RetryPolicy = BLOB_RETRY,
  ) {
    this.name = `${registry}/${repository}`;
    this.peer = client.peer;
  }

  headManifest(reference: string): Promise<ManifestInfo | undefined> {
    return this.client.headManifest(this.repository, reference);
  }

  getManifest(reference: string): Promise<ManifestResponse> {
    return this.client.getManifest(this.repository, reference);
  }

  putManifest(tag: string | undefined, bytes: Buffer, mediaType: string): Promise<string> {
    return this.client.putManifest(this.repository, tag ?? digestBytes(bytes), bytes, mediaType);
  }

  async openBlob(digest: string): Promise<Readable> {
    return (await this.client.getBlob(this.repository, digest)).body;
  }

  async hasBlob(digest: string, size: number): Promise<boolean> {
    const have = await this.client.headBlob(this.repository, digest);
    return have !== undefined && (have === size || size < 0);
  }

  mountBlob(digest: string, fromRepository: string): Promise<boolean> {
    return this.client.mountBlob(this.repository, digest, fromRepository);
  }

  listTags(): Promise<string[]> {
    return this.client.listTags(this.repository);
  }

  referrers(digest: string): Promise<Descriptor[] | undefined> {
    return this.client.referrers(this.repository, digest);
  }

  /**
   * checkExistingBlob is the planner's job; here: initiateUpload → streamBlob (one monolithic PUT)
   * → on a broken transfer ask the registry what it kept (GET on the session: Range) and resume
   * with PATCH from there, else start a new session. The verifier re-reads the blob from its first
   * byte each time so the digest covers every byte, and skips what the registry already holds.
   */
  async writeBlob(w: BlobWrite): Promise<void> {
    let session: UploadSession | undefined;
    let stale = false;
    let raced = false;
    for (let attempt = 1; ; attempt++) {
      try {
        if (session && stale) session = await this.progressOf(session);
        stale = false;
        session ??= await this.client.startUpload(this.repository);
        await this.streamBlob(session, w);
        return;
      } catch (e) {
        // A rate limit the host limiter has scheduled: wait there, not as an attempt.
        if (isPaced(e) && !w.signal?.aborted) {
          attempt--;
          stale = true;
          continue;
        }
        if (isRegistryDigestInvalid(e) && !w.signal?.aborted) {
          // distribution 2.8 can reject one of two concurrent uploads of the same blob although its
          // bytes were verified on the way: look whether the blob landed, else try once more.
          if (await this.hasBlob(w.digest, w.size).catch(() => false)) return this.dropSession(session);
          if (!raced) {
            raced = true;
            await this.dropSession(session);
            session = undefined;
            continue;
          }
          await this.dropSession(session);
          throw digestRejected(w, this.peer, e);
        }
        if (attempt >= this.blobRetry.attempts || !isRetryable(e) || w.signal?.aborted) {
          await this.dropSession(session);
          throw e;
        }
        await abortableSleep(backoffDelay(this.blobRetry, attempt, e), w.signal);
        stale = true;
      }
    }
  }

  /** Cancels a session this transfer leaves behind, so its bytes do not stay on the registry's disk. */
  private async dropSession(session: UploadSession | undefined): Promise<void> {
    if (session) await this.client.cancelUpload(session).catch(() => undefined);
  }

  /**
   * The session as the registry sees it now (newest Location, bytes held), or undefined when the
   * registry answered that it is gone. An unreachable registry throws, so the caller waits and asks
   * again: a registry that restarts keeps its upload sessions.
   */
  private async progressOf(session: UploadSession): Promise<UploadSession | undefined> {
    try {
      return await this.client.uploadProgress(session);
    } catch (e) {
      if (isPaced(e)) throw e;
      if (e instanceof ImageyardError && e.status !== undefined) {
        // Gone (404) or broken: a new session follows; make sure this one does not linger.
        await this.dropSession(session);
        return undefined;
      }
      throw e;
    }
  }

  private async streamBlob(session: UploadSession, w: BlobWrite): Promise<void> {
    const held = Math.min(session.offset, w.size);
    const label = `blob ${shortDigest(w.digest)}`;
    const wait: Wait | undefined = w.waits?.begin(label, w.sourcePeer ?? w.from);
    const onBytes = (n: number) => {
      if (wait) w.waits!.touch(wait);
      w.onBytes?.(n);
    };
    let sourceError: unknown;
    try {
      const source = await w.open();
      const verifier = verifyingStream({ digest: w.digest, size: w.size, from: w.from, skip: held, onBytes });
      // Every byte is in and verified: from now on the target's answer is what we wait for.
      verifier.on("end", () => wait && w.waits!.touch(wait, `an answer to the upload of ${label}`, this.peer));
      const body = source.pipe(verifier);
      source.on("error", (e) => {
        sourceError ??= e;
        verifier.destroy(e);
      });
      try {
        if (held === 0) {
          await this.client.putBlob(session, w.digest, body, w.size);
        } else {
          const rest = w.size - held;
          // A registry that holds every byte only needs the commit, once the digest is proven.
          let next = session;
          if (rest > 0) next = await this.client.patchBlob(session, body, held, rest);
          else await pipeline(body, discard());
          await this.client.commitBlob(next, w.digest);
        }
      } catch (e) {
        source.destroy();
        if (verifier.failure) throw verifier.failure;
        // The source broke off: whatever the upload then said, the target was not at fault.
        if (sourceError !== undefined && !w.signal?.aborted) throw sourceBroke(w, verifier.bytesRead, sourceError);
        throw e;
      }
    } finally {
      w.waits?.end(wait);
    }
  }
}

function isRegistryDigestInvalid(e: unknown): boolean {
  // The registry's verdict (a status), not our verifier's (which never reaches the registry).
  return isImageyardError(e, "DIGEST_MISMATCH") && e.status === 400;
}

function digestRejected(w: BlobWrite, peer: string, cause: unknown): ImageyardError {
  return new ImageyardError(
    "DIGEST_MISMATCH",
    `push blob ${shortDigest(w.digest)}… to ${peer}: the registry rejected the upload twice as not matching its digest (400 DIGEST_INVALID), although every byte sent was verified against that digest on the way. ` +
      `Another upload of the same blob to this registry (a concurrent copy) most likely raced it; run again.`,
    { status: 400, cause, retryable: true },
  );
}

function sourceBroke(w: BlobWrite, bytes: number, cause: unknown): ImageyardError {
  if (cause instanceof ImageyardError) return cause;
  const err = cause as { code?: string; message?: string };
  const why = [err?.code, err?.message].filter(Boolean).join(": ") || String(cause);
  return new ImageyardError(
    "NETWORK_ERROR",
    `pull blob ${shortDigest(w.digest)}… from ${w.sourcePeer ?? w.from}: the source broke off the blob after ${bytes} of ${w.size} bytes (${why}); the target was not at fault. ` +
      `Check ${w.sourcePeer ?? w.from} (or a proxy in between) and run again.`,
    { cause, retryable: true },
  );
}

function discard(): Writable {
  return new Writable({ write: (_c, _e, cb) => cb() });
}

/** A store over `client` (or a new one); `options.retry` also paces the blob transfer retries. */
export function openRegistryStore(registry: string, repository: string, options: RegistryOptions, client?: RegistryClient): RegistryStore {
  return new RegistryStore(
    client ?? new RegistryClient(registry, options),
    registry,
    repository,
    options.retry ? { ...BLOB_RETRY, ...options.retry } : BLOB_RETRY,
  );
}
