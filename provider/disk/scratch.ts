// Scratch space for one image operation: a unique directory under a base (default
// os.tmpdir()/imageyard), a free-space check before each step that writes, a record of the bytes
// really allocated (sparse files count their blocks, not their length), and removal on every path.
import { rmSync } from "node:fs";
import { mkdir, mkdtemp, readdir, rm, stat, statfs } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { formatBytes } from "../http/progress";
import { DiskImageError } from "./errors";
import { ownerIsGone, readOwner, writeOwner } from "./owner";

export function defaultScratchBase(): string {
  return join(tmpdir(), "imageyard");
}

/** Space left for headroom: file-system metadata, qemu-img's own rounding. */
export const SCRATCH_RESERVE_BYTES = 16 * 1024 * 1024;

export interface SpaceCheck {
  /** Bytes the next step will write. */
  needed: number;
  /** Bytes free for an unprivileged user (statfs bavail × bsize). */
  available: number;
  dir: string;
  /** For messages: "download https://host/x.qcow2". */
  what: string;
  /** "the download", "the conversion to raw". */
  step: string;
}

/** Pure arithmetic of the free-space check, separate so it can be tested with any numbers. */
export function checkFreeSpace(c: SpaceCheck): void {
  const want = c.needed + SCRATCH_RESERVE_BYTES;
  if (c.available >= want) return;
  throw new DiskImageError(
    "NO_SPACE",
    `${c.what}: ${c.step} needs about ${formatBytes(want)} of scratch space but ${c.dir} has ${formatBytes(c.available)} free. Free space there or set scratchDir to a larger file system.`,
  );
}

export type StatFs = (dir: string) => Promise<{ bavail: number | bigint; bsize: number | bigint }>;

export async function freeBytes(dir: string, statFs: StatFs = statfs): Promise<number> {
  const s = await statFs(dir);
  return Number(s.bavail) * Number(s.bsize);
}

export class Scratch {
  private peakBytes = 0;
  private timer: NodeJS.Timeout | undefined;
  private removed = false;

  private constructor(
    readonly dir: string,
    private readonly statFs: StatFs,
  ) {}

  /**
   * Creates a fresh directory under `base`; one per operation, so parallel work never collides.
   * Directories that killed runs left there are reclaimed first.
   */
  static async create(base: string = defaultScratchBase(), statFs: StatFs = statfs, log?: (line: string) => void): Promise<Scratch> {
    await mkdir(base, { recursive: true, mode: 0o700 });
    await reclaimStale(base, log);
    const dir = await mkdtemp(join(base, "op-"));
    const scratch = new Scratch(dir, statFs);
    live.add(scratch);
    try {
      await writeOwner(dir);
    } catch (e) {
      await scratch.remove();
      throw e;
    }
    return scratch;
  }

  path(name: string): string {
    return join(this.dir, name);
  }

  async hasSpace(needed: number): Promise<boolean> {
    return (await freeBytes(this.dir, this.statFs)) >= needed + SCRATCH_RESERVE_BYTES;
  }

  async ensureSpace(needed: number, what: string, step: string): Promise<void> {
    checkFreeSpace({ needed, available: await freeBytes(this.dir, this.statFs), dir: this.dir, what, step });
  }

  /** Bytes allocated on disk by everything in the directory now (blocks × 512, so holes are free). */
  allocated(): Promise<number> {
    return allocatedIn(this.dir);
  }

  /** Records the current allocation into the peak; returns it. */
  async sample(): Promise<number> {
    const now = await this.allocated();
    if (now > this.peakBytes) this.peakBytes = now;
    return now;
  }

  /** Samples in the background while a program (qemu-img) writes, for the peak figure. */
  track(intervalMs = 250): () => Promise<void> {
    let busy = false;
    this.timer = setInterval(() => {
      if (busy) return;
      busy = true;
      void this.sample().finally(() => (busy = false));
    }, intervalMs);
    this.timer.unref();
    return async () => {
      if (this.timer) clearInterval(this.timer);
      this.timer = undefined;
      await this.sample();
    };
  }

  /** Highest allocation seen by sample()/track(). */
  get peak(): number {
    return this.peakBytes;
  }

  async remove(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    if (this.removed) return;
    this.removed = true;
    live.delete(this);
    await rm(this.dir, { recursive: true, force: true });
  }

  /** For a process that is being terminated: no await, nothing left behind. */
  removeNow(): void {
    if (this.removed) return;
    this.removed = true;
    live.delete(this);
    rmSync(this.dir, { recursive: true, force: true });
  }
}

async function allocatedIn(dir: string): Promise<number> {
  let total = 0;
  let names: string[];
  try {
    names = await readdir(dir);
  } catch {
    return 0;
  }
  for (const n of names) {
    try {
      const s = await stat(join(dir, n));
      if (s.isFile()) total += s.blocks * 512;
    } catch {
      /* removed meanwhile */
    }
  }
  return total;
}

/** Scratch directories of this process that still exist (removed on a terminating signal). */
const live = new Set<Scratch>();

/** Removes every scratch directory of this process at once (a SIGTERM/SIGINT is ending it). */
export function removeLiveScratch(): number {
  const all = [...live];
  for (const s of all) {
    try {
      s.removeNow();
    } catch {
      /* best effort while exiting */
    }
  }
  return all.length;
}

/**
 * Deletes the op-* directories under `base` whose owner marker names a process of this host that
 * is gone. Never a directory without our marker, of another host, or of a live process.
 */
export async function reclaimStale(base: string, log?: (line: string) => void): Promise<string[]> {
  let names: string[];
  try {
    names = await readdir(base);
  } catch {
    return [];
  }
  const reclaimed: string[] = [];
  for (const name of names.filter((n) => n.startsWith("op-"))) {
    const dir = join(base, name);
    const owner = await readOwner(dir);
    if (!owner || !ownerIsGone(owner)) continue;
    const bytes = await allocatedIn(dir);
    await rm(dir, { recursive: true, force: true });
    reclaimed.push(dir);
    log?.(`reclaimed scratch ${dir} (${formatBytes(bytes)}) left by an earlier run (pid ${owner.pid}) that is gone`);
  }
  return reclaimed;
}
