// CommunityImage without Glance: which input changes replace and which update in place, what check
// says about bad input, and that the resource registers its credentials as secret.
import { describe, expect, it } from "vitest";
import {
  diffCommunityImage,
  managedProperties,
  outputsOf,
  validateCommunityImage,
  type CommunityImageInputs,
  type CommunityImageOutputs,
} from "../../../../provider/resources/communityImage.lifecycle";
import type { GlanceImage } from "../../../../provider/glance/images";
import { UNKNOWN } from "../../../../provider/resources/diff";

const SHA = "94e1e2c94dbbae7d4bdc38e68590a1daf73c9de2d03dd693857b4b0a042548e8";

function inputs(over: Partial<CommunityImageInputs> = {}): CommunityImageInputs {
  return {
    name: "Cirros 0.6",
    source: { url: "https://example.org/cirros.qcow2", checksum: `sha256:${SHA}` },
    diskFormat: "qcow2",
    properties: { os_distro: "cirros" },
    tags: ["imageyard"],
    credentials: { authUrl: "https://ks.example:5000/v3", username: "u", password: "p", projectName: "demo" },
    ...over,
  };
}

/** The outputs a create of `i` would produce, from a Glance image that matches it exactly. */
function published(i: CommunityImageInputs, over: Partial<GlanceImage> = {}): CommunityImageOutputs {
  const img: GlanceImage = {
    id: "11111111-2222-3333-4444-555555555555",
    name: i.name,
    status: i.active === false ? "deactivated" : "active",
    visibility: i.visibility ?? "community",
    protected: i.protected ?? false,
    os_hidden: i.hidden ?? false,
    owner: "p1",
    disk_format: i.diskFormat,
    container_format: "bare",
    min_disk: i.minDisk ?? 0,
    min_ram: i.minRam ?? 0,
    size: 1,
    virtual_size: 2,
    checksum: "m",
    os_hash_algo: "sha512",
    os_hash_value: "s",
    tags: i.tags ?? [],
    created_at: "t",
    updated_at: "t",
    ...managedProperties(i),
    imageyard_request_key: "k",
    ...over,
  };
  return outputsOf(i, img);
}

describe("diffCommunityImage", () => {
  const base = inputs();
  const outs = published(base);

  it("the same inputs (and tags in another order) are no change", () => {
    expect(diffCommunityImage(outs, inputs())).toEqual({ changes: false });
    expect(diffCommunityImage(published(inputs({ tags: ["a", "b"] })), inputs({ tags: ["b", "a"] }))).toEqual({ changes: false });
  });

  it.each([
    ["source url", { source: { url: "https://example.org/cirros-0.6.1.qcow2", checksum: `sha256:${SHA}` } }, ["source"]],
    ["source checksum", { source: { url: "https://example.org/cirros.qcow2", checksum: `sha256:${SHA.replace(/^9/, "8")}` } }, ["source"]],
    ["diskFormat", { diskFormat: "raw" as const }, ["diskFormat"]],
    ["containerFormat", { containerFormat: "ovf" }, ["containerFormat"]],
    ["a SUMS entry that changed", { resolvedChecksum: `sha256:${SHA}` }, ["resolvedChecksum"]],
  ])("%s replaces, creating the new image before deleting the old", (_l, over, replaces) => {
    expect(diffCommunityImage(outs, inputs(over as Partial<CommunityImageInputs>))).toEqual({
      changes: true,
      replaces,
      deleteBeforeReplace: false,
    });
  });

  it.each([
    ["name", { name: "Cirros 0.6 (old)" }],
    ["visibility", { visibility: "private" as const }],
    ["properties", { properties: { os_distro: "cirros", os_version: "0.6" } }],
    ["tags", { tags: ["imageyard", "x"] }],
    ["minDisk", { minDisk: 1 }],
    ["minRam", { minRam: 64 }],
    ["protected", { protected: true }],
    ["hidden", { hidden: true }],
    ["active", { active: false }],
    ["SCS login", { login: "cirros" }],
    ["credentials", { credentials: { authUrl: "https://ks.example:5000/v3", username: "u", password: "rotated", projectName: "demo" } }],
    [
      "source.mirrorUrl (same verified bytes)",
      { source: { url: "https://example.org/cirros.qcow2", mirrorUrl: "https://mirror.example/c.qcow2", checksum: `sha256:${SHA}` } },
    ],
    ["importMethod", { importMethod: "glance-direct" as const }],
    ["importRetries", { importRetries: 5 }],
    ["importTimeout", { importTimeout: "5m" }],
  ])("%s updates in place", (_l, over) => {
    expect(diffCommunityImage(outs, inputs(over as Partial<CommunityImageInputs>))).toEqual({ changes: true });
  });

  it("drift seen by read (a property or min_ram edited in Glance) is an in-place update back to the inputs", () => {
    expect(diffCommunityImage(published(base, { os_distro: "tampered" }), base)).toEqual({ changes: true });
    expect(diffCommunityImage(published(base, { min_ram: 4096 }), base)).toEqual({ changes: true });
  });

  it("a property dropped from the inputs is a change while Glance still has it", () => {
    expect(diffCommunityImage(outs, inputs({ properties: {} }))).toEqual({ changes: true });
  });

  it("properties that someone else added in Glance are left alone (no change)", () => {
    expect(diffCommunityImage(published(base, { added_by_operator: "yes" }), base)).toEqual({ changes: false });
  });

  it("an unknown source during preview is a replacement", () => {
    expect(diffCommunityImage(outs, { ...base, source: UNKNOWN as never }).replaces).toContain("source");
  });
});

