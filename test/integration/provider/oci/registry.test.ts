// RegistryClient against the real distribution 2.8 registries of the test bed: anonymous,
// htpasswd, TLS + htpasswd and bearer token. Images are pushed by skopeo (an independent peer).
import { createHash, randomBytes } from "node:crypto";
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { delimiter, join } from "node:path";
import { Readable } from "node:stream";
import { beforeAll, beforeEach, describe, expect, it } from "vitest";
import { isImageyardError } from "../../../../provider/http/errors";
import { clearAuthCache } from "../../../../provider/oci/auth";
import { parseManifest } from "../../../../provider/oci/manifest";
import { DOCKER_MANIFEST_LIST, OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST } from "../../../../provider/oci/media";
import { RegistryClient, type RegistryOptions } from "../../../../provider/oci/registry";
import { seedImage, type SeededImage } from "../../../testbed/images";
import { loadRegistryTestbed, type RegistryEndpoint, type RegistryTestbed } from "../../../testbed/registry";
import { caught } from "../../../support/caught";

let tb: RegistryTestbed;
let upstream: RegistryEndpoint;
let mirror: RegistryEndpoint;
let tls: RegistryEndpoint;
let token: RegistryEndpoint;
/** Unique per run, so repeated runs against a long-lived test bed do not see each other's data. */
const run = `b1-${Date.now().toString(36)}-${randomBytes(2).toString("hex")}`;
const sha = (b: Buffer) => `sha256:${createHash("sha256").update(b).digest("hex")}`;

function client(ep: RegistryEndpoint, opts: RegistryOptions = {}, requests?: string[]): RegistryClient {
  const o: RegistryOptions = {
    dockerConfig: false,
    retry: { attempts: 2, minDelayMs: 50, maxDelayMs: 200, maxRetryAfterMs: 2000 },
    ...opts,
  };
  if (requests) o.onRequest = (m, u, s) => requests.push(`${m} ${new URL(u).pathname} ${s}`);
  return new RegistryClient(ep.host, o);
}

function creds(ep: RegistryEndpoint): RegistryOptions["credentials"] {
  return { username: ep.username!, password: ep.password! };
}

async function sha256Of(r: Readable): Promise<{ digest: string; n: number }> {
  const h = createHash("sha256");
  let n = 0;
  for await (const c of r) {
    h.update(c as Buffer);
    n += (c as Buffer).length;
  }
  return { digest: `sha256:${h.digest("hex")}`, n };
}

/** Pushes config + one layer with the client, then returns an OCI manifest naming them. */
async function pushSmallImage(
  c: RegistryClient,
  repo: string,
  chunked: boolean,
): Promise<{ manifest: Buffer; layer: Buffer; config: Buffer }> {
  const config = Buffer.from(JSON.stringify({ architecture: "amd64", os: "linux", rootfs: { type: "layers", diff_ids: [] }, run }));
  const layer = randomBytes(300 * 1024);
  for (const blob of [config, layer]) {
    const s = await c.startUpload(repo);
    if (chunked) {
      const mid = Math.floor(blob.length / 2);
      const s2 = await c.patchBlob(s, Readable.from([blob.subarray(0, mid)]), 0, mid);
      const s3 = await c.patchBlob(s2, Readable.from([blob.subarray(mid)]), mid, blob.length - mid);
      await c.commitBlob(s3, sha(blob));
    } else {
      await c.putBlob(s, sha(blob), Readable.from([blob]), blob.length);
    }
  }
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      config: { mediaType: OCI_CONFIG, digest: sha(config), size: config.length },
      layers: [{ mediaType: OCI_LAYER_GZIP, digest: sha(layer), size: layer.length }],
    }),
  );
  return { manifest, layer, config };
}

beforeAll(() => {
  tb = loadRegistryTestbed();
  ({ upstream, mirror, tls, token } = tb.registries);
});

beforeEach(() => clearAuthCache());

