// The real Pulumi engine for end-to-end tests: the CLI and language host from scripts/pulumi.sh,
// a local file backend and PULUMI_HOME in a temp dir, and examples/ projects copied there so
// stack config never lands in the work tree. Every engine message is kept for later greps.
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, dirname, join, relative, resolve } from "node:path";
import { LocalWorkspace, PulumiCommand, type ConfigMap, type EngineEvent, type Stack } from "@pulumi/pulumi/automation";
import { parse, stringify } from "yaml";

/** The checkout: the folder whose package.json is imageyard's (from test/e2e or dist/test/e2e). */
export const repoRoot = findRepoRoot(__dirname);

function findRepoRoot(from: string): string {
  for (let dir = from; ; dir = dirname(dir)) {
    const pkg = join(dir, "package.json");
    if (existsSync(pkg) && (JSON.parse(readFileSync(pkg, "utf8")) as { name?: string }).name === "imageyard") return dir;
    if (dirname(dir) === dir) throw new Error(`no imageyard package.json above ${from}`);
  }
}

export interface Toolchain {
  bin: string;
  nodePath: string;
  version: string;
  command: PulumiCommand;
}

let toolchain: Promise<Toolchain> | undefined;

/** Builds nothing when scripts/test.sh already ran `scripts/pulumi.sh ensure` (it reuses the cache). */
export function pulumiToolchain(): Promise<Toolchain> {
  toolchain ??= (async () => {
    const script = join(repoRoot, "scripts", "pulumi.sh");
    try {
      execFileSync(script, ["ensure"], { stdio: ["ignore", "ignore", "pipe"], timeout: 170_000 });
    } catch (e) {
      const stderr = String((e as { stderr?: Buffer }).stderr ?? "");
      throw new Error(`scripts/pulumi.sh ensure failed (build the CLI first with that command; a first build takes ~15 min):\n${stderr}`);
    }
    const paths = JSON.parse(execFileSync(script, ["paths"], { encoding: "utf8" })) as { bin: string; nodePath: string; version: string };
    const command = await PulumiCommand.get({ root: dirname(paths.bin), skipVersionCheck: true });
    return { ...paths, command };
  })();
  return toolchain;
}

export interface EngineLog {
  /** Everything the engine printed, every operation, in order. */
  text: string[];
  /**
   * Diagnostic messages from the engine's event stream (provider stdout/stderr arrive as info
   * diagnostics). The Automation API's `preview({ diff: true })` leaves info diagnostics out of
   * its printed output, so assertions on what a provider said read these.
   */
  diagnostics: string[];
  /** The same diagnostics with where they went: ephemeral ones are live progress, never kept. */
  events: { message: string; urn?: string; ephemeral: boolean }[];
  all(): string;
}

export interface ProjectStack {
  stack: Stack;
  workDir: string;
  /** The file backend's folder (file://…). */
  backend: string;
  log: EngineLog;
  /** Records one operation's output under a label (also streamed when IY_E2E_VERBOSE=1). */
  onOutput: (label: string) => (line: string) => void;
  /** Records the diagnostics of one operation's event stream. */
  onEvent: (event: EngineEvent) => void;
  cleanup(): void;
}

/** A stack of the examples/<example> project (see projectStack). */
export function exampleStack(example: string, stackName: string, config: ConfigMap): Promise<ProjectStack> {
  return projectStack(join(repoRoot, "examples", example, "Pulumi.yaml"), stackName, config);
}

/**
 * A stack of the project `projectFile` in a fresh temp dir: its Pulumi.yaml is copied with `main`
 * pointed back at the compiled program in dist/, so config files stay out of the tree.
 */
