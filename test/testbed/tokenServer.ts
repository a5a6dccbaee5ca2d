// A small Docker-style token server for the bearer-auth test registry. It checks Basic
// credentials, grants only the actions each user may have, and signs an ES256 JWT the registry
// accepts (its `kid` is the libtrust id of a certificate in the registry's rootcertbundle, or the
// certificate itself travels in `x5c`).
//
// Runs as its own process so tests, the demo and the benches can share it:
//   node test/testbed/tokenServer.ts serve CONFIG.json   (or node dist/test/testbed/tokenServer.js …)
// Only node: built-ins are imported, so Node runs this file directly with type stripping.
//
//   GET  /token?service=S&scope=repository:a/b:pull,push[&scope=…]   (Basic auth)
//   POST /token   grant_type=password&username&password&service&scope  (OAuth2 password grant)
//   GET  /healthz
import { createHash, createPrivateKey, createPublicKey, randomBytes, sign, timingSafeEqual, type KeyObject } from "node:crypto";
import { readFileSync } from "node:fs";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";

export interface TokenUser {
  password: string;
  /** Actions on every repository: "pull", "push", "delete", "*". */
  actions: string[];
  /** May list the catalog (`registry:catalog:*`). */
  catalog?: boolean;
}

export interface TokenServerConfig {
  port: number;
  issuer: string;
  service: string;
  keyFile: string;
  certFile: string;
  users: Record<string, TokenUser>;
  /** How the registry finds the verifying key; both work on distribution 2.8. */
  header?: "kid" | "x5c";
  ttlSeconds?: number;
}

export interface AccessEntry {
  type: string;
  name: string;
  actions: string[];
}

const BASE32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

