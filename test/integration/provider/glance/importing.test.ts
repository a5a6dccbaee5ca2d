// Import methods, stuck imports and mirrors against the real Keystone + Glance and the disk image
// server. Clouds configured without web-download are second glance-api processes over the test
// bed's database with other enabled_import_methods; a stuck import is a real one: Glance's
// web-download reads from a fault proxy that accepts the request and never answers.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { isImageyardError } from "../../../../provider/http/errors";
import { getImportMethods, listImages, type GlanceClient } from "../../../../provider/glance/images";
import { publishImage, type PublishSpec } from "../../../../provider/glance/publish";
import { startFaultProxy, type FaultProxy } from "../../../testbed/faultproxy";
import { startExtraGlanceApi, type ExtraGlanceApi, type GlanceTestbed } from "../../../testbed/glance";
import { freePort } from "../../../testbed/processes";
import { bed, disks, glanceAs, imageUrl, plainSpec, sweep, uniqueName } from "./helpers";

const PREFIX = "iy-test-imp";
let tb: GlanceTestbed;
let demo: GlanceClient;
const extras: ExtraGlanceApi[] = [];
let proxy: FaultProxy | undefined;

beforeAll(async () => {
  tb = await bed();
  demo = await glanceAs(tb, "demo");
}, 300_000);

afterAll(async () => {
  await proxy?.close();
  for (const e of extras) await e.kill();
  if (demo) await sweep(demo, PREFIX);
}, 120_000);

function spec(label: string, over: Partial<PublishSpec> = {}): PublishSpec {
  const raw = disks().files["disk.raw"]!;
  return plainSpec(uniqueName(`imp-${label}`), { url: imageUrl("disk.raw"), checksum: `sha512:${raw.sha512}` }, over);
}

/** A Glance of the test bed's database and store, enabling only these import methods. */
async function cloudWith(importMethods: string[]): Promise<GlanceClient> {
  const extra = await startExtraGlanceApi(tb, { importMethods });
  extras.push(extra);
  return { session: demo.session, endpoint: extra.url };
}

async function downloads(path: string): Promise<number> {
  const res = await fetch(`${disks().url}/count/${path}`);
  return ((await res.json()) as { count: number }).count;
}

async function countByName(name: string): Promise<number> {
  return (await listImages(demo, { name, visibility: "all" })).length;
}

// The first test to ask for a cloud starts its glance-api (7 s quiet, over 60 s once under full-suite load).
describe("import methods the cloud does not enable", { timeout: 180_000 }, () => {
  it("the test bed's Glance lists glance-direct and web-download in /v2/info/import", async () => {
    expect((await getImportMethods(demo)).sort()).toEqual(["glance-direct", "web-download"]);
  });

  it("web-download on a cloud with only glance-direct falls back to glance-direct (stage + import), says so, and verifies sha512", async () => {
    const glance = await cloudWith(["glance-direct"]);
    expect(await getImportMethods(glance)).toEqual(["glance-direct"]);
    const lines: string[] = [];
    const r = await publishImage(spec("direct", { importMethod: "web-download" }), { glance, log: (l) => lines.push(l), pollMs: 200 });
    expect(r.method).toBe("glance-direct");
    expect(r.verified).toBe("sha512");
    expect(r.uploadedBytes).toBe(disks().files["disk.raw"]!.size);
    expect(r.image.os_hash_value).toBe(disks().files["disk.raw"]!.sha512);
    expect(lines.join("\n")).toContain(
      "web-download is not enabled on this cloud (Glance's enabled_import_methods: glance-direct); using glance-direct (stage + import) instead",
    );
    expect(lines.join("\n")).toMatch(/staging \d+ bytes \(raw\) into image [0-9a-f-]+, then importing them \(glance-direct\)/);
  });

  it("web-download on a cloud with no import methods falls back to a plain upload and says so; a qcow2 is converted here", async () => {
    const glance = await cloudWith([]);
    expect(await getImportMethods(glance)).toEqual([]);
    const lines: string[] = [];
    const f = disks().files["disk.qcow2"]!;
    const r = await publishImage(
      spec("upload", { importMethod: "web-download", source: { url: imageUrl("disk.qcow2"), checksum: `sha256:${f.sha256}` } }),
      { glance, log: (l) => lines.push(l), pollMs: 200 },
    );
    expect(r.method).toBe("upload");
    expect(r.verified).toBe("sha512");
    expect(r.image.disk_format).toBe("raw");
    expect(r.image.os_hash_value).toBe(disks().files["disk.raw"]!.sha512);
    expect(lines.join("\n")).toContain(
      "web-download is not enabled on this cloud (Glance's enabled_import_methods: none); using a plain upload (PUT /file) instead",
    );
  });
});

