// The Kubernetes test bed itself: real nodes that go Ready, run hostNetwork pods, pull from the
// bed's registries (with and without credentials), take a node that joins later and leave the
// host clean when stopped. Checked with kubectl, crictl and ctr, never with the project's code.
import { existsSync, readdirSync, readFileSync, readlinkSync, rmSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  addK8sNode,
  crictl,
  ctr,
  k8sTestbedRss,
  kubectl,
  NODE_RUNTIME_LABEL,
  nodeLeftovers,
  removeK8sNode,
  startK8sTestbed,
  stopK8sTestbed,
  useK8sTestbed,
  type K8sNode,
  type K8sTestbed,
} from "../../testbed/k8s";
import { isOurProcess, waitUntil } from "../../testbed/processes";
import { holdK8sBedForThisFile } from "../../support/k8shold";

// One file at a time on the bed: others add and remove nodes.
holdK8sBedForThisFile();

const POD_MS = 120_000;
const NS = `k8sbed-test-${process.pid}`;

interface PodJson {
  metadata: { name: string };
  spec: { nodeName?: string };
  status: {
    phase?: string;
    conditions?: { type: string; status: string }[];
    initContainerStatuses?: ContainerStatus[];
    containerStatuses?: ContainerStatus[];
  };
}
interface ContainerStatus {
  name: string;
  ready: boolean;
  state?: { waiting?: { reason?: string; message?: string }; running?: object; terminated?: { exitCode: number } };
}

async function json<T>(tb: K8sTestbed, args: string[]): Promise<T> {
  return JSON.parse((await kubectl(tb, [...args, "-o", "json"])).stdout) as T;
}

async function pods(tb: K8sTestbed, app: string): Promise<PodJson[]> {
  return (await json<{ items: PodJson[] }>(tb, ["get", "pods", "-n", NS, "-l", `app=${app}`])).items;
}

function daemonSet(name: string, spec: Record<string, unknown>): string {
  return JSON.stringify({
    apiVersion: "apps/v1",
    kind: "DaemonSet",
    metadata: { name, namespace: NS },
    spec: {
      selector: { matchLabels: { app: name } },
      template: {
        metadata: { labels: { app: name } },
        // hostNetwork only: the bed has no pod network (CNI is loopback only).
        spec: {
          hostNetwork: true,
          automountServiceAccountToken: false,
          enableServiceLinks: false,
          terminationGracePeriodSeconds: 1,
          tolerations: [{ operator: "Exists" }],
          ...spec,
        },
      },
    },
  });
}

/** Waits until every node in `nodes` runs exactly one Ready pod of `app`; returns them by node. */
async function readyOnEveryNode(tb: K8sTestbed, app: string, nodes: string[]): Promise<Map<string, PodJson>> {
  let seen = "";
  const byNode = new Map<string, PodJson>();
  try {
    await waitUntil(`pods of ${app} Ready on ${nodes.join(", ")}`, POD_MS, async () => {
      byNode.clear();
      for (const p of await pods(tb, app))
        if (p.spec.nodeName && p.status.conditions?.some((c) => c.type === "Ready" && c.status === "True")) byNode.set(p.spec.nodeName, p);
      seen = [...byNode.keys()].join(", ");
      return nodes.every((n) => byNode.has(n));
    });
  } catch (e) {
    const detail = (
      await kubectl(tb, ["get", "pods", "-n", NS, "-l", `app=${app}`, "-o", "wide"]).catch((x: Error) => ({ stdout: x.message }))
    ).stdout;
    throw new Error(`${(e as Error).message}; Ready on: ${seen || "none"}\n${detail}`);
  }
  return byNode;
}

