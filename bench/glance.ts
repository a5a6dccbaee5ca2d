// Bench: imageyard's disk pipeline + Glance upload against the azimuth-ops sequence
//   curl -o image.qcow2 URL && qemu-img convert -O raw image.qcow2 image.raw &&
//   openstack image create --file image.raw --disk-format raw …
// on the same generated qcow2 (2 GiB virtual, real random data, not zeros), in one run.
// Both sides download from the same local HTTP server and upload to the same real Keystone +
// Glance. Per side: wall time, peak RSS of the client processes (GNU time's max RSS over the
// steps), peak scratch disk (allocated blocks in the side's work directory, sampled every 50 ms).
// Medians over --runs (default 3), sides alternating. Ends with RESULT {…} lines.
//
//   scripts/bench-glance.sh [--runs 3] [--size-gib 2] [--data-fraction 0.6] [--upload glance|none]
//
// --upload none leaves Glance out on both sides (download + convert only, imageyard reading the
// raw stream to the end), for machines without the Keystone + Glance test bed.
import { spawn } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { mkdtemp, readdir, rm, stat } from "node:fs/promises";
import { join, resolve } from "node:path";
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { writeRandomRaw, stateDir, type DiskImageTestbed } from "../test/testbed/diskimages";

const GiB = 1024 ** 3;
const MiB = 1024 ** 2;

interface Args {
  runs: number;
  sizeGiB: number;
  dataFraction: number;
  upload: "glance" | "none";
  child: boolean;
  url?: string;
  checksum?: string;
  scratch?: string;
  name?: string;
}

function parseArgs(argv: string[]): Args {
  const a: Args = { runs: 3, sizeGiB: 2, dataFraction: 0.6, upload: "glance", child: false };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i];
    const v = () => {
      const val = argv[++i];
      if (val === undefined) throw new Error(`${k} needs a value`);
      return val;
    };
    if (k === "--runs") a.runs = Number(v());
    else if (k === "--size-gib") a.sizeGiB = Number(v());
    else if (k === "--data-fraction") a.dataFraction = Number(v());
    else if (k === "--upload") a.upload = v() as Args["upload"];
    else if (k === "--child") a.child = true;
    else if (k === "--url") a.url = v();
    else if (k === "--checksum") a.checksum = v();
    else if (k === "--scratch") a.scratch = v();
    else if (k === "--name") a.name = v();
    else throw new Error(`unknown argument ${k}`);
  }
  return a;
}

const log = (line: string) => process.stderr.write(`[bench-glance] ${line}\n`);

// ---------------------------------------------------------------- the image
interface BenchImage {
  dir: string;
  name: string;
  size: number;
  sha256: string;
  virtualSize: number;
}

async function ensureImage(base: string, sizeGiB: number, fraction: number): Promise<BenchImage> {
  const dir = join(base, "src");
  const name = `bench-${sizeGiB}g-${Math.round(fraction * 100)}.qcow2`;
  const meta = join(dir, `${name}.json`);
  if (existsSync(meta) && existsSync(join(dir, name))) return JSON.parse(readFileSync(meta, "utf8")) as BenchImage;
  mkdirSync(dir, { recursive: true });
  log(`generating ${name}: ${sizeGiB} GiB virtual, ${Math.round(fraction * 100)}% random data`);
  const raw = join(dir, "gen.raw");
  writeRandomRaw(raw, Math.round(sizeGiB * GiB), fraction);
  await run("qemu-img", ["convert", "-f", "raw", "-O", "qcow2", raw, join(dir, name)]);
  rmSync(raw, { force: true });
  const h = createHash("sha256");
  for await (const c of createReadStream(join(dir, name), { highWaterMark: 4 * MiB })) h.update(c as Buffer);
  const img: BenchImage = { dir, name, size: (await stat(join(dir, name))).size, sha256: h.digest("hex"), virtualSize: Math.round(sizeGiB * GiB) };
  writeFileSync(meta, JSON.stringify(img, null, 2));
  return img;
}

// ---------------------------------------------------------------- processes
interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
  maxRssKiB: number;
}

