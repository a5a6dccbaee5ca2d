// Keystone v3: password and application-credential authentication, project/domain scoping, the
// service catalog, and a session that reuses a token until it nears expiry and re-authenticates
// exactly once when Glance answers 401 (gophercloud's ReauthFunc). A request whose body is a stream
// cannot be replayed, so for those the session renews a token that would expire too soon *before*
// sending instead.
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import type { Readable } from "node:stream";
import type { Dispatcher } from "undici";
import {
  createDispatcher,
  drain,
  header,
  readJson,
  send,
  type HttpErrorContext,
  type HttpRequest,
  type HttpResponse,
} from "../http/client";
import { ImageyardError, redactUrl } from "../http/errors";
import { KeystoneError, keystoneError } from "./errors";

export type EndpointInterface = "public" | "internal" | "admin";

/** Everything needed to reach Glance, in openstacksdk's vocabulary (camelCased). */
export interface AuthOptions {
  /** Keystone URL; `/v3` is appended when no version is given. */
  authUrl: string;
  /** password (default when a password is given) or application_credential. */
  authType?: string;
  username?: string;
  userId?: string;
  password?: string;
  userDomainName?: string;
  userDomainId?: string;
  projectName?: string;
  projectId?: string;
  projectDomainName?: string;
  projectDomainId?: string;
  /** Domain scope (no project), and the default for user/project domains when those are unset. */
  domainName?: string;
  domainId?: string;
  applicationCredentialId?: string;
  applicationCredentialName?: string;
  applicationCredentialSecret?: string;
  region?: string;
  interface?: string;
  /** PEM file with the CA of a private cloud. */
  cacert?: string;
  /** Skip TLS verification (clouds.yaml `verify: false`). */
  insecure?: boolean;
  /** Use this Glance URL instead of the catalog's (clouds.yaml `image_endpoint_override`). */
  imageEndpoint?: string;
}

export interface CatalogEndpoint {
  id?: string;
  interface: string;
  region?: string | null;
  region_id?: string | null;
  url: string;
}

export interface CatalogService {
  type: string;
  name?: string;
  endpoints: CatalogEndpoint[];
}

export interface Token {
  value: string;
  /** ms since the epoch. */
  expiresAt: number;
  catalog: CatalogService[];
  userId: string | undefined;
  projectId: string | undefined;
  projectName: string | undefined;
}

export function normalizeAuthUrl(raw: string): string {
  let u: URL;
  try {
    u = new URL(raw);
  } catch {
    throw new KeystoneError(
      "INVALID_INPUT",
      `auth_url "${redactUrl(raw)}" is not a URL; write it like "https://keystone.example.com:5000/v3".`,
    );
  }
  if (u.protocol !== "http:" && u.protocol !== "https:")
    throw new KeystoneError("INVALID_INPUT", `auth_url "${redactUrl(raw)}" must be http or https.`);
  const path = u.pathname.replace(/\/+$/, "");
  if (/\/v2(\.\d+)?$/.test(path))
    throw new KeystoneError("INVALID_INPUT", `auth_url ${redactUrl(raw)} is Keystone v2, which is gone; use the v3 URL (…/v3).`);
  u.pathname = /\/v3(\.\d+)?$/.test(path) ? path : `${path}/v3`;
  u.search = "";
  u.hash = "";
  return u.toString().replace(/\/+$/, "");
}

export function isApplicationCredential(a: AuthOptions): boolean {
  const t = (a.authType ?? "").replace(/^v3/, "").replace(/_/g, "");
  return t === "applicationcredential" || (t === "" && a.applicationCredentialSecret !== undefined);
}

/** Who authenticates, for messages: never a secret. */
export function describeAccount(a: AuthOptions): string {
  if (isApplicationCredential(a)) return `application credential ${a.applicationCredentialId ?? a.applicationCredentialName ?? "?"}`;
  const user = a.username ?? a.userId ?? "?";
  const project = a.projectName ?? a.projectId;
  return `user ${user}${project ? ` (project ${project})` : a.domainName || a.domainId ? ` (domain ${a.domainName ?? a.domainId})` : ""}`;
}

