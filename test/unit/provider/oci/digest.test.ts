import { Readable, Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { describe, expect, it } from "vitest";
import { algorithmOf, digestBytes, hexOf, readVerified, verifyingStream } from "../../../../provider/oci/digest";

const data = Buffer.from("abcdefghijklmnopqrstuvwxyz".repeat(100));
const digest = digestBytes(data);

/** Feeds `chunks` through a verifier and records what came out, and the error if any. */
async function run(chunks: Buffer[], opts: { digest?: string; size?: number; skip?: number }): Promise<{ out: Buffer; error?: Error }> {
  const got: Buffer[] = [];
  const sink = new Writable({ write: (c: Buffer, _e, cb) => (got.push(c), cb()) });
  const verifier = verifyingStream({
    digest: opts.digest ?? digest,
    size: opts.size ?? data.length,
    from: "127.0.0.1:5001/team/app",
    ...(opts.skip ? { skip: opts.skip } : {}),
  });
  try {
    await pipeline(Readable.from(chunks), verifier, sink);
    return { out: Buffer.concat(got) };
  } catch (e) {
    return { out: Buffer.concat(got), error: e as Error };
  }
}

function chunked(b: Buffer, n: number): Buffer[] {
  const out: Buffer[] = [];
  for (let i = 0; i < b.length; i += n) out.push(b.subarray(i, i + n));
  return out;
}

describe("verifyingStream", () => {
  it("passes a matching blob through unchanged", async () => {
    const { out, error } = await run(chunked(data, 300), {});
    expect(error).toBeUndefined();
    expect(out.equals(data)).toBe(true);
  });

  it("withholds the last chunk of a blob whose digest does not match, so the target never gets it whole", async () => {
    const bad = Buffer.from(data);
    bad[5] = bad[5]! ^ 1;
    const { out, error } = await run(chunked(bad, 300), {});
    expect(error).toMatchObject({ code: "DIGEST_MISMATCH" });
    expect(out.length).toBe(data.length - (data.length % 300 || 300));
    expect(error!.message).toMatch(
      new RegExp(
        `^blob sha256:[0-9a-f]{12}… from 127\\.0\\.0\\.1:5001/team/app: expected ${digest}, got ${digestBytes(bad)} after ${data.length} bytes \\(DIGEST_MISMATCH\\); nothing was committed to the target\\.`,
      ),
    );
  });

  it("fails a short blob with SIZE_MISMATCH and keeps its last chunk back", async () => {
    const { out, error } = await run(chunked(data.subarray(0, 1000), 250), {});
    expect(error).toMatchObject({ code: "SIZE_MISMATCH" });
    expect(error!.message).toContain(`expected ${data.length} bytes, got 1000`);
    expect(out.length).toBe(750);
  });

  it("stops a source that sends more than the descriptor's size as soon as it overruns", async () => {
    const { error } = await run([data, Buffer.from("extra")], { size: data.length });
    expect(error).toMatchObject({ code: "SIZE_MISMATCH" });
    expect(error!.message).toContain("got more");
  });

  it("hashes but does not pass on the skipped prefix of a resumed upload", async () => {
    const { out, error } = await run(chunked(data, 128), { skip: 1000 });
    expect(error).toBeUndefined();
    expect(out.equals(data.subarray(1000))).toBe(true);
  });

  it("verifies sha512 digests as well", async () => {
    const { out, error } = await run([data], { digest: digestBytes(data, "sha512") });
    expect(error).toBeUndefined();
    expect(out.length).toBe(data.length);
  });

  it("reads a small blob whole only when it verifies", async () => {
    expect((await readVerified(Readable.from([data]), { digest, size: data.length, from: "x" })).equals(data)).toBe(true);
    await expect(readVerified(Readable.from([data.subarray(1)]), { digest, size: data.length, from: "x" })).rejects.toMatchObject({
      code: "SIZE_MISMATCH",
    });
  });

  it("rejects digests it cannot hash or that are malformed", () => {
    expect(() => algorithmOf("md5:abc")).toThrow(/UNSUPPORTED/);
    expect(() => hexOf("sha256:../../etc/passwd")).toThrow(/not a well-formed sha256 digest/);
    expect(hexOf(digest)).toBe(digest.slice(7));
  });
});
