// How a RegistryClient call reaches the registry: options, auth (one 401 challenge answered),
// the https-then-http settling of loopback registries, retries of idempotent calls, the per-host
// rate-limit budget, and waits recorded for deadlines. registry.ts adds one method per endpoint.
import type { Dispatcher } from "undici";
import { drain, header, send, type HttpBody, type HttpRequest, type HttpResponse, type TlsOptions } from "../http/client";
import { ImageyardError } from "../http/errors";
import type { ProgressSink } from "../http/progress";
import { DEFAULT_RATE_LIMIT_BUDGET_MS, formatSeconds, type Pace } from "../http/ratelimit";
import { DEFAULT_RETRY, withRetry, type RetryPolicy } from "../http/retry";
import { waitingFor, type WaitBoard } from "../http/waits";
import { Authenticator, parseChallenges, type Credentials, type ResolvedCredentials } from "./auth";
import { lookupCredentials } from "./dockerconfig";
import { registryError, type RegistryTarget } from "./errors";
import { apiHost, isLoopbackRegistry } from "./reference";
import {
  isStream,
  knownScheme,
  probePlainHttp,
  rememberScheme,
  sharedDispatcher,
  stripQuery,
  tlsError,
  tlsOptions,
  type Scheme,
} from "./transport";

export interface RegistryOptions {
  /** Explicit credentials; otherwise the docker config lookup unless `dockerConfig` is false. */
  credentials?: Credentials;
  /** Path to a config.json/auth.json; default: REGISTRY_AUTH_FILE, containers auth.json, $DOCKER_CONFIG or ~/.docker. */
  dockerConfig?: string | false;
  tls?: TlsOptions;
  /** skopeo/docker style: *.crt are CAs, *.cert + *.key a client certificate. */
  certDir?: string;
  /** Default https; loopback hosts and insecure TLS try https, then fall back to http. */
  scheme?: "https" | "http";
  dispatcher?: Dispatcher;
  signal?: AbortSignal;
  retry?: RetryPolicy;
  /** Called after every response (auth token requests included); benches count requests. */
  onRequest?: (method: string, url: string, status: number) => void;
  /** The input named in auth errors ("targetAuth"); default "the credentials". */
  credentialsInput?: string;
  /** Which side of a copy this registry is, named in messages ("the source registry …"). */
  side?: "source" | "target";
  /**
   * Longest time in all this registry's host may keep us paused by rate limits (429, RateLimit
   * headers), counted once per host across every client in the process. Default 10 min.
   */
  rateLimitBudgetMs?: number;
  /**
   * Other hosts ("auth.example:8080") this registry may send credentials to over plain http: a
   * token realm elsewhere over http only gets them when listed here.
   */
  insecureHosts?: string[];
  /** Where waits are recorded, so a deadline can name what stalled. */
  waits?: WaitBoard;
  /** Notices (rate-limit pauses). */
  onProgress?: ProgressSink;
}

export interface Call {
  method: HttpRequest["method"];
  /** "/v2/…" on the registry, or an absolute upload URL. */
  path: string;
  headers?: Record<string, string>;
  body?: HttpBody;
  ok: number[];
  operation: string;
  target: string;
  object: RegistryTarget["object"];
  scopes: string[];
  /** Whether a failed attempt may be repeated: true for idempotent calls with replayable bodies. */
  retry: boolean;
  /** What the call waits for, in "waiting for …" lines (default: operation and target). */
  what?: string;
  /** Instead of the client's signal: clean-up that must run after a copy was cancelled. */
  signal?: AbortSignal;
}

/** Clean-up calls (cancelling upload sessions) get this long, even after the copy's deadline. */
export const CLEANUP_TIMEOUT_MS = 15_000;

export class RegistryTransport {
  readonly registry: string;
  /** Host serving the API (docker.io → registry-1.docker.io). */
  readonly host: string;
  private readonly dispatcher: Dispatcher;
  private readonly auth: Authenticator;
  private readonly retry: RetryPolicy;
  private readonly fixedScheme: Scheme | undefined;
  private readonly pace: Pace;
  /** "the source registry 127.0.0.1:5001", for messages. */
  readonly peer: string;

