import { createHash } from "node:crypto";
import { Readable } from "node:stream";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { isImageyardError } from "../../../../provider/http/errors";
import { clearAuthCache } from "../../../../provider/oci/auth";
import { DOCKER_MANIFEST, OCI_CONFIG, OCI_INDEX, OCI_LAYER_GZIP, OCI_MANIFEST } from "../../../../provider/oci/media";
import { manifestMediaType } from "../../../../provider/oci/manifest";
import { forgetManifests, nextLink, rangeEnd, RegistryClient, withQuery, type RegistryOptions } from "../../../../provider/oci/registry";
import { FakeRegistry, type FakeRegistryOptions } from "./fakeregistry";
import { caught } from "../../../support/caught";

const FAST_RETRY = { attempts: 3, minDelayMs: 5, maxDelayMs: 20, maxRetryAfterMs: 5_000 };
const sha = (b: Buffer) => `sha256:${createHash("sha256").update(b).digest("hex")}`;

let fake: FakeRegistry;
const started: FakeRegistry[] = [];

async function start(opts: FakeRegistryOptions = {}): Promise<FakeRegistry> {
  const f = await new FakeRegistry(opts).start();
  started.push(f);
  return f;
}

function client(f: FakeRegistry, opts: RegistryOptions = {}, requests?: string[]): RegistryClient {
  return new RegistryClient(f.host, {
    scheme: "http",
    dockerConfig: false,
    retry: FAST_RETRY,
    ...(requests ? { onRequest: (m, u, s) => requests.push(`${m} ${new URL(u).pathname} ${s}`) } : {}),
    ...opts,
  });
}

function image(f: FakeRegistry, repo: string, tag: string) {
  const config = Buffer.from(JSON.stringify({ architecture: "amd64", os: "linux" }));
  const layer = Buffer.from("layer-bytes-".repeat(100));
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      config: { mediaType: OCI_CONFIG, digest: f.putBlob(repo, config), size: config.length },
      layers: [{ mediaType: OCI_LAYER_GZIP, digest: f.putBlob(repo, layer), size: layer.length }],
    }),
  );
  return { config, layer, manifest, digest: f.putManifest(repo, tag, manifest, OCI_MANIFEST) };
}

beforeEach(() => {
  clearAuthCache();
  forgetManifests();
});
afterEach(async () => {
  while (started.length) await started.pop()!.stop();
});

