// An in-process stand-in for the few API server routes a PrePullSet uses, with a DaemonSet
// controller (one pod per covered node, recreated when deleted) and a scripted kubelet and agent
// (the test says what each node's pod reports and what its agent logged). For engine unit tests;
// the real cluster is the k8s test bed.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { coveredNodes, type ContainerStatus, type Node, type Pod } from "../../provider/node/status";
import type { KubeObject } from "../../provider/node/kube";
import { ANNOTATION_IMAGES, type AgentImage } from "../../provider/node/manifest";

type Obj = KubeObject & Record<string, unknown>;
/** What a node reports for a pod: the agent's readiness (or why it does not run) and its log. */
export type Kubelet = (
  node: string,
  pod: Pod,
  images: AgentImage[],
) => { agentReady: boolean; log: string; waiting?: { reason: string; message?: string } };

export class FakeKube {
  server!: Server;
  url = "";
  nodes: Node[] = [];
  namespaces = new Set(["kube-system"]);
  daemonSets = new Map<string, Obj>();
  secrets = new Map<string, Obj>();
  pods = new Map<string, Pod>();
  events: { pod: string; message: string }[] = [];
  /** The agent's log, by pod. */
  logs = new Map<string, string>();
  requests: string[] = [];
  private seq = 0;

  constructor(public kubelet: Kubelet) {}

  async start(): Promise<this> {
    this.server = createServer((req, res) => void this.handle(req, res));
    await new Promise<void>((r) => this.server.listen(0, "127.0.0.1", r));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
    return this;
  }

  /** A kubeconfig document for this server (token auth), as users pass `kubeconfig`. */
  kubeconfig(server = this.url): string {
    return kubeconfigFor(server);
  }

  close(): Promise<void> {
    return new Promise((r) => this.server.close(() => r()));
  }

  addNode(name: string, runtime = "containerd://2.4.2"): void {
    this.nodes.push({
      metadata: { name, labels: { "kubernetes.io/hostname": name } },
      spec: {},
      status: { nodeInfo: { containerRuntimeVersion: runtime } },
    });
  }

  /** The DaemonSet controller and kubelets, run before every read so state is always current. */
  private reconcile(): void {
    for (const ds of this.daemonSets.values()) {
      const tpl = (
        ds.spec as {
          template: {
            metadata: { labels: Record<string, string>; annotations: Record<string, string> };
            spec: {
              containers: { name: string; image: string; env: { name: string; value?: string }[] }[];
              tolerations?: [];
              nodeSelector?: Record<string, string>;
            };
          };
        }
      ).template;
      const covered = coveredNodes(this.nodes, tpl.spec.nodeSelector, tpl.spec.tolerations ?? []);
      let updated = 0;
      for (const n of covered) {
        let pod = [...this.pods.values()].find(
          (p) => p.spec.nodeName === n.metadata.name && p.metadata.labels?.["imageyard.dev/prepullset"] === ds.metadata.name,
        );
        if (pod && pod.metadata.annotations?.[ANNOTATION_IMAGES] !== tpl.metadata.annotations[ANNOTATION_IMAGES]) {
          this.pods.delete(pod.metadata.name);
          pod = undefined;
        }
        if (!pod) {
          pod = {
            metadata: {
              name: `${ds.metadata.name}-${++this.seq}`,
              namespace: ds.metadata.namespace,
              labels: { ...tpl.metadata.labels },
              annotations: { ...tpl.metadata.annotations },
            },
            spec: { nodeName: n.metadata.name },
          };
          this.pods.set(pod.metadata.name, pod);
        }
        const agent = tpl.spec.containers[0]!;
        const images = JSON.parse(agent.env.find((e) => e.name === "IMAGEYARD_IMAGES")!.value!) as AgentImage[];
        const k = this.kubelet(n.metadata.name, pod, images);
        const status: ContainerStatus = {
          name: "agent",
          image: agent.image,
          ready: k.agentReady,
          state: k.waiting ? { waiting: k.waiting } : { running: {} },
        };
        pod.status = { containerStatuses: [status] };
        this.logs.set(pod.metadata.name, k.log);
        updated++;
      }
      ds.status = { observedGeneration: ds.metadata.generation, desiredNumberScheduled: covered.length, updatedNumberScheduled: updated };
    }
  }

