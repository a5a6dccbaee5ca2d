// Tar files as copy sources and targets, the way skopeo names them: "oci-archive:" (a tarred OCI
// layout) and "docker-archive:" (docker save). Reading indexes the tar's headers and streams each
// blob from its byte range; nothing is unpacked. Writing stages blobs in a layout directory beside
// the file and tars it when the image's root manifest lands, so a reader never sees half an archive.
//
// A docker-archive written here is also an OCI layout (Docker 25 `docker save` does the same):
// manifest.json for docker load and skopeo, index.json + blobs/sha256 keeping the exact manifest,
// so digests survive a round trip. A classic docker save has no manifest at all; reading one builds
// an OCI manifest from its config and layers: config and layer digests are kept, the manifest
// digest is new (and stable: the same archive always gives the same bytes).
import { randomBytes } from "node:crypto";
import { createWriteStream } from "node:fs";
import { readdir, readFile, rename, rm, stat, unlink } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import type { Readable } from "node:stream";
import { finished } from "node:stream/promises";
import { ImageyardError } from "../http/errors";
import { readArchive, type ArchiveContents, type ArchiveImage } from "./archiveRead";
import { digestBytes, hexOf } from "./digest";
import { LayoutStore } from "./layout";
import type { ArchiveLocation } from "./location";
import { parseManifest } from "./manifest";
import { isIndex } from "./media";
import { formatReference, parseReference } from "./reference";
import type { ManifestInfo, ManifestResponse } from "./registry";
import type { BlobWrite, ImageStore } from "./store";
import { openTarEntry, TarWriter } from "./tar";

type Format = ArchiveLocation["format"];

export class ArchiveStore implements ImageStore {
  readonly kind = "archive" as const;
  readonly name: string;
  /** Who answers, for messages. */
  readonly peer: string;
  private contents: Promise<ArchiveContents | undefined> | undefined;
  private staging: LayoutStore | undefined;

  /** `side`: a source must exist; a target is written afresh, holding exactly one image. */
  constructor(
    readonly format: Format,
    readonly path: string,
    private readonly side: "source" | "target",
  ) {
    this.name = `${format}:${path}`;
    this.peer = `the archive ${path}`;
  }

  /** The archive as it is on disk (undefined for a target that does not exist yet). */
  read(): Promise<ArchiveContents | undefined> {
    this.contents ??= stat(this.path).then(
      () => readArchive(this.format, this.path),
      (e) => {
        if ((e as { code?: string }).code === "ENOENT" && this.side === "target") return undefined;
        throw new ImageyardError("INVALID_INPUT", `read ${this.name}: ${(e as Error).message}. Check the path.`, { cause: e });
      },
    );
    return this.contents;
  }

  async headManifest(reference: string): Promise<ManifestInfo | undefined> {
    if (this.side === "target") {
      // Only the fast path asks a target about the file already there; the rest is staged afresh.
      const existing = await this.read().catch(() => undefined);
      const root = existing?.images.find((i) => i.digest === reference || i.names.some((n) => sameName(this.format, n, reference)));
      if (root && !this.staging) return infoOf(root);
      return this.staging?.headManifest(reference);
    }
    const c = (await this.read())!;
    if (reference.startsWith("sha256:") || reference.startsWith("sha512:")) {
      const image = c.images.find((i) => i.digest === reference);
      if (image) return infoOf(image);
      const bytes = await c.readSmall(reference).catch(() => undefined);
      return bytes ? { digest: reference, mediaType: parseManifest(bytes).mediaType, size: bytes.length } : undefined;
    }
    const image = pickImage(this.name, this.format, c.images, reference);
    return image ? infoOf(image) : undefined;
  }

