// CommunityImage's check() — what a preview runs — against the real Keystone and the disk image
// server: faults an outside probe found only at `up` (or never) must now fail the preview.
import { beforeAll, describe, expect, it } from "vitest";
import { checkCommunityImage, type CommunityImageInputs } from "../../../../provider/resources/communityImage.lifecycle";
import type { GlanceTestbed } from "../../../testbed/glance";
import { bed, disks, imageUrl, uniqueName } from "../glance/helpers";

const UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9";
let tb: GlanceTestbed;

beforeAll(async () => {
  tb = await bed();
}, 300_000);

function credentials(password = tb.accounts.demo.password) {
  const a = tb.accounts.demo;
  return {
    authUrl: tb.authUrl,
    username: a.username,
    password,
    projectName: a.projectName,
    userDomainName: "Default",
    projectDomainName: "Default",
    region: tb.region,
  };
}

function inputs(over: Partial<CommunityImageInputs> = {}): CommunityImageInputs {
  return {
    name: uniqueName("check"),
    source: { url: imageUrl("disk.qcow2"), checksum: `sha256:${disks().files["disk.qcow2"]!.sha256}` },
    diskFormat: "qcow2",
    credentials: credentials(),
    ...over,
  };
}

async function check(i: CommunityImageInputs) {
  const logs: string[] = [];
  const r = await checkCommunityImage({}, i, { log: (l) => logs.push(l) });
  return { ...r, logs, reasons: Object.fromEntries(r.failures.map((f) => [f.property, f.reason])) };
}

describe("CommunityImage check (preview) on the real Keystone and disk image server", () => {
  it("good inputs pass with one token request", async () => {
    expect((await check(inputs())).failures).toEqual([]);
  });

  it("a wrong Keystone password fails the preview on credentials (was: only at up)", async () => {
    const r = await check(inputs({ credentials: credentials("wrong-password") }));
    expect(r.reasons.credentials).toMatch(/401|refused|credentials/i);
    expect(r.reasons.credentials).not.toContain("wrong-password");
  });

  it("credentials still unknown in preview (computed or secret-unknown) skip the token request", async () => {
    expect((await check(inputs({ credentials: { ...credentials(), password: UNKNOWN } }))).failures).toEqual([]);
    expect((await check(inputs({ credentials: UNKNOWN as never }))).failures).toEqual([]);
  });

  it("a qcow2 declaring 100 TiB fails the preview on maxVirtualSize, from its header; inside a gzip too", async () => {
    for (const file of ["huge.qcow2", "huge.qcow2.gz"]) {
      const r = await check(inputs({ source: { url: imageUrl(file), checksum: "unverified" }, diskFormat: "raw" }));
      expect(r.reasons.maxVirtualSize).toMatch(/declares a virtual size of 100(\.0)? TiB .*over maxVirtualSize 64(\.0)? GiB/);
    }
    const small = await check(inputs({ maxVirtualSize: "16MiB" }));
    expect(small.reasons.maxVirtualSize).toMatch(/24(\.0)? MiB .*over maxVirtualSize 16(\.0)? MiB/);
    expect((await check(inputs({ maxVirtualSize: "24MiB" }))).failures).toEqual([]);
    expect((await check(inputs({ maxVirtualSize: "lots" }))).reasons.maxVirtualSize).toMatch(/e\.g\. 68719476736 or "64GiB"/);
  });

  it("file:///etc/passwd fails the preview unless allowLocalFiles is true", async () => {
    const r = await check(inputs({ source: { url: "file:///etc/passwd", checksum: "unverified" }, diskFormat: "raw" }));
    expect(r.reasons.source).toMatch(/file:\/\/ URLs read files of the host .* allowLocalFiles: true/);
    const local = `file://${disks().dir}/disk.qcow2`;
    expect(
      (await check(inputs({ source: { url: local, checksum: `sha256:${disks().files["disk.qcow2"]!.sha256}` }, allowLocalFiles: true })))
        .failures,
    ).toEqual([]);
  });

  it('a source without checksum or checksumUrl fails; checksum "unverified" passes and the preview says so', async () => {
    const none = await check(inputs({ source: { url: imageUrl("disk.qcow2") } }));
    expect(none.reasons["source.checksum"]).toMatch(/source\.checksum or source\.checksumUrl is required.* checksum: "unverified"/);
    const opted = await check(inputs({ source: { url: imageUrl("disk.qcow2"), checksum: "unverified" } }));
    expect(opted.failures).toEqual([]);
    expect(opted.logs.join("\n")).toMatch(/source\.checksum is "unverified"/);
  });

  for (const [given, file] of [
    ["gzip", "disk.qcow2.gz"],
    ["gz", "disk.qcow2.gz"],
    ["bzip2", "disk.qcow2.bz2"],
    ["bz2", "disk.qcow2.bz2"],
    ["xz", "disk.qcow2.xz"],
    ["zstd", "disk.qcow2.zst"],
    ["zst", "disk.qcow2.zst"],
  ] as const) {
    it(`source.compression "${given}" passes check (was: "gzip" failed check, "gz" failed tsc)`, async () => {
      const r = await check(
        inputs({ source: { url: imageUrl(file), compression: given, checksum: `sha256:${disks().files[file]!.sha256}` } }),
      );
      expect(r.failures).toEqual([]);
    });
  }
  it('a compression that does not match the data fails check on source.url ("xz" for a gzip)', async () => {
    const r = await check(inputs({ source: { url: imageUrl("disk.qcow2.gz"), compression: "xz", checksum: "unverified" } }));
    expect(r.reasons["source.url"]).toMatch(/source\.compression is "xz" but the data is gz/);
  });
});

