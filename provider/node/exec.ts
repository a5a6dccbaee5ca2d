// Runs a command in a pod through the API server (pods/exec over a websocket, the
// v5.channel.k8s.io protocol kubectl uses): stdin streamed from a Readable with backpressure,
// stdout collected (capped), stderr and the exit status turned into an error naming pod and reason.
import type { Readable } from "node:stream";
import { ImageyardError } from "../http/errors";
import type { KubeClient } from "./kube";

// Only undici's websocket module, not its index (see provider/http/client.ts on start-up cost).
const { WebSocket } = require("undici/lib/web/websocket/websocket") as typeof import("undici");
/* eslint-enable @typescript-eslint/no-require-imports */

const STDIN = 0;
const STDOUT = 1;
const STDERR = 2;
const ERROR = 3;
const CLOSE = 255;
const MAX_OUTPUT = 1024 * 1024;
/** Bytes queued on the socket before the reader waits. */
const HIGH_WATER = 4 * 1024 * 1024;

export interface ExecRequest {
  namespace: string;
  pod: string;
  container: string;
  command: string[];
  stdin?: Readable;
  /** Deadline for the whole exec (ms since epoch). */
  deadline: number;
  /** Bytes of stdin sent so far. */
  onBytes?: (n: number) => void;
}

export interface ExecResult {
  stdout: string;
  stderr: string;
}

interface ExecStatus {
  status?: string;
  message?: string;
  reason?: string;
  details?: { causes?: { reason?: string; message?: string }[] };
}

export async function execInPod(client: KubeClient, req: ExecRequest): Promise<ExecResult> {
  const target = `${req.namespace}/${req.pod}`;
  const q = new URLSearchParams({ container: req.container, stdout: "true", stderr: "true", stdin: req.stdin ? "true" : "false" });
  for (const c of req.command) q.append("command", c);
  const url = `${client.server.replace(/^http/, "ws")}/api/v1/namespaces/${encodeURIComponent(req.namespace)}/pods/${encodeURIComponent(req.pod)}/exec?${q}`;
  const op = `exec ${req.command.slice(0, 2).join(" ")} in pod ${target}`;
  const ws = new WebSocket(url, {
    protocols: ["v5.channel.k8s.io"],
    dispatcher: client.dispatcher,
    headers: client.authHeaders(),
  } as unknown as string[]);
  ws.binaryType = "arraybuffer";
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  let outBytes = 0;
  let status: ExecStatus | undefined;
  const timer = setTimeout(() => ws.close(), Math.max(1, req.deadline - Date.now()));
  try {
    const closed = new Promise<void>((resolve, reject) => {
      ws.addEventListener("error", (e) =>
        reject(
          new ImageyardError(
            "NETWORK_ERROR",
            `${op}: the websocket failed (${(e as unknown as { message?: string }).message ?? "error"}). Check that the API server allows pods/exec for this user.`,
          ),
        ),
      );
      ws.addEventListener("close", () => resolve());
    });
    ws.addEventListener("message", (ev) => {
      const b = Buffer.from(ev.data as ArrayBuffer);
      const ch = b[0];
      const data = b.subarray(1);
      if (ch === STDOUT && outBytes < MAX_OUTPUT) {
        out.push(data);
        outBytes += data.length;
      } else if (ch === STDERR && err.length < 256) err.push(data);
      else if (ch === ERROR) status = JSON.parse(data.toString("utf8") || "{}") as ExecStatus;
    });
    await new Promise<void>((resolve, reject) => {
      ws.addEventListener("open", () => resolve(), { once: true });
      closed.then(
        () =>
          reject(
            new ImageyardError(
              "NETWORK_ERROR",
              `${op}: the API server closed the connection before exec started. Check pods/exec permission and the kubelet.`,
            ),
          ),
        reject,
      );
    });
    if (req.stdin) await pump(ws, req.stdin, req.deadline, op, req.onBytes);
    await closed;
  } finally {
    clearTimeout(timer);
    if (ws.readyState === ws.OPEN) ws.close();
  }
  const stdout = Buffer.concat(out).toString("utf8");
  const stderr = Buffer.concat(err).toString("utf8").trim();
  if (Date.now() >= req.deadline && !status)
    throw new ImageyardError("TIMEOUT", `${op}: not finished before the deadline. Raise timeouts.`, { retryable: true });
  if (!status)
    throw new ImageyardError("NETWORK_ERROR", `${op}: the connection closed without an exit status. Run again.`, { retryable: true });
  if (status.status !== "Success") {
    const code = status.details?.causes?.find((c) => c.reason === "ExitCode")?.message;
    throw new ImageyardError(
      "NODE_PULL_FAILED",
      `${op}: ${stderr || status.message || "failed"} (${code ? `exit ${code}` : (status.reason ?? "Failure")}). Fix what the agent reports and run again.`,
    );
  }
  return { stdout, stderr };
}

async function pump(
  ws: InstanceType<typeof WebSocket>,
  input: Readable,
  deadline: number,
  op: string,
  onBytes?: (n: number) => void,
): Promise<void> {
  let sent = 0;
  for await (const chunk of input) {
    const c = chunk as Buffer;
    for (let i = 0; i < c.length; i += 1 << 20) {
      const part = c.subarray(i, i + (1 << 20));
      ws.send(Buffer.concat([Buffer.from([STDIN]), part]));
      sent += part.length;
      onBytes?.(sent);
      while (ws.bufferedAmount > HIGH_WATER) {
        if (ws.readyState !== ws.OPEN)
          throw new ImageyardError(
            "NETWORK_ERROR",
            `${op}: the connection closed after ${sent} bytes of input. Check the agent's log on that node.`,
          );
        if (Date.now() >= deadline)
          throw new ImageyardError("TIMEOUT", `${op}: input not sent before the deadline (${sent} bytes). Raise timeouts.`, {
            retryable: true,
          });
        await new Promise((r) => setTimeout(r, 5));
      }
    }
  }
  // v5: tell the server stdin is done, so the command sees EOF.
  ws.send(Buffer.from([CLOSE, STDIN]));
}
