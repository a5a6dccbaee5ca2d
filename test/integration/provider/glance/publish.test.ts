// The publish pipeline and the Glance v2 client against the real Keystone + Glance, with images
// from the disk image test bed: upload with local verification and conversion, web-download with
// Glance's conversion, failures that leave nothing behind, in-place updates, actions, protection,
// community visibility across projects, and adoption after an interrupted run.
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { join } from "node:path";
import { Readable } from "node:stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { isImageyardError } from "../../../../provider/http/errors";
import {
  createImage,
  findImage,
  getImage,
  importImage,
  listImages,
  stageImageData,
  uploadImageData,
  type GlanceClient,
} from "../../../../provider/glance/images";
import { publishImage, requestKeyOf, waitActive, REQUEST_KEY_PROPERTY, type PublishSpec } from "../../../../provider/glance/publish";
import { removeImage, updateImage } from "../../../../provider/glance/update";
import type { PreparedImage } from "../../../../provider/disk/prepare";
import type { GlanceTestbed } from "../../../testbed/glance";
import { bed, disks, glanceAs, imageUrl, sweep, uniqueName } from "./helpers";

let tb: GlanceTestbed;
let demo: GlanceClient;
let other: GlanceClient;
const PREFIX = "iy-test-pub";

beforeAll(async () => {
  tb = await bed();
  demo = await glanceAs(tb, "demo");
  other = await glanceAs(tb, "other");
}, 300_000);

afterAll(async () => {
  if (demo) await sweep(demo, PREFIX);
}, 120_000);

function spec(label: string, over: Partial<PublishSpec> = {}): PublishSpec {
  const name = uniqueName(`pub-${label}`);
  return {
    name,
    source: { url: imageUrl("disk.qcow2"), checksum: `sha256:${disks().files["disk.qcow2"]!.sha256}` },
    diskFormat: "qcow2",
    containerFormat: "bare",
    importMethod: "upload",
    visibility: "community",
    minDisk: 1,
    minRam: 64,
    properties: { os_distro: "cirros", image_description: name },
    tags: ["imageyard", "test"],
    protected: false,
    hidden: false,
    active: true,
    ...over,
  };
}

async function countByName(g: GlanceClient, name: string): Promise<number> {
  return (await listImages(g, { name, visibility: "all" })).length;
}

async function downloads(name: string): Promise<number> {
  const res = await fetch(`${disks().url}/count/images/${name}`);
  return ((await res.json()) as { count: number }).count;
}