/** Runs argv under GNU time (for the max RSS of the process and what it waited for). */
function run(cmd: string, args: string[], env: NodeJS.ProcessEnv = process.env, timed = false): Promise<RunResult> {
  return new Promise((resolveRun, reject) => {
    const rssFile = timed ? join(process.env.TMPDIR ?? "/tmp", `iy-bench-rss-${process.pid}-${Date.now()}`) : "";
    const argv = timed ? ["-f", "%M", "-o", rssFile, cmd, ...args] : args;
    const child = spawn(timed ? "/usr/bin/time" : cmd, argv, { env, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d));
    child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d.length + stderr.length < 65536 ? d : ""));
    child.on("error", reject);
    child.on("close", (code) => {
      let maxRssKiB = 0;
      if (timed) {
        try {
          maxRssKiB = Number(readFileSync(rssFile, "utf8").trim().split("\n").pop()) || 0;
        } catch {
          /* time wrote nothing */
        }
        rmSync(rssFile, { force: true });
      }
      const r = { code: code ?? -1, stdout, stderr, maxRssKiB };
      if (r.code !== 0) reject(new Error(`${cmd} ${args.join(" ")} failed (${r.code}): ${stderr.slice(-2000)}`));
      else resolveRun(r);
    });
  });
}

/** Samples the bytes allocated under a directory (blocks × 512, so sparse holes are free). */
function scratchSampler(dir: string, intervalMs = 50): { stop(): Promise<number> } {
  let peak = 0;
  let busy = false;
  const walk = async (d: string): Promise<number> => {
    let total = 0;
    let entries;
    try {
      entries = await readdir(d, { withFileTypes: true });
    } catch {
      return 0;
    }
    for (const e of entries) {
      const p = join(d, e.name);
      if (e.isDirectory()) total += await walk(p);
      else if (e.isFile()) total += await stat(p).then((s) => s.blocks * 512, () => 0);
    }
    return total;
  };
  const sample = async () => {
    if (busy) return;
    busy = true;
    try {
      peak = Math.max(peak, await walk(dir));
    } finally {
      busy = false;
    }
  };
  const t = setInterval(() => void sample(), intervalMs);
  return {
    async stop() {
      clearInterval(t);
      while (busy) await new Promise((r) => setTimeout(r, 5));
      await sample();
      return peak;
    },
  };
}

// ---------------------------------------------------------------- Glance
interface Cloud {
  env: NodeJS.ProcessEnv;
}

/** OS_* variables of the demo user: from the environment, or from the Keystone + Glance test bed. */
async function glanceCloud(): Promise<Cloud> {
  if (process.env.OS_AUTH_URL && process.env.OS_USERNAME) return { env: { ...process.env } };
  let tb: Record<string, unknown>;
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const mod = require("../test/testbed/glance") as { loadGlanceTestbed?: () => unknown };
    tb = (mod.loadGlanceTestbed?.() ?? {}) as Record<string, unknown>;
  } catch (e) {
    throw new Error(`no OS_* variables and no Keystone + Glance test bed (${(e as Error).message}); start it or use --upload none`);
  }
  const osEnv = openstackEnv(tb);
  return { env: { ...process.env, ...osEnv } };
}

/** Maps the test bed's description onto the OS_* variables the openstack CLI reads. */
function openstackEnv(tb: Record<string, unknown>): Record<string, string> {
  const env = (tb.env ?? tb.osEnv ?? tb.demoEnv) as Record<string, string> | undefined;
  if (env?.OS_AUTH_URL) return env;
  const demo = (tb.demo ?? tb.user ?? {}) as Record<string, string>;
  const authUrl = (tb.authUrl ?? tb.keystoneUrl ?? tb.OS_AUTH_URL) as string | undefined;
  if (!authUrl) throw new Error(`cannot read the Glance test bed description: ${Object.keys(tb).join(", ")}`);
  return {
    OS_AUTH_URL: authUrl,
    OS_IDENTITY_API_VERSION: "3",
    OS_AUTH_TYPE: "password",
    OS_USERNAME: demo.username ?? "demo",
    OS_PASSWORD: demo.password ?? "",
    OS_PROJECT_NAME: demo.projectName ?? demo.project ?? "demo",
    OS_USER_DOMAIN_NAME: "Default",
    OS_PROJECT_DOMAIN_NAME: "Default",
    OS_REGION_NAME: (tb.region as string) ?? "RegionOne",
    OS_INTERFACE: "public",
    OS_IMAGE_API_VERSION: "2",
  };
}

async function deleteImage(cloud: Cloud, id: string): Promise<void> {
  await run("openstack", ["image", "delete", id], cloud.env).catch((e) => log(`could not delete image ${id}: ${(e as Error).message}`));
}

