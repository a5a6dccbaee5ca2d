// The CommunityImage provider's lifecycle (check → create → diff → update → read → delete) against
// the real Keystone + Glance, through the same functions the dynamic provider forwards to, with
// credentials given as inputs or found in a clouds.yaml, as a user would.
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { isImageyardError } from "../../../../provider/http/errors";
import { patchImage, type GlanceClient } from "../../../../provider/glance/images";
import {
  checkCommunityImage,
  createCommunityImage,
  deleteCommunityImage,
  diffCommunityImage,
  readCommunityImage,
  updateCommunityImage,
  type CommunityImageInputs,
} from "../../../../provider/resources/communityImage.lifecycle";
import type { GlanceTestbed } from "../../../testbed/glance";
import { bed, disks, glanceAs, imageUrl, sweep, uniqueName } from "../glance/helpers";

let tb: GlanceTestbed;
let demo: GlanceClient;
let configDir: string;
const logs: string[] = [];
const deps = { log: (l: string) => logs.push(l) };

beforeAll(async () => {
  tb = await bed();
  demo = await glanceAs(tb, "demo");
  configDir = mkdtempSync(join(tmpdir(), "iy-clouds-"));
  const ac = tb.applicationCredential;
  writeFileSync(
    join(configDir, "clouds.yaml"),
    `clouds:\n  testbed:\n    auth_type: v3applicationcredential\n    auth:\n      auth_url: ${tb.authUrl}\n      application_credential_id: ${ac.id}\n    region_name: ${tb.region}\n    interface: public\n`,
  );
  // The secret lives in secure.yaml, merged over clouds.yaml as openstacksdk does.
  writeFileSync(join(configDir, "secure.yaml"), `clouds:\n  testbed:\n    auth:\n      application_credential_secret: ${ac.secret}\n`);
}, 300_000);

afterAll(async () => {
  if (demo) await sweep(demo, "iy-test-res");
  if (configDir) rmSync(configDir, { recursive: true, force: true });
}, 120_000);

function credentials() {
  const a = tb.accounts.demo;
  return {
    authUrl: tb.authUrl,
    username: a.username,
    password: a.password,
    projectName: a.projectName,
    userDomainName: "Default",
    projectDomainName: "Default",
    region: tb.region,
  };
}

function inputs(over: Partial<CommunityImageInputs> = {}): CommunityImageInputs {
  return {
    name: uniqueName("res"),
    source: { url: imageUrl("disk.qcow2"), checksumUrl: `${disks().url}/images/SHA256SUMS` },
    diskFormat: "qcow2",
    properties: { os_distro: "cirros", hw_disk_bus: "scsi" },
    tags: ["imageyard"],
    minDisk: 1,
    login: "cirros",
    buildDate: "2024-07-17",
    credentials: credentials(),
    ...over,
  };
}

async function checked(i: CommunityImageInputs, olds: Partial<CommunityImageInputs> = {}): Promise<CommunityImageInputs> {
  const r = await checkCommunityImage(olds, i, deps);
  expect(r.failures).toEqual([]);
  return r.inputs;
}

