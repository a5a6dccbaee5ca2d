// The Kubernetes test bed: a real cluster on 127.0.0.1 — etcd (Debian), kube-apiserver,
// kube-controller-manager, kube-scheduler (built by scripts/k8s-build.sh) and real nodes, each its
// own containerd + kubelet (k8snode.ts): node1 on Debian's containerd 1.6, node2 on containerd v2.
// Images (k8simages.ts) live in the registry test bed: pause as every node's sandbox image,
// busybox and a shell-less scratch image, also on the registry that wants credentials.
//
// Like the registry test bed: detached processes, state in $IY_STATE_DIR/k8s/testbed.json, a
// start reuses a healthy running bed, users hold leases and the last one out stops it (unless
// IY_KEEP_TESTBED=1 or `scripts/k8sbed.sh up` holds one). Nothing starts it but a caller: tests
// that need it call useK8sTestbed() in beforeAll, so runs without Kubernetes tests stay fast.
import { execFile, execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmdirSync, rmSync, writeFileSync } from "node:fs";
import { basename, join, resolve } from "node:path";
import { createDispatcher, drain, send } from "../../provider/http/client";
import { buildAndPushImages, imagesPresent, type K8sImage, type K8sImages } from "./k8simages";
import { ensureK8sPki, ensureNodeKubeconfig, kubeconfigOf, type K8sPki } from "./k8spki";
import {
  mountsUnder,
  planNode,
  shimsOf,
  startNode,
  stopNode,
  terminate,
  type K8sNode,
  type K8sNodeOptions,
  type K8sRuntime,
  type NodeContext,
} from "./k8snode";
import { KubeApi, readyCondition } from "./kubeapi";
import {
  defaultStateDir,
  freePort,
  isAlive,
  isOurProcess,
  liveLeases,
  logTail,
  repoRoot,
  spawnLogged,
  waitHttp,
  waitUntil,
  withLock,
} from "./processes";
import { releaseRegistryTestbed, startRegistryTestbed, type RegistryEndpoint } from "./registry";

export type { K8sImage, K8sImages, K8sNode, K8sNodeOptions, K8sRuntime };
export { nodeLeftovers, NODE_RUNTIME_LABEL } from "./k8snode";

/** Bump when configs or layout change, so a running older bed is replaced. */
const GENERATION = "2";
const KUBERNETES_VERSION_FILE = "kube-apiserver";
/** The `kubernetes` service's range: loopback, since nothing may listen on another address. */
const SERVICE_CIDR = "127.0.100.0/24";
const SERVICE_IP = "127.0.100.1";
const REGISTRY_LEASE = "k8s-testbed";
const START_LOCK_MS = 600_000;
const CONTROL_PLANE_READY_MS = 180_000;
const NODE_READY_MS = 180_000;
/** Host sysctls the kubelet rewrites (overcommit, panic on oops, keyring limits): restored at stop. */
const KERNEL_TUNABLES = [
  "vm.overcommit_memory",
  "vm.panic_on_oom",
  "kernel.panic",
  "kernel.panic_on_oops",
  "kernel.keys.root_maxkeys",
  "kernel.keys.root_maxbytes",
];

export const DEFAULT_NODES: { name: string; runtime: K8sRuntime }[] = [
  { name: "node1", runtime: "containerd1" },
  { name: "node2", runtime: "containerd2" },
];

export interface K8sProcess {
  pid: number;
  /** An argument only this process has: how a pid is recognised as ours. */
  marker: string;
  logFile: string;
  port: number;
}

export interface K8sRegistry {
  /** 127.0.0.1:PORT, as image references name it. */
  host: string;
  url: string;
  username?: string;
  password?: string;
}

