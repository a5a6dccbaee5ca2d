import { createHash } from "node:crypto";
import { describe, expect, it } from "vitest";
import { isImageyardError } from "../../../../provider/http/errors";
import {
  digestOf,
  verifyDigest,
  formatPlatform,
  normalizePlatform,
  parseManifest,
  parsePlatform,
  platformMatches,
  referencedDescriptors,
} from "../../../../provider/oci/manifest";
import * as mt from "../../../../provider/oci/media";

const d = (c: string) => `sha256:${c.repeat(64)}`;
const buf = (o: unknown) => Buffer.from(JSON.stringify(o));

const ociManifest = {
  schemaVersion: 2,
  mediaType: mt.OCI_MANIFEST,
  config: { mediaType: mt.OCI_CONFIG, digest: d("c"), size: 10 },
  layers: [
    { mediaType: mt.OCI_LAYER_GZIP, digest: d("1"), size: 100 },
    { mediaType: mt.OCI_LAYER_GZIP, digest: d("2"), size: 200, urls: ["https://example.test/l2"], annotations: { a: "b" } },
  ],
  subject: { mediaType: mt.OCI_MANIFEST, digest: d("f"), size: 5 },
  annotations: { "org.opencontainers.image.created": "2026-01-01" },
};

const dockerList = {
  schemaVersion: 2,
  mediaType: mt.DOCKER_MANIFEST_LIST,
  manifests: [
    { mediaType: mt.DOCKER_MANIFEST, digest: d("a"), size: 1, platform: { os: "linux", architecture: "amd64" } },
    { mediaType: mt.DOCKER_MANIFEST, digest: d("b"), size: 2, platform: { os: "linux", architecture: "arm64", variant: "v8" } },
  ],
};

function code(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    return isImageyardError(e) ? e.code : "NOT_IMAGEYARD";
  }
  return undefined;
}

describe("parseManifest", () => {
  it("reads an OCI image manifest: config, layers, subject, annotations and the digest of the exact bytes", () => {
    const bytes = buf(ociManifest);
    const m = parseManifest(bytes);
    expect(m.kind).toBe("manifest");
    expect(m.mediaType).toBe(mt.OCI_MANIFEST);
    expect(m.config?.digest).toBe(d("c"));
    expect(m.layers.map((l) => l.size)).toEqual([100, 200]);
    expect(m.layers[1]?.urls).toEqual(["https://example.test/l2"]);
    expect(m.subject?.digest).toBe(d("f"));
    expect(m.children).toEqual([]);
    expect(m.digest).toBe(`sha256:${createHash("sha256").update(bytes).digest("hex")}`);
    expect(m.size).toBe(bytes.length);
    expect(referencedDescriptors(m).map((x) => x.digest)).toEqual([d("c"), d("1"), d("2")]);
  });

  it("reads a Docker manifest list with platforms as an index", () => {
    const m = parseManifest(buf(dockerList), `${mt.DOCKER_MANIFEST_LIST}; charset=utf-8`);
    expect(m.kind).toBe("index");
    expect(m.children.map((c) => c.platform?.architecture)).toEqual(["amd64", "arm64"]);
    expect(m.children[1]?.platform?.variant).toBe("v8");
    expect(referencedDescriptors(m)).toHaveLength(2);
  });

  it("takes the media type from Content-Type, else from the shape, when the body has none", () => {
    const { mediaType: _drop, ...noType } = ociManifest;
    expect(parseManifest(buf(noType), mt.DOCKER_MANIFEST).mediaType).toBe(mt.DOCKER_MANIFEST);
    expect(parseManifest(buf(noType)).mediaType).toBe(mt.OCI_MANIFEST);
    expect(parseManifest(buf({ schemaVersion: 2, manifests: [] })).kind).toBe("index");
  });

  it("rejects malformed documents with MANIFEST_INVALID", () => {
    expect(code(() => parseManifest(Buffer.from("{not json")))).toBe("MANIFEST_INVALID");
    expect(code(() => parseManifest(buf([1, 2])))).toBe("MANIFEST_INVALID");
    expect(code(() => parseManifest(buf({ ...ociManifest, schemaVersion: 3 })))).toBe("MANIFEST_INVALID");
    expect(code(() => parseManifest(buf({ ...ociManifest, mediaType: "text/plain" })))).toBe("MANIFEST_INVALID");
    expect(code(() => parseManifest(buf({ ...ociManifest, config: undefined })))).toBe("MANIFEST_INVALID");
    expect(code(() => parseManifest(buf({ ...ociManifest, layers: {} })))).toBe("MANIFEST_INVALID");
    expect(code(() => parseManifest(buf({ ...ociManifest, layers: [{ mediaType: "x", digest: "nope", size: 1 }] })))).toBe(
      "MANIFEST_INVALID",
    );
    expect(code(() => parseManifest(buf({ ...ociManifest, layers: [{ mediaType: "x", digest: d("1"), size: -1 }] })))).toBe(
      "MANIFEST_INVALID",
    );
    expect(code(() => parseManifest(buf({ ...ociManifest, layers: [{ mediaType: "x", digest: d("1"), size: 1.5 }] })))).toBe(
      "MANIFEST_INVALID",
    );
    expect(code(() => parseManifest(buf({ ...dockerList, manifests: [{ ...dockerList.manifests[0], platform: { os: "linux" } }] })))).toBe(
      "MANIFEST_INVALID",
    );
    expect(code(() => parseManifest(buf({ ...ociManifest, annotations: { a: 1 } })))).toBe("MANIFEST_INVALID");
  });

  it("names what is wrong and where", () => {
    expect(() =>
      parseManifest(buf({ ...ociManifest, layers: [ociManifest.layers[0], { mediaType: "x", digest: d("1"), size: "big" }] })),
    ).toThrow(/layers\[1\]: descriptor size "big" is not a non-negative integer \(MANIFEST_INVALID\)/);
  });

  it("refuses Docker schema 1 as UNSUPPORTED", () => {
    expect(code(() => parseManifest(buf({ schemaVersion: 1, name: "x", fsLayers: [] })))).toBe("UNSUPPORTED");
    expect(code(() => parseManifest(buf({ schemaVersion: 2 }), mt.DOCKER_SCHEMA1_SIGNED))).toBe("UNSUPPORTED");
  });
});

