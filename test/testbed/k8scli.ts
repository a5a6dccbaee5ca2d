// `node dist/test/testbed/k8scli.js …` (scripts/k8sbed.sh wraps it): starts, stops, describes
// and changes the Kubernetes test bed for the e2e tests, the benches and manual poking.
import {
  addK8sNode,
  k8sTestbedRss,
  loadK8sTestbed,
  removeK8sNode,
  startK8sTestbed,
  stopK8sNode,
  stopK8sTestbed,
  type K8sRuntime,
  type K8sTestbed,
} from "./k8s";
import { defaultStateDir } from "./processes";

const USAGE = `usage: k8sbed.sh up | down | status [--json] | rss | add-node NAME [--runtime containerd1|containerd2] | stop-node NAME | remove-node NAME`;

function describe(tb: K8sTestbed): string {
  const rows = [
    `kubernetes ${tb.kubernetesVersion}  ${tb.server}`,
    `kubeconfig ${tb.kubeconfig}`,
    `bin        ${tb.bin.dir}`,
    `registries plain ${tb.registries.plain.host}  auth ${tb.registries.auth.host} (user ${tb.registries.auth.username})`,
  ];
  for (const [k, i] of Object.entries(tb.images)) rows.push(`image      ${k.padEnd(15)} ${i.ref}  ${i.digest}`);
  for (const n of Object.values(tb.nodes)) {
    rows.push(
      `node       ${n.name.padEnd(8)} ${n.state.padEnd(8)} ${n.runtime} ${n.runtimeVersion}  kubelet :${n.kubeletPort}  ${n.containerdSocket}`,
    );
  }
  rows.push(`state      ${tb.dir}/testbed.json`);
  return rows.join("\n");
}

async function main(argv: string[]): Promise<number> {
  const [cmd, arg] = argv;
  const stateDir = defaultStateDir();
  const json = argv.includes("--json");
  const print = (tb: K8sTestbed) => process.stdout.write(`${json ? JSON.stringify(tb, null, 2) : describe(tb)}\n`);
  switch (cmd) {
    case "up": {
      const t0 = Date.now();
      const tb = await startK8sTestbed(stateDir, { lease: "cli", persistent: true });
      print(tb);
      if (!json) process.stdout.write(`ready in ${((Date.now() - t0) / 1000).toFixed(1)} s\n`);
      return 0;
    }
    case "down":
      await stopK8sTestbed(stateDir);
      process.stdout.write("kubernetes test bed stopped\n");
      return 0;
    case "status":
      print(loadK8sTestbed(stateDir));
      return 0;
    case "rss": {
      const rss = k8sTestbedRss(loadK8sTestbed(stateDir));
      let total = 0;
      for (const [name, kib] of Object.entries(rss)) {
        total += kib;
        process.stdout.write(`${name.padEnd(28)} ${(kib / 1024).toFixed(0).padStart(5)} MiB\n`);
      }
      process.stdout.write(`${"total".padEnd(28)} ${(total / 1024).toFixed(0).padStart(5)} MiB\n`);
      return 0;
    }
    case "add-node": {
      if (!arg) break;
      const i = argv.indexOf("--runtime");
      const runtime = i > 0 ? (argv[i + 1] as K8sRuntime) : undefined;
      if (runtime && runtime !== "containerd1" && runtime !== "containerd2") break;
      const t0 = Date.now();
      const n = await addK8sNode(arg, { runtime }, stateDir);
      process.stdout.write(`${n.name} Ready in ${((Date.now() - t0) / 1000).toFixed(1)} s (${n.runtime} ${n.runtimeVersion})\n`);
      return 0;
    }
    case "stop-node":
      if (!arg) break;
      await stopK8sNode(arg, stateDir);
      process.stdout.write(`${arg} stopped\n`);
      return 0;
    case "remove-node":
      if (!arg) break;
      await removeK8sNode(arg, stateDir);
      process.stdout.write(`${arg} removed\n`);
      return 0;
  }
  process.stderr.write(`${USAGE}\n`);
  return 2;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (e: unknown) => {
    process.stderr.write(`k8sbed: ${(e as Error).message}\n`);
    process.exit(1);
  },
);