export interface K8sTestbed {
  generation: string;
  stateDir: string;
  /** stateDir/k8s */
  dir: string;
  /** e.g. "v1.37.2" */
  kubernetesVersion: string;
  /** Admin kubeconfig (O=system:masters): kubectl --kubeconfig, or KUBECONFIG. */
  kubeconfig: string;
  /** https://127.0.0.1:PORT */
  server: string;
  caFile: string;
  adminCert: string;
  adminKey: string;
  bin: {
    /** Where kubectl, crictl, kubelet, the control plane and containerd2/ are. */
    dir: string;
    kubectl: string;
    crictl: string;
    /** Debian's ctr (for containerd1 nodes); each node names its own as `ctr`. */
    ctr: string;
    /** ctr from containerd v2 (for containerd2 nodes). */
    ctr2: string;
  };
  /** The `kubernetes` service address (no kube-proxy: in-cluster clients must dial `server`). */
  serviceIp: string;
  processes: { etcd: K8sProcess; apiserver: K8sProcess; controllerManager: K8sProcess; scheduler: K8sProcess };
  /** The registry test bed's anonymous registry and the one with htpasswd auth. */
  registries: { plain: K8sRegistry; auth: K8sRegistry };
  images: K8sImages;
  nodes: Record<string, K8sNode>;
  /** Milliseconds the last cold start took, by phase. */
  timings: Record<string, number>;
}

// ---------------------------------------------------------------------------------------------
// Paths and state

function bedDir(stateDir: string): string {
  return join(resolve(stateDir), "k8s");
}

function testbedJson(stateDir: string): string {
  return join(bedDir(stateDir), "testbed.json");
}

function readTestbed(stateDir: string): K8sTestbed | undefined {
  try {
    return JSON.parse(readFileSync(testbedJson(stateDir), "utf8")) as K8sTestbed;
  } catch {
    return undefined;
  }
}

function writeTestbed(tb: K8sTestbed): void {
  const file = testbedJson(tb.stateDir);
  const tmp = `${file}.${process.pid}`;
  writeFileSync(tmp, JSON.stringify(tb, null, 2), { mode: 0o600 });
  renameSync(tmp, file);
}

export function loadK8sTestbed(stateDir = defaultStateDir()): K8sTestbed {
  const tb = readTestbed(stateDir);
  if (!tb)
    throw new Error(
      `Kubernetes test bed not running: ${testbedJson(stateDir)} is missing. Start it with scripts/k8sbed.sh up, or call useK8sTestbed() in the test's beforeAll.`,
    );
  return tb;
}

/** The binaries' folder: $IY_K8S_BIN, else what scripts/k8s-build.sh builds into. */
export function k8sBinDir(): string {
  if (process.env.IY_K8S_BIN) return resolve(process.env.IY_K8S_BIN);
  return execFileSync("bash", [join(repoRoot(), "scripts", "k8s-build.sh"), "bin"], { encoding: "utf8" }).trim();
}

function requireBinaries(binDir: string): void {
  const missing = [
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
    "kubectl",
    "crictl",
    "containerd2/containerd",
    "containerd2/ctr",
    "pause/pause",
  ].filter((b) => !existsSync(join(binDir, b)));
  if (missing.length)
    throw new Error(
      `Kubernetes test bed: ${missing.join(", ")} missing in ${binDir}. Run scripts/k8s-build.sh ensure (about 30 min cold, seconds when cached).`,
    );
  for (const b of ["/usr/bin/etcd", "/usr/bin/containerd", "/usr/sbin/runc", "/usr/lib/cni/loopback"]) {
    if (!existsSync(b))
      throw new Error(
        `Kubernetes test bed: ${b} missing. Run scripts/bootstrap.sh (Debian packages etcd-server, containerd, runc, containernetworking-plugins).`,
      );
  }
}

// ---------------------------------------------------------------------------------------------
// Control plane

async function waitStatus200(
  what: string,
  url: string,
  proc: K8sProcess,
  tls: { ca?: string; insecure?: boolean },
  ms: number,
): Promise<void> {
  const dispatcher = createDispatcher({
    tls: { ca: tls.ca ? [readFileSync(tls.ca, "utf8")] : undefined, insecure: tls.insecure },
    connections: 1,
    connectTimeoutMs: 2_000,
    headersTimeoutMs: 10_000,
  });
  try {
    // Until its post-start hooks finish the apiserver answers 500 (or 403 before RBAC exists).
    await waitUntil(`${what}: wait for 200 from ${url}`, ms, async () => {
      if (!isOurProcess(proc.pid, proc.marker)) throw new Error(`${what} exited before ${url} answered 200:\n${logTail(proc.logFile)}`);
      try {
        const res = await send({ method: "GET", url, ok: [200, 401, 403, 404, 500, 503], operation: what, dispatcher });
        await drain(res);
        return res.status === 200;
      } catch {
        return false;
      }
    });
  } finally {
    await dispatcher.close();
  }
}

