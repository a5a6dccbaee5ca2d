// ImageCatalog and CommunityImages under Pulumi mocks: which CommunityImage children they declare
// (names, inputs, parent), the maps they export, and input errors before any child exists.
import * as pulumi from "@pulumi/pulumi";
import { beforeAll, beforeEach, describe, expect, it } from "vitest";
import type { CatalogDocument } from "../../../components/catalogFile";

// Loaded after setMocks (as the resource tests do): the SDK reads its settings when first used.
let ImageCatalog: typeof import("../../../components/imageCatalog").ImageCatalog;
let CommunityImages: typeof import("../../../components/communityImages").CommunityImages;

interface Registered {
  type: string;
  name: string;
  inputs: Record<string, unknown>;
}
let registered: Registered[] = [];

beforeAll(async () => {
  await pulumi.runtime.setMocks(
    {
      newResource: (args) => {
        registered.push({ type: args.type, name: args.name, inputs: args.inputs });
        return { id: `id-of-${args.name}`, state: args.inputs };
      },
      call: (args) => args.inputs,
    },
    "project",
    "stack",
    false,
  );
  ({ ImageCatalog } = await import("../../../components/imageCatalog"));
  ({ CommunityImages } = await import("../../../components/communityImages"));
});

beforeEach(() => {
  registered = [];
});

const value = <T>(o: pulumi.Output<T>) => new Promise<T>((ok) => o.apply(ok));
const children = () => registered.filter((r) => r.type === "pulumi-nodejs:dynamic/imageyard:CommunityImage");
const SHA = (n: number) => `sha256:${String(n).padStart(64, "0")}`;

const catalog: CatalogDocument = {
  images: [
    {
      name: "Ubuntu 24.04",
      login: "ubuntu",
      min_disk: 8,
      visibility: "public",
      multi: true,
      tags: ["ubuntu"],
      meta: { os_distro: "ubuntu", os_version: "24.04" },
      versions: [
        { version: "20240416", url: "https://img.example/20240416.img", checksum: SHA(1), build_date: "2024-04-16" },
        { version: "20240422", url: "https://img.example/20240422.img", checksum: SHA(2), build_date: "2024-04-22" },
      ],
    },
    {
      name: "RancherOS",
      multi: false,
      format: "qcow2",
      versions: [{ version: "1.4.1", url: "https://img.example/rancher.img", checksum: SHA(3) }],
    },
  ],
};

describe("ImageCatalog", () => {
  it("declares one CommunityImage per version, named <component>-<image>-<version>, with the rotation's names and the catalog's metadata", async () => {
    const c = new ImageCatalog("cat", { catalog, diskFormat: "raw", cloud: "mycloud", imageArgs: { scratchDir: "/scratch" } });
    // Every child has an ID once versionIds resolves (older versions register after the newest, their dependency).
    await value(c.versionIds);
    const byName = Object.fromEntries(children().map((r) => [r.name, r.inputs]));
    expect(Object.keys(byName).sort()).toEqual(["cat-rancheros-1.4.1", "cat-ubuntu-24.04-20240416", "cat-ubuntu-24.04-20240422"]);
    expect(byName["cat-ubuntu-24.04-20240422"]).toMatchObject({
      name: "Ubuntu 24.04",
      publishName: "Ubuntu 24.04 (20240422)",
      visibility: "public",
      active: true,
      hidden: false,
      diskFormat: "raw",
      minDisk: 8,
      login: "ubuntu",
      buildDate: "2024-04-22",
      tags: ["ubuntu"],
      cloud: "mycloud",
      scratchDir: "/scratch",
    });
    expect(byName["cat-ubuntu-24.04-20240416"]).toMatchObject({ name: "Ubuntu 24.04 (20240416)", visibility: "public" });
    expect(byName["cat-ubuntu-24.04-20240416"]!.publishName).toBeUndefined();
    expect(byName["cat-rancheros-1.4.1"]).toMatchObject({
      name: "RancherOS 1.4.1",
      diskFormat: "raw",
      source: { url: "https://img.example/rancher.img", checksum: SHA(3), format: "qcow2" },
    });
    expect((byName["cat-ubuntu-24.04-20240422"]!.properties as Record<string, string>).image_source).toBe(
      "https://img.example/20240422.img",
    );
  });

  it("exports name → current image ID and name → version → ID", async () => {
    const c = new ImageCatalog("ids", { catalog });
    expect(await value(c.imageIds)).toEqual({ "Ubuntu 24.04": "id-of-ids-ubuntu-24.04-20240422", RancherOS: "id-of-ids-rancheros-1.4.1" });
    expect(await value(c.versionIds)).toEqual({
      "Ubuntu 24.04": { "20240416": "id-of-ids-ubuntu-24.04-20240416", "20240422": "id-of-ids-ubuntu-24.04-20240422" },
      RancherOS: { "1.4.1": "id-of-ids-rancheros-1.4.1" },
    });
  });

  it("children are parented to the component (their URNs carry its type)", async () => {
    const c = new ImageCatalog("par", { catalog });
    const urn = await value(c.images["ubuntu-24.04-20240422"]!.urn);
    expect(urn).toMatch(/imageyard:index:ImageCatalog\$pulumi-nodejs:dynamic\/imageyard:CommunityImage::par-ubuntu-24.04-20240422$/);
  });

  it("members go to shared images only", async () => {
    const shared: CatalogDocument = {
      images: [
        { ...catalog.images[1]!, visibility: "shared" },
        { ...catalog.images[1]!, name: "Public", visibility: "public" },
      ],
    };
    const c = new ImageCatalog("sh", { catalog: shared, members: ["0123456789abcdef"] });
    await value(c.versionIds);
    expect(
      children()
        .filter((r) => r.name.startsWith("sh-"))
        .map((r) => [r.inputs.name, r.inputs.members])
        .sort(),
    ).toEqual([
      ["Public 1.4.1", undefined],
      ["RancherOS 1.4.1", ["0123456789abcdef"]],
    ]);
  });

  it("a malformed catalog or filter fails at construction, before any child exists, naming the field", () => {
    const bad = { images: [{ ...catalog.images[0]!, min_ram: "lots" as unknown as number }] };
    expect(() => new ImageCatalog("bad", { catalog: bad })).toThrow(
      /catalog\[0\]: image "Ubuntu 24.04": min_ram: must be a whole number ≥ 0, not "lots"/,
    );
    expect(() => new ImageCatalog("bad2", { catalog, filter: "(" })).toThrow(/ImageCatalog: filter: not a regular expression/);
    expect(children()).toEqual([]);
  });
});

