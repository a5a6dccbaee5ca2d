// openstack-image-manager catalogs without Pulumi or Glance: reading and strict validation (file,
// image and field in every message), and the plan: names, rotation, visibility, retirement.
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { CatalogError, readCatalog, validateCatalog, type CatalogDocument, type CatalogImageEntry } from "../../../components/catalogFile";
import { compareVersions, planCatalog, type PlanOptions } from "../../../components/catalogPlan";

const SHA = (n: number) => `sha256:${String(n).padStart(64, "0")}`;

const UBUNTU_YAML = `---
images:
  - name: Ubuntu 24.04
    format: qcow2
    login: ubuntu
    min_disk: 8
    min_ram: 512
    status: active
    visibility: public
    multi: true
    meta:
      architecture: x86_64
      os_distro: ubuntu
      os_version: '24.04'
      replace_frequency: weekly
      uuid_validity: last-3
      provided_until: none
    tags: []
    versions:
      - version: '20240416'
        url: https://cloud-images.ubuntu.com/noble/20240416/noble-server-cloudimg-amd64.img
        checksum: "${SHA(1)}"
        build_date: 2024-04-16
      - version: '20240422'
        url: https://cloud-images.ubuntu.com/noble/20240422/noble-server-cloudimg-amd64.img
        mirror_url: https://mirror.example/noble-20240422.img
        checksum: "${SHA(2)}"
`;

const RANCHER_YAML = `images:
  - name: RancherOS
    format: qcow2
    visibility: public
    multi: false
    versions:
      - version: 1.3.0
        url: https://github.com/rancher/os/releases/download/v1.3.0/rancheros-openstack.img
        checksum: "${SHA(3)}"
      - version: 1.10
        url: https://github.com/rancher/os/releases/download/v1.10/rancheros-openstack.img
        checksum: "${SHA(4)}"
      - version: 1.9
        url: https://github.com/rancher/os/releases/download/v1.9/rancheros-openstack.img
        checksum: "${SHA(5)}"
`;

function dir(files: Record<string, string>): string {
  const d = mkdtempSync(join(tmpdir(), "iy-catalog-"));
  for (const [f, text] of Object.entries(files)) writeFileSync(join(d, f), text);
  return d;
}

function plan(source: Parameters<typeof readCatalog>[0], opts?: PlanOptions) {
  return planCatalog(validateCatalog(readCatalog(source)), opts);
}

function ubuntu(versions: string[], over: Partial<CatalogImageEntry> = {}): CatalogDocument {
  return {
    images: [
      {
        name: "Ubuntu 24.04",
        visibility: "public",
        multi: true,
        format: "qcow2",
        versions: versions.map((v, i) => ({ version: v, url: `https://cloud-images.example/${v}.img`, checksum: SHA(i) })),
        ...over,
      },
    ],
  };
}

const summary = (p: ReturnType<typeof plan>[number]) =>
  p.versions.map((v) => ({ version: v.version, name: v.name, visibility: v.visibility, hidden: v.hidden, active: v.active }));

describe("reading a catalog", () => {
  it("a directory of *.yml files is read in name order; versions keep their written text (1.10 is not 1.1)", () => {
    const [rancher, ubuntuPlan] = plan(dir({ "a-rancher.yml": RANCHER_YAML, "b-ubuntu.yml": UBUNTU_YAML, "notes.txt": "not yaml: [" }));
    expect(rancher!.versions.map((v) => v.name)).toEqual(["RancherOS 1.3.0", "RancherOS 1.9", "RancherOS 1.10"]);
    expect(ubuntuPlan!.name).toBe("Ubuntu 24.04");
  });

  it('multi: true names the newest version "Name" and the older "Name (version)"; multi: false "Name version" (separator configurable)', () => {
    const d = dir({ "u.yml": UBUNTU_YAML });
    const [u] = plan(join(d, "u.yml"));
    expect(u!.versions.map((v) => [v.key, v.name, v.publishName])).toEqual([
      ["ubuntu-24.04-20240416", "Ubuntu 24.04 (20240416)", undefined],
      ["ubuntu-24.04-20240422", "Ubuntu 24.04", "Ubuntu 24.04 (20240422)"],
    ]);
    const [r] = plan({
      images: [
        { name: "capi", multi: false, separator: "-", versions: [{ version: "1.30.1", url: "https://x.example/a.img", checksum: SHA(1) }] },
      ],
    });
    expect(r!.versions[0]!.name).toBe("capi-1.30.1");
  });

  it("SCS metadata: image_source is the upstream url (the mirror is downloaded first, url when it fails), build date, description, original user", () => {
    const [u] = plan(join(dir({ "u.yml": UBUNTU_YAML }), "u.yml"));
    const [older, newest] = u!.versions;
    expect(older!.buildDate).toBe("2024-04-16");
    expect(newest!.source.mirrorUrl).toBe("https://mirror.example/noble-20240422.img");
    expect(newest!.source.url).toBe("https://cloud-images.ubuntu.com/noble/20240422/noble-server-cloudimg-amd64.img");
    expect(older!.source.mirrorUrl).toBeUndefined();
    expect(newest!.source.checksum).toBe(SHA(2));
    expect(newest!.properties).toMatchObject({
      image_source: "https://cloud-images.ubuntu.com/noble/20240422/noble-server-cloudimg-amd64.img",
      image_description: "Ubuntu 24.04",
      image_name: "Ubuntu 24.04",
      internal_version: "20240422",
      os_version: "24.04",
      replace_frequency: "weekly",
    });
    expect(u!.login).toBe("ubuntu");
  });
});