  async getManifest(reference: string): Promise<ManifestResponse> {
    const info = await this.headManifest(reference);
    const c = await this.read();
    if (!info || !c) {
      const names = c?.images.flatMap((i) => i.names) ?? [];
      throw new ImageyardError(
        "MANIFEST_UNKNOWN",
        `read ${this.name}${reference ? `:${reference}` : ""}: no such image in the archive (MANIFEST_UNKNOWN). Images here: ${names.join(", ") || "none named"}.`,
      );
    }
    const synthesized = c.images.find((i) => i.digest === info.digest && i.bytes);
    const bytes = synthesized?.bytes ?? (await c.readSmall(info.digest));
    const got = digestBytes(bytes);
    if (got !== info.digest) {
      throw new ImageyardError(
        "DIGEST_MISMATCH",
        `read ${this.name}@${info.digest}: the archive's copy hashes to ${got} (DIGEST_MISMATCH). The archive is damaged; write it again.`,
      );
    }
    return { bytes, digest: info.digest, mediaType: info.mediaType, size: bytes.length };
  }

  async openBlob(digest: string): Promise<Readable> {
    const c = await this.read();
    const entry = c?.blobs.get(digest);
    if (!c || !entry)
      throw new ImageyardError(
        "BLOB_UNKNOWN",
        `read ${this.name}@${digest}: blob not in the archive (BLOB_UNKNOWN). The archive is incomplete; write it again.`,
      );
    return openTarEntry(this.path, entry);
  }

  async hasBlob(digest: string, size: number): Promise<boolean> {
    if (this.side === "target") return this.staging ? this.staging.hasBlob(digest, size) : false;
    return (await this.read())?.blobs.get(digest)?.size === size;
  }

  async writeBlob(w: BlobWrite): Promise<void> {
    await this.stage().writeBlob(w);
  }

  /** Staged like a layout; the root manifest (the last write of a copy) seals the archive. */
  async putManifest(tag: string | undefined, bytes: Buffer, mediaType: string, opts: { root?: boolean } = {}): Promise<string> {
    const staging = this.stage();
    if (!opts.root) return staging.putManifest(this.format === "docker-archive" ? undefined : tag, bytes, mediaType);
    try {
      const digest = await staging.putManifest(this.format === "docker-archive" ? dockerTag(tag) : tag, bytes, mediaType, { root: true });
      await this.seal(bytes, digest, tag);
      return digest;
    } finally {
      await rm(staging.path, { recursive: true, force: true });
      this.staging = undefined;
      this.contents = undefined;
    }
  }

  async listTags(): Promise<string[]> {
    return (await this.read())?.images.flatMap((i) => i.names) ?? [];
  }

  private stage(): LayoutStore {
    this.staging ??= new LayoutStore(join(dirname(this.path), `.${basename(this.path)}.staging-${randomBytes(4).toString("hex")}`));
    return this.staging;
  }

  /** Tars the staged layout (plus manifest.json for docker-archive) into a temp file, then renames. */
  private async seal(root: Buffer, digest: string, ref: string | undefined): Promise<void> {
    const staging = this.staging!;
    const image = this.format === "docker-archive" ? await imageOf(staging, root, this.name) : undefined;
    const tmp = `${this.path}.${randomBytes(6).toString("hex")}.tmp`;
    const out = createWriteStream(tmp);
    const tar = new TarWriter(out);
    const file = (name: string, data: Buffer | Readable, size: number) =>
      tar.add({ name, type: "file", size, mode: 0o644, uid: 0, gid: 0, mtime: 0 }, data);
    const dir = (name: string) => tar.add({ name, type: "dir", size: 0, mode: 0o755, uid: 0, gid: 0, mtime: 0 });
    try {
      const blobs = await stagedBlobs(staging.path);
      const index = await readFile(join(staging.path, "index.json"));
      await file("oci-layout", Buffer.from('{"imageLayoutVersion":"1.0.0"}'), 30);
      await file("index.json", index, index.length);
      await dir("blobs");
      await dir("blobs/sha256");
      for (const b of blobs) await file(`blobs/sha256/${b.hex}`, await staging.openBlob(`sha256:${b.hex}`), b.size);
      if (image) {
        const m = image;
        const entry = {
          Config: `blobs/sha256/${hexOf(m.config!.digest)}`,
          RepoTags: ref !== undefined && !ref.startsWith("@") ? [ref] : [],
          Layers: m.layers.map((l) => `blobs/sha256/${hexOf(l.digest)}`),
        };
        const json = Buffer.from(JSON.stringify([entry]));
        await file("manifest.json", json, json.length);
      }
      await tar.finish();
      out.end();
      await finished(out);
      await rename(tmp, this.path);
    } catch (e) {
      out.destroy();
      await unlink(tmp).catch(() => undefined);
      throw e instanceof ImageyardError
        ? e
        : new ImageyardError(
            "INVALID_INPUT",
            `write ${this.name}@${digest}: ${(e as Error).message}. Check the directory is writable and has room.`,
            { cause: e },
          );
    }
  }
}

