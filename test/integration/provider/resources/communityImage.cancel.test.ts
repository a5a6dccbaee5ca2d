// A cancel reaches the provider as a signal (the Pulumi engine signals its plugins): a create in
// a real provider-like process (the compiled lifecycle in a child node process) that is streaming
// from the disk image server into the real Glance must stop on SIGTERM or SIGINT, delete the image
// it started, remove its scratch and end the process. Before, the transfer went on and scratch stayed.
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { listImages, type GlanceClient } from "../../../../provider/glance/images";
import type { CommunityImageInputs } from "../../../../provider/resources/communityImage.lifecycle";
import type { GlanceTestbed } from "../../../testbed/glance";
import { waitUntil } from "../../../testbed/processes";
import { authFor, bed, disks, glanceAs, sweep, uniqueName } from "../glance/helpers";

let tb: GlanceTestbed;
let demo: GlanceClient;

beforeAll(async () => {
  tb = await bed();
  demo = await glanceAs(tb, "demo");
}, 300_000);

afterAll(async () => {
  if (demo) await sweep(demo, "iy-test-cancel");
}, 120_000);

describe("CommunityImage create stopped by a signal", () => {
  for (const sig of ["SIGTERM", "SIGINT"] as const) {
    it(`${sig} mid-upload: the process ends within seconds, the started image is deleted from Glance and its scratch is removed`, async () => {
      const lifecycle = join(__dirname, "../../../../dist/provider/resources/communityImage.lifecycle.js");
      if (!existsSync(lifecycle)) throw new Error(`${lifecycle} is missing: build first (npx tsc -p tsconfig.json)`);
      const base = mkdtempSync(join(tmpdir(), "iy-cancel-"));
      try {
        const f = disks().files["disk.qcow2"]!;
        const inputs: CommunityImageInputs = {
          name: uniqueName("cancel"),
          source: { url: `${disks().url}/slow/disk.qcow2`, checksum: `sha256:${f.sha256}` },
          diskFormat: "raw",
          visibility: "private",
          credentials: authFor(tb, "demo"),
          scratchDir: base,
        };
        const script = `require(${JSON.stringify(lifecycle)}).createCommunityImage(JSON.parse(process.env.IY_INPUTS)).then(() => console.log("DONE"), (e) => console.log("FAILED " + e.message));`;
        const child = spawn(process.execPath, ["-e", script], {
          env: { ...process.env, IY_INPUTS: JSON.stringify(inputs) },
          stdio: ["ignore", "pipe", "pipe"],
        });
        let out = "";
        child.stdout.on("data", (d: Buffer) => (out += d.toString()));
        child.stderr.on("data", (d: Buffer) => (out += d.toString()));
        const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((ok) =>
          child.on("exit", (code, signal) => ok({ code, signal })),
        );
        await waitUntil("the upload to start", 60_000, () => out.includes("uploading"));
        const t0 = Date.now();
        child.kill(sig);
        const end = await exited;
        expect(end.signal).toBe(sig);
        // Inside the engine's 5 s between its SIGINT and SIGKILL.
        expect(Date.now() - t0).toBeLessThan(5_000);
        expect(out).not.toContain("DONE");
        expect(out).toMatch(new RegExp(`${sig} received; stopping transfers`));
        expect(out).toMatch(/deleted image .* after the failure/);
        expect(readdirSync(base).filter((n) => n.startsWith("op-"))).toEqual([]);
        expect(await listImages(demo, { name: inputs.name, visibility: "all" })).toEqual([]);
      } finally {
        rmSync(base, { recursive: true, force: true });
      }
    }, 120_000);
  }
});
