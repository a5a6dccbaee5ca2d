// A small typed client for the few Kubernetes API calls a PrePullSet makes (DaemonSets, Secrets,
// Pods, Nodes, Events), over the project's one undici layer. Each call states the statuses it
// accepts; anything else becomes a KubeError in the project's message shape, with the API
// server's own Status message. Why not @kubernetes/client-node: see the README (PrePullSet).
import type { Dispatcher } from "undici";
import { createDispatcher, readCapped, readJson, send, drain, type HttpErrorContext, type HttpResponse } from "../http/client";
import { HttpStatusError, isRetryableStatus, type ErrorCode } from "../http/errors";
import type { KubeConnection } from "./kubeconfig";

const kKubeError = Symbol.for("imageyard.kubeError");

export class KubeError extends HttpStatusError {
  /** The API server's Status.reason ("NotFound", "Forbidden", "AlreadyExists", …). */
  readonly reason: string | undefined;
  constructor(code: ErrorCode, message: string, ctx: HttpErrorContext, reason: string | undefined) {
    super(code, message, ctx.request.method, ctx.request.url, {
      status: ctx.status,
      body: ctx.body,
      retryable: isRetryableStatus(ctx.status),
      retryAfterMs: ctx.retryAfterMs,
    });
    this.name = "KubeError";
    this.reason = reason;
  }
  get [kKubeError](): true {
    return true;
  }
  static override [Symbol.hasInstance](x: unknown): boolean {
    return typeof x === "object" && x !== null && (x as Record<symbol, unknown>)[kKubeError] === true;
  }
}

interface StatusBody {
  kind?: string;
  message?: string;
  reason?: string;
}

/** Maps an unaccepted answer onto a KubeError: "<operation>: <what> (<status> <reason>). <hint>." */
export function kubeError(ctx: HttpErrorContext, operation: string, server: string): KubeError {
  let st: StatusBody = {};
  try {
    st = JSON.parse(ctx.body) as StatusBody;
  } catch {
    // not a Status object: the body is shown as it is
  }
  const said = st.message ?? (ctx.body || "no details");
  const label = st.reason ? `${ctx.status} ${st.reason}` : `${ctx.status}`;
  const [code, hint]: [ErrorCode, string] =
    ctx.status === 401
      ? ["KUBE_UNAUTHORIZED", `Check the credentials of the kubeconfig context for ${server}`]
      : ctx.status === 403
        ? ["KUBE_FORBIDDEN", "Grant the kubeconfig's user this permission (RBAC), or use another context"]
        : ctx.status === 404
          ? ["KUBE_NOT_FOUND", "Check the namespace and name"]
          : ctx.status === 409
            ? ["KUBE_CONFLICT", "Another client changed it at the same time; run again"]
            : ctx.status === 422 || ctx.status === 400
              ? ["INVALID_INPUT", "Fix the input the message names"]
              : [
                  "KUBE_ERROR",
                  ctx.status >= 500 || ctx.status === 429
                    ? "Retry later; check the API server if it persists"
                    : "Check the API server's logs",
                ];
  const what = ctx.status === 401 ? "the API server refused the credentials" : said;
  return new KubeError(code, `${operation}: ${what} (${label}). ${hint}.`, ctx, st.reason);
}

export interface ObjectMeta {
  name: string;
  namespace?: string;
  uid?: string;
  resourceVersion?: string;
  generation?: number;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  ownerReferences?: { apiVersion: string; kind: string; name: string; uid: string; controller?: boolean; blockOwnerDeletion?: boolean }[];
  deletionTimestamp?: string;
  creationTimestamp?: string;
}

export interface KubeObject {
  apiVersion?: string;
  kind?: string;
  metadata: ObjectMeta;
}

export interface KubeList<T> {
  items: T[];
  metadata?: { resourceVersion?: string; continue?: string };
}

export interface KubeClientOptions {
  dispatcher?: Dispatcher;
  /** Per-request deadline (headers); long waits poll instead of holding a request. */
  requestTimeoutMs?: number;
}

type Request = [
  method: "GET" | "POST" | "PUT" | "PATCH" | "DELETE",
  path: string,
  operation: string,
  ok: number[],
  body?: unknown,
  contentType?: string,
  accept?: string,
];

/** One cluster, one identity. Close it when done (it owns its connection pool). */
export class KubeClient {
  readonly server: string;
  readonly dispatcher: Dispatcher;
  private readonly headers: Record<string, string>;
  private readonly owned: boolean;

  constructor(
    readonly connection: KubeConnection,
    opts: KubeClientOptions = {},
  ) {
    this.server = connection.server;
    this.owned = !opts.dispatcher;
    this.dispatcher =
      opts.dispatcher ??
      createDispatcher({ tls: connection.tls, connections: 4, headersTimeoutMs: opts.requestTimeoutMs ?? 60_000, maxRedirections: 0 });
    this.headers = { accept: "application/json" };
    if (connection.token) this.headers.authorization = `Bearer ${connection.token}`;
    else if (connection.basic)
      this.headers.authorization = `Basic ${Buffer.from(`${connection.basic.username}:${connection.basic.password}`).toString("base64")}`;
  }

