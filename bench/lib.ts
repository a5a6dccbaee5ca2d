// Shared bench plumbing: run a command under GNU time (optionally in a private mount namespace
// with an empty containers blob-info cache), medians, a plain-text table and RESULT lines.
import { spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { countRequests, type RegistryEndpoint } from "../test/testbed/registry";

export interface TimedRun {
  /** Wall seconds measured around the process (ms precision). */
  wallS: number;
  maxRssMiB: number;
  userS: number;
  sysS: number;
  exitCode: number;
  stdout: string;
  stderr: string;
}

export interface TimeOptions {
  /**
   * Run in a private mount namespace with an empty tmpfs on /var/lib/containers/cache, so skopeo
   * (containers/image) cannot learn "blob already at X" from earlier runs and turn copies into mounts.
   */
  isolateContainersCache?: boolean;
  env?: NodeJS.ProcessEnv;
  timeoutMs?: number;
}

const CONTAINERS_CACHE = "/var/lib/containers/cache";

/** Reads `/usr/bin/time -v` output. */
export function parseTimeVerbose(text: string): { maxRssKiB: number; userS: number; sysS: number } {
  const num = (re: RegExp) => Number(re.exec(text)?.[1] ?? NaN);
  return {
    maxRssKiB: num(/Maximum resident set size \(kbytes\): (\d+)/),
    userS: num(/User time \(seconds\): ([\d.]+)/),
    sysS: num(/System time \(seconds\): ([\d.]+)/),
  };
}

export async function timeCommand(cmd: string, args: string[], opts: TimeOptions = {}): Promise<TimedRun> {
  const dir = mkdtempSync(join(tmpdir(), "iy-bench-"));
  const out = join(dir, "time.txt");
  try {
    let argv = ["/usr/bin/time", "-v", "-o", out, cmd, ...args];
    if (opts.isolateContainersCache) {
      mkdirSync(CONTAINERS_CACHE, { recursive: true });
      argv = ["unshare", "-m", "sh", "-c", `mount -t tmpfs tmpfs ${CONTAINERS_CACHE} && exec "$@"`, "sh", ...argv];
    }
    const started = process.hrtime.bigint();
    const { code, stdout, stderr } = await new Promise<{ code: number; stdout: string; stderr: string }>((ok, fail) => {
      const child = spawn(argv[0]!, argv.slice(1), { env: opts.env ?? process.env, stdio: ["ignore", "pipe", "pipe"] });
      let so = "";
      let se = "";
      child.stdout.on("data", (c: Buffer) => (so = (so + c.toString()).slice(-64 * 1024)));
      child.stderr.on("data", (c: Buffer) => (se = (se + c.toString()).slice(-64 * 1024)));
      const timer = opts.timeoutMs ? setTimeout(() => child.kill("SIGKILL"), opts.timeoutMs) : undefined;
      child.on("error", fail);
      child.on("close", (c, sig) => {
        if (timer) clearTimeout(timer);
        ok({ code: c ?? (sig ? 128 : 1), stdout: so, stderr: se });
      });
    });
    const wallS = Number(process.hrtime.bigint() - started) / 1e9;
    let t = { maxRssKiB: NaN, userS: NaN, sysS: NaN };
    try {
      t = parseTimeVerbose(readFileSync(out, "utf8"));
    } catch {
      /* the command never started */
    }
    return { wallS, maxRssMiB: t.maxRssKiB / 1024, userS: t.userS, sysS: t.sysS, exitCode: code, stdout, stderr };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

export function median(xs: number[]): number {
  const s = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

export function round(x: number, digits = 3): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

/** Left-aligned first column, right-aligned numbers. */
export function formatTable(header: string[], rows: (string | number)[][]): string {
  const cells = [header, ...rows.map((r) => r.map(String))];
  const widths = header.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? "").length)));
  const line = (r: string[]) => r.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join("  ");
  return [line(header), widths.map((w) => "-".repeat(w)).join("  "), ...cells.slice(1).map(line)].join("\n");
}

export function resultLine(result: Record<string, unknown>): string {
  return `RESULT ${JSON.stringify(result)}`;
}

/** The access log is written as responses complete; wait until the count stops moving. */
export async function settledCount(ep: RegistryEndpoint, since: number): Promise<number> {
  let last = -1;
  const deadline = Date.now() + 3_000;
  for (;;) {
    const n = countRequests(ep, since);
    if (n === last || Date.now() > deadline) return n;
    last = n;
    await new Promise((r) => setTimeout(r, 150));
  }
}

/** "HEAD /v2/<repo>/manifests/<ref> 200" → counts by method, kind of path and status. */
export function describeRequests(reqs: { method: string; path: string; status: number }[]): string {
  const kinds = new Map<string, number>();
  for (const r of reqs) {
    const kind = `${r.method} ${r.path.replace(/^\/v2\/.+\/(manifests|blobs|tags|referrers)\/.*$/, "/v2/…/$1/…")} ${r.status}`;
    kinds.set(kind, (kinds.get(kind) ?? 0) + 1);
  }
  return [...kinds].map(([k, n]) => `${n}× ${k}`).join(", ") || "none";
}