describe("publishImage: upload", () => {
  it("uploads a qcow2 as qcow2: active, community, Glance's sha512 and size equal the file's, properties and tags set", async () => {
    const s = spec("qcow2");
    const r = await publishImage(s, { glance: demo });
    const f = disks().files["disk.qcow2"]!;
    expect(r.image.status).toBe("active");
    expect(r.verified).toBe("sha512");
    expect(r.adopted).toBe(false);
    expect(r.image.os_hash_value).toBe(f.sha512);
    expect(r.image.checksum).toBe(f.md5);
    expect(r.image.size).toBe(f.size);
    expect(r.image.visibility).toBe("community");
    expect(r.image.owner).toBe(tb.accounts.demo.projectId);
    expect(r.image.os_distro).toBe("cirros");
    expect(r.image[REQUEST_KEY_PROPERTY]).toBe(requestKeyOf(s));
    expect([...r.image.tags].sort()).toEqual(["imageyard", "test"]);
  });

  it("converts qcow2 to raw locally: Glance's hashes are those of the original raw disk", async () => {
    const r = await publishImage(spec("raw", { diskFormat: "raw" }), { glance: demo });
    const raw = disks().files["disk.raw"]!;
    expect(r.image.disk_format).toBe("raw");
    expect(r.image.os_hash_value).toBe(raw.sha512);
    expect(r.image.size).toBe(raw.size);
    expect(r.uploadedBytes).toBe(raw.size);
  });

  it("a wrong checksum fails before anything is created: CHECKSUM_MISMATCH and no image of that name", async () => {
    const bad = disks().files["disk.qcow2"]!.sha256.replace(/^./, (c) => (c === "0" ? "1" : "0"));
    const s = spec("badsum", { source: { url: imageUrl("disk.qcow2"), checksum: `sha256:${bad}` } });
    const err = await publishImage(s, { glance: demo }).catch((e: unknown) => e);
    expect(isImageyardError(err, "CHECKSUM_MISMATCH")).toBe(true);
    expect(await countByName(demo, s.name)).toBe(0);
  });

  it("a wrong checksum on a qcow2 → raw upload (streamed while downloading) fails CHECKSUM_MISMATCH and the image is deleted", async () => {
    const bad = disks().files["disk.qcow2"]!.sha256.replace(/^./, (c) => (c === "0" ? "1" : "0"));
    const s = spec("badsum-raw", { diskFormat: "raw", source: { url: imageUrl("disk.qcow2"), checksum: `sha256:${bad}` } });
    const err = await publishImage(s, { glance: demo }).catch((e: unknown) => e);
    expect(isImageyardError(err, "CHECKSUM_MISMATCH")).toBe(true);
    expect((err as { imageKept?: boolean }).imageKept ?? false).toBe(false);
    expect(await countByName(demo, s.name)).toBe(0);
  });

  it("an upload over Glance's image_size_cap fails with GLANCE_TOO_LARGE and the created image is deleted", async () => {
    // A streamed all-zero disk one MiB over the cap (never held in memory), through the same pipeline.
    const size = tb.imageSizeCap + 1024 * 1024;
    const s = spec("cap", { diskFormat: "raw" });
    const zeros = (): Readable =>
      Readable.from(
        (function* () {
          const mb = Buffer.alloc(1024 * 1024);
          for (let i = 0; i < size / mb.length; i++) yield mb;
        })(),
      );
    const prepare = async (): Promise<PreparedImage> => {
      const h = createHash("sha512");
      const m = createHash("md5");
      const mb = Buffer.alloc(1024 * 1024);
      for (let i = 0; i < size / mb.length; i++) {
        h.update(mb);
        m.update(mb);
      }
      const d = { size, sha512: h.digest("hex"), md5: m.digest("hex") };
      return {
        diskFormat: "raw",
        sourceFormat: "raw",
        compression: undefined,
        size,
        virtualSize: size,
        converted: false,
        mode: "file",
        sourceChecksum: { algo: "sha512", value: d.sha512, verified: true },
        sha512: d.sha512,
        md5: d.md5,
        sha256: undefined,
        digests: async () => d,
        open: zeros,
        scratch: { dir: "", peakBytes: 0 },
        cleanup: async () => {},
      };
    };
    const err = await publishImage(s, { glance: demo, prepare }).catch((e: unknown) => e);
    expect(isImageyardError(err, "GLANCE_TOO_LARGE")).toBe(true);
    expect((err as Error).message).toContain("413");
    expect((err as { imageKept?: boolean }).imageKept).toBe(false);
    expect(await countByName(demo, s.name)).toBe(0);
  });
});

