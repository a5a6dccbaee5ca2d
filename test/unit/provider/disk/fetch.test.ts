import { describe, expect, it } from "vitest";
import { capError, parseSourceUrl, rangeStart } from "../../../../provider/disk/fetch";
import { checkImageSource } from "../../../../provider/disk/prepare";

describe("rangeStart", () => {
  it("reads the first byte of a Content-Range, with a known or unknown total", () => {
    expect(rangeStart("bytes 1048576-2097151/2097152")).toBe(1048576);
    expect(rangeStart("bytes 0-9/*")).toBe(0);
  });
  it("gives undefined for a missing or malformed header", () => {
    expect(rangeStart(undefined)).toBeUndefined();
    expect(rangeStart("bytes */100")).toBeUndefined();
    expect(rangeStart("items 0-1/2")).toBeUndefined();
  });
});

describe("parseSourceUrl", () => {
  it("accepts http, https and file URLs", () => {
    for (const u of ["http://127.0.0.1:8080/x.img", "https://h/x.qcow2", "file:///srv/x.raw"]) expect(parseSourceUrl(u).href).toBe(u);
  });
  it("refuses other schemes and non-URLs with an example, never echoing credentials", () => {
    expect(() => parseSourceUrl("ftp://user:secret@h/x.img")).toThrow(/unsupported scheme ftp:/);
    expect(() => parseSourceUrl("ftp://user:secret@h/x.img")).not.toThrow(/secret/);
    expect(() => parseSourceUrl("x.qcow2")).toThrow(/not a URL\. Use an http\(s\):\/\/ or file:\/\/ URL, e\.g\./);
  });
});

describe("capError", () => {
  it("says the size, the cap and how to raise it", () => {
    expect(capError("download u", 100, 250).message).toBe(
      "download u: 250 bytes, over the size cap of 100 bytes. Raise maxBytes if the image is meant to be this large.",
    );
    expect(capError("download u", 100).code).toBe("SIZE_MISMATCH");
  });
});

describe("checkImageSource", () => {
  it("accepts a complete source", () => {
    expect(
      checkImageSource({ url: "https://h/x.qcow2", checksum: `sha256:${"a".repeat(64)}`, format: "qcow2", compression: "auto" }, "raw"),
    ).toEqual([]);
  });
  it("lists every problem, each naming its property", () => {
    const problems = checkImageSource(
      { url: "", checksum: "sha256:zz", checksumUrl: "https://h/SUMS", format: "qcow3" as never, compression: "lz4" as never },
      "ami",
    );
    expect(problems).toHaveLength(6);
    expect(problems.join("\n")).toMatch(/^source\.url is required/m);
    expect(problems.join("\n")).toMatch(/^source\.checksum "sha256:zz"/m);
    expect(problems.join("\n")).toMatch(/both set; give one of them/);
    expect(problems.join("\n")).toMatch(/source\.format "qcow3" is not one of raw, qcow2/);
    expect(problems.join("\n")).toMatch(/source\.compression "lz4"/);
    expect(problems.join("\n")).toMatch(/diskFormat "ami"/);
  });
});
