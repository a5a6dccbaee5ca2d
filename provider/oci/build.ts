// Images from a tar file or a directory with no Docker daemon and no root: the equivalent of
// `FROM scratch` + `ADD --chown=0:0 ovl.tar /` + `CMD [...]`. One layer, rewritten as a stream
// (ownership as asked, mtimes clamped, entries in a fixed order), so the same input always gives
// the same digest. planBuild hashes it (a preview sees the digest); buildImage pushes it through
// the same stores a copy writes (registry, OCI layout, archives), each blob verified on the way.
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { lstat, open, readdir, readlink } from "node:fs/promises";
import { join } from "node:path";
import { PassThrough, Readable, Transform, Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { createGzip } from "node:zlib";
import { ImageyardError } from "../http/errors";
import { digestBytes } from "./digest";
import { parseLocation, pinnedLocation, formatLocation } from "./location";
import { parsePlatform, type Platform } from "./manifest";
import { OCI_CONFIG, OCI_LAYER, OCI_LAYER_GZIP, OCI_MANIFEST } from "./media";
import { openStore, type CopyDeps } from "./plan";
import type { RegistryOptions } from "./registry";
import { listTar, openTarEntry, TarWriter, type TarHeader } from "./tar";

export interface ImageConfigInput {
  entrypoint?: string[];
  cmd?: string[];
  env?: Record<string, string>;
  workingDir?: string;
  user?: string;
  labels?: Record<string, string>;
  /** "8080", "8080/tcp", "53/udp". */
  exposedPorts?: string[];
}

export interface BuildRequest extends ImageConfigInput {
  /** A tar file (uncompressed) or a directory: the image's root filesystem. */
  source: string;
  /** Where the image goes: "host/repo:tag", "oci:DIR:tag", "oci-archive:FILE:tag", "docker-archive:FILE:repo:tag". */
  target: string;
  /** "linux/amd64" by default. */
  platform?: string;
  /** Owner of every entry (ADD --chown); null keeps the owners the input has. Default 0:0. */
  owner?: { uid: number; gid: number } | null;
  /** Entries newer than this (seconds since the epoch) get this mtime; also the config's "created". Default 0. */
  mtime?: number;
  /** Layer compression. Default "gzip". */
  compression?: "gzip" | "none";
  targetOptions?: RegistryOptions;
}

export interface BuiltImage {
  digest: string;
  manifest: Buffer;
  config: Buffer;
  configDigest: string;
  layerDigest: string;
  layerSize: number;
  /** sha256 of the uncompressed layer (the config's rootfs.diff_ids). */
  diffId: string;
  layerMediaType: string;
}

export interface BuildResult extends BuiltImage {
  /** "host/repo@sha256:…" (or the layout/archive form). */
  pinnedRef: string;
  tagRef: string;
  upToDate: boolean;
}

/** Pass one: the layer is produced and hashed, never stored; gives every digest of the image. */
export async function planBuild(req: BuildRequest): Promise<BuiltImage> {
  const diff = createHash("sha256");
  const packed = createHash("sha256");
  let layerSize = 0;
  await pipeline(
    layerStream(req, (chunk) => diff.update(chunk)),
    new Writable({
      write(chunk: Buffer, _e, cb) {
        packed.update(chunk);
        layerSize += chunk.length;
        cb();
      },
    }),
  );
  const diffId = `sha256:${diff.digest("hex")}`;
  const layerDigest = `sha256:${packed.digest("hex")}`;
  const config = Buffer.from(JSON.stringify(imageConfig(req, diffId)));
  const configDigest = digestBytes(config);
  const layerMediaType = req.compression === "none" ? OCI_LAYER : OCI_LAYER_GZIP;
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      config: { mediaType: OCI_CONFIG, digest: configDigest, size: config.length },
      layers: [{ mediaType: layerMediaType, digest: layerDigest, size: layerSize }],
    }),
  );
  return { digest: digestBytes(manifest), manifest, config, configDigest, layerDigest, layerSize, diffId, layerMediaType };
}

/** Pass two: the layer is produced again and streamed to the target, verified against pass one. */
export async function buildImage(req: BuildRequest, deps: CopyDeps = {}): Promise<BuildResult> {
  const built = await planBuild(req);
  const loc = parseLocation(req.target);
  const tag = loc.kind === "registry" ? loc.ref.tag : loc.kind === "archive" ? loc.ref : loc.tag;
  const store = await openStore(loc, "target", req.targetOptions, deps);
  const result: BuildResult = {
    ...built,
    pinnedRef: pinnedLocation(loc, built.digest),
    tagRef: tag !== undefined ? formatLocation(loc) : pinnedLocation(loc, built.digest),
    upToDate: false,
  };
  const have = await store.headManifest(tag ?? built.digest);
  if (have?.digest === built.digest) return { ...result, upToDate: true };
  const from = `build of ${req.source}`;
  const signal = deps.signal;
  if (!(await store.hasBlob(built.layerDigest, built.layerSize))) {
    await store.writeBlob({
      digest: built.layerDigest,
      size: built.layerSize,
      from,
      open: async () => layerStream(req),
      ...(signal ? { signal } : {}),
    });
  }
  if (!(await store.hasBlob(built.configDigest, built.config.length))) {
    await store.writeBlob({
      digest: built.configDigest,
      size: built.config.length,
      from,
      open: async () => Readable.from([built.config]),
      ...(signal ? { signal } : {}),
    });
  }
  const stored = await store.putManifest(tag, built.manifest, OCI_MANIFEST, { root: true });
  if (stored !== built.digest)
    throw new ImageyardError(
      "DIGEST_MISMATCH",
      `push ${result.tagRef}: stored ${stored}, built ${built.digest} (DIGEST_MISMATCH). Report this.`,
    );
  deps.onProgress?.({ phase: "manifest", item: result.tagRef, done: true, message: built.digest });
  return result;
}