describe("validation (like --check-only): every problem names file, image and field", () => {
  it("an unknown field, a wrong type, a bad SCS value and a missing url are all reported at once", () => {
    const bad = `images:
  - name: Debian 12
    visability: public
    min_disk: "8"
    multi: yes-please
    meta:
      replace_frequency: fortnightly
      uuid_validity: last-0
      provided_until: 2030-01-01
    versions:
      - version: '20240717'
        checksum: sha256:abc
        colour: blue
`;
    const file = join(dir({ "debian.yml": bad }), "debian.yml");
    let err: CatalogError | undefined;
    try {
      plan(file);
    } catch (e) {
      err = e as CatalogError;
    }
    expect(err).toBeInstanceOf(CatalogError);
    const lines = err!.problems.map((p) => `${p.origin}|${p.image}|${p.field}`);
    expect(lines).toEqual([
      `${file}|Debian 12|visability`,
      `${file}|Debian 12|min_disk`,
      `${file}|Debian 12|multi`,
      `${file}|Debian 12|meta.replace_frequency`,
      `${file}|Debian 12|meta.uuid_validity`,
      `${file}|Debian 12|versions[0].checksum`,
      `${file}|Debian 12|versions[0].colour`,
      `${file}|Debian 12|versions[0].url`,
    ]);
    expect(err!.message).toContain(`${file}: image "Debian 12": visability: unknown field`);
    expect(err!.message).toContain('min_disk: must be a whole number ≥ 0, not "8"');
    expect(err!.message).toMatch(
      /meta\.replace_frequency: must be one of yearly, quarterly, monthly, weekly, daily, critical_bug, never, not "fortnightly"/,
    );
    expect(err!.code).toBe("INVALID_INPUT");
  });

  it("a version without checksum fails unless allowUnverified; latest_checksum_url counts as one", () => {
    const doc = { images: [{ name: "X", versions: [{ version: "1", url: "https://x.example/1.img" }] }] };
    expect(() => plan(doc)).toThrow(/catalog\[0\]: image "X": versions\[0\]\.checksum: is required/);
    expect(plan(doc, { allowUnverified: true })[0]!.versions[0]!.source.checksum).toBe("unverified");
    const latest = plan({
      images: [
        {
          name: "Debian 12",
          latest_url: "https://x.example/latest.qcow2",
          latest_checksum_url: "https://x.example/SHA512SUMS",
          versions: [],
        },
      ],
    });
    expect(latest[0]!.versions[0]).toMatchObject({
      version: "latest",
      name: "Debian 12",
      source: { url: "https://x.example/latest.qcow2", checksumUrl: "https://x.example/SHA512SUMS" },
    });
  });

  it('meta numbers keep their text (os_version: 22.10 is "22.10"); a missing catalog path is named', () => {
    const f = join(
      dir({
        "m.yml": `images:\n  - name: M\n    min_disk: 8\n    meta:\n      os_version: 22.10\n    versions:\n      - version: 1.0\n        url: https://x.example/a.img\n        checksum: "${SHA(1)}"\n`,
      }),
      "m.yml",
    );
    const [m] = plan(f);
    expect(m!.versions[0]!.properties.os_version).toBe("22.10");
    expect(m!.versions[0]!.version).toBe("1.0");
    expect(m!.minDisk).toBe(8);
    expect(() => plan("/nonexistent/catalog")).toThrow(/\/nonexistent\/catalog: catalog: cannot read it \(ENOENT\)/);
  });

  it("unparseable YAML names the file; two images with the same name or key are refused", () => {
    const f = join(dir({ "x.yml": "images:\n  - name: [unclosed\n" }), "x.yml");
    expect(() => plan(f)).toThrow(new RegExp(`${f}: yaml:`));
    const two = { images: [ubuntu(["1"]).images[0]!, { ...ubuntu(["1"]).images[0]!, name: "Ubuntu-24.04" }] };
    expect(() => plan(two)).toThrow(/gives the key "ubuntu-24.04", as "Ubuntu 24.04" does; set a distinct shortname/);
  });
});