/** Listening TCP sockets (address:port) held by `pid`, from /proc/net/tcp{,6}. */
function listeningAddresses(pid: number): string[] {
  const inodes = new Set<string>();
  try {
    for (const fd of readdirSync(`/proc/${pid}/fd`)) {
      const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`));
      if (m) inodes.add(m[1]!);
    }
  } catch {
    return [];
  }
  const out: string[] = [];
  for (const file of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    for (const line of readFileSync(file, "utf8").split("\n").slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f[3] !== "0A" || !inodes.has(f[9] ?? "")) continue; // 0A: LISTEN
      const [hex, port] = f[1]!.split(":");
      const ip =
        hex!.length === 8
          ? hex!
              .match(/../g)!
              .reverse()
              .map((b) => parseInt(b, 16))
              .join(".")
          : hex === "00000000000000000000000000000000"
            ? "::"
            : `v6:${hex}`;
      out.push(`${ip}:${parseInt(port!, 16)}`);
    }
  }
  return out;
}

// Pods pull and start within seconds, but a loaded 2-core host can stretch that: the waits inside
// have their own deadlines (POD_MS), the tests a little more.
describe("Kubernetes test bed", { timeout: 2 * POD_MS + 60_000 }, () => {
  let tb: K8sTestbed;

  beforeAll(async () => {
    tb = await useK8sTestbed();
    await kubectl(tb, ["create", "namespace", NS]);
  });

  afterAll(async () => {
    if (tb) await kubectl(tb, ["delete", "namespace", NS, "--wait=false"]).catch(() => undefined);
  });

  it("runs node1 on containerd 1.6 and node2 on containerd v2, both Ready with InternalIP 127.0.0.1 and their runtime as a label", async () => {
    const nodes = (
      await json<{
        items: {
          metadata: { name: string };
          status: {
            conditions: { type: string; status: string }[];
            addresses: { type: string; address: string }[];
            nodeInfo: { containerRuntimeVersion: string; kubeletVersion: string };
          };
        }[];
      }>(tb, ["get", "nodes"])
    ).items;
    const byName = new Map(nodes.map((n) => [n.metadata.name, n]));
    for (const name of ["node1", "node2"]) {
      const n = byName.get(name);
      expect(n, `node ${name}`).toBeDefined();
      expect(n!.status.conditions.find((c) => c.type === "Ready")?.status).toBe("True");
      expect(n!.status.addresses).toContainEqual({ type: "InternalIP", address: "127.0.0.1" });
      expect(n!.status.nodeInfo.kubeletVersion).toBe(tb.kubernetesVersion);
      // What the node reports is what the bed says it started.
      expect(n!.status.nodeInfo.containerRuntimeVersion).toContain(tb.nodes[name]!.runtimeVersion.split("~")[0]);
    }
    expect(
      (await kubectl(tb, ["get", "nodes", "-l", `${NODE_RUNTIME_LABEL}=containerd2`, "-o", "name"])).stdout.trim().split("\n"),
    ).toContain("node/node2");
    expect(tb.nodes.node1!.runtime).toBe("containerd1");
    expect(tb.nodes.node1!.runtimeVersion).toMatch(/^1\./);
    expect(tb.nodes.node2!.runtime).toBe("containerd2");
    expect(tb.nodes.node2!.runtimeVersion).toMatch(/^2\./);
  });

  it("listens on 127.0.0.1 only (control plane, kubelets, containerds)", () => {
    const pids = [
      ...Object.values(tb.processes).map((p) => p.pid),
      ...Object.values(tb.nodes).flatMap((n) => [n.kubeletPid, n.containerdPid]),
    ];
    const addrs = pids.flatMap((p) => listeningAddresses(p));
    expect(addrs.length).toBeGreaterThan(pids.length);
    expect(addrs.filter((a) => !a.startsWith("127.0.0.1:"))).toEqual([]);
  });

  it("runs a hostNetwork DaemonSet pod on every node, and kubectl logs reaches it through the kubelet", async () => {
    const name = "busybox";
    await kubectl(
      tb,
      ["apply", "-f", "-"],
      daemonSet(name, {
        containers: [
          {
            name: "main",
            image: tb.images.busybox.ref,
            command: ["/bin/sh", "-c", "echo started on $NODE; exec sleep 86400"],
            env: [{ name: "NODE", valueFrom: { fieldRef: { fieldPath: "spec.nodeName" } } }],
          },
        ],
      }),
    );
    const byNode = await readyOnEveryNode(tb, name, ["node1", "node2"]);
    for (const [node, pod] of byNode)
      expect((await kubectl(tb, ["logs", "-n", NS, pod.metadata.name])).stdout.trim()).toBe(`started on ${node}`);
  });

  it("runs the shell-less scratch image's binary on every node", async () => {
    await kubectl(
      tb,
      ["apply", "-f", "-"],
      daemonSet("scratch", { containers: [{ name: "main", image: tb.images.scratch.ref, args: ["sleep"] }] }),
    );
    await readyOnEveryNode(tb, "scratch", ["node1", "node2"]);
  });

  it("pulls from the auth registry with an imagePullSecret on both runtimes, and is refused (401) without it", async () => {
    const auth = tb.registries.auth;
    await kubectl(tb, [
      "create",
      "secret",
      "docker-registry",
      "regcred",
      "-n",
      NS,
      `--docker-server=${auth.host}`,
      `--docker-username=${auth.username}`,
      `--docker-password=${auth.password}`,
    ]);
    const spec = (secret: boolean) => ({
      ...(secret ? { imagePullSecrets: [{ name: "regcred" }] } : {}),
      initContainers: [{ name: "pull", image: tb.images.privateBusybox.ref, command: ["/bin/true"] }],
      containers: [{ name: "pause", image: tb.images.pause.ref }],
    });
    await kubectl(tb, ["apply", "-f", "-"], daemonSet("private", spec(true)));
    await kubectl(tb, ["apply", "-f", "-"], daemonSet("private-nosecret", spec(false)));
    await readyOnEveryNode(tb, "private", ["node1", "node2"]);
    // The waiting message alternates between the pull error (ErrImagePull) and a back-off notice.
    // Each runtime words the registry's 401 its own way: containerd 1.6 "…failed with status code
    // [manifests …]: 401 Unauthorized", containerd 2 "authorization failed: no basic auth credentials".
    const REFUSED = /401 Unauthorized|authorization failed: no basic auth credentials/;
    const refused = new Map<string, string>();
    const last = new Map<string, string>();
    await waitUntil("pull without the secret to fail with 401 on node1 and node2", POD_MS, async () => {
      for (const p of await pods(tb, "private-nosecret")) {
        const w = p.status.initContainerStatuses?.[0]?.state?.waiting;
        if (!p.spec.nodeName || !w?.message) continue;
        last.set(p.spec.nodeName, `${w.reason}: ${w.message}`);
        if (REFUSED.test(w.message)) refused.set(p.spec.nodeName, w.message);
      }
      return refused.has("node1") && refused.has("node2");
    }).catch((e: Error) => Promise.reject(new Error(`${e.message}; last: ${JSON.stringify(Object.fromEntries(last))}`)));
    expect([...refused.keys()].sort()).toEqual(["node1", "node2"]);
    expect((await pods(tb, "private-nosecret")).every((p) => p.status.phase === "Pending")).toBe(true);
  });

  it("shows the pulled images in crictl and ctr on each node (the runtime is the authority)", async () => {
    for (const node of ["node1", "node2"]) {
      const listed = (
        JSON.parse((await crictl(tb, node, ["images", "-o", "json"])).stdout) as { images: { repoTags: string[]; repoDigests: string[] }[] }
      ).images;
      const tags = listed.flatMap((i) => i.repoTags);
      for (const img of [tb.images.pause, tb.images.busybox, tb.images.scratch, tb.images.privateBusybox])
        expect(tags, `${node}: ${img.ref}`).toContain(img.ref);
      expect(listed.flatMap((i) => i.repoDigests)).toContain(tb.images.busybox.pinnedRef);
      expect((await ctr(tb, node, ["images", "ls", "-q"])).stdout.split("\n")).toContain(tb.images.privateBusybox.ref);
    }
  });

  describe("a node that joins later", () => {
    let node3: K8sNode | undefined;

    afterAll(async () => {
      if (node3) await removeK8sNode("node3");
    });

    it("adds node3 on containerd v2: it goes Ready and the DaemonSets put their pods on it", async () => {
      const t0 = Date.now();
      node3 = await addK8sNode("node3", { runtime: "containerd2" });
      const readyMs = Date.now() - t0;
      expect(node3.state).toBe("running");
      const ready = (await kubectl(tb, ["get", "node", "node3", "-o", 'jsonpath={.status.conditions[?(@.type=="Ready")].status}'])).stdout;
      expect(ready).toBe("True");
      await readyOnEveryNode(tb, "busybox", ["node1", "node2", "node3"]);
      await readyOnEveryNode(tb, "private", ["node1", "node2", "node3"]);
      const rss = Object.values(k8sTestbedRss({ ...tb, nodes: { ...tb.nodes, node3 } })).reduce((a, b) => a + b, 0);
      console.log(`node3 Ready ${readyMs} ms after addK8sNode; bed RSS with 3 nodes and 3 DaemonSets: ${Math.round(rss / 1024)} MiB`);
    });

    it("removing node3 deletes its Node and leaves no process, mount, cgroup or log symlink of it", async () => {
      expect(node3).toBeDefined();
      await removeK8sNode("node3");
      const gone = node3!;
      node3 = undefined;
      expect(nodeLeftovers(gone)).toEqual([]);
      await expect(kubectl(tb, ["get", "node", "node3"])).rejects.toThrow(/NotFound/);
    });
  });
});

describe("Kubernetes test bed, stopped", { timeout: 4 * POD_MS }, () => {
  it("a bed of its own (one node, with a running pod) stops without leaving processes, mounts, cgroups or symlinks", async () => {
    const stateDir = join(process.env.IY_STATE_DIR ?? ".testbed", `k8s-stop-test-${process.pid}`);
    const t0 = Date.now();
    const own = await startK8sTestbed(stateDir, { nodes: [{ name: "solo", runtime: "containerd1" }] });
    const startMs = Date.now() - t0;
    try {
      await kubectl(own, [
        "run",
        "sleeper",
        "--image",
        own.images.busybox.ref,
        "--overrides",
        JSON.stringify({ spec: { hostNetwork: true, terminationGracePeriodSeconds: 1 } }),
        "--command",
        "--",
        "/bin/sleep",
        "86400",
      ]);
      await waitUntil(
        "pod sleeper Running on solo",
        POD_MS,
        async () => (await kubectl(own, ["get", "pod", "sleeper", "-o", "jsonpath={.status.phase}"])).stdout === "Running",
      );
    } finally {
      await stopK8sTestbed(stateDir);
    }
    console.log(`one-node bed (own registries) started in ${startMs} ms`);
    for (const p of Object.values(own.processes))
      expect(isOurProcess(p.pid, p.marker), `control-plane pid ${p.pid} (${p.marker})`).toBe(false);
    expect(nodeLeftovers(own.nodes.solo!)).toEqual([]);
    expect(existsSync(join(own.dir, "testbed.json"))).toBe(false);
    rmSync(stateDir, { recursive: true, force: true });
  });
});