describe("RegistryClient against an anonymous registry", () => {
  beforeEach(async () => {
    fake = await start();
  });

  it("HEADs, GETs, PUTs and DELETEs manifests, sending the four-type Accept", async () => {
    const img = image(fake, "team/app", "v1");
    const c = client(fake);
    expect(await c.headManifest("team/app", "v1")).toEqual({ digest: img.digest, mediaType: OCI_MANIFEST, size: img.manifest.length });
    expect(await c.headManifest("team/app", "v404")).toBeUndefined();
    const got = await c.getManifest("team/app", img.digest);
    expect(got.bytes.equals(img.manifest)).toBe(true);
    expect(got).toMatchObject({ digest: img.digest, mediaType: OCI_MANIFEST, size: img.manifest.length });
    expect(await c.putManifest("team/app", "v2", img.manifest, OCI_MANIFEST)).toBe(img.digest);
    expect((await c.headManifest("team/app", "v2"))?.digest).toBe(img.digest);
    expect(await c.deleteManifest("team/app", img.digest)).toBe(true);
    expect(await c.deleteManifest("team/app", img.digest)).toBe(false);
    expect(await c.headManifest("team/app", "v1")).toBeUndefined();
  });

  it("reads a manifest once per process: by digest after a read by tag, from any client of the same identity", async () => {
    const img = image(fake, "team/app", "v1");
    const requests: string[] = [];
    expect((await client(fake, {}, requests).getManifest("team/app", "v1")).digest).toBe(img.digest);
    const again = await client(fake, {}, requests).getManifest("team/app", img.digest);
    expect(again.bytes.equals(img.manifest)).toBe(true);
    expect(requests.filter((r) => r.startsWith("GET /v2/team/app/manifests/"))).toHaveLength(1);
    // Another identity, or a tag (it may move), asks the registry.
    await client(fake, { credentials: { username: "other", password: "p" } }, requests).getManifest("team/app", img.digest);
    await client(fake, {}, requests).getManifest("team/app", "v1");
    expect(requests.filter((r) => r.startsWith("GET /v2/team/app/manifests/"))).toHaveLength(3);
  });

  it("falls back to one GET when a HEAD answer lacks the digest", async () => {
    const img = image(fake, "team/app", "v1");
    fake.intercept = (req, res) => {
      if (req.method !== "HEAD") return false;
      res.setHeader("content-type", OCI_MANIFEST);
      res.end();
      return true;
    };
    expect(await client(fake).headManifest("team/app", "v1")).toEqual({
      digest: img.digest,
      mediaType: OCI_MANIFEST,
      size: img.manifest.length,
    });
    expect(fake.calls()).toEqual(["HEAD /v2/team/app/manifests/v1 200", "GET /v2/team/app/manifests/v1 200"]);
  });

  it("maps a missing tag to MANIFEST_UNKNOWN with the DESIGN message shape", async () => {
    image(fake, "team/app", "v1");
    const e = await caught(client(fake).getManifest("team/app", "v9"));
    expect(e.code).toBe("MANIFEST_UNKNOWN");
    expect(e.message).toBe(`pull ${fake.host}/team/app:v9: manifest not found (404 MANIFEST_UNKNOWN). Check the tag and repository name.`);
  });

  it("refuses a manifest whose bytes do not hash to Docker-Content-Digest", async () => {
    const img = image(fake, "team/app", "v1");
    fake.intercept = (req, res) => {
      if (req.method !== "GET" || !req.url?.includes("/manifests/")) return false;
      res.setHeader("content-type", OCI_MANIFEST);
      res.setHeader("docker-content-digest", img.digest);
      res.end(Buffer.concat([img.manifest, Buffer.from(" ")]));
      return true;
    };
    const e = await caught(client(fake).getManifest("team/app", "v1"));
    expect(e.code).toBe("DIGEST_MISMATCH");
    expect(e.message).toMatch(/expected sha256:[0-9a-f]{64}, got sha256:[0-9a-f]{64}/);
  });

  it("refuses a manifest fetched by digest that hashes to something else, even without the header", async () => {
    const img = image(fake, "team/app", "v1");
    const other = `sha256:${"0".repeat(64)}`;
    fake.intercept = (req, res) => {
      if (!req.url?.endsWith(other)) return false;
      res.setHeader("content-type", OCI_MANIFEST);
      res.end(img.manifest);
      return true;
    };
    expect((await caught(client(fake).getManifest("team/app", other))).code).toBe("DIGEST_MISMATCH");
  });

  it("deleteTag reports 'unsupported' when the registry answers 400 UNSUPPORTED", async () => {
    image(fake, "team/app", "v1");
    expect(await client(fake).deleteTag("team/app", "v1")).toBe("unsupported");
  });

  it("reads blobs whole and from an offset (206) and HEADs their size", async () => {
    const img = image(fake, "team/app", "v1");
    const c = client(fake);
    const ld = sha(img.layer);
    expect(await c.headBlob("team/app", ld)).toBe(img.layer.length);
    expect(await c.headBlob("team/app", `sha256:${"1".repeat(64)}`)).toBeUndefined();
    const whole = await c.getBlob("team/app", ld);
    expect(whole.size).toBe(img.layer.length);
    expect(whole.offset).toBe(0);
    expect((await readAll(whole.body)).equals(img.layer)).toBe(true);
    const rest = await c.getBlob("team/app", ld, { offset: 100 });
    expect(rest).toMatchObject({ offset: 100, size: img.layer.length });
    expect((await readAll(rest.body)).equals(img.layer.subarray(100))).toBe(true);
    const e = await caught(c.getBlob("team/app", `sha256:${"2".repeat(64)}`));
    expect(e.code).toBe("BLOB_UNKNOWN");
  });

  it("uploads monolithically with octet-stream and appends &digest= to the _state Location", async () => {
    const c = client(fake);
    const data = Buffer.from("monolithic blob");
    const s = await c.startUpload("team/new");
    expect(s.location).toMatch(/_state=/);
    await c.putBlob(s, sha(data), Readable.from([data]), data.length);
    const put = fake.log.find((l) => l.method === "PUT");
    expect(put?.contentType).toBe("application/octet-stream");
    expect(put?.query.get("_state")).toBeTruthy();
    expect(put?.query.get("digest")).toBe(sha(data));
    expect(await c.headBlob("team/new", sha(data))).toBe(data.length);
  });

  it("uploads in chunks, reports progress for resume, follows relative Locations and commits", async () => {
    const rel = await start({ relativeLocation: true });
    const c = client(rel);
    const data = Buffer.from("0123456789abcdefghij");
    let s = await c.startUpload("team/chunked");
    expect(s.location.startsWith(`http://${rel.host}/v2/team/chunked/blobs/uploads/`)).toBe(true);
    s = await c.patchBlob(s, Readable.from([data.subarray(0, 8)]), 0, 8);
    expect(s.offset).toBe(8);
    expect(await c.uploadStatus(s)).toBe(8);
    s = await c.patchBlob(s, Readable.from([data.subarray(8)]), 8, 12);
    expect(s.offset).toBe(20);
    await c.commitBlob(s, sha(data));
    expect(await c.headBlob("team/chunked", sha(data))).toBe(20);
    expect(rel.log.filter((l) => l.method === "PATCH").map((l) => l.contentType)).toEqual([
      "application/octet-stream",
      "application/octet-stream",
    ]);
  });

  it("reads 2.8's ambiguous Range 0-0 after a one-byte PATCH as one byte held", async () => {
    const c = client(fake);
    const s = await c.patchBlob(await c.startUpload("team/one"), Readable.from([Buffer.from("z")]), 0, 1);
    expect(s.offset).toBe(1);
    await c.commitBlob(s, sha(Buffer.from("z")));
    expect(await c.headBlob("team/one", sha(Buffer.from("z")))).toBe(1);
  });

  it("keeps the session's Location when an upload status answer has none", async () => {
    const c = client(fake);
    const s = await c.patchBlob(await c.startUpload("team/st"), Readable.from([Buffer.from("abcd")]), 0, 4);
    fake.intercept = (req, res) => {
      if (req.method !== "GET" || !req.url?.includes("/blobs/uploads/")) return false;
      res.statusCode = 204;
      res.setHeader("range", "0-3");
      res.end();
      return true;
    };
    expect(await c.uploadProgress(s)).toEqual({ repo: "team/st", location: s.location, offset: 4 });
  });

  it("reports a commit with the wrong digest as DIGEST_MISMATCH", async () => {
    const c = client(fake);
    const s = await c.patchBlob(await c.startUpload("team/x"), Readable.from([Buffer.from("abc")]), 0, 3);
    const e = await caught(c.commitBlob(s, `sha256:${"3".repeat(64)}`));
    expect(e.code).toBe("DIGEST_MISMATCH");
    expect(e.message).toMatch(/^push .*team\/x@sha256:3{64}: the uploaded content does not match its digest \(400 DIGEST_INVALID\)/);
  });

  it("mounts across repositories (201) and cancels the session when the registry opens one instead (202)", async () => {
    const img = image(fake, "team/app", "v1");
    const c = client(fake);
    expect(await c.mountBlob("team/copy", sha(img.layer), "team/app")).toBe(true);
    expect(await c.headBlob("team/copy", sha(img.layer))).toBe(img.layer.length);
    expect(await c.mountBlob("team/copy", `sha256:${"4".repeat(64)}`, "team/app")).toBe(false);
    expect(fake.uploads.size).toBe(0);
    expect(fake.calls().at(-1)).toMatch(/^DELETE \/v2\/team\/copy\/blobs\/uploads\/\w+ 204$/);
  });

  it("cancelUpload removes the session", async () => {
    const c = client(fake);
    const s = await c.startUpload("team/x");
    expect(fake.uploads.size).toBe(1);
    await c.cancelUpload(s);
    expect(fake.uploads.size).toBe(0);
  });

  it("lists tags across Link rel=next pages", async () => {
    const paged = await start({ tagPageSize: 2 });
    for (const t of ["a", "b", "c", "d", "e"]) image(paged, "team/app", t);
    expect(await client(paged).listTags("team/app")).toEqual(["a", "b", "c", "d", "e"]);
    expect(paged.calls().filter((c) => c.includes("tags/list"))).toHaveLength(3);
    expect((await caught(client(paged).listTags("team/none"))).code).toBe("NAME_UNKNOWN");
  });

  it("says the referrers API is missing with undefined (404) and reads it when present", async () => {
    const img = image(fake, "team/app", "v1");
    expect(await client(fake).referrers("team/app", img.digest)).toBeUndefined();
    const idx = {
      schemaVersion: 2,
      mediaType: OCI_INDEX,
      manifests: [{ mediaType: OCI_MANIFEST, digest: img.digest, size: 1, artifactType: "application/x.sig" }],
    };
    fake.intercept = (req, res) => {
      if (!req.url?.includes("/referrers/")) return false;
      res.setHeader("content-type", OCI_INDEX);
      res.end(JSON.stringify(idx));
      return true;
    };
    expect((await client(fake).referrers("team/app", img.digest))?.[0]?.artifactType).toBe("application/x.sig");
  });

  it("puts a Docker manifest with Content-Type equal to its mediaType", async () => {
    const body = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: DOCKER_MANIFEST,
        config: { mediaType: OCI_CONFIG, digest: sha(Buffer.from("x")), size: 1 },
        layers: [],
      }),
    );
    await client(fake).putManifest("team/d", "v1", body, DOCKER_MANIFEST);
    expect(fake.log.find((l) => l.method === "PUT")?.contentType).toBe(DOCKER_MANIFEST);
    const e = await caught(client(fake).putManifest("team/d", "v2", body, OCI_MANIFEST));
    expect(e.code).toBe("MANIFEST_INVALID");
  });

  it("tries https first on a loopback host and settles on http when the server does not speak TLS", async () => {
    image(fake, "team/app", "v1");
    const c = new RegistryClient(fake.host, { dockerConfig: false, retry: FAST_RETRY });
    expect((await c.headManifest("team/app", "v1"))?.mediaType).toBe(OCI_MANIFEST);
    expect(fake.calls().at(-1)).toBe("HEAD /v2/team/app/manifests/v1 200");
  });
});

