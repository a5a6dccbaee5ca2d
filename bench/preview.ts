// Bench: what `pulumi preview` costs on a stack of N MirroredImages whose upstream has not
// changed (the everyday case: a CI job previewing the mirror stack). The demo program
// (Pulumi.yaml, examples/demo) with N images from the test bed's upstream into its mirror,
// `up` once, then `pulumi preview` end to end (CLI start, program, N checks and diffs) --runs
// times, with the registry requests each preview made counted from both registries' access logs.
// Aim: under 10 s and at most 2 requests per image for N = 200.
//
//   node dist/bench/preview.js [--images 200] [--runs 3]      (scripts/bench-preview.sh)
//
// Ends with RESULT {"case":"preview-200","preview_s":…,"requests":…,"requests_per_image":…}.
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { RegistryClient } from "../provider/oci/registry";
import { seedImage } from "../test/testbed/images";
import {
  countRequests,
  defaultStateDir,
  readRequests,
  releaseRegistryTestbed,
  requestLogMark,
  startRegistryTestbed,
} from "../test/testbed/registry";
import { projectStack, repoRoot } from "../test/e2e/harness";
import { describeRequests, formatTable, median, resultLine, round } from "./lib";

const LEASE = "bench-preview";

function parseArgs(argv: string[]): { images: number; runs: number } {
  const out = { images: 200, runs: 3 };
  for (let i = 0; i < argv.length; i++) {
    const v = Number(argv[i + 1]);
    if (argv[i] === "--images" && v > 0) out.images = v;
    else if (argv[i] === "--runs" && v > 0) out.runs = v;
    else throw new Error(`usage: preview.js [--images N] [--runs N] (bad argument ${argv[i]})`);
    i++;
  }
  return out;
}

const log = (s: string) => process.stderr.write(`[bench-preview] ${s}\n`);

async function main(): Promise<void> {
  const { images, runs } = parseArgs(process.argv.slice(2));
  const stateDir = defaultStateDir();
  const tb = await startRegistryTestbed(stateDir, { lease: LEASE });
  const { upstream, mirror } = tb.registries;
  try {
    // One small image under N tags: N resources, each with its own upstream tag to resolve.
    const repo = `bench-preview/app`;
    const tags = Array.from({ length: images }, (_, i) => `t${String(i).padStart(3, "0")}`);
    log(`seeding ${upstream.host}/${repo} with ${images} tags`);
    await seedImage(upstream, `${repo}:${tags[0]}`, { layers: 1, layerSize: "16K", seed: "imageyard-bench-preview", stateDir });
    const client = new RegistryClient(upstream.host, { scheme: "http", dockerConfig: false });
    const manifest = await client.getManifest(repo, tags[0]!);
    for (const tag of tags.slice(1)) await client.putManifest(repo, tag, manifest.bytes, manifest.mediaType);

    const ps = await projectStack(join(repoRoot, "Pulumi.yaml"), "bench", {
      upstream: { value: upstream.host },
      mirror: { value: mirror.host },
      mirrorUsername: { value: mirror.username ?? "" },
      mirrorPassword: { value: mirror.password ?? "", secret: true },
      images: { value: JSON.stringify(tags.map((t) => ({ name: `app-${t}`, source: `${repo}:${t}`, target: "bench-preview/mirror" }))) },
    });
    try {
      log(`pulumi up: ${images} MirroredImages`);
      const started = performance.now();
      const up = await ps.stack.up({ onOutput: ps.onOutput("up") });
      log(`up: ${up.summary.result} in ${round((performance.now() - started) / 1000, 1)} s`);

      const rows: (string | number)[][] = [];
      const times: number[] = [];
      const counts: number[] = [];
      for (let run = 1; run <= runs; run++) {
        const marks = [requestLogMark(upstream), requestLogMark(mirror)] as const;
        const t0 = performance.now();
        const pre = await ps.stack.preview({ onOutput: ps.onOutput(`preview-${run}`) });
        const seconds = (performance.now() - t0) / 1000;
        const changed = Object.entries(pre.changeSummary).filter(([op]) => op !== "same");
        if (changed.length > 0)
          throw new Error(`preview ${run} shows changes on an unchanged upstream: ${JSON.stringify(pre.changeSummary)}`);
        const up = countRequests(upstream, marks[0]);
        const mi = countRequests(mirror, marks[1]);
        times.push(seconds);
        counts.push(up + mi);
        rows.push([run, round(seconds, 2), up, mi, round((up + mi) / images, 2)]);
        if (run === 1)
          log(
            `requests of preview 1 by kind: ${describeRequests([...readRequests(upstream, marks[0]), ...readRequests(mirror, marks[1])])}`,
          );
      }
      process.stdout.write(`\n${formatTable(["run", "preview s", "upstream req", "mirror req", "req/image"], rows)}\n\n`);
      const requests = median(counts);
      process.stdout.write(
        `${resultLine({
          case: `preview-${images}`,
          preview_s: round(median(times), 2),
          requests,
          requests_per_image: round(requests / images, 3),
        })}\n`,
      );
      log("destroying the bench stack");
      await ps.stack.destroy({ onOutput: ps.onOutput("destroy") });
    } finally {
      ps.cleanup();
    }
  } finally {
    await releaseRegistryTestbed(stateDir, LEASE);
  }
}

main().catch((e: unknown) => {
  process.stderr.write(`bench-preview: ${(e as Error).stack ?? String(e)}\n`);
  process.exit(1);
});
