// One real Kubernetes node of the test bed: its own containerd (Debian's 1.6, or v2 from the
// build cache) and kubelet, with their own root, state, sockets, ports and cgroup root, so several
// run side by side on one host and one address (127.0.0.1). Stopping one leaves nothing behind:
// no processes (containers, shims), mounts, cgroups or kubelet symlinks on the host.
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, readFileSync, readlinkSync, rmdirSync, rmSync, writeFileSync } from "node:fs";
import { connect } from "node:net";
import { basename, dirname, join } from "node:path";
import { freePort, isAlive, isOurProcess, logTail, spawnLogged, waitUntil } from "./processes";

export type K8sRuntime = "containerd1" | "containerd2";

export interface K8sNodeOptions {
  /** containerd1: Debian's containerd 1.6 (ignores the pinned label); containerd2: v2 from scripts/k8s-build.sh (honours it). */
  runtime?: K8sRuntime;
  /** Extra KubeletConfiguration fields (e.g. image GC thresholds), merged over the bed's. */
  kubelet?: Record<string, unknown>;
}

export interface K8sNode {
  name: string;
  runtime: K8sRuntime;
  /** What `containerd --version` says, e.g. "1.6.20" or "2.4.2". */
  runtimeVersion: string;
  dir: string;
  /** containerd's gRPC socket: CRI (crictl, kubelet) and containerd's own API (ctr). */
  containerdSocket: string;
  /** unix://<containerdSocket>, for crictl --runtime-endpoint/--image-endpoint. */
  criEndpoint: string;
  /** The ctr that matches this containerd (pass --address containerdSocket -n k8s.io). */
  ctr: string;
  containerd: string;
  /** containerd namespace of Kubernetes' images and containers. */
  namespace: "k8s.io";
  snapshotter: "native";
  kubeletPort: number;
  healthzPort: number;
  /** CRI streaming server (exec, logs through the kubelet). */
  streamPort: number;
  /** The kubelet's cgroupRoot, created in every v1 hierarchy. */
  cgroupRoot: string;
  kubeconfig: string;
  containerdConfig: string;
  kubeletConfig: string;
  containerdPid: number;
  kubeletPid: number;
  containerdLog: string;
  kubeletLog: string;
  /** "stopped": processes gone, data kept; start it again with addK8sNode(name). */
  state: "running" | "stopped";
  kubeletOverrides?: Record<string, unknown>;
}

/** What a node needs from the rest of the bed. */
export interface NodeContext {
  /** The bed's directory (nodes live in dir/nodes/NAME). */
  dir: string;
  binDir: string;
  caFile: string;
  sandboxImage: string;
}

/** Every node carries its runtime as this label (containerd1 | containerd2), for nodeSelectors. */
export const NODE_RUNTIME_LABEL = "imageyard.dev/runtime";
const CGROUP_FS = "/sys/fs/cgroup";
const CNI_BIN = "/usr/lib/cni";
const NODE_READY_MS = 180_000;

function runtimeBinaries(runtime: K8sRuntime, binDir: string): { containerd: string; ctr: string; pathPrefix: string } {
  if (runtime === "containerd2") {
    const d = join(binDir, "containerd2");
    if (!existsSync(join(d, "containerd")))
      throw new Error(`Kubernetes test bed: no containerd v2 in ${d}. Run scripts/k8s-build.sh ensure.`);
    // The shim is looked up on PATH: the v2 shim must come before Debian's.
    return { containerd: join(d, "containerd"), ctr: join(d, "ctr"), pathPrefix: `${d}:` };
  }
  if (!existsSync("/usr/bin/containerd"))
    throw new Error("Kubernetes test bed: no /usr/bin/containerd. Install containerd and runc (scripts/bootstrap.sh).");
  return { containerd: "/usr/bin/containerd", ctr: "/usr/bin/ctr", pathPrefix: "" };
}

function containerdVersion(bin: string): string {
  const out = execFileSync(bin, ["--version"], { encoding: "utf8" });
  const v = / v?(\d+\.\d+\.\d+)/.exec(out)?.[1];
  if (!v) throw new Error(`Kubernetes test bed: cannot read a version from \`${bin} --version\`: ${out.trim()}`);
  return v;
}

/** cgroup v1 hierarchies (cpu, memory, pids, …, name=systemd) plus the unified one, where present. */
function cgroupHierarchies(): string[] {
  return readdirSync(CGROUP_FS)
    .map((n) => join(CGROUP_FS, n))
    .filter((d) => existsSync(join(d, "cgroup.procs")));
}

