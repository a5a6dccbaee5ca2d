// vitest globalSetup: starts Keystone + Glance in the background and returns at once, so the cold
// start (~25 s) overlaps with the unit tests and the other test beds. Tests that need Glance call
// glanceTestbed(), which waits for the outcome this setup records in IY_GLANCE_READY_FILE.
// At teardown the test bed is stopped only if this run started it (set IY_KEEP_TESTBED=1 to keep it).
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { glanceStateDir, glanceTestbedRunning, startGlanceTestbed, stopGlanceTestbed } from "./glance";

export default function setup(): () => Promise<void> {
  const ready = join(glanceStateDir(), `ready-vitest-${process.pid}.json`);
  mkdirSync(glanceStateDir(), { recursive: true });
  rmSync(ready, { force: true });
  process.env.IY_GLANCE_READY_FILE = ready;
  const wasRunning = glanceTestbedRunning();
  const started = startGlanceTestbed().then(
    () => writeFileSync(ready, JSON.stringify({ ok: true })),
    (e: unknown) => writeFileSync(ready, JSON.stringify({ ok: false, error: (e as Error).message })),
  );
  return async () => {
    await started;
    rmSync(ready, { force: true });
    if (!wasRunning && process.env.IY_KEEP_TESTBED !== "1") await stopGlanceTestbed();
  };
}