  /**
   * Headers that authenticate a request (for the exec websocket): the credentials only. With the
   * JSON accept header the API server refuses the upgrade (an error event with no message).
   */
  authHeaders(): Record<string, string> {
    const { accept: _accept, ...auth } = this.headers;
    return auth;
  }

  async close(): Promise<void> {
    if (this.owned) await this.dispatcher.close();
  }

  /** Sends one request; undefined on a 404 (when `ok` accepts it). */
  private async respond(...[method, path, operation, ok, body, contentType, accept]: Request): Promise<HttpResponse | undefined> {
    const headers = { ...this.headers };
    if (body !== undefined) headers["content-type"] = contentType ?? "application/json";
    if (accept) headers.accept = accept;
    const res = await send({
      method,
      url: `${this.server}${path}`,
      headers,
      body: body === undefined ? null : JSON.stringify(body),
      ok,
      operation,
      dispatcher: this.dispatcher,
      mapError: (ctx) => kubeError(ctx, operation, this.server),
    });
    if (res.status !== 404) return res;
    await drain(res);
    return undefined;
  }

  private async call<T>(...req: Request): Promise<T | undefined> {
    const res = await this.respond(...req);
    return res && readJson<T>(res, req[2], 64 * 1024 * 1024);
  }

  /** GET; undefined when the object does not exist. */
  get<T>(path: string, operation: string): Promise<T | undefined> {
    return this.call<T>("GET", path, operation, [200, 404]);
  }

  /** GET of a text resource (a pod's log), at most `max` bytes; undefined when it does not exist. */
  async text(path: string, operation: string, query: Record<string, string> = {}, max = 4 * 1024 * 1024): Promise<string | undefined> {
    const qs = new URLSearchParams(query).toString();
    const res = await this.respond("GET", qs ? `${path}?${qs}` : path, operation, [200, 404], undefined, undefined, "text/plain, */*");
    return res && readCapped(res.body, max);
  }

  async list<T>(path: string, operation: string, query: Record<string, string> = {}): Promise<T[]> {
    const qs = new URLSearchParams(query).toString();
    const out = await this.call<KubeList<T>>("GET", qs ? `${path}?${qs}` : path, operation, [200]);
    return out?.items ?? [];
  }

  async create<T>(path: string, body: unknown, operation: string): Promise<T> {
    return (await this.call<T>("POST", path, operation, [200, 201, 202], body))!;
  }

  async replace<T>(path: string, body: unknown, operation: string): Promise<T> {
    return (await this.call<T>("PUT", path, operation, [200, 201], body))!;
  }

  async mergePatch<T>(path: string, body: unknown, operation: string): Promise<T> {
    return (await this.call<T>("PATCH", path, operation, [200], body, "application/merge-patch+json"))!;
  }

  /** DELETE; a missing object is success (it is gone either way). */
  async remove(path: string, operation: string, propagation: "Background" | "Foreground" = "Background"): Promise<void> {
    await this.call<unknown>("DELETE", path, operation, [200, 202, 404], {
      kind: "DeleteOptions",
      apiVersion: "v1",
      propagationPolicy: propagation,
    });
  }

  /** Reachability and identity check: the server's version ("v1.37.2"). */
  async version(): Promise<string> {
    const v = await this.call<{ gitVersion?: string }>("GET", "/version", `connect to ${this.server}`, [200]);
    return v?.gitVersion ?? "unknown";
  }
}

/** API paths, so callers never concatenate them by hand. */
export const paths = {
  daemonSets: (ns: string) => `/apis/apps/v1/namespaces/${encodeURIComponent(ns)}/daemonsets`,
  daemonSet: (ns: string, name: string) => `/apis/apps/v1/namespaces/${encodeURIComponent(ns)}/daemonsets/${encodeURIComponent(name)}`,
  secrets: (ns: string) => `/api/v1/namespaces/${encodeURIComponent(ns)}/secrets`,
  secret: (ns: string, name: string) => `/api/v1/namespaces/${encodeURIComponent(ns)}/secrets/${encodeURIComponent(name)}`,
  pods: (ns: string) => `/api/v1/namespaces/${encodeURIComponent(ns)}/pods`,
  pod: (ns: string, name: string) => `/api/v1/namespaces/${encodeURIComponent(ns)}/pods/${encodeURIComponent(name)}`,
  podLog: (ns: string, name: string) => `/api/v1/namespaces/${encodeURIComponent(ns)}/pods/${encodeURIComponent(name)}/log`,
  events: (ns: string) => `/api/v1/namespaces/${encodeURIComponent(ns)}/events`,
  namespace: (ns: string) => `/api/v1/namespaces/${encodeURIComponent(ns)}`,
  nodes: () => "/api/v1/nodes",
};
