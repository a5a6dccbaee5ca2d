// Reading an image archive without unpacking it: the tar's headers give each file's byte range;
// small files (index.json, manifest.json, configs, manifests) are read whole, layers never are
// (only hashed as a stream when a classic docker save names them by layer ID, not by digest).
import { createHash } from "node:crypto";
import { pipeline } from "node:stream/promises";
import { Writable } from "node:stream";
import { ImageyardError } from "../http/errors";
import { digestBytes } from "./digest";
import type { Descriptor } from "./manifest";
import { parseManifest } from "./manifest";
import { OCI_CONFIG, OCI_LAYER, OCI_LAYER_GZIP, OCI_LAYER_ZSTD, OCI_MANIFEST } from "./media";
import { listTar, openTarEntry, resolveTarFile, type TarEntry } from "./tar";

const MAX_SMALL_BYTES = 8 * 1024 * 1024;
const REF_NAME = "org.opencontainers.image.ref.name";
const CONTAINERD_NAME = "io.containerd.image.name";

export interface ArchiveImage {
  /** Tags (oci-archive) or RepoTags (docker-archive) naming the image. */
  names: string[];
  digest: string;
  mediaType: string;
  size: number;
  /** The manifest, when it was built from a classic docker save rather than stored. */
  bytes?: Buffer;
}

export interface ArchiveContents {
  images: ArchiveImage[];
  /** digest → the tar entry holding the blob (manifests included). */
  blobs: Map<string, TarEntry>;
  readSmall(digest: string): Promise<Buffer>;
}