describe("anonymous registry (upstream)", () => {
  let img: SeededImage;
  let list: SeededImage;
  beforeAll(async () => {
    img = await seedImage(upstream, `${run}/anon:v1`, { layers: 2, layerSize: "64K", seed: "b1-anon" });
    list = await seedImage(upstream, `${run}/multi:v1`, {
      layers: 1,
      layerSize: "32K",
      platforms: ["linux/amd64", "linux/arm64"],
      format: "docker",
      seed: "b1-multi",
    });
  }, 120_000);

  it("HEAD and GET a tag give the digest skopeo pushed, in one request each", async () => {
    const reqs: string[] = [];
    const c = client(upstream, {}, reqs);
    const head = await c.headManifest(`${run}/anon`, "v1");
    expect(head).toEqual({ digest: img.digest, mediaType: OCI_MANIFEST, size: img.size });
    const got = await c.getManifest(`${run}/anon`, "v1");
    expect(got.digest).toBe(img.digest);
    expect(parseManifest(got.bytes, got.mediaType).layers).toHaveLength(2);
    expect(reqs.filter((r) => r.includes("/manifests/"))).toEqual([
      `HEAD /v2/${run}/anon/manifests/v1 200`,
      `GET /v2/${run}/anon/manifests/v1 200`,
    ]);
  });

  it("gets a Docker manifest list with its own digest (the four-type Accept prevents a schema-1 rewrite)", async () => {
    const got = await client(upstream).getManifest(`${run}/multi`, "v1");
    expect(got.mediaType).toBe(DOCKER_MANIFEST_LIST);
    expect(got.digest).toBe(list.digest);
    const child = list.manifests[1]!;
    const byDigest = await client(upstream).getManifest(`${run}/multi`, child.digest);
    expect(byDigest.digest).toBe(child.digest);
  });

  it("streams blobs whole and from an offset (206) with the right bytes", async () => {
    const c = client(upstream);
    const layer = img.blobs.find((b) => b.mediaType === OCI_LAYER_GZIP)!;
    expect(await c.headBlob(`${run}/anon`, layer.digest)).toBe(layer.size);
    const whole = await c.getBlob(`${run}/anon`, layer.digest);
    expect(await sha256Of(whole.body)).toEqual({ digest: layer.digest, n: layer.size });
    const rest = await c.getBlob(`${run}/anon`, layer.digest, { offset: 1000 });
    expect(rest.offset).toBe(1000);
    expect(rest.size).toBe(layer.size);
    expect((await sha256Of(rest.body)).n).toBe(layer.size - 1000);
  });

  it("answers undefined for a missing tag and blob, and MANIFEST_UNKNOWN in the DESIGN shape on GET", async () => {
    const c = client(upstream);
    expect(await c.headManifest(`${run}/anon`, "v404")).toBeUndefined();
    expect(await c.headBlob(`${run}/anon`, `sha256:${"0".repeat(64)}`)).toBeUndefined();
    const e = await caught(c.getManifest(`${run}/anon`, "v9"));
    expect(e.code).toBe("MANIFEST_UNKNOWN");
    expect(e.message).toBe(
      `pull ${upstream.host}/${run}/anon:v9: manifest not found (404 MANIFEST_UNKNOWN). Check the tag and repository name.`,
    );
  });

  it("lists tags", async () => {
    await seedImage(upstream, `${run}/anon:v2`, { layers: 2, layerSize: "64K", seed: "b1-anon" });
    expect((await client(upstream).listTags(`${run}/anon`)).sort()).toEqual(["v1", "v2"]);
    expect((await caught(client(upstream).listTags(`${run}/nothing-here`))).code).toBe("NAME_UNKNOWN");
  });

  it("settles on http for a loopback registry without TLS", async () => {
    expect(upstream.scheme).toBe("http");
    await client(upstream).ping();
  });
});

