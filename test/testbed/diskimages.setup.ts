// vitest globalSetup: starts the disk image server (test/testbed/diskimages.ts) as its own
// process, waits until it has published testbed.json, and stops it at teardown.
import { spawn } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, rmSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { stateDir, testbedFile, type DiskImageTestbed } from "./diskimages";

export default async function setup(): Promise<() => Promise<void>> {
  // A file of this run's own; workers inherit the variable and loadDiskImageTestbed() reads it.
  process.env.IY_DISKIMAGES_FILE ??= join(stateDir(), "diskimages", `testbed-vitest-${process.pid}.json`);
  const file = testbedFile();
  mkdirSync(dirname(file), { recursive: true });
  rmSync(file, { force: true });
  const script = resolve(__dirname, "diskimages.ts");
  const child = spawn(
    process.execPath,
    ["--disable-warning=MODULE_TYPELESS_PACKAGE_JSON", "--disable-warning=ExperimentalWarning", script, "serve"],
    {
      stdio: ["ignore", "inherit", "inherit"],
      env: process.env,
    },
  );
  let exited: string | undefined;
  child.on("exit", (code, sig) => (exited = `exit ${code ?? sig}`));
  // Generating the images takes a few seconds the first time; poll with a deadline.
  const deadline = Date.now() + 120_000;
  for (;;) {
    if (existsSync(file)) {
      const tb = JSON.parse(readFileSync(file, "utf8")) as DiskImageTestbed;
      if (tb.pid === child.pid) break;
    }
    if (exited) throw new Error(`disk image test bed ended before it was ready (${exited})`);
    if (Date.now() > deadline) {
      child.kill("SIGTERM");
      throw new Error("disk image test bed not ready after 120 s");
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return async () => {
    if (exited) return;
    const done = new Promise((r) => child.once("exit", r));
    child.kill("SIGTERM");
    await done;
  };
}