function containerdToml(n: K8sNode, ctx: NodeContext): string {
  const q = (s: string) => JSON.stringify(s);
  const cniConf = join(n.dir, "cni");
  const certs = join(n.dir, "certs.d");
  if (n.runtime === "containerd1") {
    const cri = '[plugins."io.containerd.grpc.v1.cri"';
    return [
      "version = 2",
      `root = ${q(join(n.dir, "containerd", "root"))}`,
      `state = ${q(join(n.dir, "containerd", "state"))}`,
      "[grpc]",
      `  address = ${q(n.containerdSocket)}`,
      "[ttrpc]",
      `  address = ${q(`${n.containerdSocket}.ttrpc`)}`,
      '[plugins."io.containerd.internal.v1.opt"]',
      `  path = ${q(join(n.dir, "opt"))}`,
      `${cri}]`,
      "  disable_tcp_service = true",
      '  stream_server_address = "127.0.0.1"',
      `  stream_server_port = ${q(String(n.streamPort))}`,
      `  sandbox_image = ${q(ctx.sandboxImage)}`,
      // No CAP_SYS_RESOURCE here: runc cannot lower oom_score_adj to pause's -998, so clamp it.
      "  restrict_oom_score_adj = true",
      `${cri}.containerd]`,
      `  snapshotter = ${q(n.snapshotter)}`,
      '  default_runtime_name = "runc"',
      `${cri}.containerd.runtimes.runc]`,
      '  runtime_type = "io.containerd.runc.v2"',
      `${cri}.containerd.runtimes.runc.options]`,
      "  SystemdCgroup = false",
      `  Root = ${q(join(n.dir, "runc"))}`,
      `${cri}.cni]`,
      `  bin_dir = ${q(CNI_BIN)}`,
      `  conf_dir = ${q(cniConf)}`,
      `${cri}.registry]`,
      `  config_path = ${q(certs)}`,
      "",
    ].join("\n");
  }
  const images = "[plugins.'io.containerd.cri.v1.images'";
  const rt = "[plugins.'io.containerd.cri.v1.runtime'";
  // Version 4, containerd 2.4's current one: the servers are plugins. Its ttrpc server no longer
  // follows the grpc address, so both are set (the default would be shared by every v2 node).
  return [
    "version = 4",
    `root = ${q(join(n.dir, "containerd", "root"))}`,
    `state = ${q(join(n.dir, "containerd", "state"))}`,
    "[plugins.'io.containerd.server.v1.grpc']",
    `  address = ${q(n.containerdSocket)}`,
    "[plugins.'io.containerd.server.v1.ttrpc']",
    `  address = ${q(`${n.containerdSocket}.ttrpc`)}`,
    "[plugins.'io.containerd.internal.v1.opt']",
    `  path = ${q(join(n.dir, "opt"))}`,
    // NRI listens on one fixed host socket: a second v2 node would take it over.
    "[plugins.'io.containerd.nri.v1.nri']",
    "  disable = true",
    `${images}]`,
    `  snapshotter = ${q(n.snapshotter)}`,
    `${images}.pinned_images]`,
    `  sandbox = ${q(ctx.sandboxImage)}`,
    `${images}.registry]`,
    `  config_path = ${q(certs)}`,
    `${rt}]`,
    "  restrict_oom_score_adj = true",
    `${rt}.containerd]`,
    '  default_runtime_name = "runc"',
    `${rt}.containerd.runtimes.runc]`,
    '  runtime_type = "io.containerd.runc.v2"',
    `${rt}.containerd.runtimes.runc.options]`,
    "  SystemdCgroup = false",
    `  Root = ${q(join(n.dir, "runc"))}`,
    `${rt}.cni]`,
    `  bin_dirs = [${q(CNI_BIN)}]`,
    `  conf_dir = ${q(cniConf)}`,
    "[plugins.'io.containerd.grpc.v1.cri']",
    "  disable_tcp_service = true",
    '  stream_server_address = "127.0.0.1"',
    `  stream_server_port = ${q(String(n.streamPort))}`,
    // The CRI pulls through the transfer service, whose default unpack list covers overlayfs and
    // erofs only: with the native snapshotter every pull would fail "no unpack platforms defined".
    "[[plugins.'io.containerd.transfer.v1.local'.unpack_config]]",
    '  platform = "linux/amd64"',
    `  snapshotter = ${q(n.snapshotter)}`,
    '  differ = "walking"',
    "",
  ].join("\n");
}

