// RegistryClient: one method per distribution endpoint, each stating the statuses it accepts.
// Auth is challenge-driven (auth.ts), retries cover idempotent calls only, and blob bodies stream.
// The transport (auth, schemes, retries, rate limits, waits) is call.ts.
import type { Readable } from "node:stream";
import { drain, header, readBytes } from "../http/client";
import { ImageyardError } from "../http/errors";
import { shortDigest } from "../http/progress";
import { repositoryScope } from "./auth";
import { CLEANUP_TIMEOUT_MS, RegistryTransport, type Call } from "./call";
import { digestOf, manifestMediaType, parseManifest, verifyDigest, type Descriptor } from "./manifest";
import { baseMediaType, MANIFEST_ACCEPT, OCI_INDEX } from "./media";
import { isDigest } from "./reference";
import { nextLink, rangeEnd, withQuery } from "./transport";

export { nextLink, rangeEnd, tlsOptions, withQuery } from "./transport";
export type { RegistryOptions } from "./call";
export type { Credentials } from "./auth";

export interface ManifestInfo {
  digest: string;
  mediaType: string;
  size: number;
}

export interface ManifestResponse extends ManifestInfo {
  bytes: Buffer;
}

export interface BlobStream {
  body: Readable;
  /** Full size of the blob. */
  size: number;
  /** Where `body` starts: the requested offset on 206, 0 when the registry ignored Range. */
  offset: number;
}

export interface UploadSession {
  /** Absolute URL of the newest Location (holds the registry's opaque upload state). */
  location: string;
  repo: string;
  /** Bytes the registry holds, as last reported. */
  offset: number;
}

export type UploadStart = { mounted: true } | { mounted: false; session: UploadSession };

const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;
const MAX_TAG_PAGES = 1000;

/**
 * Manifests read in this process, by registry, repository, identity and digest. They are
 * content-addressed and were verified when read, so a copy does not read again what its check (or
 * an earlier copy) read: a round trip less per image, and on Docker Hub a counted pull less.
 * Bounded in bytes; the least recently used go first.
 */
const manifestCache = new Map<string, ManifestResponse>();
let manifestCacheBytes = 0;
const MANIFEST_CACHE_BYTES = 16 * 1024 * 1024;

function readCachedManifest(key: string): ManifestResponse | undefined {
  const m = manifestCache.get(key);
  if (!m) return undefined;
  manifestCache.delete(key);
  manifestCache.set(key, m);
  return { ...m };
}

function cacheManifest(key: string, m: ManifestResponse): void {
  if (m.bytes.length > MANIFEST_CACHE_BYTES / 16 || manifestCache.has(key)) return;
  manifestCache.set(key, { ...m });
  manifestCacheBytes += m.bytes.length;
  for (const [k, old] of manifestCache) {
    if (manifestCacheBytes <= MANIFEST_CACHE_BYTES) break;
    manifestCache.delete(k);
    manifestCacheBytes -= old.bytes.length;
  }
}

/** Forgets every manifest read so far (tests that count requests). */
export function forgetManifests(): void {
  manifestCache.clear();
  manifestCacheBytes = 0;
}

export class RegistryClient extends RegistryTransport {
  // Manifests -------------------------------------------------------------------------------

  /** Digest, media type and size of a manifest; undefined when the registry does not have it. */
  async headManifest(repo: string, reference: string): Promise<ManifestInfo | undefined> {
    const res = await this.call({
      ...this.manifestCall(repo, reference, "inspect", ["pull"]),
      method: "HEAD",
      ok: [200, 404],
      headers: { accept: MANIFEST_ACCEPT },
    });
    await drain(res);
    if (res.status === 404) return undefined;
    const digest = header(res.headers, "docker-content-digest") ?? (isDigest(reference) ? reference : undefined);
    const mediaType = baseMediaType(header(res.headers, "content-type"));
    const size = Number(header(res.headers, "content-length"));
    if (!digest || !mediaType || !Number.isFinite(size)) {
      // Some registries omit the digest or type on HEAD; the body is small, so GET it once.
      const m = await this.getManifest(repo, reference);
      return { digest: m.digest, mediaType: m.mediaType, size: m.bytes.length };
    }
    return { digest, mediaType, size };
  }

