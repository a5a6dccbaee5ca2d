// MirroredImage through the real engine: the examples/mirror program, `pulumi` built by
// scripts/pulumi.sh, the test bed's real registries. One stack walks the whole lifecycle in
// order (each step builds on the state the previous one left), a second stack gets bad input.
import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { digestOf, dockerRef, runSkopeo, seedImage, skopeoFlags, type SeededImage } from "../testbed/images";
import { loadRegistryTestbed, type RegistryEndpoint } from "../testbed/registry";
import { exampleStack, MIRRORED_IMAGE_TYPE, resourcesOfType, storedState, type ProjectStack, type StateResource } from "./harness";

const STEP_TIMEOUT = 240_000;
const run = randomBytes(3).toString("hex");
const upstreamRepo = `e2e-${run}/app`;
const mirrorRepo = `e2e-${run}/mirror/app`;
const tag = "v1";

let upstream: RegistryEndpoint;
let mirror: RegistryEndpoint;
let main: ProjectStack;
let first: SeededImage;
let second: SeededImage;

/** Does the mirror still serve `ref` (repo:tag or repo@digest)? */
async function mirrorHas(ref: string): Promise<boolean> {
  try {
    await runSkopeo(["inspect", "--raw", ...skopeoFlags(mirror), dockerRef(mirror, ref)], { timeoutMs: 60_000 });
    return true;
  } catch (e) {
    if (/manifest unknown|not found|name unknown/i.test((e as Error).message)) return false;
    throw e;
  }
}

function mirrorConfig(source: string, password: string) {
  return {
    source: { value: source },
    target: { value: `${mirror.host}/${mirrorRepo}` },
    targetUsername: { value: mirror.username ?? "" },
    targetPassword: { value: password, secret: true },
  };
}

beforeAll(async () => {
  const tb = loadRegistryTestbed();
  upstream = tb.registries.upstream;
  mirror = tb.registries.mirror;
  first = await seedImage(upstream, `${upstreamRepo}:${tag}`, {
    platforms: ["linux/amd64", "linux/arm64"],
    layers: 2,
    layerSize: "256K",
    sharedLayers: 1,
    seed: `e2e-${run}-1`,
  });
  main = await exampleStack("mirror", "e2e", mirrorConfig(`${upstream.host}/${upstreamRepo}:${tag}`, mirror.password ?? ""));
}, STEP_TIMEOUT);

afterAll(async () => {
  // A failed step can leave resources behind: destroy whatever the stack still holds.
  try {
    if (main && (await resourcesOfType(main.stack, MIRRORED_IMAGE_TYPE)).length > 0) await main.stack.destroy();
  } finally {
    main?.cleanup();
  }
}, STEP_TIMEOUT);

