import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { PassThrough } from "node:stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createDispatcher, drain, header, parseRetryAfter, readBytes, readCapped, readJson, send } from "../../../../provider/http/client";
import { ImageyardError, isImageyardError } from "../../../../provider/http/errors";

let server: Server;
let base: string;
const routes = new Map<string, (req: IncomingMessage, res: ServerResponse) => void>();

beforeAll(async () => {
  server = createServer((req, res) => {
    const h = routes.get(new URL(req.url ?? "/", "http://x").pathname);
    if (h) return h(req, res);
    res.statusCode = 404;
    res.end("no route");
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  routes.set("/early", (_q, res) => {
    res.statusCode = 400;
    res.end('{"errors":[{"code":"DIGEST_INVALID"}]}');
  });
  routes.set("/json", (_q, res) => res.end(JSON.stringify({ a: 1 })));
  routes.set("/big", (_q, res) => res.end("x".repeat(5000)));
  routes.set("/bad-json", (_q, res) => res.end("{"));
  routes.set("/busy", (_q, res) => {
    res.statusCode = 503;
    res.setHeader("retry-after", "7");
    res.end(`busy\n\n${"y".repeat(2000)}`);
  });
  routes.set("/redirect", (_q, res) => {
    res.statusCode = 307;
    res.setHeader("location", "/json");
    res.end();
  });
  routes.set("/echo", (req, res) => {
    let n = 0;
    req.on("data", (c: Buffer) => (n += c.length));
    req.on("end", () => res.end(JSON.stringify({ method: req.method, n, ct: req.headers["content-type"] ?? null })));
  });
});

afterAll(async () => {
  server.closeAllConnections();
  await new Promise<void>((r) => server.close(() => r()));
});

describe("parseRetryAfter", () => {
  it("reads delta-seconds and HTTP dates, never negative", () => {
    const now = Date.parse("2026-01-01T00:00:00Z");
    expect(parseRetryAfter("5", now)).toBe(5000);
    expect(parseRetryAfter("0", now)).toBe(0);
    expect(parseRetryAfter("1.5", now)).toBe(1500);
    expect(parseRetryAfter("-3", now)).toBe(0);
    expect(parseRetryAfter("Thu, 01 Jan 2026 00:00:30 GMT", now)).toBe(30_000);
    expect(parseRetryAfter("Wed, 31 Dec 2025 23:59:00 GMT", now)).toBe(0);
  });

  it("ignores absent, blank and unparseable values", () => {
    expect(parseRetryAfter(undefined)).toBeUndefined();
    expect(parseRetryAfter("")).toBeUndefined();
    expect(parseRetryAfter("   ")).toBeUndefined();
    expect(parseRetryAfter("soon")).toBeUndefined();
  });
});

describe("send", () => {
  it("returns a response whose status is in ok", async () => {
    const res = await send({ method: "GET", url: `${base}/json`, ok: [200], operation: "get json" });
    expect(res.status).toBe(200);
    expect(await readJson(res, "json")).toEqual({ a: 1 });
  });

  it("turns any other status into a typed, capped, retry-aware error", async () => {
    const e = (await send({ method: "GET", url: `${base}/busy?token=secret`, ok: [200], operation: "probe busy" }).catch(
      (x) => x,
    )) as ImageyardError;
    expect(isImageyardError(e, "HTTP_ERROR")).toBe(true);
    expect(e.status).toBe(503);
    expect(e.retryable).toBe(true);
    expect(e.retryAfterMs).toBe(7000);
    expect(e.message).toMatch(/^probe busy: GET http:\/\/127\.0\.0\.1:\d+\/busy\?token=REDACTED answered 503: busy y+…$/);
    expect(e.message).not.toContain("secret");
    expect(e.body!.length).toBeLessThanOrEqual(513);
  });

  it("lets the caller map statuses with mapError", async () => {
    const e = await send({
      method: "GET",
      url: `${base}/nope`,
      ok: [200],
      operation: "x",
      mapError: (ctx) => new ImageyardError("NAME_UNKNOWN", `mapped ${ctx.status} ${ctx.body}`),
    }).catch((x) => x);
    expect(e.code).toBe("NAME_UNKNOWN");
    expect(e.message).toBe("mapped 404 no route");
  });

  it("streams a body and sends its headers", async () => {
    const res = await send({
      method: "PUT",
      url: `${base}/echo`,
      ok: [200],
      operation: "put",
      body: Buffer.alloc(1000),
      headers: { "content-type": "application/octet-stream" },
    });
    expect(await readJson(res, "echo")).toEqual({ method: "PUT", n: 1000, ct: "application/octet-stream" });
  });

  it("reports the server's early answer (not a socket error, no hang) when it replies before reading a streaming body", async () => {
    const body = new PassThrough();
    body.write(Buffer.alloc(1 << 20));
    const t0 = Date.now();
    const e = await send({
      method: "PUT",
      url: `${base}/early`,
      body,
      ok: [201],
      operation: "early put",
      headers: { "content-length": String(10 << 20) },
    }).catch((x) => x);
    expect(Date.now() - t0).toBeLessThan(5000);
    expect(isImageyardError(e)).toBe(true);
    expect(e.status).toBe(400);
    expect(e.message).toMatch(/DIGEST_INVALID/);
  });

  it("follows redirects through createDispatcher", async () => {
    const res = await send({ method: "GET", url: `${base}/redirect`, ok: [200], operation: "redirected", dispatcher: createDispatcher() });
    expect(await readJson(res, "json")).toEqual({ a: 1 });
  });

  it("reports an unreachable host as a retryable NETWORK_ERROR naming the host", async () => {
    const probe = createServer();
    await new Promise<void>((r) => probe.listen(0, "127.0.0.1", r));
    const port = (probe.address() as AddressInfo).port;
    await new Promise<void>((r) => probe.close(() => r()));
    const e = (await send({ method: "GET", url: `http://127.0.0.1:${port}/v2/`, ok: [200], operation: "ping" }).catch(
      (x) => x,
    )) as ImageyardError;
    expect(e.code).toBe("NETWORK_ERROR");
    expect(e.retryable).toBe(true);
    expect(e.message).toMatch(new RegExp(`^ping: cannot reach 127\\.0\\.0\\.1:${port} \\(ECONNREFUSED\\)`));
  });

  it("reports an aborted request as CANCELLED", async () => {
    const ac = new AbortController();
    ac.abort();
    const e = await send({ method: "GET", url: `${base}/json`, ok: [200], operation: "cancelled get", signal: ac.signal }).catch((x) => x);
    expect(e.code).toBe("CANCELLED");
  });
});

describe("body readers", () => {
  it("readBytes refuses a body over its limit", async () => {
    const res = await send({ method: "GET", url: `${base}/big`, ok: [200], operation: "big" });
    await expect(readBytes(res, 100, "big thing")).rejects.toThrow(/big thing: response is larger than 100 bytes/);
  });

  it("readJson reports invalid JSON as a typed error", async () => {
    const res = await send({ method: "GET", url: `${base}/bad-json`, ok: [200], operation: "bad" });
    await expect(readJson(res, "bad doc")).rejects.toMatchObject({
      code: "HTTP_ERROR",
      message: expect.stringMatching(/^bad doc: response is not valid JSON/),
    });
  });

  it("readCapped keeps the first bytes and consumes the rest", async () => {
    async function* gen() {
      yield Buffer.from("abc");
      yield Buffer.from("def");
      yield Buffer.from("ghi");
    }
    expect(await readCapped(gen(), 4)).toBe("abcd");
  });

  it("drain discards a body so the connection can be reused", async () => {
    const res = await send({ method: "GET", url: `${base}/big`, ok: [200], operation: "big" });
    await drain(res);
    const again = await send({ method: "GET", url: `${base}/json`, ok: [200], operation: "json" });
    expect(await readJson(again, "json")).toEqual({ a: 1 });
  });

  it("header reads the first of repeated headers, case-insensitively", () => {
    expect(header({ link: ["<a>", "<b>"] }, "Link")).toBe("<a>");
    expect(header({ "content-type": "x" }, "Content-Type")).toBe("x");
    expect(header({}, "x")).toBeUndefined();
  });
});