  /** The manifest bytes, verified: by digest they must hash to it; by tag to Docker-Content-Digest. */
  async getManifest(repo: string, reference: string): Promise<ManifestResponse> {
    const cacheKey = (digest: string) => `${this.registry}/${repo}@${digest} as ${this.opts.credentials?.username ?? ""}`;
    const hit = isDigest(reference) ? readCachedManifest(cacheKey(reference)) : undefined;
    if (hit) return hit;
    const m = await this.fetchManifest(repo, reference);
    cacheManifest(cacheKey(m.digest), m);
    return m;
  }

  private async fetchManifest(repo: string, reference: string): Promise<ManifestResponse> {
    const c = this.manifestCall(repo, reference, "pull", ["pull"]);
    const { bytes, res } = await this.withAttempts(c, async () => {
      const res = await this.once({ ...c, method: "GET", ok: [200], headers: { accept: MANIFEST_ACCEPT } });
      return { res, bytes: await readBytes(res, MAX_MANIFEST_BYTES, `${c.operation} ${c.target}`) };
    });
    const claimed = isDigest(reference) ? reference : header(res.headers, "docker-content-digest");
    const digest = claimed ? verifyDigest(bytes, claimed, `${c.operation} ${c.target}`) : digestOf(bytes);
    return { bytes, digest, mediaType: manifestMediaType(bytes, header(res.headers, "content-type")), size: bytes.length };
  }

  /** Stores a manifest under a tag or its digest; returns its digest. */
  async putManifest(repo: string, reference: string, bytes: Buffer, mediaType: string): Promise<string> {
    const c = this.manifestCall(repo, reference, "push", ["pull", "push"]);
    const local = digestOf(bytes);
    if (isDigest(reference)) verifyDigest(bytes, reference, `${c.operation} ${c.target}`);
    const res = await this.call({
      ...c,
      method: "PUT",
      ok: [200, 201, 202],
      body: bytes,
      headers: { "content-type": mediaType, "content-length": String(bytes.length) },
    });
    await drain(res);
    const answered = header(res.headers, "docker-content-digest");
    if (answered?.startsWith("sha256:") && answered !== local) {
      throw new ImageyardError(
        "DIGEST_MISMATCH",
        `${c.operation} ${c.target}: the registry stored the manifest as ${answered}, expected ${local} (DIGEST_MISMATCH). The registry rewrote the manifest; use a registry that stores manifests verbatim.`,
      );
    }
    return local;
  }

  /** Deletes a manifest by digest (every tag on it goes too). False when it was not there. */
  async deleteManifest(repo: string, digest: string): Promise<boolean> {
    const res = await this.call({ ...this.manifestCall(repo, digest, "delete", ["delete"]), method: "DELETE", ok: [200, 202, 404] });
    await drain(res);
    return res.status !== 404;
  }

  /** OCI 1.1 tag deletion; distribution 2.8 answers 400/405 UNSUPPORTED. */
  async deleteTag(repo: string, tag: string): Promise<"deleted" | "unsupported"> {
    const res = await this.call({ ...this.manifestCall(repo, tag, "delete", ["delete"]), method: "DELETE", ok: [200, 202, 400, 405] });
    await drain(res);
    return res.status === 400 || res.status === 405 ? "unsupported" : "deleted";
  }

  // Blobs -----------------------------------------------------------------------------------

  /** The blob's size, or undefined when the repository does not have it. */
  async headBlob(repo: string, digest: string): Promise<number | undefined> {
    const res = await this.call({ ...this.blobCall(repo, digest, "inspect", ["pull"]), method: "HEAD", ok: [200, 404] });
    await drain(res);
    if (res.status === 404) return undefined;
    const size = Number(header(res.headers, "content-length"));
    return Number.isFinite(size) ? size : undefined;
  }

  /** Streams a blob; `offset` asks for the rest of a partly-read blob (206). The caller verifies. */
  async getBlob(repo: string, digest: string, opts: { offset?: number } = {}): Promise<BlobStream> {
    const offset = opts.offset ?? 0;
    const headers: Record<string, string> = offset > 0 ? { range: `bytes=${offset}-` } : {};
    const res = await this.call({ ...this.blobCall(repo, digest, "pull", ["pull"]), method: "GET", ok: [200, 206], headers });
    const range = /bytes\s+(\d+)-(\d+)\/(\d+)/.exec(header(res.headers, "content-range") ?? "");
    if (res.status === 206 && range) return { body: res.body, offset: Number(range[1]), size: Number(range[3]) };
    const size = Number(header(res.headers, "content-length"));
    return { body: res.body, offset: 0, size: Number.isFinite(size) ? size : -1 };
  }

