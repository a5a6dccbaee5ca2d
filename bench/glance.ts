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
import { loadavg } from "node:os";
import { join, resolve } from "node:path";
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { writeRandomRaw, stateDir, type DiskImageTestbed } from "../test/testbed/diskimages";
import { glanceTestbedRunning, startGlanceTestbed, stopGlanceTestbed } from "../test/testbed/glance";

const GiB = 1024 ** 3;
const MiB = 1024 ** 2;

interface Args {
  runs: number;
  sizeGiB: number;
  dataFraction: number;
  upload: "glance" | "none";
  /** Run one side only (for trying the bench out). */
  only?: "baseline" | "imageyard";
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
    else if (k === "--only") a.only = v() as Args["only"];
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
  const img: BenchImage = {
    dir,
    name,
    size: (await stat(join(dir, name))).size,
    sha256: h.digest("hex"),
    virtualSize: Math.round(sizeGiB * GiB),
  };
  writeFileSync(meta, JSON.stringify(img, null, 2));
  return img;
}

// ---------------------------------------------------------------- processes
export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
  maxRssKiB: number;
  /** User + system CPU seconds of the process and what it waited for. */
  cpuS: number;
}

/** Runs argv under GNU time (for the max RSS of the process and what it waited for). */
export function run(cmd: string, args: string[], env: NodeJS.ProcessEnv = process.env, timed = false): Promise<RunResult> {
  return new Promise((resolveRun, reject) => {
    const rssFile = timed ? join(process.env.TMPDIR ?? "/tmp", `iy-bench-rss-${process.pid}-${Date.now()}`) : "";
    const argv = timed ? ["-f", "%M %U %S", "-o", rssFile, cmd, ...args] : args;
    const child = spawn(timed ? "/usr/bin/time" : cmd, argv, { env, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d));
    child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d.length + stderr.length < 65536 ? d : ""));
    child.on("error", reject);
    child.on("close", (code) => {
      let maxRssKiB = 0;
      let cpuS = 0;
      if (timed) {
        try {
          const [rss, user, sys] = (readFileSync(rssFile, "utf8").trim().split("\n").pop() ?? "").split(" ").map(Number);
          maxRssKiB = rss || 0;
          cpuS = (user || 0) + (sys || 0);
        } catch {
          /* time wrote nothing */
        }
        rmSync(rssFile, { force: true });
      }
      const r = { code: code ?? -1, stdout, stderr, maxRssKiB, cpuS };
      if (r.code !== 0) reject(new Error(`${cmd} ${args.join(" ")} failed (${r.code}): ${stderr.slice(-2000)}`));
      else resolveRun(r);
    });
  });
}

