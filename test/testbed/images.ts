// Test images without Docker: an OCI image-layout writer that streams random (incompressible,
// optionally seeded) gzip tar layers straight to disk, single- and multi-arch images in OCI or
// Docker schema-2 media types, cosign-style signatures, and skopeo (the independent peer) to push
// them and to read digests back.
import { createCipheriv, createHash, createPrivateKey, createPublicKey, randomBytes, sign } from "node:crypto";
import {
  copyFileSync,
  createReadStream,
  createWriteStream,
  existsSync,
  linkSync,
  mkdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { pipeline } from "node:stream/promises";
import { createGzip } from "node:zlib";
import type { Descriptor, Platform } from "../../provider/oci/manifest";
import { defaultStateDir, type RegistryEndpoint } from "./registry";
import { digestOf, dockerRef, runSkopeo, skopeoFlags, splitRef } from "./skopeo";

// The skopeo helpers live in skopeo.ts; tests and benches import them from here too.
export { digestOf, dockerRef, runSkopeo, servesImage, skopeoFlags, type SkopeoResult } from "./skopeo";

/** Bump when generated content changes, so cached layouts are rebuilt. */
const GENERATION = "3";
const CHUNK = 1 << 20;

export const MEDIA = {
  ociManifest: "application/vnd.oci.image.manifest.v1+json",
  ociIndex: "application/vnd.oci.image.index.v1+json",
  ociConfig: "application/vnd.oci.image.config.v1+json",
  ociLayer: "application/vnd.oci.image.layer.v1.tar+gzip",
  dockerManifest: "application/vnd.docker.distribution.manifest.v2+json",
  dockerList: "application/vnd.docker.distribution.manifest.list.v2+json",
  dockerConfig: "application/vnd.docker.container.image.v1+json",
  dockerLayer: "application/vnd.docker.image.rootfs.diff.tar.gzip",
  cosignPayload: "application/vnd.dev.cosign.simplesigning.v1+json",
} as const;
export const COSIGN_SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature";
const REF_NAME = "org.opencontainers.image.ref.name";

export type ImageFormat = "oci" | "docker";

// The engine's descriptor shape, so tests compare like with like; media type strings above stay
// literal on purpose (the generator must not share the engine's constants it is checking).
export type { Descriptor, Platform };

export interface ImageSpec {
  /** Layers per platform (default 2). */
  layers?: number;
  /** Bytes of random data per layer, or "512K", "1M", "2G" (default 1 MiB). */
  layerSize?: number | string;
  /** "os/arch[/variant]"; more than one makes an index / manifest list (default linux/amd64). */
  platforms?: string[];
  /** Always write an index, even for one platform. */
  index?: boolean;
  /** Multi-arch: the first K layers are the same blobs on every platform. */
  sharedLayers?: number;
  /** "oci" (default) or "docker" (schema 2 manifest + manifest list media types). */
  format?: ImageFormat;
  /** Same seed, same spec → same bytes and digests; without one every build is unique. */
  seed?: string | number;
  /** Also write a cosign-style signature tagged `sha256-<hex>.sig`. */
  withSignature?: boolean;
  /** gzip level for layers (default 0: stored blocks, still valid gzip; random data does not
   * compress, and level 1 costs ~5x the CPU for the same bytes). */
  gzipLevel?: number;
}

export interface LayoutImage {
  dir: string;
  /** What skopeo copies from: `oci:DIR:TAG`, or for Docker media types `dir:DIR/dir` (skopeo's
   * oci: transport only resolves OCI-typed tags; its dir: transport keeps any manifest as is). */
  source: string;
  /** Tag of the image inside the layout (`oci:DIR:TAG`). */
  tag: string;
  /** Manifest or index at the top. */
  top: Descriptor;
  /** Index children (with platform); for a single image, the one manifest. */
  manifests: Descriptor[];
  /** Every config and layer blob, each once. */
  blobs: Descriptor[];
  signature?: { tag: string; manifest: Descriptor; payload: Descriptor; publicKeyPem: string };
}

export function parseSize(v: number | string): number {
  if (typeof v === "number") return v;
  const m = /^\s*(\d+(?:\.\d+)?)\s*([KMG]?)(?:I?B)?\s*$/i.exec(v);
  if (!m) throw new Error(`image size ${JSON.stringify(v)}: expected bytes or a number with K, M or G (e.g. "128M")`);
  const mult = { "": 1, K: 1 << 10, M: 1 << 20, G: 1 << 30 }[m[2]!.toUpperCase() as "" | "K" | "M" | "G"];
  return Math.round(Number(m[1]) * mult);
}

export function parsePlatform(p: string): Platform {
  const [os, architecture, variant] = p.split("/");
  if (!os || !architecture) throw new Error(`platform ${JSON.stringify(p)}: expected os/arch[/variant], e.g. linux/arm64`);
  return variant ? { os, architecture, variant } : { os, architecture };
}

/** Incompressible bytes: AES-CTR keystream, keyed by seed + name when seeded. */
function randomSource(seed: string | number | undefined, name: string): (n: number) => Buffer {
  const key =
    seed === undefined ? randomBytes(32) : createHash("sha256").update(`imageyard-testbed/${GENERATION}/${seed}/${name}`).digest();
  const cipher = createCipheriv("aes-256-ctr", key, Buffer.alloc(16));
  const zeros = Buffer.alloc(CHUNK);
  return (n) => cipher.update(zeros.subarray(0, n));
}

/** One entry of a layer built from real files (rootfs-relative paths, no leading slash). */
export type LayerEntry =
  | { type: "file"; path: string; source: string; mode?: number }
  | { type: "dir"; path: string; mode?: number }
  | { type: "symlink"; path: string; target: string };

const TAR_TYPE = { file: "0", symlink: "2", dir: "5" } as const;

/** A ustar header, every field fixed (owner root, mtime 0) so the bytes are reproducible. */
function tarHeader(name: string, size: number, opts: { type?: keyof typeof TAR_TYPE; mode?: number; link?: string } = {}): Buffer {
  const h = Buffer.alloc(512);
  const field = (off: number, len: number, value: string) => h.write(value, off, len, "ascii");
  const octal = (off: number, len: number, n: number) => field(off, len, `${n.toString(8).padStart(len - 1, "0")}\0`);
  if (Buffer.byteLength(name) > 100) throw new Error(`tar entry name too long: ${name}`);
  if (opts.link && Buffer.byteLength(opts.link) > 100) throw new Error(`tar link target too long: ${opts.link}`);
  field(0, 100, name);
  octal(100, 8, opts.mode ?? 0o644);
  octal(108, 8, 0);
  octal(116, 8, 0);
  octal(124, 12, size);
  octal(136, 12, 0);
  field(148, 8, "        ");
  field(156, 1, TAR_TYPE[opts.type ?? "file"]);
  if (opts.link) field(157, 100, opts.link);
  field(257, 6, "ustar\0");
  field(263, 2, "00");
  field(265, 32, "root");
  field(297, 32, "root");
  let sum = 0;
  for (const b of h) sum += b;
  field(148, 8, `${sum.toString(8).padStart(6, "0")}\0 `);
  return h;
}

/** Writes blobs, manifests and tags into an OCI image layout; layers stream to disk. */
export class OciLayoutWriter {
  readonly dir: string;
  private readonly blobDir: string;

  constructor(dir: string) {
    this.dir = dir;
    this.blobDir = join(dir, "blobs", "sha256");
    mkdirSync(this.blobDir, { recursive: true });
    writeFileSync(join(dir, "oci-layout"), JSON.stringify({ imageLayoutVersion: "1.0.0" }));
    if (!existsSync(join(dir, "index.json"))) this.writeIndex([]);
  }

  blobPath(digest: string): string {
    return join(this.blobDir, digest.replace(/^sha256:/, ""));
  }

  writeBytes(data: Buffer, mediaType: string): Descriptor {
    const digest = `sha256:${createHash("sha256").update(data).digest("hex")}`;
    const path = this.blobPath(digest);
    if (!existsSync(path)) writeFileSync(path, data);
    return { mediaType, digest, size: data.length };
  }

  writeJson(value: unknown, mediaType: string): Descriptor {
    return this.writeBytes(Buffer.from(JSON.stringify(value)), mediaType);
  }

  /**
   * A gzip'd tar holding one file of `size` random bytes, streamed chunk by chunk to disk; also
   * returns the diff ID (digest of the uncompressed tar) the config needs.
   */
  async writeLayer(opts: {
    name: string;
    size: number;
    seed?: string | number;
    gzipLevel?: number;
    mediaType?: string;
  }): Promise<{ descriptor: Descriptor; diffId: string }> {
    const rand = randomSource(opts.seed, opts.name);
    const diff = createHash("sha256");
    const packed = createHash("sha256");
    let packedSize = 0;
    async function* tar(): AsyncGenerator<Buffer> {
      const emit = (b: Buffer) => (diff.update(b), b);
      yield emit(tarHeader(opts.name, opts.size));
      for (let left = opts.size; left > 0; left -= CHUNK) yield emit(rand(Math.min(CHUNK, left)));
      const pad = (512 - (opts.size % 512)) % 512;
      yield emit(Buffer.alloc(pad + 1024));
    }
    async function* count(source: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
      for await (const c of source) {
        packed.update(c);
        packedSize += c.length;
        yield c;
      }
    }
    const tmp = join(this.blobDir, `.tmp-${process.pid}-${randomBytes(6).toString("hex")}`);
    try {
      await pipeline(tar(), createGzip({ level: opts.gzipLevel ?? 0, chunkSize: 256 * 1024 }), count, createWriteStream(tmp));
      const digest = `sha256:${packed.digest("hex")}`;
      renameSync(tmp, this.blobPath(digest));
      return {
        descriptor: { mediaType: opts.mediaType ?? MEDIA.ociLayer, digest, size: packedSize },
        diffId: `sha256:${diff.digest("hex")}`,
      };
    } finally {
      rmSync(tmp, { force: true });
    }
  }

  /**
   * A gzip'd tar of real files (a rootfs: binaries, dirs, symlinks), streamed from disk; returns
   * the descriptor and the diff ID like writeLayer.
   */
  async writeFilesLayer(entries: LayerEntry[], opts: { gzipLevel?: number } = {}): Promise<{ descriptor: Descriptor; diffId: string }> {
    const diff = createHash("sha256");
    const packed = createHash("sha256");
    let packedSize = 0;
    async function* tar(): AsyncGenerator<Buffer> {
      const emit = (b: Buffer) => (diff.update(b), b);
      for (const e of entries) {
        if (e.type === "dir")
          yield emit(tarHeader(e.path.endsWith("/") ? e.path : `${e.path}/`, 0, { type: "dir", mode: e.mode ?? 0o755 }));
        else if (e.type === "symlink") yield emit(tarHeader(e.path, 0, { type: "symlink", mode: 0o777, link: e.target }));
        else {
          const size = statSync(e.source).size;
          yield emit(tarHeader(e.path, size, { mode: e.mode ?? 0o755 }));
          let n = 0;
          for await (const c of createReadStream(e.source)) {
            n += (c as Buffer).length;
            yield emit(c as Buffer);
          }
          if (n !== size) throw new Error(`layer file ${e.source} changed size while read (${size} → ${n} bytes)`);
          yield emit(Buffer.alloc((512 - (size % 512)) % 512));
        }
      }
      yield emit(Buffer.alloc(1024));
    }
    async function* count(source: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
      for await (const c of source) {
        packed.update(c);
        packedSize += c.length;
        yield c;
      }
    }
    const tmp = join(this.blobDir, `.tmp-${process.pid}-${randomBytes(6).toString("hex")}`);
    try {
      await pipeline(tar(), createGzip({ level: opts.gzipLevel ?? 6 }), count, createWriteStream(tmp));
      const digest = `sha256:${packed.digest("hex")}`;
      renameSync(tmp, this.blobPath(digest));
      return { descriptor: { mediaType: MEDIA.ociLayer, digest, size: packedSize }, diffId: `sha256:${diff.digest("hex")}` };
    } finally {
      rmSync(tmp, { force: true });
    }
  }

  /** Points `tag` (org.opencontainers.image.ref.name in index.json) at `desc`. */
  tag(desc: Descriptor, tag: string): void {
    const index = JSON.parse(readFileSync(join(this.dir, "index.json"), "utf8")) as { manifests: Descriptor[] };
    const others = index.manifests.filter((m) => m.annotations?.[REF_NAME] !== tag);
    this.writeIndex([...others, { mediaType: desc.mediaType, digest: desc.digest, size: desc.size, annotations: { [REF_NAME]: tag } }]);
  }

  private writeIndex(manifests: Descriptor[]): void {
    writeFileSync(join(this.dir, "index.json"), JSON.stringify({ schemaVersion: 2, mediaType: MEDIA.ociIndex, manifests }, null, 1));
  }
}

/** A deterministic Ed25519 key from the seed (cosign signs with any key; this keeps digests stable). */
function signingKey(seed: string | number | undefined) {
  const raw = seed === undefined ? randomBytes(32) : createHash("sha256").update(`imageyard-cosign/${seed}`).digest();
  const der = Buffer.concat([Buffer.from("302e020100300506032b657004220420", "hex"), raw]);
  return createPrivateKey({ key: der, format: "der", type: "pkcs8" });
}

/** The tag cosign stores an image's signature under. */
export function signatureTag(digest: string): string {
  return `${digest.replace(":", "-")}.sig`;
}

function writeSignature(
  w: OciLayoutWriter,
  image: Descriptor,
  identity: string,
  seed: string | number | undefined,
): NonNullable<LayoutImage["signature"]> {
  const payload = Buffer.from(
    JSON.stringify({
      critical: {
        identity: { "docker-reference": identity },
        image: { "docker-manifest-digest": image.digest },
        type: "cosign container image signature",
      },
      optional: null,
    }),
  );
  const key = signingKey(seed);
  const signature = sign(null, payload, key).toString("base64");
  const payloadDesc = { ...w.writeBytes(payload, MEDIA.cosignPayload), annotations: { [COSIGN_SIGNATURE_ANNOTATION]: signature } };
  const config = w.writeJson(
    {
      architecture: "",
      os: "",
      created: "0001-01-01T00:00:00Z",
      config: {},
      rootfs: { type: "layers", diff_ids: [`sha256:${createHash("sha256").update(payload).digest("hex")}`] },
      history: [{ created: "0001-01-01T00:00:00Z" }],
    },
    MEDIA.ociConfig,
  );
  const manifest = w.writeJson({ schemaVersion: 2, mediaType: MEDIA.ociManifest, config, layers: [payloadDesc] }, MEDIA.ociManifest);
  const tag = signatureTag(image.digest);
  w.tag(manifest, tag);
  return { tag, manifest, payload: payloadDesc, publicKeyPem: createPublicKey(key).export({ type: "spki", format: "pem" }).toString() };
}

/** skopeo's dir: transport layout of the same image, blobs hard-linked from the OCI layout. */
function writeDirView(w: OciLayoutWriter, top: Descriptor, manifests: Descriptor[], blobs: Descriptor[]): string {
  const dir = join(w.dir, "dir");
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, "version"), "Directory Transport Version: 1.1\n");
  const hex = (d: Descriptor) => d.digest.replace(/^sha256:/, "");
  copyFileSync(w.blobPath(top.digest), join(dir, "manifest.json"));
  if (top.digest !== manifests[0]?.digest)
    for (const m of manifests) copyFileSync(w.blobPath(m.digest), join(dir, `${hex(m)}.manifest.json`));
  for (const b of blobs) if (!existsSync(join(dir, hex(b)))) linkSync(w.blobPath(b.digest), join(dir, hex(b)));
  return `dir:${dir}`;
}

