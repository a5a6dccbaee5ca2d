// ImageManifest under Pulumi's mocks: Atmosphere's YAML in, overrides merged key by key, the
// registry rewrite keeping repository paths, MirroredImage children only for `only`, outputs
// pinned by digest and the YAML written back in the input's shape.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as pulumi from "@pulumi/pulumi";
import { afterAll, describe, expect, it } from "vitest";
import { parse } from "yaml";
import type * as Module from "../../../components/imageManifest";

// Loaded after setMocks: resource modules must see the mocked runtime.
let ImageManifest: typeof Module.ImageManifest;
let resolveManifest: typeof Module.resolveManifest;

const registered: Array<{ type: string; name: string; inputs: Record<string, unknown>; parent?: string }> = [];
const dir = mkdtempSync(join(tmpdir(), "iy-manifest-"));
const D = (c: string) => `sha256:${c.repeat(64)}`;

let ready: Promise<void> | undefined;
/** Mocks set once (again would forget the resources already registered), modules loaded after. */
function mocked(): Promise<void> {
  ready ??= setUp();
  return ready;
}

async function setUp(): Promise<void> {
  await pulumi.runtime.setMocks(
    {
      newResource(args) {
        registered.push({ type: args.type, name: args.name, inputs: args.inputs });
        const target = String(args.inputs.target ?? "");
        const repo = target.replace(/:[^/:]+$/, "");
        return { id: `${args.name}-id`, state: { ...args.inputs, pinnedRef: `${repo}@${D(args.name.endsWith("api") ? "a" : "b")}` } };
      },
      call: () => ({}),
    },
    "project",
    "stack",
    false,
  );
  ({ ImageManifest, resolveManifest } = await import("../../../components/imageManifest"));
}
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const ATMOSPHERE = `atmosphere_images:
  keystone_api: quay.io/vexxhost/keystone:zed
  glance_api: quay.io/vexxhost/glance:zed
  memcached: docker.io/library/memcached:1.6.17
  bootstrap: quay.io/vexxhost/heat:zed
`;

const out = <T>(o: pulumi.Output<T>) =>
  new Promise<T>((ok) =>
    o.apply((v) => {
      ok(v);
      return v;
    }),
  );

describe("ImageManifest", () => {
  it("merges overrides over Atmosphere's file key by key and rewrites onto the registry under a prefix, repository path kept", async () => {
    await mocked();
    const file = join(dir, "atmosphere_images.yml");
    writeFileSync(file, ATMOSPHERE);
    const r = resolveManifest({
      manifestFile: file,
      overrides: { memcached: "docker.io/library/memcached:1.6.21" },
      registry: "registry.example.com:5000/mirror",
    });
    expect(r.shape.rootKey).toBe("atmosphere_images");
    expect(r.rewritten).toEqual({
      keystone_api: "registry.example.com:5000/mirror/vexxhost/keystone:zed",
      glance_api: "registry.example.com:5000/mirror/vexxhost/glance:zed",
      memcached: "registry.example.com:5000/mirror/library/memcached:1.6.21",
      bootstrap: "registry.example.com:5000/mirror/vexxhost/heat:zed",
    });
  });

  it("mirrors only the keys asked (two children resolve: no URN-dependency cycle), pins them by digest in the outputs and writes the YAML in the input's shape", async () => {
    await mocked();
    const outputFile = join(dir, "out.yml");
    const m = new ImageManifest("atmo", {
      manifestYaml: ATMOSPHERE,
      registry: "127.0.0.1:5002",
      mirror: true,
      only: ["keystone_api", "glance_api"],
      outputFile,
    });
    const images = await out(m.images);
    expect(images.keystone_api).toBe(`127.0.0.1:5002/vexxhost/keystone@${D("a")}`);
    expect(images.glance_api).toBe(`127.0.0.1:5002/vexxhost/glance@${D("a")}`);
    expect(images.memcached).toBe("127.0.0.1:5002/library/memcached:1.6.17");
    const mirrors = registered.filter((x) => x.name.startsWith("atmo-"));
    // Two children under one parent: before urnInput passed a plain promise, their URN inputs
    // depended on the component, which waits for its children: a cycle that never resolved.
    expect(mirrors.map((x) => x.name).sort()).toEqual(["atmo-glance_api", "atmo-keystone_api"]);
    expect(mirrors.find((x) => x.name === "atmo-keystone_api")!.inputs).toMatchObject({
      source: "quay.io/vexxhost/keystone:zed",
      target: "127.0.0.1:5002/vexxhost/keystone:zed",
    });
    expect(mirrors[0]!.type).toBe("pulumi-nodejs:dynamic/imageyard:MirroredImage");
    const yaml = await out(m.yaml);
    expect(parse(yaml)).toEqual({ atmosphere_images: images });
    expect(Object.keys(parse(yaml).atmosphere_images)).toEqual(["keystone_api", "glance_api", "memcached", "bootstrap"]);
    expect(parse(readFileSync(outputFile, "utf8"))).toEqual({ atmosphere_images: images });
  });

  it("takes an object and keeps a flat shape; without a registry nothing is rewritten but references are normalised", async () => {
    await mocked();
    const m = new ImageManifest("flat", { images: { web: "nginx:1.27" } });
    expect(await out(m.yaml)).toBe("web: docker.io/library/nginx:1.27\n");
  });

  it("fails before any child exists, naming the property: a bad reference, an unknown only key, mirror without registry, bad YAML", async () => {
    await mocked();
    expect(() => new ImageManifest("b1", { images: { web: "nginx:bad tag" } })).toThrow(
      /ImageManifest: images\.web: parse image reference/,
    );
    expect(() => new ImageManifest("b2", { images: { web: "nginx" }, overrides: { api: "bad ref!" } })).toThrow(/overrides\.api/);
    expect(() => new ImageManifest("b3", { images: { web: "nginx" }, registry: "r:5000", mirror: true, only: ["nope"] })).toThrow(
      /only\[0\]: "nope" is not a key/,
    );
    expect(() => new ImageManifest("b4", { images: { web: "nginx" }, mirror: true })).toThrow(/registry: mirror: true needs a registry/);
    expect(() => new ImageManifest("b5", { manifestYaml: "a: [unclosed" })).toThrow(/manifestYaml: not valid YAML/);
    expect(registered.some((x) => /^b\d-/.test(x.name))).toBe(false);
  });
});
