// prepareImage's follow mode: qcow2 → raw streamed while the qcow2 is still downloading.
import { Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { prepareImage } from "../../../../provider/disk/prepare";
import { isImageyardError } from "../../../../provider/http/errors";
import type { ProgressEvent } from "../../../../provider/http/progress";
import { hashStream, imageUrl, scratchBase, testbed } from "./helpers";

let scratch: ReturnType<typeof scratchBase>;
beforeEach(() => {
  scratch = scratchBase();
});
afterEach(() => scratch.remove());

async function drainCounting(stream: NodeJS.ReadableStream): Promise<{ received: number; error: unknown }> {
  let received = 0;
  const sink = new Writable({
    write(c, _e, cb) {
      received += (c as Buffer).length;
      cb();
    },
  });
  const error = await pipeline(stream, sink).then(
    () => undefined,
    (e) => e,
  );
  return { received, error };
}

describe("prepareImage follow mode (qcow2 → raw while downloading)", () => {
  it("streams the raw bytes of a checksummed qcow2, equal to the raw disk, and verifies the checksum", async () => {
    const tb = testbed();
    const img = await prepareImage(
      { url: imageUrl("disk.qcow2"), checksum: `sha256:${tb.files["disk.qcow2"]!.sha256}` },
      { diskFormat: "raw", scratchDir: scratch.dir, hashes: ["md5"] },
    );
    expect(img.mode).toBe("follow");
    expect(img.size).toBe(tb.files["disk.raw"]!.size);
    expect(img.sourceChecksum).toMatchObject({ algo: "sha256", verified: true });
    const got = await hashStream(img.open());
    expect(got.sha512).toBe(tb.files["disk.raw"]!.sha512);
    expect(await img.digests()).toMatchObject({
      sha512: tb.files["disk.raw"]!.sha512,
      md5: tb.files["disk.raw"]!.md5,
      size: tb.files["disk.raw"]!.size,
    });
    // A second read (a retried upload) gives the same bytes from the finished file.
    expect((await hashStream(img.open())).sha512).toBe(tb.files["disk.raw"]!.sha512);
    expect(img.scratch.peakBytes).toBeLessThanOrEqual(tb.files["disk.qcow2"]!.size + 1024 * 1024);
    await img.cleanup();
    expect(scratch.leftovers()).toEqual([]);
  });

  it("hands out the first raw bytes while a slow download is still running, and cleanup stops it", async () => {
    const tb = testbed();
    const events: ProgressEvent[] = [];
    const img = await prepareImage(
      { url: `${tb.url}/slow/disk.qcow2`, checksum: `sha256:${tb.files["disk.qcow2"]!.sha256}` },
      { diskFormat: "raw", scratchDir: scratch.dir, onProgress: (e) => events.push(e) },
    );
    expect(img.mode).toBe("follow");
    const stream = img.open();
    const first = await new Promise<Buffer>((resolve, reject) => {
      stream.once("data", resolve);
      stream.once("error", reject);
    });
    expect(first.length).toBeGreaterThan(0);
    expect(events.some((e) => e.phase === "download" && e.done)).toBe(false);
    stream.destroy();
    await img.cleanup();
    expect(scratch.leftovers()).toEqual([]);
  });

  it("fails the stream before its end when the download does not match the checksum", async () => {
    const tb = testbed();
    const img = await prepareImage(
      { url: imageUrl("disk.qcow2"), checksum: `sha256:${"0".repeat(64)}` },
      { diskFormat: "raw", scratchDir: scratch.dir },
    );
    expect(img.mode).toBe("follow");
    const { received, error } = await drainCounting(img.open());
    expect(isImageyardError(error, "CHECKSUM_MISMATCH")).toBe(true);
    expect(received).toBeLessThan(tb.files["disk.raw"]!.size);
    await img.cleanup();
    expect(scratch.leftovers()).toEqual([]);
  });

  it("continues through qemu-nbd from the first compressed cluster, with the right bytes", async () => {
    const tb = testbed();
    const img = await prepareImage(
      { url: imageUrl("compressed.qcow2"), checksum: `sha256:${tb.files["compressed.qcow2"]!.sha256}` },
      { diskFormat: "raw", scratchDir: scratch.dir },
    );
    expect(img.mode).toBe("follow");
    expect((await hashStream(img.open())).sha512).toBe(tb.files["compressible.raw"]!.sha512);
    await img.cleanup();
    expect(scratch.leftovers()).toEqual([]);
  });

  it("fails a truncated qcow2 before the end of the stream, even though its checksum is right", async () => {
    const tb = testbed();
    const img = await prepareImage(
      { url: imageUrl("truncated.qcow2"), checksum: `sha256:${tb.files["truncated.qcow2"]!.sha256}` },
      { diskFormat: "raw", scratchDir: scratch.dir },
    );
    const { received, error } = await drainCounting(img.open());
    expect(isImageyardError(error, "QEMU_FAILED")).toBe(true);
    expect((error as Error).message).toMatch(/truncated|corrupt/);
    expect(received).toBeLessThan(tb.files["disk.raw"]!.size);
    await img.cleanup();
    expect(scratch.leftovers()).toEqual([]);
  });

  it("is not used without a checksum or when turned off", async () => {
    const tb = testbed();
    const a = await prepareImage({ url: imageUrl("disk.qcow2") }, { diskFormat: "raw", scratchDir: scratch.dir });
    expect(a.mode).toBe("extents");
    await a.cleanup();
    const b = await prepareImage(
      { url: imageUrl("disk.qcow2"), checksum: `sha256:${tb.files["disk.qcow2"]!.sha256}` },
      { diskFormat: "raw", scratchDir: scratch.dir, follow: false },
    );
    expect(b.mode).toBe("extents");
    await b.cleanup();
  });
});