describe("validateCommunityImage", () => {
  const reasons = (i: Partial<CommunityImageInputs>) => Object.fromEntries(validateCommunityImage(i).map((f) => [f.property, f.reason]));

  it("valid inputs have no failures", () => {
    expect(validateCommunityImage(inputs())).toEqual([]);
  });

  it("names the property and gives an example for each kind of mistake", () => {
    const r = reasons({
      ...inputs(),
      name: "",
      visibility: "everyone" as never,
      minDisk: -1,
      containerFormat: "zip",
      tags: [""],
      buildDate: "17.07.2024",
      importMethod: "rsync" as never,
      properties: { id: "x", os_distro: "ok" },
    });
    expect(r.name).toMatch(/name is required, e\.g\./);
    expect(r.visibility).toMatch(/not one of community, public, shared, private/);
    expect(r.minDisk).toMatch(/whole number ≥ 0/);
    expect(r.containerFormat).toMatch(/disk images use "bare"/);
    expect(r.tags).toMatch(/non-empty strings/);
    expect(r.buildDate).toMatch(/YYYY-MM-DD/);
    expect(r.importMethod).toMatch(/upload .* web-download/);
    expect(r["properties.id"]).toMatch(/Glance attribute/);
  });

  it("checksum syntax and unknown formats are reported on source/diskFormat", () => {
    const r = validateCommunityImage(inputs({ source: { url: "https://h/x.img", checksum: "sha1:abcd" }, diskFormat: "qcow3" as never }));
    expect(r.find((f) => f.property === "source")!.reason).toMatch(/unsupported algorithm "sha1"/);
    expect(r.find((f) => f.property === "diskFormat")!.reason).toMatch(/qcow3/);
  });

  it("conflicting options are refused", () => {
    const r = reasons(
      inputs({
        importMethod: "web-download",
        source: { url: "file:///tmp/x.qcow2.xz", compression: "xz", format: "qcow2" },
        diskFormat: "vmdk",
      }),
    );
    expect(r["source.url"]).toMatch(/web-download needs an http\(s\) URL/);
    expect(r["source.compression"]).toMatch(/does not decompress/);
    expect(r.diskFormat).toMatch(/converts only to .*\(raw\); for qcow2 → vmdk use importMethod upload/);
    expect(reasons(inputs({ source: { url: "https://h/x", checksum: `sha256:${SHA}`, checksumUrl: "https://h/SUMS" } })).source).toMatch(
      /both set/,
    );
    expect(
      reasons(
        inputs({ credentials: { authUrl: "https://k/v3", password: "p", applicationCredentialSecret: "s", applicationCredentialId: "i" } }),
      ).credentials,
    ).toMatch(/both password and applicationCredentialSecret/);
  });

  it("no way to reach a cloud is a check failure that says where it looked", () => {
    const r = reasons({ ...inputs(), credentials: undefined, cloud: "missing-cloud-xyz" });
    expect(r.cloud).toMatch(/missing-cloud-xyz/);
  });

  it("unknown values during preview are not failures", () => {
    expect(
      validateCommunityImage(
        inputs({ name: UNKNOWN, visibility: UNKNOWN as never, tags: UNKNOWN as never, credentials: UNKNOWN as never }),
      ),
    ).toEqual([]);
  });
});

describe("outputs", () => {
  it("observed values win over inputs, all custom properties are listed, and the managed ones are remembered", () => {
    const o = published(inputs({ login: "cirros" }), { name: "edited", min_ram: 9, operator_note: "x" });
    expect(o.name).toBe("edited");
    expect(o.minRam).toBe(9);
    expect(o.properties).toMatchObject({
      os_distro: "cirros",
      image_original_user: "cirros",
      operator_note: "x",
      image_source: "https://example.org/cirros.qcow2",
    });
    expect(o.managedProperties).toEqual({
      image_source: "https://example.org/cirros.qcow2",
      image_description: "Cirros 0.6",
      image_original_user: "cirros",
      os_distro: "cirros",
    });
    expect(o.imageId).toBe("11111111-2222-3333-4444-555555555555");
  });
});
