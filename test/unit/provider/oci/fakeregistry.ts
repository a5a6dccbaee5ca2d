// An in-memory distribution registry on 127.0.0.1 (port 0) for unit tests: manifests, blobs,
// monolithic and chunked uploads, mounts, tags with Link pagination, and Basic or Bearer auth with a
// token endpoint that grants only what each user may do. Faults are injected with `intercept`.
import { createHash, randomBytes } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";

export interface FakeUser {
  password: string;
  /** Actions granted on every repository; default pull and push. */
  actions?: string[];
  /** Refresh token accepted at POST /token (docker's identitytoken). */
  refreshToken?: string;
}

export interface FakeRegistryOptions {
  auth?: "none" | "basic" | "bearer";
  users?: Record<string, FakeUser>;
  /** Bearer only: anonymous tokens may pull. */
  anonymousPull?: boolean;
  /** Answer upload Locations as paths rather than absolute URLs. */
  relativeLocation?: boolean;
  /** Page size for tags/list (with Link rel="next"); 0 = one page. */
  tagPageSize?: number;
  /** Token lifetime in seconds. */
  tokenLifetime?: number;
}

export interface LoggedRequest {
  method: string;
  path: string;
  status: number;
  authorization?: string;
  contentType?: string;
  query: URLSearchParams;
}

interface Upload {
  repo: string;
  chunks: Buffer[];
  size: number;
}

export class FakeRegistry {
  readonly log: LoggedRequest[] = [];
  readonly blobs = new Map<string, Buffer>();
  /** repo → digest set (blob links, as distribution keeps them per repository). */
  readonly repoBlobs = new Map<string, Set<string>>();
  /** repo → reference (tag or digest) → manifest. */
  readonly manifests = new Map<string, Map<string, { bytes: Buffer; mediaType: string; digest: string }>>();
  readonly uploads = new Map<string, Upload>();
  /** Return true after answering to take over a request (faults, odd registries). */
  intercept?: (req: IncomingMessage, res: ServerResponse, url: URL) => boolean;
  private readonly tokens = new Map<string, { user: string | undefined; scopes: Map<string, Set<string>>; expires: number }>();
  private server!: Server;
  host = "";
  url = "";

  constructor(readonly opts: FakeRegistryOptions = {}) {}

  async start(): Promise<this> {
    this.server = createServer((req, res) => void this.handle(req, res));
    await new Promise<void>((resolve) => this.server.listen(0, "127.0.0.1", resolve));
    const { port } = this.server.address() as AddressInfo;
    this.host = `127.0.0.1:${port}`;
    this.url = `http://${this.host}`;
    return this;
  }

  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  /** Requests other than the token endpoint, as "METHOD path status". */
  calls(): string[] {
    return this.log.map((l) => `${l.method} ${l.path} ${l.status}`);
  }

  putBlob(repo: string, data: Buffer): string {
    const d = `sha256:${createHash("sha256").update(data).digest("hex")}`;
    this.blobs.set(d, data);
    this.link(repo, d);
    return d;
  }

  putManifest(repo: string, ref: string, bytes: Buffer, mediaType: string): string {
    const digest = `sha256:${createHash("sha256").update(bytes).digest("hex")}`;
    const m = this.manifests.get(repo) ?? new Map();
    m.set(ref, { bytes, mediaType, digest });
    m.set(digest, { bytes, mediaType, digest });
    this.manifests.set(repo, m);
    return digest;
  }