function base32(bytes: Buffer): string {
  let out = "";
  let bits = 0;
  let value = 0;
  for (const b of bytes) {
    value = ((value << 8) | b) & 0xffff;
    bits += 8;
    while (bits >= 5) {
      out += BASE32[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  if (bits > 0) out += BASE32[(value << (5 - bits)) & 31];
  return out;
}

/**
 * The key id distribution 2.8 derives for each certificate in its rootcertbundle (libtrust
 * format: sha256 of the DER public key, first 240 bits, base32, groups of four joined by ':').
 */
export function libtrustKeyId(certPem: string): string {
  const der = createPublicKey(certPem).export({ type: "spki", format: "der" });
  const id = base32(createHash("sha256").update(der).digest().subarray(0, 30));
  return (id.match(/.{4}/g) ?? []).join(":");
}

/** Parses `type:name:actions` scopes; several may share one string, separated by spaces. */
export function parseScopes(scopes: string[]): AccessEntry[] {
  const out: AccessEntry[] = [];
  for (const s of scopes.flatMap((x) => x.split(" ")).filter(Boolean)) {
    const first = s.indexOf(":");
    const last = s.lastIndexOf(":");
    if (first <= 0 || last === first) continue;
    out.push({
      type: s.slice(0, first),
      name: s.slice(first + 1, last),
      actions: s
        .slice(last + 1)
        .split(",")
        .filter(Boolean),
    });
  }
  return out;
}

/** Narrows what was asked to what the user may do; entries with nothing left are dropped. */
export function grantAccess(user: TokenUser, wanted: AccessEntry[]): AccessEntry[] {
  const granted: AccessEntry[] = [];
  for (const w of wanted) {
    let actions: string[] = [];
    if (w.type === "repository" || w.type.startsWith("repository(")) actions = w.actions.filter((a) => user.actions.includes(a));
    else if (w.type === "registry" && w.name === "catalog" && user.catalog) actions = w.actions.filter((a) => a === "*");
    if (actions.length > 0) granted.push({ type: w.type, name: w.name, actions });
  }
  return granted;
}

function b64url(data: Buffer | string): string {
  return Buffer.from(data).toString("base64url");
}

export interface TokenSigner {
  sign(subject: string, access: AccessEntry[]): { token: string; expiresIn: number; issuedAt: string };
}

export function createSigner(
  cfg: Pick<TokenServerConfig, "issuer" | "service" | "keyFile" | "certFile" | "header" | "ttlSeconds">,
): TokenSigner {
  const key: KeyObject = createPrivateKey(readFileSync(cfg.keyFile, "utf8"));
  const certPem = readFileSync(cfg.certFile, "utf8");
  const ttl = cfg.ttlSeconds ?? 300;
  const header: Record<string, unknown> = { typ: "JWT", alg: "ES256" };
  if (cfg.header === "x5c") {
    const der = certPem.replace(/-----(BEGIN|END) CERTIFICATE-----/g, "").replace(/\s+/g, "");
    header.x5c = [der];
  } else header.kid = libtrustKeyId(certPem);
  return {
    sign(subject, access) {
      const now = Math.floor(Date.now() / 1000);
      const claims = {
        iss: cfg.issuer,
        sub: subject,
        aud: cfg.service,
        exp: now + ttl,
        nbf: now - 5,
        iat: now,
        jti: randomBytes(16).toString("hex"),
        access,
      };
      const input = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
      // JWS wants the raw r||s form, not DER.
      const sig = sign("sha256", Buffer.from(input), { key, dsaEncoding: "ieee-p1363" });
      return { token: `${input}.${b64url(sig)}`, expiresIn: ttl, issuedAt: new Date(now * 1000).toISOString() };
    },
  };
}

function sameSecret(a: string, b: string): boolean {
  const x = createHash("sha256").update(a).digest();
  const y = createHash("sha256").update(b).digest();
  return timingSafeEqual(x, y);
}

function authenticate(
  users: Record<string, TokenUser>,
  username: string | undefined,
  password: string | undefined,
): { name: string; user: TokenUser } | undefined {
  if (username === undefined || password === undefined) return undefined;
  const user = Object.hasOwn(users, username) ? users[username] : undefined;
  return user && sameSecret(user.password, password) ? { name: username, user } : undefined;
}

function basicCredentials(req: IncomingMessage): { username?: string; password?: string } {
  const m = /^Basic\s+(\S+)$/i.exec(req.headers.authorization ?? "");
  if (!m?.[1]) return {};
  const text = Buffer.from(m[1], "base64").toString("utf8");
  const i = text.indexOf(":");
  return i < 0 ? {} : { username: text.slice(0, i), password: text.slice(i + 1) };
}

function json(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  res.writeHead(status, { "content-type": "application/json", "cache-control": "no-store", ...headers });
  res.end(JSON.stringify(body));
}

async function readBody(req: IncomingMessage, max = 64 * 1024): Promise<string> {
  let size = 0;
  const chunks: Buffer[] = [];
  for await (const c of req as AsyncIterable<Buffer>) {
    size += c.length;
    if (size > max) throw new Error("body too large");
    chunks.push(c);
  }
  return Buffer.concat(chunks).toString("utf8");
}

export function serveTokens(cfg: TokenServerConfig, log: (line: string) => void = () => {}): Server {
  const signer = createSigner(cfg);
  const deny = (res: ServerResponse) =>
    json(
      res,
      401,
      { errors: [{ code: "UNAUTHORIZED", message: "authentication required" }] },
      { "www-authenticate": 'Basic realm="imageyard-token"' },
    );
  return createServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://x");
    if (url.pathname === "/healthz") return json(res, 200, { ok: true });
    if (url.pathname !== "/token") return json(res, 404, { error: "not found" });
    if (req.method === "GET") {
      const c = basicCredentials(req);
      const who = authenticate(cfg.users, c.username, c.password);
      const service = url.searchParams.get("service");
      if (!who) {
        log(`GET /token 401 user=${c.username ?? "-"}`);
        return deny(res);
      }
      if (service !== null && service !== cfg.service)
        return json(res, 400, { error: "invalid_request", error_description: `unknown service ${service}` });
      const access = grantAccess(who.user, parseScopes(url.searchParams.getAll("scope")));
      const t = signer.sign(who.name, access);
      log(`GET /token 200 user=${who.name} access=${JSON.stringify(access)}`);
      return json(res, 200, { token: t.token, access_token: t.token, expires_in: t.expiresIn, issued_at: t.issuedAt });
    }
    if (req.method === "POST") {
      readBody(req).then(
        (body) => {
          const form = new URLSearchParams(body);
          if (form.get("grant_type") !== "password") {
            log(`POST /token 400 grant_type=${form.get("grant_type") ?? "-"}`);
            return json(res, 400, { error: "unsupported_grant_type" });
          }
          const who = authenticate(cfg.users, form.get("username") ?? undefined, form.get("password") ?? undefined);
          if (!who) {
            log(`POST /token 401 user=${form.get("username") ?? "-"}`);
            return json(res, 401, { error: "invalid_grant" });
          }
          const service = form.get("service");
          if (service !== null && service !== cfg.service)
            return json(res, 400, { error: "invalid_request", error_description: `unknown service ${service}` });
          const access = grantAccess(who.user, parseScopes(form.getAll("scope")));
          const t = signer.sign(who.name, access);
          log(`POST /token 200 user=${who.name} access=${JSON.stringify(access)}`);
          json(res, 200, { access_token: t.token, expires_in: t.expiresIn, issued_at: t.issuedAt, scope: form.getAll("scope").join(" ") });
        },
        () => json(res, 400, { error: "invalid_request" }),
      );
      return;
    }
    json(res, 405, { error: "method not allowed" }, { allow: "GET, POST" });
  });
}

async function main(configFile: string): Promise<void> {
  const cfg = JSON.parse(readFileSync(configFile, "utf8")) as TokenServerConfig;
  const server = serveTokens(cfg, (line) => process.stdout.write(`${new Date().toISOString()} ${line}\n`));
  await new Promise<void>((ok, fail) => {
    server.once("error", fail);
    server.listen(cfg.port, "127.0.0.1", ok);
  });
  process.stdout.write(`token server listening on 127.0.0.1:${cfg.port} pid ${process.pid}\n`);
  const stop = () => {
    server.close();
    server.closeAllConnections();
    process.exit(0);
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

if (/tokenServer\.(ts|js)$/.test(process.argv[1] ?? "") && process.argv[2] === "serve" && process.argv[3]) {
  main(process.argv[3]).catch((e) => {
    console.error(e);
    process.exit(1);
  });
}
