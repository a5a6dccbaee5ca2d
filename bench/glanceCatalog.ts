// Bench: a catalog of N images × V versions (openstack-image-manager's YAML) into Glance by
// `pulumi up` of examples/openstack-image-catalog (the real CLI and engine, ImageCatalog →
// CommunityImage, qcow2 → raw), against the azimuth-ops sequence run image after image:
//   curl -o image.qcow2 URL && qemu-img convert -O raw image.qcow2 image.raw &&
//   openstack image create --file image.raw --disk-format raw …
// Both sides download the same generated qcow2s (distinct random data each) from one local HTTP
// server and upload to the same real Keystone + Glance. Per side and run: wall time, peak scratch
// (allocated blocks under the side's work directory, every 50 ms), peak RSS (the sum over every
// process the side runs: pulumi, language host, provider; curl, qemu-img, openstack), the load
// average through the run, and for imageyard the most uploads in flight at once (scratch
// directories), so peak scratch can be held against one image's converted size per upload.
// Medians over --runs, sides alternating. Ends with RESULT {…} lines.
//
//   scripts/bench-glance.sh catalog [--images 4] [--versions 2] [--size-mib 512] [--data-fraction 0.5] [--runs 3]
import { createHash } from "node:crypto";
import { createReadStream, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { mkdtemp, rm, stat } from "node:fs/promises";
import { loadavg } from "node:os";
import { join } from "node:path";
import { stringify } from "yaml";
import { projectStack, repoRoot } from "../test/e2e/harness";
import { stateDir, writeRandomRaw } from "../test/testbed/diskimages";
import { deleteImage, glanceCloud, median, run, scratchSampler, startServer, type Cloud } from "./glance";
import { resultLine, round } from "./lib";

const MiB = 1024 ** 2;
const log = (line: string) => process.stderr.write(`[bench-glance-catalog] ${line}\n`);

interface Args {
  images: number;
  versions: number;
  sizeMiB: number;
  dataFraction: number;
  runs: number;
  only?: "baseline" | "imageyard";
}

function parseArgs(argv: string[]): Args {
  const a: Args = { images: 4, versions: 2, sizeMiB: 512, dataFraction: 0.5, runs: 3 };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i];
    const v = argv[++i];
    if (v === undefined) throw new Error(`${k} needs a value`);
    if (k === "--images") a.images = Number(v);
    else if (k === "--versions") a.versions = Number(v);
    else if (k === "--size-mib") a.sizeMiB = Number(v);
    else if (k === "--data-fraction") a.dataFraction = Number(v);
    else if (k === "--runs") a.runs = Number(v);
    else if (k === "--only") a.only = v as Args["only"];
    else throw new Error(`unknown argument ${k}`);
  }
  return a;
}

// ---------------------------------------------------------------- the images
interface CatalogFile {
  image: number;
  version: number;
  file: string;
  size: number;
  sha256: string;
}

interface CatalogSet {
  dir: string;
  files: CatalogFile[];
  /** Allocated bytes of one image converted to raw (what qemu-img convert writes), the largest. */
  convertedBytes: number;
  virtualBytes: number;
}

async function sha256Of(path: string): Promise<string> {
  const h = createHash("sha256");
  for await (const c of createReadStream(path, { highWaterMark: 4 * MiB })) h.update(c as Buffer);
  return h.digest("hex");
}