  private link(repo: string, d: string): void {
    const s = this.repoBlobs.get(repo) ?? new Set();
    s.add(d);
    this.repoBlobs.set(repo, s);
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? "/", this.url);
    const body = await readAll(req);
    const end = res.end.bind(res);
    res.end = ((...args: Parameters<typeof res.end>) => {
      const entry: LoggedRequest = { method: req.method ?? "", path: url.pathname, status: res.statusCode, query: url.searchParams };
      if (req.headers.authorization) entry.authorization = req.headers.authorization;
      if (req.headers["content-type"]) entry.contentType = req.headers["content-type"];
      this.log.push(entry);
      return end(...args);
    }) as typeof res.end;
    if (this.intercept?.(req, res, url)) return;
    if (url.pathname === "/token") return this.token(req, res, url, body);
    if (!url.pathname.startsWith("/v2/")) return send(res, 404, "");
    const route = parseRoute(url.pathname);
    if (!this.authorized(req, res, route, url)) return;
    if (!route)
      return url.pathname === "/v2/" ? send(res, 200, "{}", { "content-type": "application/json" }) : send(res, 404, "404 page not found");
    switch (route.kind) {
      case "manifests":
        return this.manifest(req, res, route.repo, route.rest, body);
      case "blobs":
        return this.blob(req, res, route.repo, route.rest);
      case "uploads":
        return this.upload(req, res, route.repo, route.rest, url, body);
      case "tags":
        return this.tags(res, route.repo, url);
    }
  }

  // Auth ----------------------------------------------------------------------------------

  private need(req: IncomingMessage, route: Route | undefined, url: URL): string[] {
    if (!route) return [];
    const write = req.method !== "GET" && req.method !== "HEAD";
    const act = req.method === "DELETE" && route.kind === "manifests" ? "delete" : write ? "push" : "pull";
    const scopes = [`repository:${route.repo}:${write && act === "push" ? "pull,push" : act}`];
    const from = url.searchParams.get("from");
    if (route.kind === "uploads" && url.searchParams.get("mount") && from) scopes.push(`repository:${from}:pull`);
    return scopes;
  }

  private authorized(req: IncomingMessage, res: ServerResponse, route: Route | undefined, url: URL): boolean {
    const mode = this.opts.auth ?? "none";
    if (mode === "none") return true;
    const h = req.headers.authorization ?? "";
    if (mode === "basic") {
      const user = this.basicUser(h);
      if (user) return true;
      send(res, 401, errors("UNAUTHORIZED", "authentication required"), {
        "www-authenticate": 'Basic realm="fake"',
        "content-type": "application/json",
      });
      return false;
    }
    const need = this.need(req, route, url);
    const tok = h.startsWith("Bearer ") ? this.tokens.get(h.slice(7)) : undefined;
    const ok = tok && tok.expires > Date.now() && need.every((s) => covers(tok.scopes, s));
    if (ok) return true;
    const scope = need.join(" ");
    const err = tok ? ',error="insufficient_scope"' : "";
    send(res, 401, errors("UNAUTHORIZED", "authentication required"), {
      "www-authenticate": `Bearer realm="${this.url}/token",service="fake.test"${scope ? `,scope="${scope}"` : ""}${err}`,
      "content-type": "application/json",
    });
    return false;
  }

  private basicUser(h: string): string | undefined {
    if (!h.startsWith("Basic ")) return undefined;
    const [u, ...p] = Buffer.from(h.slice(6), "base64").toString().split(":");
    const user = this.opts.users?.[u ?? ""];
    return user && user.password === p.join(":") ? u : undefined;
  }

  private token(req: IncomingMessage, res: ServerResponse, url: URL, body: Buffer): void {
    let user: string | undefined;
    let scopes: string[];
    if (req.method === "POST") {
      const form = new URLSearchParams(body.toString());
      const entry = Object.entries(this.opts.users ?? {}).find(([, u]) => u.refreshToken && u.refreshToken === form.get("refresh_token"));
      if (form.get("grant_type") !== "refresh_token" || !entry) return send(res, 401, JSON.stringify({ error: "invalid_grant" }));
      user = entry[0];
      scopes = (form.get("scope") ?? "").split(" ").filter(Boolean);
    } else {
      if (req.headers.authorization) {
        user = this.basicUser(req.headers.authorization);
        if (!user) return send(res, 401, errors("UNAUTHORIZED", "bad credentials"), { "content-type": "application/json" });
      } else if (!this.opts.anonymousPull) {
        return send(res, 401, errors("UNAUTHORIZED", "credentials required"), { "content-type": "application/json" });
      }
      scopes = url.searchParams.getAll("scope");
    }
    const allowed = user ? (this.opts.users?.[user]?.actions ?? ["pull", "push", "delete"]) : ["pull"];
    const granted = new Map<string, Set<string>>();
    for (const s of scopes.flatMap((x) => x.split(" "))) {
      const cut = s.lastIndexOf(":");
      const acts = s
        .slice(cut + 1)
        .split(",")
        .filter((a) => allowed.includes(a));
      const set = granted.get(s.slice(0, cut)) ?? new Set();
      for (const a of acts) set.add(a);
      granted.set(s.slice(0, cut), set);
    }
    const t = randomBytes(12).toString("hex");
    const lifetime = this.opts.tokenLifetime ?? 300;
    this.tokens.set(t, { user, scopes: granted, expires: Date.now() + lifetime * 1000 });
    send(res, 200, JSON.stringify(req.method === "POST" ? { access_token: t, expires_in: lifetime } : { token: t, expires_in: lifetime }), {
      "content-type": "application/json",
    });
  }

  // Endpoints -----------------------------------------------------------------------------

  private manifest(req: IncomingMessage, res: ServerResponse, repo: string, ref: string, body: Buffer): void {
    const m = this.manifests.get(repo)?.get(ref);
    if (req.method === "GET" || req.method === "HEAD") {
      if (!m) return send(res, 404, errors("MANIFEST_UNKNOWN", "manifest unknown"), { "content-type": "application/json" });
      const accept = req.headers.accept ?? "";
      if (!accept.includes(m.mediaType))
        return send(res, 404, errors("MANIFEST_UNKNOWN", "OCI manifest found, but accept header does not support OCI manifests"));
      res.setHeader("content-type", m.mediaType);
      res.setHeader("docker-content-digest", m.digest);
      res.setHeader("content-length", String(m.bytes.length));
      res.statusCode = 200;
      return void res.end(req.method === "HEAD" ? undefined : m.bytes);
    }
    if (req.method === "PUT") {
      const mt = req.headers["content-type"] ?? "";
      let doc: { mediaType?: string } = {};
      try {
        doc = JSON.parse(body.toString());
      } catch {
        return send(res, 400, errors("MANIFEST_INVALID", "invalid json"));
      }
      if (doc.mediaType && doc.mediaType !== mt) return send(res, 400, errors("MANIFEST_INVALID", "content type mismatch"));
      const digest = this.putManifest(repo, ref, body, mt);
      res.setHeader("docker-content-digest", digest);
      res.setHeader("location", `/v2/${repo}/manifests/${digest}`);
      return send(res, 201, "");
    }
    if (req.method === "DELETE") {
      if (!ref.startsWith("sha256:")) return send(res, 400, errors("UNSUPPORTED", "delete by tag is not supported"));
      const all = this.manifests.get(repo);
      if (!all?.has(ref)) return send(res, 404, errors("MANIFEST_UNKNOWN", "manifest unknown"));
      for (const [k, v] of [...all]) if (v.digest === ref) all.delete(k);
      return send(res, 202, "");
    }
    send(res, 405, errors("UNSUPPORTED", "method"));
  }

  private blob(req: IncomingMessage, res: ServerResponse, repo: string, digest: string): void {
    const data = this.repoBlobs.get(repo)?.has(digest) ? this.blobs.get(digest) : undefined;
    if (!data) return send(res, 404, req.method === "HEAD" ? "" : errors("BLOB_UNKNOWN", "blob unknown"));
    res.setHeader("docker-content-digest", digest);
    const m = /^bytes=(\d+)-$/.exec(req.headers.range ?? "");
    if (m && req.method === "GET") {
      const from = Number(m[1]);
      res.setHeader("content-range", `bytes ${from}-${data.length - 1}/${data.length}`);
      res.setHeader("content-length", String(data.length - from));
      res.statusCode = 206;
      return void res.end(data.subarray(from));
    }
    res.setHeader("content-length", String(data.length));
    res.statusCode = 200;
    res.end(req.method === "HEAD" ? undefined : data);
  }

  private location(id: string, repo: string): string {
    const state = encodeURIComponent(Buffer.from(JSON.stringify({ id, t: Date.now() })).toString("base64"));
    const path = `/v2/${repo}/blobs/uploads/${id}?_state=${state}`;
    return this.opts.relativeLocation ? path : `${this.url}${path}`;
  }

  private upload(req: IncomingMessage, res: ServerResponse, repo: string, id: string, url: URL, body: Buffer): void {
    if (req.method === "POST" && id === "") {
      const mount = url.searchParams.get("mount");
      const from = url.searchParams.get("from");
      if (mount && from && this.repoBlobs.get(from)?.has(mount)) {
        this.link(repo, mount);
        res.setHeader("location", `/v2/${repo}/blobs/${mount}`);
        return send(res, 201, "");
      }
      const newId = randomBytes(8).toString("hex");
      this.uploads.set(newId, { repo, chunks: [], size: 0 });
      res.setHeader("location", this.location(newId, repo));
      res.setHeader("range", "0-0");
      return send(res, 202, "");
    }
    const up = this.uploads.get(id);
    if (!up || !url.searchParams.get("_state")) return send(res, 404, errors("BLOB_UPLOAD_UNKNOWN", "blob upload unknown"));
    const octet = req.headers["content-type"] === "application/octet-stream";
    const range = () => `0-${Math.max(0, up.size - 1)}`;
    if (req.method === "GET") {
      res.setHeader("location", this.location(id, repo));
      res.setHeader("range", range());
      return send(res, 204, "");
    }
    if (req.method === "DELETE") {
      this.uploads.delete(id);
      return send(res, 204, "");
    }
    if ((req.method === "PATCH" || req.method === "PUT") && body.length > 0) {
      if (!octet) return send(res, 400, errors("DIGEST_INVALID", "body vanished: wrong content type"));
      up.chunks.push(body);
      up.size += body.length;
    }
    if (req.method === "PATCH") {
      res.setHeader("location", this.location(id, repo));
      res.setHeader("range", range());
      return send(res, 202, "");
    }
    if (req.method === "PUT") {
      const want = url.searchParams.get("digest");
      const data = Buffer.concat(up.chunks);
      const got = `sha256:${createHash("sha256").update(data).digest("hex")}`;
      if (want !== got) return send(res, 400, errors("DIGEST_INVALID", "provided digest did not match uploaded content"));
      this.uploads.delete(id);
      this.blobs.set(got, data);
      this.link(repo, got);
      res.setHeader("location", `/v2/${repo}/blobs/${got}`);
      res.setHeader("docker-content-digest", got);
      return send(res, 201, "");
    }
    send(res, 405, errors("UNSUPPORTED", "method"));
  }

  private tags(res: ServerResponse, repo: string, url: URL): void {
    const all = this.manifests.get(repo);
    if (!all) return send(res, 404, errors("NAME_UNKNOWN", "repository name not known to registry"));
    const tags = [...all.keys()].filter((k) => !k.includes(":")).sort();
    const n = this.opts.tagPageSize ?? 0;
    if (!n) return send(res, 200, JSON.stringify({ name: repo, tags }), { "content-type": "application/json" });
    const last = url.searchParams.get("last");
    const start = last ? tags.indexOf(last) + 1 : 0;
    const page = tags.slice(start, start + n);
    if (start + n < tags.length) res.setHeader("link", `</v2/${repo}/tags/list?n=${n}&last=${page[page.length - 1]}>; rel="next"`);
    send(res, 200, JSON.stringify({ name: repo, tags: page }), { "content-type": "application/json" });
  }
}