/** The config a `FROM scratch` Dockerfile with these instructions would give, in a fixed key order. */
export function imageConfig(req: BuildRequest, diffId: string): Record<string, unknown> {
  const p: Platform = parsePlatform(req.platform ?? "linux/amd64");
  const created = new Date((req.mtime ?? 0) * 1000).toISOString().replace(".000Z", "Z");
  const c: Record<string, unknown> = {};
  if (req.user) c.User = req.user;
  if (req.exposedPorts?.length)
    c.ExposedPorts = Object.fromEntries([...req.exposedPorts].map((x) => [x.includes("/") ? x : `${x}/tcp`, {}]).sort());
  if (req.env && Object.keys(req.env).length) c.Env = Object.entries(req.env).map(([k, v]) => `${k}=${v}`);
  if (req.entrypoint?.length) c.Entrypoint = req.entrypoint;
  if (req.cmd?.length) c.Cmd = req.cmd;
  if (req.workingDir) c.WorkingDir = req.workingDir;
  if (req.labels && Object.keys(req.labels).length)
    c.Labels = Object.fromEntries(Object.entries(req.labels).sort(([a], [b]) => (a < b ? -1 : 1)));
  return {
    created,
    architecture: p.architecture,
    os: p.os,
    ...(p.variant ? { variant: p.variant } : {}),
    config: c,
    rootfs: { type: "layers", diff_ids: [diffId] },
    history: [{ created, created_by: "imageyard ImageFromTar" }],
  };
}

/** The layer as a stream: a rewritten tar, gzipped unless asked not to; `tap` sees the uncompressed bytes. */
export function layerStream(req: BuildRequest, tap?: (chunk: Buffer) => void): Readable {
  const raw = new PassThrough();
  const tapped = tap
    ? raw.pipe(
        new Transform({
          transform(chunk: Buffer, _e, cb) {
            tap(chunk);
            cb(null, chunk);
          },
        }),
      )
    : raw;
  // .pipe() does not carry errors downstream; a bad input must fail the reader, not leave it waiting.
  if (tapped !== raw) raw.on("error", (e) => tapped.destroy(e));
  writeLayer(req, raw).catch((e) => raw.destroy(e));
  if (req.compression === "none") return tapped;
  // Level 6 and zlib's fixed gzip header (mtime 0): the same bytes in give the same bytes out.
  const gz = createGzip({ level: 6 });
  tapped.on("error", (e) => gz.destroy(e));
  return tapped.pipe(gz);
}

async function writeLayer(req: BuildRequest, out: PassThrough): Promise<void> {
  const tar = new TarWriter(out);
  const clamp = req.mtime ?? 0;
  const owner = req.owner === undefined ? { uid: 0, gid: 0 } : req.owner;
  const rewrite = (h: TarHeader): TarHeader => {
    const r: TarHeader = { ...h, mtime: Math.min(h.mtime, clamp) };
    if (owner) {
      r.uid = owner.uid;
      r.gid = owner.gid;
      delete r.uname;
      delete r.gname;
    }
    return r;
  };
  const info = await lstat(req.source).catch((e) => {
    throw new ImageyardError(
      "INVALID_INPUT",
      `build from ${req.source}: ${(e as Error).message}. Give an existing tar file or directory.`,
      { cause: e },
    );
  });
  if (info.isDirectory()) {
    for await (const { header, path } of walkDirectory(req.source))
      await tar.add(rewrite(header), header.type === "file" ? createReadStream(path) : undefined);
  } else {
    await refuseCompressed(req.source);
    for (const e of await listTar(req.source)) {
      if (e.name === "" || e.name === ".") continue;
      const { offset: _o, ...header } = e;
      await tar.add(rewrite(header), e.type === "file" ? openTarEntry(req.source, e) : undefined);
    }
  }
  await tar.finish();
  out.end();
}

async function refuseCompressed(path: string): Promise<void> {
  const fd = await open(path, "r");
  try {
    const head = Buffer.alloc(4);
    await fd.read(head, 0, 4, 0);
    if ((head[0] === 0x1f && head[1] === 0x8b) || head.readUInt32LE(0) === 0xfd2fb528) {
      throw new ImageyardError(
        "INVALID_INPUT",
        `build from ${path}: the file is compressed (gzip/zstd); give the plain tar (decompress it first) or the directory.`,
      );
    }
  } finally {
    await fd.close();
  }
}

/** Every entry under `root`, depth first, names sorted bytewise so the order never depends on the file system. */
async function* walkDirectory(root: string, rel = ""): AsyncGenerator<{ header: TarHeader; path: string }> {
  const names = (await readdir(join(root, rel))).sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
  for (const n of names) {
    const name = rel ? `${rel}/${n}` : n;
    const path = join(root, name);
    const s = await lstat(path);
    const base = { name, size: 0, mode: s.mode & 0o7777, uid: s.uid, gid: s.gid, mtime: Math.floor(s.mtimeMs / 1000) };
    if (s.isDirectory()) {
      yield { header: { ...base, type: "dir" }, path };
      yield* walkDirectory(root, name);
    } else if (s.isFile()) yield { header: { ...base, type: "file", size: s.size }, path };
    else if (s.isSymbolicLink()) yield { header: { ...base, type: "symlink", linkname: await readlink(path) }, path };
    else if (!s.isSocket())
      throw new ImageyardError(
        "INVALID_INPUT",
        `build from ${root}: ${name} is a device or FIFO, which a rootless build cannot read; remove it or build from a tar.`,
      );
  }
}
