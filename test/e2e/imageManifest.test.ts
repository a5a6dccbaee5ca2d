// ImageManifest through the real pulumi engine on the examples/atmosphere-manifest program and the
// test bed's registries: up mirrors every key and outputs the manifest pinned by digest; a second
// preview is a no-op; an override of one key previews as a change of that key only; destroy leaves
// nothing of ours in the mirror.
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parse } from "yaml";
import { digestOf, seedImage, servesImage, type SeededImage } from "../testbed/images";
import { loadRegistryTestbed, type RegistryEndpoint } from "../testbed/registry";
import { destroyLeftovers, exampleStack, MIRRORED_IMAGE_TYPE, resourcesOfType, type ProjectStack } from "./harness";

const STEP_TIMEOUT = 300_000;
const run = `e2e-am-${randomBytes(3).toString("hex")}`;
let upstream: RegistryEndpoint;
let mirror: RegistryEndpoint;
let main: ProjectStack;
let dir: string;
const seeded: Record<string, SeededImage> = {};

beforeAll(async () => {
  const tb = loadRegistryTestbed();
  upstream = tb.registries.upstream;
  mirror = tb.registries.mirror;
  dir = mkdtempSync(join(tmpdir(), "iy-e2e-am-"));
  for (const [key, repo] of [
    ["keystone_api", "vexxhost/keystone"],
    ["glance_api", "vexxhost/glance"],
    ["memcached", "library/memcached"],
  ] as const) {
    seeded[key] = await seedImage(upstream, `${run}/${repo}:zed`, { layers: 1, layerSize: "64K", seed: `${run}-${key}` });
  }
  seeded.patched = await seedImage(upstream, `${run}/me/keystone:patched`, { layers: 1, layerSize: "64K", seed: `${run}-patched` });
  const manifest = { atmosphere_images: Object.fromEntries(["keystone_api", "glance_api", "memcached"].map((k) => [k, seeded[k]!.ref])) };
  writeFileSync(join(dir, "atmosphere_images.yml"), JSON.stringify(manifest));
  main = await exampleStack("atmosphere-manifest", "e2e", {
    manifestFile: { value: join(dir, "atmosphere_images.yml") },
    registry: { value: `${mirror.host}/atmo` },
    targetUsername: { value: mirror.username ?? "" },
    targetPassword: { value: mirror.password ?? "", secret: true },
    outputFile: { value: join(dir, "out.yml") },
  });
}, STEP_TIMEOUT);

afterAll(() => destroyLeftovers(main, MIRRORED_IMAGE_TYPE, () => rmSync(dir, { recursive: true, force: true })), STEP_TIMEOUT);

describe.sequential("ImageManifest with the real pulumi engine", () => {
  it(
    "up mirrors every key under the registry prefix and outputs the manifest in Atmosphere's shape, pinned by digest",
    async () => {
      const res = await main.stack.up({ onOutput: main.onOutput("up-1"), onEvent: main.onEvent });
      expect(res.summary.result).toBe("succeeded");
      const images = res.outputs.images!.value as Record<string, string>;
      for (const key of ["keystone_api", "glance_api", "memcached"]) {
        const upstreamRepo = seeded[key]!.repository;
        expect(images[key]).toBe(`${mirror.host}/atmo/${upstreamRepo}@${seeded[key]!.digest}`);
        expect(await digestOf(mirror, `atmo/${upstreamRepo}:zed`)).toBe(seeded[key]!.digest);
      }
      const yaml = parse(res.outputs.yaml!.value as string);
      expect(yaml).toEqual({ atmosphere_images: images });
      expect(parse(readFileSync(join(dir, "out.yml"), "utf8"))).toEqual(yaml);
    },
    STEP_TIMEOUT,
  );

  it(
    "a second preview shows no changes",
    async () => {
      const res = await main.stack.preview({ onOutput: main.onOutput("preview-noop"), onEvent: main.onEvent });
      expect(res.changeSummary.same).toBeGreaterThanOrEqual(5);
      expect(Object.keys(res.changeSummary).filter((k) => k !== "same")).toEqual([]);
    },
    STEP_TIMEOUT,
  );

  it(
    "an override of one key previews as a replacement of that key's mirror only, and up pins the new image",
    async () => {
      await main.stack.setConfig("overrides.keystone_api", { value: seeded.patched!.ref }, true);
      const pre = await main.stack.preview({ diff: true, onOutput: main.onOutput("preview-override"), onEvent: main.onEvent });
      expect(pre.changeSummary.replace ?? 0).toBe(1);
      expect(pre.changeSummary.update ?? 0).toBe(0);
      const res = await main.stack.up({ onOutput: main.onOutput("up-2"), onEvent: main.onEvent });
      expect((res.outputs.images!.value as Record<string, string>).keystone_api).toBe(
        `${mirror.host}/atmo/${run}/me/keystone@${seeded.patched!.digest}`,
      );
      expect(await servesImage(mirror, `atmo/${run}/vexxhost/keystone:zed`)).toBe(false);
    },
    STEP_TIMEOUT,
  );

  it(
    "destroy removes what the stack made from the mirror and nothing else",
    async () => {
      await main.stack.destroy({ onOutput: main.onOutput("destroy"), onEvent: main.onEvent });
      for (const ref of [`atmo/${run}/me/keystone:patched`, `atmo/${run}/vexxhost/glance:zed`, `atmo/${run}/library/memcached:zed`])
        expect(await servesImage(mirror, ref)).toBe(false);
      expect(await digestOf(upstream, `${run}/vexxhost/glance:zed`)).toBe(seeded.glance_api!.digest);
      expect(await resourcesOfType(main.stack, MIRRORED_IMAGE_TYPE)).toEqual([]);
    },
    STEP_TIMEOUT,
  );
});