describe("rotation (multi: true)", () => {
  it('adding a version: the new one becomes "Name" (uploaded as "Name (version)"), the previous becomes "Name (its version)", the oldest is untouched', () => {
    const before = summary(plan(ubuntu(["20240416", "20240422"]))[0]!);
    const after = summary(plan(ubuntu(["20240416", "20240422", "20240501"]))[0]!);
    expect(before.map((v) => v.name)).toEqual(["Ubuntu 24.04 (20240416)", "Ubuntu 24.04"]);
    expect(after.map((v) => v.name)).toEqual(["Ubuntu 24.04 (20240416)", "Ubuntu 24.04 (20240422)", "Ubuntu 24.04"]);
    expect(after.every((v) => v.visibility === "public" && v.active && !v.hidden)).toBe(true);
    expect(plan(ubuntu(["20240416", "20240422", "20240501"]))[0]!.versions[2]!.publishName).toBe("Ubuntu 24.04 (20240501)");
  });

  it("a fourth version demotes the oldest public one to community (keep 3); keep is configurable", () => {
    const four = summary(plan(ubuntu(["1", "2", "3", "4"]))[0]!);
    expect(four.map((v) => v.visibility)).toEqual(["community", "public", "public", "public"]);
    expect(summary(plan(ubuntu(["1", "2", "3", "4"]), { rotation: { keep: 1 } })[0]!).map((v) => v.visibility)).toEqual([
      "community",
      "community",
      "community",
      "public",
    ]);
  });

  it("hideAfter, deactivateAfter and deleteAfter take older versions further, counted past keep", () => {
    const p = plan(ubuntu(["1", "2", "3", "4", "5", "6"]), { rotation: { keep: 2, hideAfter: 1, deactivateAfter: 2, deleteAfter: 3 } })[0]!;
    expect(p.deleted).toEqual(["1"]);
    expect(summary(p)).toEqual([
      { version: "2", name: "Ubuntu 24.04 (2)", visibility: "community", hidden: true, active: false },
      { version: "3", name: "Ubuntu 24.04 (3)", visibility: "community", hidden: true, active: true },
      { version: "4", name: "Ubuntu 24.04 (4)", visibility: "community", hidden: false, active: true },
      { version: "5", name: "Ubuntu 24.04 (5)", visibility: "public", hidden: false, active: true },
      { version: "6", name: "Ubuntu 24.04", visibility: "public", hidden: false, active: true },
    ]);
  });

  it("private images never step down to community (that would publish them); keep: true never retires; multi: false never rotates", () => {
    expect(summary(plan(ubuntu(["1", "2", "3", "4"], { visibility: "private" }))[0]!).map((v) => v.visibility)).toEqual([
      "private",
      "private",
      "private",
      "private",
    ]);
    expect(
      summary(plan(ubuntu(["1", "2", "3", "4"], { keep: true }), { rotation: { deleteAfter: 0 } })[0]!).map((v) => v.visibility),
    ).toEqual(["public", "public", "public", "public"]);
    const fixed = plan(ubuntu(["1", "2", "3", "4", "5"], { multi: false }), { rotation: { keep: 1, hideAfter: 0, deleteAfter: 1 } })[0]!;
    expect(summary(fixed).map((v) => [v.name, v.visibility, v.hidden])).toEqual(
      [1, 2, 3, 4, 5].map((n) => [`Ubuntu 24.04 ${n}`, "public", false]),
    );
  });

  it("versions are ordered naturally (1.9 < 1.10, dates), whatever the list order; latest is newest", () => {
    expect(["1.10", "latest", "1.9", "1.2.3", "20240101"].sort(compareVersions)).toEqual(["1.2.3", "1.9", "1.10", "20240101", "latest"]);
    expect(plan(ubuntu(["2", "10", "1"]))[0]!.versions.map((v) => v.name)).toEqual([
      "Ubuntu 24.04 (1)",
      "Ubuntu 24.04 (2)",
      "Ubuntu 24.04",
    ]);
  });
});

describe("options", () => {
  it("enable: false images are not managed; filter keeps only matching names; status: deactivated deactivates every version", () => {
    const doc: CatalogDocument = {
      images: [
        ...ubuntu(["1"]).images,
        { ...ubuntu(["1"]).images[0]!, name: "Old", enable: false },
        { ...ubuntu(["1", "2"]).images[0]!, name: "Frozen", status: "deactivated" },
      ],
    };
    expect(plan(doc).map((i) => i.name)).toEqual(["Ubuntu 24.04", "Frozen"]);
    expect(plan(doc, { filter: /^Ubu/ }).map((i) => i.name)).toEqual(["Ubuntu 24.04"]);
    expect(plan(doc)[1]!.versions.map((v) => v.active)).toEqual([false, false]);
  });

  it("a target diskFormat (raw for Ceph) overrides the image format; the source keeps its own", () => {
    const v = plan(ubuntu(["1"]), { diskFormat: "raw" })[0]!.versions[0]!;
    expect(v.diskFormat).toBe("raw");
    expect(v.source.format).toBe("qcow2");
  });

  it("a bad rotation option names it", () => {
    expect(() => plan(ubuntu(["1"]), { rotation: { keep: -1 } })).toThrow(/rotation\.keep: must be a whole number ≥ 0, not -1/);
  });
});