function spawn(dir: string, name: string, cmd: string, args: string[], marker: string, port: number): K8sProcess {
  const logFile = join(dir, "logs", `${name}.log`);
  const pid = spawnLogged(cmd, args, logFile, join(dir, "run", `${name}.pid`));
  return { pid, marker, logFile, port };
}

async function startEtcd(dir: string): Promise<K8sProcess> {
  const data = join(dir, "etcd");
  const [client, peer] = [await freePort(), await freePort()];
  const marker = `--data-dir=${data}`;
  const p = spawn(
    dir,
    "etcd",
    "/usr/bin/etcd",
    [
      "--name=imageyard",
      marker,
      `--listen-client-urls=http://127.0.0.1:${client}`,
      `--advertise-client-urls=http://127.0.0.1:${client}`,
      `--listen-peer-urls=http://127.0.0.1:${peer}`,
      `--initial-advertise-peer-urls=http://127.0.0.1:${peer}`,
      `--initial-cluster=imageyard=http://127.0.0.1:${peer}`,
      "--logger=zap",
      "--log-outputs=stderr",
    ],
    marker,
    client,
  );
  await waitHttp(`http://127.0.0.1:${client}/health`, [200], p.pid, marker, p.logFile, undefined, CONTROL_PLANE_READY_MS);
  return p;
}

async function startApiserver(dir: string, binDir: string, pki: K8sPki, etcd: K8sProcess, port: number): Promise<K8sProcess> {
  const marker = `--tls-private-key-file=${pki.apiserverKey}`;
  const p = spawn(
    dir,
    "kube-apiserver",
    join(binDir, "kube-apiserver"),
    [
      `--etcd-servers=http://127.0.0.1:${etcd.port}`,
      "--bind-address=127.0.0.1",
      "--advertise-address=127.0.0.1",
      `--secure-port=${port}`,
      `--tls-cert-file=${pki.apiserverCert}`,
      marker,
      `--client-ca-file=${pki.caFile}`,
      `--service-account-key-file=${pki.saPub}`,
      `--service-account-signing-key-file=${pki.saKey}`,
      "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
      // Endpoints refuse loopback addresses: no reconciler for the `kubernetes` service.
      `--service-cluster-ip-range=${SERVICE_CIDR}`,
      "--endpoint-reconciler-type=none",
      "--authorization-mode=Node,RBAC",
      "--enable-admission-plugins=NodeRestriction",
      `--kubelet-client-certificate=${pki.kubeletClientCert}`,
      `--kubelet-client-key=${pki.kubeletClientKey}`,
      // Nodes carry InternalIP 127.0.0.1 (patched in); without this the apiserver resolves node names.
      "--kubelet-preferred-address-types=InternalIP",
      "--allow-privileged=true",
      "--profiling=false",
      "--v=1",
    ],
    marker,
    port,
  );
  await waitStatus200("kube-apiserver", `https://127.0.0.1:${port}/readyz`, p, { ca: pki.caFile }, CONTROL_PLANE_READY_MS);
  return p;
}

async function startController(dir: string, binDir: string, pki: K8sPki, which: "controller-manager" | "scheduler"): Promise<K8sProcess> {
  const kubeconfig = kubeconfigOf(pki, which);
  const port = await freePort();
  const marker = `--kubeconfig=${kubeconfig}`;
  const common = [
    marker,
    `--authentication-kubeconfig=${kubeconfig}`,
    `--authorization-kubeconfig=${kubeconfig}`,
    "--bind-address=127.0.0.1",
    `--secure-port=${port}`,
    "--leader-elect=false",
    "--profiling=false",
    "--v=1",
  ];
  const extra =
    which === "controller-manager"
      ? [
          `--service-account-private-key-file=${pki.saKey}`,
          `--root-ca-file=${pki.caFile}`,
          "--use-service-account-credentials=true",
          `--cluster-signing-cert-file=${pki.caFile}`,
          `--cluster-signing-key-file=${pki.caKey}`,
        ]
      : [];
  const p = spawn(dir, `kube-${which}`, join(binDir, `kube-${which}`), [...common, ...extra], marker, port);
  // Self-signed serving certificate; /healthz is open to anyone.
  await waitStatus200(`kube-${which}`, `https://127.0.0.1:${port}/healthz`, p, { insecure: true }, CONTROL_PLANE_READY_MS);
  return p;
}

