// Bench: N images onto the Kubernetes test bed's nodes, PrePullSet against the BOSH way
// (import-images: `crictl pull` image after image, on each node in turn). Every round starts from
// nodes without the images (crictl rmi on each node), the two ways alternate, medians of --runs.
// Aim: wall-time ratio ≥ 1.8 on 2 nodes, and PrePullSet's wall ≈ its slowest node, not the sum.
//
//   node dist/bench/prepull.js [--images 8] [--layer-size 16M] [--runs 3]   (scripts/bench-prepull.sh)
//
// Ends with RESULT {"case":"prepull-8x2",...,"ratio":…}.
import { readFileSync } from "node:fs";
import { performance } from "node:perf_hooks";
import { parseArgs } from "node:util";
import { checkPrePull, createPrePull, deletePrePull, type PrePullInputs } from "../provider/resources/prePullSet.lifecycle";
import { seedImage, type SeededImage } from "../test/testbed/images";
import { crictl, releaseK8sTestbed, startK8sTestbed, type K8sTestbed } from "../test/testbed/k8s";
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

async function prePullWay(tb: K8sTestbed, images: SeededImage[], round: number): Promise<{ wall: number; check: number }> {
  const news: PrePullInputs = {
    name: `bench-${Date.now().toString(36)}-${round}`,
    kubeconfig: readFileSync(tb.kubeconfig, "utf8"),
    containerdSocket: `${tb.dir}/nodes/\${NODE_NAME}/containerd.sock`,
    agentRegistry: tb.registries.plain.host,
    images: images.map((i) => i.ref),
  };
  const t0 = performance.now();
  const { inputs, failures } = await checkPrePull({}, news, { log: () => {} });
  if (failures.length) throw new Error(`bench: check failed: ${JSON.stringify(failures)}`);
  const t1 = performance.now();
  const { id, outs } = await createPrePull(inputs, { log: (l) => log(`  ${l}`), pollMs: 250 });
  const t2 = performance.now();
  if (outs.ready !== outs.total) throw new Error(`bench: only ${outs.ready}/${outs.total} nodes ready`);
  await deletePrePull(id, outs, { log: () => {} });
  return { wall: (t2 - t0) / 1000, check: (t1 - t0) / 1000 };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      images: { type: "string", default: "8" },
      "layer-size": { type: "string", default: "16M" },
      runs: { type: "string", default: "3" },
    },
  });
  const n = Number(values.images);
  const runs = Number(values.runs);
  const stateDir = defaultStateDir();
  const tb = await startK8sTestbed(stateDir, { lease: LEASE });
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
    const images = await Promise.all(
      Array.from({ length: n }, (_, i) =>
        seedImage(ep, `bench-prepull-${tag}/img${i}:v1`, { layers: 2, layerSize: values["layer-size"], seed: `bench-prepull-${tag}-${i}` }),
      ),
    );
    // Warm the agent image on every node once: both ways then pull only the N images.
    await prePullWay(tb, images.slice(0, 1), 0);
    const bosh: { wall: number; perNode: number[] }[] = [];
    const ours: { wall: number; check: number }[] = [];
    for (let r = 1; r <= runs; r++) {
      await removeEverywhere(tb, nodes, images);
      bosh.push(await boshWay(tb, nodes, images));
      log(
        `round ${r}: BOSH way ${round(bosh.at(-1)!.wall, 2)} s (per node ${bosh
          .at(-1)!
          .perNode.map((x) => round(x, 2))
          .join(" + ")})`,
      );
      await removeEverywhere(tb, nodes, images);
      ours.push(await prePullWay(tb, images, r));
      log(`round ${r}: PrePullSet ${round(ours.at(-1)!.wall, 2)} s (check ${round(ours.at(-1)!.check, 2)} s)`);
    }
    const boshWall = median(bosh.map((b) => b.wall));
    const slowestNode = median(bosh.map((b) => Math.max(...b.perNode)));
    const ourWall = median(ours.map((o) => o.wall));
    process.stdout.write(
      `${formatTable(
        ["way", "wall s (median)", "notes"],
        [
          ["BOSH: crictl pull, node after node", round(boshWall, 2), `one node's sequence ≈ ${round(slowestNode, 2)} s`],
          ["PrePullSet (check + create)", round(ourWall, 2), `check ${round(median(ours.map((o) => o.check)), 2)} s`],
        ],
      )}\n`,
    );
    process.stdout.write(
      `${resultLine({
        case: `prepull-${n}x${nodes.length}`,
        images: n,
        nodes: nodes.length,
        runs,
        bosh_s: round(boshWall, 2),
        prepull_s: round(ourWall, 2),
        one_node_s: round(slowestNode, 2),
        ratio: round(boshWall / ourWall, 2),
      })}\n`,
    );
  } finally {
    await releaseK8sTestbed(stateDir, LEASE);
  }
}

main().catch((e: Error) => {
  process.stderr.write(`${e.stack ?? e.message}\n`);
  process.exit(1);
});
