// Pure pieces of CommunityImage's check: sizes as users write them, compression spellings.
import { describe, expect, it } from "vitest";
import { parseSize, validateCommunityImage, type CommunityImageInputs } from "../../../../provider/resources/communityImage.lifecycle";
import { normalizeCompression } from "../../../../provider/disk/decompress";

const SHA = "a".repeat(64);
const base: CommunityImageInputs = {
  name: "x",
  source: { url: "https://h/x.qcow2", checksum: `sha256:${SHA}` },
  diskFormat: "qcow2",
  credentials: { authUrl: "https://k/v3", username: "u", password: "p", projectName: "p" },
};

describe("parseSize", () => {
  it("takes bytes and binary/decimal units; refuses zero, negatives, fractions of a byte and words", () => {
    expect(parseSize(68719476736)).toBe(64 * 1024 ** 3);
    expect(parseSize("64GiB")).toBe(64 * 1024 ** 3);
    expect(parseSize("64G")).toBe(64 * 1024 ** 3);
    expect(parseSize(" 500 MiB ")).toBe(500 * 1024 ** 2);
    expect(parseSize("2TB")).toBe(2e12);
    expect(parseSize("1.5GiB")).toBe(1.5 * 1024 ** 3);
    for (const bad of [0, -1, 1.5, "lots", "", "64 GiBs", null, true]) expect(parseSize(bad)).toBeUndefined();
  });
});

describe("compression spellings", () => {
  it("program names map to the suffixes the engine uses", () => {
    expect(["gzip", "bzip2", "zstd", "gz", "bz2", "xz", "zst", "auto", "none"].map((c) => normalizeCompression(c as never))).toEqual([
      "gz",
      "bz2",
      "zst",
      "gz",
      "bz2",
      "xz",
      "zst",
      "auto",
      "none",
    ]);
  });
  it("validate accepts both spellings and names the property for anything else", () => {
    for (const c of ["gzip", "gz", "bzip2", "bz2", "xz", "zstd", "zst", "auto", "none"])
      expect(validateCommunityImage({ ...base, source: { ...base.source, compression: c as never } })).toEqual([]);
    expect(validateCommunityImage({ ...base, source: { ...base.source, compression: "lz4" as never } })[0]?.reason).toMatch(
      /source\.compression "lz4" is not one of .*gzip/,
    );
  });
});

describe("offline checks of the new inputs", () => {
  it('maxVirtualSize and allowLocalFiles are validated; file:// needs allowLocalFiles; a checksum (or "unverified") is required', () => {
    const f = (i: Partial<CommunityImageInputs>) =>
      Object.fromEntries(validateCommunityImage({ ...base, ...i }).map((x) => [x.property, x.reason]));
    expect(f({ maxVirtualSize: "huge" }).maxVirtualSize).toMatch(/e\.g\. 68719476736 or "64GiB"/);
    expect(f({ allowLocalFiles: "yes" as never }).allowLocalFiles).toMatch(/true or false/);
    expect(f({ source: { url: "file:///etc/passwd", checksum: "unverified" } }).source).toMatch(/allowLocalFiles: true/);
    expect(f({ source: { url: "file:///srv/x.qcow2", checksum: "unverified" }, allowLocalFiles: true })).toEqual({});
    expect(f({ source: { url: "https://h/x.qcow2" } })["source.checksum"]).toMatch(/required.*"unverified"/);
    expect(f({ source: { url: "https://h/x.qcow2", checksum: "unverified" } })).toEqual({});
  });
});

describe("import retries, import timeout, mirror", () => {
  const reasons = (over: Partial<CommunityImageInputs>) =>
    Object.fromEntries(validateCommunityImage({ ...base, ...over }).map((x) => [x.property, x.reason]));
  it("importRetries is a whole number 0–10 and importTimeout a duration; each failure names its property", () => {
    for (const ok of [0, 2, 10]) expect(reasons({ importRetries: ok })).toEqual({});
    for (const bad of [-1, 11, 1.5, "2" as never])
      expect(reasons({ importRetries: bad }).importRetries).toMatch(/whole number from 0 to 10/);
    for (const ok of [90, "90s", "30m", "1h"]) expect(reasons({ importTimeout: ok })).toEqual({});
    for (const bad of [0, -5, "soon"]) expect(reasons({ importTimeout: bad }).importTimeout).toMatch(/duration like "90s"/);
  });
  it("importMethod takes upload, glance-direct and web-download", () => {
    for (const m of ["upload", "glance-direct", "web-download"] as const) expect(reasons({ importMethod: m })).toEqual({});
    expect(reasons({ importMethod: "copy-image" as never }).importMethod).toMatch(/glance-direct \(the same, then stage \+ import\)/);
  });
  it("source.mirrorUrl must be a URL; web-download needs it http(s)", () => {
    expect(reasons({ source: { ...base.source, mirrorUrl: "not a url" } })["source.mirrorUrl"]).toMatch(
      /source\.mirrorUrl "not a url": not a URL/,
    );
    expect(
      reasons({ importMethod: "web-download", allowLocalFiles: true, source: { ...base.source, mirrorUrl: "file:///srv/x.qcow2" } })[
        "source.mirrorUrl"
      ],
    ).toMatch(/web-download needs an http\(s\) URL/);
  });
});
