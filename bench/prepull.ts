// Bench: N images onto the Kubernetes test bed's nodes, PrePullSet against the BOSH way
// (import-images: `crictl pull` image after image, on each node in turn). Every round starts from
// nodes without the images (crictl rmi on each node), the two ways alternate, medians of --runs.
// Aim: wall-time ratio ≥ 1.8 on 2 nodes, and PrePullSet's wall ≈ its slowest node, not the sum.
// With --registry-latency-ms, both ways pull through a proxy that holds each request that long: a
// registry a round trip away, as for nodes in another site than their registry (the manifest bench
// models a distant upstream the same way).
// Also sampled every 250 ms during each way: the peak resident memory of the nodes' containerds
// plus (PrePullSet) the agents, and the 1-minute load average; the provider's own peak RSS.
//
//   node dist/bench/prepull.js [--images 8] [--layer-size 16M] [--runs 3] [--registry-latency-ms 0]
//   (scripts/bench-prepull.sh)
//
// Ends with RESULT {"case":"prepull-8x2",...,"ratio":…}.
import { readdirSync, readFileSync } from "node:fs";
import { loadavg } from "node:os";
import { performance } from "node:perf_hooks";
import { parseArgs } from "node:util";
import { checkPrePull, createPrePull, deletePrePull, type PrePullInputs } from "../provider/resources/prePullSet.lifecycle";
import { startFaultProxy, type FaultProxy } from "../test/testbed/faultproxy";
import { seedImage, type SeededImage } from "../test/testbed/images";
import { crictl, k8sTestbedRss, releaseK8sTestbed, startK8sTestbed, type K8sTestbed } from "../test/testbed/k8s";
import { defaultStateDir } from "../test/testbed/processes";
import { loadRegistryTestbed, type RegistryEndpoint } from "../test/testbed/registry";
import { formatTable, median, resultLine, round } from "./lib";

const LEASE = "bench-prepull";
const log = (s: string) => process.stderr.write(`[bench-prepull] ${s}\n`);

async function removeEverywhere(tb: K8sTestbed, nodes: string[], images: SeededImage[]): Promise<void> {
  for (const node of nodes) {
    for (const img of images)
      await crictl(tb, node, ["rmi", `${img.ref.split(":").slice(0, -1).join(":")}@${img.digest}`]).catch(() => undefined);
    const left = (await crictl(tb, node, ["images", "-o", "json"])).stdout;
    for (const img of images) if (left.includes(img.digest)) throw new Error(`bench: ${node} still holds ${img.ref} after crictl rmi`);
  }
}

