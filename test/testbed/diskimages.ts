// Test bed: disk images made with the real qemu-img and compressors, SUMS files in the formats
// distributions publish, and an HTTP server on 127.0.0.1 that serves them with Range support plus
// misbehaving routes (a connection dropped mid-body, a server that ignores Range, a slow one).
//
// Run as its own process so tests, the demo and the bench can share it:
//   node test/testbed/diskimages.ts serve     (or node dist/test/testbed/diskimages.js serve)
// It writes $IY_STATE_DIR/diskimages/testbed.json and serves until SIGTERM.
// Only node: built-ins are imported, so Node runs this file directly with type stripping.
import { execFileSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import {
  closeSync,
  createReadStream,
  existsSync,
  mkdirSync,
  openSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
  writeSync,
} from "node:fs";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { dirname, join, resolve } from "node:path";

/** Bump when the generated set changes, so a cached set is regenerated. */
const GENERATION = "6";
const MiB = 1024 * 1024;

export interface DiskImageFile {
  name: string;
  size: number;
  md5: string;
  sha256: string;
  sha512: string;
}

export interface DiskImageTestbed {
  /** http://127.0.0.1:PORT */
  url: string;
  /** Directory holding the served files (file:// tests read it directly). */
  dir: string;
  pid: number;
  files: Record<string, DiskImageFile>;
}

export function stateDir(): string {
  return process.env.IY_STATE_DIR ?? resolve(process.cwd(), ".testbed");
}

/**
 * Where the running server describes itself. Each vitest run gets its own file (the setup sets
 * IY_DISKIMAGES_FILE), so runs started side by side in one checkout never share or delete each
 * other's server; the demo and the bench use the default.
 */
export function testbedFile(): string {
  return process.env.IY_DISKIMAGES_FILE ?? join(stateDir(), "diskimages", "testbed.json");
}

export function loadDiskImageTestbed(): DiskImageTestbed {
  const path = testbedFile();
  if (!existsSync(path))
    throw new Error(
      `disk image test bed not running: ${path} is missing (vitest's globalSetup test/testbed/diskimages.setup.ts starts it)`,
    );
  return JSON.parse(readFileSync(path, "utf8")) as DiskImageTestbed;
}

function run(cmd: string, args: string[], opts: { stdoutTo?: string } = {}): void {
  if (opts.stdoutTo) {
    const fd = openSync(opts.stdoutTo, "w");
    try {
      execFileSync(cmd, args, { stdio: ["ignore", fd, "pipe"] });
    } finally {
      closeSync(fd);
    }
  } else execFileSync(cmd, args, { stdio: ["ignore", "pipe", "pipe"] });
}

/** A raw disk of `size` bytes with random data in scattered 1 MiB blocks and holes between. */
export function writeRandomRaw(path: string, size: number, dataFraction = 0.4): void {
  const fd = openSync(path, "w");
  try {
    const blocks = Math.floor(size / MiB);
    for (let i = 0; i < blocks; i++) {
      // Deterministic pattern of data and holes, so both zero and data clusters occur.
      if ((i * 7919) % 100 < dataFraction * 100) writeSync(fd, randomBytes(MiB), 0, MiB, i * MiB);
    }
    // Last byte fixes the length; a partial trailing block gets data too.
    writeSync(fd, randomBytes(1), 0, 1, size - 1);
  } finally {
    closeSync(fd);
  }
}

function digestFile(path: string, name: string): DiskImageFile {
  const data = readFileSync(path);
  const h = (a: string) => createHash(a).update(data).digest("hex");
  return { name, size: data.length, md5: h("md5"), sha256: h("sha256"), sha512: h("sha512") };
}

/** Generates every file the disk tests use into `dir`; returns their digests. */
export function generateDiskImages(dir: string): Record<string, DiskImageFile> {
  const stamp = join(dir, `.generation-${GENERATION}`);
  const manifest = join(dir, "files.json");
  if (existsSync(stamp) && existsSync(manifest)) return JSON.parse(readFileSync(manifest, "utf8")) as Record<string, DiskImageFile>;
  // Generate aside and rename into place, so a concurrent run never sees a half-made set.
  const work = `${dir}.tmp-${process.pid}`;
  rmSync(work, { recursive: true, force: true });
  mkdirSync(work, { recursive: true });
  const files = generateInto(work);
  if (existsSync(stamp) && existsSync(manifest)) {
    rmSync(work, { recursive: true, force: true });
  } else {
    rmSync(dir, { recursive: true, force: true });
    renameSync(work, dir);
  }
  return files;
}

function generateInto(dir: string): Record<string, DiskImageFile> {
  const p = (n: string) => join(dir, n);

  writeRandomRaw(p("disk.raw"), 24 * MiB);
  run("qemu-img", ["convert", "-f", "raw", "-O", "qcow2", p("disk.raw"), p("disk.qcow2")]);
  run("qemu-img", ["convert", "-f", "raw", "-O", "vmdk", p("disk.raw"), p("disk.vmdk")]);
  run("gzip", ["-c", "-1", p("disk.qcow2")], { stdoutTo: p("disk.qcow2.gz") });
  run("bzip2", ["-c", "-1", p("disk.qcow2")], { stdoutTo: p("disk.qcow2.bz2") });
  run("xz", ["-c", "-0", "-T1", p("disk.qcow2")], { stdoutTo: p("disk.qcow2.xz") });
  run("zstd", ["-q", "-c", "-1", p("disk.qcow2")], { stdoutTo: p("disk.qcow2.zst") });
  // Named like a plain image, but xz inside: detection must go by magic bytes.
  run("xz", ["-c", "-0", "-T1", p("disk.raw")], { stdoutTo: p("raw-xz-named.img") });
  // Compressed data that is damaged half way.
  const gz = readFileSync(p("disk.qcow2.gz"));
  gz.fill(0x55, Math.floor(gz.length / 2), Math.floor(gz.length / 2) + 4096);
  writeFileSync(p("damaged.qcow2.gz"), gz);

  // Corrupt qcow2s: one whose L1 table offset is invalid (qemu-img info refuses it) and one cut in
  // half (info reads it, convert would silently yield zeros, check finds the corruption).
  const bad = readFileSync(p("disk.qcow2"));
  bad.writeBigUInt64BE(0x30007n, 40);
  writeFileSync(p("corrupt.qcow2"), bad);
  const whole = readFileSync(p("disk.qcow2"));
  writeFileSync(p("truncated.qcow2"), whole.subarray(0, Math.floor(whole.length / 2)));

  // Images that reference other host files.
  run("qemu-img", ["create", "-f", "qcow2", "-b", p("disk.qcow2"), "-F", "qcow2", p("backing.qcow2")]);
  run("qemu-img", ["create", "-f", "qcow2", "-o", `data_file=${p("datafile.bin")}`, p("datafile.qcow2"), "24M"]);
  // Compressible data stored as compressed qcow2 clusters: no plain file offsets in qemu-img map.
  const text = Buffer.from("imageyard compressible test pattern\n".repeat(1 << 15));
  const fdc = openSync(p("compressible.raw"), "w");
  for (let i = 0; i < 16; i++) if (i % 4 !== 3) writeSync(fdc, text.subarray(0, MiB), 0, MiB, i * MiB);
  writeSync(fdc, Buffer.from([1]), 0, 1, 16 * MiB - 1);
  closeSync(fdc);
  run("qemu-img", ["convert", "-c", "-f", "raw", "-O", "qcow2", p("compressible.raw"), p("compressed.qcow2")]);
  // Random bytes that happen to look like nothing: a "raw" disk with no structure.
  writeFileSync(p("tiny.raw"), randomBytes(64 * 1024));
  // Size bombs: a few hundred KiB declaring 100 TiB of guest, and 64 MiB of zeros in a small gzip.
  run("qemu-img", ["create", "-q", "-f", "qcow2", p("huge.qcow2"), "100T"]);
  run("gzip", ["-c", "-1", p("huge.qcow2")], { stdoutTo: p("huge.qcow2.gz") });
  const zfd = openSync(p("zeros.raw"), "w");
  for (let i = 0; i < 64; i++) writeSync(zfd, Buffer.alloc(MiB), 0, MiB, i * MiB);
  closeSync(zfd);
  run("gzip", ["-c", "-1", p("zeros.raw")], { stdoutTo: p("zeros.raw.gz") });
  rmSync(p("zeros.raw"));

  const files: Record<string, DiskImageFile> = {};
  for (const n of [
    "disk.raw",
    "disk.qcow2",
    "disk.vmdk",
    "disk.qcow2.gz",
    "disk.qcow2.bz2",
    "disk.qcow2.xz",
    "disk.qcow2.zst",
    "raw-xz-named.img",
    "damaged.qcow2.gz",
    "corrupt.qcow2",
    "truncated.qcow2",
    "backing.qcow2",
    "datafile.qcow2",
    "tiny.raw",
    "compressible.raw",
    "compressed.qcow2",
    "huge.qcow2",
    "huge.qcow2.gz",
    "zeros.raw.gz",
  ]) {
    files[n] = digestFile(p(n), n);
  }
  const f = (n: string) => files[n] as DiskImageFile;
  const gnuNames = ["disk.qcow2", "disk.raw", "disk.qcow2.xz", "disk.qcow2.gz", "raw-xz-named.img"];
  writeFileSync(p("SHA256SUMS"), gnuNames.map((n) => `${f(n).sha256}  ${n}\n`).join(""));
  writeFileSync(p("SHA512SUMS"), gnuNames.map((n) => `${f(n).sha512} *${n}\n`).join(""));
  writeFileSync(p("MD5SUMS"), gnuNames.map((n) => `${f(n).md5}  ./${n}\n`).join(""));
  writeFileSync(
    p("CHECKSUMS.bsd"),
    `${gnuNames.flatMap((n) => [`SHA256 (${n}) = ${f(n).sha256}`, `SHA512 (${n}) = ${f(n).sha512}`]).join("\n")}\n`,
  );
  writeFileSync(
    p("Fedora-Cloud-CHECKSUM"),
    [
      "-----BEGIN PGP SIGNED MESSAGE-----",
      "Hash: SHA256",
      "",
      `# disk.qcow2: ${f("disk.qcow2").size} bytes`,
      `SHA256 (disk.qcow2) = ${f("disk.qcow2").sha256}`,
      `# disk.qcow2.zst: ${f("disk.qcow2.zst").size} bytes`,
      `SHA256 (disk.qcow2.zst) = ${f("disk.qcow2.zst").sha256}`,
      "-----BEGIN PGP SIGNATURE-----",
      "",
      "iQIzBAEBCAAdFiEEtest+signature+not+verified+here=",
      "-----END PGP SIGNATURE-----",
      "",
    ].join("\n"),
  );
  const wrong = f("disk.qcow2").sha256.replace(/^./, (c) => (c === "0" ? "1" : "0"));
  writeFileSync(p("WRONG-SHA256SUMS"), `${wrong}  disk.qcow2\n${f("disk.raw").sha256}  disk.raw\n`);
  writeFileSync(p("files.json"), JSON.stringify(files, null, 2));
  writeFileSync(p(`.generation-${GENERATION}`), new Date().toISOString());
  return files;
}

/**
 * Routes:
 *   /images/<name>                  static, Range and If-Range honoured, strong ETag
 *   /drop-once/<token>/<name>       first request per token: half the body, then the socket is cut
 *   /norange-drop/<token>/<name>    like drop-once, and Range is always ignored (200 from byte 0)
 *   /badrange-drop/<token>/<name>   like drop-once, then answers 206 for the wrong range
 *   /slow/<name>                    64 KiB every 50 ms
 *   /chunked/<name>                 no Content-Length (chunked), as streaming servers send
 *   /close-mid/<token>/<name>       "Connection: close" on every answer; the first per token is cut half way
 *   /stall-once/<token>/<name>      first request per token: half the body, then silence on an open socket
 *   /count/<name>                   requests seen per path (JSON), for tests
 *   anything else                   404
 */
export function serveDiskImages(dir: string): Server {
  const dropped = new Set<string>();
  const counts = new Map<string, number>();
  return createServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://x");
    const parts = url.pathname.split("/").filter(Boolean).map(decodeURIComponent);
    counts.set(url.pathname, (counts.get(url.pathname) ?? 0) + 1);
    const route = parts[0];
    if (route === "count") {
      res.writeHead(200, { "content-type": "application/json" });
      return void res.end(JSON.stringify({ count: counts.get(`/${parts.slice(1).join("/")}`) ?? 0 }));
    }
    if (route === "images" && parts.length === 2) return serveFile(req, res, join(dir, parts[1] as string), {});
    if ((route === "drop-once" || route === "norange-drop" || route === "badrange-drop") && parts.length === 3) {
      const key = `${route}/${parts[1]}`;
      const drop = !dropped.has(key);
      dropped.add(key);
      return serveFile(req, res, join(dir, parts[2] as string), {
        dropHalfway: drop,
        ignoreRange: route === "norange-drop",
        wrongRange: route === "badrange-drop" && !drop,
      });
    }
    if (route === "slow" && parts.length === 2) return serveFile(req, res, join(dir, parts[1] as string), { slow: true });
    if (route === "chunked" && parts.length === 2) return serveFile(req, res, join(dir, parts[1] as string), { chunked: true });
    if ((route === "close-mid" || route === "stall-once") && parts.length === 3) {
      const key = `${route}/${parts[1]}`;
      const first = !dropped.has(key);
      dropped.add(key);
      const close = route === "close-mid";
      return serveFile(req, res, join(dir, parts[2] as string), {
        dropHalfway: first && close,
        stallHalfway: first && !close,
        connectionClose: close,
      });
    }
    res.writeHead(404, { "content-type": "text/plain" });
    res.end("not found\n");
  });
}