function domainRef(id: string | undefined, name: string | undefined): { id: string } | { name: string } {
  if (id) return { id };
  if (name) return { name };
  return { id: "default" };
}

/** The body of POST /v3/auth/tokens for these options. */
export function authRequestBody(a: AuthOptions): Record<string, unknown> {
  if (isApplicationCredential(a)) {
    if (!a.applicationCredentialSecret)
      throw new KeystoneError(
        "INVALID_INPUT",
        "application credential authentication needs applicationCredentialSecret (application_credential_secret).",
      );
    const cred: Record<string, unknown> = { secret: a.applicationCredentialSecret };
    if (a.applicationCredentialId) cred.id = a.applicationCredentialId;
    else if (a.applicationCredentialName && (a.username || a.userId)) {
      cred.name = a.applicationCredentialName;
      cred.user = a.userId
        ? { id: a.userId }
        : { name: a.username, domain: domainRef(a.userDomainId ?? a.domainId, a.userDomainName ?? a.domainName) };
    } else
      throw new KeystoneError(
        "INVALID_INPUT",
        "application credential authentication needs applicationCredentialId, or applicationCredentialName with username.",
      );
    // An application credential carries its own scope; Keystone refuses another one.
    return { auth: { identity: { methods: ["application_credential"], application_credential: cred } } };
  }
  if (a.password === undefined || !(a.username || a.userId)) {
    throw new KeystoneError(
      "INVALID_INPUT",
      "password authentication needs username (or userId) and password, or use an application credential (applicationCredentialId + applicationCredentialSecret).",
    );
  }
  const user: Record<string, unknown> = a.userId
    ? { id: a.userId, password: a.password }
    : { name: a.username, domain: domainRef(a.userDomainId ?? a.domainId, a.userDomainName ?? a.domainName), password: a.password };
  const auth: Record<string, unknown> = { identity: { methods: ["password"], password: { user } } };
  if (a.projectId) auth.scope = { project: { id: a.projectId } };
  else if (a.projectName)
    auth.scope = {
      project: { name: a.projectName, domain: domainRef(a.projectDomainId ?? a.domainId, a.projectDomainName ?? a.domainName) },
    };
  else if (a.domainId || a.domainName) auth.scope = { domain: domainRef(a.domainId, a.domainName) };
  return { auth };
}

export interface KeystoneDeps {
  dispatcher?: Dispatcher;
  signal?: AbortSignal;
}

interface TokenDocument {
  token?: {
    expires_at?: string;
    catalog?: CatalogService[];
    user?: { id?: string };
    project?: { id?: string; name?: string };
  };
}

/** POST /v3/auth/tokens (201): a scoped token and its catalog. */
export async function authenticate(a: AuthOptions, deps: KeystoneDeps = {}): Promise<Token> {
  const url = `${normalizeAuthUrl(a.authUrl)}/auth/tokens`;
  const who = describeAccount(a);
  const res = await send({
    method: "POST",
    url,
    headers: { "content-type": "application/json", accept: "application/json" },
    body: JSON.stringify(authRequestBody(a)),
    ok: [201],
    operation: `authenticate ${who} at ${redactUrl(url)}`,
    dispatcher: deps.dispatcher,
    signal: deps.signal,
    mapError: (ctx: HttpErrorContext) => keystoneError(ctx, who),
  });
  const value = header(res.headers, "x-subject-token");
  const doc = await readJson<TokenDocument>(res, `authenticate ${who}`);
  if (!value || !doc.token)
    throw new KeystoneError(
      "HTTP_ERROR",
      `authenticate ${who}: Keystone answered 201 without a token (no X-Subject-Token). Check that auth_url points at Keystone v3.`,
    );
  const expires = Date.parse(doc.token.expires_at ?? "");
  return {
    value,
    expiresAt: Number.isNaN(expires) ? Date.now() + 3600_000 : expires,
    catalog: doc.token.catalog ?? [],
    userId: doc.token.user?.id,
    projectId: doc.token.project?.id,
    projectName: doc.token.project?.name,
  };
}

