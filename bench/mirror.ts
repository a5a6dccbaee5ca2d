// Mirror bench: `imageyard copy` against `skopeo copy` on the same registries in one run.
// Source: an anonymous registry of the bench's own (data kept under $IY_STATE_DIR/registry/
// bench-upstream, so seeded images persist between bench runs and no test traffic lands on it);
// target: an htpasswd registry, wiped and restarted before every fresh run of either tool. skopeo runs with an empty blob-info
// cache (private mount namespace), so it cannot turn copies into cross-repo mounts.
//
//   scripts/bench.sh mirror [1g-8layers 4g-8layers 20x1m multiarch noop startup]
// (`startup` times `--version` of each tool: the fixed cost inside every other number.)
//
// Environment (sizes are per layer; "M"/"G" suffixes work):
//   RUNS=3                          runs per tool and case (medians reported)
//   IY_BENCH_1G_LAYER=128M          1g-8layers and noop: 8 layers of this
//   IY_BENCH_4G_LAYER=512M          4g-8layers: 8 layers of this (4 GiB: ~1 min to generate once,
//                                   4 GiB in the source registry, 4 GiB written per fresh run)
//   IY_BENCH_SMALL_LAYERS=20        20x1m: this many layers of IY_BENCH_SMALL_LAYER (1M)
//   IY_BENCH_MULTI_LAYER=4M         multiarch: amd64+arm64, 3 layers each (1 shared)
//   IY_BENCH_IMAGEYARD="node dist/cli/imageyard.js"   the imageyard command
//   IY_BENCH_TARGET=http            "tls": the target serves HTTPS (test-bed CA, --dest-cert-dir)
// Generated images are seeded, cached under $IY_STATE_DIR/images and pushed to upstream once.
// Ends with one `RESULT {…}` line per case; speedup = skopeo_s / imageyard_s; *_cpu_s are median
// user+system seconds, load1_start and load1 the 1-minute load average at the case's start and end.
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { loadavg } from "node:os";
import { join, resolve } from "node:path";
import { cachedImageLayout, digestOf, dockerRef, parseSize, seedImage, skopeoFlags, type ImageSpec } from "../test/testbed/images";
import { defaultStateDir, requestLogMark, startRegistry, type RegistryEndpoint, type RegistryHandle } from "../test/testbed/registry";
import { formatTable, median, resultLine, round, settledCount, timeCommand, type TimedRun } from "./lib";

type Tool = "imageyard" | "skopeo";

interface BenchCase {
  name: string;
  spec: ImageSpec;
  /** Wipe and restart the target before each timed copy. */
  fresh: boolean;
  all: boolean;
  /** Only start the tool (`--version`), no copy. */
  startupOnly?: boolean;
}

interface Sample extends TimedRun {
  requests: number;
  sourceRequests: number;
  digestOk: boolean;
}

const env = (k: string, d: string) => process.env[k] ?? d;

function benchCases(): Record<string, BenchCase> {
  const big = { layers: 8, layerSize: env("IY_BENCH_1G_LAYER", "128M"), seed: "bench-1g", gzipLevel: 0 };
  return {
    "1g-8layers": { name: "1g-8layers", spec: big, fresh: true, all: false },
    "4g-8layers": {
      name: "4g-8layers",
      spec: { layers: 8, layerSize: env("IY_BENCH_4G_LAYER", "512M"), seed: "bench-4g", gzipLevel: 0 },
      fresh: true,
      all: false,
    },
    "20x1m": {
      name: "20x1m",
      spec: { layers: Number(env("IY_BENCH_SMALL_LAYERS", "20")), layerSize: env("IY_BENCH_SMALL_LAYER", "1M"), seed: "bench-small" },
      fresh: true,
      all: false,
    },
    multiarch: {
      name: "multiarch",
      spec: {
        layers: 3,
        layerSize: env("IY_BENCH_MULTI_LAYER", "4M"),
        platforms: ["linux/amd64", "linux/arm64"],
        sharedLayers: 1,
        seed: "bench-multi",
      },
      fresh: true,
      all: true,
    },
    noop: { name: "noop", spec: big, fresh: false, all: false },
    startup: { name: "startup", spec: {}, fresh: false, all: false, startupOnly: true },
  };
}

function repoOf(c: BenchCase): string {
  // noop reuses the 1 GiB image under its own repository, so fresh cases never pre-fill it.
  return `bench/${c.name}`;
}

