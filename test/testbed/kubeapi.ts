// The few Kubernetes API calls the test bed itself needs (wait for the apiserver and for nodes,
// patch node addresses, delete a node), over the project's undici layer with the admin client
// certificate. Tests check the cluster with kubectl, an independent client.
import { readFileSync } from "node:fs";
import type { Dispatcher } from "undici";
import { createDispatcher, drain, readJson, send, type HttpRequest } from "../../provider/http/client";

export interface NodeCondition {
  type: string;
  status: string;
  reason?: string;
  message?: string;
}

export interface NodeObject {
  metadata: { name: string };
  status?: {
    conditions?: NodeCondition[];
    addresses?: { type: string; address: string }[];
    nodeInfo?: { containerRuntimeVersion?: string; kubeletVersion?: string };
  };
}

export class KubeApi {
  private readonly dispatcher: Dispatcher;

  constructor(
    readonly server: string,
    tls: { caFile: string; certFile: string; keyFile: string },
  ) {
    this.dispatcher = createDispatcher({
      tls: { ca: [readFileSync(tls.caFile, "utf8")], cert: readFileSync(tls.certFile, "utf8"), key: readFileSync(tls.keyFile, "utf8") },
      connections: 2,
      connectTimeoutMs: 2_000,
      headersTimeoutMs: 30_000,
    });
  }

  private req(method: HttpRequest["method"], path: string, ok: number[], body?: unknown, contentType = "application/json") {
    return send({
      method,
      url: `${this.server}${path}`,
      ok,
      operation: `kubernetes test bed: ${method} ${path}`,
      dispatcher: this.dispatcher,
      headers: body === undefined ? { accept: "application/json" } : { accept: "application/json", "content-type": contentType },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  }

  /** The object, or undefined on 404. */
  async get<T>(path: string): Promise<T | undefined> {
    const res = await this.req("GET", path, [200, 404]);
    if (res.status === 404) {
      await drain(res);
      return undefined;
    }
    return readJson<T>(res, `GET ${path}`);
  }

  async mergePatch(path: string, patch: unknown): Promise<void> {
    await drain(await this.req("PATCH", path, [200], patch, "application/merge-patch+json"));
  }

  /** Deleting what is already gone is success. */
  async delete(path: string): Promise<void> {
    await drain(await this.req("DELETE", path, [200, 202, 404]));
  }

  async node(name: string): Promise<NodeObject | undefined> {
    return this.get<NodeObject>(`/api/v1/nodes/${encodeURIComponent(name)}`);
  }

  async close(): Promise<void> {
    await this.dispatcher.close();
  }
}

export function readyCondition(node: NodeObject | undefined): NodeCondition | undefined {
  return node?.status?.conditions?.find((c) => c.type === "Ready");
}