describe("CommunityImages", () => {
  const defaults = {
    ubuntu_jammy_20240101: { name: "ubuntu-jammy-20240101", sourceUrl: "https://img.example/jammy.img", checksum: SHA(4) },
  };
  const extra = {
    debian_11_20220711_1073: {
      name: "debian-11-generic-amd64-20220711-1073",
      source_url: "https://cloud.debian.org/images/cloud/bullseye/20220711-1073/debian-11-generic-amd64-20220711-1073.qcow2",
      source_disk_format: "qcow2",
      container_format: "bare",
      checksum_url: "https://cloud.debian.org/images/cloud/bullseye/20220711-1073/SHA512SUMS",
    },
  };

  it("merges defaults with extras (azimuth's spelling accepted), target disk format qcow2 by default, community visibility, keys locked", async () => {
    const c = new CommunityImages("ci", { images: defaults, extra: extra as never });
    const ids = await value(c.imageIds);
    expect(ids).toEqual({
      ubuntu_jammy_20240101: "id-of-ci-ubuntu_jammy_20240101",
      debian_11_20220711_1073: "id-of-ci-debian_11_20220711_1073",
    });
    const deb = children().find((r) => r.name === "ci-debian_11_20220711_1073")!.inputs;
    expect(deb).toMatchObject({
      name: "debian-11-generic-amd64-20220711-1073",
      diskFormat: "qcow2",
      containerFormat: "bare",
      visibility: "community",
      source: { url: extra.debian_11_20220711_1073.source_url, checksumUrl: extra.debian_11_20220711_1073.checksum_url, format: "qcow2" },
      immutableSource: { key: "debian_11_20220711_1073" },
    });
    expect((deb.immutableSource as { hint: string }).hint).toMatch(
      /Add the new image under a new key \(e\.g\. "debian_11_20220711_1073_\d{8}"\).*allowSourceChange: true/,
    );
  });

  it("targetDiskFormat applies to specs without diskFormat; an extra replaces a default of the same key; allowSourceChange drops the lock", async () => {
    const c = new CommunityImages("raw", {
      images: defaults,
      extra: { ubuntu_jammy_20240101: { ...defaults.ubuntu_jammy_20240101, name: "override", diskFormat: "vmdk" } },
      targetDiskFormat: "raw",
      allowSourceChange: true,
    });
    await value(c.imageIds);
    expect(children().map((r) => [r.inputs.name, r.inputs.diskFormat, r.inputs.immutableSource])).toEqual([
      ["override", "vmdk", undefined],
    ]);
  });

  it("a bad spec names its path: unknown field, missing checksum, wrong format", () => {
    expect(() => new CommunityImages("e1", { images: { k: { ...defaults.ubuntu_jammy_20240101, colour: "red" } as never } })).toThrow(
      /CommunityImages: images\.k\.colour: unknown field/,
    );
    expect(() => new CommunityImages("e2", { extra: { k: { name: "n", sourceUrl: "https://x.example/a.img" } } })).toThrow(
      /extra\.k\.checksum: one of checksum .* and checksumUrl .* is required/,
    );
    expect(() => new CommunityImages("e3", { images: defaults, targetDiskFormat: "qcow3" as never })).toThrow(
      /targetDiskFormat: must be one of/,
    );
    expect(children()).toEqual([]);
  });
});