interface Route {
  kind: "manifests" | "blobs" | "uploads" | "tags";
  repo: string;
  rest: string;
}

function parseRoute(path: string): Route | undefined {
  const p = path.slice(4);
  let m = /^(.+)\/blobs\/uploads\/?(.*)$/.exec(p);
  if (m) return { kind: "uploads", repo: m[1]!, rest: m[2]! };
  m = /^(.+)\/(manifests|blobs)\/([^/]+)$/.exec(p);
  if (m) return { kind: m[2] as "manifests" | "blobs", repo: m[1]!, rest: m[3]! };
  m = /^(.+)\/tags\/list$/.exec(p);
  if (m) return { kind: "tags", repo: m[1]!, rest: "" };
  return undefined;
}

function covers(granted: Map<string, Set<string>>, scope: string): boolean {
  const cut = scope.lastIndexOf(":");
  const have = granted.get(scope.slice(0, cut));
  return scope
    .slice(cut + 1)
    .split(",")
    .every((a) => have?.has(a));
}

function errors(code: string, message: string): string {
  return JSON.stringify({ errors: [{ code, message, detail: null }] });
}

function send(res: ServerResponse, status: number, body: string, headers: Record<string, string> = {}): void {
  for (const [k, v] of Object.entries(headers)) res.setHeader(k, v);
  res.statusCode = status;
  res.end(body);
}

async function readAll(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}
