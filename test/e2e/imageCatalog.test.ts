// ImageCatalog and CommunityImages through the real Pulumi engine: the examples/openstack-image-catalog
// program with a catalog file in openstack-image-manager's format, the real Keystone + Glance of
// the test bed and images from the disk image server. One stack walks the rotation in order:
// two versions → a third (rename after the new image is active) → a fourth (the oldest demoted) and
// a deactivation; then a malformed catalog and a changed source under an immutable key fail the
// preview; destroy leaves nothing behind.
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { EngineEvent } from "@pulumi/pulumi/automation";
import { stringify } from "yaml";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { findImage, listImages, type GlanceClient } from "../../provider/glance/images";
import type { GlanceTestbed } from "../testbed/glance";
import { bed, disks, glanceAs, imageUrl, sweep } from "../integration/provider/glance/helpers";
import { exampleStack, type ProjectStack } from "./harness";

const STEP_TIMEOUT = 300_000;
const TYPE = "pulumi-nodejs:dynamic/imageyard:CommunityImage";
const run = Math.random().toString(16).slice(2, 8);
const A = `iy-test-cat-${run} Ubuntu`;
const B = `iy-test-cat-${run} Rancher`;
const C = `iy-test-cat-${run} Disabled`;
const KEY_NAME = `iy-test-cat-${run}-community`;

let tb: GlanceTestbed;
let admin: GlanceClient;
let main: ProjectStack;
let dir: string;
const catalogFile = () => join(dir, "catalog.yml");

/** Version 3 names a mirror that answers 404, version 4 one that works: both fall back or not, visibly. */
const MIRRORS: Record<string, () => string> = {
  "3": () => `${disks().url}/images/iy-e2e-gone-mirror.qcow2`,
  "4": () => `${disks().url}/chunked/disk.qcow2`,
};

function version(v: string, file = "disk.qcow2") {
  return {
    version: v,
    url: imageUrl(file),
    ...(MIRRORS[v] && file === "disk.qcow2" ? { mirror_url: MIRRORS[v]() } : {}),
    checksum: `sha256:${disks().files[file]!.sha256}`,
    build_date: `2024-05-${v.padStart(2, "0")}`,
  };
}

function writeCatalog(o: { versions: string[]; bStatus?: "active" | "deactivated"; broken?: boolean }): void {
  const images = [
    {
      name: A,
      format: "qcow2",
      login: "ubuntu",
      min_disk: 1,
      visibility: "public",
      multi: true,
      meta: { os_distro: "ubuntu", replace_frequency: "weekly", uuid_validity: "last-3", provided_until: "none" },
      tags: ["iy-e2e"],
      versions: o.versions.map((v) => version(v)),
    },
    {
      name: B,
      format: "qcow2",
      visibility: "public",
      multi: false,
      status: o.bStatus ?? "active",
      versions: [version("1", "disk.qcow2.gz")],
      ...(o.broken ? { min_ram: "lots" } : {}),
    },
    { name: C, enable: false, format: "qcow2", visibility: "public", versions: [version("1")] },
  ];
  writeFileSync(catalogFile(), stringify({ images }));
}

async function setCommunity(url: string, file: string): Promise<void> {
  const spec = { k1: { name: KEY_NAME, sourceUrl: url, sourceDiskFormat: "qcow2", checksum: `sha256:${disks().files[file]!.sha256}` } };
  await main.stack.setConfig("communityImages", { value: JSON.stringify(spec) });
}

async function outputs() {
  const o = await main.stack.outputs();
  return {
    imageIds: o.imageIds!.value as Record<string, string>,
    versionIds: o.versionIds!.value as Record<string, Record<string, string>>,
    communityImageIds: o.communityImageIds?.value as Record<string, string>,
  };
}

async function glanceView(ids: Record<string, string>) {
  const out: Record<string, { name: string | null; visibility: string; status: string }> = {};
  for (const [v, id] of Object.entries(ids)) {
    const img = await findImage(admin, id);
    out[v] = { name: img?.name ?? null, visibility: img?.visibility ?? "gone", status: img?.status ?? "gone" };
  }
  return out;
}

/** Engine events of one operation, as [kind, op, resource name]. */
function recorder() {
  const seen: [string, string, string][] = [];
  const onEvent = (e: EngineEvent) => {
    const pre = e.resourcePreEvent?.metadata;
    const done = e.resOutputsEvent?.metadata;
    const m = pre ?? done;
    if (m && m.type === TYPE && m.op !== "same") seen.push([pre ? "start" : "done", m.op, m.urn.split("::").pop() as string]);
  };
  return { seen, onEvent };
}