function kubeletConfig(n: K8sNode, ctx: NodeContext): Record<string, unknown> {
  return {
    apiVersion: "kubelet.config.k8s.io/v1beta1",
    kind: "KubeletConfiguration",
    address: "127.0.0.1",
    port: n.kubeletPort,
    readOnlyPort: 0,
    healthzBindAddress: "127.0.0.1",
    healthzPort: n.healthzPort,
    containerRuntimeEndpoint: n.criEndpoint,
    cgroupDriver: "cgroupfs",
    cgroupRoot: n.cgroupRoot,
    // This host has cgroup v1 only; kubelet >= 1.35 refuses it unless told otherwise.
    failCgroupV1: false,
    failSwapOn: false,
    podLogsDir: join(n.dir, "pod-logs"),
    authentication: { anonymous: { enabled: false }, webhook: { enabled: false }, x509: { clientCAFile: ctx.caFile } },
    authorization: { mode: "AlwaysAllow" },
    rotateCertificates: false,
    serializeImagePulls: false,
    syncFrequency: "10s",
    nodeStatusUpdateFrequency: "5s",
    nodeStatusReportFrequency: "10s",
    // Image GC off by default (tests that want it set thresholds through K8sNodeOptions.kubelet),
    // and evictions only when the disk is really full: the host is shared.
    imageGCHighThresholdPercent: 100,
    imageGCLowThresholdPercent: 99,
    evictionHard: { "memory.available": "50Mi", "nodefs.available": "1%", "imagefs.available": "1%", "nodefs.inodesFree": "1%" },
    ...n.kubeletOverrides,
  };
}

/** Describes node `name` of the bed in `ctx.dir` (fresh ports unless `old` has them). */
export async function planNode(ctx: NodeContext, name: string, opts: K8sNodeOptions, kubeconfig: string, old?: K8sNode): Promise<K8sNode> {
  if (!/^[a-z0-9]([-a-z0-9]{0,30}[a-z0-9])?$/.test(name))
    throw new Error(`Kubernetes test bed: node name ${JSON.stringify(name)} must be a DNS label of at most 32 characters, e.g. node3`);
  const runtime = opts.runtime ?? old?.runtime ?? "containerd1";
  const bins = runtimeBinaries(runtime, ctx.binDir);
  const dir = join(ctx.dir, "nodes", name);
  const sock = join(dir, "containerd.sock");
  // Unique per bed and node: kubelets sharing a cgroup root would fight over /kubepods.
  const bed = createHash("sha256").update(ctx.dir).digest("hex").slice(0, 8);
  return {
    name,
    runtime,
    runtimeVersion: containerdVersion(bins.containerd),
    dir,
    containerdSocket: sock,
    criEndpoint: `unix://${sock}`,
    ctr: bins.ctr,
    containerd: bins.containerd,
    namespace: "k8s.io",
    snapshotter: "native",
    kubeletPort: await freePort(old?.kubeletPort),
    healthzPort: await freePort(old?.healthzPort),
    streamPort: await freePort(old?.streamPort),
    cgroupRoot: `/imageyard-${bed}-${name}`,
    kubeconfig,
    containerdConfig: join(dir, "containerd.toml"),
    kubeletConfig: join(dir, "kubelet.json"),
    containerdPid: 0,
    kubeletPid: 0,
    containerdLog: join(dir, "logs", "containerd.log"),
    kubeletLog: join(dir, "logs", "kubelet.log"),
    state: "stopped",
    kubeletOverrides: opts.kubelet ?? old?.kubeletOverrides,
  };
}

function socketAnswers(path: string): Promise<boolean> {
  return new Promise((ok) => {
    const s = connect({ path });
    s.once("connect", () => (s.destroy(), ok(true)));
    s.once("error", () => ok(false));
  });
}

async function waitHealthz(url: string, pid: number, marker: string, log: string, ms: number): Promise<void> {
  await waitUntil(`wait for ${url}`, ms, async () => {
    if (!isOurProcess(pid, marker)) throw new Error(`kubelet exited before answering ${url}:\n${logTail(log)}`);
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(2_000) });
      await res.arrayBuffer();
      return res.status === 200;
    } catch {
      return false;
    }
  });
}

