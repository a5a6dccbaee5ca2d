import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { afterAll, describe, expect, it } from "vitest";
import { createDispatcher, header, readBytes, readJson, send } from "../../../provider/http/client";
import { digestOf, MEDIA, seedImage } from "../../testbed/images";
import { createSigner, type TokenServerConfig } from "../../testbed/tokenServer";
import {
  countRequests,
  loadRegistryTestbed,
  readRequests,
  requestLogMark,
  startRegistry,
  type RegistryEndpoint,
  type RegistryHandle,
} from "../../testbed/registry";

const tb = loadRegistryTestbed();
const { upstream, mirror, tls, token } = tb.registries;
const basic = (u: string, p: string) => `Basic ${Buffer.from(`${u}:${p}`).toString("base64")}`;
const ACCEPT = [MEDIA.ociIndex, MEDIA.dockerList, MEDIA.ociManifest, MEDIA.dockerManifest].join(", ");

async function status(
  url: string,
  headers: Record<string, string> = {},
  method: "GET" | "POST" = "GET",
  dispatcher = createDispatcher(),
): Promise<{ status: number; challenge?: string }> {
  const res = await send({ method, url, headers, ok: [200, 201, 202, 401, 403, 404], operation: "test", dispatcher });
  await res.body.dump();
  return { status: res.status, challenge: header(res.headers, "www-authenticate") };
}

async function tokenFor(user: { username: string; password: string }, scope: string): Promise<string> {
  const url = `${tb.tokenServer.realm}?service=${encodeURIComponent(tb.tokenServer.service)}&scope=${encodeURIComponent(scope)}`;
  const res = await send({
    method: "GET",
    url,
    headers: { authorization: basic(user.username, user.password) },
    ok: [200],
    operation: "token",
  });
  return (await readJson<{ token: string }>(res, "token")).token;
}