describe("RegistryClient retries", () => {
  beforeEach(async () => {
    fake = await start();
  });

  it("waits for Retry-After on 429 and then succeeds", async () => {
    const img = image(fake, "team/app", "v1");
    let n = 0;
    fake.intercept = (req, res) => {
      if (req.method !== "HEAD" || n++ > 0) return false;
      res.statusCode = 429;
      res.setHeader("retry-after", "1");
      res.end();
      return true;
    };
    const t0 = Date.now();
    expect((await client(fake).headManifest("team/app", "v1"))?.digest).toBe(img.digest);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(950);
    expect(fake.calls()).toEqual(["HEAD /v2/team/app/manifests/v1 429", "HEAD /v2/team/app/manifests/v1 200"]);
  });

  it("gives up at once on a Retry-After longer than the host's rate-limit budget, with TOO_MANY_REQUESTS", async () => {
    fake.intercept = (_req, res) => {
      res.statusCode = 429;
      res.setHeader("retry-after", "3600");
      res.setHeader("content-type", "application/json");
      res.end(JSON.stringify({ errors: [{ code: "TOOMANYREQUESTS", message: "slow down" }] }));
      return true;
    };
    const e = await caught(client(fake).getManifest("team/app", "v1"));
    expect(e.code).toBe("TOO_MANY_REQUESTS");
    expect(e.message).toMatch(
      /keeps rate-limiting requests \(429 Retry-After: 3600\).*past the rate-limit budget of 10 min \(429 TOOMANYREQUESTS\)/,
    );
    expect(e.retryable).toBe(false);
    expect(fake.log).toHaveLength(1);
  });

  it("retries 503 on idempotent calls up to the policy's attempts", async () => {
    fake.intercept = (_req, res) => {
      res.statusCode = 503;
      res.end("down");
      return true;
    };
    const e = await caught(client(fake).headBlob("team/app", `sha256:${"5".repeat(64)}`));
    expect(e.code).toBe("HTTP_ERROR");
    expect(fake.log).toHaveLength(FAST_RETRY.attempts);
  });

  it("does not repeat a streaming PUT", async () => {
    const c = client(fake);
    const s = await c.startUpload("team/x");
    fake.intercept = (req, res) => {
      if (req.method !== "PUT") return false;
      res.statusCode = 503;
      res.end();
      return true;
    };
    await caught(c.putBlob(s, sha(Buffer.from("x")), Readable.from([Buffer.from("x")]), 1));
    expect(fake.log.filter((l) => l.method === "PUT")).toHaveLength(1);
  });
});

