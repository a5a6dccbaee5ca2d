import { openSync, closeSync, writeSync } from "node:fs";
import { mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { checkFreeSpace, freeBytes, Scratch, SCRATCH_RESERVE_BYTES } from "../../../../provider/disk/scratch";
import { isImageyardError } from "../../../../provider/http/errors";

const GiB = 1024 ** 3;

describe("checkFreeSpace", () => {
  const check = (needed: number, available: number) => () =>
    checkFreeSpace({ needed, available, dir: "/scratch/op-1", what: "download https://h/x.qcow2", step: "the conversion to raw" });

  it("passes when the need plus the reserve fits", () => {
    expect(check(2 * GiB, 2 * GiB + SCRATCH_RESERVE_BYTES)).not.toThrow();
  });

  it("fails NO_SPACE one byte short, naming the step, the sizes and what to do", () => {
    try {
      check(2 * GiB, 2 * GiB + SCRATCH_RESERVE_BYTES - 1)();
      throw new Error("passed");
    } catch (e) {
      expect(isImageyardError(e, "NO_SPACE")).toBe(true);
      expect((e as Error).message).toBe(
        "download https://h/x.qcow2: the conversion to raw needs about 2.0 GiB of scratch space but /scratch/op-1 has 2.0 GiB free. Free space there or set scratchDir to a larger file system.",
      );
    }
  });

  it("computes free bytes as available blocks × block size, bigint or number", async () => {
    expect(await freeBytes("/x", async () => ({ bavail: 10n, bsize: 4096n }))).toBe(40960);
    expect(await freeBytes("/x", async () => ({ bavail: 3, bsize: 512 }))).toBe(1536);
  });
});

describe("Scratch", () => {
  it("creates a unique directory per operation and removes it", async () => {
    const base = await mkdtemp(join(tmpdir(), "iy-scratch-unit-"));
    try {
      const a = await Scratch.create(base);
      const b = await Scratch.create(base);
      expect(a.dir).not.toBe(b.dir);
      await a.remove();
      await b.remove();
      expect(await readdir(base)).toEqual([]);
    } finally {
      await rm(base, { recursive: true, force: true });
    }
  });

  it("counts allocated blocks, not apparent size, so a sparse 1 GiB file with 1 MiB of data counts about 1 MiB", async () => {
    const base = await mkdtemp(join(tmpdir(), "iy-scratch-unit-"));
    try {
      const s = await Scratch.create(base);
      const fd = openSync(s.path("sparse.raw"), "w");
      writeSync(fd, Buffer.alloc(1024 * 1024, 1), 0, 1024 * 1024, 0);
      writeSync(fd, Buffer.alloc(1, 1), 0, 1, GiB - 1);
      closeSync(fd);
      const used = await s.sample();
      expect(used).toBeGreaterThanOrEqual(1024 * 1024);
      expect(used).toBeLessThan(8 * 1024 * 1024);
      expect(s.peak).toBe(used);
      await s.remove();
    } finally {
      await rm(base, { recursive: true, force: true });
    }
  });
});