export async function projectStack(projectFile: string, stackName: string, config: ConfigMap): Promise<ProjectStack> {
  const tc = await pulumiToolchain();
  const base = mkdtempSync(join(tmpdir(), `iy-e2e-${basename(dirname(projectFile))}-`));
  const workDir = join(base, "project");
  mkdirSync(workDir, { recursive: true });
  const project = parse(readFileSync(projectFile, "utf8")) as { main?: string };
  if (!project.main) throw new Error(`${projectFile}: expected a main pointing at the compiled program`);
  project.main = relative(workDir, resolve(dirname(projectFile), project.main));
  writeFileSync(join(workDir, "Pulumi.yaml"), stringify(project));
  const home = join(base, "home");
  const backend = join(base, "backend");
  mkdirSync(home, { recursive: true });
  mkdirSync(backend, { recursive: true });
  const envVars: Record<string, string> = {
    PATH: `${tc.bin}:${process.env.PATH ?? ""}`,
    NODE_PATH: tc.nodePath,
    PULUMI_BACKEND_URL: `file://${backend}`,
    PULUMI_CONFIG_PASSPHRASE: "imageyard-e2e",
    PULUMI_SKIP_UPDATE_CHECK: "true",
    PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION: "true",
    PULUMI_AUTOMATION_API_SKIP_VERSION_CHECK: "true",
  };
  const stack = await LocalWorkspace.createOrSelectStack({ stackName, workDir }, { envVars, pulumiHome: home, pulumiCommand: tc.command });
  await stack.setAllConfig(config);
  const text: string[] = [];
  const diagnostics: string[] = [];
  const events: EngineLog["events"] = [];
  const log: EngineLog = { text, diagnostics, events, all: () => [...text, ...diagnostics].join("") };
  const onEvent = (event: EngineEvent) => {
    const d = event.diagnosticEvent;
    if (!d) return;
    diagnostics.push(d.message);
    events.push({ message: d.message, urn: d.urn, ephemeral: d.ephemeral === true });
  };
  const onOutput = (label: string) => (line: string) => {
    text.push(line);
    if (process.env.IY_E2E_VERBOSE === "1") process.stderr.write(`[${label}] ${line}`);
  };
  return { stack, workDir, backend, log, onOutput, onEvent, cleanup: () => rmSync(base, { recursive: true, force: true }) };
}

/**
 * The stack's state file as the backend stores it. (`stack.exportStack()` runs `pulumi stack
 * export --show-secrets`, so it shows secrets decrypted: useless for asserting encryption.)
 */
export function storedState(ps: ProjectStack): string {
  const stacks = join(ps.backend, ".pulumi", "stacks");
  const name = `${ps.stack.name}.json`;
  const found = readdirSync(stacks, { recursive: true, encoding: "utf8" }).filter((f) => basename(f) === name);
  if (found.length !== 1) throw new Error(`expected one ${name} under ${stacks}, found ${found.length}`);
  return readFileSync(join(stacks, found[0]!), "utf8");
}

/** The deployment's resources of one type from `pulumi stack export`. */
export interface StateResource {
  urn: string;
  type: string;
  id?: string;
  inputs?: Record<string, unknown>;
  outputs?: Record<string, unknown>;
}

export async function resourcesOfType(stack: Stack, type: string): Promise<StateResource[]> {
  const state = await stack.exportStack();
  const resources = (state.deployment as { resources?: StateResource[] }).resources ?? [];
  return resources.filter((r) => r.type === type);
}

export const MIRRORED_IMAGE_TYPE = "pulumi-nodejs:dynamic/imageyard:MirroredImage";

/** afterAll of a stack test: destroy what a failed step left (if any resource of `type` remains), then clean up. */
export async function destroyLeftovers(
  ps: ProjectStack | undefined,
  type: string,
  cleanup: () => void | Promise<void> = () => undefined,
): Promise<void> {
  try {
    if (ps && (await resourcesOfType(ps.stack, type)).length > 0) await ps.stack.destroy({ onOutput: ps.onOutput("destroy-leftovers") });
  } finally {
    ps?.cleanup();
    await cleanup();
  }
}

/** One preview of the stack (recorded under `label`): how many resources it would create, update, replace and delete. */
export async function previewCounts(
  ps: ProjectStack,
  label: string,
): Promise<{ create: number; update: number; replace: number; delete: number }> {
  const { changeSummary: c } = await ps.stack.preview({ onOutput: ps.onOutput(label), onEvent: ps.onEvent });
  return { create: c.create ?? 0, update: c.update ?? 0, replace: c.replace ?? 0, delete: c.delete ?? 0 };
}