/** Resident KiB of every running `agent serve` (the PrePullSet agents on the bed's nodes). */
function agentsRssKiB(): number {
  let sum = 0;
  for (const e of readdirSync("/proc")) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const argv = readFileSync(`/proc/${e}/cmdline`, "utf8").split("\0");
      if (argv[0] === "/agent" && argv[1] === "serve")
        sum += Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${e}/status`, "utf8"))?.[1] ?? 0);
    } catch {
      /* gone */
    }
  }
  return sum;
}

interface Sampled {
  /** Peak of the nodes' containerd (and agent) resident memory, MiB. */
  peakRssMiB: number;
  /** Peak 1-minute load average while it ran. */
  peakLoad: number;
}

/** Runs `f`, sampling memory and load every 250 ms. */
async function sampled<T>(tb: K8sTestbed, f: () => Promise<T>): Promise<T & Sampled> {
  let peakRssMiB = 0;
  let peakLoad = 0;
  const sample = () => {
    const rss = k8sTestbedRss(tb);
    const kib = Object.entries(rss)
      .filter(([k]) => k.endsWith("/containerd"))
      .reduce((s, [, v]) => s + v, agentsRssKiB());
    peakRssMiB = Math.max(peakRssMiB, kib / 1024);
    peakLoad = Math.max(peakLoad, loadavg()[0]!);
  };
  sample();
  const timer = setInterval(sample, 250);
  try {
    return { ...(await f()), peakRssMiB, peakLoad };
  } finally {
    clearInterval(timer);
  }
}

/** BOSH's post-start: for each node in turn, crictl pull every image. Returns per-node seconds. */
async function boshWay(tb: K8sTestbed, nodes: string[], images: SeededImage[]): Promise<{ wall: number; perNode: number[] }> {
  const start = performance.now();
  const perNode: number[] = [];
  for (const node of nodes) {
    const t = performance.now();
    for (const img of images) await crictl(tb, node, ["pull", img.ref]);
    perNode.push((performance.now() - t) / 1000);
  }
  return { wall: (performance.now() - start) / 1000, perNode };
}

/**
 * PrePullSet: check, then create until every node is ready. Per-node seconds come from the
 * engine's progress lines ("nodes ready x/y; nodeA: …" names the nodes still busy).
 */
async function prePullWay(
  tb: K8sTestbed,
  nodes: string[],
  images: SeededImage[],
  roundNo: number,
): Promise<{ wall: number; check: number; perNode: number[] }> {
  const news: PrePullInputs = {
    name: `bench-${Date.now().toString(36)}-${roundNo}`,
    kubeconfig: readFileSync(tb.kubeconfig, "utf8"),
    containerdSocket: `${tb.dir}/nodes/\${NODE_NAME}/containerd.sock`,
    agentRegistry: tb.registries.plain.host,
    images: images.map((i) => i.ref),
  };
  const t0 = performance.now();
  const { inputs, failures } = await checkPrePull({}, news, { log: () => {} });
  if (failures.length) throw new Error(`bench: check failed: ${JSON.stringify(failures)}`);
  const t1 = performance.now();
  const readyAt = new Map<string, number>();
  const progress = (l: string) => {
    log(`  +${round((performance.now() - t0) / 1000, 2)} s ${l}`);
    if (!l.startsWith("nodes ready")) return;
    const busy = new Set([...l.matchAll(/; ([^:;]+):/g)].map((m) => m[1]!));
    for (const n of nodes) if (!busy.has(n) && !readyAt.has(n)) readyAt.set(n, performance.now());
  };
  const { id, outs } = await createPrePull(inputs, { log: () => {}, progress });
  const t2 = performance.now();
  if (outs.ready !== outs.total) throw new Error(`bench: only ${outs.ready}/${outs.total} nodes ready`);
  await deletePrePull(id, outs, { log: () => {} });
  return {
    wall: (t2 - t0) / 1000,
    check: (t1 - t0) / 1000,
    perNode: nodes.map((n) => ((readyAt.get(n) ?? t2) - t0) / 1000),
  };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      images: { type: "string", default: "8" },
      "layer-size": { type: "string", default: "16M" },
      runs: { type: "string", default: "3" },
      "registry-latency-ms": { type: "string", default: "0" },
    },
  });
  const n = Number(values.images);
  const runs = Number(values.runs);
  const latencyMs = Number(values["registry-latency-ms"]);
  if (!(Number.isInteger(n) && n > 0 && Number.isInteger(runs) && runs > 0 && Number.isInteger(latencyMs) && latencyMs >= 0))
    throw new Error("usage: prepull.js [--images N] [--layer-size 16M] [--runs N] [--registry-latency-ms 0]");
  const stateDir = defaultStateDir();
  const tb = await startK8sTestbed(stateDir, { lease: LEASE });
  let proxy: FaultProxy | undefined;
  try {
    const nodes = Object.values(tb.nodes)
      .filter((x) => x.state === "running")
      .map((x) => x.name)
      .sort();
    const ep: RegistryEndpoint | undefined = Object.values(loadRegistryTestbed(stateDir).registries).find(
      (r) => r.host === tb.registries.plain.host,
    );
    if (!ep) throw new Error(`bench: the bed's plain registry ${tb.registries.plain.host} is not in the registry test bed`);
    const tag = Date.now().toString(36);
    log(`seeding ${n} images of 2 × ${values["layer-size"]} into ${ep.host}; nodes: ${nodes.join(", ")}`);
    const seeded = await Promise.all(
      Array.from({ length: n }, (_, i) =>
        seedImage(ep, `bench-prepull-${tag}/img${i}:v1`, { layers: 2, layerSize: values["layer-size"], seed: `bench-prepull-${tag}-${i}` }),
      ),
    );
    // Every request of both ways (check's tag lookups included) waits the round trip in the proxy.
    proxy = latencyMs > 0 ? await startFaultProxy(ep, [{ fault: { kind: "delay", ms: latencyMs } }]) : undefined;
    const via = proxy?.host;
    const images = via ? seeded.map((i) => ({ ...i, ref: i.ref.replace(ep.host, via) })) : seeded;
    if (via) log(`nodes pull through ${via} (+${latencyMs} ms a request)`);
    // Warm the agent image on every node once: both ways then pull only the N images.
    await prePullWay(tb, nodes, images.slice(0, 1), 0);
    const bosh: ({ wall: number; perNode: number[] } & Sampled)[] = [];
    const ours: ({ wall: number; check: number; perNode: number[] } & Sampled)[] = [];
    for (let r = 1; r <= runs; r++) {
      await removeEverywhere(tb, nodes, images);
      bosh.push(await sampled(tb, () => boshWay(tb, nodes, images)));
      log(
        `round ${r}: BOSH way ${round(bosh.at(-1)!.wall, 2)} s (per node ${bosh
          .at(-1)!
          .perNode.map((x) => round(x, 2))
          .join(" + ")})`,
      );
      await removeEverywhere(tb, nodes, images);
      ours.push(await sampled(tb, () => prePullWay(tb, nodes, images, r)));
      log(
        `round ${r}: PrePullSet ${round(ours.at(-1)!.wall, 2)} s (check ${round(ours.at(-1)!.check, 2)} s; nodes ready at ${ours
          .at(-1)!
          .perNode.map((x) => round(x, 2))
          .join(", ")} s)`,
      );
    }
    const boshWall = median(bosh.map((b) => b.wall));
    const boshSum = median(bosh.map((b) => b.perNode.reduce((s, x) => s + x, 0)));
    const slowestNode = median(bosh.map((b) => Math.max(...b.perNode)));
    const ourWall = median(ours.map((o) => o.wall));
    const ourSlowest = median(ours.map((o) => Math.max(...o.perNode)));
    const ourSum = median(ours.map((o) => o.perNode.reduce((s, x) => s + x, 0)));
    const peak = (xs: Sampled[], k: keyof Sampled) => round(median(xs.map((x) => x[k])), 1);
    const providerRssMiB = round(process.resourceUsage().maxRSS / 1024, 1);
    process.stdout.write(
      `${formatTable(
        ["way", "wall s (median)", "slowest node s", "sum of nodes s", "peak RSS MiB", "peak load", "notes"],
        [
          [
            "BOSH: crictl pull, node after node",
            round(boshWall, 2),
            round(slowestNode, 2),
            round(boshSum, 2),
            peak(bosh, "peakRssMiB"),
            peak(bosh, "peakLoad"),
            "containerds",
          ],
          [
            "PrePullSet (check + create)",
            round(ourWall, 2),
            round(ourSlowest, 2),
            round(ourSum, 2),
            peak(ours, "peakRssMiB"),
            peak(ours, "peakLoad"),
            `containerds + agents; check ${round(median(ours.map((o) => o.check)), 2)} s; provider ${providerRssMiB} MiB`,
          ],
        ],
      )}\n`,
    );
    process.stdout.write(
      `${resultLine({
        case: `prepull-${n}x${nodes.length}${latencyMs ? `-rtt${latencyMs}ms` : ""}`,
        registry_latency_ms: latencyMs,
        images: n,
        layer_size: values["layer-size"],
        nodes: nodes.length,
        runs,
        bosh_s: round(boshWall, 2),
        bosh_one_node_s: round(slowestNode, 2),
        prepull_s: round(ourWall, 2),
        prepull_slowest_node_s: round(ourSlowest, 2),
        prepull_sum_of_nodes_s: round(ourSum, 2),
        ratio: round(boshWall / ourWall, 2),
        bosh_peak_rss_mib: peak(bosh, "peakRssMiB"),
        prepull_peak_rss_mib: peak(ours, "peakRssMiB"),
        provider_peak_rss_mib: providerRssMiB,
        bosh_peak_load: peak(bosh, "peakLoad"),
        prepull_peak_load: peak(ours, "peakLoad"),
        load_at_end: round(loadavg()[0]!, 2),
      })}\n`,
    );
  } finally {
    await proxy?.close();
    await releaseK8sTestbed(stateDir, LEASE);
  }
}

main().catch((e: Error) => {
  process.stderr.write(`${e.stack ?? e.message}\n`);
  process.exit(1);
});