async function failedPreview(label: string): Promise<string> {
  try {
    await main.stack.preview({ onOutput: main.onOutput(label) });
  } catch (e) {
    return `${(e as Error).message}\n${main.log.all()}`;
  }
  throw new Error(`${label}: preview succeeded; it should have failed`);
}

beforeAll(async () => {
  tb = await bed();
  admin = await glanceAs(tb, "admin");
  dir = mkdtempSync(join(tmpdir(), "iy-e2e-catalog-"));
  writeCatalog({ versions: ["1", "2"] });
  const a = tb.accounts.admin;
  main = await exampleStack("openstack-image-catalog", "e2e", {
    authUrl: { value: tb.authUrl },
    username: { value: a.username },
    password: { value: a.password, secret: true },
    projectName: { value: a.projectName },
    region: { value: tb.region },
    catalog: { value: catalogFile() },
  });
  await setCommunity(imageUrl("disk.qcow2"), "disk.qcow2");
}, STEP_TIMEOUT);

afterAll(async () => {
  try {
    if (main) await main.stack.destroy({ onOutput: main.onOutput("destroy-after") });
  } finally {
    main?.cleanup();
    if (admin) await sweep(admin, `iy-test-cat-${run}`);
    if (dir) rmSync(dir, { recursive: true, force: true });
  }
}, STEP_TIMEOUT);