function normalizeInterface(i: string | undefined): EndpointInterface {
  const v = (i ?? "public").toLowerCase().replace(/url$/, "");
  if (v === "public" || v === "internal" || v === "admin") return v;
  throw new KeystoneError("INVALID_INPUT", `interface "${i}" is not one of public, internal, admin.`);
}

/** Picks the endpoint of a service type by interface and region; ambiguity and absence are errors. */
export function selectEndpoint(catalog: readonly CatalogService[], want: { type: string; region?: string; interface?: string }): string {
  const iface = normalizeInterface(want.interface);
  const services = catalog.filter((s) => s.type === want.type);
  if (services.length === 0) {
    const types = [...new Set(catalog.map((s) => s.type))].sort().join(", ") || "none";
    throw new KeystoneError(
      "KEYSTONE_NO_ENDPOINT",
      `find ${want.type} endpoint: the catalog has no service of type ${want.type} (it has: ${types}). Check that the service is registered in Keystone, or set imageEndpoint.`,
    );
  }
  const all = services.flatMap((s) => s.endpoints ?? []);
  const regionOf = (e: CatalogEndpoint) => e.region_id ?? e.region ?? "";
  const matching = all.filter(
    (e) => normalizeInterfaceSafe(e.interface) === iface && (want.region === undefined || regionOf(e) === want.region),
  );
  const available = all.map((e) => `${e.interface}@${regionOf(e) || "no region"}`).join(", ");
  if (matching.length === 0) {
    throw new KeystoneError(
      "KEYSTONE_NO_ENDPOINT",
      `find ${want.type} endpoint: none for interface ${iface}${want.region ? ` in region ${want.region}` : ""} (the catalog has ${available}). Set region and interface to one of those.`,
    );
  }
  const regions = [...new Set(matching.map(regionOf))];
  if (regions.length > 1) {
    throw new KeystoneError(
      "KEYSTONE_NO_ENDPOINT",
      `find ${want.type} endpoint: the catalog has ${iface} endpoints in several regions (${regions.join(", ")}). Set region (region_name) to one of them.`,
    );
  }
  return (matching[0] as CatalogEndpoint).url;
}

function normalizeInterfaceSafe(i: string): string {
  return i.toLowerCase().replace(/url$/, "");
}

/** Glance's root without a version suffix: catalogs list both `http://h:9292` and `http://h:9292/v2`. */
export function glanceRoot(url: string): string {
  return url.replace(/\/+$/, "").replace(/\/v2(\.\d+)?$/, "");
}

// Tokens are shared by every session with the same options in this process (several resources of
// one stack, or read after create), keyed by a hash so no secret is kept as a map key.
const tokens = new Map<string, Promise<Token>>();

function fingerprint(a: AuthOptions): string {
  return createHash("sha256")
    .update(JSON.stringify(a, Object.keys(a).sort()))
    .digest("hex");
}

/** Renew when less than this is left: a request never starts with a token about to expire. */
const MARGIN_MS = 60_000;
/** Streams cannot be replayed after a 401: they need a token good for a long upload. */
const STREAM_MARGIN_MS = 30 * 60_000;

export type AuthedRequest = Omit<HttpRequest, "dispatcher">;

export class KeystoneSession {
  readonly auth: AuthOptions;
  readonly dispatcher: Dispatcher | undefined;
  readonly signal: AbortSignal | undefined;
  /** Authentications this session performed (tests assert "exactly once"). */
  authentications = 0;
  private readonly key: string;

  constructor(auth: AuthOptions, deps: KeystoneDeps = {}) {
    this.auth = { ...auth, authUrl: normalizeAuthUrl(auth.authUrl) };
    this.key = fingerprint(this.auth);
    this.dispatcher = deps.dispatcher ?? tlsDispatcher(auth);
    this.signal = deps.signal;
  }

