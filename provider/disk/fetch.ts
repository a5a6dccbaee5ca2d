// Streaming downloads of disk images from http(s) or file:// URLs. A connection that drops
// mid-body is resumed with `Range: bytes=N-`; a server that answers 200 instead of 206 is read
// again from the start and the bytes already delivered are skipped, so the consumer sees one
// unbroken stream either way.
import { createReadStream } from "node:fs";
import { stat } from "node:fs/promises";
import { Readable } from "node:stream";
import { fileURLToPath } from "node:url";
import type { Dispatcher } from "undici";
import { defaultHttpError, header, readBytes, send, type HttpResponse } from "../http/client";
import { ImageyardError, redactUrl } from "../http/errors";
import type { ProgressSink } from "../http/progress";
import { abortableSleep, backoffDelay, DEFAULT_RETRY, isRetryable, withRetry, type RetryPolicy } from "../http/retry";
import { DiskImageError, downloadTarget } from "./errors";

export interface FetchOptions {
  dispatcher?: Dispatcher;
  signal?: AbortSignal;
  onProgress?: ProgressSink;
  /** Refuse sources larger than this many bytes (checked against Content-Length and while reading). */
  maxBytes?: number;
  retry?: RetryPolicy;
  /** Progress item name; defaults to the URL's file name. */
  item?: string;
  /** Let file:// URLs read this host's files (off by default: a source URL must not expose them). */
  allowLocalFiles?: boolean;
  /**
   * Longest wait for the next bytes of a body while this side is ready for them (default 120 s);
   * then the connection is dropped and the download resumed. It also ends a body that undici
   * left paused on a closed socket (its parser asserts in that case and never ends the body).
   */
  idleTimeoutMs?: number;
}

export interface Download {
  url: string;
  /** Bytes announced by the server or the file system, when known. */
  total: number | undefined;
  stream: Readable;
  /** How many times the body was resumed or restarted after a dropped connection. */
  resumes(): number;
}

const PROGRESS_STEP = 8 * 1024 * 1024;
const DEFAULT_IDLE_MS = 120_000;

/**
 * A body cut short is worth resuming: a dropped connection, and a server that closed it before
 * Content-Length bytes (undici reports that as a length mismatch, not as a network error).
 */
function resumable(e: unknown): boolean {
  const code = (e as { code?: string })?.code;
  return isRetryable(e) || code === "UND_ERR_RES_CONTENT_LENGTH_MISMATCH" || code === "UND_ERR_SOCKET" || code === "IDLE_TIMEOUT";
}

/** The body's chunks, failing (resumably) when none arrives for `ms` while one is awaited. */
async function* idleLimited(body: Readable, ms: number, what: string): AsyncGenerator<Buffer> {
  const it = body[Symbol.asyncIterator]();
  try {
    for (;;) {
      let timer: NodeJS.Timeout | undefined;
      const stalled = new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(Object.assign(new Error(`${what}: no data for ${Math.round(ms / 1000)} s`), { code: "IDLE_TIMEOUT" })),
          ms,
        );
      });
      try {
        const r = await Promise.race([it.next(), stalled]);
        if (r.done) return;
        yield r.value as Buffer;
      } finally {
        clearTimeout(timer);
      }
    }
  } finally {
    // Also on a stall: destroying the body frees its socket, whatever state undici left it in.
    body.destroy();
  }
}

/**
 * Opens a download. The first request is made before this resolves, so a 404 or a refused
 * connection fails here rather than in the middle of a pipeline.
 */
export async function openDownload(url: string, opts: FetchOptions = {}): Promise<Download> {
  const parsed = parseSourceUrl(url, "source.url", opts.allowLocalFiles ?? false);
  if (parsed.protocol === "file:") return openFile(url, parsed, opts);
  return openHttp(url, opts);
}

export function parseSourceUrl(url: string, property = "source.url", allowLocalFiles = true): URL {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new DiskImageError(
      "INVALID_INPUT",
      `${property} "${redactUrl(url)}": not a URL. Use an http(s):// or file:// URL, e.g. "https://cloud.debian.org/images/cloud/bookworm/latest/debian-12-generic-amd64.qcow2".`,
    );
  }
  if (!["http:", "https:", "file:"].includes(u.protocol)) {
    throw new DiskImageError(
      "INVALID_INPUT",
      `${property} "${redactUrl(url)}": unsupported scheme ${u.protocol}. Use http://, https:// or file://.`,
    );
  }
  if (u.protocol === "file:" && !allowLocalFiles) {
    throw new DiskImageError(
      "INVALID_INPUT",
      `${property} "${redactUrl(url)}": file:// URLs read files of the host that runs the provider and are off by default. Use an http(s):// URL, or set allowLocalFiles: true to publish a local file on purpose.`,
    );
  }
  return u;
}