describe("a stuck import", () => {
  it("is deleted and started again: the first web-download hangs on a source that never answers, the second succeeds", async () => {
    proxy ??= await startFaultProxy({ port: Number(new URL(disks().url).port) });
    proxy.setRules([{ method: "GET", path: /^\/images\/disk\.raw$/, times: 1, fault: { kind: "stall" } }]);
    const s = spec("stuck1", {
      importMethod: "web-download",
      source: { url: `http://${proxy.host}/images/disk.raw`, checksum: `sha512:${disks().files["disk.raw"]!.sha512}` },
      importTimeoutMs: 4000,
      importRetries: 1,
    });
    const lines: string[] = [];
    const r = await publishImage(s, { glance: demo, log: (l) => lines.push(l), pollMs: 200 });
    expect(r.importRetries).toBe(1);
    expect(r.verified).toBe("sha512");
    expect(proxy.hits(0)).toBe(1);
    expect(lines.join("\n")).toMatch(/import stuck: image [0-9a-f-]+ was not active \d+ s after its import started \(attempt 1 of 2\)/);
    expect(await countByName(s.name)).toBe(1);
  }, 120_000);

  it("fails with GLANCE_TIMEOUT after importRetries more attempts, every one stuck, and leaves no image", async () => {
    proxy ??= await startFaultProxy({ port: Number(new URL(disks().url).port) });
    proxy.setRules([{ method: "GET", path: /^\/images\/disk\.raw$/, fault: { kind: "stall" } }]);
    const s = spec("stuck2", {
      importMethod: "web-download",
      source: { url: `http://${proxy.host}/images/disk.raw`, checksum: `sha512:${disks().files["disk.raw"]!.sha512}` },
      importTimeoutMs: 3000,
      importRetries: 1,
    });
    const err = await publishImage(s, { glance: demo, pollMs: 200 }).catch((e: unknown) => e);
    expect(isImageyardError(err, "GLANCE_TIMEOUT")).toBe(true);
    expect((err as Error).message).toContain("the import was stuck on each of 2 attempts (importRetries 1)");
    expect(proxy.hits(0)).toBe(2);
    expect(await countByName(s.name)).toBe(0);
  }, 120_000);
});

describe("mirror first, url when the mirror fails", () => {
  const qcow2 = () => disks().files["disk.qcow2"]!;
  const viaMirror = (label: string, mirrorUrl: string, over: Partial<PublishSpec> = {}) =>
    spec(label, { diskFormat: "qcow2", source: { url: imageUrl("disk.qcow2"), mirrorUrl, checksum: `sha256:${qcow2().sha256}` }, ...over });

  it("a working mirror is used and url is never downloaded", async () => {
    const before = await downloads("images/disk.qcow2");
    const lines: string[] = [];
    const mirror = `${disks().url}/chunked/disk.qcow2`;
    const r = await publishImage(viaMirror("mirror-ok", mirror), { glance: demo, log: (l) => lines.push(l) });
    expect(r.sourceUrl).toBe(mirror);
    expect(r.image.os_hash_value).toBe(qcow2().sha512);
    expect(await downloads("images/disk.qcow2")).toBe(before);
    expect(lines.join("\n")).toContain(`downloading from the mirror ${mirror}`);
    expect(lines.join("\n")).toContain(`from the mirror ${mirror} to image`);
  });

  it.each([
    ["answers 404", () => `${disks().url}/images/no-such-mirror.qcow2`, /404/],
    ["is unreachable", async () => `http://127.0.0.1:${await freePort()}/disk.qcow2`, /ECONNREFUSED|refused|reach/i],
    ["serves other bytes (checksum mismatch)", () => imageUrl("disk.vmdk"), /expected sha256:/],
  ])("a mirror that %s falls back to url, says why, and publishes url's verified bytes", async (_label, mirrorOf, why) => {
    const mirror = await mirrorOf();
    const lines: string[] = [];
    const r = await publishImage(viaMirror("mirror-bad", mirror), { glance: demo, log: (l) => lines.push(l) });
    expect(r.sourceUrl).toBe(imageUrl("disk.qcow2"));
    expect(r.verified).toBe("sha512");
    expect(r.image.os_hash_value).toBe(qcow2().sha512);
    const fallback = lines.find((l) => l.includes(`the mirror ${mirror} failed`));
    expect(fallback, lines.join("\n")).toBeDefined();
    expect(fallback).toMatch(why);
    expect(fallback).toContain(`falling back to ${imageUrl("disk.qcow2")}`);
  });

  it("a qcow2 → raw upload from a bad mirror falls back too (the mirror's bytes are verified before any upload)", async () => {
    const lines: string[] = [];
    const r = await publishImage(viaMirror("mirror-raw", imageUrl("disk.vmdk"), { diskFormat: "raw" }), {
      glance: demo,
      log: (l) => lines.push(l),
    });
    expect(r.image.os_hash_value).toBe(disks().files["disk.raw"]!.sha512);
    expect(lines.some((l) => l.includes("failed") && l.includes("falling back"))).toBe(true);
  });

  it("web-download: Glance is pointed at the mirror first; a 404 mirror falls back to url", async () => {
    const raw = disks().files["disk.raw"]!;
    const mirror = `${disks().url}/images/no-such-mirror.raw`;
    const lines: string[] = [];
    const r = await publishImage(
      spec("mirror-web", {
        importMethod: "web-download",
        source: { url: imageUrl("disk.raw"), mirrorUrl: mirror, checksum: `sha512:${raw.sha512}` },
      }),
      { glance: demo, log: (l) => lines.push(l), pollMs: 200 },
    );
    expect(r.method).toBe("web-download");
    expect(r.sourceUrl).toBe(imageUrl("disk.raw"));
    expect(r.verified).toBe("sha512");
    expect(lines.join("\n")).toContain(`Glance imports ${mirror} (the mirror)`);
    expect(lines.join("\n")).toContain(`the mirror ${mirror} failed`);
  }, 120_000);
});
