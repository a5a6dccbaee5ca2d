// Pure pieces of the Glance side: JSON-patch planning, hash verification, SCS metadata, request
// keys, and Glance/Keystone error bodies turned into messages.
import { describe, expect, it } from "vitest";
import { isImageyardError } from "../../../../provider/http/errors";
import { glanceError, keystoneError, openstackMessage } from "../../../../provider/glance/errors";
import { pointer, type GlanceImage } from "../../../../provider/glance/images";
import { requestKeyOf, scsProperties, verifyHashes } from "../../../../provider/glance/publish";
import { planPatch, planUpdate, type ImageAttributes } from "../../../../provider/glance/update";

function image(over: Partial<GlanceImage> = {}): GlanceImage {
  return {
    id: "i1",
    name: "debian",
    status: "active",
    visibility: "community",
    protected: false,
    os_hidden: false,
    owner: "p",
    disk_format: "qcow2",
    container_format: "bare",
    min_disk: 0,
    min_ram: 0,
    size: 10,
    virtual_size: 20,
    checksum: "m",
    os_hash_algo: "sha512",
    os_hash_value: "s",
    tags: ["a", "b"],
    created_at: "",
    updated_at: "",
    os_distro: "debian",
    image_description: "debian",
    os_glance_failed_import: "",
    ...over,
  };
}

const want = (over: Partial<ImageAttributes> = {}): ImageAttributes => ({
  name: "debian",
  visibility: "community",
  minDisk: 0,
  minRam: 0,
  properties: { os_distro: "debian", image_description: "debian" },
  tags: ["b", "a"],
  protected: false,
  hidden: false,
  active: true,
  ...over,
});

describe("planPatch", () => {
  it("no differences, no operations (tag order and duplicates do not matter)", () => {
    expect(planPatch(image(), want({ tags: ["a", "b", "a"] }))).toEqual([]);
  });

  it("replaces core attributes, replaces /tags whole, adds new and replaces changed properties", () => {
    expect(
      planPatch(
        image(),
        want({
          name: "deb12",
          visibility: "private",
          minRam: 512,
          hidden: true,
          tags: ["c"],
          properties: { os_distro: "Debian", os_version: "12", image_description: "debian" },
        }),
      ),
    ).toEqual([
      { op: "replace", path: "/name", value: "deb12" },
      { op: "replace", path: "/visibility", value: "private" },
      { op: "replace", path: "/min_ram", value: 512 },
      { op: "replace", path: "/os_hidden", value: true },
      { op: "replace", path: "/tags", value: ["c"] },
      { op: "replace", path: "/os_distro", value: "Debian" },
      { op: "add", path: "/os_version", value: "12" },
    ]);
  });

  it("removes only properties it managed before; other properties (someone else's) stay", () => {
    const img = image({ hw_disk_bus: "scsi", owner_note: "keep me" });
    expect(planPatch(img, want(), ["hw_disk_bus", "os_distro"])).toEqual([{ op: "remove", path: "/hw_disk_bus" }]);
  });

  it("escapes JSON-pointer characters in property names", () => {
    expect(pointer("a/b~c")).toBe("/a~1b~0c");
    expect(planPatch(image(), want({ properties: { ...want().properties, "x/y": "1" } }))).toEqual([
      { op: "add", path: "/x~1y", value: "1" },
    ]);
  });

  it("protected changes come last so the other changes are applied first", () => {
    const ops = planPatch(image(), want({ protected: true, name: "n" }));
    expect(ops.at(-1)).toEqual({ op: "replace", path: "/protected", value: true });
  });
});

describe("planUpdate", () => {
  it("reactivates before patching and deactivates after", () => {
    expect(planUpdate(image({ status: "deactivated" }), want({ name: "x" }))).toEqual({
      reactivate: true,
      patch: [{ op: "replace", path: "/name", value: "x" }],
      deactivate: false,
    });
    expect(planUpdate(image(), want({ active: false }))).toEqual({ reactivate: false, patch: [], deactivate: true });
    expect(planUpdate(image({ status: "deactivated" }), want({ active: false }))).toEqual({
      reactivate: false,
      patch: [],
      deactivate: false,
    });
  });
});

