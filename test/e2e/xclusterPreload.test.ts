// RegistryPreload + ImageFromTar through the real pulumi engine (examples/xcluster-preload) and
// the test bed's registries: up preloads what the YAML names and builds the tar image; a second
// preview is a no-op; a changed tar previews as an update of that image only, and up pushes the
// new digest (checked with skopeo); destroy removes what the stack made.
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { digestOf, dockerRef, runSkopeo, seedImage, servesImage, skopeoFlags, type SeededImage } from "../testbed/images";
import { loadRegistryTestbed, type RegistryEndpoint } from "../testbed/registry";
import { destroyLeftovers, exampleStack, type ProjectStack } from "./harness";

const STEP_TIMEOUT = 300_000;
const run = `e2e-xc-${randomBytes(3).toString("hex")}`;
const IMAGE_FROM_TAR = "pulumi-nodejs:dynamic/imageyard:ImageFromTar";
let upstream: RegistryEndpoint;
let mirror: RegistryEndpoint;
let main: ProjectStack;
let dir: string;
let a: SeededImage;
let b: SeededImage;

function writeOvl(content: string): void {
  const tree = join(dir, "tree");
  rmSync(tree, { recursive: true, force: true });
  mkdirSync(join(tree, "bin"), { recursive: true });
  writeFileSync(join(tree, "bin", "controller"), content, { mode: 0o755 });
  execFileSync("tar", ["-cf", join(dir, "ovl.tar"), "-C", tree, "."]);
}

beforeAll(async () => {
  const tb = loadRegistryTestbed();
  upstream = tb.registries.upstream;
  mirror = tb.registries.mirror;
  dir = mkdtempSync(join(tmpdir(), "iy-e2e-xc-"));
  a = await seedImage(upstream, `${run}/a:v1`, { layers: 1, layerSize: "64K", seed: `${run}-a` });
  b = await seedImage(upstream, `${run}/b:v1`, { layers: 1, layerSize: "64K", seed: `${run}-b` });
  mkdirSync(join(dir, "deploy"));
  writeFileSync(
    join(dir, "deploy", "app.yaml"),
    `kind: Deployment\nmetadata: {name: web}\nspec: {template: {spec: {initContainers: [{name: i, image: "${a.ref}"}], containers: [{name: w, image: "${b.ref}"}, {name: l, image: "${mirror.host}/${run}/local:1"}]}}}\n`,
  );
  writeOvl("#!/bin/sh\necho v1\n");
  main = await exampleStack("xcluster-preload", "e2e", {
    registry: { value: `${mirror.host}/${run}` },
    registryUsername: { value: mirror.username ?? "" },
    registryPassword: { value: mirror.password ?? "", secret: true },
    "manifests[0]": { value: join(dir, "deploy") },
    ovlTar: { value: join(dir, "ovl.tar") },
    ovlImage: { value: "library/ovl:latest" },
  });
  await main.stack.setConfig("manifests[0]", { value: join(dir, "deploy") }, true);
}, STEP_TIMEOUT);

afterAll(() => destroyLeftovers(main, IMAGE_FROM_TAR, () => rmSync(dir, { recursive: true, force: true })), STEP_TIMEOUT);

describe.sequential("RegistryPreload and ImageFromTar with the real pulumi engine", () => {
  it(
    "up preloads the images the YAML names (leaving the local one alone) and pushes the tar image",
    async () => {
      const res = await main.stack.up({ onOutput: main.onOutput("up-1"), onEvent: main.onEvent });
      expect(res.summary.result).toBe("succeeded");
      expect(res.outputs.alreadyLocal!.value).toEqual([`${mirror.host}/${run}/local:1`]);
      expect(res.outputs.copied!.value).toEqual([a.ref, b.ref]);
      expect(await digestOf(mirror, `${run}/${run}/a:v1`)).toBe(a.digest);
      expect(await digestOf(mirror, `${run}/${run}/b:v1`)).toBe(b.digest);
      const ovl = res.outputs.ovlImage!.value as string;
      expect(ovl).toBe(`${mirror.host}/${run}/library/ovl@${await digestOf(mirror, `${run}/library/ovl:latest`)}`);
      const cfg = JSON.parse(
        (
          await runSkopeo(["inspect", "--config", "--raw", ...skopeoFlags(mirror), dockerRef(mirror, `${run}/library/ovl:latest`)])
        ).stdout.toString(),
      );
      expect(cfg.config.Cmd).toEqual(["/bin/controller"]);
    },
    STEP_TIMEOUT,
  );

  it(
    "a second preview shows no changes",
    async () => {
      const res = await main.stack.preview({ onOutput: main.onOutput("preview-noop"), onEvent: main.onEvent });
      expect(Object.keys(res.changeSummary).filter((k) => k !== "same")).toEqual([]);
    },
    STEP_TIMEOUT,
  );

  it(
    "a changed tar previews as an update of the image only, and up pushes the new digest",
    async () => {
      const before = await digestOf(mirror, `${run}/library/ovl:latest`);
      writeOvl("#!/bin/sh\necho v2\n");
      const pre = await main.stack.preview({ diff: true, onOutput: main.onOutput("preview-tar"), onEvent: main.onEvent });
      expect(pre.changeSummary.update).toBe(1);
      expect(Object.keys(pre.changeSummary).filter((k) => k !== "same" && k !== "update")).toEqual([]);
      expect(pre.stdout).toMatch(/digest/);
      const res = await main.stack.up({ onOutput: main.onOutput("up-2"), onEvent: main.onEvent });
      const after = await digestOf(mirror, `${run}/library/ovl:latest`);
      expect(after).not.toBe(before);
      expect(res.outputs.ovlImage!.value).toBe(`${mirror.host}/${run}/library/ovl@${after}`);
    },
    STEP_TIMEOUT,
  );

  it(
    "destroy removes the preloaded images and the built image, and leaves the upstream alone",
    async () => {
      await main.stack.destroy({ onOutput: main.onOutput("destroy"), onEvent: main.onEvent });
      for (const ref of [`${run}/${run}/a:v1`, `${run}/${run}/b:v1`, `${run}/library/ovl:latest`])
        expect(await servesImage(mirror, ref)).toBe(false);
      expect(await digestOf(upstream, `${run}/a:v1`)).toBe(a.digest);
    },
    STEP_TIMEOUT,
  );
});