function imageyardCommand(): string[] | undefined {
  const custom = process.env.IY_BENCH_IMAGEYARD;
  if (custom) return custom.split(" ").filter(Boolean);
  const cli = resolve(__dirname, "..", "cli", "imageyard.js");
  return existsSync(cli) ? [process.execPath, cli] : undefined;
}

function copyArgs(tool: Tool, src: RegistryEndpoint, dst: RegistryEndpoint, ref: string, all: boolean): string[] {
  const flags = [...(all ? ["--all"] : []), ...skopeoFlags(src, "src"), ...skopeoFlags(dst, "dest")];
  if (tool === "skopeo") return ["copy", "-q", ...flags, dockerRef(src, ref), dockerRef(dst, ref)];
  // imageyard copy takes skopeo's flags (--src-no-creds is skopeo-only: anonymous is the default).
  return ["copy", ...flags.filter((f) => f !== "--src-no-creds"), dockerRef(src, ref), dockerRef(dst, ref)];
}

async function ensureSource(stateDir: string, upstream: RegistryEndpoint, c: BenchCase): Promise<string> {
  const t0 = Date.now();
  const layout = await cachedImageLayout(stateDir, c.spec);
  const ref = `${repoOf(c)}:v1`;
  const have = await digestOf(upstream, ref).catch(() => undefined);
  if (have !== layout.top.digest) await seedImage(upstream, ref, { ...c.spec, stateDir });
  log(`${c.name}: source ${upstream.host}/${ref} ${layout.top.digest} ready (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
  return layout.top.digest;
}

function log(line: string): void {
  process.stderr.write(`[bench mirror] ${line}\n`);
}

async function runOne(tool: Tool, c: BenchCase, upstream: RegistryEndpoint, target: RegistryHandle, digest: string): Promise<Sample> {
  if (c.fresh) await target.start({ wipe: true });
  const dst = target.endpoint;
  const ref = `${repoOf(c)}:v1`;
  const cmd = tool === "skopeo" ? ["skopeo"] : imageyardCommand()!;
  const mark = requestLogMark(dst);
  const srcMark = requestLogMark(upstream);
  const args = c.startupOnly ? ["--version"] : copyArgs(tool, upstream, dst, ref, c.all);
  const run = await timeCommand(cmd[0]!, [...cmd.slice(1), ...args], { isolateContainersCache: true, timeoutMs: 1_800_000 });
  const requests = await settledCount(dst, mark);
  const sourceRequests = await settledCount(upstream, srcMark);
  if (run.exitCode !== 0) log(`${c.name} ${tool} FAILED (exit ${run.exitCode}): ${run.stderr.trim().split("\n").slice(-5).join(" | ")}`);
  const got = c.startupOnly ? digest : run.exitCode === 0 ? await digestOf(dst, ref).catch(() => "missing") : "not copied";
  const digestOk = got === digest;
  if (run.exitCode === 0 && !digestOk) log(`${c.name} ${tool}: target has ${got}, source ${digest}`);
  log(
    `${c.name} ${tool}: ${run.wallS.toFixed(2)} s, ${run.maxRssMiB.toFixed(0)} MiB, ${requests} target + ${sourceRequests} source requests${digestOk ? "" : " DIGEST MISMATCH"}`,
  );
  return { ...run, requests, sourceRequests, digestOk };
}

async function main(argv: string[]): Promise<void> {
  const all = benchCases();
  const names = argv.length > 0 ? argv : Object.keys(all);
  for (const n of names) if (!all[n]) throw new Error(`unknown case ${n}; cases: ${Object.keys(all).join(", ")}`);
  const runs = Number(process.env.RUNS ?? "3");
  const stateDir = defaultStateDir();
  const iy = imageyardCommand();
  if (!iy) log("dist/cli/imageyard.js not found: timing skopeo only (build the CLI, or set IY_BENCH_IMAGEYARD)");
  const tools: Tool[] = iy ? ["imageyard", "skopeo"] : ["skopeo"];

  const source = await startRegistry(stateDir, "bench-upstream", {
    auth: "none",
    tls: false,
    dataDir: join(stateDir, "registry", "bench-upstream"),
  });
  const tls = env("IY_BENCH_TARGET", "http") === "tls";
  const target = await startRegistry(stateDir, "bench-mirror", { auth: "htpasswd", tls });
  const upstream = source.endpoint;
  const results: Record<string, unknown>[] = [];
  const rows: (string | number)[][] = [];
  try {
    for (const name of names) {
      const c = all[name]!;
      const digest = c.startupOnly ? "-" : await ensureSource(stateDir, upstream, c);
      const loadAtStart = loadavg()[0]!;
      if (!c.fresh && !c.startupOnly) {
        // noop: the target already holds the image (copied once by skopeo, untimed).
        await runOne("skopeo", { ...c, fresh: false }, upstream, target, digest);
      }
      const samples: Record<Tool, Sample[]> = { imageyard: [], skopeo: [] };
      for (let i = 0; i < runs; i++) {
        // Alternate who goes first, so page-cache and machine noise fall on both.
        const order = i % 2 === 0 ? tools : [...tools].reverse();
        for (const tool of order) samples[tool].push(await runOne(tool, c, upstream, target, digest));
      }
      const bytes = sizeOf(c);
      const summary: Record<string, unknown> = { case: c.name };
      for (const tool of tools) {
        const ok = samples[tool].filter((s) => s.exitCode === 0 && s.digestOk);
        const wall = median(ok.map((s) => s.wallS));
        const rss = median(ok.map((s) => s.maxRssMiB));
        summary[`${tool}_s`] = ok.length ? round(wall) : null;
        summary[`${tool}_rss_mib`] = ok.length ? round(rss, 1) : null;
        // CPU seconds hold still when the machine is busy; wall seconds on a loaded machine are
        // roughly CPU seconds times how contended the processors were.
        summary[`${tool}_cpu_s`] = ok.length ? round(median(ok.map((s) => s.userS + s.sysS)), 2) : null;
        summary[`${tool}_requests`] = ok.length ? median(ok.map((s) => s.requests)) : null;
        summary[`${tool}_source_requests`] = ok.length ? median(ok.map((s) => s.sourceRequests)) : null;
        summary[`${tool}_failures`] = samples[tool].length - ok.length;
        rows.push([
          c.name,
          tool,
          `${ok.length}/${samples[tool].length}`,
          ok.length ? wall.toFixed(3) : "-",
          ok.length && c.fresh && bytes > 0 ? (bytes / wall / 1e6).toFixed(0) : "-",
          ok.length ? rss.toFixed(1) : "-",
          ok.length ? median(ok.map((s) => s.userS + s.sysS)).toFixed(2) : "-",
          ok.length ? String(median(ok.map((s) => s.requests))) : "-",
          ok.length ? String(median(ok.map((s) => s.sourceRequests))) : "-",
        ]);
      }
      const iyS = summary.imageyard_s as number | null | undefined;
      const skS = summary.skopeo_s as number | null | undefined;
      summary.speedup = iyS && skS ? round(skS / iyS, 2) : null;
      summary.bytes = bytes;
      summary.runs = runs;
      summary.target = tls ? "https" : "http";
      // Medians mean little on a loaded machine: keep the load (1-minute average, at the case's
      // start and end) next to them.
      summary.load1_start = round(loadAtStart, 2);
      summary.load1 = round(loadavg()[0]!, 2);
      results.push(summary);
    }
  } finally {
    await target.remove();
    await source.remove();
  }
  process.stdout.write(
    `\n${formatTable(["case", "tool", "ok", "median s", "MB/s", "peak RSS MiB", "cpu s", "target reqs", "source reqs"], rows)}\n\n`,
  );
  const outDir = resolve(__dirname, "..", "..", "bench", "results");
  mkdirSync(outDir, { recursive: true });
  const file = join(outDir, `mirror-${new Date().toISOString().replace(/[:.]/g, "-")}.json`);
  writeFileSync(file, JSON.stringify({ at: new Date().toISOString(), runs, results }, null, 2));
  log(`results saved to ${file}`);
  for (const r of results) {
    const { case: name, imageyard_s, skopeo_s, speedup, load1_start, load1, ...rest } = r;
    process.stdout.write(`${resultLine({ case: name, imageyard_s, skopeo_s, speedup, load1_start, load1, ...rest })}\n`);
  }
}

/** Bytes a fresh copy moves (layers + configs), from the spec. */
function sizeOf(c: BenchCase): number {
  if (c.startupOnly) return 0;
  const plats = c.spec.platforms?.length ?? 1;
  const per = parseSize(c.spec.layerSize ?? "1M");
  const layers = (c.spec.layers ?? 2) * plats - (plats > 1 ? Math.min(c.spec.sharedLayers ?? 0, c.spec.layers ?? 2) * (plats - 1) : 0);
  return layers * per;
}

main(process.argv.slice(2)).catch((e: unknown) => {
  process.stderr.write(`bench mirror: ${(e as Error).stack ?? String(e)}\n`);
  process.exit(1);
});