describe("check shows the work a new or replaced image will take (download size from the server, scratch, conversion)", () => {
  const f = (n: string) => disks().files[n]!;
  const mib = (n: number) => `${(n / 1024 ** 2).toFixed(1)} MiB`;
  const work = (r: { logs: string[] }, name: string) => r.logs.find((l) => l.startsWith(`${name}: `) && l.includes(" image from "));

  it("a new qcow2 → raw: the server's size, streamed conversion, scratch one file's size", async () => {
    const i = inputs({ diskFormat: "raw" });
    const line = work(await check(i), i.name);
    expect(line).toBe(
      `${i.name}: new image from ${imageUrl("disk.qcow2")}: download ${mib(f("disk.qcow2").size)}; convert qcow2 → raw, streamed while downloading (virtual size 24.0 MiB); scratch needed ≤ ${mib(f("disk.qcow2").size)}`,
    );
  });

  it("through compression where the file records the size: gzip's trailer and zstd's frame header give the qcow2's size; xz does not", async () => {
    for (const [file, known] of [
      ["disk.qcow2.gz", true],
      ["disk.qcow2.zst", true],
      ["disk.qcow2.xz", false],
    ] as const) {
      const i = inputs({ source: { url: imageUrl(file), checksum: `sha256:${f(file).sha256}` } });
      const line = work(await check(i), i.name);
      const comp = file.split(".").pop();
      expect(line, file).toContain(`download ${mib(f(file).size)}; ${comp}-compressed, `);
      if (known) {
        expect(line, file).toContain(`${mib(f("disk.qcow2").size)} decompressed; no conversion (qcow2 uploaded as is)`);
        expect(line, file).toContain(`scratch needed ≤ ${mib(f("disk.qcow2").size)}`);
      } else {
        expect(line, file).toContain("decompressed size not recorded in the file");
        // Bounded by the header's guest size plus qcow2 metadata room.
        expect(line, file).toContain("scratch needed ≤ 40.0 MiB");
      }
    }
  });

  it("raw → qcow2 needs qemu-img convert: scratch is the download plus the converted file's bound", async () => {
    const i = inputs({ source: { url: imageUrl("disk.raw"), checksum: `sha256:${f("disk.raw").sha256}` }, diskFormat: "qcow2" });
    const line = work(await check(i), i.name);
    expect(line).toContain("convert raw → qcow2 with qemu-img");
    expect(line).toContain(`scratch needed ≤ ${mib(f("disk.raw").size + 40 * 1024 ** 2)}`);
  });

  it("an unchanged image shows nothing; a changed source shows the replacement's work", async () => {
    const i = inputs();
    const first = await check(i);
    expect(work(first, i.name)).toContain("new image");
    expect(work(await check2(first.inputs, i), i.name)).toBeUndefined();
    const moved = { ...i, source: { url: imageUrl("disk.qcow2.gz"), checksum: `sha256:${f("disk.qcow2.gz").sha256}` } };
    expect(work(await check2(first.inputs, moved), i.name)).toMatch(/^.*: replacement image from .*disk\.qcow2\.gz: download/);
  });

  it("web-download: Glance downloads the server's size itself and converts; no scratch here", async () => {
    const i = inputs({
      importMethod: "web-download",
      diskFormat: "raw",
      source: { url: imageUrl("disk.qcow2"), format: "qcow2", checksum: "unverified" },
    });
    const r = await check(i);
    expect(r.failures).toEqual([]);
    const line = work(r, i.name);
    expect(line).toContain(`Glance downloads ${mib(f("disk.qcow2").size)} itself (web-download); Glance converts qcow2 → raw`);
    expect(line).toContain("no scratch space here");
  });

  it("a mirror is what the preview measures; a failing mirror is a warning and url is measured", async () => {
    const ok = inputs({
      source: { url: imageUrl("disk.qcow2"), mirrorUrl: `${disks().url}/chunked/disk.qcow2`, checksum: `sha256:${f("disk.qcow2").sha256}` },
    });
    const okLine = work(await check(ok), ok.name);
    expect(okLine).toContain(`new image from the mirror ${disks().url}/chunked/disk.qcow2: download of unknown size (no Content-Length)`);
    const bad = inputs({
      source: { url: imageUrl("disk.qcow2"), mirrorUrl: imageUrl("gone.qcow2"), checksum: `sha256:${f("disk.qcow2").sha256}` },
    });
    const r = await check(bad);
    expect(r.failures).toEqual([]);
    expect(r.logs.join("\n")).toMatch(
      /warning: .*the mirror .*gone\.qcow2 failed during check \(.*404.*\); the download would fall back to/,
    );
    expect(work(r, bad.name)).toContain(`new image from ${imageUrl("disk.qcow2")}: download ${mib(f("disk.qcow2").size)}`);
  });
});

async function check2(olds: Partial<CommunityImageInputs>, i: CommunityImageInputs) {
  const logs: string[] = [];
  const r = await checkCommunityImage(olds, i, { log: (l) => logs.push(l) });
  return { ...r, logs };
}
