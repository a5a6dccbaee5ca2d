// One small interface over the places images live (a registry repository, an OCI layout on disk),
// so the planner and executor are written once for registry ↔ registry, registry → layout and
// layout → registry. Blob writes verify what they store; see digest.ts.
import { pipeline } from "node:stream/promises";
import { Writable, type Readable } from "node:stream";
import { ImageyardError } from "../http/errors";
import { abortableSleep, backoffDelay, DEFAULT_RETRY, isRetryable, type RetryPolicy } from "../http/retry";
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
  /** Bytes read from the source so far in the current attempt. */
  onBytes?: (bytes: number) => void;
  signal?: AbortSignal;
}

export interface ImageStore {
  readonly kind: "registry" | "layout" | "archive";
  /** "127.0.0.1:5001/team/app" or "oci:/srv/images" */
  readonly name: string;
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

  constructor(
    readonly client: RegistryClient,
    readonly registry: string,
    readonly repository: string,
    /** Attempts and backoff for starting or resuming one blob transfer. */
    private readonly blobRetry: RetryPolicy = BLOB_RETRY,
  ) {
    this.name = `${registry}/${repository}`;
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
    for (let attempt = 1; ; attempt++) {
      try {
        if (session && stale) session = await this.progressOf(session);
        stale = false;
        session ??= await this.client.startUpload(this.repository);
        await this.streamBlob(session, w);
        return;
      } catch (e) {
        if (attempt >= this.blobRetry.attempts || !isRetryable(e) || w.signal?.aborted) {
          if (session) await this.client.cancelUpload(session).catch(() => undefined);
          throw e;
        }
        await abortableSleep(backoffDelay(this.blobRetry, attempt, e), w.signal);
        stale = true;
      }
    }
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
      if (e instanceof ImageyardError && e.status !== undefined) return undefined;
      throw e;
    }
  }

  private async streamBlob(session: UploadSession, w: BlobWrite): Promise<void> {
    const held = Math.min(session.offset, w.size);
    const source = await w.open();
    const verifier = verifyingStream({ digest: w.digest, size: w.size, from: w.from, skip: held, ...(w.onBytes ? { onBytes: w.onBytes } : {}) });
    const body = source.pipe(verifier);
    source.on("error", (e) => verifier.destroy(e));
    try {
      if (held === 0) {
        await this.client.putBlob(session, w.digest, body, w.size);
      } else {
        const rest = w.size - held;
        // A registry that holds every byte only needs the commit, once the digest is proven.
        const next = rest > 0 ? await this.client.patchBlob(session, body, held, rest) : (await pipeline(body, discard()), session);
        await this.client.commitBlob(next, w.digest);
      }
    } catch (e) {
      source.destroy();
      throw verifier.failure ?? e;
    }
  }
}

function discard(): Writable {
  return new Writable({ write: (_c, _e, cb) => cb() });
}


/** A store over `client` (or a new one); `options.retry` also paces the blob transfer retries. */
export function openRegistryStore(registry: string, repository: string, options: RegistryOptions, client?: RegistryClient): RegistryStore {
  return new RegistryStore(client ?? new RegistryClient(registry, options), registry, repository, options.retry ? { ...BLOB_RETRY, ...options.retry } : BLOB_RETRY);
}