// ---------------------------------------------------------------------------------------------
// Host state the kubelet changes

function saveSysctls(dir: string): void {
  const file = join(dir, "sysctl-saved.json");
  if (existsSync(file)) return;
  const saved: Record<string, string> = {};
  for (const k of KERNEL_TUNABLES) {
    const p = `/proc/sys/${k.replace(/\./g, "/")}`;
    if (existsSync(p)) saved[k] = readFileSync(p, "utf8").trim();
  }
  writeFileSync(file, JSON.stringify(saved, null, 1));
}

function restoreSysctls(dir: string): void {
  const file = join(dir, "sysctl-saved.json");
  if (!existsSync(file)) return;
  const saved = JSON.parse(readFileSync(file, "utf8")) as Record<string, string>;
  for (const [k, v] of Object.entries(saved)) {
    try {
      writeFileSync(`/proc/sys/${k.replace(/\./g, "/")}`, v);
    } catch {
      /* read-only here: nothing was changed either */
    }
  }
  rmSync(file);
}

/** Any kubelet on this host (another checkout's bed too). */
function kubeletsRunning(): boolean {
  for (const e of readdirSync("/proc")) {
    if (!/^\d+$/.test(e)) continue;
    try {
      if (basename(readFileSync(`/proc/${e}/cmdline`, "utf8").split("\0")[0] ?? "") === "kubelet" && isAlive(Number(e))) return true;
    } catch {
      /* gone */
    }
  }
  return false;
}