interface ServeMode {
  dropHalfway?: boolean;
  ignoreRange?: boolean;
  wrongRange?: boolean;
  slow?: boolean;
  chunked?: boolean;
  stallHalfway?: boolean;
  connectionClose?: boolean;
}

function serveFile(req: IncomingMessage, res: ServerResponse, path: string, mode: ServeMode): void {
  if (path.includes("..") || !existsSync(path) || !statSync(path).isFile()) {
    res.writeHead(404, { "content-type": "text/plain" });
    return void res.end("not found\n");
  }
  const st = statSync(path);
  const etag = `"${st.size.toString(16)}-${Math.floor(st.mtimeMs).toString(16)}"`;
  let start = 0;
  let end = st.size - 1;
  let status = 200;
  const headers: Record<string, string> = {
    etag,
    "last-modified": st.mtime.toUTCString(),
    "accept-ranges": "bytes",
    "content-type": "application/octet-stream",
  };
  const range = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? "");
  const ifRange = req.headers["if-range"];
  if (range && !mode.ignoreRange && (ifRange === undefined || ifRange === etag)) {
    start = Number(range[1]);
    if (range[2]) end = Math.min(end, Number(range[2]));
    if (mode.wrongRange) start = Math.max(0, start - 1);
    if (start > end) {
      res.writeHead(416, { "content-range": `bytes */${st.size}` });
      return void res.end();
    }
    status = 206;
    headers["content-range"] = `bytes ${start}-${end}/${st.size}`;
  }
  if (!mode.chunked) headers["content-length"] = String(end - start + 1);
  if (mode.connectionClose) headers.connection = "close";
  res.writeHead(status, headers);
  if (req.method === "HEAD") return void res.end();
  if (mode.dropHalfway) {
    const half = Math.floor((end - start + 1) / 2);
    const s = createReadStream(path, { start, end: start + half - 1 });
    s.on("data", (c) => res.write(c));
    s.on("end", () => res.socket?.destroy());
    return;
  }
  if (mode.stallHalfway) {
    const half = Math.floor((end - start + 1) / 2);
    const s = createReadStream(path, { start, end: start + half - 1 });
    s.on("data", (c) => res.write(c));
    // Nothing more is sent; the socket stays open until the client gives up.
    return;
  }
  if (mode.slow) {
    const s = createReadStream(path, { start, end, highWaterMark: 64 * 1024 });
    s.on("data", (c) => {
      s.pause();
      res.write(c);
      setTimeout(() => s.resume(), 50);
    });
    s.on("end", () => res.end());
    res.on("close", () => s.destroy());
    return;
  }
  createReadStream(path, { start, end }).pipe(res);
}

