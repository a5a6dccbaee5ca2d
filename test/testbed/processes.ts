// Process plumbing for the test beds: free ports, our own pids (checked against their command
// lines, never killed by name), detached logged spawns, readiness polling with deadlines, a
// cross-process lock and leases that say who still uses a shared test bed.
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { dirname, join, resolve } from "node:path";
import { createDispatcher, send } from "../../provider/http/client";

const READY_TIMEOUT_MS = 20_000;
const LOCK_TIMEOUT_MS = 180_000;

// ---------------------------------------------------------------------------------------------
// Processes

const tryListen = (port: number) =>
  new Promise<number>((ok, fail) => {
    const srv = createServer();
    srv.once("error", fail);
    srv.listen(port, "127.0.0.1", () => {
      const addr = srv.address();
      srv.close(() => ok(typeof addr === "object" && addr ? addr.port : 0));
    });
  });

/** The checkout this runs from (test/testbed or dist/test/testbed alike). */
export function repoRoot(): string {
  let dir = __dirname;
  for (;;) {
    const pkg = join(dir, "package.json");
    if (existsSync(pkg) && (JSON.parse(readFileSync(pkg, "utf8")) as { name?: string }).name === "imageyard") return dir;
    const up = dirname(dir);
    if (up === dir) return process.cwd();
    dir = up;
  }
}

/** Where every test bed keeps its state: $IY_STATE_DIR, else <checkout>/.testbed. */
export function defaultStateDir(): string {
  return resolve(process.env.IY_STATE_DIR ?? join(repoRoot(), ".testbed"));
}

/**
 * A free port below the kernel's ephemeral range (32768+ on Linux), so that a registry restarted
 * on its old port never finds it taken by some client connection's local end. `preferred` wins
 * when it is free (a restart keeps its port); `waitMs` keeps trying it that long.
 */
export async function freePort(preferred?: number, waitMs = 0): Promise<number> {
  if (preferred) {
    const deadline = Date.now() + waitMs;
    for (;;) {
      try {
        return await tryListen(preferred);
      } catch {
        if (Date.now() >= deadline) break;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  }
  for (let i = 0; i < 50; i++) {
    try {
      return await tryListen(20_000 + Math.floor(Math.random() * 12_000));
    } catch {
      /* taken: draw again */
    }
  }
  return tryListen(0);
}

/** True when `pid` is a live (non-zombie) process whose command line mentions `marker`. */
export function isOurProcess(pid: number | undefined, marker: string): boolean {
  if (!pid) return false;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    if (/\) Z /.test(stat)) return false;
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").includes(marker);
  } catch {
    return false;
  }
}

export async function waitUntil(what: string, deadlineMs: number, check: () => boolean | Promise<boolean>): Promise<void> {
  const deadline = Date.now() + deadlineMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) throw new Error(`${what}: still not done after ${deadlineMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export async function signalAndWait(pid: number | undefined, marker: string, signal: NodeJS.Signals): Promise<void> {
  if (!pid || !isOurProcess(pid, marker)) return;
  try {
    process.kill(pid, signal);
  } catch {
    return;
  }
  await waitUntil(`stop pid ${pid}`, 15_000, () => !isOurProcess(pid, marker));
}

/** `extraEnv` is added to (and overrides) this process's environment. */
export function spawnLogged(cmd: string, args: string[], logFile: string, pidFile: string, extraEnv: Record<string, string> = {}): number {
  mkdirSync(dirname(logFile), { recursive: true });
  mkdirSync(dirname(pidFile), { recursive: true });
  const fd = openSync(logFile, "a");
  // REGISTRY_* variables would override the config file.
  const env = { ...Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("REGISTRY_"))), ...extraEnv };
  try {
    // Detached: the test bed outlives the process that started it (scripts/testbed.sh up).
    const child = spawn(cmd, args, { detached: true, stdio: ["ignore", fd, fd], env });
    child.unref();
    if (!child.pid) throw new Error(`cannot start ${cmd}: no pid`);
    writeFileSync(pidFile, `${child.pid}\n`);
    return child.pid;
  } finally {
    closeSync(fd);
  }
}

export function logTail(file: string, lines = 15): string {
  try {
    return readFileSync(file, "utf8").trimEnd().split("\n").slice(-lines).join("\n");
  } catch {
    return "(no log)";
  }
}

export async function waitHttp(
  url: string,
  ok: number[],
  pid: number,
  marker: string,
  logFile: string,
  ca?: string,
  timeoutMs = READY_TIMEOUT_MS,
): Promise<void> {
  const dispatcher = createDispatcher({
    tls: ca ? { ca: [readFileSync(ca, "utf8")] } : undefined,
    connections: 1,
    connectTimeoutMs: 2_000,
  });
  try {
    await waitUntil(`wait for ${url}`, timeoutMs, async () => {
      // Between fork and exec /proc shows the parent's command line, so only a dead child counts as gone.
      if (!isAlive(pid)) throw new Error(`${marker} exited before answering ${url}:\n${logTail(logFile)}`);
      try {
        const res = await send({ method: "GET", url, ok, operation: "test bed readiness", dispatcher });
        await res.body.dump();
        return true;
      } catch (e) {
        if ((e as { status?: number }).status !== undefined) throw e;
        return false;
      }
    });
  } finally {
    await dispatcher.close();
  }
}

export function sha256File(file: string): string {
  return createHash("sha256").update(readFileSync(file)).digest("hex");
}

// ---------------------------------------------------------------------------------------------
// Lock and leases

export async function withLock<T>(dir: string, fn: () => Promise<T>, timeoutMs = LOCK_TIMEOUT_MS): Promise<T> {
  const lock = join(dir, ".lock");
  mkdirSync(dir, { recursive: true });
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      mkdirSync(lock);
      writeFileSync(join(lock, "pid"), `${process.pid}\n`);
      break;
    } catch {
      let holder = 0;
      try {
        holder = Number(readFileSync(join(lock, "pid"), "utf8"));
      } catch {
        /* being created or removed */
      }
      if (holder && !isAlive(holder)) rmSync(lock, { recursive: true, force: true });
      if (Date.now() > deadline) throw new Error(`test bed lock ${lock}: held by pid ${holder} for ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  try {
    return await fn();
  } finally {
    rmSync(lock, { recursive: true, force: true });
  }
}

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return !/\) Z /.test(readFileSync(`/proc/${pid}/stat`, "utf8"));
  } catch {
    return false;
  }
}

/** Leases whose holder is gone no longer keep the test bed up; "persistent" ones always do. */
export function liveLeases(dir: string): string[] {
  const leases = join(dir, "leases");
  if (!existsSync(leases)) return [];
  return readdirSync(leases).filter((name) => {
    const holder = readFileSync(join(leases, name), "utf8").trim();
    if (holder === "persistent" || isAlive(Number(holder))) return true;
    rmSync(join(leases, name), { force: true });
    return false;
  });
}