/** The kubelet's fixed host paths, whatever its --root-dir: removed when no kubelet is left. */
function cleanKubeletHostPaths(): void {
  if (kubeletsRunning()) return;
  rmSync("/var/lib/kubelet/device-plugins/kubelet.sock", { force: true });
  for (const d of ["/var/lib/kubelet/device-plugins", "/var/lib/kubelet", "/var/log/containers"]) {
    try {
      rmdirSync(d);
    } catch {
      /* not empty or not there */
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Nodes

function nodeContext(tb: Pick<K8sTestbed, "dir" | "bin" | "caFile" | "images">): NodeContext {
  return { dir: tb.dir, binDir: tb.bin.dir, caFile: tb.caFile, sandboxImage: tb.images.pause.ref };
}

function adminApi(tb: K8sTestbed): KubeApi {
  return new KubeApi(tb.server, { caFile: tb.caFile, certFile: tb.adminCert, keyFile: tb.adminKey });
}

/**
 * Waits until node `n` registered, gives it its address and waits for Ready. The kubelet refuses
 * a loopback --node-ip ("nodeIP can't be loopback address") and registers no addresses, so the
 * apiserver could not reach it for logs or exec; it never overwrites a patched address.
 */
async function waitNodeReady(api: KubeApi, n: K8sNode): Promise<void> {
  const alive = () => {
    if (!isOurProcess(n.kubeletPid, `--config=${n.kubeletConfig}`))
      throw new Error(`node ${n.name}: kubelet exited:\n${logTail(n.kubeletLog)}`);
  };
  await waitUntil(
    `node ${n.name}: wait for the kubelet to register the Node`,
    NODE_READY_MS,
    async () => (alive(), (await api.node(n.name)) !== undefined),
  );
  await api.mergePatch(`/api/v1/nodes/${n.name}/status`, {
    status: {
      addresses: [
        { type: "InternalIP", address: "127.0.0.1" },
        { type: "Hostname", address: n.name },
      ],
    },
  });
  let last = "";
  try {
    await waitUntil(`node ${n.name}: wait for Ready=True`, NODE_READY_MS, async () => {
      alive();
      const c = readyCondition(await api.node(n.name));
      last = c ? `${c.status} (${c.reason ?? ""}: ${c.message ?? ""})` : "no Ready condition";
      return c?.status === "True";
    });
  } catch (e) {
    throw new Error(`${(e as Error).message}; last Ready=${last}. kubelet log:\n${logTail(n.kubeletLog)}`);
  }
}

async function bringUpNode(tb: K8sTestbed, api: KubeApi, name: string, opts: K8sNodeOptions): Promise<K8sNode> {
  const old = tb.nodes[name];
  const kubeconfig = ensureNodeKubeconfig(pkiOf(tb), name, tb.server);
  const n = await planNode(nodeContext(tb), name, opts, kubeconfig, old);
  tb.nodes[name] = n;
  await startNode(n, nodeContext(tb));
  await waitNodeReady(api, n);
  return n;
}

function pkiOf(tb: K8sTestbed): K8sPki {
  return ensureK8sPki(join(tb.dir, "pki"), tb.server, tb.serviceIp);
}

function nodeRunning(n: K8sNode): boolean {
  return (
    n.state === "running" && isOurProcess(n.kubeletPid, `--config=${n.kubeletConfig}`) && isOurProcess(n.containerdPid, n.containerdConfig)
  );
}

// ---------------------------------------------------------------------------------------------
// The bed

function registryView(ep: RegistryEndpoint): K8sRegistry {
  return ep.username ? { host: ep.host, url: ep.url, username: ep.username, password: ep.password } : { host: ep.host, url: ep.url };
}

async function controlPlaneHealthy(tb: K8sTestbed): Promise<boolean> {
  if (tb.generation !== GENERATION) return false;
  for (const p of Object.values(tb.processes)) if (!isOurProcess(p.pid, p.marker)) return false;
  const api = adminApi(tb);
  try {
    return (await api.get<unknown>("/api/v1/namespaces/default")) !== undefined;
  } catch {
    return false;
  } finally {
    await api.close();
  }
}

async function stopUnlocked(stateDir: string): Promise<void> {
  const tb = readTestbed(stateDir);
  const dir = bedDir(stateDir);
  // Every step runs even when one fails; the failures are reported together at the end.
  const errors: string[] = [];
  const step = async (fn: () => unknown) => {
    try {
      await fn();
    } catch (e) {
      errors.push((e as Error).message);
    }
  };
  if (tb) {
    for (const n of Object.values(tb.nodes)) await step(() => stopNode(n));
    const { scheduler, controllerManager, apiserver, etcd } = tb.processes;
    for (const p of [scheduler, controllerManager, apiserver, etcd]) await step(() => terminate(p.pid, p.marker));
  }
  // testbed.json stays while something may still run, so that `down` can be tried again.
  if (errors.length)
    throw new Error(`Kubernetes test bed: stop left work undone (run scripts/k8sbed.sh down again):\n${errors.join("\n")}`);
  await step(() => restoreSysctls(dir));
  await step(() => cleanKubeletHostPaths());
  rmSync(testbedJson(stateDir), { force: true });
  rmSync(join(dir, "leases"), { recursive: true, force: true });
  if (tb) await step(() => releaseRegistryTestbed(stateDir, REGISTRY_LEASE));
  if (errors.length) throw new Error(`Kubernetes test bed: stopped, but: ${errors.join("; ")}`);
}

/** Control-plane processes a failed cold start spawned before testbed.json named them. */
async function stopStrays(dir: string): Promise<void> {
  const run = join(dir, "run");
  if (!existsSync(run)) return;
  for (const f of readdirSync(run)) {
    const pid = Number(readFileSync(join(run, f), "utf8"));
    // Our own spawns only: their command lines name this bed's directory.
    const mine = (() => {
      try {
        return readFileSync(`/proc/${pid}/cmdline`, "utf8").includes(dir);
      } catch {
        return false;
      }
    })();
    if (pid && mine && isAlive(pid)) {
      process.kill(pid, "SIGKILL");
      await waitUntil(`stray pid ${pid} (${f}) to die after SIGKILL`, 5_000, () => !isAlive(pid));
    }
  }
  await releaseRegistryTestbed(resolve(dir, ".."), REGISTRY_LEASE).catch(() => undefined);
}

async function coldStart(stateDir: string, nodes: { name: string; runtime: K8sRuntime }[]): Promise<K8sTestbed> {
  const t0 = Date.now();
  const timings: Record<string, number> = {};
  const mark = (phase: string) => (timings[phase] = Date.now() - t0);
  const dir = bedDir(stateDir);
  const binDir = k8sBinDir();
  requireBinaries(binDir);
  // A fresh cluster: no objects or node data from an earlier run.
  for (const d of ["etcd", "nodes", "logs", "run"]) {
    // A bed that died without a stop leaves the kubelet's mounts; rm -rf would stop at them.
    for (const m of mountsUnder(join(dir, d))) execFileSync("umount", ["-l", m]);
    rmSync(join(dir, d), { recursive: true, force: true });
  }
  mkdirSync(join(dir, "logs"), { recursive: true });
  const reg = await startRegistryTestbed(stateDir, { lease: REGISTRY_LEASE, persistent: true });
  const { upstream: plain, mirror: auth } = reg.registries;
  const apiPort = await freePort();
  const server = `https://127.0.0.1:${apiPort}`;
  const pki = ensureK8sPki(join(dir, "pki"), server, SERVICE_IP);
  mark("pki");
  // Images build and push while the control plane starts.
  const imagesDone = buildAndPushImages(join(dir, "images"), binDir, plain, auth).then((i) => (mark("images"), i));
  // Awaited below; this only keeps a failure from being unhandled while etcd or the apiserver fail first.
  imagesDone.catch(() => undefined);
  const etcd = await startEtcd(dir);
  mark("etcd");
  const apiserver = await startApiserver(dir, binDir, pki, etcd, apiPort);
  mark("apiserver");
  const [controllerManager, scheduler] = await Promise.all([
    startController(dir, binDir, pki, "controller-manager"),
    startController(dir, binDir, pki, "scheduler"),
  ]);
  mark("controllers");
  const images = await imagesDone;
  const version =
    /v\d+\.\d+\.\d+/.exec(execFileSync(join(binDir, KUBERNETES_VERSION_FILE), ["--version"], { encoding: "utf8" }))?.[0] ?? "unknown";
  const tb: K8sTestbed = {
    generation: GENERATION,
    stateDir: resolve(stateDir),
    dir,
    kubernetesVersion: version,
    kubeconfig: pki.adminKubeconfig,
    server,
    caFile: pki.caFile,
    adminCert: pki.adminCert,
    adminKey: pki.adminKey,
    bin: {
      dir: binDir,
      kubectl: join(binDir, "kubectl"),
      crictl: join(binDir, "crictl"),
      ctr: "/usr/bin/ctr",
      ctr2: join(binDir, "containerd2", "ctr"),
    },
    serviceIp: SERVICE_IP,
    processes: { etcd, apiserver, controllerManager, scheduler },
    registries: { plain: registryView(plain), auth: registryView(auth) },
    images,
    nodes: {},
    timings,
  };
  writeTestbed(tb);
  saveSysctls(dir);
  const api = adminApi(tb);
  try {
    await Promise.all(nodes.map((n) => bringUpNode(tb, api, n.name, { runtime: n.runtime })));
    mark("nodes");
    // Pods are refused until the service-account controller made `default`.
    await waitUntil(
      "wait for ServiceAccount default/default",
      CONTROL_PLANE_READY_MS,
      async () => (await api.get("/api/v1/namespaces/default/serviceaccounts/default")) !== undefined,
    );
    mark("total");
  } finally {
    writeTestbed(tb);
    await api.close();
  }
  return tb;
}

export interface StartK8sOptions {
  /** Who uses the bed (a lease file name); the bed stays up while a live lease is left. */
  lease?: string;
  /** The process whose life the lease lasts (default: this one). */
  holderPid?: number;
  /** A lease that outlives its process (scripts/k8sbed.sh up). */
  persistent?: boolean;
  /** The nodes a cold start brings up (default node1 on containerd 1.6, node2 on containerd v2). */
  nodes?: { name: string; runtime: K8sRuntime }[];
}

/**
 * Starts the cluster (about 20 s on 2 cores with the binaries built), or joins the healthy one
 * running for this state dir, restarting any of its default nodes that is not running.
 */
export async function startK8sTestbed(stateDir = defaultStateDir(), opts: StartK8sOptions = {}): Promise<K8sTestbed> {
  const dir = bedDir(stateDir);
  const nodes = opts.nodes ?? DEFAULT_NODES;
  return withLock(
    dir,
    async () => {
      let tb = readTestbed(stateDir);
      const registryOk = async (t: K8sTestbed) => {
        const reg = await startRegistryTestbed(stateDir, { lease: REGISTRY_LEASE, persistent: true });
        const { upstream, mirror } = reg.registries;
        return (
          t.registries.plain.host === upstream.host &&
          t.registries.auth.host === mirror.host &&
          (await imagesPresent(t.images, upstream, mirror))
        );
      };
      if (tb && (await controlPlaneHealthy(tb)) && (await registryOk(tb))) {
        const api = adminApi(tb);
        try {
          for (const n of nodes)
            if (!tb.nodes[n.name] || !nodeRunning(tb.nodes[n.name]!)) {
              if (tb.nodes[n.name]) await stopNode(tb.nodes[n.name]!);
              await bringUpNode(tb, api, n.name, { runtime: n.runtime });
            }
        } finally {
          writeTestbed(tb);
          await api.close();
        }
      } else {
        if (tb) await stopUnlocked(stateDir);
        try {
          tb = await coldStart(stateDir, nodes);
        } catch (e) {
          // Leave nothing half-started behind (what ran is in testbed.json or in run/*.pid).
          await stopUnlocked(stateDir).catch(() => undefined);
          await stopStrays(dir);
          throw e;
        }
      }
      if (opts.lease) {
        mkdirSync(join(dir, "leases"), { recursive: true });
        writeFileSync(join(dir, "leases", opts.lease), opts.persistent ? "persistent\n" : `${opts.holderPid ?? process.pid}\n`);
      }
      return tb;
    },
    START_LOCK_MS,
  );
}

/** Drops `lease`; stops the bed when no live lease is left (unless IY_KEEP_TESTBED=1). */
export async function releaseK8sTestbed(stateDir: string, lease: string): Promise<boolean> {
  const dir = bedDir(stateDir);
  if (!existsSync(dir)) return false;
  return withLock(
    dir,
    async () => {
      rmSync(join(dir, "leases", lease), { force: true });
      if (!readTestbed(stateDir) || process.env.IY_KEEP_TESTBED === "1" || liveLeases(dir).length > 0) return false;
      await stopUnlocked(stateDir);
      return true;
    },
    START_LOCK_MS,
  );
}

/** Stops every node and the control plane (our pids only), and undoes what kubelets did to the host. */
export async function stopK8sTestbed(stateDir = defaultStateDir()): Promise<void> {
  await withLock(bedDir(stateDir), () => stopUnlocked(stateDir), START_LOCK_MS);
}

/**
 * For tests: starts or joins the bed under the lease of this vitest run (k8s.setup.ts names it and
 * releases it when the run ends), so the bed starts once per run and only when a test needs it.
 */
export async function useK8sTestbed(stateDir = defaultStateDir()): Promise<K8sTestbed> {
  const lease = process.env.IY_K8S_LEASE ?? `pid-${process.pid}`;
  const holderPid = Number(process.env.IY_K8S_LEASE_PID ?? process.pid);
  return startK8sTestbed(stateDir, { lease, holderPid });
}

/**
 * Adds node `name` (or starts it again when it was stopped, keeping its images) and waits until
 * it is Ready. Default runtime: containerd1.
 */
export async function addK8sNode(name: string, opts: K8sNodeOptions = {}, stateDir = defaultStateDir()): Promise<K8sNode> {
  return withLock(
    bedDir(stateDir),
    async () => {
      const tb = loadK8sTestbed(stateDir);
      const old = tb.nodes[name];
      if (old && opts.runtime && opts.runtime !== old.runtime)
        throw new Error(`node ${name} exists with runtime ${old.runtime}; remove it first (removeK8sNode) to add it with ${opts.runtime}`);
      if (old && nodeRunning(old)) return old;
      if (old) await stopNode(old);
      saveSysctls(tb.dir);
      const api = adminApi(tb);
      try {
        return await bringUpNode(tb, api, name, opts);
      } finally {
        writeTestbed(tb);
        await api.close();
      }
    },
    START_LOCK_MS,
  );
}

/**
 * Holds the bed for one test file until the returned release is called. Files that add or remove
 * nodes, or run DaemonSets and pods over every node, see each other's nodes come and go: a set
 * waiting for a node another file then removes never becomes ready. vitest runs two files at a
 * time, so every file that uses the bed takes this hold first (the other worker runs other files).
 */
export function holdK8sBed(waitMs = 2_400_000, stateDir = defaultStateDir()): Promise<() => void> {
  return new Promise((held, failed) => {
    let release!: () => void;
    const released = new Promise<void>((r) => {
      release = r;
    });
    withLock(
      join(bedDir(stateDir), "hold"),
      async () => {
        held(release);
        await released;
      },
      waitMs,
    ).catch(failed);
  });
}

/** Stops node `name`'s kubelet, containers and containerd; its data and Node object stay (it goes NotReady). */
export async function stopK8sNode(name: string, stateDir = defaultStateDir()): Promise<K8sNode> {
  return withLock(
    bedDir(stateDir),
    async () => {
      const tb = loadK8sTestbed(stateDir);
      const n = tb.nodes[name];
      if (!n) throw new Error(`Kubernetes test bed: no node ${name}; nodes: ${Object.keys(tb.nodes).join(", ")}`);
      try {
        await stopNode(n);
      } finally {
        writeTestbed(tb);
      }
      return n;
    },
    START_LOCK_MS,
  );
}

/** Stops node `name`, deletes its Node object and its data: as if it never joined. */
export async function removeK8sNode(name: string, stateDir = defaultStateDir()): Promise<void> {
  await withLock(
    bedDir(stateDir),
    async () => {
      const tb = loadK8sTestbed(stateDir);
      const n = tb.nodes[name];
      if (n) await stopNode(n, { purge: true });
      delete tb.nodes[name];
      writeTestbed(tb);
      const api = adminApi(tb);
      try {
        await api.delete(`/api/v1/nodes/${encodeURIComponent(name)}`);
      } finally {
        await api.close();
      }
    },
    START_LOCK_MS,
  );
}

// ---------------------------------------------------------------------------------------------
// Tools against the bed (independent of the project's own code)

export interface ToolResult {
  stdout: string;
  stderr: string;
}

function run(cmd: string, args: string[], env: Record<string, string>, input?: string, timeoutMs = 120_000): Promise<ToolResult> {
  return new Promise((ok, fail) => {
    const child = execFile(
      cmd,
      args,
      { env: { ...process.env, ...env }, maxBuffer: 64 << 20, timeout: timeoutMs },
      (err, stdout, stderr) => {
        if (err) fail(Object.assign(new Error(`${basename(cmd)} ${args.join(" ")}: ${stderr.trim() || err.message}`), { stdout, stderr }));
        else ok({ stdout, stderr });
      },
    );
    if (input !== undefined) child.stdin?.end(input);
  });
}

/** kubectl with the admin kubeconfig; `input` goes to stdin (`apply -f -`). */
export function kubectl(tb: K8sTestbed, args: string[], input?: string): Promise<ToolResult> {
  return run(tb.bin.kubectl, args, { KUBECONFIG: tb.kubeconfig }, input);
}

/** crictl against node `node`'s CRI socket. */
export function crictl(tb: K8sTestbed, node: string, args: string[]): Promise<ToolResult> {
  const n = tb.nodes[node];
  if (!n) throw new Error(`Kubernetes test bed: no node ${node}`);
  return run(tb.bin.crictl, ["--runtime-endpoint", n.criEndpoint, "--image-endpoint", n.criEndpoint, "--timeout", "30s", ...args], {});
}

/** ctr (the node runtime's own) against node `node`'s containerd, namespace k8s.io. */
export function ctr(tb: K8sTestbed, node: string, args: string[]): Promise<ToolResult> {
  const n = tb.nodes[node];
  if (!n) throw new Error(`Kubernetes test bed: no node ${node}`);
  // ctr 2.x rejects a relative --address ("invalid (non-empty) authority"); ours is absolute.
  return run(n.ctr, ["--address", n.containerdSocket, "--namespace", n.namespace, ...args], {});
}

/** Resident memory per process of the bed (control plane, kubelets, containerds, shims, containers), in KiB. */
export function k8sTestbedRss(tb: K8sTestbed): Record<string, number> {
  const rss = (pid: number) => {
    try {
      return Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1] ?? 0);
    } catch {
      return 0;
    }
  };
  const out: Record<string, number> = {};
  for (const [name, p] of Object.entries(tb.processes)) out[name] = rss(p.pid);
  for (const n of Object.values(tb.nodes)) {
    if (n.state !== "running") continue;
    out[`${n.name}/kubelet`] = rss(n.kubeletPid);
    out[`${n.name}/containerd`] = rss(n.containerdPid);
    const shims = shimsOf(n).reduce((sum, pid) => sum + rss(pid), 0);
    out[`${n.name}/shims`] = shims;
  }
  return out;
}

/** Image references tests use, by name (see K8sImages). */
export function imageRef(tb: K8sTestbed, name: keyof K8sImages): string {
  return tb.images[name].ref;
}
