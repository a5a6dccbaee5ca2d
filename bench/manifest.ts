// Bench: Atmosphere's image manifest mirrored into a registry, N small images, two ways.
//   imageyard:  the examples/atmosphere-manifest program (ImageManifest, mirror: true) run by the
//               real CLI, `pulumi up --yes --skip-preview` on a stack with no resources yet;
//   Atmosphere: its mirror_images way, `crane copy SRC DST` image after image (logged in once with
//               `crane auth login`, untimed, as its docs ask).
// Every round starts from an empty mirror (wiped and restarted); the two ways alternate who goes
// first; medians of --runs. Each figure is the whole process from outside (GNU time): wall, peak
// RSS (the largest single process the command waited for), user+system CPU; the 1-minute load
// average at the start and end of each phase stands next to them (the machine is shared).
// Then the everyday no-op: `pulumi preview --expect-no-changes` of the up-to-date stack, --runs
// times, with the requests per image counted from both registries' access logs.
//
//   node dist/bench/manifest.js [--images 30] [--runs 3] [--layer-size 256K]   (scripts/bench-manifest.sh)
//
// Ends with RESULT {"case":"manifest-30",…,"ratio":…} and RESULT {"case":"manifest-30-noop-preview",…}.
import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { parseArgs } from "node:util";
import { exampleStack, pulumiToolchain, repoRoot, type ProjectStack } from "../test/e2e/harness";
import { startFaultProxy, type FaultProxy } from "../test/testbed/faultproxy";
import { cachedImageLayout, digestOf, seedImage, type ImageSpec } from "../test/testbed/images";
import { defaultStateDir, readRequests, requestLogMark, startRegistry } from "../test/testbed/registry";
import { describeRequests, formatTable, median, resultLine, round, settledCount, timeCommand, type TimedRun } from "./lib";

type Way = "imageyard" | "crane";
const log = (s: string) => process.stderr.write(`[bench-manifest] ${s}\n`);

interface Sample extends TimedRun {
  requests: number;
  load1Start: number;
  load1End: number;
}

function options(): { images: number; runs: number; layerSize: string; latencyMs: number } {
  const { values } = parseArgs({
    options: {
      images: { type: "string", default: "30" },
      runs: { type: "string", default: "3" },
      "layer-size": { type: "string", default: "256K" },
      "source-latency-ms": { type: "string", default: "0" },
    },
  });
  const images = Number(values.images);
  const runs = Number(values.runs);
  const latencyMs = Number(values["source-latency-ms"]);
  if (!(Number.isInteger(images) && images > 0 && Number.isInteger(runs) && runs > 0 && Number.isInteger(latencyMs) && latencyMs >= 0))
    throw new Error("usage: manifest.js [--images N] [--runs N] [--layer-size 256K] [--source-latency-ms 0]");
  return { images, runs, layerSize: values["layer-size"], latencyMs };
}