  constructor(
    registry: string,
    protected readonly opts: RegistryOptions = {},
  ) {
    this.registry = registry;
    this.host = apiHost(registry);
    this.peer = `the ${opts.side ? `${opts.side} ` : ""}registry ${registry}`;
    this.pace = {
      host: this.host,
      budgetMs: opts.rateLimitBudgetMs ?? DEFAULT_RATE_LIMIT_BUDGET_MS,
      onPause: (p) =>
        opts.onProgress?.({
          phase: "wait",
          item: registry,
          message: `rate-limited (${p.reason}): pausing requests for ${formatSeconds(p.waitMs)} (${formatSeconds(p.spentMs)} of ${formatSeconds(p.budgetMs)} budget used)`,
        }),
    };
    this.retry = opts.retry ?? DEFAULT_RETRY;
    const tls = tlsOptions(opts);
    this.dispatcher = opts.dispatcher ?? sharedDispatcher(tls);
    const autoScheme = opts.scheme === undefined && (isLoopbackRegistry(this.host) || tls?.insecure === true);
    this.fixedScheme = opts.scheme ?? (autoScheme ? undefined : "https");
    const hint = opts.credentialsInput ?? "the credentials";
    this.auth = new Authenticator({
      origin: this.host,
      registry,
      credentialsHint: hint,
      credentials: () => resolveCredentials(registry, opts, hint),
      dispatcher: this.dispatcher,
      insecureHosts: opts.insecureHosts ?? [],
      ...(opts.signal ? { signal: opts.signal } : {}),
      ...(opts.onRequest ? { onRequest: opts.onRequest } : {}),
    });
  }

  /** One call: retried as a whole when allowed. */
  protected call(c: Call): Promise<HttpResponse> {
    return this.withAttempts(c, () => this.once(c));
  }

  protected withAttempts<T>(c: Pick<Call, "retry" | "body" | "signal">, fn: () => Promise<T>): Promise<T> {
    const retry = c.retry && !isStream(c.body);
    const signal = c.signal ?? this.opts.signal;
    return retry ? withRetry(fn, this.retry, signal ? { signal } : {}) : fn();
  }

  /** Sends once, answering one 401 challenge; settles the scheme on the first call. */
  protected async once(c: Call): Promise<HttpResponse> {
    const replayable = !isStream(c.body);
    const subject = { operation: c.operation, target: c.target };
    const authorization = await this.auth.headerFor(c.scopes, subject);
    const first = await this.sendScheme(c, authorization, replayable);
    if (first.status !== 401 || c.ok.includes(401)) return first;
    await drain(first);
    if (!replayable) throw this.unauthorized(c, first);
    const retried = await this.auth.onUnauthorized(first, c.scopes, authorization, subject);
    const second = await this.sendScheme(c, retried, true);
    if (second.status !== 401) return second;
    await drain(second);
    throw this.unauthorized(c, second);
  }