/** Writes the image `spec` describes into the layout at `dir`, tagged `tag`. */
export async function writeImageLayout(dir: string, tag: string, spec: ImageSpec = {}): Promise<LayoutImage> {
  const w = new OciLayoutWriter(dir);
  const docker = spec.format === "docker";
  const layerCount = spec.layers ?? 2;
  const size = parseSize(spec.layerSize ?? CHUNK);
  const platforms = (spec.platforms ?? ["linux/amd64"]).map(parsePlatform);
  const seed = spec.seed;
  const layerType = docker ? MEDIA.dockerLayer : MEDIA.ociLayer;
  const blobs = new Map<string, Descriptor>();
  const layer = async (name: string) => {
    const l = await w.writeLayer({ name, size, seed, gzipLevel: spec.gzipLevel, mediaType: layerType });
    blobs.set(l.descriptor.digest, l.descriptor);
    return l;
  };
  const multi = platforms.length > 1;
  const shared = [];
  for (let i = 0; multi && i < Math.min(spec.sharedLayers ?? 0, layerCount); i++)
    shared.push(await layer(`data/shared-layer${String(i).padStart(3, "0")}.bin`));
  const manifests: Descriptor[] = [];
  for (const p of platforms) {
    const plat = [p.os, p.architecture, p.variant].filter(Boolean).join("-");
    const layers = [...shared];
    for (let i = layers.length; i < layerCount; i++) layers.push(await layer(`data/${plat}-layer${String(i).padStart(3, "0")}.bin`));
    const created = "2024-01-01T00:00:00Z";
    const config = w.writeJson(
      {
        created,
        ...p,
        config: { Env: ["PATH=/usr/bin:/bin"], Cmd: ["/bin/true"], Labels: { "org.example.generator": "imageyard-testbed" } },
        rootfs: { type: "layers", diff_ids: layers.map((l) => l.diffId) },
        history: layers.map((_, i) => ({ created, created_by: `imageyard testbed layer ${i}` })),
      },
      docker ? MEDIA.dockerConfig : MEDIA.ociConfig,
    );
    blobs.set(config.digest, config);
    const body = docker
      ? { schemaVersion: 2, mediaType: MEDIA.dockerManifest, config, layers: layers.map((l) => l.descriptor) }
      : {
          schemaVersion: 2,
          mediaType: MEDIA.ociManifest,
          config,
          layers: layers.map((l) => l.descriptor),
          annotations: { "org.opencontainers.image.created": created },
        };
    manifests.push({ ...w.writeJson(body, docker ? MEDIA.dockerManifest : MEDIA.ociManifest), platform: p });
  }
  let top: Descriptor;
  if (multi || spec.index) {
    const type = docker ? MEDIA.dockerList : MEDIA.ociIndex;
    top = w.writeJson({ schemaVersion: 2, mediaType: type, manifests }, type);
  } else {
    const { platform: _platform, ...only } = manifests[0]!;
    top = only;
  }
  w.tag(top, tag);
  const source = docker ? writeDirView(w, top, manifests, [...blobs.values()]) : `oci:${dir}:${tag}`;
  const image: LayoutImage = { dir, source, tag, top, manifests, blobs: [...blobs.values()] };
  if (spec.withSignature) {
    image.signature = writeSignature(w, top, `imageyard.test/${tag}`, seed);
    writeFileSync(join(dir, "cosign.pub"), image.signature.publicKeyPem);
  }
  return image;
}

