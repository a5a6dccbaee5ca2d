// Shared pieces of the disk integration tests: the test bed, a per-test scratch base, hashing.
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Readable } from "node:stream";
import { loadDiskImageTestbed, type DiskImageTestbed } from "../../../testbed/diskimages";

export function testbed(): DiskImageTestbed {
  return loadDiskImageTestbed();
}

export function imageUrl(name: string): string {
  return `${testbed().url}/images/${name}`;
}

/** A fresh scratch base per test; `leftovers()` lists what an operation left behind in it. */
export function scratchBase(): { dir: string; leftovers(): string[]; remove(): void } {
  const dir = mkdtempSync(join(tmpdir(), "iy-disk-test-"));
  return {
    dir,
    leftovers: () => readdirSync(dir),
    remove: () => rmSync(dir, { recursive: true, force: true }),
  };
}

export async function hashStream(stream: Readable): Promise<{ sha512: string; sha256: string; md5: string; size: number }> {
  const h512 = createHash("sha512");
  const h256 = createHash("sha256");
  const h5 = createHash("md5");
  let size = 0;
  for await (const c of stream) {
    h512.update(c as Buffer);
    h256.update(c as Buffer);
    h5.update(c as Buffer);
    size += (c as Buffer).length;
  }
  return { sha512: h512.digest("hex"), sha256: h256.digest("hex"), md5: h5.digest("hex"), size };
}

/** sha512 of a file by the sha512sum program, as an operator would check it. */
export function sha512sum(path: string): string {
  return execFileSync("sha512sum", [path], { encoding: "utf8" }).split(/\s+/)[0] as string;
}

export async function requestCount(path: string): Promise<number> {
  const res = await fetch(`${testbed().url}/count${path}`);
  return ((await res.json()) as { count: number }).count;
}
