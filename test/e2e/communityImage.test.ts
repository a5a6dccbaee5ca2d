// CommunityImage through the real Pulumi engine: the examples/openstack-community-images program,
// `pulumi` from scripts/pulumi.sh, the real Keystone + Glance of the test bed and images from the
// disk image server. One stack walks the lifecycle in order: create, no-op preview, in-place
// update, replacement (new image active before the old one is deleted), drift found by refresh
// and undone by up, destroy leaving nothing in Glance.
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import type { EngineEvent } from "@pulumi/pulumi/automation";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { findImage, patchImage, type GlanceClient } from "../../provider/glance/images";
import type { GlanceTestbed } from "../testbed/glance";
import { bed, disks, glanceAs, imageUrl, sweep, uniqueName } from "../integration/provider/glance/helpers";
import { exampleStack, resourcesOfType, type ProjectStack } from "./harness";

const STEP_TIMEOUT = 240_000;
const TYPE = "pulumi-nodejs:dynamic/imageyard:CommunityImage";

let tb: GlanceTestbed;
let demo: GlanceClient;
let main: ProjectStack;
const nameA = uniqueName("e2e-a");
const nameB = uniqueName("e2e-b");

function catalogue(over: { aProps?: Record<string, string>; bUrl?: string; bChecksum?: string } = {}) {
  const f = disks().files;
  return {
    a: {
      name: nameA,
      url: imageUrl("disk.qcow2"),
      checksum: `sha256:${f["disk.qcow2"]!.sha256}`,
      format: "qcow2",
      login: "cirros",
      properties: over.aProps ?? { os_distro: "cirros" },
    },
    b: {
      name: nameB,
      url: over.bUrl ?? imageUrl("disk.qcow2"),
      checksum: over.bChecksum ?? `sha512:${f["disk.qcow2"]!.sha512}`,
      minRam: 64,
    },
  };
}

function stateFiles(dir: string): string[] {
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile() && e.name.endsWith(".json"))
    .map((e) => join(e.parentPath, e.name));
}

async function setImages(c: ReturnType<typeof catalogue>): Promise<void> {
  await main.stack.setConfig("images", { value: JSON.stringify(c) });
}

async function ids(): Promise<Record<string, string>> {
  return (await main.stack.outputs()).imageIds!.value as Record<string, string>;
}

beforeAll(async () => {
  tb = await bed();
  demo = await glanceAs(tb, "demo");
  const a = tb.accounts.demo;
  main = await exampleStack("openstack-community-images", "e2e", {
    authUrl: { value: tb.authUrl },
    username: { value: a.username },
    password: { value: a.password, secret: true },
    projectName: { value: a.projectName },
    region: { value: tb.region },
    diskFormat: { value: "qcow2" },
    images: { value: JSON.stringify(catalogue()) },
  });
}, STEP_TIMEOUT);

afterAll(async () => {
  try {
    if (main && (await resourcesOfType(main.stack, TYPE)).length > 0) await main.stack.destroy();
  } finally {
    main?.cleanup();
    if (demo) await sweep(demo, "iy-test-e2e");
  }
}, STEP_TIMEOUT);

