// The package as a user meets it: `npm pack`, installed into a fresh TypeScript project, and every
// TypeScript snippet of the README and every examples/ program compiled there exactly as written
// (imports of "imageyard", secrets from pulumi.Config and all), with strict settings.
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

const root = join(__dirname, "../../..");
let work: string;
let packed: string[];
// Async, so the worker keeps answering vitest while tsc runs for a minute under load.
const run = promisify(execFile);

beforeAll(async () => {
  expect(existsSync(join(root, "dist/index.js")), "dist/ is built (scripts/bootstrap.sh)").toBe(true);
  work = mkdtempSync(join(tmpdir(), "iy-user-project-"));
  const { stdout: out } = await run("npm", ["pack", "--json", "--pack-destination", work], {
    cwd: root,
    encoding: "utf8",
    timeout: 120_000,
  });
  const info = JSON.parse(out) as { filename: string; files: { path: string }[] }[];
  packed = info[0]!.files.map((f) => f.path);
  // The user's node_modules: the packed imageyard, and its dependencies as this checkout has them.
  const nm = join(work, "node_modules");
  mkdirSync(join(nm, "imageyard"), { recursive: true });
  await run("tar", ["-xzf", join(work, info[0]!.filename), "-C", join(nm, "imageyard"), "--strip-components=1"]);
  for (const e of readdirSync(join(root, "node_modules"))) {
    if (e === "imageyard" || e.startsWith(".")) continue;
    symlinkSync(join(root, "node_modules", e), join(nm, e));
  }
  writeFileSync(
    join(work, "tsconfig.json"),
    JSON.stringify({
      compilerOptions: {
        target: "ES2022",
        module: "commonjs",
        moduleResolution: "node10",
        strict: true,
        noEmit: true,
        esModuleInterop: true,
        skipLibCheck: true,
        types: ["node"],
      },
      include: ["*.ts"],
    }),
  );
}, 180_000);

afterAll(() => {
  if (work) rmSync(work, { recursive: true, force: true });
});

/** ```ts blocks of a markdown file. */
const tsBlocks = (md: string) => [...md.matchAll(/^```ts\n([\s\S]*?)^```/gm)].map((m) => m[1] as string);

const compile = async (files: Record<string, string>) => {
  for (const f of readdirSync(work).filter((f) => f.endsWith(".ts"))) rmSync(join(work, f));
  for (const [name, text] of Object.entries(files)) writeFileSync(join(work, name), text);
  try {
    await run(join(root, "node_modules/.bin/tsc"), ["-p", "tsconfig.json"], { cwd: work, encoding: "utf8", timeout: 180_000 });
    return "";
  } catch (e) {
    return String((e as { stdout?: string }).stdout ?? e);
  }
};

describe("the packed package in a user's project", () => {
  it("ships the library and the CLI, not tests, scripts, CI or the Go host source", () => {
    expect(packed).toContain("dist/index.js");
    expect(packed).toContain("dist/cli/imageyard.js");
    expect(packed).toContain("dist/provider/resources/mirroredImage.lifecycle.js");
    const stray = packed.filter((p) => /^(dist\/(test|bench|scripts|examples)\/|scripts\/|\.ci\/|test\/|.*\.go$|go\.mod$)/.test(p));
    expect(stray).toEqual([]);
  });

  it("compiles every TypeScript snippet of the README as written", async () => {
    const blocks = tsBlocks(readFileSync(join(root, "README.md"), "utf8"));
    expect(blocks.length).toBeGreaterThan(0);
    // Each snippet is its own module: they may declare the same names.
    const files = Object.fromEntries(blocks.map((b, i) => [`readme${i}.ts`, `${b}\nexport {};\n`]));
    expect(await compile(files)).toBe("");
  }, 240_000);

  it('compiles every examples/ program with `import … from "imageyard"` as a user writes it', async () => {
    const programs = readdirSync(join(root, "examples"), { withFileTypes: true })
      .filter((d) => d.isDirectory() && existsSync(join(root, "examples", d.name, "index.ts")))
      .map((d) => d.name);
    expect(programs.length).toBeGreaterThan(0);
    for (const p of programs) {
      const text = readFileSync(join(root, "examples", p, "index.ts"), "utf8").replace(/from "(\.\.\/)+index"/g, 'from "imageyard"');
      // Local modules the program imports come along (the demo's sandbox helpers are not the program).
      const siblings = Object.fromEntries(
        [...text.matchAll(/from "\.\/([\w-]+)"/g)].map((m) => [
          `${m[1]}.ts`,
          readFileSync(join(root, "examples", p, `${m[1]}.ts`), "utf8"),
        ]),
      );
      expect(await compile({ ...siblings, "index.ts": text }), `examples/${p}`).toBe("");
    }
  }, 240_000);
});
