// Lines from a running dynamic provider to the Pulumi engine. A dynamic provider's stdout ends up
// under "Diagnostics" for good, so byte-by-byte progress would pile up there; the engine's own Log
// RPC can mark a message ephemeral (shown live in the resource's row, then dropped), which is
// what progress is. The engine's address is the provider host's first argument.
import type { OperationContext } from "./forward";

interface EngineLogClient {
  log(severity: number, message: string, urn: string, ephemeral: boolean): void;
}

let client: EngineLogClient | null | undefined;

/** The engine's Log RPC, or null when this process was not started by the engine (tests, the CLI). */
function engineClient(): EngineLogClient | null {
  if (client !== undefined) return client;
  client = null;
  const addr = process.argv[2];
  if (!addr || !/^(127\.0\.0\.1|localhost|\[::1\]):\d+$/.test(addr) || !/dynamic-provider/.test(process.argv[1] ?? "")) return client;
  try {
    const pulumiDir = require.resolve("@pulumi/pulumi/package.json").replace(/package\.json$/, "");
    const grpc = require(require.resolve("@grpc/grpc-js", { paths: [pulumiDir] })) as typeof import("@grpc/grpc-js");
    const rpc = require("@pulumi/pulumi/proto/engine_grpc_pb");
    const proto = require("@pulumi/pulumi/proto/engine_pb");
    const engine = new rpc.EngineClient(addr, grpc.credentials.createInsecure());
    client = {
      log(severity, message, urn, ephemeral) {
        const req = new proto.LogRequest();
        req.setSeverity(severity);
        req.setMessage(message);
        req.setUrn(urn);
        req.setEphemeral(ephemeral);
        // Fire and forget: a lost progress line must never fail or slow the operation.
        engine.log(req, () => undefined);
      },
    };
  } catch {
    client = null;
  }
  return client;
}

const INFO = 1; // pulumirpc.LogSeverity.INFO

/** Progress ephemeral under the resource's row, summaries kept; plain stdout without an engine. */
export function operationContext(urn: string | undefined): OperationContext {
  const engine = engineClient();
  if (!engine || urn === undefined) {
    return { progress: (line) => console.log(line), log: (line) => console.log(line) };
  }
  return {
    progress: (line) => engine.log(INFO, line, urn, true),
    log: (line) => engine.log(INFO, line, urn, false),
  };
}