/** images × versions qcow2s of distinct random data, cached between runs of the bench. */
async function ensureImages(base: string, a: Args): Promise<CatalogSet> {
  const dir = join(base, `src-${a.sizeMiB}m-${Math.round(a.dataFraction * 100)}`);
  const meta = join(dir, `set-${a.images}x${a.versions}.json`);
  if (existsSync(meta)) return JSON.parse(readFileSync(meta, "utf8")) as CatalogSet;
  mkdirSync(dir, { recursive: true });
  const files: CatalogFile[] = [];
  let convertedBytes = 0;
  for (let i = 1; i <= a.images; i++) {
    for (let v = 1; v <= a.versions; v++) {
      const file = `img${i}-v${v}.qcow2`;
      log(`generating ${file}: ${a.sizeMiB} MiB virtual, ${Math.round(a.dataFraction * 100)}% random data`);
      const raw = join(dir, "gen.raw");
      writeRandomRaw(raw, a.sizeMiB * MiB, a.dataFraction);
      convertedBytes = Math.max(convertedBytes, statSync(raw).blocks * 512);
      await run("qemu-img", ["convert", "-f", "raw", "-O", "qcow2", raw, join(dir, file)]);
      rmSync(raw, { force: true });
      files.push({ image: i, version: v, file, size: (await stat(join(dir, file))).size, sha256: await sha256Of(join(dir, file)) });
    }
  }
  const set: CatalogSet = { dir, files, convertedBytes, virtualBytes: a.sizeMiB * MiB };
  writeFileSync(meta, JSON.stringify(set, null, 2));
  return set;
}

// ---------------------------------------------------------------- measuring
/** Peak of the summed RSS of every descendant of this process (but `exclude`'s), every 100 ms. */
function treeRssSampler(exclude: number[]): { stop(): number } {
  let peak = 0;
  const sample = () => {
    const parent = new Map<number, number>();
    const rss = new Map<number, number>();
    for (const name of readdirSync("/proc")) {
      const pid = Number(name);
      if (!Number.isInteger(pid)) continue;
      try {
        const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
        const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
        parent.set(pid, Number(fields[1]));
        rss.set(pid, Number(fields[21]) * 4096);
      } catch {
        /* gone meanwhile */
      }
    }
    const ours = (pid: number): boolean => {
      for (let p = pid, hops = 0; p > 1 && hops < 64; p = parent.get(p) ?? 0, hops++) {
        if (exclude.includes(p)) return false;
        if (p === process.pid) return pid !== process.pid;
      }
      return false;
    };
    let total = 0;
    for (const [pid, bytes] of rss) if (ours(pid)) total += bytes;
    peak = Math.max(peak, total);
  };
  const t = setInterval(sample, 100);
  return {
    stop() {
      clearInterval(t);
      sample();
      return peak;
    },
  };
}

/** 1-minute load average every 2 s; most uploads in flight (scratch "op-*" directories) every 50 ms. */
function loadSampler(scratch?: string): { stop(): { loads: number[]; maxConcurrent: number } } {
  const loads = [loadavg()[0] ?? 0];
  let maxConcurrent = 0;
  const l = setInterval(() => loads.push(loadavg()[0] ?? 0), 2000);
  const c = scratch
    ? setInterval(() => {
        try {
          maxConcurrent = Math.max(maxConcurrent, readdirSync(scratch).filter((n) => n.startsWith("op-")).length);
        } catch {
          /* not there yet */
        }
      }, 50)
    : undefined;
  return {
    stop() {
      clearInterval(l);
      if (c) clearInterval(c);
      loads.push(loadavg()[0] ?? 0);
      return { loads, maxConcurrent };
    },
  };
}

interface Sample {
  wallS: number;
  rssMiB: number;
  scratchMiB: number;
  loadStart: number;
  loadEnd: number;
  loadMedian: number;
  maxConcurrent: number;
}

// ---------------------------------------------------------------- the two sides
async function runBaseline(set: CatalogSet, url: string, work: string, cloud: Cloud, tag: string, exclude: number[]): Promise<Sample> {
  const dir = await mkdtemp(join(work, "baseline-"));
  const scratch = scratchSampler(dir);
  const rss = treeRssSampler(exclude);
  const load = loadSampler();
  const ids: string[] = [];
  const t0 = performance.now();
  try {
    // Image after image, as azimuth-ops' playbook loops over its community images.
    for (const f of set.files) {
      const name = `bench-base-${tag}-img${f.image}-v${f.version}`;
      const qcow2 = join(dir, "image.qcow2");
      const raw = join(dir, "image.raw");
      await run("curl", ["-fsS", "-o", qcow2, `${url}/images/${f.file}`]);
      await run("qemu-img", ["convert", "-f", "qcow2", "-O", "raw", qcow2, raw]);
      const r = await run(
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
          "--private",
          "-f",
          "value",
          "-c",
          "id",
          name,
        ],
        cloud.env,
      );
      ids.push(r.stdout.trim());
      await rm(qcow2, { force: true });
      await rm(raw, { force: true });
    }
    return sample(performance.now() - t0, rss.stop(), await scratch.stop(), load.stop());
  } finally {
    rss.stop();
    await scratch.stop();
    load.stop();
    await rm(dir, { recursive: true, force: true });
    for (const id of ids) await deleteImage(cloud, id);
    log(`  baseline ${tag}: deleted ${ids.length} images`);
  }
}

