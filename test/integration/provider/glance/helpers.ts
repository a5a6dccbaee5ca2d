// Shared pieces of the Glance integration tests: sessions for the test bed's accounts, the disk
// image server, unique names, and a sweep that deletes what a test file created.
import { randomBytes } from "node:crypto";
import { glanceTestbed, type GlanceAccount, type GlanceTestbed } from "../../../testbed/glance";
import { loadDiskImageTestbed, type DiskImageTestbed } from "../../../testbed/diskimages";
import { glanceClient, listImages, patchImage, deleteImage, type GlanceClient } from "../../../../provider/glance/images";
import { KeystoneSession, type AuthOptions } from "../../../../provider/glance/keystone";
import type { PublishSpec } from "../../../../provider/glance/publish";

export async function bed(): Promise<GlanceTestbed> {
  return glanceTestbed();
}

export function disks(): DiskImageTestbed {
  return loadDiskImageTestbed();
}

export function imageUrl(name: string): string {
  return `${disks().url}/images/${name}`;
}

export function authFor(tb: GlanceTestbed, who: "demo" | "other" | "admin", extra: Partial<AuthOptions> = {}): AuthOptions {
  const a: GlanceAccount = tb.accounts[who];
  return {
    authUrl: tb.authUrl,
    username: a.username,
    password: a.password,
    userDomainName: a.userDomainName,
    projectName: a.projectName,
    projectDomainName: a.projectDomainName,
    region: tb.region,
    interface: "public",
    ...extra,
  };
}

export async function glanceAs(
  tb: GlanceTestbed,
  who: "demo" | "other" | "admin",
  extra: Partial<AuthOptions> = {},
): Promise<GlanceClient> {
  return glanceClient(new KeystoneSession(authFor(tb, who, extra)));
}

/** A name no other test (or earlier run) uses; the prefix lets sweep() find leftovers. */
export function uniqueName(label: string): string {
  return `iy-test-${label}-${randomBytes(4).toString("hex")}`;
}

/** Deletes every image of the demo project whose name starts with iy-test-<label>, protected or not. */
export async function sweep(glance: GlanceClient, prefix: string): Promise<void> {
  const all = await listImages(glance, { visibility: "all" });
  for (const img of all.filter((i) => (i.name ?? "").startsWith(prefix))) {
    if (img.protected) await patchImage(glance, img.id, [{ op: "replace", path: "/protected", value: false }]);
    await deleteImage(glance, img.id);
  }
}

/** A private raw image with no metadata, named `name`, from `source`: what a test changes it from. */
export function plainSpec(name: string, source: PublishSpec["source"], over: Partial<PublishSpec> = {}): PublishSpec {
  return {
    name,
    source,
    diskFormat: "raw",
    containerFormat: "bare",
    importMethod: "upload",
    visibility: "private",
    minDisk: 0,
    minRam: 0,
    properties: {},
    tags: [],
    protected: false,
    hidden: false,
    active: true,
    ...over,
  };
}
