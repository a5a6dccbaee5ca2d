import { createHash } from "node:crypto";
import { Readable, Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { describe, expect, it } from "vitest";
import { fileNameOf, parseChecksum, parseSums, pickSumsEntry, VerifyingStream } from "../../../../provider/disk/checksum";
import { isImageyardError } from "../../../../provider/http/errors";

const H256 = "94e1e2c94dbbae7d4bdc38e68590a1daf73c9de2d03dd693857b4b0a042548e8";
const H512 = "a".repeat(64) + "b".repeat(64);
const HMD5 = "0123456789abcdef0123456789abcdef";

describe("parseChecksum", () => {
  const good: Array<[string, string, string]> = [
    [`sha256:${H256}`, "sha256", H256],
    [`SHA256:${H256.toUpperCase()}`, "sha256", H256],
    [`sha512:${H512}`, "sha512", H512],
    [`md5:${HMD5}`, "md5", HMD5],
    [`sha256=${H256}`, "sha256", H256],
    [`sha-256:${H256}`, "sha256", H256],
    [`  ${H256}  `, "sha256", H256],
    [H512, "sha512", H512],
    [HMD5, "md5", HMD5],
  ];
  for (const [input, algo, value] of good) {
    it(`reads "${input.slice(0, 20)}…" as ${algo}`, () => {
      expect(parseChecksum(input)).toEqual({ algo, value });
    });
  }

  const bad: Array<[string, RegExp]> = [
    [`sha1:${"a".repeat(40)}`, /unsupported algorithm "sha1"/],
    [`sha256:${H256.slice(1)}`, /a sha256 value has 64 hex digits, this one has 63/],
    [`sha256:${"z".repeat(64)}`, /not hexadecimal/],
    ["a".repeat(40), /40 hex digits match no supported algorithm/],
    ["latest", /not a checksum/],
  ];
  for (const [input, why] of bad) {
    it(`rejects "${input.slice(0, 20)}…" with a reason and an example`, () => {
      try {
        parseChecksum(input);
        throw new Error("accepted");
      } catch (e) {
        expect(isImageyardError(e, "INVALID_INPUT")).toBe(true);
        expect((e as Error).message).toMatch(why);
        expect((e as Error).message).toMatch(/^source\.checksum ".*": .*e\.g\. "sha256:94e1e2c9/);
      }
    });
  }
});

describe("parseSums", () => {
  it("reads GNU coreutils lines in text and binary mode and strips ./", () => {
    const text = `${H256}  ubuntu.img\n${"c".repeat(64)} *debian.qcow2\n${HMD5}  ./sub/cirros.img\n`;
    expect(parseSums(text)).toEqual([
      { algo: "sha256", value: H256, name: "ubuntu.img" },
      { algo: "sha256", value: "c".repeat(64), name: "debian.qcow2" },
      { algo: "md5", value: HMD5, name: "sub/cirros.img" },
    ]);
  });

  it("reads BSD/openssl style lines with and without spaces, skipping unsupported algorithms", () => {
    const text = `SHA256 (a.img) = ${H256}\nSHA512(a.img)= ${H512}\nSHA1 (a.img) = ${"d".repeat(40)}\nMD5 (b.img) = ${HMD5}\r\n`;
    expect(parseSums(text)).toEqual([
      { algo: "sha256", value: H256, name: "a.img" },
      { algo: "sha512", value: H512, name: "a.img" },
      { algo: "md5", value: HMD5, name: "b.img" },
    ]);
  });

  it("reads a Fedora CHECKSUM file inside PGP armour and ignores comments and the signature", () => {
    const text = [
      "-----BEGIN PGP SIGNED MESSAGE-----",
      "Hash: SHA256",
      "",
      "# Fedora-Cloud-Base-40.x86_64.qcow2: 397475840 bytes",
      `SHA256 (Fedora-Cloud-Base-40.x86_64.qcow2) = ${H256}`,
      "- --- dash-escaped line",
      "-----BEGIN PGP SIGNATURE-----",
      "",
      `iQIzBAEBCAAdFiEE${"0".repeat(64)}`,
      "-----END PGP SIGNATURE-----",
    ].join("\n");
    expect(parseSums(text)).toEqual([{ algo: "sha256", value: H256, name: "Fedora-Cloud-Base-40.x86_64.qcow2" }]);
  });

  it("ignores blank lines, comments and lines of no known form", () => {
    expect(parseSums(`\n# comment\nnot a checksum line\n${"e".repeat(40)}  sha1-only.img\n`)).toEqual([]);
  });
});

describe("pickSumsEntry", () => {
  const entries = parseSums(`${HMD5}  x.img\nSHA256 (x.img) = ${H256}\nSHA512 (x.img) = ${H512}\n${H256}  other.img\n${HMD5}  dir/y.img\n`);

  it("takes the strongest algorithm listed for the file", () => {
    expect(pickSumsEntry(entries, "x.img", "read checksums")).toMatchObject({ algo: "sha512", value: H512 });
  });

  it("matches a listed path by its base name", () => {
    expect(pickSumsEntry(entries, "y.img", "read checksums")).toMatchObject({ algo: "md5", name: "dir/y.img" });
  });

  it("fails naming the file and what the SUMS file lists", () => {
    expect(() => pickSumsEntry(entries, "z.img", "read checksums https://h/SUMS")).toThrow(
      /read checksums https:\/\/h\/SUMS: no entry for "z\.img" \(it lists x\.img, other\.img, dir\/y\.img\)/,
    );
  });

  it("says the file is not a SUMS file when it has no checksum lines", () => {
    expect(() => pickSumsEntry([], "z.img", "read checksums")).toThrow(/no sha256, sha512 or md5 lines found/);
  });
});

describe("fileNameOf", () => {
  it("takes the last path segment, decoded, ignoring the query", () => {
    expect(fileNameOf("https://h/images/noble%20server.img?sig=abc")).toBe("noble server.img");
    expect(fileNameOf("file:///srv/images/disk.qcow2")).toBe("disk.qcow2");
  });
});

describe("VerifyingStream", () => {
  const chunks = [Buffer.from("first chunk "), Buffer.from("second chunk "), Buffer.from("last chunk")];
  const whole = Buffer.concat(chunks);
  const sha256 = createHash("sha256").update(whole).digest("hex");

  async function run(expectedValue: string): Promise<{ received: Buffer[]; error: unknown; stream: VerifyingStream }> {
    const received: Buffer[] = [];
    const stream = new VerifyingStream({
      expected: { algo: "sha256", value: expectedValue },
      algos: ["md5", "sha512"],
      what: "download https://h/x.qcow2",
    });
    const sink = new Writable({
      write(c, _e, cb) {
        received.push(c as Buffer);
        cb();
      },
    });
    let error: unknown;
    await pipeline(Readable.from(chunks, { objectMode: false }), stream, sink).catch((e) => (error = e));
    return { received, error, stream };
  }

  it("passes every byte through and computes md5, sha256 and sha512 when the digest matches", async () => {
    const { received, error, stream } = await run(sha256);
    expect(error).toBeUndefined();
    expect(Buffer.concat(received).equals(whole)).toBe(true);
    expect(stream.digests).toEqual({
      md5: createHash("md5").update(whole).digest("hex"),
      sha256,
      sha512: createHash("sha512").update(whole).digest("hex"),
    });
  });

  it("withholds the final chunk and fails CHECKSUM_MISMATCH when the digest differs", async () => {
    const wrong = "0".repeat(64);
    const { received, error } = await run(wrong);
    expect(isImageyardError(error, "CHECKSUM_MISMATCH")).toBe(true);
    expect((error as Error).message).toBe(
      `download https://h/x.qcow2: expected sha256:${wrong}, got sha256:${sha256} after ${whole.length} bytes; file discarded. Check source.checksum or the SUMS file.`,
    );
    // The consumer never saw the end of the data.
    expect(Buffer.concat(received).length).toBe(whole.length - chunks[2]!.length);
  });
});
