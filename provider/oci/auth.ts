// Registry auth the way docker and crane do it, minus the ping: send the request; on 401 read the
// challenge (Basic or Bearer), get a token for the merged scopes, retry exactly once. What we learn
// (the challenge, the tokens) lives in module-level caches keyed by registry and a hash of the
// credentials, so later calls in the same process send the right Authorization up front.
import { createHash } from "node:crypto";
import type { Dispatcher } from "undici";
import { send, readJson, type HttpResponse } from "../http/client";
import { ImageyardError } from "../http/errors";
import { registryError } from "./errors";
import { stripQuery } from "./transport";

export interface Credentials {
  username?: string;
  password?: string;
  /** An OAuth2 refresh token (docker's "identitytoken"): exchanged at the realm by POST. */
  identityToken?: string;
  /** A bearer token sent as is (docker's "registrytoken"). */
  registryToken?: string;
}

export interface Challenge {
  /** Lowercased: "basic", "bearer". */
  scheme: string;
  params: Record<string, string>;
}

// WWW-Authenticate --------------------------------------------------------------------------

/**
 * Parses one or more WWW-Authenticate values (RFC 7235): several challenges may share a header,
 * separated by commas that also separate parameters; quoted values may hold commas and escapes.
 */
export function parseChallenges(value: string | string[] | undefined): Challenge[] {
  if (value === undefined) return [];
  const values = Array.isArray(value) ? value : [value];
  const out: Challenge[] = [];
  for (const v of values) out.push(...parseOne(v));
  return out;
}