  /** A token valid for at least `minValidityMs` more, reusing the cached one when it is. */
  async token(minValidityMs = MARGIN_MS): Promise<Token> {
    const cached = tokens.get(this.key);
    if (cached) {
      try {
        const t = await cached;
        if (t.expiresAt - Date.now() > minValidityMs) return t;
      } catch {
        // a failed attempt is not cached: try again below
      }
    }
    return this.reauthenticate();
  }

  /** A new token, replacing the cached one. */
  async reauthenticate(): Promise<Token> {
    this.authentications++;
    const p = authenticate(this.auth, { dispatcher: this.dispatcher, signal: this.signal });
    tokens.set(this.key, p);
    p.catch(() => {
      if (tokens.get(this.key) === p) tokens.delete(this.key);
    });
    return p;
  }

  /** For tests and long jobs: use this token (e.g. one revoked behind our back) until Glance refuses it. */
  useToken(t: Token): void {
    tokens.set(this.key, Promise.resolve(t));
  }

  async endpoint(type: string): Promise<string> {
    if (type === "image" && this.auth.imageEndpoint) return glanceRoot(this.auth.imageEndpoint);
    const t = await this.token();
    return selectEndpoint(t.catalog, { type, region: this.auth.region, interface: this.auth.interface });
  }

  async projectId(): Promise<string | undefined> {
    return (await this.token()).projectId;
  }

  /**
   * Sends with X-Auth-Token. On a 401 the session re-authenticates once and resends when the body
   * can be sent again; a second 401 is an error. Streaming bodies get a long-lived token up front.
   */
  async request(req: AuthedRequest): Promise<HttpResponse> {
    const streaming = isStream(req.body);
    const first = await this.token(streaming ? STREAM_MARGIN_MS : MARGIN_MS);
    const attempt = (t: Token, ok: readonly number[]) =>
      send({
        ...req,
        ok,
        headers: { accept: "application/json", ...req.headers, "x-auth-token": t.value },
        dispatcher: this.dispatcher,
        signal: anySignal(req.signal, this.signal),
      });
    if (req.ok.includes(401)) return attempt(first, req.ok);
    const res = await attempt(first, [...req.ok, 401]);
    if (res.status !== 401) return res;
    await drain(res);
    if (streaming) {
      throw new KeystoneError(
        "KEYSTONE_UNAUTHORIZED",
        `${req.operation}: Glance refused the token while a stream was being sent (401 Unauthorized); the stream cannot be replayed. Run again; check that the token lifetime covers the upload.`,
        { status: 401 },
      );
    }
    const current = await tokens.get(this.key)?.catch(() => undefined);
    const fresh =
      current && current.value !== first.value && current.expiresAt - Date.now() > MARGIN_MS ? current : await this.reauthenticate();
    return attempt(fresh, req.ok);
  }
}

function anySignal(a: AbortSignal | undefined, b: AbortSignal | undefined): AbortSignal | undefined {
  return a && b ? AbortSignal.any([a, b]) : (a ?? b);
}

function isStream(body: unknown): body is Readable {
  return typeof (body as { pipe?: unknown } | null)?.pipe === "function";
}

function tlsDispatcher(a: AuthOptions): Dispatcher | undefined {
  if (!a.cacert && !a.insecure) return undefined;
  let ca: string[] | undefined;
  if (a.cacert) {
    try {
      ca = [readFileSync(a.cacert, "utf8")];
    } catch (e) {
      throw new ImageyardError("CLOUD_CONFIG", `read cacert ${a.cacert}: ${(e as Error).message}. Fix the cacert path of the cloud.`, {
        cause: e,
      });
    }
  }
  return createDispatcher({ tls: { ...(ca ? { ca } : {}), ...(a.insecure ? { insecure: true } : {}) } });
}
