// The one undici layer: dispatchers (TLS, timeouts, redirects), a request call that states the
// statuses it accepts, and capped body readers. Engines never call undici directly.
import type { Readable } from "node:stream";
import type { Agent as AgentType, Dispatcher, interceptors as Interceptors } from "undici";
import "./deferH2";

// undici's index loads fetch, websockets, caches and mocks too: twice the start-up time of the
// three modules used here, and start-up is most of a no-op copy from the CLI.
const Agent: typeof AgentType = require("undici/lib/dispatcher/agent");
const redirect: typeof Interceptors.redirect = require("undici/lib/interceptor/redirect");
const apiRequest: (
  this: Dispatcher,
  opts: Record<string, unknown>,
) => Promise<Dispatcher.ResponseData<unknown>> = require("undici/lib/api/api-request");
/* eslint-enable @typescript-eslint/no-require-imports */

/** undici's `request(url, opts)`, without its index: origin and path split as it does. */
function request(url: string, opts: { dispatcher: Dispatcher } & Record<string, unknown>): Promise<Dispatcher.ResponseData<unknown>> {
  const u = new URL(url);
  const { dispatcher, ...rest } = opts;
  return apiRequest.call(dispatcher, { ...rest, origin: u.origin, path: `${u.pathname}${u.search}` });
}
import { capBody, HttpStatusError, ImageyardError, isRetryableNetworkError, isRetryableStatus, redactUrl, type ErrorCode } from "./errors";
import { header, parseRetryAfter, type HttpHeaders } from "./headers";
import { awaitHost, formatSeconds, isRateLimited, limitedWait, noteQuota, pauseHost, type Pace } from "./ratelimit";

export { header, parseRetryAfter, type HttpHeaders } from "./headers";

export interface TlsOptions {
  /** Extra CA certificates (PEM), trusted in addition to the system roots. */
  ca?: string[];
  /** Skip certificate verification (explicit opt-in per registry or endpoint). */
  insecure?: boolean;
  /** Client certificate and key (PEM), for mutual TLS. */
  cert?: string;
  key?: string;
}

export interface DispatcherOptions {
  tls?: TlsOptions;
  /** Connections per origin. */
  connections?: number;
  connectTimeoutMs?: number;
  headersTimeoutMs?: number;
  /** Longest silence while a body streams. */
  bodyTimeoutMs?: number;
  maxRedirections?: number;
}

export function createDispatcher(opts: DispatcherOptions = {}): Dispatcher {
  const tls = opts.tls ?? {};
  const connect: Record<string, unknown> = { timeout: opts.connectTimeoutMs ?? 15_000 };
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  if (tls.ca && tls.ca.length > 0) connect.ca = [...(require("node:tls") as typeof import("node:tls")).rootCertificates, ...tls.ca];
  if (tls.insecure) {
    connect.rejectUnauthorized = false;
    // Nothing is verified, so no trust store is needed: an empty CA list keeps Node from parsing
    // its ~150 root certificates (and NODE_EXTRA_CA_CERTS) for every insecure TLS connection's
    // first context, 20 ms of CPU on a busy machine (most of a loopback registry's https probe).
    connect.ca ??= [];
  }
  if (tls.cert) connect.cert = tls.cert;
  if (tls.key) connect.key = tls.key;
  const agent = new Agent({
    connections: opts.connections ?? 8,
    headersTimeout: opts.headersTimeoutMs ?? 120_000,
    bodyTimeout: opts.bodyTimeoutMs ?? 300_000,
    keepAliveTimeout: 10_000,
    connect,
  });
  return agent.compose(redirect({ maxRedirections: opts.maxRedirections ?? 5 }));
}

let shared: Dispatcher | undefined;
/** A process-wide default dispatcher for calls that need no TLS options of their own. */
export function defaultDispatcher(): Dispatcher {
  shared ??= createDispatcher();
  return shared;
}

export type HttpBody = string | Buffer | Uint8Array | Readable | null;

export interface HttpRequest {
  method: "GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE";
  url: string;
  headers?: Record<string, string>;
  body?: HttpBody;
  /** Statuses this call accepts; anything else throws. */
  ok: readonly number[];
  /** What the call does, for error messages: "pull 127.0.0.1:5001/library/alpine". */
  operation: string;
  dispatcher?: Dispatcher;
  signal?: AbortSignal;
  /** Turns an unaccepted status into a typed error; the default gives HTTP_ERROR. */
  mapError?: (res: HttpErrorContext) => ImageyardError;
  /** Who answers, for messages: "the target registry 127.0.0.1:5002" (default: the URL's host). */
  peer?: string;
  /** Waits out rate limits within the host's shared budget (ratelimit.ts); replayable bodies are resent. */
  pace?: Pace;
}

export interface HttpErrorContext {
  request: HttpRequest;
  status: number;
  headers: HttpHeaders;
  /** Capped, whitespace-folded body text. */
  body: string;
  retryAfterMs: number | undefined;
  /** The rate limiter has scheduled the wait for this answer (a 429 on a streamed body). */
  paced?: boolean;
}

export interface HttpResponse {
  status: number;
  headers: HttpHeaders;
  body: Dispatcher.ResponseData<unknown>["body"];
}

