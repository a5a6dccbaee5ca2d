// Keystone logic without the real services: catalog selection, auth bodies, URL normalization, and
// the session's token reuse / re-authentication rules against an in-process fake (node:http).
import { createServer, type IncomingMessage, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { Readable } from "node:stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { isImageyardError } from "../../../../provider/http/errors";
import { glanceError } from "../../../../provider/glance/errors";
import {
  authRequestBody,
  glanceRoot,
  KeystoneSession,
  normalizeAuthUrl,
  selectEndpoint,
  type CatalogService,
} from "../../../../provider/glance/keystone";

const catalog: CatalogService[] = [
  { type: "identity", endpoints: [{ interface: "public", region_id: "RegionOne", url: "https://ks/v3" }] },
  {
    type: "image",
    endpoints: [
      { interface: "public", region_id: "RegionOne", url: "https://glance-one.example:9292" },
      { interface: "internal", region_id: "RegionOne", url: "http://glance-one.internal:9292" },
      { interface: "public", region_id: "RegionTwo", url: "https://glance-two.example:9292/v2" },
    ],
  },
];

describe("selectEndpoint", () => {
  it("picks by region and interface", () => {
    expect(selectEndpoint(catalog, { type: "image", region: "RegionOne", interface: "internal" })).toBe("http://glance-one.internal:9292");
    expect(selectEndpoint(catalog, { type: "image", region: "RegionTwo" })).toBe("https://glance-two.example:9292/v2");
  });

  it("accepts the v2-era interface names publicURL/internalURL", () => {
    expect(selectEndpoint(catalog, { type: "image", region: "RegionOne", interface: "internalURL" })).toBe(
      "http://glance-one.internal:9292",
    );
  });

  it("refuses to guess between regions and names them", () => {
    expect(() => selectEndpoint(catalog, { type: "image" })).toThrow(/several regions \(RegionOne, RegionTwo\)/);
  });

  it("a single region needs no region setting", () => {
    expect(
      selectEndpoint(
        [catalog[1]!].map((s) => ({ ...s, endpoints: s.endpoints.slice(0, 1) })),
        { type: "image" },
      ),
    ).toBe("https://glance-one.example:9292");
  });

  it("a missing service type or interface/region lists what the catalog has", () => {
    const e1 = (() => {
      try {
        selectEndpoint(catalog, { type: "volumev3" });
      } catch (e) {
        return e;
      }
    })();
    expect(isImageyardError(e1, "KEYSTONE_NO_ENDPOINT")).toBe(true);
    expect((e1 as Error).message).toContain("identity, image");
    expect(() => selectEndpoint(catalog, { type: "image", region: "RegionTwo", interface: "admin" })).toThrow(
      /public@RegionOne, internal@RegionOne, public@RegionTwo/,
    );
  });

  it("glanceRoot strips a version suffix so paths can add /v2", () => {
    expect(glanceRoot("https://g:9292/v2/")).toBe("https://g:9292");
    expect(glanceRoot("https://g/image/v2.1")).toBe("https://g/image");
    expect(glanceRoot("https://g:9292")).toBe("https://g:9292");
  });
});

describe("normalizeAuthUrl and authRequestBody", () => {
  it("appends /v3 when no version is given and refuses v2.0", () => {
    expect(normalizeAuthUrl("https://ks:5000")).toBe("https://ks:5000/v3");
    expect(normalizeAuthUrl("https://ks:5000/identity/v3/")).toBe("https://ks:5000/identity/v3");
    expect(() => normalizeAuthUrl("https://ks:5000/v2.0")).toThrow(/v2, which is gone/);
    expect(() => normalizeAuthUrl("ks:5000")).toThrow(/http or https|not a URL/);
  });

  it("password by names scopes to the project in its domain", () => {
    expect(
      authRequestBody({ authUrl: "x", username: "u", password: "p", userDomainName: "Users", projectName: "demo", projectDomainId: "pd" }),
    ).toEqual({
      auth: {
        identity: { methods: ["password"], password: { user: { name: "u", domain: { name: "Users" }, password: "p" } } },
        scope: { project: { name: "demo", domain: { id: "pd" } } },
      },
    });
  });

  it("domain_name is the fallback for user and project domains; no domain at all means the default domain", () => {
    const b = authRequestBody({ authUrl: "x", username: "u", password: "p", domainName: "D", projectName: "demo" }) as {
      auth: { scope: unknown; identity: { password: { user: { domain: unknown } } } };
    };
    expect(b.auth.identity.password.user.domain).toEqual({ name: "D" });
    expect(b.auth.scope).toEqual({ project: { name: "demo", domain: { name: "D" } } });
    const c = authRequestBody({ authUrl: "x", username: "u", password: "p" }) as {
      auth: { scope?: unknown; identity: { password: { user: { domain: unknown } } } };
    };
    expect(c.auth.identity.password.user.domain).toEqual({ id: "default" });
    expect(c.auth.scope).toBeUndefined();
  });

  it("an application credential sends no scope (Keystone refuses one)", () => {
    expect(authRequestBody({ authUrl: "x", applicationCredentialId: "ac", applicationCredentialSecret: "s" })).toEqual({
      auth: { identity: { methods: ["application_credential"], application_credential: { id: "ac", secret: "s" } } },
    });
    expect(
      authRequestBody({
        authUrl: "x",
        authType: "v3applicationcredential",
        applicationCredentialName: "n",
        username: "u",
        applicationCredentialSecret: "s",
      }),
    ).toEqual({
      auth: {
        identity: {
          methods: ["application_credential"],
          application_credential: { name: "n", user: { name: "u", domain: { id: "default" } }, secret: "s" },
        },
      },
    });
  });

  it("missing pieces are input errors that say what to add", () => {
    expect(() => authRequestBody({ authUrl: "x", username: "u" })).toThrow(/needs username \(or userId\) and password/);
    expect(() => authRequestBody({ authUrl: "x", applicationCredentialSecret: "s" })).toThrow(/applicationCredentialId/);
  });
});

// ---------------------------------------------------------------- session against a fake

interface Fake {
  url: string;
  tokensIssued: number;
  /** Tokens Glance refuses. */
  revoked: Set<string>;
  /** Lifetime of issued tokens. */
  lifetimeMs: number;
  /** Requests Glance saw: method, token. */
  seen: Array<{ method: string; token: string; bytes: number }>;
  server: Server;
}

async function startFake(): Promise<Fake> {
  const fake = { tokensIssued: 0, revoked: new Set<string>(), lifetimeMs: 3600_000, seen: [] } as unknown as Fake;
  const body = async (req: IncomingMessage) => {
    let n = 0;
    for await (const c of req) n += (c as Buffer).length;
    return n;
  };
  fake.server = createServer(async (req, res) => {
    const bytes = await body(req);
    if (req.url === "/v3/auth/tokens" && req.method === "POST") {
      const t = `tok-${++fake.tokensIssued}`;
      res.writeHead(201, { "x-subject-token": t, "content-type": "application/json" });
      res.end(
        JSON.stringify({
          token: {
            expires_at: new Date(Date.now() + fake.lifetimeMs).toISOString(),
            project: { id: "p1" },
            catalog: [{ type: "image", endpoints: [{ interface: "public", region_id: "R", url: `${fake.url}/glance` }] }],
          },
        }),
      );
      return;
    }
    const token = String(req.headers["x-auth-token"] ?? "");
    fake.seen.push({ method: req.method ?? "", token, bytes });
    if (fake.revoked.has(token)) {
      res.writeHead(401, { "content-type": "application/json", "www-authenticate": "Keystone uri=x" });
      res.end(
        JSON.stringify({
          message: "This server could not verify that you are authorized<br /><br />",
          code: "401 Unauthorized",
          title: "Unauthorized",
        }),
      );
      return;
    }
    res.writeHead(req.method === "PUT" ? 204 : 200, { "content-type": "application/json" });
    res.end(req.method === "PUT" ? undefined : JSON.stringify({ images: [] }));
  });
  await new Promise<void>((r) => fake.server.listen(0, "127.0.0.1", r));
  fake.url = `http://127.0.0.1:${(fake.server.address() as AddressInfo).port}`;
  return fake;
}

describe("KeystoneSession (fake Keystone + Glance)", () => {
  let fake: Fake;
  beforeAll(async () => {
    fake = await startFake();
  });
  afterAll(() => new Promise<void>((r) => fake.server.close(() => r())));

  const session = (user: string) => new KeystoneSession({ authUrl: `${fake.url}/v3`, username: user, password: "pw", projectName: "p" });

  it("reuses one token for many requests and finds Glance in the catalog", async () => {
    const s = session("reuse");
    expect(await s.endpoint("image")).toBe(`${fake.url}/glance`);
    for (let i = 0; i < 3; i++)
      await (await s.request({ method: "GET", url: `${fake.url}/glance/v2/images`, ok: [200], operation: "list" })).body.dump();
    expect(s.authentications).toBe(1);
  });

  it("a 401 on a replayable request re-authenticates exactly once and resends with the new token", async () => {
    const s = session("reauth");
    const t1 = await s.token();
    fake.revoked.add(t1.value);
    const before = fake.seen.length;
    const res = await s.request({ method: "GET", url: `${fake.url}/glance/v2/images`, ok: [200], operation: "list" });
    await res.body.dump();
    expect(res.status).toBe(200);
    expect(s.authentications).toBe(2);
    expect(fake.seen.slice(before).map((r) => r.token)).toEqual([t1.value, (await s.token()).value]);
  });

  it("a second 401 after re-authenticating is an error (no loop)", async () => {
    const s = session("twice");
    fake.revoked.add(`tok-${fake.tokensIssued + 1}`);
    fake.revoked.add(`tok-${fake.tokensIssued + 2}`);
    const err = await s
      .request({
        method: "GET",
        url: `${fake.url}/glance/v2/images`,
        ok: [200],
        operation: "list images",
        mapError: (ctx) => glanceError(ctx),
      })
      .catch((e: unknown) => e);
    expect(isImageyardError(err, "KEYSTONE_UNAUTHORIZED")).toBe(true);
    expect((err as Error).message).toBe(
      'list images: Glance answered "This server could not verify that you are authorized" (401 Unauthorized). The token was refused even after re-authenticating; check the credentials and that Glance trusts this Keystone.',
    );
    expect(s.authentications).toBe(2);
  });

  it("a streaming body is never replayed: a 401 fails at once with a clear error, and Glance saw one PUT", async () => {
    const s = session("stream401");
    const t = await s.token();
    fake.revoked.add(t.value);
    const before = fake.seen.length;
    const err = await s
      .request({
        method: "PUT",
        url: `${fake.url}/glance/v2/images/x/file`,
        body: Readable.from([Buffer.alloc(1000)]),
        ok: [204],
        operation: "upload x",
      })
      .catch((e: unknown) => e);
    expect(isImageyardError(err, "KEYSTONE_UNAUTHORIZED")).toBe(true);
    expect((err as Error).message).toContain("cannot be replayed");
    expect(fake.seen.slice(before).filter((r) => r.method === "PUT")).toHaveLength(1);
  });

  it("a token too close to expiry for a long upload is renewed before the stream is sent", async () => {
    const s = session("nearexpiry");
    fake.lifetimeMs = 10 * 60_000; // valid for 10 min: fine for a GET, too short for an upload
    try {
      const short = await s.token();
      await (await s.request({ method: "GET", url: `${fake.url}/glance/v2/images`, ok: [200], operation: "list" })).body.dump();
      expect(s.authentications).toBe(1);
      fake.lifetimeMs = 3600_000;
      const res = await s.request({
        method: "PUT",
        url: `${fake.url}/glance/v2/images/x/file`,
        body: Readable.from([Buffer.alloc(10)]),
        ok: [204],
        operation: "upload x",
      });
      await res.body.dump();
      expect(s.authentications).toBe(2);
      expect(fake.seen.at(-1)!.token).not.toBe(short.value);
      expect(fake.seen.at(-1)!.bytes).toBe(10);
    } finally {
      fake.lifetimeMs = 3600_000;
    }
  });
});