describe("htpasswd registry (mirror)", () => {
  it("uploads monolithically and in chunks, puts, reads and deletes a manifest", async () => {
    const c = client(mirror, { credentials: creds(mirror) });
    const repo = `${run}/pushed`;
    const mono = await pushSmallImage(c, repo, false);
    const digest = await c.putManifest(repo, "mono", mono.manifest, OCI_MANIFEST);
    expect(digest).toBe(sha(mono.manifest));
    const chunked = await pushSmallImage(c, repo, true);
    expect(await c.headBlob(repo, sha(chunked.layer))).toBe(chunked.layer.length);
    await c.putManifest(repo, "chunked", chunked.manifest, OCI_MANIFEST);
    expect((await c.headManifest(repo, "mono"))?.digest).toBe(digest);
    expect((await c.getManifest(repo, digest)).bytes.equals(mono.manifest)).toBe(true);
    expect((await c.listTags(repo)).sort()).toEqual(["chunked", "mono"]);
    expect(await c.deleteTag(repo, "mono")).toBe("unsupported");
    expect(await c.deleteManifest(repo, digest)).toBe(true);
    expect(await c.headManifest(repo, "mono")).toBeUndefined();
    expect(await c.deleteManifest(repo, digest)).toBe(false);
  });

  it("reports the bytes held by an upload session so a transfer can resume", async () => {
    const c = client(mirror, { credentials: creds(mirror) });
    const repo = `${run}/resume`;
    const blob = randomBytes(200 * 1024);
    let s = await c.startUpload(repo);
    s = await c.patchBlob(s, Readable.from([blob.subarray(0, 70_000)]), 0, 70_000);
    // A new process would only have the Location: ask the registry what it holds.
    const held = await c.uploadStatus({ repo, location: s.location, offset: 0 });
    expect(held).toBe(70_000);
    s = await c.patchBlob(s, Readable.from([blob.subarray(held)]), held, blob.length - held);
    await c.commitBlob(s, sha(blob));
    const back = await c.getBlob(repo, sha(blob));
    expect(await sha256Of(back.body)).toEqual({ digest: sha(blob), n: blob.length });
  });

  it("mounts an existing blob across repositories (201) and falls back when the source lacks it (202)", async () => {
    const c = client(mirror, { credentials: creds(mirror) });
    const blob = randomBytes(10_000);
    const s = await c.startUpload(`${run}/mount-src`);
    await c.putBlob(s, sha(blob), Readable.from([blob]), blob.length);
    expect(await c.mountBlob(`${run}/mount-dst`, sha(blob), `${run}/mount-src`)).toBe(true);
    expect(await c.headBlob(`${run}/mount-dst`, sha(blob))).toBe(blob.length);
    expect(await c.mountBlob(`${run}/mount-dst2`, sha(randomBytes(8)), `${run}/mount-src`)).toBe(false);
  });

  it("rejects a wrong password with REGISTRY_UNAUTHORIZED naming the input, never the password", async () => {
    const e = await caught(
      client(mirror, {
        credentials: { username: mirror.username!, password: "not-the-password" },
        credentialsInput: "targetAuth",
      }).headManifest(`${run}/x`, "v1"),
    );
    expect(e.code).toBe("REGISTRY_UNAUTHORIZED");
    expect(e.message).toBe(
      `inspect ${mirror.host}/${run}/x:v1: registry refused the credentials (401 UNAUTHORIZED). Check targetAuth for ${mirror.host}.`,
    );
    expect(e.message).not.toContain("not-the-password");
  });

  it("says which input to set when no credentials are given", async () => {
    const e = await caught(client(mirror, { credentialsInput: "targetAuth" }).listTags(`${run}/x`));
    expect(e.code).toBe("REGISTRY_UNAUTHORIZED");
    expect(e.message).toMatch(/registry requires credentials and none were given \(401 UNAUTHORIZED\)\. Set targetAuth for /);
  });

  it("finds credentials through a docker credential helper named in config.json", async () => {
    const dir = mkdtempSync(join(tmpdir(), "iy-int-helper-"));
    const oldPath = process.env.PATH;
    try {
      const helper = join(dir, "docker-credential-iytest");
      const secret = JSON.stringify({ ServerURL: mirror.host, Username: mirror.username, Secret: mirror.password });
      writeFileSync(
        helper,
        `#!/bin/sh\nread -r server\n[ "$server" = "${mirror.host}" ] || { echo "credentials not found in native keychain"; exit 1; }\necho '${secret}'\n`,
      );
      chmodSync(helper, 0o755);
      writeFileSync(join(dir, "config.json"), JSON.stringify({ credHelpers: { [mirror.host]: "iytest" } }));
      process.env.PATH = `${dir}${delimiter}${oldPath ?? ""}`;
      const c = new RegistryClient(mirror.host, { dockerConfig: join(dir, "config.json") });
      await c.ping();
      expect(await c.headManifest(`${run}/none`, "v1")).toBeUndefined();
    } finally {
      process.env.PATH = oldPath;
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("rejects a manifest whose blobs are missing with MANIFEST_INVALID and what to push first", async () => {
    const c = client(mirror, { credentials: creds(mirror) });
    const m = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: OCI_MANIFEST,
        config: { mediaType: OCI_CONFIG, digest: `sha256:${"1".repeat(64)}`, size: 2 },
        layers: [],
      }),
    );
    const e = await caught(c.putManifest(`${run}/orphan`, "v1", m, OCI_MANIFEST));
    expect(e.code).toBe("MANIFEST_INVALID");
    expect(e.message).toMatch(/\(400 MANIFEST_BLOB_UNKNOWN\)\. Push every blob/);
  });
});

