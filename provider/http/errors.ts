// One error family for every engine. Branded the undici way: a serialized dynamic provider
// may load its own copy of this module, and `instanceof` must still hold across copies. Every
// class gets its own brand (Symbol.for of its brand name) on its prototype, so `instanceof` a
// subclass matches that subclass and its descendants, never its siblings.

const BRAND_PREFIX = "imageyard.error.";

/** The global symbol that marks instances of a class with this brand name. */
function brandSymbol(brand: string): symbol {
  return Symbol.for(`${BRAND_PREFIX}${brand}`);
}

export type ErrorCode =
  | "INVALID_INPUT"
  | "HTTP_ERROR"
  | "NETWORK_ERROR"
  | "TIMEOUT"
  | "REGISTRY_UNAUTHORIZED"
  | "REGISTRY_DENIED"
  | "MANIFEST_UNKNOWN"
  | "MANIFEST_INVALID"
  | "BLOB_UNKNOWN"
  | "NAME_UNKNOWN"
  | "UNSUPPORTED"
  | "TOO_MANY_REQUESTS"
  | "TLS_ERROR"
  | "DIGEST_MISMATCH"
  | "SIZE_MISMATCH"
  | "CHECKSUM_MISMATCH"
  | "KEYSTONE_UNAUTHORIZED"
  | "GLANCE_ERROR"
  | "GLANCE_IMPORT_FAILED"
  | "GLANCE_PROTECTED"
  | "GLANCE_NOT_FOUND"
  | "GLANCE_FORBIDDEN"
  | "GLANCE_CONFLICT"
  | "GLANCE_TOO_LARGE"
  | "GLANCE_TIMEOUT"
  | "KEYSTONE_NO_ENDPOINT"
  | "CLOUD_CONFIG"
  | "QEMU_FAILED"
  | "UNSAFE_IMAGE"
  | "NO_SPACE"
  | "NODE_PULL_FAILED"
  | "KUBE_CONFIG"
  | "KUBE_UNAUTHORIZED"
  | "KUBE_FORBIDDEN"
  | "KUBE_NOT_FOUND"
  | "KUBE_CONFLICT"
  | "KUBE_ERROR"
  | "CANCELLED";

export interface ImageyardErrorOptions {
  retryable?: boolean;
  cause?: unknown;
  status?: number;
  /** Response body, capped; never holds credentials. */
  body?: string;
  /** Server-requested wait before a retry (Retry-After), in ms. */
  retryAfterMs?: number;
  /**
   * A rate limit the per-host limiter (ratelimit.ts) has already scheduled the wait for: a retry
   * waits there and is charged to the host's time budget, not counted as an attempt.
   */
  paced?: boolean;
}

export class ImageyardError extends Error {
  readonly code: ErrorCode;
  readonly retryable: boolean;
  readonly status: number | undefined;
  readonly body: string | undefined;
  readonly retryAfterMs: number | undefined;
  readonly paced: boolean;

  constructor(code: ErrorCode, message: string, opts: ImageyardErrorOptions = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = "ImageyardError";
    this.code = code;
    this.retryable = opts.retryable ?? false;
    this.status = opts.status;
    this.body = opts.body;
    this.retryAfterMs = opts.retryAfterMs;
    this.paced = opts.paced ?? false;
    brandChain(new.target);
  }

  /**
   * The name that brands instances of this class; the class name unless a subclass overrides it.
   * Names must be unique across the package (a test checks), and a bundler must keep class names.
   */
  static get brand(): string {
    // biome-ignore lint/complexity/noThisInStatic: `this` is the subclass asked about; its own name is its brand
    return this.name;
  }

  static override [Symbol.hasInstance](instance: unknown): boolean {
    if (typeof instance !== "object" || instance === null) return false;
    // biome-ignore lint/complexity/noThisInStatic: `this` is the class on the right of instanceof, a subclass included
    return (instance as Record<symbol, unknown>)[brandSymbol((this as typeof ImageyardError).brand)] === true;
  }
}

/** Puts the brand of every class from `leaf` up to ImageyardError on its prototype, once per class. */
type ErrorClass = { name: string; prototype: object; brand?: string };
function brandChain(leaf: ErrorClass): void {
  for (let c: ErrorClass | null = leaf; c && c !== Object && c !== Error; c = Object.getPrototypeOf(c) as ErrorClass | null) {
    const key = brandSymbol(c.brand ?? c.name);
    if (Object.hasOwn(c.prototype, key)) return; // this class and its parents are done
    Object.defineProperty(c.prototype, key, { value: true, enumerable: false });
    if (c === ImageyardError) return;
  }
}

/** An HTTP status outside the ones a call accepts. */
export class HttpStatusError extends ImageyardError {
  readonly method: string;
  readonly url: string;
  constructor(code: ErrorCode, message: string, method: string, url: string, opts: ImageyardErrorOptions = {}) {
    super(code, message, opts);
    this.name = "HttpStatusError";
    this.method = method;
    this.url = redactUrl(url);
  }
}

export function isImageyardError(e: unknown, code?: ErrorCode): e is ImageyardError {
  return e instanceof ImageyardError && (code === undefined || (e as ImageyardError).code === code);
}

/** Statuses worth another try on an idempotent request. */
export function isRetryableStatus(status: number): boolean {
  return status === 408 || status === 429 || status === 500 || status === 502 || status === 503 || status === 504;
}

const SENSITIVE_QUERY =
  /^(x-amz-|x-goog-|sig|signature|token|access_token|refresh_token|id_token|_state|se$|sp$|sv$|st$|password$|passwd$|pass$|secret$|client_secret$|key$|api_?key$|apikey$|auth$|authorization$|credential|code$)/i;
const RELATIVE_BASE = "http://relative.invalid";

/** Drops user info and signed query values so a URL can go into a message or a log. */
export function redactUrl(raw: string): string {
  // Relative URLs (a registry's upload Location) carry signed state just the same.
  const relative = raw.startsWith("/");
  let u: URL;
  try {
    u = relative ? new URL(raw, RELATIVE_BASE) : new URL(raw);
  } catch {
    return raw.replace(/\/\/[^/@]*@/, "//").replace(/\?.*$/, "?REDACTED");
  }
  u.username = "";
  u.password = "";
  for (const key of [...new Set(u.searchParams.keys())]) {
    if (SENSITIVE_QUERY.test(key)) u.searchParams.set(key, "REDACTED");
  }
  if (!relative) return u.toString();
  const out = `${u.pathname}${u.search}${u.hash}`;
  return raw.startsWith("//") ? `//${u.host}${out}` : out;
}

/** Caps and strips a response body for an error message. */
export function capBody(body: string, max = 512): string {
  const clean = body
    .replace(/<br\s*\/?>/gi, " ")
    .replace(/\s+/g, " ")
    .trim();
  return clean.length > max ? `${clean.slice(0, max)}…` : clean;
}

/** Network-level failures (reset, refused, timeout) that a retry may cure. */
export function isRetryableNetworkError(e: unknown): boolean {
  const code = (e as { code?: unknown } | null)?.code;
  return (
    typeof code === "string" &&
    [
      "ECONNRESET",
      "ECONNREFUSED",
      "EPIPE",
      "ETIMEDOUT",
      "ENOTFOUND",
      "EAI_AGAIN",
      "UND_ERR_SOCKET",
      "UND_ERR_CONNECT_TIMEOUT",
      "UND_ERR_HEADERS_TIMEOUT",
      "UND_ERR_BODY_TIMEOUT",
      "UND_ERR_CLOSED",
    ].includes(code)
  );
}
