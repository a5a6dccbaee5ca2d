// streamImage: upload bytes straight from the download, verified, with no scratch.
import { Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { describe, expect, it } from "vitest";
import { streamImage } from "../../../../provider/disk/direct";
import { isImageyardError } from "../../../../provider/http/errors";
import { hashStream, imageUrl, testbed } from "./helpers";

describe("streamImage", () => {
  it("streams a zstd-compressed qcow2 as qcow2 with the digests of the qcow2 and a verified source checksum", async () => {
    const tb = testbed();
    const img = await streamImage(
      { url: imageUrl("disk.qcow2.zst"), checksum: `sha256:${tb.files["disk.qcow2.zst"]!.sha256}` },
      { diskFormat: "qcow2", hashes: ["md5"] },
    );
    expect(img.sourceFormat).toBe("qcow2");
    expect(img.compression).toBe("zst");
    expect(img.size).toBeUndefined();
    expect(img.virtualSize).toBe(tb.files["disk.raw"]!.size);
    const got = await hashStream(img.stream);
    expect(got.sha512).toBe(tb.files["disk.qcow2"]!.sha512);
    const done = await img.done();
    expect(done).toMatchObject({
      size: tb.files["disk.qcow2"]!.size,
      sha512: got.sha512,
      md5: got.md5,
      sourceChecksum: { algo: "sha256", verified: true },
    });
  });

  it("announces the size of an uncompressed raw source and passes it through unchanged", async () => {
    const tb = testbed();
    const img = await streamImage({ url: imageUrl("disk.raw") }, { diskFormat: "raw" });
    expect(img.size).toBe(tb.files["disk.raw"]!.size);
    expect((await hashStream(img.stream)).sha256).toBe(tb.files["disk.raw"]!.sha256);
    expect((await img.done()).sourceChecksum).toEqual({ algo: "sha256", value: tb.files["disk.raw"]!.sha256, verified: false });
  });

  it("fails the stream on a checksum mismatch before the consumer has received the last bytes", async () => {
    const tb = testbed();
    const img = await streamImage({ url: imageUrl("disk.raw"), checksum: `sha256:${"0".repeat(64)}` }, { diskFormat: "raw" });
    let received = 0;
    const sink = new Writable({
      write(c, _e, cb) {
        received += (c as Buffer).length;
        cb();
      },
    });
    const err = await pipeline(img.stream, sink).then(
      () => undefined,
      (e) => e,
    );
    expect(isImageyardError(err, "CHECKSUM_MISMATCH")).toBe(true);
    expect(received).toBeLessThan(tb.files["disk.raw"]!.size);
    await expect(img.done()).rejects.toThrow(/expected sha256:0{64}/);
  });

  it("refuses when the target format needs a conversion, pointing at prepareImage", async () => {
    await expect(streamImage({ url: imageUrl("disk.qcow2") }, { diskFormat: "raw" })).rejects.toThrow(
      /the image is qcow2 and diskFormat is raw; a conversion needs scratch space\. Use prepareImage/,
    );
  });

  it("refuses a qcow2 with a backing file from its header", async () => {
    const err = await streamImage({ url: imageUrl("backing.qcow2") }, { diskFormat: "qcow2" }).then(
      () => undefined,
      (e) => e,
    );
    expect(isImageyardError(err, "UNSAFE_IMAGE")).toBe(true);
  });
});
