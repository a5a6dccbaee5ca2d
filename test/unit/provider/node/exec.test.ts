// pods/exec over a websocket (v5.channel.k8s.io) against a minimal in-process websocket server that
// speaks the API server's channel protocol: stdin streamed in order and closed with the v5 close
// message, stdout collected, a non-zero exit turned into an error that carries stderr and the code.
import { createHash } from "node:crypto";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import type { Duplex } from "node:stream";
import { Readable } from "node:stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { execInPod } from "../../../../provider/node/exec";
import { KubeClient } from "../../../../provider/node/kube";
import { caught } from "../../../support/caught";

function frame(payload: Buffer, opcode = 2): Buffer {
  const len = payload.length;
  const head =
    len < 126
      ? Buffer.from([0x80 | opcode, len])
      : len < 65536
        ? Buffer.from([0x80 | opcode, 126, len >> 8, len & 255])
        : Buffer.concat([
            Buffer.from([0x80 | opcode, 127]),
            (() => {
              const b = Buffer.alloc(8);
              b.writeBigUInt64BE(BigInt(len));
              return b;
            })(),
          ]);
  return Buffer.concat([head, payload]);
}

/** Calls onMessage for each client frame's unmasked payload (opcode 2 or 8). */
function readFrames(socket: Duplex, onMessage: (opcode: number, data: Buffer) => void): void {
  let buf = Buffer.alloc(0);
  socket.on("data", (chunk: Buffer) => {
    buf = Buffer.concat([buf, chunk]);
    for (;;) {
      if (buf.length < 2) return;
      const opcode = buf[0]! & 15;
      let len = buf[1]! & 127;
      let off = 2;
      if (len === 126) [len, off] = [buf.readUInt16BE(2), 4];
      else if (len === 127) [len, off] = [Number(buf.readBigUInt64BE(2)), 10];
      if (buf.length < off + 4 + len) return;
      const mask = buf.subarray(off, off + 4);
      const data = Buffer.from(buf.subarray(off + 4, off + 4 + len));
      for (let i = 0; i < data.length; i++) data[i]! ^= mask[i % 4]!;
      buf = buf.subarray(off + 4 + len);
      onMessage(opcode, data);
    }
  });
}

let server: Server;
let client: KubeClient;
const seen: { auth?: string; protocol?: string; command: string[] } = { command: [] };

beforeAll(async () => {
  server = createServer();
  server.on("upgrade", (req, socket) => {
    const u = new URL(req.url!, "http://x");
    seen.auth = req.headers.authorization;
    seen.protocol = String(req.headers["sec-websocket-protocol"]);
    seen.command = u.searchParams.getAll("command");
    const accept = createHash("sha1").update(`${req.headers["sec-websocket-key"]}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest("base64");
    socket.write(
      `HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\nSec-WebSocket-Protocol: v5.channel.k8s.io\r\n\r\n`,
    );
    const hash = createHash("sha256");
    let bytes = 0;
    const finish = () => {
      if (seen.command[1] === "fail") {
        socket.write(frame(Buffer.concat([Buffer.from([2]), Buffer.from("import: not an archive")])));
        socket.write(
          frame(
            Buffer.concat([
              Buffer.from([3]),
              Buffer.from(
                JSON.stringify({
                  status: "Failure",
                  reason: "NonZeroExitCode",
                  message: "command terminated with non-zero exit code",
                  details: { causes: [{ reason: "ExitCode", message: "1" }] },
                }),
              ),
            ]),
          ),
        );
      } else {
        socket.write(frame(Buffer.concat([Buffer.from([1]), Buffer.from(JSON.stringify({ bytes, sha256: hash.digest("hex") }))])));
        socket.write(frame(Buffer.concat([Buffer.from([3]), Buffer.from(JSON.stringify({ status: "Success" }))])));
      }
      socket.end(frame(Buffer.alloc(0), 8));
    };
    readFrames(socket, (op, data) => {
      if (op === 8) return;
      if (data[0] === 0) {
        hash.update(data.subarray(1));
        bytes += data.length - 1;
      } else if (data[0] === 255 && data[1] === 0) finish();
    });
    if (u.searchParams.get("stdin") !== "true") finish();
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  client = new KubeClient({
    server: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    context: "fake",
    tls: {},
    token: "t0ken",
  });
});

afterAll(async () => {
  await client.close();
  server.close();
});

describe("execInPod", () => {
  it("streams stdin in order (several MiB), closes it the v5 way, and returns stdout", async () => {
    const parts = Array.from({ length: 9 }, (_, i) => Buffer.alloc(700 * 1024, i));
    const want = createHash("sha256").update(Buffer.concat(parts)).digest("hex");
    let reported = 0;
    const r = await execInPod(client, {
      namespace: "kube-system",
      pod: "p",
      container: "agent",
      command: ["/agent", "import"],
      stdin: Readable.from(parts),
      deadline: Date.now() + 30_000,
      onBytes: (n) => (reported = n),
    });
    expect(JSON.parse(r.stdout)).toEqual({ bytes: 9 * 700 * 1024, sha256: want });
    expect(reported).toBe(9 * 700 * 1024);
    expect(seen).toMatchObject({ auth: "Bearer t0ken", protocol: "v5.channel.k8s.io", command: ["/agent", "import"] });
  });

  it("turns a non-zero exit into an error with the command's stderr and exit code", async () => {
    const e = await caught(
      execInPod(client, {
        namespace: "kube-system",
        pod: "p",
        container: "agent",
        command: ["/agent", "fail"],
        deadline: Date.now() + 30_000,
      }),
    );
    expect(e.message).toBe(
      "exec /agent fail in pod kube-system/p: import: not an archive (exit 1). Fix what the agent reports and run again.",
    );
  });
});