async function openFile(url: string, u: URL, opts: FetchOptions): Promise<Download> {
  const path = fileURLToPath(u);
  const what = downloadTarget(url);
  let size: number;
  try {
    const st = await stat(path);
    if (!st.isFile()) throw Object.assign(new Error("not a regular file"), { code: "EISDIR" });
    size = st.size;
  } catch (e) {
    throw new DiskImageError(
      "INVALID_INPUT",
      `${what}: cannot read ${path} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}). Check source.url.`,
      { cause: e },
    );
  }
  checkCap(what, size, opts.maxBytes);
  const item = opts.item ?? u.pathname.split("/").pop() ?? path;
  const counter = progressCounter(opts, item, size);
  async function* body(): AsyncGenerator<Buffer> {
    for await (const chunk of createReadStream(path, { highWaterMark: 1 << 20, signal: opts.signal })) {
      counter(chunk.length, false);
      yield chunk as Buffer;
    }
    counter(0, true);
  }
  return { url, total: size, stream: Readable.from(body(), { objectMode: false }), resumes: () => 0 };
}

async function openHttp(url: string, opts: FetchOptions): Promise<Download> {
  const policy = opts.retry ?? DEFAULT_RETRY;
  const what = downloadTarget(url);
  const idleMs = opts.idleTimeoutMs ?? DEFAULT_IDLE_MS;
  const get = (headers: Record<string, string>) =>
    send({
      method: "GET",
      url,
      headers: { "accept-encoding": "identity", ...headers },
      ok: [200, 206],
      operation: what,
      dispatcher: opts.dispatcher,
      signal: opts.signal,
      mapError: (ctx) =>
        defaultHttpError(
          ctx,
          "HTTP_ERROR",
          ctx.status === 404 || ctx.status === 410
            ? "Check source.url"
            : ctx.status === 401 || ctx.status === 403
              ? "The server refused access; check source.url"
              : "",
        ),
    });

  const first = await withRetry(() => get({}), policy, { signal: opts.signal });
  const total = contentLength(first);
  checkCap(what, total, opts.maxBytes);
  // If-Range makes the server send the whole (new) file when the file changed since the first
  // response, instead of splicing two versions together.
  const validator = strongValidator(first);
  const item = opts.item ?? (new URL(url).pathname.split("/").pop() || "image");
  const counter = progressCounter(opts, item, total);
  let resumes = 0;

  async function* body(): AsyncGenerator<Buffer> {
    let res: HttpResponse = first;
    let offset = 0;
    let skip = 0;
    let failures = 0;
    for (;;) {
      try {
        for await (const raw of idleLimited(res.body, idleMs, what)) {
          let chunk = raw as Buffer;
          if (skip > 0) {
            // A server that ignored Range sent the file from byte 0 again: drop what we already passed on.
            const n = Math.min(skip, chunk.length);
            skip -= n;
            chunk = chunk.subarray(n);
            if (chunk.length === 0) continue;
          }
          offset += chunk.length;
          failures = 0;
          if (opts.maxBytes !== undefined && offset > opts.maxBytes) throw capError(what, opts.maxBytes);
          counter(chunk.length, false);
          yield chunk;
          // Every announced byte is in: stop here rather than wait for the message's end, which
          // undici can fail to deliver when the server closes a paused connection (its parser
          // asserts !paused in the socket's end handler and the body then never ends).
          if (total !== undefined && offset >= total) break;
        }
        if (total !== undefined && offset < total) {
          throw Object.assign(new Error(`body ended after ${offset} of ${total} bytes`), { code: "UND_ERR_SOCKET" });
        }
        counter(0, true);
        return;
      } catch (e) {
        failures++;
        if (total !== undefined && offset === total && !(e instanceof ImageyardError)) {
          // Every byte arrived; only the connection's end went wrong (a server closing it early).
          counter(0, true);
          return;
        }
        if (!resumable(e) || opts.signal?.aborted || failures >= policy.attempts) throw bodyError(what, offset, e);
        await abortableSleep(backoffDelay(policy, failures, e), opts.signal);
        resumes++;
        opts.onProgress?.({ phase: "download", item, bytes: offset, total, message: `connection dropped; resuming at byte ${offset}` });
        const headers: Record<string, string> = { range: `bytes=${offset}-` };
        if (validator) headers["if-range"] = validator;
        res = await withRetry(() => get(headers), policy, { signal: opts.signal });
        skip = 0;
        if (res.status === 206) {
          const start = rangeStart(header(res.headers, "content-range"));
          if (start !== offset) {
            // A 206 for another range than asked cannot be spliced; read the whole file again.
            res.body.destroy();
            res = await withRetry(() => get({}), policy, { signal: opts.signal });
            skip = offset;
          }
        } else {
          const now = strongValidator(res);
          if (validator && now && now !== validator) {
            res.body.destroy();
            throw new DiskImageError(
              "INVALID_INPUT",
              `${what}: the file changed on the server during the download (validator ${validator} became ${now}). Run again.`,
              { retryable: false },
            );
          }
          skip = offset;
        }
      }
    }
  }

  return { url, total, stream: Readable.from(body(), { objectMode: false }), resumes: () => resumes };
}