describe("verifyHashes", () => {
  it("accepts a matching sha512 and size", () => {
    expect(verifyHashes(image({ os_hash_value: "abc", size: 3 }), { size: 3, sha512: "abc", md5: "x" }, "upload")).toBe("sha512");
  });

  it("a different sha512 or size is an error naming the image", () => {
    expect(() => verifyHashes(image({ os_hash_value: "abc", size: 3 }), { size: 3, sha512: "abd" }, "upload d")).toThrow(
      /upload d: Glance's os_hash_value sha512:abc… differs/,
    );
    expect(() => verifyHashes(image({ size: 4 }), { size: 3, sha512: "s" }, "upload d")).toThrow(
      /Glance stored 4 bytes but 3 were sent \(image i1\)/,
    );
  });

  it("falls back to md5 when Glance uses another hash algorithm, and refuses when nothing can be compared", () => {
    expect(verifyHashes(image({ os_hash_algo: "sha256", checksum: "m5" }), { size: 10, sha512: "s", md5: "m5" }, "u")).toBe("md5");
    expect(() => verifyHashes(image({ os_hash_algo: null, checksum: null }), { size: 10, sha512: "s" }, "u")).toThrow(
      /refusing to trust it/,
    );
  });
});

describe("scsProperties and requestKeyOf", () => {
  it("fills image_source (without credentials), image_description (default: name), build date and login", () => {
    expect(scsProperties({ name: "Debian 12", url: "https://user:pw@host/x.qcow2" })).toEqual({
      image_source: "https://host/x.qcow2",
      image_description: "Debian 12",
    });
    expect(scsProperties({ name: "n", url: "https://h/x", buildDate: "2024-01-02", login: "debian", description: "d" })).toEqual({
      image_source: "https://h/x",
      image_description: "d",
      image_build_date: "2024-01-02",
      image_original_user: "debian",
    });
  });

  it("the request key is stable for the same request and changes with source, name or format", () => {
    const base = {
      name: "n",
      source: { url: "https://h/x", checksum: "sha256:aa" },
      diskFormat: "raw" as const,
      containerFormat: "bare",
      importMethod: "upload" as const,
    };
    expect(requestKeyOf(base)).toBe(requestKeyOf({ ...base }));
    expect(requestKeyOf(base)).toMatch(/^[0-9a-f]{32}$/);
    for (const other of [
      { ...base, name: "m" },
      { ...base, diskFormat: "qcow2" as const },
      { ...base, source: { url: "https://h/x", checksum: "sha256:ab" } },
    ]) {
      expect(requestKeyOf(other)).not.toBe(requestKeyOf(base));
    }
  });
});

describe("OpenStack error bodies", () => {
  const ctx = (status: number, body: string) => ({
    request: { method: "GET" as const, url: "http://g/v2/images/x", ok: [200], operation: "get image x" },
    status,
    headers: {},
    body,
    retryAfterMs: undefined,
  });

  it("strips Glance's <br /> noise and keeps its message", () => {
    expect(openstackMessage('{"message": "No image found with ID x<br /><br />", "code": "404 Not Found", "title": "Not Found"}')).toBe(
      "No image found with ID x",
    );
    expect(
      openstackMessage('{"error":{"code":401,"message":"The request you have made requires authentication.","title":"Unauthorized"}}'),
    ).toBe("The request you have made requires authentication");
    expect(openstackMessage("<html><body><h1>502 Bad Gateway</h1></body></html>")).toBe("502 Bad Gateway");
  });

  it("maps statuses to codes with the DESIGN message shape", () => {
    const e = glanceError(ctx(404, '{"message":"No image found with ID x<br /><br />"}'), "x");
    expect(e.code).toBe("GLANCE_NOT_FOUND");
    expect(e.message).toBe(
      'get image x: Glance answered "No image found with ID x" (404 Not Found). Check the image ID and that it belongs to (or is visible to) this project.',
    );
    expect(e.imageId).toBe("x");
    expect(glanceError(ctx(413, "")).code).toBe("GLANCE_TOO_LARGE");
    expect(glanceError(ctx(503, "")).retryable).toBe(true);
    expect(isImageyardError(glanceError(ctx(409, "")), "GLANCE_CONFLICT")).toBe(true);
  });

  it("a Keystone 401 names the account, never a secret", () => {
    const e = keystoneError(
      {
        ...ctx(401, '{"error":{"message":"The request you have made requires authentication."}}'),
        request: { method: "POST", url: "http://ks/v3/auth/tokens", ok: [201], operation: "authenticate user demo" },
      },
      "user demo",
    );
    expect(e.code).toBe("KEYSTONE_UNAUTHORIZED");
    expect(e.message).toMatch(/^authenticate user demo: Keystone refused the credentials of user demo \(401 Unauthorized\)\. Check/);
  });
});