/** Starts containerd and the kubelet of `n` (configs written fresh) and waits for the kubelet's healthz. */
export async function startNode(n: K8sNode, ctx: NodeContext): Promise<void> {
  for (const d of ["cni", "certs.d", "kubelet", "pod-logs", "logs"]) mkdirSync(join(n.dir, d), { recursive: true });
  // No pod network: hostNetwork pods never call CNI, but without a config containerd reports
  // NetworkReady=false and the node stays NotReady.
  writeFileSync(
    join(n.dir, "cni", "10-imageyard-loopback.conflist"),
    JSON.stringify({ cniVersion: "1.0.0", name: "imageyard-hostnetwork-only", plugins: [{ type: "loopback" }] }),
  );
  writeFileSync(n.containerdConfig, containerdToml(n, ctx));
  writeFileSync(n.kubeletConfig, JSON.stringify(kubeletConfig(n, ctx), null, 1));
  rmSync(n.containerdSocket, { force: true });
  const bins = runtimeBinaries(n.runtime, ctx.binDir);
  n.containerdPid = spawnLogged(n.containerd, ["--config", n.containerdConfig], n.containerdLog, join(n.dir, "containerd.pid"), {
    PATH: `${bins.pathPrefix}${process.env.PATH ?? "/usr/sbin:/usr/bin:/sbin:/bin"}`,
  });
  await waitUntil(`node ${n.name}: wait for containerd's socket ${n.containerdSocket}`, 60_000, async () => {
    if (!isAlive(n.containerdPid))
      throw new Error(`node ${n.name}: containerd exited before opening ${n.containerdSocket}:\n${logTail(n.containerdLog)}`);
    return existsSync(n.containerdSocket) && (await socketAnswers(n.containerdSocket));
  });
  // The kubelet wants its cgroupRoot to exist in every hierarchy already.
  for (const h of cgroupHierarchies()) mkdirSync(join(h, n.cgroupRoot), { recursive: true });
  n.kubeletPid = spawnLogged(
    join(ctx.binDir, "kubelet"),
    [
      `--config=${n.kubeletConfig}`,
      `--kubeconfig=${n.kubeconfig}`,
      `--root-dir=${join(n.dir, "kubelet")}`,
      `--cert-dir=${join(n.dir, "kubelet", "pki")}`,
      `--hostname-override=${n.name}`,
      "--node-ip=127.0.0.1",
      `--node-labels=${NODE_RUNTIME_LABEL}=${n.runtime}`,
      "--v=1",
    ],
    n.kubeletLog,
    join(n.dir, "kubelet.pid"),
  );
  n.state = "running";
  await waitHealthz(`http://127.0.0.1:${n.healthzPort}/healthz`, n.kubeletPid, `--config=${n.kubeletConfig}`, n.kubeletLog, NODE_READY_MS);
}

/** SIGTERM, then SIGKILL if it is still there after `graceMs`. */
export async function terminate(pid: number, marker: string, graceMs = 10_000): Promise<void> {
  if (!isOurProcess(pid, marker)) return;
  process.kill(pid, "SIGTERM");
  try {
    await waitUntil(`stop pid ${pid}`, graceMs, () => !isOurProcess(pid, marker));
  } catch {
    if (isOurProcess(pid, marker)) process.kill(pid, "SIGKILL");
    await waitUntil(`pid ${pid} (${marker}) to die after SIGKILL`, 5_000, () => !isOurProcess(pid, marker));
  }
}

function pidsIn(cgroup: string): number[] {
  const out: number[] = [];
  const walk = (d: string) => {
    try {
      for (const l of readFileSync(join(d, "cgroup.procs"), "utf8").split("\n")) if (l) out.push(Number(l));
      for (const e of readdirSync(d, { withFileTypes: true })) if (e.isDirectory()) walk(join(d, e.name));
    } catch {
      /* removed meanwhile */
    }
  };
  walk(cgroup);
  return out;
}

/** Processes whose command line names this node's containerd socket: its shims. */
export function shimsOf(n: K8sNode): number[] {
  const out: number[] = [];
  for (const e of readdirSync("/proc")) {
    const pid = Number(e);
    if (!pid) continue;
    try {
      const argv = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
      if (basename(argv[0] ?? "").startsWith("containerd-shim") && argv.includes(n.containerdSocket)) out.push(pid);
    } catch {
      /* gone */
    }
  }
  return out;
}

/**
 * The sockets of this node's shims: containerd names them /run/containerd/s/<sha256 of
 * "<containerd address>/<namespace>/<id>">, the same in 1.6 and 2.x.
 */
function shimSockets(n: K8sNode): string[] {
  const out: string[] = [];
  for (const pid of shimsOf(n)) {
    try {
      const argv = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
      const arg = (flag: string) => (argv.includes(flag) ? argv[argv.indexOf(flag) + 1] : undefined);
      const ns = arg("-namespace");
      const id = arg("-id");
      if (!ns || !id) continue;
      const key = join(n.containerdSocket, ns, id);
      for (const k of [key, join(key, "debug")]) out.push(join("/run/containerd/s", createHash("sha256").update(k).digest("hex")));
    } catch {
      /* gone */
    }
  }
  return out;
}

