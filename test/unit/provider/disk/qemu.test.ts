import { describe, expect, it } from "vitest";
import {
  assertSafeImage,
  checkArgv,
  convertArgv,
  detectFormat,
  FORMAT_PROBE_BYTES,
  infoArgv,
  measureArgv,
  parseConvertProgress,
  qemuFormat,
  type QemuImageInfo,
} from "../../../../provider/disk/qemu";
import { nbdArgv } from "../../../../provider/disk/nbd";
import { isImageyardError } from "../../../../provider/http/errors";

function head(): Buffer {
  return Buffer.alloc(FORMAT_PROBE_BYTES);
}

function qcow2(
  opts: { version?: number; backingOffset?: bigint; size?: bigint; crypt?: number; incompat?: bigint; dataFileExt?: boolean } = {},
): Buffer {
  const b = head();
  b.writeUInt32BE(0x514649fb, 0);
  b.writeUInt32BE(opts.version ?? 3, 4);
  b.writeBigUInt64BE(opts.backingOffset ?? 0n, 8);
  b.writeUInt32BE(16, 20);
  b.writeBigUInt64BE(opts.size ?? 2n * 1024n ** 3n, 24);
  b.writeUInt32BE(opts.crypt ?? 0, 32);
  b.writeBigUInt64BE(opts.incompat ?? 0n, 72);
  b.writeUInt32BE(112, 100); // header length
  if (opts.dataFileExt) {
    b.writeUInt32BE(0x44415441, 112);
    b.writeUInt32BE(9, 116);
    b.write("/etc/host", 120, "latin1");
  }
  return b;
}

describe("detectFormat", () => {
  it("recognises qcow2 and reads its virtual size from the header", () => {
    expect(detectFormat(qcow2())).toEqual({ format: "qcow2", virtualSize: 2 * 1024 ** 3 });
  });

  it("flags a qcow2 backing file as unsafe from the header alone", () => {
    expect(detectFormat(qcow2({ backingOffset: 512n })).unsafe).toMatch(/backing file/);
  });

  it("flags the external data file incompatible bit and the data-file header extension as unsafe", () => {
    expect(detectFormat(qcow2({ incompat: 4n })).unsafe).toMatch(/external data file/);
    expect(detectFormat(qcow2({ dataFileExt: true })).unsafe).toMatch(/external data file/);
  });

  it("marks encrypted qcow2 and qcow v1 as unsupported", () => {
    expect(detectFormat(qcow2({ crypt: 1 })).unsupported).toMatch(/encrypted/);
    expect(detectFormat(qcow2({ version: 1 })).unsupported).toMatch(/qcow version 1/);
  });

  const magic: Array<[string, (b: Buffer) => void, string]> = [
    ["vmdk sparse (KDMV)", (b) => b.write("KDMV", 0, "latin1"), "vmdk"],
    ["vhdx", (b) => b.write("vhdxfile", 0, "latin1"), "vhdx"],
    ["vhd (conectix)", (b) => b.write("conectix", 0, "latin1"), "vhd"],
    ["vdi", (b) => b.writeUInt32LE(0xbeda107f, 0x40), "vdi"],
    ["iso 9660 (CD001 at 0x8001)", (b) => b.write("CD001", 0x8001, "latin1"), "iso"],
    ["no known magic", () => {}, "raw"],
  ];
  for (const [what, write, format] of magic) {
    it(`detects ${what} as ${format}`, () => {
      const b = head();
      write(b);
      expect(detectFormat(b).format).toBe(format);
    });
  }

  it("refuses a VMDK descriptor (its data lives in other files)", () => {
    const b = head();
    b.write("# Disk DescriptorFile\nversion=1\n", 0, "latin1");
    expect(detectFormat(b)).toMatchObject({ format: "vmdk", unsafe: expect.stringMatching(/separate extent files/) });
  });

  it("does not trust a name: a qcow2 header is qcow2 whatever the caller calls it", () => {
    expect(detectFormat(qcow2()).format).toBe("qcow2");
    expect(detectFormat(Buffer.from("QFI")).format).toBe("raw");
  });
});

