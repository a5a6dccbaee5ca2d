// The two CommunityImage inputs the catalog components rely on, against the real Keystone + Glance:
// publishName (an image takes its real name only once active, so a rotation never shows a
// half-uploaded "Name"), immutableSource (a changed source under an existing key fails check) and
// members (visibility shared: shared with, accepted as, and revoked from the test bed's second project).
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { listImages, type GlanceClient, type GlanceImage } from "../../../../provider/glance/images";
import { findImage } from "../../../../provider/glance/images";
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
const logs: string[] = [];
const deps = { log: (l: string) => logs.push(l) };

beforeAll(async () => {
  tb = await bed();
  demo = await glanceAs(tb, "demo");
}, 300_000);

afterAll(async () => {
  if (demo) await sweep(demo, "iy-test-hook");
}, 120_000);

function inputs(over: Partial<CommunityImageInputs> = {}): CommunityImageInputs {
  const a = tb.accounts.demo;
  return {
    name: uniqueName("hook"),
    source: { url: imageUrl("disk.qcow2"), checksum: `sha256:${disks().files["disk.qcow2"]!.sha256}` },
    diskFormat: "qcow2",
    credentials: {
      authUrl: tb.authUrl,
      username: a.username,
      password: a.password,
      projectName: a.projectName,
      userDomainName: "Default",
      projectDomainName: "Default",
      region: tb.region,
    },
    ...over,
  };
}

describe("catalog hooks of CommunityImage on the real Glance", () => {
  it("publishName: while the data uploads the image carries the publish name; the real name appears only on an active image", async () => {
    const i = inputs();
    const staged = `${i.name} (20240101)`;
    const seen: Pick<GlanceImage, "name" | "status">[] = [];
    let done = false;
    // Watch Glance the whole time the create runs: every image carrying the final name must be active.
    const watch = (async () => {
      while (!done) {
        for (const img of await listImages(demo, { visibility: "all" }))
          if (img.name === i.name || img.name === staged) seen.push({ name: img.name, status: img.status });
        await new Promise((r) => setTimeout(r, 30));
      }
    })();
    const { id, outs } = await createCommunityImage({ ...i, publishName: staged }, deps);
    done = true;
    await watch;
    expect(outs.name).toBe(i.name);
    expect(outs.status).toBe("active");
    expect(seen.some((s) => s.name === staged && s.status !== "active")).toBe(true);
    expect(seen.filter((s) => s.name === i.name).every((s) => s.status === "active")).toBe(true);
    expect((await listImages(demo, { name: staged, visibility: "all" })).length).toBe(0);
    await deleteCommunityImage(id, outs, deps);
  }, 180_000);

  it("immutableSource: a new URL or checksum under an existing key fails check naming the key and the way out; the same source passes", async () => {
    const lock = { key: "cirros_a", hint: 'Add it under a new key, e.g. "cirros_b".' };
    const old = { ...inputs(), immutableSource: lock };
    const gz = disks().files["disk.qcow2.gz"]!;
    const changed = { ...old, source: { url: imageUrl("disk.qcow2.gz"), checksum: `sha256:${gz.sha256}` } };
    const r = await checkCommunityImage(old, changed, { ...deps, preflight: false });
    expect(r.failures).toHaveLength(1);
    expect(r.failures[0]!.property).toBe("source");
    expect(r.failures[0]!.reason).toMatch(
      /key "cirros_a" was published from .*disk\.qcow2 .*source changed to .*disk\.qcow2\.gz.*Keys are immutable.*new key, e\.g\. "cirros_b"/,
    );
    expect((await checkCommunityImage(old, { ...old }, { ...deps, preflight: false })).failures).toEqual([]);
    // Without the lock the same change is an ordinary replacement (no check failure).
    expect((await checkCommunityImage(old, { ...changed, immutableSource: undefined }, { ...deps, preflight: false })).failures).toEqual(
      [],
    );
  });

  it("immutableSource: a checksumUrl that now lists another build is refused too (resolved in check, so preview shows it)", async () => {
    const lock = { key: "sums" };
    const i = {
      ...inputs(),
      source: { url: imageUrl("disk.qcow2"), checksumUrl: `${disks().url}/images/SHA256SUMS` },
      immutableSource: lock,
    };
    const prev = { ...i, resolvedChecksum: `sha256:${"0".repeat(64)}` };
    const r = await checkCommunityImage(prev, i, { ...deps, preflight: false });
    expect(r.inputs.resolvedChecksum).toBe(`sha256:${disks().files["disk.qcow2"]!.sha256}`);
    expect(r.failures.map((f) => f.reason)).toEqual([expect.stringMatching(/key "sums" .*checksum file now lists another build/)]);
  });

  it("members: a shared image is shared with project other and accepted as other; dropping the member revokes; refresh sees a membership removed outside", async () => {
    const o = tb.accounts.other;
    const otherId = o.projectId;
    const otherCreds = {
      authUrl: tb.authUrl,
      username: o.username,
      password: o.password,
      projectName: o.projectName,
      userDomainName: "Default",
      projectDomainName: "Default",
      region: tb.region,
    };
    const other = await glanceAs(tb, "other");
    const i = { ...inputs(), visibility: "shared" as const, members: [otherId], memberCredentials: { [otherId]: otherCreds } };
    expect((await checkCommunityImage({}, i, { ...deps, preflight: false })).failures).toEqual([]);
    const { id, outs } = await createCommunityImage(i, deps);
    expect(outs.observedMembers).toEqual([otherId]);
    expect((await findImage(other, id))?.id).toBe(id);
    expect(diffCommunityImage(outs, i)).toEqual({ changes: false });
    // Revoked outside: read observes it, diff wants it back.
    const { removeMember } = await import("../../../../provider/glance/members");
    await removeMember(demo, id, otherId);
    const seen = (await readCommunityImage(id, outs, deps)).props!;
    expect(seen.observedMembers).toEqual([]);
    expect(diffCommunityImage(seen, i)).toEqual({ changes: true });
    const back = await updateCommunityImage(id, seen, i, deps);
    expect(back.observedMembers).toEqual([otherId]);
    const dropped = { ...i, members: [], memberCredentials: undefined };
    expect(diffCommunityImage(back, dropped)).toEqual({ changes: true });
    const after = await updateCommunityImage(id, back, dropped, deps);
    expect(after.observedMembers).toEqual([]);
    expect(await findImage(other, id)).toBeUndefined();
    await deleteCommunityImage(id, after, deps);
  }, 180_000);

  it("members: check refuses members on an image that is not shared, naming the property", async () => {
    const r = await checkCommunityImage({}, { ...inputs(), members: [tb.accounts.other.projectId] }, { ...deps, preflight: false });
    expect(r.failures).toEqual([
      { property: "members", reason: expect.stringMatching(/members need visibility "shared" \(it is "community"\)/) },
    ]);
  });
});