describe.sequential("ImageCatalog and CommunityImages with the real pulumi engine", () => {
  it(
    'up publishes a multi: true image of two versions ("Name", "Name (1)"), a multi: false one ("Name 1"), skips enable: false, and exports the maps',
    async () => {
      const res = await main.stack.up({ onOutput: main.onOutput("up-1") });
      expect(res.summary.result).toBe("succeeded");
      const o = await outputs();
      expect(Object.keys(o.imageIds).sort()).toEqual([B, A].sort());
      expect(await glanceView(o.versionIds[A]!)).toEqual({
        "1": { name: `${A} (1)`, visibility: "public", status: "active" },
        "2": { name: A, visibility: "public", status: "active" },
      });
      expect(await glanceView(o.versionIds[B]!)).toEqual({ "1": { name: `${B} 1`, visibility: "public", status: "active" } });
      expect(o.imageIds[A]).toBe(o.versionIds[A]!["2"]);
      expect(await listImages(admin, { name: `${C} 1`, visibility: "all" })).toEqual([]);
      const img = await findImage(admin, o.versionIds[A]!["2"]!);
      expect(img).toMatchObject({
        image_source: imageUrl("disk.qcow2"),
        image_build_date: "2024-05-02",
        image_original_user: "ubuntu",
        image_description: A,
        replace_frequency: "weekly",
        internal_version: "2",
      });
      // CommunityImages' key → ID map is a stack output.
      expect(Object.keys(o.communityImageIds)).toEqual(["k1"]);
      expect(await findImage(admin, o.communityImageIds.k1!)).toMatchObject({ name: KEY_NAME, visibility: "community", status: "active" });
    },
    STEP_TIMEOUT,
  );

  it(
    "a second preview on the unchanged stack shows no changes",
    async () => {
      const res = await main.stack.preview({ onOutput: main.onOutput("preview-same") });
      // stack, two components, three catalog versions, one community image
      expect(res.changeSummary).toEqual({ same: 7 });
    },
    STEP_TIMEOUT,
  );

  it(
    "the preview of version 3 shows its work (the server's download size, no conversion, scratch) and that its 404 mirror would fall back to url",
    async () => {
      writeCatalog({ versions: ["1", "2", "3"] });
      const diags: string[] = [];
      const res = await main.stack.preview({
        onOutput: main.onOutput("preview-3"),
        onEvent: (e) => e.diagnosticEvent && diags.push(e.diagnosticEvent.message),
      });
      expect(res.changeSummary).toMatchObject({ create: 1, update: 1 });
      const text = diags.join("");
      const size = `${(disks().files["disk.qcow2"]!.size / 1024 ** 2).toFixed(1)} MiB`;
      expect(text).toContain(
        `${A}: new image from ${imageUrl("disk.qcow2")}: download ${size}; no conversion (qcow2 uploaded as is) (virtual size 24.0 MiB); scratch needed ≤ ${size}`,
      );
      expect(text).toMatch(/the mirror .*iy-e2e-gone-mirror\.qcow2 failed during check \(.*404.*\); the download would fall back to/);
      // Unchanged versions are not probed: one work line only.
      expect(text.match(/: new image from /g)).toHaveLength(1);
    },
    STEP_TIMEOUT,
  );

  it(
    'adding version 3: it is created (and active as "Name") before version 2 is renamed "Name (2)"; version 1 untouched, nothing deleted; its 404 mirror fell back to url',
    async () => {
      const before = (await outputs()).versionIds[A]!;
      writeCatalog({ versions: ["1", "2", "3"] });
      const rec = recorder();
      const diags: string[] = [];
      const res = await main.stack.up({
        onOutput: main.onOutput("up-3"),
        onEvent: (e) => {
          rec.onEvent(e);
          if (e.diagnosticEvent) diags.push(e.diagnosticEvent.message);
        },
      });
      expect(diags.join("")).toMatch(/the mirror .*iy-e2e-gone-mirror\.qcow2 failed \(.*404.*\); falling back to /);
      expect(diags.join("")).toMatch(
        new RegExp(`image [0-9a-f-]+ active \\(\\d+ bytes by upload from ${imageUrl("disk.qcow2").replace(/[.]/g, "\\.")}`),
      );
      expect(res.summary.resourceChanges).toMatchObject({ create: 1, update: 1 });
      expect(res.summary.resourceChanges?.delete).toBeUndefined();
      const created = rec.seen.findIndex(([k, op, n]) => k === "done" && op === "create" && n.endsWith("-3"));
      const renameStarts = rec.seen.findIndex(([k, op, n]) => k === "start" && op === "update" && n.endsWith("-2"));
      expect(created).toBeGreaterThanOrEqual(0);
      expect(renameStarts).toBeGreaterThan(created);
      const after = (await outputs()).versionIds[A]!;
      expect(after["1"]).toBe(before["1"]);
      expect(after["2"]).toBe(before["2"]);
      expect(await glanceView(after)).toEqual({
        "1": { name: `${A} (1)`, visibility: "public", status: "active" },
        "2": { name: `${A} (2)`, visibility: "public", status: "active" },
        "3": { name: A, visibility: "public", status: "active" },
      });
    },
    STEP_TIMEOUT,
  );

  it(
    "a fourth version demotes the oldest to community (keep 3), downloaded from its mirror; status: deactivated deactivates the multi: false image",
    async () => {
      writeCatalog({ versions: ["1", "2", "3", "4"], bStatus: "deactivated" });
      const diags: string[] = [];
      const res = await main.stack.up({
        onOutput: main.onOutput("up-4"),
        onEvent: (e) => e.diagnosticEvent && diags.push(e.diagnosticEvent.message),
      });
      // Version 4's mirror works: the bytes came from it.
      expect(diags.join("")).toContain(`bytes by upload from the mirror ${MIRRORS["4"]!()}`);
      expect(res.summary.resourceChanges).toMatchObject({ create: 1, update: 3 });
      const o = await outputs();
      expect(await glanceView(o.versionIds[A]!)).toEqual({
        "1": { name: `${A} (1)`, visibility: "community", status: "active" },
        "2": { name: `${A} (2)`, visibility: "public", status: "active" },
        "3": { name: `${A} (3)`, visibility: "public", status: "active" },
        "4": { name: A, visibility: "public", status: "active" },
      });
      expect((await glanceView(o.versionIds[B]!))["1"]!.status).toBe("deactivated");
    },
    STEP_TIMEOUT,
  );

  it(
    "a malformed catalog fails the preview naming the file, the image and the field",
    async () => {
      writeCatalog({ versions: ["1", "2", "3", "4"], bStatus: "deactivated", broken: true });
      const msg = await failedPreview("preview-broken");
      expect(msg).toContain(`${catalogFile()}: image "${B}": min_ram: must be a whole number ≥ 0, not "lots"`);
      writeCatalog({ versions: ["1", "2", "3", "4"], bStatus: "deactivated" });
    },
    STEP_TIMEOUT,
  );

  it(
    "a changed source under an existing CommunityImages key fails the preview, saying keys are immutable and how to add a new key",
    async () => {
      await setCommunity(imageUrl("disk.qcow2.gz"), "disk.qcow2.gz");
      const msg = await failedPreview("preview-key");
      expect(msg).toMatch(
        /key "k1" was published from .*disk\.qcow2 .*Keys are immutable.*Add the new image under a new key \(e\.g\. "k1_\d{8}"\).*allowSourceChange: true/s,
      );
      await setCommunity(imageUrl("disk.qcow2"), "disk.qcow2");
    },
    STEP_TIMEOUT,
  );

  it(
    "destroy deletes every image of the catalog and the map",
    async () => {
      const o = await outputs();
      const ids = [...Object.values(o.versionIds).flatMap((m) => Object.values(m)), ...Object.values(o.communityImageIds)];
      const res = await main.stack.destroy({ onOutput: main.onOutput("destroy") });
      expect(res.summary.result).toBe("succeeded");
      for (const id of ids) expect(await findImage(admin, id)).toBeUndefined();
    },
    STEP_TIMEOUT,
  );
});
