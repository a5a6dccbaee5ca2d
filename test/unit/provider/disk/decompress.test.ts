import { describe, expect, it } from "vitest";
import { chooseCompression, decompressorArgv, detectCompression } from "../../../../provider/disk/decompress";

const magic: Array<[string, number[], string | undefined]> = [
  ["gzip", [0x1f, 0x8b, 0x08, 0x00, 0, 0], "gz"],
  ["bzip2", [0x42, 0x5a, 0x68, 0x39, 0x31, 0x41], "bz2"],
  ["xz", [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00], "xz"],
  ["zstd", [0x28, 0xb5, 0x2f, 0xfd, 0x04, 0x00], "zst"],
  ["qcow2", [0x51, 0x46, 0x49, 0xfb, 0, 0], undefined],
  ["'BZh' without a block size digit", [0x42, 0x5a, 0x68, 0x30, 0, 0], undefined],
  ["a truncated xz magic", [0xfd, 0x37, 0x7a, 0x58], undefined],
  ["nothing", [], undefined],
];

describe("detectCompression", () => {
  for (const [what, bytes, kind] of magic) {
    it(`reads ${what} as ${kind ?? "not compressed"}`, () => {
      expect(detectCompression(Buffer.from(bytes))).toBe(kind);
    });
  }
});

describe("chooseCompression", () => {
  const gz = Buffer.from([0x1f, 0x8b, 0x08, 0, 0, 0]);
  const plain = Buffer.from("QFI\xfb\0\0", "latin1");

  it("follows the magic bytes in auto mode", () => {
    expect(chooseCompression("auto", gz, "d")).toBe("gz");
    expect(chooseCompression("auto", plain, "d")).toBeUndefined();
  });

  it("accepts an explicit choice that agrees with the data", () => {
    expect(chooseCompression("gz", gz, "d")).toBe("gz");
    expect(chooseCompression("none", plain, "d")).toBeUndefined();
  });

  it("refuses an explicit choice the data contradicts", () => {
    expect(() => chooseCompression("xz", gz, "download u")).toThrow(/download u: source\.compression is "xz" but the data is gz/);
    expect(() => chooseCompression("zst", plain, "download u")).toThrow(/but the data is not compressed/);
    expect(() => chooseCompression("none", gz, "download u")).toThrow(/"none" but the data starts with gz magic bytes/);
  });
});

describe("decompressorArgv", () => {
  it("runs the programs as filters with argv, never a shell", () => {
    expect(decompressorArgv("bz2")).toEqual(["bzip2", ["-d", "-c", "-q"]]);
    expect(decompressorArgv("xz")).toEqual(["xz", ["-d", "-c", "-q"]]);
    expect(decompressorArgv("zst")).toEqual(["zstd", ["-d", "-c", "-q"]]);
  });
});