describe("TLS registry", () => {
  it("works with the CA given as tls.ca", async () => {
    const c = client(tls, { credentials: creds(tls), tls: { ca: [readFileSync(tls.caFile!, "utf8")] } });
    await c.ping();
    expect(await c.headManifest(`${run}/none`, "v1")).toBeUndefined();
  });

  it("works with a skopeo-style certDir", async () => {
    const c = client(tls, { credentials: creds(tls), certDir: tls.certDir! });
    const repo = `${run}/tls`;
    const img = await pushSmallImage(c, repo, false);
    await c.putManifest(repo, "v1", img.manifest, OCI_MANIFEST);
    expect((await c.getManifest(repo, "v1")).digest).toBe(sha(img.manifest));
  });

  it("without the CA fails with TLS_ERROR saying to give the CA, not a silent fallback to http", async () => {
    const e = await caught(client(tls, { credentials: creds(tls) }).ping());
    expect(e.code).toBe("TLS_ERROR");
    expect(e.message).toMatch(/TLS certificate is not trusted \(\w+\)\. Give the registry's CA \(tls ca or certDir\)/);
  });

  it("with insecure set explicitly skips verification", async () => {
    await client(tls, { credentials: creds(tls), tls: { insecure: true } }).ping();
  });
});

describe("token (bearer) registry", () => {
  const push = () => ({ username: token.pushUser!.username, password: token.pushUser!.password });
  const pull = () => ({ username: token.pullUser!.username, password: token.pullUser!.password });

  it("pushes with a push+pull token and mounts with the extra pull scope on the source", async () => {
    const c = client(token, { credentials: push() });
    const repo = `${run}/tok-src`;
    const img = await pushSmallImage(c, repo, true);
    await c.putManifest(repo, "v1", img.manifest, OCI_MANIFEST);
    expect(await c.mountBlob(`${run}/tok-dst`, sha(img.layer), repo)).toBe(true);
    expect(await c.headBlob(`${run}/tok-dst`, sha(img.layer))).toBe(img.layer.length);
    expect(await c.deleteManifest(repo, sha(img.manifest))).toBe(true);
  });

  it("costs at most 2 requests per image for a HEAD once the realm is known (preview budget)", async () => {
    const seeded = await pushSmallImage(client(token, { credentials: push() }), `${run}/tok-budget`, false);
    await client(token, { credentials: push() }).putManifest(`${run}/tok-budget`, "v1", seeded.manifest, OCI_MANIFEST);
    clearAuthCache();
    const reqs: string[] = [];
    const first = client(token, { credentials: pull() }, reqs);
    await first.headManifest(`${run}/tok-budget`, "v1");
    expect(reqs).toHaveLength(3); // 401, token, HEAD: learning the realm
    reqs.length = 0;
    for (const tag of ["v1", "v2"]) {
      const c = client(token, { credentials: pull() }, reqs);
      await c.headManifest(`${run}/tok-budget`, tag);
    }
    expect(reqs).toHaveLength(2); // same scope: the cached token, one HEAD each
    reqs.length = 0;
    await client(token, { credentials: pull() }, reqs).headManifest(`${run}/other-repo`, "v1");
    expect(reqs.map((r) => r.split(" ")[0])).toEqual(["GET", "HEAD"]); // new scope: token + HEAD
  });

  it("a pull-only user can pull but is denied push with REGISTRY_DENIED", async () => {
    const owner = client(token, { credentials: push() });
    const repo = `${run}/tok-ro`;
    const img = await pushSmallImage(owner, repo, false);
    await owner.putManifest(repo, "v1", img.manifest, OCI_MANIFEST);
    const reader = client(token, { credentials: pull(), credentialsInput: "targetAuth" });
    expect((await reader.getManifest(repo, "v1")).digest).toBe(sha(img.manifest));
    const e = await caught(reader.putManifest(repo, "v2", img.manifest, OCI_MANIFEST));
    expect(isImageyardError(e, "REGISTRY_DENIED")).toBe(true);
    expect(e.message).toMatch(
      new RegExp(
        `^push ${token.host}/${run}/tok-ro:v2: registry denied access .*Check that the account in targetAuth for ${token.host} may push`,
      ),
    );
  });

  it("a wrong password is refused at the token service with REGISTRY_UNAUTHORIZED", async () => {
    const e = await caught(
      client(token, {
        credentials: { username: token.pushUser!.username, password: "wrong" },
        credentialsInput: "sourceAuth",
      }).headManifest(`${run}/tok-src`, "v1"),
    );
    expect(e.code).toBe("REGISTRY_UNAUTHORIZED");
    expect(e.message).toMatch(/registry refused the credentials \(401.*\)\. Check sourceAuth for /);
  });
});
