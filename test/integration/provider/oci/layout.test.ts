// OCI image layouts against real registries and an independent tool: what we write, skopeo reads;
// what skopeo writes, we read; the digest survives registry → layout → registry.
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { copyImage, forgetKnownLocations } from "../../../../provider/oci/copy";
import type { RegistryOptions } from "../../../../provider/oci/registry";
import { digestOf, dockerRef, runSkopeo, seedImage, skopeoFlags, type SeededImage } from "../../../testbed/images";
import { loadRegistryTestbed } from "../../../testbed/registry";

const { upstream, mirror } = loadRegistryTestbed().registries;
const run = `b2l-${Date.now().toString(36)}-${randomBytes(2).toString("hex")}`;
const anonymous: RegistryOptions = { dockerConfig: false };
const mirrorOptions: RegistryOptions = { dockerConfig: false, credentials: { username: mirror.username!, password: mirror.password! } };
let dir: string;
let image: SeededImage;

beforeAll(async () => {
  forgetKnownLocations();
  dir = mkdtempSync(join(tmpdir(), "iy-layout-it-"));
  image = await seedImage(upstream, `${run}/app:v1`, {
    layers: 2,
    layerSize: "512K",
    platforms: ["linux/amd64", "linux/arm64"],
    seed: "b2-layout",
    withSignature: true,
  });
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("OCI image layout with real registries", () => {
  it("carries an index registry → layout → registry with the digest intact, signature included", async () => {
    const out = await copyImage({ source: image.ref, target: `oci:${join(dir, "ours")}`, sourceOptions: anonymous });
    expect(out.digest).toBe(image.digest);
    expect(out.signaturesCopied).toBe(1);
    const tags = (
      JSON.parse(readFileSync(join(dir, "ours", "index.json"), "utf8")) as { manifests: Array<{ annotations?: Record<string, string> }> }
    ).manifests.map((m) => m.annotations?.["org.opencontainers.image.ref.name"]);
    expect(tags.sort()).toEqual([image.signature!.tag, "v1"].sort());

    const back = await copyImage({
      source: `oci-layout:${join(dir, "ours")}:v1`,
      target: `${mirror.host}/${run}/airgapped`,
      targetOptions: mirrorOptions,
    });
    expect(back.digest).toBe(image.digest);
    expect(back.signaturesCopied).toBe(1);
    expect(await digestOf(mirror, `${run}/airgapped:v1`)).toBe(image.digest);
  });

  it("writes a layout skopeo can read, with the same digest", async () => {
    await copyImage({ source: image.ref, target: `oci:${join(dir, "for-skopeo")}:v1`, sourceOptions: anonymous });
    const { stdout } = await runSkopeo(["inspect", "--raw", `oci:${join(dir, "for-skopeo")}:v1`]);
    expect(`sha256:${(await import("node:crypto")).createHash("sha256").update(stdout).digest("hex")}`).toBe(image.digest);
  });

  it("reads a layout skopeo wrote and pushes it with the digest intact", async () => {
    const layout = join(dir, "by-skopeo");
    await runSkopeo([
      "copy",
      "-q",
      "--all",
      "--preserve-digests",
      ...skopeoFlags(upstream, "src"),
      dockerRef(upstream, `${run}/app:v1`),
      `oci:${layout}:v1`,
    ]);
    const r = await copyImage({ source: `oci:${layout}:v1`, target: `${mirror.host}/${run}/from-skopeo`, targetOptions: mirrorOptions });
    expect(r.digest).toBe(image.digest);
    expect(await digestOf(mirror, `${run}/from-skopeo:v1`)).toBe(image.digest);
  });
});
