// vitest globalSetup: starts Keystone + Glance in the background and returns at once, so the cold
// start overlaps with the unit tests and the other test beds. Tests that need Glance call
// glanceTestbed(), which waits for the outcome this setup records in IY_GLANCE_READY_FILE.
// Each run holds a lease while it runs; at teardown the test bed is stopped only if this run
// started it and no other run (another checkout user, a parallel vitest) still holds a lease.
// IY_KEEP_TESTBED=1 keeps it running.
import { existsSync, mkdirSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { glanceStateDir, glanceTestbedRunning, startGlanceTestbed, stopGlanceTestbed } from "./glance";

function leaseDir(): string {
  return join(glanceStateDir(), "run", "leases");
}

function otherLiveLeases(): string[] {
  if (!existsSync(leaseDir())) return [];
  return readdirSync(leaseDir()).filter((name) => {
    const pid = Number(name);
    if (!Number.isInteger(pid) || pid === process.pid) return false;
    try {
      process.kill(pid, 0);
      return true;
    } catch {
      rmSync(join(leaseDir(), name), { force: true });
      return false;
    }
  });
}

export default function setup(): () => Promise<void> {
  const ready = join(glanceStateDir(), `ready-vitest-${process.pid}.json`);
  mkdirSync(leaseDir(), { recursive: true });
  rmSync(ready, { force: true });
  writeFileSync(join(leaseDir(), String(process.pid)), "");
  process.env.IY_GLANCE_READY_FILE = ready;
  const wasRunning = glanceTestbedRunning();
  const started = startGlanceTestbed().then(
    () => writeFileSync(ready, JSON.stringify({ ok: true })),
    (e: unknown) => writeFileSync(ready, JSON.stringify({ ok: false, error: (e as Error).message })),
  );
  return async () => {
    await started;
    rmSync(ready, { force: true });
    rmSync(join(leaseDir(), String(process.pid)), { force: true });
    if (wasRunning || process.env.IY_KEEP_TESTBED === "1" || otherLiveLeases().length > 0) return;
    await stopGlanceTestbed();
  };
}
