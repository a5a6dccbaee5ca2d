import { createPublicKey, verify } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ensureCerts } from "../../testbed/certs";
import { grantAccess, libtrustKeyId, parseScopes, serveTokens, type TokenServerConfig } from "../../testbed/tokenServer";

const dir = mkdtempSync(join(tmpdir(), "iy-token-"));
const certs = ensureCerts(join(dir, "certs"));
const users: TokenServerConfig["users"] = {
  pusher: { password: "push-pw", actions: ["pull", "push", "delete", "*"], catalog: true },
  puller: { password: "pull-pw", actions: ["pull"] },
};
const cfg: TokenServerConfig = {
  port: 0,
  issuer: "iss-test",
  service: "svc-test",
  keyFile: certs.tokenKey,
  certFile: certs.tokenCert,
  users,
};
const server = serveTokens(cfg);
let base = "";

beforeAll(async () => {
  await new Promise<void>((ok) => server.listen(0, "127.0.0.1", ok));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(async () => {
  await new Promise((ok) => server.close(ok));
  rmSync(dir, { recursive: true, force: true });
});

const basic = (u: string, p: string) => ({ authorization: `Basic ${Buffer.from(`${u}:${p}`).toString("base64")}` });

function decode(token: string): { header: any; claims: any; valid: boolean } {
  const [h, c, s] = token.split(".");
  const valid = verify(
    "sha256",
    Buffer.from(`${h}.${c}`),
    { key: createPublicKey(readFileSync(certs.tokenCert, "utf8")), dsaEncoding: "ieee-p1363" },
    Buffer.from(s!, "base64url"),
  );
  return {
    header: JSON.parse(Buffer.from(h!, "base64url").toString()),
    claims: JSON.parse(Buffer.from(c!, "base64url").toString()),
    valid,
  };
}

describe("token server logic", () => {
  it("parses scopes given as several parameters and as one space-separated string", () => {
    expect(
      parseScopes(["repository:a/b:pull,push repository:c/d:pull", "registry:catalog:*", "junk", "repository(plugin):p/q:pull"]),
    ).toEqual([
      { type: "repository", name: "a/b", actions: ["pull", "push"] },
      { type: "repository", name: "c/d", actions: ["pull"] },
      { type: "registry", name: "catalog", actions: ["*"] },
      { type: "repository(plugin)", name: "p/q", actions: ["pull"] },
    ]);
  });

  it("grants only the actions a user has and drops scopes with nothing left", () => {
    const wanted = parseScopes(["repository:a/b:pull,push,delete registry:catalog:*"]);
    expect(grantAccess(users.puller!, wanted)).toEqual([{ type: "repository", name: "a/b", actions: ["pull"] }]);
    expect(grantAccess(users.pusher!, wanted)).toEqual([
      { type: "repository", name: "a/b", actions: ["pull", "push", "delete"] },
      { type: "registry", name: "catalog", actions: ["*"] },
    ]);
    expect(grantAccess({ password: "x", actions: [] }, wanted)).toEqual([]);
  });

  it("derives libtrust key ids: 12 groups of 4 base32 characters, one per key", () => {
    const id = libtrustKeyId(readFileSync(certs.tokenCert, "utf8"));
    expect(id).toMatch(/^([A-Z2-7]{4}:){11}[A-Z2-7]{4}$/);
    expect(libtrustKeyId(readFileSync(certs.caFile, "utf8"))).not.toBe(id);
  });
});

describe("token server over HTTP", () => {
  it("asks for Basic credentials and refuses unknown users or wrong passwords", async () => {
    const anon = await fetch(`${base}/token?service=svc-test`);
    expect(anon.status).toBe(401);
    expect(anon.headers.get("www-authenticate")).toMatch(/^Basic realm=/);
    expect((await fetch(`${base}/token?service=svc-test`, { headers: basic("nobody", "x") })).status).toBe(401);
    expect((await fetch(`${base}/token?service=svc-test`, { headers: basic("puller", "push-pw") })).status).toBe(401);
    expect((await fetch(`${base}/token?service=other`, { headers: basic("puller", "pull-pw") })).status).toBe(400);
  });

  it("signs an ES256 JWT with issuer, audience, times, id and only the granted access", async () => {
    const res = await fetch(`${base}/token?service=svc-test&scope=${encodeURIComponent("repository:a/b:pull,push")}`, {
      headers: basic("puller", "pull-pw"),
    });
    expect(res.status).toBe(200);
    const body = (await res.json()) as { token: string; access_token: string; expires_in: number };
    expect(body.access_token).toBe(body.token);
    const { header, claims, valid } = decode(body.token);
    expect(valid).toBe(true);
    expect(header).toEqual({ typ: "JWT", alg: "ES256", kid: libtrustKeyId(readFileSync(certs.tokenCert, "utf8")) });
    expect(claims).toMatchObject({
      iss: "iss-test",
      aud: "svc-test",
      sub: "puller",
      access: [{ type: "repository", name: "a/b", actions: ["pull"] }],
    });
    const now = Date.now() / 1000;
    expect(claims.exp).toBeGreaterThan(now);
    expect(claims.nbf).toBeLessThanOrEqual(now);
    expect(claims.iat).toBeLessThanOrEqual(now + 1);
    expect(claims.jti).toMatch(/^[0-9a-f]{32}$/);
    expect(claims.exp - claims.iat).toBe(body.expires_in);
  });

  it("supports the OAuth2 password grant and rejects other grants", async () => {
    const form = new URLSearchParams({
      grant_type: "password",
      username: "pusher",
      password: "push-pw",
      service: "svc-test",
      scope: "repository:x/y:push",
    });
    const ok = await fetch(`${base}/token`, { method: "POST", body: form });
    expect(ok.status).toBe(200);
    const { access_token } = (await ok.json()) as { access_token: string };
    expect(decode(access_token).claims.access).toEqual([{ type: "repository", name: "x/y", actions: ["push"] }]);
    form.set("grant_type", "refresh_token");
    expect((await fetch(`${base}/token`, { method: "POST", body: form })).status).toBe(400);
    form.set("grant_type", "password");
    form.set("password", "nope");
    expect((await fetch(`${base}/token`, { method: "POST", body: form })).status).toBe(401);
  });
});
