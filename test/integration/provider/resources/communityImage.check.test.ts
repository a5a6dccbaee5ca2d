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