/**
 * A seeded spec's layout, built once under stateDir/images/g<generation> and reused (generated images are
 * deterministic, so a cached copy is as good as a new one). Unseeded specs get a fresh temporary
 * layout: `temporary` tells the caller to delete it.
 */
export async function cachedImageLayout(stateDir: string, spec: ImageSpec): Promise<LayoutImage & { temporary: boolean }> {
  // One folder per generation: stale ones can be deleted whole.
  const root = join(stateDir, "images", `g${GENERATION}`);
  mkdirSync(root, { recursive: true });
  if (spec.seed === undefined) {
    const dir = join(root, `tmp-${process.pid}-${randomBytes(6).toString("hex")}`);
    return { ...(await writeImageLayout(dir, "image", spec)), temporary: true };
  }
  const key = createHash("sha256")
    .update(JSON.stringify({ GENERATION, ...spec, layerSize: parseSize(spec.layerSize ?? CHUNK) }))
    .digest("hex")
    .slice(0, 16);
  const dir = join(root, key);
  const described = join(dir, "image.json");
  if (existsSync(described)) return { ...(JSON.parse(readFileSync(described, "utf8")) as LayoutImage), temporary: false };
  // Build aside and rename, so parallel test workers never see half a layout.
  const tmp = `${dir}.tmp-${process.pid}-${randomBytes(4).toString("hex")}`;
  try {
    const image = await writeImageLayout(tmp, "image", spec);
    writeFileSync(join(tmp, "image.json"), JSON.stringify({ ...image, dir, source: image.source.replace(tmp, dir) }, null, 1));
    try {
      renameSync(tmp, dir);
    } catch {
      if (!existsSync(described)) throw new Error(`cannot move the generated layout to ${dir}`);
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  return { ...(JSON.parse(readFileSync(described, "utf8")) as LayoutImage), temporary: false };
}

export interface SeededImage {
  /** HOST/REPO:TAG */
  ref: string;
  repository: string;
  tag: string;
  /** Top manifest digest as the registry serves it (checked equal to the generated one). */
  digest: string;
  mediaType: string;
  size: number;
  /** Index children with platforms; for a single image, the one manifest. */
  manifests: Descriptor[];
  blobs: Descriptor[];
  signature?: { tag: string; digest: string };
  layoutDir: string;
}

/**
 * Generates (or reuses, when seeded) an image and pushes it to `ep` as "repo:tag" with skopeo;
 * returns what the registry reports. `stateDir` holds the image cache.
 */
export async function seedImage(ep: RegistryEndpoint, ref: string, spec: ImageSpec & { stateDir?: string } = {}): Promise<SeededImage> {
  const { stateDir, ...imageSpec } = spec;
  const { repo, tag } = splitRef(ref);
  if (tag.startsWith("@")) throw new Error(`seedImage ${ref}: give a tag, not a digest`);
  const dir = stateDir ?? defaultStateDir();
  const image = await cachedImageLayout(dir, imageSpec);
  try {
    const isList = image.top.mediaType === MEDIA.ociIndex || image.top.mediaType === MEDIA.dockerList;
    const copy = (source: string, destTag: string) =>
      runSkopeo([
        "copy",
        "-q",
        "--preserve-digests",
        ...(isList ? ["--all"] : []),
        ...skopeoFlags(ep, "dest"),
        source,
        dockerRef(ep, `${repo}:${destTag}`),
      ]);
    await copy(image.source, tag);
    const digest = await digestOf(ep, `${repo}:${tag}`);
    if (digest !== image.top.digest)
      throw new Error(`seedImage ${ep.host}/${repo}:${tag}: registry serves ${digest}, generated ${image.top.digest}`);
    const seeded: SeededImage = {
      ref: `${ep.host}/${repo}:${tag}`,
      repository: repo,
      tag,
      digest,
      mediaType: image.top.mediaType,
      size: image.top.size,
      manifests: image.manifests,
      blobs: image.blobs,
      layoutDir: image.dir,
    };
    if (image.signature) {
      await copy(`oci:${image.dir}:${image.signature.tag}`, image.signature.tag);
      seeded.signature = { tag: image.signature.tag, digest: await digestOf(ep, `${repo}:${image.signature.tag}`) };
    }
    return seeded;
  } finally {
    if (image.temporary) rmSync(image.dir, { recursive: true, force: true });
  }
}
