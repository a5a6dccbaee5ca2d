import { readdirSync } from "node:fs";
import { defineConfig } from "vitest/config";

// Each test bed (registries, Keystone + Glance, …) contributes a test/testbed/*.setup.ts that
// starts its real services on 127.0.0.1 once per run and stops them afterwards.
const setups = readdirSync("test/testbed", { withFileTypes: true })
  .filter((e) => e.isFile() && e.name.endsWith(".setup.ts"))
  .map((e) => `test/testbed/${e.name}`)
  .sort();

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    globalSetup: setups,
    testTimeout: 60_000,
    hookTimeout: 180_000,
    pool: "forks",
    maxWorkers: 2,
    reporters: ["default"],
  },
});
