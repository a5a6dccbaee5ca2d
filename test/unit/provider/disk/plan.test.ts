// The preview's account of the work, without a server: which way prepareImage will go for each
// source/target pair, the scratch bound that follows, and the zstd frame header's content size.
import { describe, expect, it } from "vitest";
import { describePlan, describeWebDownload, planPreparation } from "../../../../provider/disk/plan";
import { zstdContentSize, type SourceProbe } from "../../../../provider/disk/probe";

const MiB = 1024 ** 2;
const probe = (over: Partial<SourceProbe>): SourceProbe =>
  ({
    format: "qcow2",
    virtualSize: 1024 * MiB,
    compression: undefined,
    total: 300 * MiB,
    uncompressedBytes: 300 * MiB,
    ...over,
  }) as SourceProbe;

describe("planPreparation", () => {
  it("same format: no conversion, scratch is the download", () => {
    const p = planPreparation(probe({}), "qcow2", { checksummed: true });
    expect(p).toMatchObject({ conversion: "none", scratchBytes: 300 * MiB, downloadBytes: 300 * MiB });
  });

  it("qcow2 → raw with a checksum streams while downloading (scratch: the qcow2 only); without one it reads extents", () => {
    expect(planPreparation(probe({}), "raw", { checksummed: true })).toMatchObject({ conversion: "stream", scratchBytes: 300 * MiB });
    expect(planPreparation(probe({}), "raw", { checksummed: false })).toMatchObject({ conversion: "extents", scratchBytes: 300 * MiB });
  });

  it("anything else converts with qemu-img: the source plus the converted file's bound (virtual size for raw, plus metadata room otherwise)", () => {
    const vmdk = planPreparation(probe({ format: "vmdk", compression: "xz", total: 200 * MiB, uncompressedBytes: 350 * MiB }), "raw", {
      checksummed: true,
    });
    expect(vmdk).toMatchObject({ conversion: "convert", imageBytes: 350 * MiB, scratchBytes: 350 * MiB + 1024 * MiB });
    const raw = planPreparation(probe({ format: "raw", total: 1024 * MiB, uncompressedBytes: 1024 * MiB }), "qcow2", { checksummed: true });
    expect(raw.scratchBytes).toBe(1024 * MiB + 1024 * MiB + 32 * MiB);
  });

  it("a compressed file whose size is not recorded is bounded by the header's guest size; no header, no bound", () => {
    const xz = planPreparation(probe({ compression: "xz", total: 100 * MiB, uncompressedBytes: undefined }), "qcow2", {
      checksummed: true,
    });
    expect(xz.imageBytes).toBeUndefined();
    expect(xz.scratchBytes).toBe(1024 * MiB + 32 * MiB);
    const none = planPreparation(
      probe({ format: "raw", compression: "bz2", virtualSize: undefined, uncompressedBytes: undefined }),
      "raw",
      {
        checksummed: true,
      },
    );
    expect(none.scratchBytes).toBeUndefined();
    expect(describePlan(none)).toContain("scratch needed unknown (no size in the header)");
  });
});

describe("describePlan / describeWebDownload", () => {
  it("one line: download, decompression, conversion, scratch", () => {
    expect(describePlan(planPreparation(probe({ compression: "gz", total: 280 * MiB }), "raw", { checksummed: true }))).toBe(
      "download 280.0 MiB; gz-compressed, 300.0 MiB decompressed; convert qcow2 → raw, streamed while downloading (virtual size 1.0 GiB); scratch needed ≤ 300.0 MiB",
    );
    expect(
      describePlan(planPreparation(probe({ total: undefined, uncompressedBytes: undefined }), "qcow2", { checksummed: true })),
    ).toContain("download of unknown size (no Content-Length)");
  });

  it("web-download: Glance downloads and converts, nothing is staged here", () => {
    expect(describeWebDownload(probe({}), "raw")).toBe(
      "Glance downloads 300.0 MiB itself (web-download); Glance converts qcow2 → raw (its image_conversion plugin) (virtual size 1.0 GiB); no scratch space here",
    );
  });
});

describe("zstdContentSize", () => {
  it("reads Frame_Content_Size for each field width, and nothing when the header has none", () => {
    // magic, FHD (FCS flag 2 = 4 bytes, single segment), FCS little-endian
    expect(zstdContentSize(Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0xa0, 0x00, 0x00, 0x80, 0x01]))).toBe(0x01800000);
    // FCS flag 1 = 2 bytes (+256), with a window descriptor byte
    expect(zstdContentSize(Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0x40, 0x58, 0x10, 0x00]))).toBe(0x10 + 256);
    // FCS flag 0, single segment: 1 byte
    expect(zstdContentSize(Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0x20, 0x2a]))).toBe(42);
    // FCS flag 0, not single segment: no size
    expect(zstdContentSize(Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x58]))).toBeUndefined();
    expect(zstdContentSize(Buffer.from("not zstd"))).toBeUndefined();
  });
});
