// prepareImage against the real test image server and the real qemu-img / qemu-nbd.
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { isImageyardError } from "../../../../provider/http/errors";
import { prepareImage, type PreparedImage, type PrepareOptions } from "../../../../provider/disk/prepare";
import { hashStream, imageUrl, scratchBase, sha512sum, testbed } from "./helpers";

let scratch: ReturnType<typeof scratchBase>;
beforeEach(() => {
  scratch = scratchBase();
});
afterEach(() => scratch.remove());

async function prepared(url: string, source: Record<string, string> = {}, opts: Partial<PrepareOptions> = {}): Promise<PreparedImage> {
  return prepareImage({ url, ...source }, { diskFormat: "qcow2", scratchDir: scratch.dir, ...opts });
}

async function failure(p: Promise<unknown>): Promise<{ code: string; message: string }> {
  try {
    await p;
  } catch (e) {
    if (!isImageyardError(e)) throw e;
    return { code: e.code, message: e.message };
  }
  throw new Error("expected a failure");
}

describe("prepareImage: formats and conversion", () => {
  it("reads an uncompressed qcow2 as raw straight from the file (qemu-img map offsets), with the sha512 of `qemu-img convert -O raw` output and no raw file in scratch", async () => {
    const tb = testbed();
    const out = mkdtempSync(join(tmpdir(), "iy-ref-"));
    try {
      execFileSync("qemu-img", ["convert", "-f", "qcow2", "-O", "raw", join(tb.dir, "disk.qcow2"), join(out, "ref.raw")]);
      const expected = sha512sum(join(out, "ref.raw"));
      const img = await prepared(imageUrl("disk.qcow2"), {}, { diskFormat: "raw", hashes: ["md5"] });
      expect(img.mode).toBe("extents");
      expect(img.converted).toBe(true);
      expect(img.sourceFormat).toBe("qcow2");
      expect(img.size).toBe(img.virtualSize);
      const streamed = await hashStream(img.open());
      expect(streamed.sha512).toBe(expected);
      expect(streamed.size).toBe(img.size);
      const d = await img.digests();
      expect(d.sha512).toBe(expected);
      expect(d.md5).toBe(streamed.md5);
      // Scratch held the qcow2 only: no more than the downloaded file.
      expect(img.scratch.peakBytes).toBeLessThanOrEqual(tb.files["disk.qcow2"]!.size + 1024 * 1024);
      expect(scratch.leftovers()).toHaveLength(1);
      await img.cleanup();
      expect(scratch.leftovers()).toEqual([]);
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  });

  it("streams the same raw bytes through qemu-nbd when asked (rawVia nbd)", async () => {
    const tb = testbed();
    const img = await prepared(imageUrl("disk.qcow2"), {}, { diskFormat: "raw", rawVia: "nbd" });
    expect(img.mode).toBe("nbd");
    expect((await hashStream(img.open())).sha512).toBe(tb.files["disk.raw"]!.sha512);
    expect((await img.digests()).sha512).toBe(tb.files["disk.raw"]!.sha512);
    await img.cleanup();
    expect(scratch.leftovers()).toEqual([]);
  });

  it("converts a qcow2 with compressed clusters to a sparse raw file when scratch has room, and deletes the qcow2", async () => {
    const tb = testbed();
    const img = await prepared(imageUrl("compressed.qcow2"), {}, { diskFormat: "raw", hashes: ["md5"] });
    expect(img.mode).toBe("file");
    expect(img.converted).toBe(true);
    expect((await hashStream(img.open())).sha512).toBe(tb.files["compressible.raw"]!.sha512);
    expect((await img.digests()).md5).toBe(tb.files["compressible.raw"]!.md5);
    // The 16 MiB raw has a hole every fourth MiB: sparse output allocates less than its length.
    expect(img.scratch.peakBytes).toBeLessThan(tb.files["compressible.raw"]!.size);
    await img.cleanup();
    expect(scratch.leftovers()).toEqual([]);
  });

  it("streams a compressed qcow2 through qemu-nbd when scratch has no room for a raw file", async () => {
    const tb = testbed();
    // Room for the download, not for the 16 MiB raw conversion.
    let calls = 0;
    const statFs = async () => ({ bavail: calls++ === 0 ? 1e9 : (17 * 1024 * 1024) / 4096, bsize: 4096 });
    const img = await prepared(imageUrl("compressed.qcow2"), {}, { diskFormat: "raw", statFs });
    expect(img.mode).toBe("nbd");
    expect((await hashStream(img.open())).sha512).toBe(tb.files["compressible.raw"]!.sha512);
    await img.cleanup();
  });

  it("rawVia convert writes a sparse raw file with the same sha512 as the original raw disk and deletes the qcow2", async () => {
    const tb = testbed();
    const img = await prepared(imageUrl("disk.qcow2"), {}, { diskFormat: "raw", rawVia: "convert", hashes: ["md5"] });
    expect(img.mode).toBe("file");
    expect(scratch.leftovers()).toHaveLength(1);
    expect((await hashStream(img.open())).sha512).toBe(tb.files["disk.raw"]!.sha512);
    const d = await img.digests();
    expect(d).toMatchObject({ sha512: tb.files["disk.raw"]!.sha512, md5: tb.files["disk.raw"]!.md5, size: tb.files["disk.raw"]!.size });
    await img.cleanup();
    expect(scratch.leftovers()).toEqual([]);
  });

  it("passes a qcow2 through unchanged when the target is qcow2, hashed while it was written", async () => {
    const tb = testbed();
    const img = await prepared(imageUrl("disk.qcow2"), { checksum: `sha256:${tb.files["disk.qcow2"]!.sha256}` });
    expect(img.converted).toBe(false);
    expect(img.sha512).toBe(tb.files["disk.qcow2"]!.sha512);
    // md5 and sha256 of the upload cost CPU and are computed only on request.
    expect(img.md5).toBeUndefined();
    expect(img.sha256).toBeUndefined();
    expect(img.sourceChecksum).toEqual({ algo: "sha256", value: tb.files["disk.qcow2"]!.sha256, verified: true });
    expect(img.size).toBe(tb.files["disk.qcow2"]!.size);
    await img.cleanup();
  });

  it("converts raw → qcow2 with qemu-img and the digests describe the converted file", async () => {
    const img = await prepared(imageUrl("disk.raw"), { format: "raw" }, { diskFormat: "qcow2" });
    expect(img.converted).toBe(true);
    expect(img.sourceFormat).toBe("raw");
    const again = await hashStream(img.open());
    expect((await img.digests()).sha512).toBe(again.sha512);
    expect(again.size).toBe(img.size);
    await img.cleanup();
  });

  it("reads a vmdk and streams it as raw equal to the raw disk it was made from", async () => {
    const tb = testbed();
    const img = await prepared(imageUrl("disk.vmdk"), {}, { diskFormat: "raw" });
    expect(img.sourceFormat).toBe("vmdk");
    expect(img.mode).toBe("extents");
    expect((await hashStream(img.open())).sha512).toBe(tb.files["disk.raw"]!.sha512);
    await img.cleanup();
  });

  it("converts qcow2 → vmdk (a file conversion) and the vmdk converts back to the original raw bytes", async () => {
    const tb = testbed();
    const img = await prepared(imageUrl("disk.qcow2"), {}, { diskFormat: "vmdk" });
    expect(img.mode).toBe("file");
    const info = JSON.parse(
      execFileSync("qemu-img", ["info", "--output=json", "-f", "vmdk", join(img.scratch.dir, "converted.vmdk")], { encoding: "utf8" }),
    );
    expect(info.format).toBe("vmdk");
    const out = mkdtempSync(join(tmpdir(), "iy-ref-"));
    try {
      execFileSync("qemu-img", ["convert", "-f", "vmdk", "-O", "raw", join(img.scratch.dir, "converted.vmdk"), join(out, "back.raw")]);
      expect(sha512sum(join(out, "back.raw"))).toBe(tb.files["disk.raw"]!.sha512);
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
    await img.cleanup();
  });

  it("reads a file:// URL", async () => {
    const tb = testbed();
    const img = await prepared(
      pathToFileURL(join(tb.dir, "disk.qcow2")).href,
      { checksum: tb.files["disk.qcow2"]!.sha512 },
      { hashes: ["sha256"], allowLocalFiles: true },
    );
    expect(img.sourceChecksum.algo).toBe("sha512");
    expect(img.sha256).toBe(tb.files["disk.qcow2"]!.sha256);
    await img.cleanup();
  });
});

describe("prepareImage: decompression by magic bytes", () => {
  for (const ext of ["gz", "bz2", "xz", "zst"] as const) {
    it(`decompresses disk.qcow2.${ext} on the fly, verifies the compressed download and yields the qcow2 bytes`, async () => {
      const tb = testbed();
      const name = `disk.qcow2.${ext}`;
      const img = await prepared(imageUrl(name), { checksum: `sha256:${tb.files[name]!.sha256}` });
      expect(img.compression).toBe(ext);
      expect(img.sourceFormat).toBe("qcow2");
      expect(img.sha512).toBe(tb.files["disk.qcow2"]!.sha512);
      expect(scratch.leftovers()).toHaveLength(1);
      await img.cleanup();
      expect(scratch.leftovers()).toEqual([]);
    });
  }

  it("finds xz inside a file named .img and publishes the raw disk inside", async () => {
    const tb = testbed();
    const img = await prepared(imageUrl("raw-xz-named.img"), {}, { diskFormat: "raw" });
    expect(img.compression).toBe("xz");
    expect(img.sourceFormat).toBe("raw");
    expect(img.sha512).toBe(tb.files["disk.raw"]!.sha512);
    expect(img.sourceChecksum).toEqual({ algo: "sha256", value: tb.files["raw-xz-named.img"]!.sha256, verified: false });
    await img.cleanup();
  });

  it("rejects compression: none when the data is compressed", async () => {
    const f = await failure(prepared(imageUrl("disk.qcow2.gz"), { compression: "none" }));
    expect(f.code).toBe("INVALID_INPUT");
    expect(f.message).toMatch(/source\.compression is "none" but the data starts with gz magic bytes/);
    expect(scratch.leftovers()).toEqual([]);
  });

  it("fails damaged gzip data with a decompression error and leaves no scratch", async () => {
    const f = await failure(prepared(imageUrl("damaged.qcow2.gz")));
    expect(f.code).toBe("INVALID_INPUT");
    expect(f.message).toMatch(/gz decompression failed/);
    expect(scratch.leftovers()).toEqual([]);
  });

  it("caps the decompressed size with maxBytes (a small download that expands too far)", async () => {
    const tb = testbed();
    const f = await failure(
      prepared(imageUrl("raw-xz-named.img"), {}, { diskFormat: "raw", maxBytes: tb.files["raw-xz-named.img"]!.size + 1024 }),
    );
    expect(f.code).toBe("SIZE_MISMATCH");
    expect(f.message).toMatch(/\(decompressed\).*size cap/);
    expect(scratch.leftovers()).toEqual([]);
  });
});

describe("prepareImage: checksums from SUMS files", () => {
  const cases: Array<[string, string, "sha256" | "sha512" | "md5"]> = [
    ["SHA256SUMS", "disk.qcow2", "sha256"],
    ["SHA512SUMS", "disk.qcow2", "sha512"],
    ["MD5SUMS", "disk.qcow2", "md5"],
    ["CHECKSUMS.bsd", "disk.qcow2.xz", "sha512"],
    ["Fedora-Cloud-CHECKSUM", "disk.qcow2.zst", "sha256"],
  ];
  for (const [sums, file, algo] of cases) {
    it(`verifies ${file} against its ${algo} line in ${sums}`, async () => {
      const tb = testbed();
      const img = await prepared(imageUrl(file), { checksumUrl: imageUrl(sums) });
      expect(img.sourceChecksum).toEqual({ algo, value: tb.files[file]![algo], verified: true });
      await img.cleanup();
    });
  }

  it("fails CHECKSUM_MISMATCH on a wrong SUMS entry, names both digests and the byte count, and leaves nothing in scratch", async () => {
    const tb = testbed();
    const f = await failure(prepared(imageUrl("disk.qcow2"), { checksumUrl: imageUrl("WRONG-SHA256SUMS") }));
    expect(f.code).toBe("CHECKSUM_MISMATCH");
    expect(f.message).toBe(
      `download ${imageUrl("disk.qcow2")}: expected sha256:${tb.files["disk.qcow2"]!.sha256.replace(/^./, (c) => (c === "0" ? "1" : "0"))}, got sha256:${tb.files["disk.qcow2"]!.sha256} after ${tb.files["disk.qcow2"]!.size} bytes; file discarded. Check source.checksum or the SUMS file.`,
    );
    expect(scratch.leftovers()).toEqual([]);
  });

  it("fails with the listed names when the SUMS file has no entry for the URL's file", async () => {
    const f = await failure(prepared(imageUrl("disk.vmdk"), { checksumUrl: imageUrl("SHA256SUMS") }));
    expect(f.code).toBe("INVALID_INPUT");
    expect(f.message).toMatch(/no entry for "disk\.vmdk" \(it lists disk\.qcow2, disk\.raw/);
  });

  it("fails a wrong inline md5 before publishing, with scratch removed", async () => {
    const f = await failure(prepared(imageUrl("disk.raw"), { checksum: `md5:${"0".repeat(32)}` }, { diskFormat: "raw" }));
    expect(f.code).toBe("CHECKSUM_MISMATCH");
    expect(scratch.leftovers()).toEqual([]);
  });
});

describe("prepareImage: unsafe and broken images", () => {
  it("refuses a qcow2 with a backing file (UNSAFE_IMAGE) and removes scratch", async () => {
    const f = await failure(prepared(imageUrl("backing.qcow2"), {}, { diskFormat: "raw" }));
    expect(f.code).toBe("UNSAFE_IMAGE");
    expect(f.message).toMatch(/backing file/);
    expect(scratch.leftovers()).toEqual([]);
  });

  it("refuses a qcow2 with an external data file (UNSAFE_IMAGE)", async () => {
    const f = await failure(prepared(imageUrl("datafile.qcow2"), {}, { diskFormat: "raw" }));
    expect(f.code).toBe("UNSAFE_IMAGE");
    expect(f.message).toMatch(/external data file/);
    expect(scratch.leftovers()).toEqual([]);
  });

  it("fails a qcow2 with an invalid L1 table with qemu-img's reason", async () => {
    const f = await failure(prepared(imageUrl("corrupt.qcow2"), {}, { diskFormat: "raw" }));
    expect(f.code).toBe("QEMU_FAILED");
    expect(f.message).toMatch(/L1 table offset invalid/);
    expect(scratch.leftovers()).toEqual([]);
  });

  it("fails a truncated qcow2 (which qemu-img convert would silently zero-fill) through qemu-img check", async () => {
    const f = await failure(prepared(imageUrl("truncated.qcow2"), {}, { diskFormat: "raw" }));
    expect(f.code).toBe("QEMU_FAILED");
    expect(f.message).toMatch(/qemu-img check failed/);
    expect(scratch.leftovers()).toEqual([]);
  });

  it("rejects a source.format that contradicts the magic bytes", async () => {
    const f = await failure(prepared(imageUrl("disk.qcow2"), { format: "raw" }, { diskFormat: "raw" }));
    expect(f.code).toBe("INVALID_INPUT");
    expect(f.message).toMatch(/source\.format is "raw" but the data is qcow2/);
  });

  it("fails a 404 with the status and a hint, before creating anything", async () => {
    const f = await failure(prepared(`${testbed().url}/images/no-such.qcow2`));
    expect(f.code).toBe("HTTP_ERROR");
    expect(f.message).toMatch(/answered 404.*Check source\.url/);
    expect(scratch.leftovers()).toEqual([]);
  });
});

describe("prepareImage: scratch space", () => {
  it("refuses to start when statfs reports too little space for the download", async () => {
    const f = await failure(prepared(imageUrl("disk.qcow2"), {}, { statFs: async () => ({ bavail: 10, bsize: 4096 }) }));
    expect(f.code).toBe("NO_SPACE");
    expect(f.message).toMatch(/the download needs about .* of scratch space but .* has 40\.0 KiB free/);
    expect(scratch.leftovers()).toEqual([]);
  });

  it("refuses the conversion when the space left after the download is too small, and removes the download", async () => {
    let calls = 0;
    const statFs = async () => ({ bavail: calls++ === 0 ? 1e9 : 100, bsize: 4096 });
    const f = await failure(prepared(imageUrl("disk.qcow2"), {}, { diskFormat: "vmdk", statFs }));
    expect(f.code).toBe("NO_SPACE");
    expect(f.message).toMatch(/the conversion to vmdk needs about/);
    expect(calls).toBe(2);
    expect(scratch.leftovers()).toEqual([]);
  });

  it("stops and cleans up when cancelled during a slow download", async () => {
    const ac = new AbortController();
    const p = prepared(`${testbed().url}/slow/disk.qcow2`, {}, { signal: ac.signal });
    setTimeout(() => ac.abort(), 300);
    const f = await failure(p);
    expect(f.code).toBe("CANCELLED");
    expect(scratch.leftovers()).toEqual([]);
  });
});
