// Glance killed mid-upload, for real: a provider process (the compiled engine in a child node
// process, as `pulumi up` runs it) streams an image into a glance-api process, which is killed
// with SIGKILL, and the image stays `saving` for ever. The next run must delete that leftover (and
// say so) before publishing, so nothing survives `destroy`. The killed glance-api is a second one
// over the test bed's database and store, so the test bed's Glance keeps serving other tests.
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { findImage, listImages, type GlanceClient } from "../../../../provider/glance/images";
import { publishImage, type PublishSpec } from "../../../../provider/glance/publish";
import { startExtraGlanceApi, type GlanceTestbed } from "../../../testbed/glance";
import { waitUntil } from "../../../testbed/processes";
import { authFor, bed, disks, glanceAs, plainSpec, sweep, uniqueName } from "./helpers";

const PREFIX = "iy-test-left";
let tb: GlanceTestbed;
let demo: GlanceClient;

beforeAll(async () => {
  tb = await bed();
  demo = await glanceAs(tb, "demo");
}, 300_000);

afterAll(async () => {
  if (demo) await sweep(demo, PREFIX);
}, 120_000);

function spec(): PublishSpec {
  const f = disks().files["disk.qcow2"]!;
  // Slow (64 KiB per 50 ms), qcow2 → raw with a checksum: the upload streams while downloading.
  return plainSpec(uniqueName("left"), { url: `${disks().url}/slow/disk.qcow2`, checksum: `sha256:${f.sha256}` });
}

/** publishImage in its own node process (the compiled engine); resolves with its exit code and output. */
function publishInChild(s: PublishSpec, glanceUrl: string): { done: Promise<{ code: number | null; out: string }> } {
  const dist = join(__dirname, "../../../../dist/provider/glance");
  if (!existsSync(join(dist, "publish.js"))) throw new Error(`${dist}/publish.js is missing: build first (npx tsc -p tsconfig.json)`);
  const script = `
    const { publishImage } = require(${JSON.stringify(join(dist, "publish.js"))});
    const { KeystoneSession } = require(${JSON.stringify(join(dist, "keystone.js"))});
    (async () => {
      const glance = { session: new KeystoneSession(JSON.parse(process.env.IY_AUTH)), endpoint: process.env.IY_GLANCE };
      await publishImage(JSON.parse(process.env.IY_SPEC), { glance, log: (l) => console.log(l) });
    })().then(() => process.exit(0), (e) => { console.log("FAILED " + e.message); process.exit(3); });
  `;
  const child = spawn(process.execPath, ["-e", script], {
    env: { ...process.env, IY_AUTH: JSON.stringify(authFor(tb, "demo")), IY_SPEC: JSON.stringify(s), IY_GLANCE: glanceUrl },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  child.stdout.on("data", (d: Buffer) => (out += d.toString()));
  child.stderr.on("data", (d: Buffer) => (out += d.toString()));
  return { done: new Promise((ok) => child.on("exit", (code) => ok({ code, out }))) };
}

describe("an image left `saving` by a Glance killed mid-upload", () => {
  it("the next run deletes the leftover, says so, and publishes one active image (was: waited 120 s silently and left the orphan for ever)", async () => {
    const s = spec();
    const extra = await startExtraGlanceApi(tb);
    let run: ReturnType<typeof publishInChild>;
    try {
      run = publishInChild(s, extra.url);
    } catch (e) {
      // dist/ not built: the extra glance-api must not outlive the test.
      await extra.kill();
      throw e;
    }
    // The upload is under way once Glance has the image in `saving`; then glance-api dies.
    let leftoverId = "";
    try {
      await waitUntil("image saving in Glance", 60_000, async () => {
        const img = (await listImages(demo, { name: s.name, visibility: "all" }))[0];
        if (img?.status === "saving") leftoverId = img.id;
        return leftoverId !== "";
      });
    } finally {
      await extra.kill();
    }
    const first = await run.done;
    expect(first.code).toBe(3);
    // Glance itself never finishes or fails an upload it lost: the image stays saving.
    expect((await findImage(demo, leftoverId))?.status).toBe("saving");

    const lines: string[] = [];
    const t0 = Date.now();
    const glance = await glanceAs(tb, "demo");
    const r = await publishImage(s, { glance, log: (l) => lines.push(l) });
    expect(r.image.status).toBe("active");
    expect(r.image.id).not.toBe(leftoverId);
    expect(lines.join("\n")).toMatch(
      new RegExp(`deleted image ${leftoverId}, left saving by an interrupted run \\(pid \\d+ on .*, no longer running\\)`),
    );
    expect(await findImage(demo, leftoverId)).toBeUndefined();
    expect((await listImages(demo, { name: s.name, visibility: "all" })).map((i) => i.id)).toEqual([r.image.id]);
    // No 120 s wait: the slow download itself takes ~10 s.
    expect(Date.now() - t0).toBeLessThan(60_000);
  }, 240_000);
});
