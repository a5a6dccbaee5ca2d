// Image members against the real Glance: a shared image of project demo is offered to project
// other, accepted with other's own credentials (only a member may accept), and revoked again.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createImage, deleteImage, findImage, type GlanceClient } from "../../../../provider/glance/images";
import { listMembers, planMembers, syncMembers } from "../../../../provider/glance/members";
import type { GlanceTestbed } from "../../../testbed/glance";
import { bed, glanceAs, sweep, uniqueName } from "./helpers";

let tb: GlanceTestbed;
let demo: GlanceClient;
let other: GlanceClient;

beforeAll(async () => {
  tb = await bed();
  demo = await glanceAs(tb, "demo");
  other = await glanceAs(tb, "other");
}, 300_000);

afterAll(async () => {
  if (demo) await sweep(demo, "iy-test-members");
});

describe("image members on the real Glance", () => {
  it("plan: add the missing, revoke the unwanted, accept only where the member's credentials are given", () => {
    const current = [
      { image_id: "i", member_id: "p1", status: "pending" as const },
      { image_id: "i", member_id: "p2", status: "accepted" as const },
    ];
    expect(planMembers(current, ["p1", "p3", "p4"], ["p1", "p3"])).toEqual({ add: ["p3", "p4"], remove: ["p2"], accept: ["p1", "p3"] });
  });

  it("sync shares with project other and accepts with other's session; other then sees the image; an empty list revokes", async () => {
    const img = await createImage(demo, {
      name: uniqueName("members"),
      disk_format: "qcow2",
      container_format: "bare",
      visibility: "shared",
    });
    const otherId = tb.accounts.other.projectId;
    const after = await syncMembers(demo, img.id, [otherId], { [otherId]: other });
    expect(after.map((m) => [m.member_id, m.status])).toEqual([[otherId, "accepted"]]);
    expect((await findImage(other, img.id))?.id).toBe(img.id);
    // Idempotent: a second sync changes nothing.
    expect((await syncMembers(demo, img.id, [otherId], { [otherId]: other })).map((m) => m.status)).toEqual(["accepted"]);
    expect(await syncMembers(demo, img.id, [])).toEqual([]);
    expect(await listMembers(demo, img.id)).toEqual([]);
    expect(await findImage(other, img.id)).toBeUndefined();
    await deleteImage(demo, img.id);
  });

  it("without the member's credentials the membership stays pending (Glance lets only the member accept)", async () => {
    const img = await createImage(demo, {
      name: uniqueName("members"),
      disk_format: "qcow2",
      container_format: "bare",
      visibility: "shared",
    });
    const otherId = tb.accounts.other.projectId;
    expect((await syncMembers(demo, img.id, [otherId])).map((m) => m.status)).toEqual(["pending"]);
    await deleteImage(demo, img.id);
  });
});