async function main(): Promise<void> {
  const base = join(stateDir(), "diskimages");
  const dir = join(base, "files");
  mkdirSync(base, { recursive: true });
  mkdirSync(dirname(testbedFile()), { recursive: true });
  // IY_DISKIMAGES_SERVE_DIR serves an existing directory as it is (the bench's big image).
  const serveDir = process.env.IY_DISKIMAGES_SERVE_DIR;
  const files = serveDir ? {} : generateDiskImages(dir);
  const server = serveDiskImages(serveDir ?? dir);
  await new Promise<void>((ok) => server.listen(0, "127.0.0.1", ok));
  const addr = server.address();
  const port = typeof addr === "object" && addr ? addr.port : 0;
  const info: DiskImageTestbed = { url: `http://127.0.0.1:${port}`, dir: serveDir ?? dir, pid: process.pid, files };
  const tmp = `${testbedFile()}.${process.pid}`;
  writeFileSync(tmp, JSON.stringify(info, null, 2));
  renameSync(tmp, testbedFile());
  const stop = () => {
    server.close();
    server.closeAllConnections();
    try {
      const now = JSON.parse(readFileSync(testbedFile(), "utf8")) as DiskImageTestbed;
      if (now.pid === process.pid) rmSync(testbedFile(), { force: true });
    } catch {
      /* already gone */
    }
    process.exit(0);
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

if (/diskimages\.(ts|js)$/.test(process.argv[1] ?? "") && process.argv[2] === "serve") {
  main().catch((e) => {
    console.error(e);
    process.exit(1);
  });
}