  /** Cross-repository mount: true when mounted (201); a 202 session is cancelled and false returned. */
  async mountBlob(repo: string, digest: string, fromRepo: string): Promise<boolean> {
    const r = await this.initiateUpload(repo, { digest, from: fromRepo });
    if (r.mounted) return true;
    await this.cancelUpload(r.session);
    return false;
  }

  /** POST to start an upload, optionally trying a mount first; the 202 session is usable either way. */
  async initiateUpload(repo: string, mount?: { digest: string; from: string }): Promise<UploadStart> {
    const q = mount ? `?mount=${encodeURIComponent(mount.digest)}&from=${encodeURIComponent(mount.from)}` : "";
    const scopes = [repositoryScope(repo, ["pull", "push"])];
    if (mount && mount.from !== repo) scopes.push(repositoryScope(mount.from, ["pull"]));
    const res = await this.call({
      method: "POST",
      path: `/v2/${repo}/blobs/uploads/${q}`,
      ok: mount ? [201, 202] : [202],
      headers: { "content-length": "0" },
      operation: "push",
      target: mount ? `${this.registry}/${repo}@${mount.digest}` : `${this.registry}/${repo}`,
      object: "upload",
      scopes,
      // Starting a session twice only leaves an unused one behind; worth it against 429/503.
      retry: true,
    });
    await drain(res);
    if (res.status === 201) return { mounted: true };
    return { mounted: false, session: { location: this.location(res, `/v2/${repo}/blobs/uploads/`), repo, offset: 0 } };
  }

  async startUpload(repo: string): Promise<UploadSession> {
    const r = await this.initiateUpload(repo);
    if (r.mounted)
      throw new ImageyardError(
        "HTTP_ERROR",
        `push ${this.registry}/${repo}: the registry answered an upload start with 201 (no session). Check the registry.`,
      );
    return r.session;
  }

  /** Bytes the registry holds for this session (for resume). */
  async uploadStatus(session: UploadSession): Promise<number> {
    return (await this.uploadProgress(session)).offset;
  }

  /** The session as the registry sees it now: newest Location and the bytes it holds. */
  async uploadProgress(session: UploadSession): Promise<UploadSession> {
    const res = await this.call({ ...this.uploadCall(session), method: "GET", ok: [204, 200], retry: true });
    await drain(res);
    // Location is optional on a status answer; the session's own stays valid then.
    const location = header(res.headers, "location") ? this.location(res, session.location) : session.location;
    return { repo: session.repo, location, offset: rangeEnd(header(res.headers, "range")) ?? 0 };
  }

  /** Monolithic streaming PUT of a whole blob (201). */
  async putBlob(session: UploadSession, digest: string, body: Readable, size: number): Promise<void> {
    const res = await this.call({
      ...this.uploadCall(session),
      method: "PUT",
      path: withQuery(session.location, "digest", digest),
      ok: [201, 204],
      body,
      headers: { "content-type": "application/octet-stream", "content-length": String(size) },
      target: `${this.registry}/${session.repo}@${digest}`,
    });
    await drain(res);
  }

  /** One PATCH of `size` bytes starting at `offset`; returns the session at its newest Location. */
  async patchBlob(session: UploadSession, body: Readable, offset: number, size: number): Promise<UploadSession> {
    const headers: Record<string, string> = { "content-type": "application/octet-stream", "content-length": String(size) };
    if (size > 0) headers["content-range"] = `${offset}-${offset + size - 1}`;
    const res = await this.call({ ...this.uploadCall(session), method: "PATCH", ok: [202, 204], body, headers });
    await drain(res);
    const reported = rangeEnd(header(res.headers, "range"));
    // "0-0" is both "empty" and "one byte" on 2.8; after sending one byte at 0 it means one.
    const held = reported === 0 && offset + size === 1 ? 1 : (reported ?? offset + size);
    return { repo: session.repo, location: this.location(res, session.location), offset: held };
  }

  /** Finishes a chunked upload: empty PUT ?digest= (201). */
  async commitBlob(session: UploadSession, digest: string): Promise<void> {
    const res = await this.call({
      ...this.uploadCall(session),
      method: "PUT",
      path: withQuery(session.location, "digest", digest),
      ok: [201, 204],
      headers: { "content-length": "0", "content-type": "application/octet-stream" },
      body: null,
      target: `${this.registry}/${session.repo}@${digest}`,
    });
    await drain(res);
  }