describe("digests of documents", () => {
  it("digestOf is sha256 of the bytes with its algorithm prefix", () => {
    expect(digestOf(Buffer.from(""))).toBe("sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  });

  it("verifyDigest supports sha512 and refuses unknown algorithms with UNSUPPORTED", () => {
    const sha512 =
      "sha512:cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e";
    expect(verifyDigest(Buffer.from(""), sha512, "x")).toBe(sha512);
    expect(code(() => verifyDigest(Buffer.from(""), `md5:${"0".repeat(32)}`, "x"))).toBe("UNSUPPORTED");
  });

  it("verifyDigest returns the digest on a match and throws DIGEST_MISMATCH naming both digests otherwise", () => {
    const b = Buffer.from("doc");
    expect(verifyDigest(b, digestOf(b), "pull x")).toBe(digestOf(b));
    expect(() => verifyDigest(b, digestOf(Buffer.from("other")), "pull x")).toThrow(
      new RegExp(`^pull x: expected ${digestOf(Buffer.from("other"))}, got ${digestOf(b)} after 3 bytes \\(DIGEST_MISMATCH\\)`),
    );
  });
});

describe("platforms", () => {
  it("parses os/arch[/variant][:os.version] and normalises aliases", () => {
    expect(parsePlatform("linux/amd64")).toEqual({ os: "linux", architecture: "amd64" });
    expect(parsePlatform("linux/arm64/v8")).toEqual({ os: "linux", architecture: "arm64" });
    expect(parsePlatform("linux/aarch64")).toEqual({ os: "linux", architecture: "arm64" });
    expect(parsePlatform("Linux/x86_64")).toEqual({ os: "linux", architecture: "amd64" });
    expect(parsePlatform("linux/arm/7")).toEqual({ os: "linux", architecture: "arm", variant: "v7" });
    expect(parsePlatform("linux/armhf")).toEqual({ os: "linux", architecture: "arm", variant: "v7" });
    expect(parsePlatform("windows/amd64:10.0.17763.1")).toEqual({ os: "windows", architecture: "amd64", "os.version": "10.0.17763.1" });
  });

  it("rejects malformed platforms with INVALID_INPUT and an example", () => {
    for (const s of ["", "linux", "linux/amd64/v1/x", "linux//amd64", "linux/amd 64", "windows/amd64:"]) {
      expect(code(() => parsePlatform(s))).toBe("INVALID_INPUT");
    }
    expect(() => parsePlatform("linux")).toThrow(/e\.g\. "linux\/amd64"/);
  });

  it("formats back to the familiar string", () => {
    for (const s of ["linux/amd64", "linux/arm/v6", "windows/amd64:10.0.1"]) expect(formatPlatform(parsePlatform(s))).toBe(s);
  });

  it("matches index entries the way a pull would choose them", () => {
    const amd64 = { os: "linux", architecture: "amd64" };
    const arm64v8 = { os: "linux", architecture: "arm64", variant: "v8" };
    const armv6 = { os: "linux", architecture: "arm", variant: "v6" };
    const armNoVariant = { os: "linux", architecture: "arm" };
    expect(platformMatches(parsePlatform("linux/amd64"), amd64)).toBe(true);
    expect(platformMatches(parsePlatform("linux/amd64"), arm64v8)).toBe(false);
    expect(platformMatches(parsePlatform("windows/amd64"), amd64)).toBe(false);
    expect(platformMatches(parsePlatform("linux/arm64"), arm64v8)).toBe(true);
    expect(platformMatches(parsePlatform("linux/arm64/v8"), { os: "linux", architecture: "arm64" })).toBe(true);
    expect(platformMatches(parsePlatform("linux/arm"), armv6)).toBe(true);
    expect(platformMatches(parsePlatform("linux/arm/v7"), armv6)).toBe(false);
    expect(platformMatches(parsePlatform("linux/arm/v7"), armNoVariant)).toBe(true);
    expect(platformMatches(parsePlatform("linux/amd64"), undefined)).toBe(false);
    expect(platformMatches(parsePlatform("windows/amd64:10.0.1"), { os: "windows", architecture: "amd64", "os.version": "10.0.2" })).toBe(
      false,
    );
    expect(platformMatches(parsePlatform("windows/amd64"), { os: "windows", architecture: "amd64", "os.version": "10.0.2" })).toBe(true);
  });

  it("normalizePlatform keeps unknown architectures as they are", () => {
    expect(normalizePlatform({ os: "linux", architecture: "riscv64" })).toEqual({ os: "linux", architecture: "riscv64" });
    expect(normalizePlatform({ os: "linux", architecture: "s390x" })).toEqual({ os: "linux", architecture: "s390x" });
  });
});
