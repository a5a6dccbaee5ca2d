// The Keystone + Glance test bed from TypeScript: start it (test/testbed/glance.sh), stop it
// (glance-down.sh), and read what the start wrote ($IY_STATE_DIR/glance/testbed.json).
// A vitest run starts it in the background (glance.setup.ts) and tests wait for it here, so the
// ~25 s cold start overlaps with everything that does not need Glance.
import { spawn } from "node:child_process";
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { defaultStateDir, freePort } from "./processes";

export interface GlanceAccount {
  username: string;
  password: string;
  userId: string;
  projectName: string;
  projectId: string;
  userDomainName: string;
  projectDomainName: string;
}

export interface GlanceTestbed {
  /** Keystone v3 root, e.g. http://127.0.0.1:49823/v3 */
  authUrl: string;
  /** Glance root as the catalog lists it, e.g. http://127.0.0.1:53437 */
  glanceUrl: string;
  region: string;
  interface: string;
  /** Glance's image_size_cap in bytes. */
  imageSizeCap: number;
  dir: string;
  pids: { keystone: number; glance: number };
  /** admin (project admin), demo (owner of test images, project demo), other (project other). */
  accounts: { admin: GlanceAccount; demo: GlanceAccount; other: GlanceAccount };
  /** An application credential of demo, made fresh on each full start. */
  applicationCredential: { id: string; secret: string; username: string; projectId: string };
}

/** The folder holding glance.sh, whether this runs from test/testbed or from dist/test/testbed. */
function scriptDir(): string {
  return [__dirname, resolve(__dirname, "../../../test/testbed")].find((d) => existsSync(join(d, "glance.sh"))) ?? __dirname;
}

export function glanceStateDir(): string {
  return join(defaultStateDir(), "glance");
}

export function glanceTestbedFile(): string {
  return join(glanceStateDir(), "testbed.json");
}

/** What the last start wrote; throws when the test bed was never started. */
export function loadGlanceTestbed(): GlanceTestbed {
  const file = glanceTestbedFile();
  if (!existsSync(file))
    throw new Error(
      `Glance test bed not running: ${file} is missing. Start it with test/testbed/glance.sh (vitest's globalSetup test/testbed/glance.setup.ts does it too).`,
    );
  return JSON.parse(readFileSync(file, "utf8")) as GlanceTestbed;
}

/** True when the pids in testbed.json are alive and still ours. */
export function glanceTestbedRunning(): boolean {
  if (!existsSync(glanceTestbedFile())) return false;
  const tb = loadGlanceTestbed();
  return [tb.pids.keystone, tb.pids.glance].every((pid) => isOurs(pid, tb.dir));
}

function isOurs(pid: number, marker: string): boolean {
  try {
    if (/\) Z /.test(readFileSync(`/proc/${pid}/stat`, "utf8"))) return false;
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").includes(marker);
  } catch {
    return false;
  }
}

function runScript(name: string, args: string[] = []): Promise<{ code: number; stderr: string }> {
  return new Promise((ok, fail) => {
    const child = spawn("bash", [join(scriptDir(), name), ...args], { stdio: ["ignore", "ignore", "pipe"], env: process.env });
    let stderr = "";
    child.stderr.on("data", (c: Buffer) => {
      stderr += c.toString();
      if (stderr.length > 64 * 1024) stderr = stderr.slice(-32 * 1024);
    });
    child.on("error", fail);
    child.on("exit", (code, sig) => ok({ code: code ?? (sig ? 128 : 1), stderr }));
  });
}

/** Starts (or confirms) the test bed and returns its description. */
export async function startGlanceTestbed(): Promise<GlanceTestbed> {
  const { code, stderr } = await runScript("glance.sh");
  if (code !== 0) throw new Error(`test/testbed/glance.sh failed (exit ${code}):\n${stderr.trim().split("\n").slice(-25).join("\n")}`);
  return loadGlanceTestbed();
}

export async function stopGlanceTestbed(): Promise<void> {
  const { code, stderr } = await runScript("glance-down.sh");
  if (code !== 0) throw new Error(`test/testbed/glance-down.sh failed (exit ${code}):\n${stderr.trim()}`);
}

/**
 * For tests: waits for the start the globalSetup kicked off (it records the outcome in the file
 * named by IY_GLANCE_READY_FILE), then returns the test bed. Without a setup (a single test file
 * run by hand) it starts the test bed itself.
 */
export async function glanceTestbed(timeoutMs = 240_000): Promise<GlanceTestbed> {
  const ready = process.env.IY_GLANCE_READY_FILE;
  if (!ready) return startGlanceTestbed();
  const deadline = Date.now() + timeoutMs;
  while (!existsSync(ready)) {
    if (Date.now() > deadline) throw new Error(`Glance test bed not ready after ${timeoutMs} ms (waiting for ${ready})`);
    await new Promise((r) => setTimeout(r, 200));
  }
  const outcome = JSON.parse(readFileSync(ready, "utf8")) as { ok: boolean; error?: string };
  if (!outcome.ok) throw new Error(outcome.error ?? "Glance test bed failed to start");
  return loadGlanceTestbed();
}

export interface ExtraGlanceApi {
  /** http://127.0.0.1:PORT, the Glance root (not in the catalog: give it as the endpoint). */
  url: string;
  pid: number;
  /** SIGKILLs the process (if still alive) and waits for its exit. */
  kill(): Promise<void>;
}

export interface ExtraGlanceOptions {
  timeoutMs?: number;
  /**
   * Glance's enabled_import_methods for this process (the test bed's own enables glance-direct and
   * web-download): a cloud configured otherwise, e.g. ["glance-direct"] or [] (upload only).
   */
  importMethods?: string[];
}

/**
 * A second glance-api process over the same database and image store, on its own port: for tests
 * that kill Glance mid-request (killing it leaves exactly what a dead Glance API worker leaves) and
 * for a Glance configured otherwise (other import methods), while the test bed's own Glance keeps
 * serving every other test.
 */
export async function startExtraGlanceApi(tb: GlanceTestbed, opts: ExtraGlanceOptions = {}): Promise<ExtraGlanceApi> {
  const timeoutMs = opts.timeoutMs ?? 60_000;
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), "iy-glance-extra-"));
  const override = join(dir, "override.conf");
  const methods = opts.importMethods === undefined ? "" : `enabled_import_methods = [${opts.importMethods.join(",")}]\n`;
  writeFileSync(override, `[DEFAULT]\nbind_port = ${port}\nlog_file = ${join(dir, "glance-api.log")}\n${methods}`);
  const out = openSync(join(dir, "stdout.log"), "a");
  const child = spawn(
    "/usr/bin/python3",
    ["-m", "glance.cmd.api", "--config-file", join(tb.dir, "etc", "glance-api.conf"), "--config-file", override],
    { stdio: ["ignore", out, out] },
  );
  closeSync(out);
  const exited = new Promise<void>((ok) => child.on("exit", () => ok()));
  let gone = false;
  void exited.then(() => (gone = true));
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (gone) throw new Error(`extra glance-api exited before answering on ${url}; see ${dir}`);
    const ok = await fetch(`${url}/healthcheck`).then(
      (r) => r.ok,
      () => false,
    );
    if (ok) break;
    if (Date.now() > deadline) {
      child.kill("SIGKILL");
      throw new Error(`extra glance-api not answering on ${url}/healthcheck after ${timeoutMs} ms; see ${dir}`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  return {
    url,
    pid: child.pid as number,
    kill: async () => {
      if (!gone) child.kill("SIGKILL");
      await exited;
    },
  };
}