function contentLength(res: HttpResponse): number | undefined {
  if (res.status === 206) {
    const m = /\/(\d+)\s*$/.exec(header(res.headers, "content-range") ?? "");
    return m ? Number(m[1]) : undefined;
  }
  const v = header(res.headers, "content-length");
  return v !== undefined && /^\d+$/.test(v) ? Number(v) : undefined;
}

function strongValidator(res: HttpResponse): string | undefined {
  const etag = header(res.headers, "etag");
  if (etag && !etag.startsWith("W/")) return etag;
  return header(res.headers, "last-modified");
}

export function rangeStart(contentRange: string | undefined): number | undefined {
  const m = /^bytes\s+(\d+)-\d+\/(\d+|\*)$/.exec((contentRange ?? "").trim());
  return m ? Number(m[1]) : undefined;
}

function checkCap(what: string, size: number | undefined, max: number | undefined): void {
  if (size !== undefined && max !== undefined && size > max) throw capError(what, max, size);
}

export function capError(what: string, max: number, size?: number): DiskImageError {
  return new DiskImageError(
    "SIZE_MISMATCH",
    `${what}: ${size === undefined ? "more than" : `${size} bytes, over`} the size cap of ${max} bytes. Raise maxBytes if the image is meant to be this large.`,
  );
}

function bodyError(what: string, offset: number, e: unknown): unknown {
  const err = e as { code?: string; message?: string; name?: string };
  if (err?.name === "AbortError") {
    return new DiskImageError("CANCELLED", `${what}: cancelled after ${offset} bytes`, { cause: e });
  }
  if (e instanceof ImageyardError) return e;
  return new DiskImageError(
    "NETWORK_ERROR",
    `${what}: the connection failed after ${offset} bytes and could not be resumed (${err?.code ?? err?.message ?? String(e)}). Check that the server is reachable and try again.`,
    { cause: e, retryable: true },
  );
}

function progressCounter(opts: FetchOptions, item: string, total: number | undefined): (n: number, done: boolean) => void {
  let bytes = 0;
  let lastReported = 0;
  return (n, done) => {
    bytes += n;
    if (!opts.onProgress) return;
    if (done) opts.onProgress({ phase: "download", item, bytes, total, done: true });
    else if (bytes - lastReported >= PROGRESS_STEP) {
      lastReported = bytes;
      opts.onProgress({ phase: "download", item, bytes, total });
    }
  };
}

/** Reads a small text document (a SUMS file) from http(s) or file://, capped. */
export async function fetchText(url: string, opts: FetchOptions & { what?: string }, max = 4 * 1024 * 1024): Promise<string> {
  const what = opts.what ?? `read ${redactUrl(url)}`;
  const u = parseSourceUrl(url, "source.checksumUrl", opts.allowLocalFiles ?? false);
  if (u.protocol === "file:") {
    const dl = await openFile(url, u, { ...opts, maxBytes: max, onProgress: undefined });
    const chunks: Buffer[] = [];
    for await (const c of dl.stream) chunks.push(c as Buffer);
    return Buffer.concat(chunks).toString("utf8");
  }
  const res = await withRetry(
    () =>
      send({
        method: "GET",
        url,
        ok: [200],
        operation: what,
        dispatcher: opts.dispatcher,
        signal: opts.signal,
        mapError: (ctx) => defaultHttpError(ctx, "HTTP_ERROR", "Check source.checksumUrl"),
      }),
    opts.retry ?? DEFAULT_RETRY,
    { signal: opts.signal },
  );
  return (await readBytes(res, max, what)).toString("utf8");
}