describe.sequential("MirroredImage with the real pulumi engine", () => {
  it(
    "preview shows the create and the planned copy work (blobs and bytes)",
    async () => {
      const seen = main.log.diagnostics.length;
      const res = await main.stack.preview({ diff: true, onOutput: main.onOutput("preview-1"), onEvent: main.onEvent });
      expect(res.changeSummary.create).toBe(2); // the stack and the image
      // check() plans the copy against both registries and reports it through the engine.
      const said = main.log.diagnostics.slice(seen);
      const plan = said.find((l) => l.includes(`${mirror.host}/${mirrorRepo}`) && /blobs? to upload/.test(l));
      expect(plan, `no plan among the engine's diagnostics:\n${said.join("")}`).toBeDefined();
      // Two platforms of two layers with one shared, plus two configs: 5 blobs, none yet in the mirror.
      expect(plan).toMatch(/\b5 blobs to upload \(\d+(\.\d+)? (KiB|MiB)\), 0 to mount, 0 already there/);
      expect(await mirrorHas(`${mirrorRepo}:${tag}`)).toBe(false);
    },
    STEP_TIMEOUT,
  );

  it(
    "up mirrors the image and outputs the digest and pinned ref the registry serves",
    async () => {
      const seen = main.log.events.length;
      const res = await main.stack.up({ onOutput: main.onOutput("up-1"), onEvent: main.onEvent });
      expect(res.summary.result).toBe("succeeded");
      // Progress is live only (ephemeral, in the resource's row); the one-line summary stays.
      const said = main.log.events.slice(seen);
      const progress = said.filter((e) => /^blob sha256:\S+ .*(done|%)/.test(e.message));
      expect(progress.length, `no blob progress among:\n${said.map((e) => e.message).join("")}`).toBeGreaterThan(0);
      expect(progress.filter((e) => !e.ephemeral)).toEqual([]);
      expect(progress.every((e) => e.urn?.endsWith("MirroredImage::image"))).toBe(true);
      const summary = said.filter((e) => e.message.includes(`${mirror.host}/${mirrorRepo}:${tag}: ${first.digest}`));
      expect(summary).toEqual([expect.objectContaining({ ephemeral: false })]);
      // What stays on screen after the run: the Diagnostics section holds the summary, no progress.
      const diagnostics = /\nDiagnostics:\n([\s\S]*?)\n(Outputs|Resources):/.exec(res.stdout)?.[1] ?? "";
      expect(diagnostics).toContain(`${first.digest}`);
      expect(diagnostics).not.toMatch(/blob sha256:\S+ .*%/);
      const outs = res.outputs;
      expect(outs.digest?.value).toBe(first.digest);
      expect(outs.sourceDigest?.value).toBe(first.digest);
      expect(outs.pinnedRef?.value).toBe(`${mirror.host}/${mirrorRepo}@${first.digest}`);
      expect(outs.tagRef?.value).toBe(`${mirror.host}/${mirrorRepo}:${tag}`);
      expect([...(outs.platforms!.value as string[])].sort()).toEqual(["linux/amd64", "linux/arm64"]);
      // An independent look (skopeo) at what the mirror now serves.
      expect(await digestOf(mirror, `${mirrorRepo}:${tag}`)).toBe(first.digest);
    },
    STEP_TIMEOUT,
  );

  it(
    "a second preview of an unchanged upstream shows no changes",
    async () => {
      const res = await main.stack.preview({ diff: true, onOutput: main.onOutput("preview-2"), onEvent: main.onEvent });
      expect(res.changeSummary).toEqual({ same: 2 });
    },
    STEP_TIMEOUT,
  );

  it(
    "an upstream tag pushed anew shows as an update from the old to the new digest, and up applies it",
    async () => {
      second = await seedImage(upstream, `${upstreamRepo}:${tag}`, {
        platforms: ["linux/amd64", "linux/arm64"],
        layers: 2,
        layerSize: "256K",
        sharedLayers: 1,
        seed: `e2e-${run}-2`,
      });
      expect(second.digest).not.toBe(first.digest);
      const pre = await main.stack.preview({ diff: true, onOutput: main.onOutput("preview-3"), onEvent: main.onEvent });
      expect(pre.changeSummary.update).toBe(1);
      expect(pre.stdout).toContain(first.digest);
      expect(pre.stdout).toContain(second.digest);
      const up = await main.stack.up({ onOutput: main.onOutput("up-2"), onEvent: main.onEvent });
      expect(up.summary.resourceChanges?.update).toBe(1);
      expect(up.outputs.digest?.value).toBe(second.digest);
      expect(await digestOf(mirror, `${mirrorRepo}:${tag}`)).toBe(second.digest);
    },
    STEP_TIMEOUT,
  );

  it(
    "a mirrored tag deleted out of band shows as drift on refresh, and up puts it back",
    async () => {
      await runSkopeo(["delete", ...skopeoFlags(mirror), dockerRef(mirror, `${mirrorRepo}@${second.digest}`)]);
      expect(await mirrorHas(`${mirrorRepo}:${tag}`)).toBe(false);
      const refresh = await main.stack.refresh({ onOutput: main.onOutput("refresh-1"), onEvent: main.onEvent });
      expect(refresh.summary.resourceChanges?.update).toBe(1);
      const [image] = await resourcesOfType(main.stack, MIRRORED_IMAGE_TYPE);
      expect(image?.outputs?.targetDigest).toBe("");
      const pre = await main.stack.preview({ diff: true, onOutput: main.onOutput("preview-4"), onEvent: main.onEvent });
      expect(pre.changeSummary.update).toBe(1);
      await main.stack.up({ onOutput: main.onOutput("up-3"), onEvent: main.onEvent });
      expect(await digestOf(mirror, `${mirrorRepo}:${tag}`)).toBe(second.digest);
      const after = await main.stack.preview({ diff: true, onOutput: main.onOutput("preview-5"), onEvent: main.onEvent });
      expect(after.changeSummary).toEqual({ same: 2 });
    },
    STEP_TIMEOUT,
  );

  it(
    "the registry password is encrypted in the stack state and absent from all engine output",
    async () => {
      const password = mirror.password ?? "";
      expect(password.length).toBeGreaterThan(8);
      const stored = storedState(main);
      expect(stored).not.toContain(password);
      const resources = (JSON.parse(stored) as { checkpoint: { latest: { resources: StateResource[] } } }).checkpoint.latest.resources;
      const image = resources.find((r) => r.type === MIRRORED_IMAGE_TYPE);
      expect(JSON.stringify(image?.inputs?.targetAuth)).toMatch(/ciphertext/);
      expect(JSON.stringify(image?.outputs?.targetAuth)).toMatch(/ciphertext/);
      expect(main.log.text.length).toBeGreaterThan(0);
      expect(main.log.all()).not.toContain(password);
    },
    STEP_TIMEOUT,
  );

  it(
    "state written by a different provider build still refreshes, and the code change shows as an update",
    async () => {
      const older = await withProviderCodeFromAnotherBuild(main);
      const refresh = await main.stack.refresh({ onOutput: main.onOutput("refresh-2"), onEvent: main.onEvent });
      expect(refresh.summary.result).toBe("succeeded");
      expect(refresh.summary.resourceChanges?.update ?? 0).toBe(0);
      const pre = await main.stack.preview({ diff: true, onOutput: main.onOutput("preview-6"), onEvent: main.onEvent });
      expect(pre.changeSummary.update).toBe(1);
      await main.stack.up({ onOutput: main.onOutput("up-4"), onEvent: main.onEvent });
      const [image] = await resourcesOfType(main.stack, MIRRORED_IMAGE_TYPE);
      expect(image?.outputs?.__provider).not.toBe(older);
      expect(image?.outputs?.digest).toBe(second.digest);
    },
    STEP_TIMEOUT,
  );

  it(
    "destroy with state from another provider build removes the tag and the manifest it created",
    async () => {
      await withProviderCodeFromAnotherBuild(main);
      const res = await main.stack.destroy({ onOutput: main.onOutput("destroy"), onEvent: main.onEvent });
      expect(res.summary.resourceChanges?.delete).toBe(2);
      expect(await resourcesOfType(main.stack, MIRRORED_IMAGE_TYPE)).toEqual([]);
      expect(await mirrorHas(`${mirrorRepo}:${tag}`)).toBe(false);
      expect(await mirrorHas(`${mirrorRepo}@${second.digest}`)).toBe(false);
      // The upstream is untouched.
      expect(await digestOf(upstream, `${upstreamRepo}:${tag}`)).toBe(second.digest);
    },
    STEP_TIMEOUT,
  );
});