describe("CommunityImage provider lifecycle on the real Glance", () => {
  it("check resolves checksumUrl to the SUMS entry for the file, so a changed SUMS file is visible in preview", async () => {
    const i = await checked(inputs());
    expect(i.resolvedChecksum).toBe(`sha256:${disks().files["disk.qcow2"]!.sha256}`);
  });

  it("check rejects unreachable credentials config and bad values with messages naming the property", async () => {
    const r = await checkCommunityImage(
      {},
      {
        ...inputs(),
        cloud: "no-such-cloud",
        credentials: undefined,
        visibility: "everyone" as never,
        source: { url: "ftp://x/y.img", checksum: "sha256:abc" },
      },
      deps,
    );
    const props = r.failures.map((f) => f.property);
    expect(props).toContain("visibility");
    expect(props).toContain("source");
    expect(r.failures.find((f) => f.property === "visibility")!.reason).toContain("community");
  });

  it("create publishes and verifies; an unchanged diff is empty; name/tags update in place; drift from an out-of-band edit shows after read and is undone by update; delete removes it", async () => {
    const i = await checked(inputs());
    const { id, outs } = await createCommunityImage(i, deps);
    expect(outs.imageId).toBe(id);
    expect(outs.status).toBe("active");
    expect(outs.osHashAlgo).toBe("sha512");
    expect(outs.osHashValue).toBe(disks().files["disk.qcow2"]!.sha512);
    expect(outs.visibility).toBe("community");
    expect(outs.owner).toBe(tb.accounts.demo.projectId);
    expect(outs.properties).toMatchObject({
      image_source: i.source.url,
      image_build_date: "2024-07-17",
      image_original_user: "cirros",
      image_description: i.name,
      os_distro: "cirros",
    });
    expect(JSON.stringify({ ...outs, credentials: undefined })).not.toContain(tb.accounts.demo.password);

    expect(diffCommunityImage(outs, await checked(inputs({ name: i.name }), i))).toEqual({ changes: false });

    const renamed = await checked({ ...i, name: `${i.name}-v2`, tags: ["imageyard", "renamed"] }, i);
    const d = diffCommunityImage(outs, renamed);
    expect(d.changes).toBe(true);
    expect(d.replaces).toBeUndefined();
    const updated = await updateCommunityImage(id, outs, renamed, deps);
    expect(updated.name).toBe(`${i.name}-v2`);
    expect(updated.tags).toEqual(["imageyard", "renamed"]);
    expect(updated.properties.image_description).toBe(`${i.name}-v2`);

    await patchImage(demo, id, [
      { op: "replace", path: "/min_ram", value: 4096 },
      { op: "replace", path: "/os_distro", value: "tampered" },
    ]);
    const read = await readCommunityImage(id, updated, deps);
    expect(read.props!.minRam).toBe(4096);
    expect(read.props!.properties.os_distro).toBe("tampered");
    expect(diffCommunityImage(read.props!, renamed).changes).toBe(true);
    const restored = await updateCommunityImage(id, read.props!, renamed, deps);
    expect(restored.minRam).toBe(0);
    expect(restored.properties.os_distro).toBe("cirros");
    expect(diffCommunityImage(restored, renamed)).toEqual({ changes: false });

    const other = await checked(
      { ...renamed, source: { url: imageUrl("disk.qcow2"), checksum: `sha256:${disks().files["disk.qcow2"]!.sha256}` } },
      renamed,
    );
    expect(diffCommunityImage(restored, other)).toEqual({
      changes: true,
      replaces: ["source", "resolvedChecksum"],
      deleteBeforeReplace: false,
    });

    await deleteCommunityImage(id, restored, deps);
    expect(await readCommunityImage(id, restored, deps)).toEqual({});
    await deleteCommunityImage(id, restored, deps);
  });

  it("active: false deactivates through update and read reports it; protected blocks delete with GLANCE_PROTECTED", async () => {
    const i = await checked(inputs({ protected: true }));
    const { id, outs } = await createCommunityImage(i, deps);
    expect(outs.protected).toBe(true);
    const off = { ...i, active: false };
    expect(diffCommunityImage(outs, off).changes).toBe(true);
    const deactivated = await updateCommunityImage(id, outs, off, deps);
    expect(deactivated.status).toBe("deactivated");
    expect((await readCommunityImage(id, deactivated, deps)).props!.active).toBe(false);
    const err = await deleteCommunityImage(id, deactivated, deps).catch((e: unknown) => e);
    expect(isImageyardError(err, "GLANCE_PROTECTED")).toBe(true);
    expect((err as Error).message).toMatch(/protected/);
    const unprotected = await updateCommunityImage(id, deactivated, { ...off, protected: false }, deps);
    await deleteCommunityImage(id, unprotected, deps);
  });

  it("a cloud from clouds.yaml + secure.yaml (application credential) publishes with web-download and Glance's conversion", async () => {
    const prev = { c: process.env.OS_CLIENT_CONFIG_FILE, s: process.env.OS_CLIENT_SECURE_FILE };
    process.env.OS_CLIENT_CONFIG_FILE = join(configDir, "clouds.yaml");
    process.env.OS_CLIENT_SECURE_FILE = join(configDir, "secure.yaml");
    try {
      const i = await checked(
        inputs({
          credentials: undefined,
          cloud: "testbed",
          importMethod: "web-download",
          diskFormat: "raw",
          source: { url: imageUrl("disk.qcow2"), format: "qcow2", checksum: "unverified" },
        }),
      );
      const { id, outs } = await createCommunityImage(i, deps);
      expect(outs.diskFormat).toBe("raw");
      expect(outs.osHashValue).toBe(disks().files["disk.raw"]!.sha512);
      expect(outs.owner).toBe(tb.applicationCredential.projectId);
      await deleteCommunityImage(id, outs, deps);
    } finally {
      for (const [k, v] of [
        ["OS_CLIENT_CONFIG_FILE", prev.c],
        ["OS_CLIENT_SECURE_FILE", prev.s],
      ] as const) {
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
      }
    }
  });

  it("hidden sets os_hidden; read without state (an import) describes the image from Glance using OS_* credentials", async () => {
    const i = await checked(inputs({ hidden: true, visibility: "private" }));
    const { id } = await createCommunityImage(i, deps);
    const a = tb.accounts.demo;
    const env = {
      OS_AUTH_URL: tb.authUrl,
      OS_USERNAME: a.username,
      OS_PASSWORD: a.password,
      OS_PROJECT_NAME: a.projectName,
      OS_USER_DOMAIN_NAME: "Default",
      OS_PROJECT_DOMAIN_NAME: "Default",
      OS_REGION_NAME: tb.region,
    };
    const saved = Object.fromEntries(Object.keys(env).map((k) => [k, process.env[k]]));
    Object.assign(process.env, env);
    try {
      const r = await readCommunityImage(id, undefined, deps);
      expect(r.id).toBe(id);
      expect(r.props).toMatchObject({
        name: i.name,
        hidden: true,
        visibility: "private",
        diskFormat: "qcow2",
        source: { url: i.source.url },
        osHashValue: disks().files["disk.qcow2"]!.sha512,
      });
    } finally {
      for (const [k, v] of Object.entries(saved)) {
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
      }
    }
    await deleteCommunityImage(
      id,
      { ...(await readCommunityImage(id, undefined, { ...deps, glance: demo })).props!, credentials: credentials() },
      deps,
    );
  });

  it("a create that fails after the image exists (web-download of a missing file) throws and leaves nothing in Glance", async () => {
    const i = await checked(
      inputs({ importMethod: "web-download", source: { url: `${disks().url}/images/missing.qcow2`, checksum: "unverified" } }),
    );
    const err = await createCommunityImage(i, deps).catch((e: unknown) => e);
    expect(isImageyardError(err, "GLANCE_IMPORT_FAILED")).toBe(true);
    expect((err as { id?: string }).id).toBeUndefined();
    const left = (await import("../../../../provider/glance/images")).listImages(demo, { name: i.name, visibility: "all" });
    expect(await left).toEqual([]);
  });
});
