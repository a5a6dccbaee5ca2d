import { createHash, randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import { StreamHasher } from "../../../../provider/disk/hasher";

async function feed(h: StreamHasher, chunks: Buffer[]): Promise<void> {
  for (const c of chunks) await h.update(c);
}

describe("StreamHasher", () => {
  it("stays on the main thread when told to, for any size, equal to node:crypto", async () => {
    const chunks = Array.from({ length: 10 }, () => randomBytes(1024 * 1024));
    const h = new StreamHasher(["sha512"], { offThread: false });
    for (const c of chunks) expect(h.update(c)).toBeUndefined();
    expect(await h.digest()).toEqual({ sha512: createHash("sha512").update(Buffer.concat(chunks)).digest("hex") });
  });

  it("hashes a small input on the main thread, equal to node:crypto", async () => {
    const chunks = [randomBytes(1000), randomBytes(70_000)];
    const h = new StreamHasher(["md5", "sha512"]);
    await feed(h, chunks);
    const all = Buffer.concat(chunks);
    expect(await h.digest()).toEqual({
      md5: createHash("md5").update(all).digest("hex"),
      sha512: createHash("sha512").update(all).digest("hex"),
    });
  });

  it("moves to a worker past 8 MiB and still covers every byte, views into larger buffers included", async () => {
    const big = randomBytes(3 * 1024 * 1024);
    // Views whose backing store is larger than the view: only the view's bytes may be hashed.
    const chunks = Array.from({ length: 12 }, (_, i) => big.subarray(i * 1000, i * 1000 + 1024 * 1024 + i));
    const h = new StreamHasher(["sha256", "sha512"], { offThread: true });
    await feed(h, chunks);
    const all = Buffer.concat(chunks);
    expect(h.bytes).toBe(all.length);
    expect(await h.digest()).toEqual({
      sha256: createHash("sha256").update(all).digest("hex"),
      sha512: createHash("sha512").update(all).digest("hex"),
    });
  });
});