/** Samples the bytes allocated under a directory (blocks × 512, so sparse holes are free). */
export function scratchSampler(dir: string, intervalMs = 50): { stop(): Promise<number> } {
  let peak = 0;
  let busy = false;
  const walk = async (d: string): Promise<number> => {
    let total = 0;
    let entries: import("node:fs").Dirent[];
    try {
      entries = await readdir(d, { withFileTypes: true });
    } catch {
      return 0;
    }
    for (const e of entries) {
      const p = join(d, e.name);
      if (e.isDirectory()) total += await walk(p);
      else if (e.isFile())
        total += await stat(p).then(
          (s) => s.blocks * 512,
          () => 0,
        );
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
export interface Cloud {
  env: NodeJS.ProcessEnv;
  /** Stops the test bed when this bench started it. */
  stop(): Promise<void>;
}

/** OS_* variables of the demo user: from the environment, or from the Keystone + Glance test bed. */
export async function glanceCloud(base: string): Promise<Cloud> {
  if (process.env.OS_AUTH_URL && process.env.OS_USERNAME) return { env: { ...process.env }, stop: async () => {} };
  // A Keystone + Glance of the bench's own: the tests' one caps images at 64 MiB, and tests
  // running meanwhile must not see its limits change.
  process.env.IY_STATE_DIR = join(base, "state");
  process.env.IY_GLANCE_SIZE_CAP ??= String(64 * GiB);
  // glance-api serves from one process as in the tests, unless IY_GLANCE_WORKERS asks for worker
  // processes as a deployment runs them (then uploads in flight at once are served side by side).
  const wasRunning = glanceTestbedRunning();
  log(
    `${wasRunning ? "confirming" : "starting"} the Keystone + Glance test bed (glance-api workers ${process.env.IY_GLANCE_WORKERS ?? 0})`,
  );
  // glance.sh is idempotent and restarts glance-api when its config (workers) changed.
  const tb = await startGlanceTestbed();
  const demo = tb.accounts.demo;
  const env: Record<string, string> = {
    OS_AUTH_URL: tb.authUrl,
    OS_IDENTITY_API_VERSION: "3",
    OS_AUTH_TYPE: "password",
    OS_USERNAME: demo.username,
    OS_PASSWORD: demo.password,
    OS_PROJECT_NAME: demo.projectName,
    OS_USER_DOMAIN_NAME: demo.userDomainName,
    OS_PROJECT_DOMAIN_NAME: demo.projectDomainName,
    OS_REGION_NAME: tb.region,
    OS_INTERFACE: tb.interface,
    OS_IMAGE_API_VERSION: "2",
  };
  return {
    env: { ...process.env, ...env },
    stop: async () => (wasRunning || process.env.IY_KEEP_TESTBED === "1" ? undefined : stopGlanceTestbed()),
  };
}

export async function deleteImage(cloud: Cloud, id: string): Promise<void> {
  await run("openstack", ["image", "delete", id], cloud.env).catch((e) => log(`could not delete image ${id}: ${(e as Error).message}`));
}

// ---------------------------------------------------------------- the two sides
interface Sample {
  wallS: number;
  /** CPU seconds of the client side (the Glance and image servers are shared and not counted). */
  cpuS: number;
  rssMiB: number;
  scratchMiB: number;
  imageId?: string;
}

async function runBaseline(url: string, base: string, upload: Args["upload"], cloud: Cloud | undefined, n: number): Promise<Sample> {
  const work = await mkdtemp(join(base, "baseline-"));
  const sampler = scratchSampler(work);
  const t0 = performance.now();
  let rss = 0;
  let cpu = 0;
  let id: string | undefined;
  const step = (r: RunResult) => {
    rss = Math.max(rss, r.maxRssKiB);
    cpu += r.cpuS;
    return r;
  };
  try {
    const qcow2 = join(work, "image.qcow2");
    const raw = join(work, "image.raw");
    step(await run("curl", ["-fsS", "-o", qcow2, url], process.env, true));
    log(`  baseline: curl done at ${((performance.now() - t0) / 1000).toFixed(2)} s`);
    step(await run("qemu-img", ["convert", "-f", "qcow2", "-O", "raw", qcow2, raw], process.env, true));
    log(`  baseline: qemu-img convert done at ${((performance.now() - t0) / 1000).toFixed(2)} s`);
    if (upload === "glance" && cloud) {
      const r = step(
        await run(
          "openstack",
          [
            "image",
            "create",
            "--file",
            raw,
            "--disk-format",
            "raw",
            "--container-format",
            "bare",
            "--community",
            "-f",
            "value",
            "-c",
            "id",
            `bench-baseline-${process.pid}-${n}`,
          ],
          cloud.env,
          true,
        ),
      );
      id = r.stdout.trim();
    }
    const wallS = (performance.now() - t0) / 1000;
    return { wallS, cpuS: cpu, rssMiB: rss / 1024, scratchMiB: (await sampler.stop()) / MiB, imageId: id };
  } finally {
    await sampler.stop();
    await rm(work, { recursive: true, force: true });
  }
}

async function runImageyard(
  url: string,
  checksum: string,
  base: string,
  upload: Args["upload"],
  cloud: Cloud | undefined,
  n: number,
): Promise<Sample> {
  const scratch = await mkdtemp(join(base, "imageyard-"));
  const sampler = scratchSampler(scratch);
  const t0 = performance.now();
  try {
    const args = [
      __filename,
      "--child",
      "--url",
      url,
      "--checksum",
      checksum,
      "--scratch",
      scratch,
      "--upload",
      upload,
      "--name",
      `bench-imageyard-${process.pid}-${n}`,
    ];
    const r = await run(process.execPath, args, cloud?.env ?? process.env, true);
    process.stderr.write(r.stderr);
    const wallS = (performance.now() - t0) / 1000;
    const out = JSON.parse(r.stdout.trim().split("\n").pop() ?? "{}") as { id?: string; peakScratch?: number };
    return { wallS, cpuS: r.cpuS, rssMiB: r.maxRssKiB / 1024, scratchMiB: (await sampler.stop()) / MiB, imageId: out.id };
  } finally {
    await sampler.stop();
    await rm(scratch, { recursive: true, force: true });
  }
}

/** The imageyard side, in its own process so its RSS is measured alone. */
async function child(a: Args): Promise<void> {
  const source = { url: a.url as string, checksum: a.checksum };
  if (a.upload === "none") {
    const { prepareImage } = require("../provider/disk/prepare") as typeof import("../provider/disk/prepare");
    const prepared = await prepareImage(source, { diskFormat: "raw", scratchDir: a.scratch });
    try {
      for await (const _ of prepared.open()) void _;
      await prepared.digests();
      process.stdout.write(`${JSON.stringify({ size: prepared.size, mode: prepared.mode })}\n`);
    } finally {
      await prepared.cleanup();
    }
    return;
  }
  // The whole pipeline as the CommunityImage resource runs it: auth from OS_*, then publishImage
  // (prepareImage → create → upload → wait active → compare Glance's sha512 with ours).
  const { authFromEnv } = require("../provider/glance/clouds") as typeof import("../provider/glance/clouds");
  const { KeystoneSession } = require("../provider/glance/keystone") as typeof import("../provider/glance/keystone");
  const { glanceClient } = require("../provider/glance/images") as typeof import("../provider/glance/images");
  const { publishImage } = require("../provider/glance/publish") as typeof import("../provider/glance/publish");
  /* eslint-enable @typescript-eslint/no-require-imports */
  const t0 = performance.now();
  const elapsed = () => `${((performance.now() - t0) / 1000).toFixed(2)} s`;
  const session = new KeystoneSession(authFromEnv(process.env) as import("../provider/glance/keystone").AuthOptions);
  const glance = await glanceClient(session);
  const res = await publishImage(
    {
      name: a.name as string,
      source,
      diskFormat: "raw",
      containerFormat: "bare",
      importMethod: "upload",
      visibility: "community",
      minDisk: 0,
      minRam: 0,
      properties: {},
      tags: [],
      protected: false,
      hidden: false,
      active: true,
      scratchDir: a.scratch,
    },
    {
      glance,
      log: (line) => process.stderr.write(`[bench-glance]   imageyard ${elapsed()}: ${line}\n`),
      onProgress: (e) => {
        if (e.done || e.message)
          process.stderr.write(`[bench-glance]   imageyard ${elapsed()}: ${e.phase}${e.done ? " done" : ""} ${e.message ?? ""}\n`);
      },
    },
  );
  if (res.verified !== "sha512") throw new Error(`Glance's copy was verified by ${res.verified}, expected sha512`);
  process.stdout.write(`${JSON.stringify({ id: res.image.id, size: res.uploadedBytes, verified: res.verified })}\n`);
}

// ---------------------------------------------------------------- main
export function median(xs: number[]): number {
  const s = [...xs].sort((x, y) => x - y);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
}

export async function startServer(dir: string, base: string): Promise<{ url: string; stop(): Promise<void> }> {
  const file = join(base, "server.json");
  rmSync(file, { force: true });
  const script = resolve(__dirname, "../test/testbed/diskimages.js");
  const child = spawn(process.execPath, [script, "serve"], {
    env: { ...process.env, IY_DISKIMAGES_SERVE_DIR: dir, IY_DISKIMAGES_FILE: file },
    stdio: ["ignore", "ignore", "inherit"],
  });
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
  const cloud = a.upload === "glance" ? await glanceCloud(base) : undefined;
  const url = `${server.url}/images/${img.name}`;
  const work = join(base, "work");
  mkdirSync(work, { recursive: true });
  const results: Record<"baseline" | "imageyard", Sample[]> = { baseline: [], imageyard: [] };
  try {
    for (let i = 0; i < a.runs; i++) {
      const order: Array<"baseline" | "imageyard"> = i % 2 === 0 ? ["baseline", "imageyard"] : ["imageyard", "baseline"];
      for (const side of order.filter((x) => a.only === undefined || x === a.only)) {
        const s =
          side === "baseline"
            ? await runBaseline(url, work, a.upload, cloud, i)
            : await runImageyard(url, `sha256:${img.sha256}`, work, a.upload, cloud, i);
        results[side].push(s);
        log(
          `run ${i + 1}/${a.runs} ${side}: ${s.wallS.toFixed(2)} s, cpu ${s.cpuS.toFixed(1)} s, rss ${s.rssMiB.toFixed(0)} MiB, scratch ${s.scratchMiB.toFixed(0)} MiB${s.imageId ? `, image ${s.imageId}` : ""}`,
        );
        if (cloud && s.imageId) await deleteImage(cloud, s.imageId);
      }
    }
  } finally {
    await server.stop();
    await cloud?.stop();
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
    imageyard_cpu_s: round(m("imageyard", "cpuS"), 1),
    baseline_cpu_s: round(m("baseline", "cpuS"), 1),
    load_avg: round(loadavg()[0] ?? 0, 1),
    runs: a.runs,
    qcow2_mib: round(img.size / MiB, 0),
    raw_virtual_mib: round(img.virtualSize / MiB, 0),
  };
  process.stdout.write(`RESULT ${JSON.stringify(result)}\n`);
}

// bench/glanceCatalog.ts imports the helpers above; only a direct run benches.
if (require.main === module) {
  main().catch((e) => {
    process.stderr.write(`[bench-glance] ${(e as Error).stack ?? e}\n`);
    process.exit(1);
  });
}
