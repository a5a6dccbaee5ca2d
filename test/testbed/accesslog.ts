// Counting what a registry served: distribution writes one access-log line (combined log format)
// per request once the response is complete; benches and tests read them from the log file.
import { closeSync, openSync, readSync, statSync } from "node:fs";
import type { RegistryEndpoint } from "./registry";

// ---------------------------------------------------------------------------------------------
// Counting requests

export interface AccessLogEntry {
  method: string;
  path: string;
  status: number;
}

const ACCESS_LINE = /^127\.0\.0\.1 - \S+ \[[^\]]+\] "(\S+) (\S+) [^"]*" (\d{3}) /;

/** Where the registry's log ends now; pass it to readRequests() to see only later requests. */
export function requestLogMark(ep: Pick<RegistryEndpoint, "logFile">): number {
  try {
    return statSync(ep.logFile).size;
  } catch {
    return 0;
  }
}

/**
 * The requests the registry logged after byte offset `since` (its access log, one line per
 * request, written once the response is complete).
 */
export function readRequests(ep: Pick<RegistryEndpoint, "logFile">, since = 0): AccessLogEntry[] {
  const end = requestLogMark(ep);
  if (end <= since) return [];
  const fd = openSync(ep.logFile, "r");
  const out: AccessLogEntry[] = [];
  try {
    // Read in slices: a bench log can grow large.
    const buf = Buffer.alloc(1 << 20);
    let pos = since;
    let rest = "";
    while (pos < end) {
      const n = readSync(fd, buf, 0, Math.min(buf.length, end - pos), pos);
      if (n <= 0) break;
      pos += n;
      const lines = (rest + buf.toString("utf8", 0, n)).split("\n");
      rest = lines.pop() ?? "";
      for (const l of lines) {
        const m = ACCESS_LINE.exec(l);
        if (m) out.push({ method: m[1]!, path: m[2]!, status: Number(m[3]) });
      }
    }
  } finally {
    closeSync(fd);
  }
  return out;
}

export function countRequests(ep: Pick<RegistryEndpoint, "logFile">, since = 0): number {
  return readRequests(ep, since).length;
}
