import { describe, expect, it } from "vitest";
import { appendRun, clusterLocation, compareRuns, l2TableOffset, parseQcow2Header, type GuestRun } from "../../../../provider/disk/qcow2";

function header(
  o: {
    version?: number;
    clusterBits?: number;
    size?: bigint;
    l1Size?: number;
    l1Offset?: bigint;
    incompat?: bigint;
    backing?: bigint;
    crypt?: number;
  } = {},
): Buffer {
  const b = Buffer.alloc(112);
  b.writeUInt32BE(0x514649fb, 0);
  b.writeUInt32BE(o.version ?? 3, 4);
  b.writeBigUInt64BE(o.backing ?? 0n, 8);
  b.writeUInt32BE(o.clusterBits ?? 16, 20);
  b.writeBigUInt64BE(o.size ?? 2n * 1024n ** 3n, 24);
  b.writeUInt32BE(o.crypt ?? 0, 32);
  b.writeUInt32BE(o.l1Size ?? 4, 36);
  b.writeBigUInt64BE(o.l1Offset ?? 0x30000n, 40);
  b.writeBigUInt64BE(o.incompat ?? 0n, 72);
  b.writeUInt32BE(112, 100);
  return b;
}

describe("parseQcow2Header", () => {
  it("reads cluster size, virtual size and the L1 table of a plain v3 image", () => {
    expect(parseQcow2Header(header())).toEqual({
      header: {
        version: 3,
        clusterBits: 16,
        clusterSize: 65536,
        virtualSize: 2 * 1024 ** 3,
        l1Size: 4,
        l1TableOffset: 0x30000,
        headerLength: 112,
        incompatibleFeatures: 0n,
      },
    });
  });

  it("accepts the dirty and compression-type feature bits", () => {
    expect("header" in parseQcow2Header(header({ incompat: 0b1001n }))).toBe(true);
  });

  const refused: Array<[string, Parameters<typeof header>[0], RegExp]> = [
    ["extended L2 entries (subclusters)", { incompat: 1n << 4n }, /incompatible features 0x10/],
    ["an external data file", { incompat: 1n << 2n }, /incompatible features 0x4/],
    ["a backing file", { backing: 0x200n }, /backing file/],
    ["encryption", { crypt: 2 }, /encryption/],
    ["an L1 table too small for the size", { l1Size: 3 }, /L1 table of 3 entries for 4 L2 tables/],
    ["an unaligned L1 table", { l1Offset: 0x30008n }, /unaligned L1/],
    ["a version other than 2 or 3", { version: 4 }, /qcow2 version 4/],
  ];
  for (const [what, o, why] of refused) {
    it(`leaves an image with ${what} to qemu`, () => {
      const r = parseQcow2Header(header(o));
      expect("unsupported" in r && r.unsupported).toMatch(why);
    });
  }
});

describe("L1 and L2 entries", () => {
  it("finds the L2 table offset, or none for an unallocated range", () => {
    expect(l2TableOffset(0x8000000000040000n)).toBe(0x40000);
    expect(l2TableOffset(0n)).toBeUndefined();
  });

  it("decodes data, zero-flag, unallocated and compressed clusters", () => {
    expect(clusterLocation(0x8000000000050000n, 3)).toEqual({ kind: "data", offset: 0x50000 });
    expect(clusterLocation(0x8000000000050001n, 3)).toEqual({ kind: "zero" });
    expect(clusterLocation(0n, 2)).toEqual({ kind: "zero" });
    expect(clusterLocation(0x4000000000000123n, 3)).toEqual({ kind: "compressed" });
  });
});

describe("runs", () => {
  it("merges contiguous data and adjacent zeros, keeps breaks in host offsets", () => {
    const runs: GuestRun[] = [];
    appendRun(runs, { start: 0, length: 10, offset: 100 });
    appendRun(runs, { start: 10, length: 5, offset: 110 });
    appendRun(runs, { start: 15, length: 5 });
    appendRun(runs, { start: 20, length: 5 });
    appendRun(runs, { start: 25, length: 5, offset: 500 });
    expect(runs).toEqual([
      { start: 0, length: 15, offset: 100 },
      { start: 15, length: 10 },
      { start: 25, length: 5, offset: 500 },
    ]);
  });

  it("compares streamed runs with qemu-img map's up to a guest offset", () => {
    const ours = [
      { start: 0, length: 10, offset: 100 },
      { start: 10, length: 10 },
    ];
    expect(
      compareRuns(
        ours,
        [
          { start: 0, length: 10, offset: 100 },
          { start: 10, length: 30 },
        ],
        20,
      ),
    ).toBeUndefined();
    expect(
      compareRuns(
        ours,
        [
          { start: 0, length: 10, offset: 200 },
          { start: 10, length: 10 },
        ],
        20,
      ),
    ).toMatch(/run 0: ours 0\+10 @100, qemu-img map 0\+10 @200/);
    expect(compareRuns(ours, [{ start: 0, length: 20, offset: 100 }], 20)).toMatch(/run 0/);
  });
});
