import { describe, expect, it } from "vitest";
import { formatBytes, formatEvent, lineProgress, shortDigest } from "../../../../provider/http/progress";

const D = `sha256:${"ab".repeat(32)}`;

describe("lineProgress", () => {
  it("prints at most one byte line per item per interval, but always the first", () => {
    let t = 0;
    const lines: string[] = [];
    const sink = lineProgress((l) => lines.push(l), { intervalMs: 1000, now: () => t });
    sink({ phase: "blob", item: D, bytes: 0, total: 2048 });
    t = 500;
    sink({ phase: "blob", item: D, bytes: 1024, total: 2048 });
    sink({ phase: "blob", item: "other", bytes: 1 });
    t = 1000;
    sink({ phase: "blob", item: D, bytes: 1536, total: 2048 });
    expect(lines).toEqual([`blob ${shortDigest(D)} 0 B/2.0 KiB (0%)`, "blob other 1 B", `blob ${shortDigest(D)} 1.5 KiB/2.0 KiB (75%)`]);
  });

  it("always prints finished steps and messages, and forgets finished items", () => {
    const t = 0;
    const lines: string[] = [];
    const sink = lineProgress((l) => lines.push(l), { intervalMs: 1000, now: () => t });
    sink({ phase: "blob", item: "x", bytes: 1 });
    sink({ phase: "blob", item: "x", bytes: 2, total: 2, done: true });
    sink({ phase: "plan", message: "3 blobs to copy" });
    sink({ phase: "blob", item: "x", bytes: 0 });
    expect(lines).toEqual(["blob x 1 B", "blob x 2 B/2 B (100%) done", "plan 3 blobs to copy", "blob x 0 B"]);
  });
});

describe("formatting", () => {
  it("formatBytes picks a binary unit", () => {
    expect(formatBytes(0)).toBe("0 B");
    expect(formatBytes(1023)).toBe("1023 B");
    expect(formatBytes(1024)).toBe("1.0 KiB");
    expect(formatBytes(128 * 1024 * 1024)).toBe("128.0 MiB");
    expect(formatBytes(5 * 1024 ** 4)).toBe("5.0 TiB");
    expect(formatBytes(5 * 1024 ** 5)).toBe("5120.0 TiB");
  });

  it("shortDigest keeps the algorithm and 12 hex characters", () => {
    expect(shortDigest(D)).toBe("sha256:abababababab");
    expect(shortDigest("plain")).toBe("plain");
  });

  it("formatEvent leaves out a percentage when the total is unknown or zero", () => {
    expect(formatEvent({ phase: "download", item: "disk.img", bytes: 10 })).toBe("download disk.img 10 B");
    expect(formatEvent({ phase: "upload", bytes: 0, total: 0 })).toBe("upload 0 B/0 B");
  });
});