describe.sequential("MirroredImage bad input fails the preview with a clear message and creates nothing", () => {
  let bad: ProjectStack;
  const source = () => `${upstream.host}/${upstreamRepo}:${tag}`;

  beforeAll(async () => {
    bad = await exampleStack("mirror", "bad", mirrorConfig(source(), mirror.password ?? ""));
  }, STEP_TIMEOUT);
  afterAll(() => bad?.cleanup());

  async function previewFailure(config: ReturnType<typeof mirrorConfig>, label: string): Promise<string> {
    await bad.stack.setAllConfig(config);
    const err = await bad.stack.preview({ onOutput: bad.onOutput(label), onEvent: bad.onEvent }).then(
      () => undefined,
      (e: unknown) => e as Error,
    );
    expect(err, "preview should fail").toBeInstanceOf(Error);
    expect(await resourcesOfType(bad.stack, MIRRORED_IMAGE_TYPE)).toEqual([]);
    return err?.message ?? "";
  }

  it(
    "an invalid source reference names the property and what is wrong",
    async () => {
      const message = await previewFailure(mirrorConfig(`${upstream.host}/Not A Repo:v1`, mirror.password ?? ""), "bad-ref");
      expect(message).toMatch(/property source/);
      expect(message).toMatch(/Not A Repo/);
    },
    STEP_TIMEOUT,
  );

  it(
    "an unknown upstream tag says it was not found",
    async () => {
      const message = await previewFailure(mirrorConfig(`${upstream.host}/${upstreamRepo}:no-such-tag`, mirror.password ?? ""), "bad-tag");
      expect(message).toMatch(/property source/);
      expect(message).toMatch(/no-such-tag/);
      expect(message).toMatch(/not found|unknown/i);
    },
    STEP_TIMEOUT,
  );

  it(
    "wrong mirror credentials name targetAuth and the refusal, without echoing the password",
    async () => {
      const wrong = `wrong-${randomBytes(6).toString("hex")}`;
      const message = await previewFailure(mirrorConfig(source(), wrong), "bad-creds");
      expect(message).toMatch(/targetAuth/);
      expect(message).toMatch(/401|unauthori[sz]ed|refused/i);
      expect(message).not.toContain(wrong);
      expect(bad.log.all()).not.toContain(wrong);
      expect(await mirrorHas(`${mirrorRepo}:${tag}`)).toBe(false);
    },
    STEP_TIMEOUT,
  );
});

/**
 * Rewrites the image's serialized provider in state as if an earlier build of imageyard had
 * written it (different code, same behaviour); returns that code.
 */
async function withProviderCodeFromAnotherBuild(ps: ProjectStack): Promise<string> {
  const state = await ps.stack.exportStack();
  const resources = (
    state.deployment as { resources: { type: string; inputs?: Record<string, unknown>; outputs?: Record<string, unknown> }[] }
  ).resources;
  const image = resources.find((r) => r.type === MIRRORED_IMAGE_TYPE);
  const current = image?.outputs?.__provider;
  if (!image?.outputs || !image.inputs || typeof current !== "string")
    throw new Error("no MirroredImage with a serialized provider in state");
  const older = `${current}\n// serialized by another imageyard build\n`;
  image.outputs.__provider = older;
  image.inputs.__provider = older;
  await ps.stack.importStack(state);
  return older;
}