function sample(ms: number, rssBytes: number, scratchBytes: number, l: { loads: number[]; maxConcurrent: number }): Sample {
  return {
    wallS: ms / 1000,
    rssMiB: rssBytes / MiB,
    scratchMiB: scratchBytes / MiB,
    loadStart: l.loads[0] ?? 0,
    loadEnd: l.loads[l.loads.length - 1] ?? 0,
    loadMedian: median(l.loads),
    maxConcurrent: l.maxConcurrent,
  };
}

function catalogYaml(set: CatalogSet, url: string, tag: string): string {
  const images = [...new Set(set.files.map((f) => f.image))].map((i) => ({
    name: `bench-${tag} Image ${i}`,
    format: "qcow2",
    visibility: "private",
    multi: true,
    versions: set.files
      .filter((f) => f.image === i)
      .map((f) => ({ version: String(f.version), url: `${url}/images/${f.file}`, checksum: `sha256:${f.sha256}` })),
  }));
  return stringify({ images });
}

async function runImageyard(set: CatalogSet, url: string, work: string, cloud: Cloud, tag: string, exclude: number[]): Promise<Sample> {
  const dir = await mkdtemp(join(work, "imageyard-"));
  const scratchDir = join(dir, "scratch");
  mkdirSync(scratchDir);
  const catalog = join(dir, "catalog.yml");
  writeFileSync(catalog, catalogYaml(set, url, tag));
  const env = cloud.env;
  const ps = await projectStack(join(repoRoot, "examples", "openstack-image-catalog", "Pulumi.yaml"), "bench", {
    authUrl: { value: env.OS_AUTH_URL as string },
    username: { value: env.OS_USERNAME as string },
    password: { value: env.OS_PASSWORD as string, secret: true },
    projectName: { value: env.OS_PROJECT_NAME as string },
    region: { value: env.OS_REGION_NAME as string },
    catalog: { value: catalog },
    diskFormat: { value: "raw" },
    scratchDir: { value: scratchDir },
  });
  const out: string[] = [];
  try {
    const scratch = scratchSampler(scratchDir);
    const rss = treeRssSampler(exclude);
    const load = loadSampler(scratchDir);
    const t0 = performance.now();
    const res = await ps.stack.up({ onOutput: (l) => out.push(l) });
    const ms = performance.now() - t0;
    const s = sample(ms, rss.stop(), await scratch.stop(), load.stop());
    const created = res.summary.resourceChanges?.create ?? 0;
    if (res.summary.result !== "succeeded") throw new Error(`pulumi up ${res.summary.result}:\n${out.join("").slice(-3000)}`);
    log(`  imageyard ${tag}: pulumi up created ${created} resources`);
    return s;
  } catch (e) {
    process.stderr.write(out.join("").slice(-4000));
    throw e;
  } finally {
    await ps.stack.destroy({ onOutput: () => {} }).catch((e) => log(`destroy failed: ${(e as Error).message}`));
    ps.cleanup();
    await rm(dir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------- main
async function main(): Promise<void> {
  const a = parseArgs(process.argv.slice(2));
  const base = join(stateDir(), "bench", "glance");
  mkdirSync(base, { recursive: true });
  const set = await ensureImages(base, a);
  const total = set.files.reduce((n, f) => n + f.size, 0);
  log(
    `${set.files.length} qcow2s (${a.images} images × ${a.versions} versions), ${(total / MiB).toFixed(0)} MiB in all; one converted to raw: ${(set.convertedBytes / MiB).toFixed(0)} MiB allocated, ${a.sizeMiB} MiB virtual`,
  );
  const server = await startServer(set.dir, base);
  const serverPid = Number(JSON.parse(readFileSync(join(base, "server.json"), "utf8")).pid);
  const cloud = await glanceCloud(base);
  const work = join(base, "work");
  mkdirSync(work, { recursive: true });
  const results: Record<"baseline" | "imageyard", Sample[]> = { baseline: [], imageyard: [] };
  const perRun = (side: string, i: number, s: Sample) =>
    resultLine({
      case: `catalog-${a.images}x${a.versions}-${a.sizeMiB}m-run`,
      side,
      run: i + 1,
      wall_s: round(s.wallS, 2),
      peak_rss_mib: round(s.rssMiB, 0),
      peak_scratch_mib: round(s.scratchMiB, 0),
      max_concurrent_uploads: s.maxConcurrent,
      load1_start: round(s.loadStart, 1),
      load1_median: round(s.loadMedian, 1),
      load1_end: round(s.loadEnd, 1),
    });
  try {
    for (let i = 0; i < a.runs; i++) {
      const order: Array<"baseline" | "imageyard"> = i % 2 === 0 ? ["imageyard", "baseline"] : ["baseline", "imageyard"];
      for (const side of order.filter((x) => a.only === undefined || x === a.only)) {
        const tag = `${process.pid}-${i}`;
        const s =
          side === "baseline"
            ? await runBaseline(set, server.url, work, cloud, tag, [serverPid])
            : await runImageyard(set, server.url, work, cloud, tag, [serverPid]);
        results[side].push(s);
        process.stdout.write(`${perRun(side, i, s)}\n`);
      }
    }
  } finally {
    await server.stop();
    await cloud.stop();
  }
  const m = (side: "baseline" | "imageyard", k: keyof Sample) => median(results[side].map((s) => s[k]));
  const concurrent = Math.max(1, ...results.imageyard.map((s) => s.maxConcurrent));
  // One image converted to raw is a file of the virtual size (sparse: convertedBytes allocated).
  const bound = (concurrent * set.virtualBytes) / MiB;
  const peakScratch = Math.max(0, ...results.imageyard.map((s) => s.scratchMiB));
  const loads = [...results.imageyard, ...results.baseline].flatMap((s) => [s.loadStart, s.loadEnd]);
  process.stdout.write(
    `${resultLine({
      case: `catalog-${a.images}x${a.versions}-${a.sizeMiB}m-qcow2-to-raw`,
      imageyard_s: round(m("imageyard", "wallS"), 2),
      baseline_s: round(m("baseline", "wallS"), 2),
      speedup: round(m("baseline", "wallS") / m("imageyard", "wallS"), 2),
      imageyard_peak_scratch_mib: round(m("imageyard", "scratchMiB"), 0),
      baseline_peak_scratch_mib: round(m("baseline", "scratchMiB"), 0),
      imageyard_max_scratch_mib: round(peakScratch, 0),
      max_concurrent_uploads: concurrent,
      scratch_bound_mib: round(bound, 0),
      scratch_within_bound: peakScratch <= bound,
      converted_image_mib: round(set.virtualBytes / MiB, 0),
      converted_allocated_mib: round(set.convertedBytes / MiB, 0),
      imageyard_scratch_per_upload_mib: round(peakScratch / concurrent, 0),
      imageyard_peak_rss_mib: round(m("imageyard", "rssMiB"), 0),
      baseline_peak_rss_mib: round(m("baseline", "rssMiB"), 0),
      load1_median: round(median(loads), 1),
      load1_min: round(Math.min(...loads), 1),
      load1_max: round(Math.max(...loads), 1),
      runs: a.runs,
      qcow2_total_mib: round(total / MiB, 0),
    })}\n`,
  );
}

main().catch((e) => {
  process.stderr.write(`[bench-glance-catalog] ${(e as Error).stack ?? e}\n`);
  process.exit(1);
});