export async function readArchive(format: "docker-archive" | "oci-archive", path: string): Promise<ArchiveContents> {
  const label = `${format}:${path}`;
  const list = await listTar(path, label);
  const entries = new Map(list.map((e) => [e.name, e]));
  const blobs = new Map<string, TarEntry>();
  for (const e of list) {
    const m = /^blobs\/(sha256|sha512)\/([0-9a-f]+)$/.exec(e.name);
    const file = m ? resolveTarFile(entries, e.name) : undefined;
    if (m && file) blobs.set(`${m[1]}:${m[2]}`, file);
  }
  const readEntry = async (e: TarEntry | undefined, what: string): Promise<Buffer> => {
    if (!e)
      throw new ImageyardError(
        "INVALID_INPUT",
        `read ${label}: ${what} is missing from the archive. Check that it was written by docker save, skopeo or imageyard.`,
      );
    if (e.size > MAX_SMALL_BYTES)
      throw new ImageyardError(
        "INVALID_INPUT",
        `read ${label}: ${what} is ${e.size} bytes, too large for a metadata file. Check the archive.`,
      );
    const chunks: Buffer[] = [];
    for await (const c of openTarEntry(path, e) as AsyncIterable<Buffer>) chunks.push(c);
    return Buffer.concat(chunks);
  };
  const readSmall = (digest: string) => readEntry(blobs.get(digest), `blob ${digest}`);
  const parseJson = <T>(bytes: Buffer, what: string): T => {
    try {
      return JSON.parse(bytes.toString("utf8")) as T;
    } catch (e) {
      throw new ImageyardError(
        "INVALID_INPUT",
        `read ${label}: ${what} is not valid JSON (${(e as Error).message}). The archive is damaged.`,
        { cause: e },
      );
    }
  };

  const indexEntry = resolveTarFile(entries, "index.json");
  const indexed: Array<Descriptor & { names: string[] }> = [];
  if (indexEntry) {
    const index = parseJson<{ manifests?: Descriptor[] }>(await readEntry(indexEntry, "index.json"), "index.json");
    for (const d of index.manifests ?? []) {
      const names = [d.annotations?.[format === "docker-archive" ? CONTAINERD_NAME : REF_NAME] ?? d.annotations?.[REF_NAME]].filter(
        (n): n is string => !!n,
      );
      indexed.push({ ...d, names });
    }
  }
  if (format === "oci-archive") {
    if (!indexEntry)
      throw new ImageyardError(
        "INVALID_INPUT",
        `read ${label}: no index.json, so not an OCI archive. For a docker save file use docker-archive:${path}.`,
      );
    return { images: indexed.map((d) => ({ names: d.names, digest: d.digest, mediaType: d.mediaType, size: d.size })), blobs, readSmall };
  }

  const manifestJson = resolveTarFile(entries, "manifest.json");
  const items = parseJson<Array<{ Config: string; RepoTags?: string[] | null; Layers: string[] }>>(
    await readEntry(manifestJson, "manifest.json"),
    "manifest.json",
  );
  if (!Array.isArray(items))
    throw new ImageyardError("INVALID_INPUT", `read ${label}: manifest.json is not a list. The archive is damaged.`);
  // Manifests stored beside manifest.json (Docker 25, imageyard): matched by their config digest.
  const stored = new Map<string, Descriptor>();
  for (const d of indexed) {
    const bytes = await readSmall(d.digest).catch(() => undefined);
    const m = bytes ? parseManifest(bytes) : undefined;
    // A one-platform index (what imageyard writes for a platforms-filtered copy) stands for its image.
    const real = m?.children.filter((c) => c.platform?.os !== "unknown") ?? [];
    const image = m?.kind === "index" && real.length === 1 ? await readSmall(real[0]!.digest).then(parseManifest, () => undefined) : m;
    const cfg = image?.config?.digest;
    if (cfg) stored.set(cfg, d);
  }
  const images: ArchiveImage[] = [];
  for (const [i, item] of items.entries()) {
    const configEntry = resolveTarFile(entries, item.Config);
    const config = await readEntry(configEntry, `config ${item.Config}`);
    const configDigest = digestBytes(config);
    blobs.set(configDigest, configEntry!);
    const names = item.RepoTags ?? [];
    const have = stored.get(configDigest);
    if (have) {
      images.push({ names, digest: have.digest, mediaType: have.mediaType, size: have.size });
      continue;
    }
    const diffIds = parseJson<{ rootfs?: { diff_ids?: string[] } }>(config, `config of image ${i}`).rootfs?.diff_ids ?? [];
    const layers: Descriptor[] = [];
    for (const [n, layerPath] of item.Layers.entries()) {
      const e = resolveTarFile(entries, layerPath);
      if (!e)
        throw new ImageyardError("INVALID_INPUT", `read ${label}: layer ${layerPath} of image ${i} is missing. The archive is incomplete.`);
      const mediaType = layerType(await magic(path, e));
      // A name that is a digest (skopeo, Docker 25) or an uncompressed layer (its diff_id) needs no
      // read; a copy verifies it anyway. Anything else is hashed once, as a stream.
      const named = /(?:^|\/)(?:blobs\/sha256\/)?([0-9a-f]{64})(?:\.tar)?$/.exec(layerPath);
      const byName = named && !layerPath.endsWith("/layer.tar") ? `sha256:${named[1]}` : undefined;
      const digest = byName ?? (mediaType === OCI_LAYER && diffIds[n] ? diffIds[n]! : await hashEntry(path, e));
      blobs.set(digest, e);
      layers.push({ mediaType, digest, size: e.size });
    }
    const bytes = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: OCI_MANIFEST,
        config: { mediaType: OCI_CONFIG, digest: configDigest, size: config.length },
        layers,
      }),
    );
    images.push({ names, digest: digestBytes(bytes), mediaType: OCI_MANIFEST, size: bytes.length, bytes });
  }
  return { images, blobs, readSmall };
}

async function magic(path: string, e: TarEntry): Promise<Buffer> {
  if (e.size === 0) return Buffer.alloc(0);
  const chunks: Buffer[] = [];
  for await (const c of openTarEntry(path, { ...e, size: Math.min(e.size, 4) }) as AsyncIterable<Buffer>) chunks.push(c);
  return Buffer.concat(chunks);
}

function layerType(head: Buffer): string {
  if (head[0] === 0x1f && head[1] === 0x8b) return OCI_LAYER_GZIP;
  if (head.length >= 4 && head.readUInt32LE(0) === 0xfd2fb528) return OCI_LAYER_ZSTD;
  return OCI_LAYER;
}

async function hashEntry(path: string, e: TarEntry): Promise<string> {
  const h = createHash("sha256");
  await pipeline(
    openTarEntry(path, e),
    new Writable({
      write(chunk: Buffer, _enc, cb) {
        h.update(chunk);
        cb();
      },
    }),
  );
  return `sha256:${h.digest("hex")}`;
}