// ---------------------------------------------------------------- the two sides
interface Sample {
  wallS: number;
  rssMiB: number;
  scratchMiB: number;
  imageId?: string;
}

async function runBaseline(url: string, base: string, upload: Args["upload"], cloud: Cloud | undefined, n: number): Promise<Sample> {
  const work = await mkdtemp(join(base, "baseline-"));
  const sampler = scratchSampler(work);
  const t0 = performance.now();
  let rss = 0;
  let id: string | undefined;
  try {
    const qcow2 = join(work, "image.qcow2");
    const raw = join(work, "image.raw");
    rss = Math.max(rss, (await run("curl", ["-fsS", "-o", qcow2, url], process.env, true)).maxRssKiB);
    rss = Math.max(rss, (await run("qemu-img", ["convert", "-f", "qcow2", "-O", "raw", qcow2, raw], process.env, true)).maxRssKiB);
    if (upload === "glance" && cloud) {
      const r = await run(
        "openstack",
        ["image", "create", "--file", raw, "--disk-format", "raw", "--container-format", "bare", "--community", "-f", "value", "-c", "id", `bench-baseline-${process.pid}-${n}`],
        cloud.env,
        true,
      );
      rss = Math.max(rss, r.maxRssKiB);
      id = r.stdout.trim();
    }
    const wallS = (performance.now() - t0) / 1000;
    return { wallS, rssMiB: rss / 1024, scratchMiB: (await sampler.stop()) / MiB, imageId: id };
  } finally {
    await sampler.stop();
    await rm(work, { recursive: true, force: true });
  }
}

async function runImageyard(url: string, checksum: string, base: string, upload: Args["upload"], cloud: Cloud | undefined, n: number): Promise<Sample> {
  const scratch = await mkdtemp(join(base, "imageyard-"));
  const sampler = scratchSampler(scratch);
  const t0 = performance.now();
  try {
    const args = [__filename, "--child", "--url", url, "--checksum", checksum, "--scratch", scratch, "--upload", upload, "--name", `bench-imageyard-${process.pid}-${n}`];
    const r = await run(process.execPath, args, cloud?.env ?? process.env, true);
    const wallS = (performance.now() - t0) / 1000;
    const out = JSON.parse(r.stdout.trim().split("\n").pop() ?? "{}") as { id?: string; peakScratch?: number };
    return { wallS, rssMiB: r.maxRssKiB / 1024, scratchMiB: (await sampler.stop()) / MiB, imageId: out.id };
  } finally {
    await sampler.stop();
    await rm(scratch, { recursive: true, force: true });
  }
}

type Publisher = (prepared: unknown, opts: { name: string; visibility: string }) => Promise<{ id: string; osHashValue?: string }>;

/** The Glance side of the pipeline lives in provider/glance/publish.ts. */
function loadPublisher(): Publisher {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const mod = require("../provider/glance/publish") as Record<string, unknown>;
  const publish = mod.publishImage as ((...a: unknown[]) => Promise<Record<string, unknown>>) | undefined;
  if (typeof publish !== "function") throw new Error("provider/glance/publish has no publishImage");
  return async (prepared, opts) => {
    const res = await publish({ prepared, name: opts.name, visibility: opts.visibility, diskFormat: "raw", containerFormat: "bare" });
    const image = (res.image ?? res) as Record<string, unknown>;
    return { id: String(image.id), osHashValue: image.os_hash_value as string | undefined };
  };
}

/** The imageyard side, in its own process so its RSS is measured alone. */
async function child(a: Args): Promise<void> {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { prepareImage } = require("../provider/disk/prepare") as typeof import("../provider/disk/prepare");
  const prepared = await prepareImage({ url: a.url as string, checksum: a.checksum }, { diskFormat: "raw", scratchDir: a.scratch });
  try {
    let id: string | undefined;
    if (a.upload === "glance") {
      const res = await loadPublisher()(prepared, { name: a.name as string, visibility: "community" });
      id = res.id;
      const d = await prepared.digests();
      if (res.osHashValue && res.osHashValue !== d.sha512) throw new Error(`Glance os_hash_value ${res.osHashValue} differs from the local sha512 ${d.sha512}`);
    } else {
      for await (const _ of prepared.open()) void _;
      await prepared.digests();
    }
    process.stdout.write(`${JSON.stringify({ id, size: prepared.size, mode: prepared.mode, peakScratch: prepared.scratch.peakBytes })}\n`);
  } finally {
    await prepared.cleanup();
  }
}

