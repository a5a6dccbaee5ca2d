// An OCI image layout directory (oci-layout, index.json, blobs/<alg>/<hex>) as a copy source or
// target: how images cross an air gap with their digests intact. Blobs stream through the same
// verifier as registry copies and land by temp file + rename, so a reader never sees half a blob.
import { createReadStream, createWriteStream } from "node:fs";
import { mkdir, readFile, rename, stat, unlink, writeFile } from "node:fs/promises";
import { randomBytes } from "node:crypto";
import { dirname, join } from "node:path";
import type { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { ImageyardError } from "../http/errors";
import { DEFAULT_RETRY, withRetry } from "../http/retry";
import { algorithmOf, digestBytes, hexOf, verifyingStream } from "./digest";
import { parseManifest, type Descriptor } from "./manifest";
import { OCI_INDEX } from "./media";
import type { ManifestInfo, ManifestResponse } from "./registry";
import type { BlobWrite, ImageStore } from "./store";

export const REF_NAME = "org.opencontainers.image.ref.name";
const LAYOUT_VERSION = "1.0.0";
const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;

interface LayoutIndex {
  schemaVersion: 2;
  mediaType?: string;
  manifests: Descriptor[];
  annotations?: Record<string, string>;
  [key: string]: unknown;
}

export class LayoutStore implements ImageStore {
  readonly kind = "layout" as const;
  readonly name: string;
  readonly peer: string;
  /** index.json updates run one after another so concurrent tags do not drop each other. */
  private indexQueue: Promise<unknown> = Promise.resolve();

  /** `existing`: the layout must already be there (a copy source), rather than be created. */
  constructor(
    readonly path: string,
    private readonly existing = false,
  ) {
    this.name = `oci:${path}`;
    this.peer = `the layout ${path}`;
  }

  blobPath(digest: string): string {
    return join(this.path, "blobs", algorithmOf(digest), hexOf(digest));
  }

  /** A tag, a digest, or "" for the layout's only image. */
  async headManifest(reference: string): Promise<ManifestInfo | undefined> {
    const index = await this.readIndex(this.existing);
    if (reference.includes(":")) {
      const listed = index.manifests.find((d) => d.digest === reference);
      if (listed) return { digest: listed.digest, mediaType: listed.mediaType, size: listed.size };
      const bytes = await this.readManifestBlob(reference).catch((e) => (isMissing(e) ? undefined : Promise.reject(e)));
      if (!bytes) return undefined;
      const m = parseManifest(bytes, undefined, `${this.name}@${reference}`);
      return { digest: reference, mediaType: m.mediaType, size: bytes.length };
    }
    const d = reference === "" ? this.onlyImage(index) : [...index.manifests].reverse().find((m) => refName(m) === reference);
    return d ? { digest: d.digest, mediaType: d.mediaType, size: d.size } : undefined;
  }

  async getManifest(reference: string): Promise<ManifestResponse> {
    const info = await this.headManifest(reference);
    if (!info) {
      throw new ImageyardError(
        "MANIFEST_UNKNOWN",
        `read ${this.name}${reference ? `:${reference}` : ""}: manifest not found in index.json (MANIFEST_UNKNOWN). Check the tag; tags here: ${(await this.listTags()).join(", ") || "none"}.`,
      );
    }
    const bytes = await this.readManifestBlob(info.digest);
    const got = digestBytes(bytes, algorithmOf(info.digest));
    if (got !== info.digest) {
      throw new ImageyardError(
        "DIGEST_MISMATCH",
        `read ${this.name}@${info.digest}: the file hashes to ${got} (DIGEST_MISMATCH). The layout is damaged; copy it again.`,
      );
    }
    return { bytes, digest: info.digest, mediaType: info.mediaType || parseManifest(bytes).mediaType, size: bytes.length };
  }

  async putManifest(tag: string | undefined, bytes: Buffer, mediaType: string, opts: { root?: boolean } = {}): Promise<string> {
    const digest = digestBytes(bytes);
    const path = this.blobPath(digest);
    if ((await sizeOf(path)) !== bytes.length) await writeAtomic(path, bytes);
    if (tag === undefined && !opts.root) return digest;
    await this.updateIndex((index) => {
      const entry: Descriptor = { mediaType, digest, size: bytes.length };
      if (tag !== undefined) entry.annotations = { [REF_NAME]: tag };
      index.manifests = index.manifests.filter((d) =>
        tag !== undefined ? refName(d) !== tag : d.digest !== digest || refName(d) !== undefined,
      );
      index.manifests.push(entry);
    });
    return digest;
  }

  async openBlob(digest: string): Promise<Readable> {
    const path = this.blobPath(digest);
    try {
      await stat(path);
    } catch (e) {
      if (isMissing(e))
        throw new ImageyardError(
          "BLOB_UNKNOWN",
          `read ${this.name}@${digest}: blob file ${path} is missing (BLOB_UNKNOWN). The layout is incomplete; copy the image into it again.`,
        );
      throw e;
    }
    return createReadStream(path);
  }

  async hasBlob(digest: string, size: number): Promise<boolean> {
    return (await sizeOf(this.blobPath(digest))) === size;
  }

  async writeBlob(w: BlobWrite): Promise<void> {
    const final = this.blobPath(w.digest);
    await mkdir(dirname(final), { recursive: true });
    await this.ensureLayout();
    await withRetry(
      async () => {
        const tmp = `${final}.${randomBytes(6).toString("hex")}.tmp`;
        const source = await w.open();
        try {
          const verifier = verifyingStream({ digest: w.digest, size: w.size, from: w.from, ...(w.onBytes ? { onBytes: w.onBytes } : {}) });
          await pipeline(source, verifier, createWriteStream(tmp), w.signal ? { signal: w.signal } : {});
          await rename(tmp, final);
        } catch (e) {
          source.destroy();
          await unlink(tmp).catch(() => undefined);
          throw e;
        }
      },
      DEFAULT_RETRY,
      w.signal ? { signal: w.signal } : {},
    );
  }

  async listTags(): Promise<string[]> {
    const index = await this.readIndex(this.existing);
    return index.manifests.map(refName).filter((t): t is string => t !== undefined);
  }

  /** Drops a tag from index.json (blobs stay: other tags may share them). True when it was there. */
  async removeTag(tag: string): Promise<boolean> {
    // A layout that is not there has nothing to remove; do not create one to say so.
    if ((await sizeOf(join(this.path, "index.json"))) === undefined) return false;
    let removed = false;
    await this.updateIndex((index) => {
      const before = index.manifests.length;
      index.manifests = index.manifests.filter((d) => refName(d) !== tag);
      removed = index.manifests.length !== before;
    });
    return removed;
  }

  // Plumbing --------------------------------------------------------------------------------

  private onlyImage(index: LayoutIndex): Descriptor | undefined {
    if (index.manifests.length <= 1) return index.manifests[0];
    const tags = index.manifests.map(refName).filter(Boolean);
    throw new ImageyardError(
      "INVALID_INPUT",
      `read ${this.name}: the layout holds ${index.manifests.length} images; name one as oci:${this.path}:TAG (tags: ${tags.join(", ") || "none"}).`,
    );
  }

  private async readManifestBlob(digest: string): Promise<Buffer> {
    const path = this.blobPath(digest);
    const size = await sizeOf(path);
    if (size !== undefined && size > MAX_MANIFEST_BYTES) {
      throw new ImageyardError(
        "MANIFEST_INVALID",
        `read ${this.name}@${digest}: ${size} bytes is too large for a manifest (MANIFEST_INVALID). Check the layout.`,
      );
    }
    return readFile(path);
  }

  /** index.json, or an empty index when `mustExist` is false and the layout is new. */
  private async readIndex(mustExist: boolean): Promise<LayoutIndex> {
    let text: string;
    try {
      text = await readFile(join(this.path, "index.json"), "utf8");
    } catch (e) {
      if (isMissing(e) && !mustExist) return { schemaVersion: 2, mediaType: OCI_INDEX, manifests: [] };
      if (isMissing(e))
        throw new ImageyardError(
          "INVALID_INPUT",
          `read ${this.name}: not an OCI image layout (no index.json). Point at a directory written by imageyard, skopeo or crane.`,
        );
      throw e;
    }
    try {
      const doc = JSON.parse(text) as LayoutIndex;
      if (!Array.isArray(doc.manifests)) throw new Error("manifests is not an array");
      return doc;
    } catch (e) {
      throw new ImageyardError(
        "INVALID_INPUT",
        `read ${this.name}/index.json: not a valid image index (${(e as Error).message}). Repair or recreate the layout.`,
        { cause: e },
      );
    }
  }

  private updateIndex(change: (index: LayoutIndex) => void): Promise<void> {
    const run = this.indexQueue.then(async () => {
      await this.ensureLayout();
      const index = await this.readIndex(false);
      change(index);
      await writeAtomic(join(this.path, "index.json"), Buffer.from(`${JSON.stringify(index)}\n`));
    });
    this.indexQueue = run.catch(() => undefined);
    return run;
  }

  private async ensureLayout(): Promise<void> {
    const marker = join(this.path, "oci-layout");
    if ((await sizeOf(marker)) !== undefined) return;
    await mkdir(this.path, { recursive: true });
    await writeAtomic(marker, Buffer.from(JSON.stringify({ imageLayoutVersion: LAYOUT_VERSION })));
  }
}

function refName(d: Descriptor): string | undefined {
  return d.annotations?.[REF_NAME];
}

async function sizeOf(path: string): Promise<number | undefined> {
  try {
    return (await stat(path)).size;
  } catch (e) {
    if (isMissing(e)) return undefined;
    throw e;
  }
}

function isMissing(e: unknown): boolean {
  return (e as { code?: string } | null)?.code === "ENOENT";
}

/** Small files (manifests, index.json): a temp file beside the target, then rename. */
async function writeAtomic(path: string, data: Buffer): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  const tmp = `${path}.${randomBytes(6).toString("hex")}.tmp`;
  try {
    await writeFile(tmp, data);
    await rename(tmp, path);
  } catch (e) {
    await unlink(tmp).catch(() => undefined);
    throw e;
  }
}
