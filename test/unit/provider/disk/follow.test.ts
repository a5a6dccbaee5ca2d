import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { GrowingFile } from "../../../../provider/disk/follow";
import { isImageyardError } from "../../../../provider/http/errors";

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "iy-growing-"));
});
afterEach(() => rm(dir, { recursive: true, force: true }));

describe("GrowingFile", () => {
  it("writes every chunk in order and lets a reader wait for a range that is not there yet", async () => {
    const file = new GrowingFile(join(dir, "f"));
    const chunks = Array.from({ length: 64 }, (_, i) => Buffer.alloc(64 * 1024, i));
    const waited = file.waitFor(40 * 64 * 1024, "t").then(() => file.durable);
    await pipeline(Readable.from(chunks, { objectMode: false }), file);
    expect(await waited).toBeGreaterThanOrEqual(40 * 64 * 1024);
    expect((await readFile(join(dir, "f"))).equals(Buffer.concat(chunks))).toBe(true);
  });

  it("serves the last bytes written from memory, across chunk boundaries, and only those", async () => {
    const file = new GrowingFile(join(dir, "f"));
    const chunks = Array.from({ length: 48 }, (_, i) => Buffer.alloc(1024 * 1024, i));
    await pipeline(Readable.from(chunks, { objectMode: false }), file);
    const across = file.readRecent(47 * 1024 * 1024 - 10, 20);
    expect(across && [...across]).toEqual([...Buffer.alloc(10, 46), ...Buffer.alloc(10, 47)]);
    // The window is bounded (16 MiB): the start of the file has to be read from disk.
    expect(file.readRecent(0, 10)).toBeUndefined();
    expect(file.readRecent(47 * 1024 * 1024, 2 * 1024 * 1024)).toBeUndefined();
  });

  it("fails a wait past the end of a finished file as a truncated image", async () => {
    const file = new GrowingFile(join(dir, "f"));
    await pipeline(Readable.from([Buffer.alloc(100)], { objectMode: false }), file);
    const e = await file.waitFor(200, "download u").then(
      () => undefined,
      (x: unknown) => x,
    );
    expect(isImageyardError(e, "QEMU_FAILED")).toBe(true);
    expect((e as Error).message).toBe(
      "download u: the qcow2 points at byte 200 but the file has 100 bytes. The image is corrupt or truncated; check source.url.",
    );
  });

  it("wakes waiting readers with the download's error", async () => {
    const file = new GrowingFile(join(dir, "f"));
    const waiting = file.waitFor(1000, "t").then(
      () => undefined,
      (x: unknown) => x,
    );
    file.fail(new Error("connection reset"));
    expect(((await waiting) as Error).message).toBe("connection reset");
    file.destroy();
  });
});