/** Removes an archive a copy wrote, only while it still holds that image. */
export async function removeArchive(format: Format, path: string, digest: string): Promise<{ removed: boolean; note?: string }> {
  const store = new ArchiveStore(format, path, "target");
  const c = await store.read().catch(() => undefined);
  if (!c) return { removed: false, note: "the archive is already gone" };
  if (!c.images.some((i) => i.digest === digest)) return { removed: false, note: `the archive no longer holds ${digest}; left it alone` };
  await unlink(path);
  return { removed: true };
}

/**
 * The one image a docker-archive's manifest.json describes: the root itself, or the only platform
 * of an index (a platforms-filtered copy), whose digest index.json keeps.
 */
async function imageOf(staging: LayoutStore, root: Buffer, label: string): Promise<ReturnType<typeof parseManifest>> {
  const m = parseManifest(root);
  if (!isIndex(m.mediaType)) return m;
  const real = m.children.filter((c) => c.platform?.os !== "unknown");
  if (real.length !== 1) {
    throw new ImageyardError(
      "INVALID_INPUT",
      `write ${label}: a docker-archive holds one platform's image, and this source is an index of ${real.length}. Set platforms to one platform, e.g. ["linux/amd64"], or use oci-archive.`,
    );
  }
  return parseManifest((await staging.getManifest(real[0]!.digest)).bytes);
}

/** What the staging layout holds, in name order so the same image gives the same archive bytes. */
async function stagedBlobs(layout: string): Promise<Array<{ hex: string; size: number }>> {
  const dir = join(layout, "blobs", "sha256");
  const names = (await readdir(dir)).filter((n) => /^[0-9a-f]{64}$/.test(n)).sort();
  return Promise.all(names.map(async (hex) => ({ hex, size: (await stat(join(dir, hex))).size })));
}

function infoOf(i: ArchiveImage): ManifestInfo {
  return { digest: i.digest, mediaType: i.mediaType, size: i.size };
}

/** The image a source reference names: "" = the only one, "@N" = the N-th, else a tag / RepoTags entry. */
function pickImage(label: string, format: Format, images: ArchiveImage[], reference: string): ArchiveImage | undefined {
  if (reference === "") {
    if (images.length === 1) return images[0];
    throw new ImageyardError(
      "INVALID_INPUT",
      `read ${label}: the archive holds ${images.length} images; name one as ${label}:${format === "oci-archive" ? "TAG" : "REPO:TAG or :@N"} (here: ${images.flatMap((i) => i.names).join(", ") || "none named"}).`,
    );
  }
  const n = /^@(\d+)$/.exec(reference);
  if (n) return images[Number(n[1])];
  return images.find((i) => i.names.some((name) => sameName(format, name, reference)));
}

function sameName(format: Format, a: string, b: string): boolean {
  if (format === "oci-archive" || a === b) return a === b;
  return normalizeDockerRef(a) === normalizeDockerRef(b);
}

export function normalizeDockerRef(ref: string): string {
  try {
    return formatReference(parseReference(ref));
  } catch {
    return ref;
  }
}

/** index.json's ref.name for a docker-archive, as Docker 25 writes it: the tag part only. */
function dockerTag(ref: string | undefined): string | undefined {
  if (ref === undefined || ref.startsWith("@")) return undefined;
  const slash = ref.lastIndexOf("/");
  const colon = ref.lastIndexOf(":");
  return colon > slash ? ref.slice(colon + 1) : "latest";
}