  /** A list answer cut to `limit`, with the API server's opaque `continue` token (here an offset). */
  private page<T>(items: T[], q: URLSearchParams): { items: T[]; metadata: { continue?: string } } {
    const limit = Number(q.get("limit") ?? 0);
    const from = Number(q.get("continue") ?? 0);
    if (!limit) return { items: items.slice(from), metadata: {} };
    const to = from + limit;
    return { items: items.slice(from, to), metadata: to < items.length ? { continue: String(to) } : {} };
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const body = chunks.length ? (JSON.parse(Buffer.concat(chunks).toString()) as Obj) : undefined;
    const u = new URL(req.url!, this.url);
    this.requests.push(`${req.method} ${u.pathname}`);
    const send = (status: number, obj: unknown) => {
      res.writeHead(status, { "content-type": "application/json" });
      res.end(JSON.stringify(obj));
    };
    const notFound = () => send(404, { kind: "Status", reason: "NotFound", message: `${u.pathname} not found` });
    this.reconcile();
    const p = u.pathname;
    let m: RegExpExecArray | null;
    if (p === "/version") return send(200, { gitVersion: "v1.37.2" });
    if (p === "/api/v1/nodes") return send(200, { items: this.nodes });
    if ((m = /^\/api\/v1\/namespaces\/([^/]+)$/.exec(p)))
      return this.namespaces.has(m[1]!) ? send(200, { metadata: { name: m[1] } }) : notFound();
    if ((m = /^\/api\/v1\/namespaces\/([^/]+)\/events$/.exec(p))) {
      const pod = /involvedObject\.name=([^,]+)/.exec(u.searchParams.get("fieldSelector") ?? "")?.[1];
      return send(200, {
        items: this.events
          .filter((e) => e.pod === pod)
          .map((e, i) => ({
            metadata: { name: `e${i}` },
            reason: "Unhealthy",
            message: e.message,
            lastTimestamp: new Date(i * 1000).toISOString(),
          })),
      });
    }
    if (p === "/api/v1/pods") return send(200, this.page([...this.pods.values()], u.searchParams));
    if ((m = /^\/api\/v1\/namespaces\/[^/]+\/pods\/([^/]+)\/log$/.exec(p))) {
      const log = this.logs.get(m[1]!);
      if (log === undefined) return notFound();
      res.writeHead(200, { "content-type": "text/plain" });
      return void res.end(log);
    }
    if ((m = /^\/api\/v1\/namespaces\/([^/]+)\/pods(?:\/([^/]+))?$/.exec(p))) {
      if (m[2]) {
        if (req.method !== "DELETE") return notFound();
        const had = this.pods.delete(m[2]);
        return had ? send(200, {}) : notFound();
      }
      const ns = m[1];
      const sel = u.searchParams.get("labelSelector")?.split("=") ?? [];
      const inNs = [...this.pods.values()].filter((x) => (x.metadata.namespace ?? ns) === ns);
      return send(200, this.page(sel.length ? inNs.filter((x) => x.metadata.labels?.[sel[0]!] === sel[1]) : inNs, u.searchParams));
    }
    const coll = (m = /^\/apis\/apps\/v1\/namespaces\/[^/]+\/daemonsets(?:\/([^/]+))?$/.exec(p))
      ? this.daemonSets
      : (m = /^\/api\/v1\/namespaces\/[^/]+\/secrets(?:\/([^/]+))?$/.exec(p))
        ? this.secrets
        : undefined;
    if (!coll || !m) return notFound();
    const name = m[1];
    if (!name && req.method === "GET") {
      const sel = u.searchParams.get("labelSelector")?.split("=") ?? [];
      return send(200, { items: [...coll.values()].filter((x) => x.metadata.labels?.[sel[0]!] === sel[1]) });
    }
    if (!name && req.method === "POST") {
      const obj = { ...body!, metadata: { ...body!.metadata, uid: `uid-${++this.seq}`, resourceVersion: "1", generation: 1 } } as Obj;
      coll.set(obj.metadata.name, obj);
      this.reconcile();
      return send(201, obj);
    }
    const cur = coll.get(name!);
    if (!cur) return notFound();
    if (req.method === "GET") return send(200, cur);
    if (req.method === "DELETE") {
      coll.delete(name!);
      if (coll === this.daemonSets)
        for (const [k, pod] of this.pods) if (pod.metadata.labels?.["imageyard.dev/prepullset"] === name) this.pods.delete(k);
      return send(200, {});
    }
    if (req.method === "PUT") {
      const obj = {
        ...body!,
        metadata: {
          ...body!.metadata,
          uid: cur.metadata.uid,
          resourceVersion: String(Number(cur.metadata.resourceVersion) + 1),
          generation: (cur.metadata.generation ?? 1) + 1,
        },
      } as Obj;
      coll.set(name!, obj);
      return send(200, obj);
    }
    if (req.method === "PATCH") {
      cur.metadata = { ...cur.metadata, ...(body!.metadata ?? {}) };
      return send(200, cur);
    }
    return notFound();
  }
}

/** A one-context kubeconfig document for `server`. */
export function kubeconfigFor(server: string): string {
  return JSON.stringify({
    "current-context": "c",
    clusters: [{ name: "c", cluster: { server } }],
    contexts: [{ name: "c", context: { cluster: "c", user: "u" } }],
    users: [{ name: "u", user: { token: "t" } }],
  });
}

/** The agent's log line for one image (provider/node/agent Event). */
export const agentLine = (e: Record<string, unknown>) => `${JSON.stringify(e)}\n`;

/** Agents whose pulls all succeed: every image present at the digest of its ref, then done. */
export const pullsSucceed: Kubelet = (_node, _pod, images) => ({
  agentReady: true,
  log:
    images
      .filter((i) => !i.archive)
      .map((i) => agentLine({ image: i.ref, state: "present", digest: i.ref.split("@")[1] }))
      .join("") + agentLine({ event: "done" }),
});
