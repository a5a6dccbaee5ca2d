// The layer rules of DESIGN.md, checked on the source: data flows one way.
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";

const root = join(__dirname, "../../..");
const tsFiles = (dir: string): string[] =>
  readdirSync(join(root, dir), { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? tsFiles(join(dir, e.name)) : e.name.endsWith(".ts") ? [join(dir, e.name)] : [],
  );
const importsOf = (file: string) =>
  [...readFileSync(join(root, file), "utf8").matchAll(/(?:from|require\()\s*["']([^"']+)["']/g)].map((m) => m[1] as string);

describe("layers", () => {
  const engines = ["provider/http", "provider/oci", "provider/glance", "provider/disk", "provider/node"].filter((d) => {
    try {
      return readdirSync(join(root, d)).length > 0;
    } catch {
      return false;
    }
  });

  it("engines import nothing from provider/resources or components, and never @pulumi/pulumi", () => {
    const offending = engines.flatMap(tsFiles).flatMap((f) =>
      importsOf(f)
        .filter((m) => /(^|\/)resources(\/|$)|components|@pulumi\/pulumi/.test(m))
        .map((m) => `${f} imports ${m}`),
    );
    expect(offending).toEqual([]);
  });

  it("lifecycle modules are Pulumi-free", () => {
    const lifecycles = tsFiles("provider/resources").filter((f) => f.endsWith(".lifecycle.ts"));
    expect(lifecycles.length).toBeGreaterThanOrEqual(2);
    for (const f of lifecycles)
      expect(
        importsOf(f).filter((m) => m.startsWith("@pulumi/")),
        f,
      ).toEqual([]);
  });

  it("every resource's provider names a lifecycle module that exists by the package's own name", async () => {
    const files = tsFiles("provider/resources");
    // A resource is a <name>.ts with a <name>.lifecycle.ts beside it.
    const resources = files.filter((f) => files.includes(f.replace(/\.ts$/, ".lifecycle.ts")));
    expect(resources.length).toBeGreaterThanOrEqual(2);
    for (const f of resources) {
      const src = readFileSync(join(root, f), "utf8");
      const m = /new EngineProvider<typeof lifecycle>\("imageyard\/(provider\/resources\/(\w+)\.lifecycle)"\)/.exec(src);
      expect(m, `${f} builds its provider from its own lifecycle module`).not.toBeNull();
      expect(f.endsWith(`${m![2]}.ts`), `${f} points at ${m![2]}.lifecycle`).toBe(true);
      const mod = (await import(join(root, `${m![1]}.ts`))) as { lifecycle?: Record<string, unknown> };
      expect(Object.keys(mod.lifecycle ?? {}).sort()).toEqual(["check", "create", "delete", "diff", "read", "update"]);
    }
  });
});