describe("RegistryClient auth", () => {
  const users = {
    mirror: { password: "s3cret" },
    reader: { password: "r", actions: ["pull"] },
    robot: { password: "x", refreshToken: "refresh-abc" },
  };

  it("Bearer: 401 → token → retry once, then reuses the cached token and fetches new scopes up front", async () => {
    fake = await start({ auth: "bearer", users });
    image(fake, "team/app", "v1");
    image(fake, "team/other", "v1");
    const reqs: string[] = [];
    const c = client(fake, { credentials: { username: "mirror", password: "s3cret" } }, reqs);
    await c.headManifest("team/app", "v1");
    expect(reqs).toEqual(["HEAD /v2/team/app/manifests/v1 401", "GET /token 200", "HEAD /v2/team/app/manifests/v1 200"]);
    const tokenReq = fake.log.find((l) => l.path === "/token");
    expect(tokenReq?.query.get("service")).toBe("fake.test");
    expect(tokenReq?.query.getAll("scope")).toEqual(["repository:team/app:pull"]);
    expect(tokenReq?.query.get("offline_token")).toBe("true");
    expect(tokenReq?.authorization).toBe(`Basic ${Buffer.from("mirror:s3cret").toString("base64")}`);

    reqs.length = 0;
    await c.getManifest("team/app", "v1");
    expect(reqs).toEqual(["GET /v2/team/app/manifests/v1 200"]);

    // A second client in the same process (another resource) knows the realm: 2 requests, no 401.
    reqs.length = 0;
    const c2 = client(fake, { credentials: { username: "mirror", password: "s3cret" } }, reqs);
    await c2.headManifest("team/other", "v1");
    expect(reqs).toEqual(["GET /token 200", "HEAD /v2/team/other/manifests/v1 200"]);
  });

  it("Bearer: parallel calls needing the same new scope share one token request", async () => {
    fake = await start({ auth: "bearer", users });
    const img = image(fake, "team/app", "v1");
    const c = client(fake, { credentials: { username: "mirror", password: "s3cret" } });
    await c.headManifest("team/other", "none"); // learns the realm
    const before = fake.log.filter((l) => l.path === "/token").length;
    const sizes = await Promise.all(
      [sha(img.layer), sha(img.config), sha(img.layer), sha(img.config)].map((d) => c.headBlob("team/app", d)),
    );
    expect(sizes).toEqual([img.layer.length, img.config.length, img.layer.length, img.config.length]);
    expect(fake.log.filter((l) => l.path === "/token").length - before).toBe(1);
    expect(fake.log.filter((l) => l.status === 401).length).toBe(1);
  });

  it("never sends the registry's credentials to an upload Location on another host", async () => {
    fake = await start({ auth: "basic", users });
    const other = await start();
    const c = client(fake, { credentials: { username: "mirror", password: "s3cret" } });
    await c.ping();
    const s = await c.startUpload("team/x");
    const foreign = { ...s, location: s.location.replace(fake.host, other.host) };
    await caught(c.uploadProgress(foreign));
    expect(other.log).toHaveLength(1);
    expect(other.log[0]?.authorization).toBeUndefined();
    expect(fake.log.at(-1)?.authorization).toMatch(/^Basic /);
  });

  it("follows a blob redirect to storage without carrying the registry's credentials there", async () => {
    fake = await start({ auth: "basic", users });
    const storage = await start();
    const data = Buffer.from("stored elsewhere");
    storage.intercept = (_req, res) => {
      res.setHeader("content-length", String(data.length));
      res.end(data);
      return true;
    };
    fake.intercept = (req, res) => {
      if (req.method !== "GET" || !req.url?.includes("/blobs/sha256:") || !req.headers.authorization) return false;
      res.statusCode = 307;
      res.setHeader("location", `${storage.url}/bucket/blob?X-Amz-Signature=abc`);
      res.end();
      return true;
    };
    const c = client(fake, { credentials: { username: "mirror", password: "s3cret" } });
    const blob = await c.getBlob("team/app", sha(data));
    expect((await readAll(blob.body)).equals(data)).toBe(true);
    expect(storage.log).toHaveLength(1);
    expect(storage.log[0]?.authorization).toBeUndefined();
  });

  it("Bearer: a mount asks for push on the target and pull on the source in one token", async () => {
    fake = await start({ auth: "bearer", users });
    const img = image(fake, "team/app", "v1");
    const c = client(fake, { credentials: { username: "mirror", password: "s3cret" } });
    expect(await c.mountBlob("team/copy", sha(img.layer), "team/app")).toBe(true);
    const scopes = fake.log.filter((l) => l.path === "/token").map((l) => l.query.getAll("scope").sort());
    expect(scopes.at(-1)).toEqual(["repository:team/app:pull", "repository:team/copy:pull,push"]);
  });

  it("Bearer: uploads authenticate on the POST and reuse the token for the streaming PUT", async () => {
    fake = await start({ auth: "bearer", users });
    const c = client(fake, { credentials: { username: "mirror", password: "s3cret" } });
    const data = Buffer.from("streamed");
    const s = await c.startUpload("team/up");
    await c.putBlob(s, sha(data), Readable.from([data]), data.length);
    expect(fake.calls().filter((x) => !x.startsWith("GET /token"))).toEqual([
      "POST /v2/team/up/blobs/uploads/ 401",
      "POST /v2/team/up/blobs/uploads/ 202",
      expect.stringMatching(/^PUT \/v2\/team\/up\/blobs\/uploads\/\w+ 201$/),
    ]);
  });

  it("Bearer: a pull-only account is denied push with REGISTRY_DENIED naming the input to check", async () => {
    fake = await start({ auth: "bearer", users });
    const img = image(fake, "team/app", "v1");
    const c = client(fake, { credentials: { username: "reader", password: "r" }, credentialsInput: "targetAuth" });
    expect((await c.getManifest("team/app", "v1")).digest).toBe(img.digest);
    const e = await caught(c.putManifest("team/app", "v2", img.manifest, OCI_MANIFEST));
    expect(e.code).toBe("REGISTRY_DENIED");
    expect(e.message).toMatch(
      new RegExp(
        `^push ${fake.host}/team/app:v2: registry denied access \\(401 insufficient_scope; requested repository:team/app:pull,push\\)\\. Check that the account in targetAuth for ${fake.host} may push`,
      ),
    );
  });

  it("Bearer: wrong credentials fail at the token service with REGISTRY_UNAUTHORIZED and no secret in the message", async () => {
    fake = await start({ auth: "bearer", users });
    image(fake, "team/app", "v1");
    const e = await caught(
      client(fake, { credentials: { username: "mirror", password: "WRONGPASS" }, credentialsInput: "sourceAuth" }).headManifest(
        "team/app",
        "v1",
      ),
    );
    expect(e.code).toBe("REGISTRY_UNAUTHORIZED");
    expect(e.message).toBe(
      `inspect ${fake.host}/team/app:v1: registry refused the credentials (401 UNAUTHORIZED). Check sourceAuth for ${fake.host}.`,
    );
    expect(e.message).not.toContain("WRONGPASS");
  });

  it("Bearer: anonymous pull works where the realm grants it, and push without credentials says none were given", async () => {
    fake = await start({ auth: "bearer", users, anonymousPull: true });
    const img = image(fake, "team/app", "v1");
    const c = client(fake, { credentialsInput: "targetAuth" });
    expect((await c.headManifest("team/app", "v1"))?.digest).toBe(img.digest);
    const e = await caught(c.putManifest("team/app", "v2", img.manifest, OCI_MANIFEST));
    expect(e.code).toBe("REGISTRY_UNAUTHORIZED");
    expect(e.message).toMatch(/registry requires credentials and none were given \(401 UNAUTHORIZED\)\. Set targetAuth for /);
  });

  it("Bearer: an identity token is exchanged by POSTing the OAuth2 refresh form", async () => {
    fake = await start({ auth: "bearer", users });
    image(fake, "team/app", "v1");
    await client(fake, { credentials: { identityToken: "refresh-abc" } }).headManifest("team/app", "v1");
    const tok = fake.log.find((l) => l.path === "/token");
    expect(tok?.method).toBe("POST");
    expect(tok?.contentType).toBe("application/x-www-form-urlencoded");
    expect(tok?.status).toBe(200);
  });

  it("Bearer: an expired token is refreshed before use rather than answered by a 401", async () => {
    fake = await start({ auth: "bearer", users, tokenLifetime: 1 });
    image(fake, "team/app", "v1");
    const reqs: string[] = [];
    const c = client(fake, { credentials: { username: "mirror", password: "s3cret" } }, reqs);
    await c.headManifest("team/app", "v1");
    // Token lifetime 1 s: the cache keeps it half of that; waiting lets it expire (not readiness).
    await new Promise((r) => setTimeout(r, 600));
    reqs.length = 0;
    await c.headManifest("team/app", "v1");
    expect(reqs).toEqual(["GET /token 200", "HEAD /v2/team/app/manifests/v1 200"]);
  });

  it("Basic: sends credentials after the challenge and up front afterwards", async () => {
    fake = await start({ auth: "basic", users });
    image(fake, "team/app", "v1");
    const reqs: string[] = [];
    const c = client(fake, { credentials: { username: "mirror", password: "s3cret" } }, reqs);
    await c.headManifest("team/app", "v1");
    await c.listTags("team/app");
    expect(reqs).toEqual(["HEAD /v2/team/app/manifests/v1 401", "HEAD /v2/team/app/manifests/v1 200", "GET /v2/team/app/tags/list 200"]);
  });

  it("Basic: wrong credentials give REGISTRY_UNAUTHORIZED after exactly one retry", async () => {
    fake = await start({ auth: "basic", users });
    const e = await caught(
      client(fake, { credentials: { username: "mirror", password: "nope" }, credentialsInput: "targetAuth" }).listTags("team/app"),
    );
    expect(e.code).toBe("REGISTRY_UNAUTHORIZED");
    expect(e.message).toBe(
      `list tags ${fake.host}/team/app: registry refused the credentials (401 UNAUTHORIZED). Check targetAuth for ${fake.host}.`,
    );
    expect(fake.calls()).toEqual(["GET /v2/team/app/tags/list 401", "GET /v2/team/app/tags/list 401"]);
  });

  it("Basic: no credentials at all fails after one request with what to set", async () => {
    fake = await start({ auth: "basic", users });
    const e = await caught(client(fake, { credentialsInput: "sourceAuth" }).ping());
    expect(e.code).toBe("REGISTRY_UNAUTHORIZED");
    expect(e.message).toMatch(/registry requires credentials and none were given \(401 UNAUTHORIZED\)\. Set sourceAuth for /);
    expect(fake.log).toHaveLength(1);
  });

  it("reads credentials from a docker config only when the registry asks for them", async () => {
    const { mkdtempSync, writeFileSync, rmSync } = await import("node:fs");
    const { join } = await import("node:path");
    const { tmpdir } = await import("node:os");
    fake = await start({ auth: "basic", users });
    const dir = mkdtempSync(join(tmpdir(), "iy-reg-"));
    try {
      const path = join(dir, "config.json");
      writeFileSync(
        path,
        JSON.stringify({ auths: { [`http://${fake.host}/v2/`]: { auth: Buffer.from("mirror:s3cret").toString("base64") } } }),
      );
      await client(fake, { dockerConfig: path }).ping();
      expect(fake.calls()).toEqual(["GET /v2/ 401", "GET /v2/ 200"]);
      writeFileSync(path, JSON.stringify({ auths: { [fake.host]: { auth: Buffer.from("mirror:bad").toString("base64") } } }));
      clearAuthCache();
      const e = await caught(client(fake, { dockerConfig: path }).ping());
      expect(e.message).toContain(`Check ${path} for ${fake.host}`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("registry helpers", () => {
  it("manifestMediaType prefers the document's own mediaType, then a specific Content-Type, then the shape", () => {
    expect(manifestMediaType(Buffer.from(JSON.stringify({ mediaType: DOCKER_MANIFEST })), OCI_MANIFEST)).toBe(DOCKER_MANIFEST);
    expect(manifestMediaType(Buffer.from(JSON.stringify({ schemaVersion: 2 })), `${DOCKER_MANIFEST}; charset=utf-8`)).toBe(DOCKER_MANIFEST);
    expect(manifestMediaType(Buffer.from(JSON.stringify({ schemaVersion: 2, manifests: [] })), "application/json")).toBe(OCI_INDEX);
    expect(manifestMediaType(Buffer.from("{"), undefined)).toBe(OCI_MANIFEST);
  });

  it("rangeEnd turns a Range header into bytes held", () => {
    expect(rangeEnd("0-1023")).toBe(1024);
    expect(rangeEnd("bytes=0-9")).toBe(10);
    expect(rangeEnd("0-0")).toBe(0);
    expect(rangeEnd(undefined)).toBeUndefined();
    expect(rangeEnd("junk")).toBeUndefined();
  });

  it("withQuery appends to a Location without re-encoding its opaque state", () => {
    expect(withQuery("http://h/v2/r/blobs/uploads/u?_state=a%2Bb%3D%3D", "digest", "sha256:ab")).toBe(
      "http://h/v2/r/blobs/uploads/u?_state=a%2Bb%3D%3D&digest=sha256%3Aab",
    );
    expect(withQuery("http://h/up", "digest", "d")).toBe("http://h/up?digest=d");
  });

  it("nextLink finds rel=next among several links", () => {
    expect(nextLink('</v2/x/tags/list?n=2&last=b>; rel="next"')).toBe("/v2/x/tags/list?n=2&last=b");
    expect(nextLink('<https://a/prev>; rel="prev", <https://a/next>; rel=next')).toBe("https://a/next");
    expect(nextLink(undefined)).toBeUndefined();
  });

  it("isImageyardError sees registry errors as the one family", async () => {
    const f = await start();
    const e = await caught(client(f).getManifest("a/b", "c"));
    expect(isImageyardError(e, "MANIFEST_UNKNOWN")).toBe(true);
    expect(e.status).toBe(404);
  });
});

async function readAll(r: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of r) chunks.push(Buffer.from(c));
  return Buffer.concat(chunks);
}