/** Sends one request; returns the response only when its status is in `ok`. */
export async function send(req: HttpRequest): Promise<HttpResponse> {
  for (;;) {
    if (req.pace) await awaitHost(req.pace.host, req.signal);
    let res: Dispatcher.ResponseData<unknown>;
    try {
      res = await request(req.url, {
        method: req.method,
        headers: req.headers,
        body: req.body ?? null,
        dispatcher: req.dispatcher ?? defaultDispatcher(),
        signal: req.signal,
        // undici closes the connection after every HEAD (against servers that send a body anyway),
        // so each HEAD paid a new TCP (and TLS) handshake: a plan HEADs every blob and a preview
        // every image. Registries answer HEAD as HTTP says, and Go, curl and Node's http keep the
        // connection; so do we.
        ...(req.method === "HEAD" ? { reset: false } : {}),
      } as Parameters<typeof request>[1]);
    } catch (e) {
      throw networkError(req, e);
    }
    let paced = false;
    if (req.pace && !req.ok.includes(res.statusCode) && isRateLimited(res.statusCode, res.headers)) {
      const { waitMs, reason } = limitedWait(req.pace.host, res.headers);
      const outcome = pauseHost(req.pace, waitMs, `${res.statusCode} ${reason}`);
      if (!outcome.ok) {
        await res.body.dump().catch(() => undefined);
        throw budgetSpent(req, res.statusCode, outcome.info);
      }
      // A body we can send again goes round once the pause is over; a stream goes back to its caller.
      if (!isStreamBody(req.body)) {
        await res.body.dump().catch(() => undefined);
        continue;
      }
      paced = true;
    } else if (req.pace) {
      noteQuota(req.pace, res.headers);
    }
    if (req.ok.includes(res.statusCode)) return { status: res.statusCode, headers: res.headers, body: res.body };
    const text = req.method === "HEAD" ? "" : await readCapped(res.body, 64 * 1024).catch(() => "");
    const ctx: HttpErrorContext = {
      request: req,
      status: res.statusCode,
      headers: res.headers,
      body: capBody(text),
      retryAfterMs: parseRetryAfter(header(res.headers, "retry-after")),
      ...(paced ? { paced } : {}),
    };
    throw (req.mapError ?? defaultHttpError)(ctx);
  }
}

function isStreamBody(body: HttpBody | undefined): boolean {
  return typeof body === "object" && body !== null && typeof (body as { pipe?: unknown }).pipe === "function";
}

function budgetSpent(req: HttpRequest, status: number, info: { spentMs: number; budgetMs: number; reason: string }): ImageyardError {
  return new ImageyardError(
    "TOO_MANY_REQUESTS",
    `${req.operation}: ${req.peer ?? safeHost(req.url)} keeps rate-limiting requests (${info.reason}); waiting again would bring the time it has kept us waiting to ${formatSeconds(info.spentMs)}, past the rate-limit budget of ${formatSeconds(info.budgetMs)} (${status === 429 ? "429 TOOMANYREQUESTS" : status}). Run again later, authenticate for a higher limit, or allow more waiting (--rate-limit-wait, rateLimitBudgetMs).`,
    { status, retryable: false },
  );
}

export function defaultHttpError(ctx: HttpErrorContext, code: ErrorCode = "HTTP_ERROR", hint = ""): HttpStatusError {
  const { request: req, status } = ctx;
  const detail = ctx.body ? `: ${ctx.body}` : "";
  return new HttpStatusError(
    code,
    `${req.operation}: ${req.method} ${redactUrl(req.url)} answered ${status}${detail}${hint ? `. ${hint}` : ""}`,
    req.method,
    req.url,
    { status, body: ctx.body, retryable: isRetryableStatus(status), retryAfterMs: ctx.retryAfterMs, paced: ctx.paced ?? false },
  );
}

function networkError(req: HttpRequest, e: unknown): ImageyardError {
  if (e instanceof ImageyardError) return e;
  const err = e as { name?: string; code?: string; message?: string };
  if (err?.name === "AbortError" || req.signal?.aborted) {
    return new ImageyardError("CANCELLED", `${req.operation}: cancelled`, { cause: e });
  }
  const host = safeHost(req.url);
  const code = err?.code ? ` (${err.code})` : "";
  return new ImageyardError(
    err?.code?.includes("TIMEOUT") ? "TIMEOUT" : "NETWORK_ERROR",
    `${req.operation}: cannot reach ${req.peer ?? host}${code}: ${err?.message ?? String(e)}. Check that ${req.peer ?? "the endpoint"} is up and the address is right.`,
    { cause: e, retryable: isRetryableNetworkError(e) },
  );
}

function safeHost(url: string): string {
  try {
    return new URL(url).host;
  } catch {
    return url;
  }
}

/** Reads at most `max` bytes of text, discarding the rest. */
export async function readCapped(body: AsyncIterable<Buffer | Uint8Array>, max: number): Promise<string> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const chunk of body) {
    if (n < max) {
      const b = Buffer.from(chunk);
      chunks.push(b.subarray(0, max - n));
      n += b.length;
    }
  }
  return Buffer.concat(chunks).toString("utf8");
}

/** Reads a small body whole (manifests, JSON documents); refuses anything over `max`. */
export async function readBytes(res: HttpResponse, max: number, what: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const chunk of res.body) {
    const b = Buffer.from(chunk);
    n += b.length;
    if (n > max) {
      res.body.destroy();
      throw new ImageyardError("INVALID_INPUT", `${what}: response is larger than ${max} bytes; refusing to buffer it`);
    }
    chunks.push(b);
  }
  return Buffer.concat(chunks);
}

export async function readJson<T>(res: HttpResponse, what: string, max = 4 * 1024 * 1024): Promise<T> {
  const buf = await readBytes(res, max, what);
  try {
    return JSON.parse(buf.toString("utf8")) as T;
  } catch (e) {
    throw new ImageyardError("HTTP_ERROR", `${what}: response is not valid JSON (${(e as Error).message})`, { cause: e });
  }
}

/** Discards a body so the connection can be reused. */
export async function drain(res: HttpResponse): Promise<void> {
  try {
    await res.body.dump();
  } catch {
    /* the socket is closed either way */
  }
}