describe("publishImage: web-download", () => {
  it("Glance fetches a raw image itself; its sha512 matches the given sha512 checksum", async () => {
    const raw = disks().files["disk.raw"]!;
    const r = await publishImage(
      spec("webraw", {
        diskFormat: "raw",
        importMethod: "web-download",
        source: { url: imageUrl("disk.raw"), checksum: `sha512:${raw.sha512}` },
      }),
      { glance: demo, pollMs: 200 },
    );
    expect(r.image.status).toBe("active");
    expect(r.verified).toBe("sha512");
    expect(r.uploadedBytes).toBe(0);
    expect(r.image.os_hash_value).toBe(raw.sha512);
  });

  it("Glance converts a qcow2 to raw during web-download import: disk_format raw, data equal to the original raw disk", async () => {
    const r = await publishImage(
      spec("webconv", { diskFormat: "raw", importMethod: "web-download", source: { url: imageUrl("disk.qcow2"), format: "qcow2" } }),
      { glance: demo, pollMs: 200 },
    );
    expect(r.image.disk_format).toBe("raw");
    expect(r.image.os_hash_value).toBe(disks().files["disk.raw"]!.sha512);
  });

  it("a web-download of a 404 URL fails with GLANCE_IMPORT_FAILED carrying the reason from /tasks, and leaves no image", async () => {
    const s = spec("web404", { importMethod: "web-download", source: { url: `${disks().url}/images/no-such-image.qcow2` } });
    const err = await publishImage(s, { glance: demo, pollMs: 200 }).catch((e: unknown) => e);
    expect(isImageyardError(err, "GLANCE_IMPORT_FAILED")).toBe(true);
    expect((err as Error).message).toMatch(/task [0-9a-f-]+ failure/);
    // Glance's own task text is often just "Internal Error": the URL probe adds what it answers.
    expect((err as Error).message).toContain("the URL answers 404 Not Found from here");
    expect(await countByName(demo, s.name)).toBe(0);
  });
});

describe("publishImage: deadlines", () => {
  it("an import still running at the deadline fails with GLANCE_TIMEOUT naming the status, and the image is deleted", async () => {
    // The slow route trickles 64 KiB every 50 ms: Glance is still importing when the deadline hits.
    const s = spec("deadline", { importMethod: "web-download", source: { url: `${disks().url}/slow/disk.qcow2` }, timeoutMs: 4000 });
    const err = await publishImage(s, { glance: demo, pollMs: 200 }).catch((e: unknown) => e);
    expect(isImageyardError(err, "GLANCE_TIMEOUT")).toBe(true);
    expect((err as Error).message).toMatch(/is still (importing|queued) at the deadline/);
    expect((err as { imageKept?: boolean }).imageKept).toBe(false);
    expect(await countByName(demo, s.name)).toBe(0);
  });
});

describe("Glance v2 client pieces", () => {
  it("glance-direct: stage a qcow2, import it, and Glance's image_conversion plugin stores it as raw (sha512 of the raw disk)", async () => {
    const name = uniqueName("pub-direct");
    const img = await createImage(demo, { name, disk_format: "qcow2", container_format: "bare", visibility: "private", tags: ["direct"] });
    const f = disks().files["disk.qcow2"]!;
    await stageImageData(demo, img.id, createReadStream(join(disks().dir, "disk.qcow2")), f.size);
    await importImage(demo, img.id, { name: "glance-direct" });
    const active = await waitActive(demo, img.id, Date.now() + 120_000, "glance-direct", { pollMs: 200 });
    expect(active.disk_format).toBe("raw");
    expect(active.os_hash_value).toBe(disks().files["disk.raw"]!.sha512);
    expect((await listImages(demo, { tags: ["direct"], name })).map((i) => i.id)).toEqual([img.id]);
    await removeImage(demo, img.id);
  });
});