  /**
   * Deletes an upload session so its bytes do not stay on the registry's disk. Runs on its own
   * short deadline: it is the clean-up after a copy that failed, timed out or was cancelled.
   */
  async cancelUpload(session: UploadSession): Promise<void> {
    const res = await this.call({
      ...this.uploadCall(session),
      method: "DELETE",
      ok: [200, 202, 204, 404],
      retry: true,
      what: "the cancel of an upload session",
      signal: AbortSignal.timeout(CLEANUP_TIMEOUT_MS),
    });
    await drain(res);
  }

  // Tags, referrers, ping -------------------------------------------------------------------

  /** Every tag of a repository, following Link rel="next" when the registry paginates. */
  async listTags(repo: string): Promise<string[]> {
    const tags: string[] = [];
    let path: string | undefined = `/v2/${repo}/tags/list`;
    for (let page = 0; path && page < MAX_TAG_PAGES; page++) {
      const c: Call = {
        method: "GET",
        path,
        ok: [200],
        operation: "list tags",
        target: `${this.registry}/${repo}`,
        object: "repository",
        scopes: [repositoryScope(repo, ["pull"])],
        retry: true,
      };
      const { doc, next } = await this.withAttempts(c, async () => {
        const res = await this.once(c);
        const body = await readBytes(res, 16 * 1024 * 1024, `list tags ${c.target}`);
        return { doc: parseJson<{ tags?: string[] | null }>(body, `list tags ${c.target}`), next: nextLink(header(res.headers, "link")) };
      });
      tags.push(...(doc.tags ?? []));
      path = next;
    }
    return tags;
  }

  /** OCI 1.1 referrers of a manifest; undefined when the registry has no referrers API (404). */
  async referrers(repo: string, digest: string, artifactType?: string): Promise<Descriptor[] | undefined> {
    const q = artifactType ? `?artifactType=${encodeURIComponent(artifactType)}` : "";
    const c: Call = {
      method: "GET",
      path: `/v2/${repo}/referrers/${digest}${q}`,
      ok: [200, 404],
      headers: { accept: OCI_INDEX },
      operation: "list referrers",
      target: `${this.registry}/${repo}@${digest}`,
      object: "referrers",
      scopes: [repositoryScope(repo, ["pull"])],
      retry: true,
    };
    const out = await this.withAttempts(c, async () => {
      const res = await this.once(c);
      if (res.status === 404) {
        await drain(res);
        return undefined;
      }
      return readBytes(res, MAX_MANIFEST_BYTES, `${c.operation} ${c.target}`);
    });
    return out === undefined ? undefined : parseManifest(out, OCI_INDEX, `referrers of ${c.target}`).children;
  }

  /** GET /v2/ (authenticating if challenged); proves reachability, TLS and credentials. */
  async ping(): Promise<void> {
    const res = await this.call({
      method: "GET",
      path: "/v2/",
      ok: [200],
      operation: "ping",
      target: this.registry,
      object: "registry",
      scopes: [],
      retry: true,
    });
    await drain(res);
  }

  // Call shapes ------------------------------------------------------------------------------

  private manifestCall(repo: string, reference: string, operation: string, actions: string[]): Omit<Call, "method" | "ok"> {
    return {
      path: `/v2/${repo}/manifests/${reference}`,
      operation,
      target: `${this.registry}/${repo}${isDigest(reference) ? "@" : ":"}${reference}`,
      object: "manifest",
      scopes: [repositoryScope(repo, actions)],
      retry: true,
    };
  }

  private blobCall(repo: string, digest: string, operation: string, actions: string[]): Omit<Call, "method" | "ok"> {
    return {
      path: `/v2/${repo}/blobs/${digest}`,
      operation,
      target: `${this.registry}/${repo}@${digest}`,
      object: "blob",
      scopes: [repositoryScope(repo, actions)],
      retry: true,
      what: `blob ${shortDigest(digest)}`,
    };
  }

  private uploadCall(session: UploadSession): Omit<Call, "method" | "ok"> {
    return {
      path: session.location,
      operation: "push",
      target: `${this.registry}/${session.repo}`,
      object: "upload",
      scopes: [repositoryScope(session.repo, ["pull", "push"])],
      retry: false,
    };
  }
}

// Helpers -------------------------------------------------------------------------------------

function parseJson<T>(buf: Buffer, what: string): T {
  try {
    return JSON.parse(buf.toString("utf8")) as T;
  } catch (e) {
    throw new ImageyardError("HTTP_ERROR", `${what}: response is not valid JSON (${(e as Error).message}). Check the registry.`, {
      cause: e,
    });
  }
}