describe.sequential("CommunityImage with the real pulumi engine", () => {
  it(
    "up publishes both images as active community images and exports key → ID; the password is not in state in clear",
    async () => {
      const res = await main.stack.up({ onOutput: main.onOutput("up-1") });
      expect(res.summary.result).toBe("succeeded");
      const out = await ids();
      expect(Object.keys(out).sort()).toEqual(["a", "b"]);
      for (const id of Object.values(out)) {
        const img = await findImage(demo, id);
        expect(img?.status).toBe("active");
        expect(img?.visibility).toBe("community");
        expect(img?.os_hash_value).toBe(disks().files["disk.qcow2"]!.sha512);
      }
      // The state on disk (not `stack export`, which decrypts) holds the credentials only as ciphertext.
      const state = stateFiles(join(main.workDir, "..", "backend")).map((f) => readFileSync(f, "utf8"));
      expect(state.some((t) => t.includes(nameA) && t.includes('"credentials"') && t.includes("ciphertext"))).toBe(true);
      expect(state.some((t) => t.includes(tb.accounts.demo.password))).toBe(false);
    },
    STEP_TIMEOUT,
  );

  it(
    "a second preview on the unchanged stack shows no changes",
    async () => {
      const res = await main.stack.preview({ onOutput: main.onOutput("preview-same") });
      expect(res.changeSummary).toEqual({ same: 3 });
    },
    STEP_TIMEOUT,
  );

  it(
    "changing a property updates image a in place: same ID, new property in Glance",
    async () => {
      const before = await ids();
      await setImages(catalogue({ aProps: { os_distro: "cirros", os_version: "0.6" } }));
      const res = await main.stack.up({ onOutput: main.onOutput("up-update") });
      expect(res.summary.resourceChanges?.update).toBe(1);
      const after = await ids();
      expect(after.a).toBe(before.a);
      expect((await findImage(demo, after.a!))?.os_version).toBe("0.6");
    },
    STEP_TIMEOUT,
  );

  it(
    "a new source for image b replaces it: the new image is created (and active) before the old one is deleted",
    async () => {
      const before = await ids();
      const gz = disks().files["disk.qcow2.gz"]!;
      await setImages(
        catalogue({
          aProps: { os_distro: "cirros", os_version: "0.6" },
          bUrl: imageUrl("disk.qcow2.gz"),
          bChecksum: `sha256:${gz.sha256}`,
        }),
      );
      const ops: string[] = [];
      const res = await main.stack.up({
        onOutput: main.onOutput("up-replace"),
        onEvent: (e: EngineEvent) => {
          const m = e.resOutputsEvent?.metadata;
          if (m && m.type === TYPE && (m.op === "create-replacement" || m.op === "delete-replaced")) ops.push(m.op);
        },
      });
      expect(res.summary.resourceChanges?.replace).toBe(1);
      expect(ops).toEqual(["create-replacement", "delete-replaced"]);
      const after = await ids();
      expect(after.b).not.toBe(before.b);
      expect((await findImage(demo, after.b!))?.status).toBe("active");
      expect(await findImage(demo, before.b!)).toBeUndefined();
    },
    STEP_TIMEOUT,
  );

  it(
    "an out-of-band edit in Glance shows after refresh as an update, and up puts it back",
    async () => {
      const { a } = await ids();
      await patchImage(demo, a!, [{ op: "replace", path: "/min_ram", value: 2048 }]);
      const refresh = await main.stack.refresh({ onOutput: main.onOutput("refresh") });
      expect(refresh.summary.resourceChanges?.update).toBe(1);
      const pre = await main.stack.preview({ onOutput: main.onOutput("preview-drift") });
      expect(pre.changeSummary.update).toBe(1);
      await main.stack.up({ onOutput: main.onOutput("up-drift") });
      expect((await findImage(demo, a!))?.min_ram).toBe(0);
      expect((await main.stack.preview({ onOutput: main.onOutput("preview-after-drift") })).changeSummary).toEqual({ same: 3 });
    },
    STEP_TIMEOUT,
  );

  it(
    "preview fails on what an up would fail on: a wrong Keystone password, a file:// source, a 100 TiB qcow2, a missing checksum",
    async () => {
      const good = catalogue();
      const cases: Array<[string, () => Promise<void>, RegExp]> = [
        [
          "wrong password",
          () => main.stack.setConfig("password", { value: "not-the-password", secret: true }),
          /property credentials .*has a problem: .*(401 Unauthorized)/,
        ],
        [
          "file://",
          () => setImages({ ...good, b: { ...good.b, url: "file:///etc/passwd", checksum: "unverified" } }),
          /file:\/\/ URLs read files of the host .* allowLocalFiles: true/,
        ],
        [
          "size bomb",
          () => setImages({ ...good, b: { ...good.b, url: imageUrl("huge.qcow2"), checksum: "unverified" } }),
          /property maxVirtualSize .*declares a virtual size of 100(\.0)? TiB/,
        ],
        [
          "no checksum",
          () => setImages({ ...good, b: { ...good.b, checksum: undefined as never } }),
          /source\.checksum or source\.checksumUrl is required/,
        ],
      ];
      try {
        for (const [label, set, expected] of cases) {
          await set();
          const out: string[] = [];
          const err = await main.stack.preview({ onOutput: (l) => out.push(l) }).then(
            () => undefined,
            (e: unknown) => e as Error,
          );
          expect(err, `${label}: preview should fail`).toBeDefined();
          expect(`${out.join("")}\n${err?.message}`, label).toMatch(expected);
          await main.stack.setConfig("password", { value: tb.accounts.demo.password, secret: true });
          await setImages(
            catalogue({
              aProps: { os_distro: "cirros", os_version: "0.6" },
              bUrl: imageUrl("disk.qcow2.gz"),
              bChecksum: `sha256:${disks().files["disk.qcow2.gz"]!.sha256}`,
            }),
          );
        }
        // checksum "unverified" is accepted, and the preview says so.
        await setImages(
          catalogue({ aProps: { os_distro: "cirros", os_version: "0.6" }, bUrl: imageUrl("disk.qcow2.gz"), bChecksum: "unverified" }),
        );
        const diags: string[] = [];
        await main.stack.preview({ onEvent: (e: EngineEvent) => e.diagnosticEvent && diags.push(e.diagnosticEvent.message) });
        expect(diags.join("")).toMatch(/source\.checksum is "unverified"/);
      } finally {
        await main.stack.setConfig("password", { value: tb.accounts.demo.password, secret: true });
        await setImages(
          catalogue({
            aProps: { os_distro: "cirros", os_version: "0.6" },
            bUrl: imageUrl("disk.qcow2.gz"),
            bChecksum: `sha256:${disks().files["disk.qcow2.gz"]!.sha256}`,
          }),
        );
      }
    },
    STEP_TIMEOUT,
  );

  it(
    "destroy deletes both images from Glance",
    async () => {
      const out = await ids();
      const res = await main.stack.destroy({ onOutput: main.onOutput("destroy") });
      expect(res.summary.result).toBe("succeeded");
      for (const id of Object.values(out)) expect(await findImage(demo, id)).toBeUndefined();
    },
    STEP_TIMEOUT,
  );
});