function parseOne(s: string): Challenge[] {
  const out: Challenge[] = [];
  let i = 0;
  const n = s.length;
  const skip = (chars: string) => {
    while (i < n && chars.includes(s[i]!)) i++;
  };
  const token = () => {
    const start = i;
    while (i < n && /[!#$%&'*+.^_`|~0-9A-Za-z-]/.test(s[i]!)) i++;
    return s.slice(start, i);
  };
  let current: Challenge | undefined;
  while (i < n) {
    skip(" \t,");
    if (i >= n) break;
    const start = i;
    const name = token();
    if (name === "") {
      i++; // stray character: skip it rather than loop
      continue;
    }
    skip(" \t");
    if (s[i] === "=" && current) {
      i++;
      skip(" \t");
      let val: string;
      if (s[i] === '"') {
        i++;
        let buf = "";
        while (i < n && s[i] !== '"') {
          if (s[i] === "\\" && i + 1 < n) i++;
          buf += s[i];
          i++;
        }
        i++; // closing quote
        val = buf;
      } else {
        const vs = i;
        while (i < n && s[i] !== ",") i++;
        val = s.slice(vs, i).trim();
      }
      current.params[name.toLowerCase()] = val;
      continue;
    }
    // A token not followed by '=' starts a new challenge (token68 forms are kept as "token68").
    i = start + name.length;
    current = { scheme: name.toLowerCase(), params: {} };
    out.push(current);
    skip(" \t");
    const t68 = /^[A-Za-z0-9._~+/-]+=*(?=\s*(,|$))/.exec(s.slice(i));
    if (t68 && !/^[!#$%&'*+.^_`|~0-9A-Za-z-]+\s*=[^=]/.test(s.slice(i))) {
      current.params.token68 = t68[0];
      i += t68[0].length;
    }
  }
  return out;
}

// Scopes ------------------------------------------------------------------------------------

export function repositoryScope(repo: string, actions: readonly string[]): string {
  return `repository:${repo}:${[...new Set(actions)].join(",")}`;
}

/**
 * Merges scope strings ("repository:a:pull", "repository:a:push", "repository:b:pull") into one
 * entry per resource with the union of its actions, in a stable order.
 */
export function mergeScopes(...lists: ReadonlyArray<readonly string[]>): string[] {
  const byResource = new Map<string, Set<string>>();
  for (const list of lists) {
    for (const raw of list) {
      for (const scope of raw.split(" ").filter(Boolean)) {
        const cut = scope.lastIndexOf(":");
        if (cut <= 0) continue;
        const resource = scope.slice(0, cut);
        const set = byResource.get(resource) ?? new Set<string>();
        for (const a of scope.slice(cut + 1).split(",")) if (a) set.add(a);
        byResource.set(resource, set);
      }
    }
  }
  return [...byResource.entries()]
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([r, acts]) => `${r}:${[...acts].sort(actionOrder).join(",")}`);
}

const ACTION_RANK: Record<string, number> = { pull: 0, push: 1, delete: 2, "*": 3 };
function actionOrder(a: string, b: string): number {
  return (ACTION_RANK[a] ?? 9) - (ACTION_RANK[b] ?? 9) || a.localeCompare(b);
}

/** Whether a token granted for `have` also covers every scope in `want`. */
export function scopesCover(have: readonly string[], want: readonly string[]): boolean {
  const granted = new Map<string, Set<string>>();
  for (const s of mergeScopes(have)) {
    const cut = s.lastIndexOf(":");
    granted.set(s.slice(0, cut), new Set(s.slice(cut + 1).split(",")));
  }
  return mergeScopes(want).every((s) => {
    const cut = s.lastIndexOf(":");
    const acts = granted.get(s.slice(0, cut));
    return (
      acts !== undefined &&
      (acts.has("*") ||
        s
          .slice(cut + 1)
          .split(",")
          .every((a) => acts.has(a)))
    );
  });
}

// Caches ------------------------------------------------------------------------------------

interface CachedToken {
  scopes: string[];
  header: string;
  expiresAt: number;
}

/** What each registry API host asked for last time. */
const challengeCache = new Map<string, Challenge>();
/** Tokens per registry + credentials hash. */
const tokenCache = new Map<string, CachedToken[]>();
/** Token requests under way, so concurrent calls needing the same scope share one. */
const inflight = new Map<string, Promise<string>>();
const MAX_TOKENS_PER_KEY = 64;

/** Forgets every learned challenge and token (tests; a credentials change mid-process). */
export function clearAuthCache(): void {
  challengeCache.clear();
  tokenCache.clear();
}

export function credentialsKey(c: Credentials | undefined): string {
  if (!c || (!c.username && !c.password && !c.identityToken && !c.registryToken)) return "anonymous";
  return createHash("sha256")
    .update(JSON.stringify([c.username ?? "", c.password ?? "", c.identityToken ?? "", c.registryToken ?? ""]))
    .digest("hex")
    .slice(0, 32);
}

export function basicHeader(username: string, password: string): string {
  return `Basic ${Buffer.from(`${username}:${password}`).toString("base64")}`;
}

// The authenticator ---------------------------------------------------------------------------

/** The call being authenticated, named in errors: {operation: "push", target: "host/repo"}. */
export interface AuthSubject {
  operation: string;
  target: string;
}

export interface ResolvedCredentials {
  credentials: Credentials | undefined;
  /** Where they came from, named in error messages: "targetAuth", "/root/.docker/config.json". */
  source: string;
}

export interface AuthenticatorOptions {
  /** Host of the registry API (docker.io → registry-1.docker.io); the cache key. */
  origin: string;
  /** The registry's name, for messages. */
  registry: string;
  /** Looked up lazily: anonymous registries never read docker config files or run helpers. */
  credentials: () => Promise<ResolvedCredentials>;
  dispatcher?: Dispatcher;
  signal?: AbortSignal;
  onRequest?: (method: string, url: string, status: number) => void;
  /** Names the input to check in auth errors when no credentials were found. */
  credentialsHint: string;
  /** Hosts besides the registry's own that may receive credentials over plain http. */
  insecureHosts?: string[];
  now?: () => number;
}

const CLIENT_ID = "imageyard";
const TOKEN_SKEW_MS = 10_000;
const DEFAULT_TOKEN_LIFETIME_S = 60;

export class Authenticator {
  private resolved: ResolvedCredentials | undefined;
  private readonly now: () => number;
  constructor(private readonly opts: AuthenticatorOptions) {
    this.now = opts.now ?? Date.now;
  }

  async credentials(): Promise<ResolvedCredentials> {
    this.resolved ??= await this.opts.credentials();
    return this.resolved;
  }

  /** For error messages: which input holds the credentials, and whether any were found. */
  describe(): { credentialsHint: string; hadCredentials: boolean } {
    const c = this.resolved?.credentials;
    const had = credentialsKey(c) !== "anonymous";
    return { credentialsHint: had ? this.resolved!.source : this.opts.credentialsHint, hadCredentials: had };
  }

  /**
   * The Authorization to send before any challenge, from what this process has learned about the
   * registry: a cached token covering `scopes`, a new token from the known realm (one request
   * instead of a 401 round trip), or Basic credentials. Undefined while nothing is known.
   */
  async headerFor(scopes: readonly string[], subject?: AuthSubject): Promise<string | undefined> {
    const known = challengeCache.get(this.opts.origin);
    const direct = (await this.peekCredentials())?.registryToken;
    if (direct) return `Bearer ${direct}`;
    if (!known) return undefined;
    return this.respondTo(known, scopes, false, this.subject(subject));
  }

  /**
   * Answers a 401: remembers the challenge, then returns the Authorization for the retry. A
   * Bearer challenge's own scope is merged with what the call needs.
   */
  async onUnauthorized(res: HttpResponse, scopes: readonly string[], sent: string | undefined, subject?: AuthSubject): Promise<string> {
    const who = this.subject(subject);
    const challenges = parseChallenges(res.headers["www-authenticate"]);
    const chosen = challenges.find((c) => c.scheme === "bearer" && c.params.realm) ?? challenges.find((c) => c.scheme === "basic");
    if (!chosen) {
      throw new ImageyardError(
        "REGISTRY_UNAUTHORIZED",
        `${who.operation} ${who.target}: the registry answered 401 without a Basic or Bearer challenge (401 UNAUTHORIZED). Check that ${this.opts.origin} is a registry API.`,
        { status: 401 },
      );
    }
    challengeCache.set(this.opts.origin, chosen);
    const merged = chosen.scheme === "bearer" && chosen.params.scope ? mergeScopes(scopes, chosen.params.scope.split(" ")) : [...scopes];
    if (sent?.startsWith("Bearer ")) this.forget(sent);
    const answer = await this.respondTo(chosen, merged, true, who);
    if (answer === undefined || answer === sent) throw this.unauthorizedError(who);
    return answer;
  }

  private async peekCredentials(): Promise<Credentials | undefined> {
    // Only consult the lookup once a registry is known to want auth (or for a registry token).
    if (this.resolved) return this.resolved.credentials;
    if (!challengeCache.has(this.opts.origin)) return undefined;
    return (await this.credentials()).credentials;
  }

  private subject(s: AuthSubject | undefined): AuthSubject {
    return s ?? { operation: "authenticate", target: this.opts.registry };
  }

  private async respondTo(ch: Challenge, scopes: readonly string[], challenged: boolean, who: AuthSubject): Promise<string | undefined> {
    const { credentials } = await this.credentials();
    if (credentials?.registryToken) return `Bearer ${credentials.registryToken}`;
    if (ch.scheme === "basic") {
      if (credentials?.username !== undefined && credentials.password !== undefined)
        return basicHeader(credentials.username, credentials.password);
      if (!challenged) return undefined;
      throw this.unauthorizedError(who);
    }
    const cached = this.cachedToken(scopes);
    if (cached) return cached;
    // Parallel blob uploads ask for the same scope at once: one token request serves them all.
    const flightKey = `${this.key()}|${mergeScopes(scopes).join(" ")}`;
    let flight = inflight.get(flightKey);
    if (!flight) {
      flight = this.fetchToken(ch, scopes, credentials, who).finally(() => inflight.delete(flightKey));
      inflight.set(flightKey, flight);
    }
    return flight;
  }

  private unauthorizedError(who: AuthSubject): ImageyardError {
    const { credentialsHint, hadCredentials } = this.describe();
    const msg = hadCredentials
      ? `${who.operation} ${who.target}: registry refused the credentials (401 UNAUTHORIZED). Check ${credentialsHint} for ${this.opts.registry}.`
      : `${who.operation} ${who.target}: registry requires credentials and none were given (401 UNAUTHORIZED). Set ${this.opts.credentialsHint} for ${this.opts.registry} (or log in with docker login ${this.opts.registry}).`;
    return new ImageyardError("REGISTRY_UNAUTHORIZED", msg, { status: 401 });
  }

  private key(): string {
    return `${this.opts.origin}|${credentialsKey(this.resolved?.credentials)}`;
  }

  private cachedToken(scopes: readonly string[]): string | undefined {
    const list = tokenCache.get(this.key());
    if (!list) return undefined;
    const t = this.now();
    const live = list.filter((e) => e.expiresAt > t);
    if (live.length !== list.length) tokenCache.set(this.key(), live);
    return live.find((e) => scopesCover(e.scopes, scopes))?.header;
  }

  private forget(headerValue: string): void {
    const list = tokenCache.get(this.key());
    if (list)
      tokenCache.set(
        this.key(),
        list.filter((e) => e.header !== headerValue),
      );
  }

  private async fetchToken(ch: Challenge, scopes: readonly string[], c: Credentials | undefined, who: AuthSubject): Promise<string> {
    const realm = ch.params.realm!;
    let url: URL;
    try {
      url = new URL(realm);
    } catch {
      throw new ImageyardError(
        "REGISTRY_UNAUTHORIZED",
        `${who.operation} ${who.target}: the token realm "${realm}" is not a URL (401 UNAUTHORIZED). Check the registry's auth configuration.`,
      );
    }
    const sendsSecrets = c?.identityToken !== undefined || (c?.username !== undefined && c.password !== undefined);
    if (sendsSecrets) this.checkRealm(url, who);
    const service = ch.params.service;
    const target = {
      operation: who.operation,
      target: who.target,
      registry: this.opts.registry,
      object: "registry" as const,
      ...this.describe(),
    };
    const common = {
      dispatcher: this.opts.dispatcher,
      signal: this.opts.signal,
      operation: `${who.operation} ${who.target}`,
      mapError: (ctx: Parameters<typeof registryError>[0]) => registryError(ctx, target),
    };
    let res: HttpResponse;
    if (c?.identityToken) {
      const form = new URLSearchParams({
        grant_type: "refresh_token",
        refresh_token: c.identityToken,
        client_id: CLIENT_ID,
        access_type: "offline",
      });
      if (service) form.set("service", service);
      if (scopes.length) form.set("scope", scopes.join(" "));
      res = await this.observe("POST", url.toString(), () =>
        send({
          ...common,
          method: "POST",
          url: url.toString(),
          ok: [200],
          headers: { "content-type": "application/x-www-form-urlencoded" },
          body: form.toString(),
        }),
      );
    } else {
      if (service) url.searchParams.set("service", service);
      for (const s of scopes) url.searchParams.append("scope", s);
      const headers: Record<string, string> = {};
      if (c?.username !== undefined && c.password !== undefined) {
        headers.authorization = basicHeader(c.username, c.password);
        url.searchParams.set("client_id", CLIENT_ID);
        url.searchParams.set("offline_token", "true");
      }
      res = await this.observe("GET", url.toString(), () => send({ ...common, method: "GET", url: url.toString(), ok: [200], headers }));
    }
    const doc = await readJson<{ token?: string; access_token?: string; expires_in?: number }>(
      res,
      `${who.operation} ${who.target}`,
      256 * 1024,
    );
    const token = doc.token ?? doc.access_token;
    if (!token) {
      throw new ImageyardError(
        "REGISTRY_UNAUTHORIZED",
        `${who.operation} ${who.target}: the token service answered without a token (200). Check the registry's auth configuration.`,
      );
    }
    const lifetime = typeof doc.expires_in === "number" && doc.expires_in > 0 ? doc.expires_in : DEFAULT_TOKEN_LIFETIME_S;
    // Recorded as requested: a token granted less shows up as a 401, is forgotten and re-fetched once.
    const entry: CachedToken = {
      scopes: mergeScopes(scopes),
      header: `Bearer ${token}`,
      expiresAt: this.now() + Math.max(lifetime * 1000 - TOKEN_SKEW_MS, lifetime * 500),
    };
    const list = (tokenCache.get(this.key()) ?? []).filter((e) => !scopesCover(entry.scopes, e.scopes));
    list.push(entry);
    tokenCache.set(this.key(), list.slice(-MAX_TOKENS_PER_KEY));
    return entry.header;
  }

  /**
   * Credentials go over plain http only to the registry's own host (same machine name) or to a
   * host the user named insecure: a challenge must not be able to send them, unencrypted, to a
   * host nobody chose.
   */
  private checkRealm(realm: URL, who: AuthSubject): void {
    if (realm.protocol !== "http:") return;
    const registryHost = new URL(`http://${this.opts.origin}`).hostname;
    const insecure = this.opts.insecureHosts ?? [];
    if (realm.hostname === registryHost || insecure.includes(realm.host) || insecure.includes(realm.hostname)) return;
    throw new ImageyardError(
      "REGISTRY_UNAUTHORIZED",
      `${who.operation} ${who.target}: the registry's challenge sends the credentials to the token service ${realm.origin}, another host over plain http; ` +
        `imageyard refuses, because they would travel unencrypted to a host nobody named (401 UNAUTHORIZED). ` +
        `Serve the token service over https, or, if you trust ${realm.host}, mark it insecure (--insecure-host ${realm.host}, insecureHosts).`,
      { status: 401 },
    );
  }

  private async observe(method: string, url: string, fn: () => Promise<HttpResponse>): Promise<HttpResponse> {
    try {
      const res = await fn();
      this.opts.onRequest?.(method, stripQuery(url), res.status);
      return res;
    } catch (e) {
      const status = (e as { status?: number }).status;
      if (status !== undefined) this.opts.onRequest?.(method, stripQuery(url), status);
      throw e;
    }
  }
}