describe("updates, actions, protection and visibility", () => {
  it("updateImage patches name, tags, properties and min_ram in place, removing a property it set before", async () => {
    const s = spec("patch");
    const { image } = await publishImage(s, { glance: demo });
    const newName = `${s.name}-renamed`;
    const want = { ...s, name: newName, tags: ["renamed"], minRam: 128, properties: { os_distro: "debian", os_version: "12" } };
    const after = await updateImage(demo, image.id, { properties: s.properties }, want);
    expect(after.id).toBe(image.id);
    expect(after.name).toBe(newName);
    expect(after.tags).toEqual(["renamed"]);
    expect(after.min_ram).toBe(128);
    expect(after.os_distro).toBe("debian");
    expect(after.os_version).toBe("12");
    expect(after.image_description).toBeUndefined();
    expect(after[REQUEST_KEY_PROPERTY]).toBe(image[REQUEST_KEY_PROPERTY]);
  });

  it("active false deactivates (status deactivated) and active true reactivates the same image", async () => {
    const s = spec("actions");
    const { image } = await publishImage(s, { glance: demo });
    const off = await updateImage(demo, image.id, s, { ...s, active: false });
    expect(off.status).toBe("deactivated");
    const on = await updateImage(demo, image.id, s, { ...s, active: true });
    expect(on.status).toBe("active");
  });

  it("deleting a protected image fails with GLANCE_PROTECTED naming the flag; after unprotecting, delete succeeds and a second delete is a no-op", async () => {
    const s = spec("protected", { protected: true });
    const { image } = await publishImage(s, { glance: demo });
    expect(image.protected).toBe(true);
    const err = await removeImage(demo, image.id).catch((e: unknown) => e);
    expect(isImageyardError(err, "GLANCE_PROTECTED")).toBe(true);
    expect((err as Error).message).toContain("protected: false");
    await updateImage(demo, image.id, s, { ...s, protected: false });
    expect(await removeImage(demo, image.id)).toBe(true);
    expect(await removeImage(demo, image.id)).toBe(false);
    expect(await findImage(demo, image.id)).toBeUndefined();
  });

  it("a community image is visible to the other project by ID and in ?visibility=community, but not in its default list", async () => {
    const s = spec("community");
    const { image } = await publishImage(s, { glance: demo });
    const seen = await getImage(other, image.id);
    expect(seen.visibility).toBe("community");
    expect(seen.owner).toBe(tb.accounts.demo.projectId);
    expect((await listImages(other, { name: s.name })).map((i) => i.id)).not.toContain(image.id);
    expect((await listImages(other, { name: s.name, visibility: "community" })).map((i) => i.id)).toContain(image.id);
  });

  it("a private image is not found by the other project (GLANCE_NOT_FOUND on get)", async () => {
    const { image } = await publishImage(spec("private", { visibility: "private" }), { glance: demo });
    expect(await findImage(other, image.id)).toBeUndefined();
    const err = await getImage(other, image.id).catch((e: unknown) => e);
    expect(isImageyardError(err, "GLANCE_NOT_FOUND")).toBe(true);
  });
});

describe("idempotent create after an interrupted run", () => {
  it("a queued image left by a crash (created, upload cut off) is reused: one image, uploaded once", async () => {
    const s = spec("crash-queued");
    const key = requestKeyOf(s);
    const crashed = await createImage(demo, {
      name: s.name,
      disk_format: "qcow2",
      container_format: "bare",
      visibility: "community",
      properties: { [REQUEST_KEY_PROPERTY]: key },
    });
    // An upload that dies half way: Glance puts the image back to queued.
    const half = Readable.from(
      (async function* () {
        yield Buffer.alloc(1024 * 1024, 1);
        throw new Error("simulated crash mid-upload");
      })(),
    );
    await uploadImageData(demo, crashed.id, half, 8 * 1024 * 1024).catch(() => undefined);
    const r = await publishImage(s, { glance: demo, pollMs: 200 });
    expect(r.image.id).toBe(crashed.id);
    expect(r.image.status).toBe("active");
    expect(r.image.os_hash_value).toBe(disks().files["disk.qcow2"]!.sha512);
    expect(await countByName(demo, s.name)).toBe(1);
  });

  it("re-running a finished publish adopts the active image without downloading or uploading again", async () => {
    const s = spec("rerun");
    const first = await publishImage(s, { glance: demo });
    const before = await downloads("disk.qcow2");
    const again = await publishImage(s, { glance: demo });
    expect(again.adopted).toBe(true);
    expect(again.image.id).toBe(first.image.id);
    expect(again.uploadedBytes).toBe(0);
    expect(await downloads("disk.qcow2")).toBe(before);
    expect(await countByName(demo, s.name)).toBe(1);
  });
});