  private async sendScheme(c: Call, authorization: string | undefined, expect401: boolean): Promise<HttpResponse> {
    if (/^https?:\/\//.test(c.path)) return this.sendTo(c, c.path, authorization, expect401);
    const known = this.fixedScheme ?? knownScheme(this.host) ?? (await this.plainHttp());
    if (known) return this.sendTo(c, `${known}://${this.host}${c.path}`, authorization, expect401);
    // Loopback or insecure: https first, plain http if the server does not speak TLS.
    try {
      const res = await this.sendTo(c, `https://${this.host}${c.path}`, authorization, expect401);
      rememberScheme(this.host, "https");
      return res;
    } catch (e) {
      if (!(e instanceof ImageyardError) || e.status !== undefined || e.code === "TLS_ERROR" || e.code === "CANCELLED" || isStream(c.body))
        throw e;
      const res = await this.sendTo(c, `http://${this.host}${c.path}`, authorization, expect401);
      rememberScheme(this.host, "http");
      return res;
    }
  }

  /** A loopback or insecure registry that answers a TLS hello in plain HTTP is remembered as http. */
  private async plainHttp(): Promise<Scheme | undefined> {
    const scheme = await waitingFor(this.opts.waits, `an answer to a TLS hello (http or https?)`, this.peer, () =>
      probePlainHttp(this.host),
    );
    if (scheme) rememberScheme(this.host, scheme);
    return scheme;
  }

  private async sendTo(c: Call, url: string, authorization: string | undefined, expect401: boolean): Promise<HttpResponse> {
    const headers: Record<string, string> = { ...c.headers };
    // Credentials go to the registry's own host only, never to a Location on another one.
    if (authorization && new URL(url).host === this.host) headers.authorization = authorization;
    const target: () => RegistryTarget = () => ({
      operation: c.operation,
      target: c.target,
      registry: this.registry,
      object: c.object,
      peer: this.peer,
      ...this.auth.describe(),
    });
    const req: HttpRequest = {
      method: c.method,
      url,
      headers,
      body: c.body ?? null,
      ok: expect401 ? [...c.ok, 401] : c.ok,
      operation: `${c.operation} ${c.target}`,
      dispatcher: this.dispatcher,
      mapError: (ctx) => registryError(ctx, target()),
      peer: this.peer,
      pace: this.pace,
    };
    const signal = c.signal ?? this.opts.signal;
    if (signal) req.signal = signal;
    try {
      // A streamed body's silence is the caller's to watch (its bytes say whether it moves).
      const res = isStream(c.body)
        ? await send(req)
        : await waitingFor(this.opts.waits, c.what ?? `${c.operation} ${c.target}`, this.peer, () => send(req));
      this.opts.onRequest?.(c.method, stripQuery(url), res.status);
      return res;
    } catch (e) {
      const status = (e as { status?: number }).status;
      if (status !== undefined) this.opts.onRequest?.(c.method, stripQuery(url), status);
      throw tlsError(e, `${c.operation} ${c.target}`, this.registry) ?? e;
    }
  }

  /**
   * A 401 that authentication could not cure. With accepted credentials and a token that lacks
   * the scope (error="insufficient_scope"), the account may not do this: that is a denial.
   */
  private unauthorized(c: Call, res: HttpResponse): ImageyardError {
    const who = this.auth.describe();
    const insufficient = parseChallenges(res.headers["www-authenticate"]).some(
      (ch) => ch.scheme === "bearer" && ch.params.error === "insufficient_scope",
    );
    const target: RegistryTarget = { operation: c.operation, target: c.target, registry: this.registry, object: c.object, ...who };
    const status = insufficient && who.hadCredentials ? 403 : 401;
    const err = registryError(
      {
        request: { method: c.method, url: c.path, ok: c.ok, operation: c.operation },
        status,
        headers: res.headers,
        body: "",
        retryAfterMs: undefined,
      },
      target,
    );
    if (status === 403) {
      return new ImageyardError(
        "REGISTRY_DENIED",
        err.message.replace("(403 DENIED)", `(401 insufficient_scope; requested ${c.scopes.join(" ")})`),
        { status: 401, cause: err },
      );
    }
    return err;
  }

  /** The newest Location, made absolute. */
  protected location(res: HttpResponse, base: string): string {
    const loc = header(res.headers, "location");
    if (!loc)
      throw new ImageyardError(
        "HTTP_ERROR",
        `push ${this.registry}: the registry answered an upload call without a Location header. Check the registry.`,
      );
    const baseUrl = /^https?:\/\//.test(base) ? base : `${this.fixedScheme ?? knownScheme(this.host) ?? "https"}://${this.host}${base}`;
    return new URL(loc, baseUrl).toString();
  }
}

async function resolveCredentials(registry: string, opts: RegistryOptions, hint: string): Promise<ResolvedCredentials> {
  if (opts.credentials) return { credentials: opts.credentials, source: hint };
  if (opts.dockerConfig === false) return { credentials: undefined, source: hint };
  const found = await lookupCredentials(registry, opts.dockerConfig ? { path: opts.dockerConfig } : {});
  return found ?? { credentials: undefined, source: hint };
}