describe("qemu-img argv", () => {
  it("always passes the format explicitly to info, check and measure", () => {
    expect(infoArgv("/s/op-1/source.img", "qcow2")).toEqual(["info", "--output=json", "-f", "qcow2", "/s/op-1/source.img"]);
    expect(checkArgv("/s/x", "vhd")).toEqual(["check", "--output=json", "-f", "vpc", "/s/x"]);
    expect(measureArgv("/s/x", "vmdk", "qcow2")).toEqual(["measure", "--output=json", "-f", "vmdk", "-O", "qcow2", "/s/x"]);
  });

  it("builds convert with -f, -O, -o options, progress and out-of-order writes", () => {
    expect(convertArgv({ source: "/s/a", sourceFormat: "qcow2", target: "/s/b", targetFormat: "raw" })).toEqual([
      "convert",
      "-p",
      "-f",
      "qcow2",
      "-O",
      "raw",
      "-W",
      "/s/a",
      "/s/b",
    ]);
    expect(
      convertArgv({
        source: "/s/a",
        sourceFormat: "raw",
        target: "/s/b",
        targetFormat: "vmdk",
        options: { subformat: "streamOptimized", adapter_type: "lsilogic" },
      }),
    ).toEqual(["convert", "-p", "-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized,adapter_type=lsilogic", "-W", "/s/a", "/s/b"]);
  });

  it("refuses -o values that could smuggle further options", () => {
    expect(() =>
      convertArgv({
        source: "/s/a",
        sourceFormat: "raw",
        target: "/s/b",
        targetFormat: "qcow2",
        options: { compat: "1.1,data_file=/etc/passwd" },
      }),
    ).toThrow(/not a plain qemu-img -o option/);
  });

  it("refuses relative paths and protocol-looking names (json:, nbd:) as qemu-img arguments", () => {
    expect(() => infoArgv("source.img", "raw")).toThrow(/absolute scratch paths/);
    expect(() => infoArgv('/s/json:{"driver":"file"}', "raw")).toThrow(/without ':'/);
    expect(() => nbdArgv("nbd:127.0.0.1:10809", "raw", "/s/sock")).toThrow(/absolute scratch paths/);
  });

  it("maps Glance disk formats to qemu-img drivers", () => {
    expect(qemuFormat("vhd")).toBe("vpc");
    expect(qemuFormat("iso")).toBe("raw");
    expect(qemuFormat("vhdx")).toBe("vhdx");
  });

  it("serves qemu-nbd read-only, single-client, with the format explicit", () => {
    expect(nbdArgv("/s/op/source.img", "qcow2", "/s/op/nbd.sock")).toEqual(
      expect.arrayContaining(["--read-only", "--shared=1", "--format", "qcow2", "--socket", "/s/op/nbd.sock", "/s/op/source.img"]),
    );
  });

  it("reads qemu-img convert -p progress", () => {
    expect(parseConvertProgress("    (0.00/100%)\r    (25.50/100%)\r    (100.00/100%)\r\n")).toEqual([0, 25.5, 100]);
  });
});

describe("assertSafeImage", () => {
  const base: QemuImageInfo = {
    format: "qcow2",
    "virtual-size": 1024,
    "format-specific": { type: "qcow2", data: { compat: "1.1", corrupt: false } },
  };
  const code = (info: QemuImageInfo, f: Parameters<typeof assertSafeImage>[1] = "qcow2") => {
    try {
      assertSafeImage(info, f, "download https://h/x");
      return "ok";
    } catch (e) {
      return isImageyardError(e) ? `${e.code}: ${e.message}` : String(e);
    }
  };

  it("accepts a standalone qcow2", () => {
    expect(code(base)).toBe("ok");
  });

  it("refuses a backing file with UNSAFE_IMAGE and says how to fix it", () => {
    expect(code({ ...base, "backing-filename": "/etc/shadow" })).toMatch(
      /^UNSAFE_IMAGE: download https:\/\/h\/x: refused: the image has a backing file \(\/etc\/shadow\).*Flatten the image first/,
    );
  });

  it("refuses an external data file", () => {
    expect(code({ ...base, "format-specific": { type: "qcow2", data: { "data-file": "/dev/sda" } } })).toMatch(
      /^UNSAFE_IMAGE: .*external data file \(\/dev\/sda\)/,
    );
  });

  it("refuses VMDKs that are not self-contained", () => {
    const vmdk = (createType: string, extents = 1): QemuImageInfo => ({
      format: "vmdk",
      "virtual-size": 1,
      "format-specific": {
        type: "vmdk",
        data: { "create-type": createType, extents: Array.from({ length: extents }, () => ({ filename: "x" })) },
      },
    });
    expect(code(vmdk("monolithicSparse"), "vmdk")).toBe("ok");
    expect(code(vmdk("monolithicFlat"), "vmdk")).toMatch(/^UNSAFE_IMAGE: .*create type is "monolithicFlat"/);
    expect(code(vmdk("streamOptimized", 2), "vmdk")).toMatch(/^UNSAFE_IMAGE: .*2 extents/);
  });

  it("refuses encrypted and corrupt images, and a format other than probed", () => {
    expect(code({ ...base, encrypted: true })).toMatch(/^UNSUPPORTED: .*encrypted/);
    expect(code({ ...base, "format-specific": { type: "qcow2", data: { corrupt: true } } })).toMatch(/^QEMU_FAILED: .*corrupt/);
    expect(code({ ...base, format: "raw" })).toMatch(/^QEMU_FAILED: .*read the image as raw, expected qcow2/);
  });
});
