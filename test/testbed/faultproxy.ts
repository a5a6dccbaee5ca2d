// A fault-injecting HTTP proxy on 127.0.0.1 in front of a real (plain http) registry of the test
// bed: requests pass through untouched unless a rule matches, and then the proxy stalls, cuts the
// body mid-way, or answers with a status of its own (429 + Retry-After, 500 + a distribution error
// JSON, 401 + a foreign Bearer realm, …) for the first N matching requests. The Host header is
// forwarded as is, so the registry's absolute upload Locations point back at the proxy.
// Also: a "realm recorder" on another loopback host, to see whether credentials reach it.
import { Agent, createServer, request as httpRequest, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo, Socket } from "node:net";

export type Fault =
  /** Accept the request and never answer (until the proxy closes). */
  | { kind: "stall" }
  /** Forward; send the status, headers and the first `afterBytes` of the body, then drop the connection. */
  | { kind: "cut"; afterBytes: number }
  /** Answer without forwarding. */
  | { kind: "status"; status: number; headers?: Record<string, string>; body?: string }
  /** Forward, and add these headers to the response. */
  | { kind: "headers"; headers: Record<string, string> }
  /** Forward (the registry acts on it), but answer with this instead of the registry's answer. */
  | { kind: "replace"; status: number; headers?: Record<string, string>; body?: string }
  /** Forward after `ms`: a registry a round trip away (benches model a distant upstream with it). */
  | { kind: "delay"; ms: number };

export interface FaultRule {
  /** "GET", "PUT", …; any method when absent. */
  method?: string;
  /** Matches the request path (with query); every path when absent. */
  path?: RegExp;
  /** The first `times` matching requests get the fault, later ones pass through. Default: all. */
  times?: number;
  fault: Fault;
}

export interface ProxiedRequest {
  method: string;
  path: string;
  /** The status the client saw (undefined for a stall, the upstream's for a cut). */
  status: number | undefined;
  /** The fault applied, if any. */
  fault: Fault["kind"] | undefined;
  hadAuthorization: boolean;
  at: number;
}

export interface FaultProxy {
  /** "127.0.0.1:PORT", what image references use. */
  host: string;
  port: number;
  /** Everything the proxy saw, in arrival order. */
  requests: ProxiedRequest[];
  /** Replaces the rules (hit counts start again). */
  setRules(rules: FaultRule[]): void;
  /** How many requests a rule has faulted so far. */
  hits(index: number): number;
  close(): Promise<void>;
}

/** The distribution error body a registry sends: {"errors":[{"code","message","detail"}]}. */
export function distributionError(code: string, message: string, detail?: unknown): string {
  return JSON.stringify({ errors: [{ code, message, ...(detail === undefined ? {} : { detail }) }] });
}

export async function startFaultProxy(upstream: { port: number; host?: string }, rules: FaultRule[] = []): Promise<FaultProxy> {
  const upstreamHost = "127.0.0.1";
  const agent = new Agent({ keepAlive: true, maxSockets: 64 });
  let active = rules.map((r) => ({ rule: r, hits: 0 }));
  const requests: ProxiedRequest[] = [];
  const sockets = new Set<Socket>();

  const server: Server = createServer((inReq, inRes) => {
    const method = inReq.method ?? "GET";
    const path = inReq.url ?? "/";
    const entry: ProxiedRequest = {
      method,
      path,
      status: undefined,
      fault: undefined,
      hadAuthorization: inReq.headers.authorization !== undefined,
      at: Date.now(),
    };
    requests.push(entry);
    const match = active.find(
      (a) =>
        (a.rule.method === undefined || a.rule.method === method) &&
        (a.rule.path === undefined || a.rule.path.test(path)) &&
        a.hits < (a.rule.times ?? Infinity),
    );
    if (match) match.hits++;
    const fault = match?.rule.fault;
    entry.fault = fault?.kind;
    if (fault?.kind === "stall") {
      inReq.resume(); // read and drop any body; never answer
      return;
    }
    if (fault?.kind === "delay") {
      inReq.pause();
      setTimeout(() => forward(inReq, inRes, entry, undefined), fault.ms);
      return;
    }
    if (fault?.kind === "status") {
      inReq.resume();
      inReq.on("end", () => answer(inRes, entry, fault));
      return;
    }
    forward(inReq, inRes, entry, fault);
  });

  function answer(
    inRes: ServerResponse,
    entry: ProxiedRequest,
    fault: { status: number; headers?: Record<string, string>; body?: string },
  ): void {
    entry.status = fault.status;
    const body = fault.body ?? "";
    inRes.writeHead(fault.status, {
      "content-type": "application/json",
      "content-length": String(Buffer.byteLength(body)),
      ...fault.headers,
    });
    inRes.end(body);
  }

  function forward(inReq: IncomingMessage, inRes: ServerResponse, entry: ProxiedRequest, fault: Fault | undefined): void {
    const out = httpRequest(
      { host: upstreamHost, port: upstream.port, method: inReq.method, path: inReq.url, headers: inReq.headers, agent },
      (upRes) => {
        entry.status = upRes.statusCode;
        if (fault?.kind === "replace") {
          upRes.resume();
          upRes.on("end", () => answer(inRes, entry, fault));
          return;
        }
        const headers = { ...upRes.headers, ...(fault?.kind === "headers" ? fault.headers : {}) };
        inRes.writeHead(upRes.statusCode ?? 502, headers);
        if (fault?.kind !== "cut") {
          upRes.pipe(inRes);
          return;
        }
        let sent = 0;
        upRes.on("data", (chunk: Buffer) => {
          if (sent >= fault.afterBytes) return;
          const part = chunk.subarray(0, fault.afterBytes - sent);
          sent += part.length;
          inRes.write(part);
          if (sent >= fault.afterBytes) {
            upRes.destroy();
            // Let the bytes leave, then break the connection mid-body.
            inRes.socket?.end(() => inRes.socket?.destroy());
            setTimeout(() => inRes.socket?.destroy(), 50).unref();
          }
        });
        upRes.on("end", () => inRes.end());
      },
    );
    out.on("error", () => inRes.socket?.destroy());
    inReq.pipe(out);
  }

  server.on("connection", (s) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    host: `127.0.0.1:${port}`,
    port,
    requests,
    setRules(next) {
      active = next.map((r) => ({ rule: r, hits: 0 }));
    },
    hits: (i) => active[i]?.hits ?? 0,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        agent.destroy();
        server.close(() => resolve());
      }),
  };
}

export interface RealmRecorder {
  /** "http://127.0.0.2:PORT/token" */
  realm: string;
  /** "127.0.0.2:PORT" */
  host: string;
  /** The Authorization header of every request it got (undefined when none was sent). */
  authorizations: Array<string | undefined>;
  close(): Promise<void>;
}

/**
 * A token endpoint on another loopback address that records what it receives and answers 401:
 * a stand-in for a foreign host that a registry's challenge points at.
 */
export async function startRealmRecorder(address = "127.0.0.2"): Promise<RealmRecorder> {
  const authorizations: Array<string | undefined> = [];
  const server = createServer((req, res) => {
    authorizations.push(req.headers.authorization);
    req.resume();
    res.writeHead(401, { "content-type": "application/json" });
    res.end(distributionError("UNAUTHORIZED", "recorder refuses every request"));
  });
  await new Promise<void>((resolve) => server.listen(0, address, resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    realm: `http://${address}:${port}/token`,
    host: `${address}:${port}`,
    authorizations,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