function removeDirDeepestFirst(d: string): void {
  if (!existsSync(d)) return;
  for (const e of readdirSync(d, { withFileTypes: true })) if (e.isDirectory()) removeDirDeepestFirst(join(d, e.name));
  rmdirSync(d);
}

/** Mount points at or under `dir`, deepest first (/proc/self/mounts escapes spaces as \040). */
export function mountsUnder(dir: string): string[] {
  const unescapeOctal = (s: string) => s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
  return readFileSync("/proc/self/mounts", "utf8")
    .split("\n")
    .map((l) => unescapeOctal(l.split(" ")[1] ?? ""))
    .filter((m) => m === dir || m.startsWith(`${dir}/`))
    .sort((a, b) => b.length - a.length);
}

/** Where this node left traces on the host, for tests of a clean stop. */
export function nodeLeftovers(n: K8sNode): string[] {
  const left: string[] = [];
  if (isOurProcess(n.kubeletPid, `--config=${n.kubeletConfig}`)) left.push(`kubelet pid ${n.kubeletPid}`);
  if (isOurProcess(n.containerdPid, n.containerdConfig)) left.push(`containerd pid ${n.containerdPid}`);
  for (const p of shimsOf(n)) left.push(`shim pid ${p}`);
  for (const h of cgroupHierarchies())
    if (existsSync(join(h, n.cgroupRoot)))
      left.push(`cgroup ${join(h, n.cgroupRoot)} (pids: ${pidsIn(join(h, n.cgroupRoot)).join(",") || "none"})`);
  for (const m of mountsUnder(n.dir)) left.push(`mount ${m}`);
  for (const l of containerLogLinks(n.dir)) left.push(`symlink ${l}`);
  return left;
}

/** The kubelet links every container log from /var/log/containers, whatever its root dir. */
function containerLogLinks(dir: string): string[] {
  const d = "/var/log/containers";
  if (!existsSync(d)) return [];
  return readdirSync(d)
    .map((e) => join(d, e))
    .filter((l) => {
      try {
        return readlinkSync(l).startsWith(`${dir}/`);
      } catch {
        return false;
      }
    });
}

/**
 * Stops the kubelet, kills the node's containers (every process in its cgroup root) and shims,
 * stops containerd, then removes its mounts, cgroups and log symlinks. Data stays unless `purge`.
 */
export async function stopNode(n: K8sNode, opts: { purge?: boolean } = {}): Promise<void> {
  await terminate(n.kubeletPid, `--config=${n.kubeletConfig}`);
  const hierarchies = cgroupHierarchies();
  const pidsRoot = hierarchies.find((h) => basename(h) === "pids") ?? hierarchies[0];
  if (pidsRoot) {
    const root = join(pidsRoot, n.cgroupRoot);
    for (const pid of pidsIn(root)) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        /* gone */
      }
    }
    await waitUntil(`node ${n.name}: containers in ${root} to die after SIGKILL`, 15_000, () => pidsIn(root).every((p) => !isAlive(p)));
  }
  const sockets = shimSockets(n);
  for (const pid of shimsOf(n)) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      /* gone */
    }
  }
  await waitUntil(`node ${n.name}: shims to die`, 10_000, () => shimsOf(n).every((p) => !isAlive(p)));
  // A killed shim leaves its socket in /run/containerd/s, shared by every containerd on the host.
  for (const s of sockets) rmSync(s, { force: true });
  await terminate(n.containerdPid, n.containerdConfig);
  // The kubelet bind-mounts its root dir onto itself and pods' volumes under it.
  for (const m of mountsUnder(n.dir)) {
    try {
      execFileSync("umount", ["-l", m], { stdio: "ignore" });
    } catch {
      /* already gone with its parent */
    }
  }
  // Once empty (the kubelet leaves its pod cgroups behind), deepest first.
  for (const h of hierarchies) {
    try {
      removeDirDeepestFirst(join(h, n.cgroupRoot));
    } catch (e) {
      throw new Error(`node ${n.name}: cannot remove cgroup ${join(h, n.cgroupRoot)}: ${(e as Error).message}`);
    }
  }
  for (const l of containerLogLinks(n.dir)) rmSync(l, { force: true });
  n.state = "stopped";
  n.kubeletPid = 0;
  n.containerdPid = 0;
  if (opts.purge) rmSync(n.dir, { recursive: true, force: true });
  else mkdirSync(dirname(n.containerdSocket), { recursive: true });
}
