// Who made a scratch directory: a marker with the host, pid and that process's start time, so a
// later run can tell a directory of a killed run (safe to reclaim) from one a live run still uses
// (a reused pid has another start time).
import { readFileSync } from "node:fs";
import { readFile, writeFile } from "node:fs/promises";
import { hostname } from "node:os";
import { join } from "node:path";

export const OWNER_FILE = ".imageyard-owner.json";

export interface Owner {
  host: string;
  pid: number;
  /** /proc/<pid>/stat starttime (clock ticks since boot); undefined where there is no /proc. */
  start: string | undefined;
}

/** The start time of a live process, or undefined when it is gone (or unknowable). */
export function processStart(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    // After "(comm)": state is field 3; starttime is field 22.
    if (fields[0] === "Z") return undefined;
    return fields[19];
  } catch {
    return undefined;
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
}

export function currentOwner(): Owner {
  return { host: hostname(), pid: process.pid, start: processStart(process.pid) };
}

export async function writeOwner(dir: string, owner: Owner = currentOwner()): Promise<void> {
  await writeFile(join(dir, OWNER_FILE), JSON.stringify(owner), { mode: 0o600 });
}

export async function readOwner(dir: string): Promise<Owner | undefined> {
  try {
    const o = JSON.parse(await readFile(join(dir, OWNER_FILE), "utf8")) as Owner;
    return typeof o.pid === "number" && typeof o.host === "string" ? o : undefined;
  } catch {
    return undefined;
  }
}

/** True only when the owner ran on this host and that process is gone (or the pid was reused). */
export function ownerIsGone(o: Owner): boolean {
  if (o.host !== hostname()) return false;
  if (o.pid === process.pid) return o.start !== processStart(process.pid);
  if (o.start !== undefined) return processStart(o.pid) !== o.start;
  return !alive(o.pid);
}
