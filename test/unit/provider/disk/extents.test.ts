import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { mapArgv, openExtentStream, unreadableMap, type Extent } from "../../../../provider/disk/extents";

const data = (start: number, length: number, offset: number): Extent => ({ start, length, depth: 0, zero: false, data: true, offset });
const hole = (start: number, length: number): Extent => ({ start, length, depth: 0, zero: true, data: false });

describe("unreadableMap", () => {
  it("accepts contiguous extents from 0 to the virtual size with data inside the file", () => {
    expect(unreadableMap([data(0, 10, 100), hole(10, 20), data(30, 5, 110)], 35, 115)).toBeUndefined();
  });

  it("refuses data without a file offset (compressed clusters)", () => {
    expect(unreadableMap([{ start: 0, length: 10, depth: 0, zero: false, data: true }], 10, 100)).toMatch(/no file offset/);
  });

  it("refuses gaps, backing-chain extents, offsets outside the file and a short map", () => {
    expect(unreadableMap([data(0, 10, 0), data(11, 5, 20)], 16, 100)).toMatch(/does not follow 10/);
    expect(unreadableMap([{ ...hole(0, 10), depth: 1 }], 10, 100)).toMatch(/backing image/);
    expect(unreadableMap([data(0, 10, 95)], 10, 100)).toMatch(/outside the file/);
    expect(unreadableMap([data(0, 10, 0)], 20, 100)).toMatch(/covers 10 of 20 bytes/);
  });
});

describe("openExtentStream", () => {
  it("yields data ranges from their file offsets and zeros for holes, in guest order", async () => {
    const dir = await mkdtemp(join(tmpdir(), "iy-extents-"));
    try {
      const file = join(dir, "img");
      await writeFile(file, Buffer.concat([Buffer.from("HEADER--"), Buffer.from("bbbb"), Buffer.from("aaaaaa")]));
      const chunks: Buffer[] = [];
      for await (const c of openExtentStream(file, [data(0, 6, 12), hole(6, 5 * 1024 * 1024), data(6 + 5 * 1024 * 1024, 4, 8)]))
        chunks.push(Buffer.from(c as Buffer));
      const all = Buffer.concat(chunks);
      expect(all.length).toBe(10 + 5 * 1024 * 1024);
      expect(all.subarray(0, 6).toString()).toBe("aaaaaa");
      expect(all.subarray(6, 6 + 5 * 1024 * 1024).every((b) => b === 0)).toBe(true);
      expect(all.subarray(-4).toString()).toBe("bbbb");
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("fails when a data extent runs past the end of the file", async () => {
    const dir = await mkdtemp(join(tmpdir(), "iy-extents-"));
    try {
      const file = join(dir, "img");
      await writeFile(file, Buffer.from("short"));
      const read = async () => {
        for await (const _ of openExtentStream(file, [data(0, 10, 0)])) void _;
      };
      await expect(read()).rejects.toThrow(/ended inside a data extent/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe("mapArgv", () => {
  it("asks qemu-img map for JSON with the format explicit", () => {
    expect(mapArgv("/s/op/source.img", "qcow2")).toEqual(["map", "--output=json", "-f", "qcow2", "/s/op/source.img"]);
  });
});