async function main(): Promise<void> {
  const { images, runs, layerSize, latencyMs } = options();
  const stateDir = defaultStateDir();
  // Built once from the Go module proxy (scripts/crane.sh), like the project's other tools.
  const crane = execFileSync(join(repoRoot, "scripts", "crane.sh"), ["ensure"], {
    encoding: "utf8",
    stdio: ["ignore", "pipe", "inherit"],
  }).trim();
  const tc = await pulumiToolchain();
  const source = await startRegistry(stateDir, "bench-am-upstream", {
    auth: "none",
    tls: false,
    dataDir: join(stateDir, "registry", "bench-am-upstream"),
  });
  const target = await startRegistry(stateDir, "bench-am-mirror", { auth: "htpasswd", tls: false });
  const upstream = source.endpoint;
  const dir = mkdtempSync(join(tmpdir(), "iy-bench-am-"));
  let ps: ProjectStack | undefined;
  let proxy: FaultProxy | undefined;
  try {
    // N distinct small images (two layers each), seeded once and kept between bench runs.
    const refs: { key: string; repo: string; digest: string }[] = [];
    for (let i = 0; i < images; i++) {
      const spec: ImageSpec = { layers: 2, layerSize, seed: `bench-am-${i}-${layerSize}` };
      const repo = `atmosphere/svc-${String(i).padStart(2, "0")}:zed`;
      const layout = await cachedImageLayout(stateDir, spec);
      if ((await digestOf(upstream, repo).catch(() => undefined)) !== layout.top.digest)
        await seedImage(upstream, repo, { ...spec, stateDir });
      refs.push({ key: `svc_${String(i).padStart(2, "0")}`, repo, digest: layout.top.digest });
    }
    // A distant upstream (Atmosphere mirrors from quay.io and docker.io): every request to the
    // source waits a round trip in a proxy first. Connection set-up costs no extra round trips
    // here, which favours the way that opens more connections (one crane process per image).
    proxy = latencyMs > 0 ? await startFaultProxy(upstream, [{ fault: { kind: "delay", ms: latencyMs } }]) : undefined;
    const sourceHost = proxy?.host ?? upstream.host;
    log(
      `${images} images of 2 × ${layerSize} ready on ${upstream.host}${proxy ? `, seen through ${sourceHost} (+${latencyMs} ms a request)` : ""}`,
    );
    const manifestFile = join(dir, "atmosphere_images.yml");
    writeFileSync(
      manifestFile,
      JSON.stringify({ atmosphere_images: Object.fromEntries(refs.map((r) => [r.key, `${sourceHost}/${r.repo}`])) }),
    );

    const mirror = () => target.endpoint;
    const config = () => ({
      manifestFile: { value: manifestFile },
      registry: { value: mirror().host },
      targetUsername: { value: mirror().username ?? "" },
      targetPassword: { value: mirror().password ?? "", secret: true },
    });
    ps = await exampleStack("atmosphere-manifest", "r0", config());
    const stack = ps;
    const engineEnv: NodeJS.ProcessEnv = {
      ...process.env,
      PATH: `${tc.bin}:${process.env.PATH ?? ""}`,
      NODE_PATH: tc.nodePath,
      PULUMI_BACKEND_URL: `file://${stack.backend}`,
      PULUMI_HOME: join(dirname(stack.workDir), "home"),
      PULUMI_CONFIG_PASSPHRASE: "imageyard-e2e",
      PULUMI_SKIP_UPDATE_CHECK: "true",
      PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION: "true",
    };
    const pulumi = (stackName: string, args: string[]) =>
      timeCommand(join(tc.bin, "pulumi"), [...args, "--non-interactive", "--stack", stackName, "--cwd", stack.workDir], {
        env: engineEnv,
        timeoutMs: 1_800_000,
      });
    /** A stack with no resources yet, on the current (freshly wiped) mirror. */
    const freshStack = async (name: string) => {
      await stack.stack.workspace.createStack(name);
      await stack.stack.workspace.setAllConfig(name, config());
    };

    // Atmosphere's way: log in once (untimed), then one `crane copy` per image, in order.
    const craneEnv: NodeJS.ProcessEnv = { ...process.env, DOCKER_CONFIG: join(dir, "docker") };
    mkdirSync(join(dir, "docker"));
    const craneScript = join(dir, "mirror_images.sh");
    const craneList = join(dir, "images.txt");
    const writeCraneList = () => writeFileSync(craneList, refs.map((r) => `${sourceHost}/${r.repo} ${mirror().host}/${r.repo}\n`).join(""));
    writeFileSync(craneScript, `set -e\nwhile read -r src dst; do\n  "${crane}" copy "$src" "$dst"\ndone < "${craneList}"\n`);

    const verify = async (way: Way) => {
      for (const r of refs) {
        const got = await digestOf(mirror(), r.repo).catch(() => "missing");
        if (got !== r.digest) throw new Error(`${way}: mirror holds ${got} for ${r.repo}, upstream ${r.digest}`);
      }
    };

    const runWay = async (way: Way, round: number): Promise<Sample> => {
      await target.start({ wipe: true });
      const marks = [requestLogMark(upstream), requestLogMark(mirror())] as const;
      const load1Start = loadavg()[0]!;
      let run: TimedRun;
      if (way === "imageyard") {
        const name = `r${round}`;
        await freshStack(name);
        run = await pulumi(name, ["up", "--yes", "--skip-preview"]);
      } else {
        writeCraneList();
        const login = await timeCommand(crane, ["auth", "login", mirror().host, "-u", mirror().username!, "-p", mirror().password!], {
          env: craneEnv,
        });
        if (login.exitCode !== 0) throw new Error(`crane auth login failed: ${login.stderr}`);
        run = await timeCommand("sh", [craneScript], { env: craneEnv, timeoutMs: 1_800_000 });
      }
      const load1End = loadavg()[0]!;
      if (run.exitCode !== 0) throw new Error(`${way} round ${round} failed (exit ${run.exitCode}): ${run.stderr.slice(-2000)}`);
      await verify(way);
      const requests = (await settledCount(upstream, marks[0])) + (await settledCount(mirror(), marks[1]));
      if (round === 1)
        log(`${way} requests by kind: ${describeRequests([...readRequests(upstream, marks[0]), ...readRequests(mirror(), marks[1])])}`);
      log(
        `${way} round ${round}: ${run.wallS.toFixed(2)} s, peak ${run.maxRssMiB.toFixed(0)} MiB, ${requests} requests, load ${load1Start.toFixed(1)}→${load1End.toFixed(1)}`,
      );
      return { ...run, requests, load1Start, load1End };
    };

    const samples: Record<Way, Sample[]> = { imageyard: [], crane: [] };
    for (let i = 1; i <= runs; i++) {
      const order: Way[] = i % 2 === 1 ? ["imageyard", "crane"] : ["crane", "imageyard"];
      for (const way of order) samples[way].push(await runWay(way, i));
    }
    const rows = (["imageyard", "crane"] as const).map((way) => {
      const s = samples[way];
      return [
        way === "imageyard" ? "pulumi up (ImageManifest)" : "crane copy × N",
        round(median(s.map((x) => x.wallS)), 2),
        `${round(Math.min(...s.map((x) => x.wallS)), 2)}–${round(Math.max(...s.map((x) => x.wallS)), 2)}`,
        round(median(s.map((x) => x.maxRssMiB)), 1),
        round(median(s.map((x) => x.userS + x.sysS)), 2),
        median(s.map((x) => x.requests)),
        `${round(median(s.map((x) => x.load1Start)), 1)}→${round(median(s.map((x) => x.load1End)), 1)}`,
      ];
    });
    const iyS = median(samples.imageyard.map((x) => x.wallS));
    const crS = median(samples.crane.map((x) => x.wallS));
    // The ratio pair by pair (the rounds alternate), so drift in the machine's speed falls on both.
    const pairRatios = samples.crane.map((c, i) => c.wallS / samples.imageyard[i]!.wallS);

    // The no-op: the stack up to date, `pulumi preview` shows no changes.
    await target.start({ wipe: true });
    await freshStack("noop");
    const up = await pulumi("noop", ["up", "--yes", "--skip-preview"]);
    if (up.exitCode !== 0) throw new Error(`pulumi up of the no-op stack failed: ${up.stderr.slice(-2000)}`);
    const previews: { s: number; requests: number; rss: number; load: number }[] = [];
    for (let i = 1; i <= runs; i++) {
      const marks = [requestLogMark(upstream), requestLogMark(mirror())] as const;
      const load = loadavg()[0]!;
      const p = await pulumi("noop", ["preview", "--expect-no-changes"]);
      if (p.exitCode !== 0)
        throw new Error(`no-op preview ${i} showed changes or failed: ${p.stdout.slice(-2000)} ${p.stderr.slice(-2000)}`);
      const requests = (await settledCount(upstream, marks[0])) + (await settledCount(mirror(), marks[1]));
      log(`no-op preview ${i}: ${p.wallS.toFixed(2)} s, ${requests} requests (${(requests / images).toFixed(2)} per image)`);
      previews.push({ s: p.wallS, requests, rss: p.maxRssMiB, load });
    }

    process.stdout.write(
      `\n${formatTable(["way", "median s", "min–max s", "peak RSS MiB", "cpu s", "requests", "load1"], rows)}\n\n` +
        `${formatTable(
          ["no-op preview", "s", "requests", "req/image", "peak RSS MiB", "load1"],
          previews.map((p, i) => [
            String(i + 1),
            round(p.s, 2),
            p.requests,
            round(p.requests / images, 2),
            round(p.rss, 1),
            round(p.load, 1),
          ]),
        )}\n\n`,
    );
    const stat = (way: Way, f: (s: Sample) => number, d = 2) => round(median(samples[way].map(f)), d);
    process.stdout.write(
      `${resultLine({
        case: `manifest-${images}${latencyMs ? `-rtt${latencyMs}ms` : ""}`,
        imageyard_s: round(iyS, 2),
        crane_s: round(crS, 2),
        ratio: round(crS / iyS, 2),
        ratio_pairs: pairRatios.map((r) => round(r, 2)),
        imageyard_rss_mib: stat("imageyard", (s) => s.maxRssMiB, 1),
        crane_rss_mib: stat("crane", (s) => s.maxRssMiB, 1),
        imageyard_cpu_s: stat("imageyard", (s) => s.userS + s.sysS),
        crane_cpu_s: stat("crane", (s) => s.userS + s.sysS),
        imageyard_requests: stat("imageyard", (s) => s.requests, 0),
        crane_requests: stat("crane", (s) => s.requests, 0),
        load1_start: round(Math.min(...[...samples.imageyard, ...samples.crane].map((s) => s.load1Start)), 2),
        load1: round(loadavg()[0]!, 2),
        layer_size: layerSize,
        runs,
      })}\n`,
    );
    const req = median(previews.map((p) => p.requests));
    process.stdout.write(
      `${resultLine({
        case: `manifest-${images}${latencyMs ? `-rtt${latencyMs}ms` : ""}-noop-preview`,
        preview_s: round(median(previews.map((p) => p.s)), 2),
        requests: req,
        requests_per_image: round(req / images, 2),
        peak_rss_mib: round(median(previews.map((p) => p.rss)), 1),
        load1: round(median(previews.map((p) => p.load)), 2),
      })}\n`,
    );
  } finally {
    ps?.cleanup();
    await proxy?.close();
    rmSync(dir, { recursive: true, force: true });
    await target.remove();
    await source.remove();
  }
}

main().catch((e: unknown) => {
  process.stderr.write(`bench-manifest: ${(e as Error).stack ?? String(e)}\n`);
  process.exit(1);
});