async function waitForCount(ep: RegistryEndpoint, since: number, n: number): Promise<number> {
  // Access-log lines are written once a response completes; poll briefly.
  const deadline = Date.now() + 5_000;
  while (countRequests(ep, since) < n && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  return countRequests(ep, since);
}

describe("registry test bed", () => {
  it("upstream answers /v2/ anonymously with 200", async () => {
    expect((await status(`${upstream.url}/v2/`)).status).toBe(200);
    expect(upstream.auth).toBe("none");
  });

  it("mirror challenges with Basic, refuses wrong credentials and accepts its own", async () => {
    const anon = await status(`${mirror.url}/v2/`);
    expect(anon.status).toBe(401);
    expect(anon.challenge).toMatch(/^Basic realm=/);
    expect((await status(`${mirror.url}/v2/`, { authorization: basic(mirror.username!, "wrong") })).status).toBe(401);
    expect((await status(`${mirror.url}/v2/`, { authorization: basic(mirror.username!, mirror.password!) })).status).toBe(200);
  });

  it("tls registry verifies with the test-bed CA and is refused without it", async () => {
    expect(tls.scheme).toBe("https");
    const withCa = createDispatcher({ tls: { ca: [readFileSync(tls.caFile!, "utf8")] } });
    expect((await status(`${tls.url}/v2/`, {}, "GET", withCa)).status).toBe(401);
    expect((await status(`${tls.url}/v2/`, { authorization: basic(tls.username!, tls.password!) }, "GET", withCa)).status).toBe(200);
    await expect(status(`${tls.url}/v2/`, {}, "GET", createDispatcher())).rejects.toMatchObject({ code: "NETWORK_ERROR" });
    expect(readFileSync(`${tls.certDir}/ca.crt`, "utf8")).toBe(readFileSync(tls.caFile!, "utf8"));
  });

  it("token registry: Bearer challenge, token from the realm gives 200, a puller token cannot push but a pusher token can", async () => {
    const anon = await status(`${token.url}/v2/`);
    expect(anon.status).toBe(401);
    expect(anon.challenge).toContain(`Bearer realm="${tb.tokenServer.realm}",service="${tb.tokenServer.service}"`);
    const pushTok = await tokenFor(token.pushUser!, "repository:testbed/token:pull,push");
    expect((await status(`${token.url}/v2/`, { authorization: `Bearer ${pushTok}` })).status).toBe(200);
    const claims = JSON.parse(Buffer.from(pushTok.split(".")[1]!, "base64url").toString());
    expect(claims).toMatchObject({
      iss: tb.tokenServer.issuer,
      aud: tb.tokenServer.service,
      sub: "pusher",
      access: [{ type: "repository", name: "testbed/token", actions: ["pull", "push"] }],
    });
    const pullTok = await tokenFor(token.pullUser!, "repository:testbed/token:pull,push");
    expect(JSON.parse(Buffer.from(pullTok.split(".")[1]!, "base64url").toString()).access).toEqual([
      { type: "repository", name: "testbed/token", actions: ["pull"] },
    ]);
    expect((await status(`${token.url}/v2/testbed/token/blobs/uploads/`, { authorization: `Bearer ${pullTok}` }, "POST")).status).toBe(401);
    expect((await status(`${token.url}/v2/testbed/token/blobs/uploads/`, { authorization: `Bearer ${pushTok}` }, "POST")).status).toBe(202);
  });

  it("token registry accepts tokens whose key travels in x5c as well as by kid, and rejects a wrong issuer", async () => {
    const cfg = JSON.parse(readFileSync(tb.tokenServer.configFile, "utf8")) as TokenServerConfig;
    const access = [{ type: "repository", name: "testbed/x5c", actions: ["pull"] }];
    for (const h of ["x5c", "kid"] as const) {
      const { token: t } = createSigner({ ...cfg, header: h }).sign("pusher", access);
      expect((await status(`${token.url}/v2/testbed/x5c/tags/list`, { authorization: `Bearer ${t}` })).status, h).toBe(404);
    }
    const { token: forged } = createSigner({ ...cfg, issuer: "someone-else" }).sign("pusher", access);
    expect((await status(`${token.url}/v2/testbed/x5c/tags/list`, { authorization: `Bearer ${forged}` })).status).toBe(401);
  });

  it("token server refuses unknown users and supports the OAuth2 password grant", async () => {
    expect(
      (await status(`${tb.tokenServer.realm}?service=${tb.tokenServer.service}`, { authorization: basic("nobody", "x") })).status,
    ).toBe(401);
    expect((await status(`${tb.tokenServer.realm}?service=${tb.tokenServer.service}`)).status).toBe(401);
    const form = new URLSearchParams({
      grant_type: "password",
      username: token.pushUser!.username,
      password: token.pushUser!.password,
      service: tb.tokenServer.service,
      scope: "repository:x/y:pull",
      client_id: "test",
    });
    const res = await send({
      method: "POST",
      url: tb.tokenServer.realm,
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: form.toString(),
      ok: [200],
      operation: "oauth",
    });
    const { access_token } = await readJson<{ access_token: string }>(res, "oauth");
    expect((await status(`${token.url}/v2/`, { authorization: `Bearer ${access_token}` })).status).toBe(200);
    form.set("password", "wrong");
    expect(
      (
        await send({
          method: "POST",
          url: tb.tokenServer.realm,
          body: form.toString(),
          headers: { "content-type": "application/x-www-form-urlencoded" },
          ok: [401],
          operation: "oauth",
        })
      ).status,
    ).toBe(401);
  });

  it("seeds a multi-arch image whose digest equals skopeo's and the bytes the registry serves", async () => {
    const img = await seedImage(upstream, "testbed/multi:v1", {
      layers: 2,
      layerSize: "256K",
      platforms: ["linux/amd64", "linux/arm64"],
      sharedLayers: 1,
      seed: "it-multi",
    });
    expect(img.mediaType).toBe(MEDIA.ociIndex);
    expect(img.manifests).toHaveLength(2);
    expect(await digestOf(upstream, "testbed/multi:v1")).toBe(img.digest);
    const res = await send({
      method: "GET",
      url: `${upstream.url}/v2/testbed/multi/manifests/v1`,
      headers: { accept: ACCEPT },
      ok: [200],
      operation: "get manifest",
    });
    expect(header(res.headers, "docker-content-digest")).toBe(img.digest);
    expect(
      `sha256:${createHash("sha256")
        .update(await readBytes(res, 1 << 20, "manifest"))
        .digest("hex")}`,
    ).toBe(img.digest);
    for (const b of img.blobs) {
      const head = await send({
        method: "HEAD",
        url: `${upstream.url}/v2/testbed/multi/blobs/${b.digest}`,
        ok: [200],
        operation: "head blob",
      });
      expect(Number(header(head.headers, "content-length"))).toBe(b.size);
    }
  });

  it("seeds Docker-typed images with signatures through TLS and token auth", async () => {
    const onTls = await seedImage(tls, "testbed/docker:v1", {
      layers: 1,
      layerSize: "64K",
      format: "docker",
      platforms: ["linux/amd64", "linux/arm64"],
      seed: "it-docker",
      withSignature: true,
    });
    expect(onTls.mediaType).toBe(MEDIA.dockerList);
    expect(onTls.signature!.tag).toBe(`sha256-${onTls.digest.slice(7)}.sig`);
    expect(await digestOf(tls, `testbed/docker:${onTls.signature!.tag}`)).toBe(onTls.signature!.digest);
    const onToken = await seedImage(token, "testbed/docker:v1", {
      layers: 1,
      layerSize: "64K",
      format: "docker",
      seed: "it-docker-single",
    });
    expect(onToken.mediaType).toBe(MEDIA.dockerManifest);
    expect(await digestOf({ ...token, username: token.pullUser!.username, password: token.pullUser!.password }, "testbed/docker:v1")).toBe(
      onToken.digest,
    );
  });

  it("counts the requests a registry received from its access log", async () => {
    const mark = requestLogMark(upstream);
    for (let i = 0; i < 3; i++) await status(`${upstream.url}/v2/`);
    await status(`${upstream.url}/v2/testbed/none/manifests/missing`);
    expect(await waitForCount(upstream, mark, 4)).toBe(4);
    expect(readRequests(upstream, mark).slice(-1)[0]).toEqual({ method: "GET", path: "/v2/testbed/none/manifests/missing", status: 404 });
  });
});

describe("ad-hoc registry", () => {
  let reg: RegistryHandle | undefined;
  afterAll(async () => reg?.remove());

  it("survives a kill and restarts on the same port with the same data; wipe empties it", async () => {
    reg = await startRegistry(tb.stateDir, "adhoc-restart", { auth: "htpasswd", tls: false });
    const ep = reg.endpoint;
    const img = await seedImage(ep, "adhoc/img:v1", { layers: 1, layerSize: "32K", seed: "adhoc" });
    await reg.kill();
    await expect(status(`${ep.url}/v2/`)).rejects.toMatchObject({ code: "NETWORK_ERROR" });
    const again = await reg.start();
    expect(again.port).toBe(ep.port);
    expect(await digestOf(again, "adhoc/img:v1")).toBe(img.digest);
    await reg.start({ wipe: true });
    await expect(digestOf(reg.endpoint, "adhoc/img:v1")).rejects.toThrow(/manifest unknown|not found/i);
  });
});
