// TagSync against the real registry test bed: it lists the upstream repository's tags and makes
// one MirroredImage per selected tag (registrations under Pulumi's mocks); a tag pushed later is a
// new child on the next run, which is how it shows in preview.
import { randomBytes } from "node:crypto";
import * as pulumi from "@pulumi/pulumi";
import { describe, expect, it } from "vitest";
import type * as Module from "../../../components/tagSync";
import { seedImage } from "../../testbed/images";
import { loadRegistryTestbed } from "../../testbed/registry";

const { upstream, mirror } = loadRegistryTestbed().registries;
const run = `ts-${Date.now().toString(36)}-${randomBytes(2).toString("hex")}`;
const registered: string[] = [];

describe("TagSync", () => {
  it("mirrors the tags of the source that match the range, one MirroredImage each; a new tag is a new child on the next run", async () => {
    for (const tag of ["1.0.0", "1.1.0", "2.0.0", "latest"])
      await seedImage(upstream, `${run}/app:${tag}`, { layers: 1, layerSize: "16K", seed: `${run}-${tag}` });
    await pulumi.runtime.setMocks(
      {
        newResource: (a) => {
          registered.push(a.name);
          return {
            id: `${a.name}-id`,
            state: { ...a.inputs, pinnedRef: `${String(a.inputs.target).replace(/:[^/:]+$/, "")}@sha256:${"e".repeat(64)}` },
          };
        },
        call: () => ({}),
      },
      "project",
      "stack",
      false,
    );
    const { TagSync } = (await import("../../../components/tagSync")) as typeof Module;
    const args = { source: `${upstream.host}/${run}/app`, target: `${mirror.host}/${run}/app`, semver: "^1" };
    const first = new TagSync("sync", args);
    expect(await new Promise((ok) => first.tags.apply(ok))).toEqual(["1.1.0", "1.0.0"]);
    const pinned = await new Promise<Record<string, string>>((ok) => first.pinned.apply(ok));
    expect(pinned["1.1.0"]).toBe(`${mirror.host}/${run}/app@sha256:${"e".repeat(64)}`);
    expect(registered).toEqual(expect.arrayContaining(["sync-1.1.0", "sync-1.0.0"]));
    expect(registered).not.toContain("sync-2.0.0");

    await seedImage(upstream, `${run}/app:1.2.0`, { layers: 1, layerSize: "16K", seed: `${run}-1.2.0` });
    const second = new TagSync("sync2", args);
    expect(await new Promise((ok) => second.tags.apply(ok))).toEqual(["1.2.0", "1.1.0", "1.0.0"]);
  });
});