// ---------------------------------------------------------------- main
function median(xs: number[]): number {
  const s = [...xs].sort((x, y) => x - y);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
}

async function startServer(dir: string, base: string): Promise<{ url: string; stop(): Promise<void> }> {
  const file = join(base, "server.json");
  rmSync(file, { force: true });
  const script = resolve(__dirname, "../test/testbed/diskimages.js");
  const child = spawn(process.execPath, [script, "serve"], { env: { ...process.env, IY_DISKIMAGES_SERVE_DIR: dir, IY_DISKIMAGES_FILE: file }, stdio: ["ignore", "ignore", "inherit"] });
  const deadline = Date.now() + 30_000;
  while (!existsSync(file)) {
    if (child.exitCode !== null) throw new Error("image server ended early");
    if (Date.now() > deadline) throw new Error("image server not ready after 30 s");
    await new Promise((r) => setTimeout(r, 50));
  }
  const tb = JSON.parse(readFileSync(file, "utf8")) as DiskImageTestbed;
  return {
    url: tb.url,
    stop: async () => {
      const done = new Promise((r) => child.once("exit", r));
      child.kill("SIGTERM");
      await done;
    },
  };
}

async function main(): Promise<void> {
  const a = parseArgs(process.argv.slice(2));
  if (a.child) return child(a);
  const base = join(stateDir(), "bench", "glance");
  mkdirSync(base, { recursive: true });
  const img = await ensureImage(base, a.sizeGiB, a.dataFraction);
  log(`image ${img.name}: ${(img.size / MiB).toFixed(0)} MiB qcow2, ${(img.virtualSize / MiB).toFixed(0)} MiB raw`);
  const server = await startServer(img.dir, base);
  const cloud = a.upload === "glance" ? await glanceCloud() : undefined;
  const url = `${server.url}/images/${img.name}`;
  const work = join(base, "work");
  mkdirSync(work, { recursive: true });
  const results: Record<"baseline" | "imageyard", Sample[]> = { baseline: [], imageyard: [] };
  try {
    for (let i = 0; i < a.runs; i++) {
      const order: Array<"baseline" | "imageyard"> = i % 2 === 0 ? ["baseline", "imageyard"] : ["imageyard", "baseline"];
      for (const side of order) {
        const s = side === "baseline" ? await runBaseline(url, work, a.upload, cloud, i) : await runImageyard(url, `sha256:${img.sha256}`, work, a.upload, cloud, i);
        results[side].push(s);
        log(`run ${i + 1}/${a.runs} ${side}: ${s.wallS.toFixed(2)} s, rss ${s.rssMiB.toFixed(0)} MiB, scratch ${s.scratchMiB.toFixed(0)} MiB${s.imageId ? `, image ${s.imageId}` : ""}`);
        if (cloud && s.imageId) await deleteImage(cloud, s.imageId);
      }
    }
  } finally {
    await server.stop();
  }
  const m = (side: "baseline" | "imageyard", k: keyof Omit<Sample, "imageId">) => median(results[side].map((s) => s[k] as number));
  const round = (x: number, d = 2) => Number(x.toFixed(d));
  const result = {
    case: a.upload === "glance" ? `qcow2-${a.sizeGiB}g-to-raw` : `qcow2-${a.sizeGiB}g-to-raw-no-upload`,
    imageyard_s: round(m("imageyard", "wallS")),
    baseline_s: round(m("baseline", "wallS")),
    speedup: round(m("baseline", "wallS") / m("imageyard", "wallS")),
    imageyard_rss_mib: round(m("imageyard", "rssMiB"), 0),
    baseline_rss_mib: round(m("baseline", "rssMiB"), 0),
    imageyard_scratch_mib: round(m("imageyard", "scratchMiB"), 0),
    baseline_scratch_mib: round(m("baseline", "scratchMiB"), 0),
    runs: a.runs,
    qcow2_mib: round(img.size / MiB, 0),
    raw_virtual_mib: round(img.virtualSize / MiB, 0),
  };
  process.stdout.write(`RESULT ${JSON.stringify(result)}\n`);
}

main().catch((e) => {
  process.stderr.write(`[bench-glance] ${(e as Error).stack ?? e}\n`);
  process.exit(1);
});
