// The MirroredImage lifecycle (check → create → read → diff → update → delete) against the real
// registries of the test bed: what the dynamic provider does under `pulumi up`, minus the engine.
import { randomBytes } from "node:crypto";
import { beforeAll, describe, expect, it } from "vitest";
import { RegistryClient } from "../../../../provider/oci/registry";
import {
  checkMirror,
  createMirror,
  deleteMirror,
  diffMirror,
  readMirror,
  updateMirror,
  type MirrorInputs,
  type MirrorOutputs,
} from "../../../../provider/resources/mirroredImage.lifecycle";
import { digestOf, seedImage, type SeededImage } from "../../../testbed/images";
import { loadRegistryTestbed } from "../../../testbed/registry";

const { upstream, mirror, token } = loadRegistryTestbed().registries;
const run = `mir-${Date.now().toString(36)}-${randomBytes(2).toString("hex")}`;
const mirrorAuth = { username: mirror.username!, password: mirror.password! };
const quiet = { log: (_: string) => {} };

let v1: SeededImage;
let v2: SeededImage;

beforeAll(async () => {
  v1 = await seedImage(upstream, `${run}/app:v1`, {
    layers: 2,
    layerSize: "128K",
    platforms: ["linux/amd64", "linux/arm64"],
    seed: `${run}-1`,
    withSignature: true,
  });
  v2 = await seedImage(upstream, `${run}/app:next`, { layers: 2, layerSize: "128K", seed: `${run}-2` });
});

function inputs(extra: Partial<MirrorInputs> = {}): MirrorInputs {
  return { source: `${upstream.host}/${run}/app:v1`, target: `${mirror.host}/${run}/mirror/app`, targetAuth: mirrorAuth, ...extra };
}

describe("MirroredImage lifecycle against distribution 2.8", () => {
  let state: MirrorOutputs;

  it("check resolves the upstream tag to its digest and logs the planned work", async () => {
    const lines: string[] = [];
    const { inputs: checked, failures } = await checkMirror({}, inputs(), { log: (l) => lines.push(l) });
    expect(failures).toEqual([]);
    // (an earlier test moves app:v1, so the digest is whatever the tag holds now)
    expect(checked.sourceDigest).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(lines.join("\n")).toMatch(/blobs? to upload/);
  });

  it("create copies the image; outputs carry the source digest and a pinned ref", async () => {
    const { inputs: checked } = await checkMirror({}, inputs(), quiet);
    const { id, outs } = await createMirror(checked, quiet);
    state = outs;
    expect(id).toBe(`${mirror.host}/${run}/mirror/app:v1`);
    expect(outs.digest).toBe(v1.digest);
    expect(outs.pinnedRef).toBe(`${mirror.host}/${run}/mirror/app@${v1.digest}`);
    expect(outs.platforms).toEqual(["linux/amd64", "linux/arm64"]);
    expect(outs.signaturesCopied).toBe(1);
    expect(outs.targetDigest).toBe(v1.digest);
    expect(await digestOf(mirror, `${run}/mirror/app:v1`)).toBe(v1.digest);
  });

  it("a second check + diff on an unchanged upstream is no change", async () => {
    const { inputs: checked } = await checkMirror(state, inputs(), quiet);
    expect(diffMirror(state, checked)).toEqual({ changes: false });
  });

  it("an upstream tag that moved is an update, and update mirrors the new digest", async () => {
    await seedImage(upstream, `${run}/app:v1`, { layers: 2, layerSize: "128K", seed: `${run}-2` });
    const { inputs: checked } = await checkMirror(state, inputs(), quiet);
    expect(checked.sourceDigest).toBe(v2.digest);
    expect(diffMirror(state, checked)).toEqual({ changes: true });
    state = await updateMirror(state, checked, quiet);
    expect(state.digest).toBe(v2.digest);
    expect(await digestOf(mirror, `${run}/mirror/app:v1`)).toBe(v2.digest);
  });

  it("read shows a tag deleted out of band as drift, and the next diff repairs it", async () => {
    const client = new RegistryClient(mirror.host, { credentials: mirrorAuth, dockerConfig: false });
    expect(await client.deleteManifest(`${run}/mirror/app`, state.digest)).toBe(true);
    const { props } = await readMirror(state.tagRef, state);
    expect(props.targetDigest).toBe("");
    const { inputs: checked } = await checkMirror(props, inputs(), quiet);
    expect(diffMirror(props, checked)).toEqual({ changes: true });
    state = await updateMirror(props, checked, quiet);
    expect(await digestOf(mirror, `${run}/mirror/app:v1`)).toBe(v2.digest);
  });

  it("delete never removes a manifest another tag still points at (2.8 cannot delete a tag alone)", async () => {
    const other = await createMirror((await checkMirror({}, inputs({ source: `${upstream.host}/${run}/app:next` }), quiet)).inputs, quiet);
    expect(other.outs.digest).toBe(v2.digest); // same digest, another tag
    const lines: string[] = [];
    await deleteMirror(state.tagRef, state, { log: (l) => lines.push(l) });
    const client = new RegistryClient(mirror.host, { credentials: mirrorAuth, dockerConfig: false });
    // distribution 2.8 cannot delete a tag alone; the shared manifest must survive for "next"
    expect(lines.join("\n")).toMatch(/tag next still points at/);
    expect((await client.headManifest(`${run}/mirror/app`, "next"))?.digest).toBe(v2.digest);
    // …and once the tag v1 it could not remove still holds the manifest, the second delete says so
    // rather than pulling the image from under it.
    lines.length = 0;
    await deleteMirror(other.id, other.outs, { log: (l) => lines.push(l) });
    expect(lines.join("\n")).toMatch(/tag v1 still points at .*kept the manifest/);
  });

  it("delete of the only tag on a manifest removes the image from the mirror", async () => {
    const { inputs: checked } = await checkMirror(
      {},
      inputs({ source: `${upstream.host}/${run}/app:next`, target: `${mirror.host}/${run}/solo/app` }),
      quiet,
    );
    const { id, outs } = await createMirror(checked, quiet);
    await deleteMirror(id, outs, quiet);
    const client = new RegistryClient(mirror.host, { credentials: mirrorAuth, dockerConfig: false });
    expect(await client.headManifest(`${run}/solo/app`, outs.digest)).toBeUndefined();
    expect(await client.headManifest(`${run}/solo/app`, "next")).toBeUndefined();
  });
});

describe("MirroredImage check fails clearly on bad input", () => {
  it("an unknown tag fails on source with MANIFEST_UNKNOWN wording", async () => {
    const { failures } = await checkMirror({}, inputs({ source: `${upstream.host}/${run}/app:nope` }), quiet);
    expect(failures).toHaveLength(1);
    expect(failures[0]!.property).toBe("source");
    expect(failures[0]!.reason).toMatch(/not found/i);
  });

  it("wrong target credentials fail on targetAuth without echoing the password", async () => {
    const { failures } = await checkMirror({}, inputs({ targetAuth: { username: mirror.username!, password: "wrong-pass-xyz" } }), quiet);
    expect(failures).toHaveLength(1);
    expect(failures[0]!.property).toBe("targetAuth");
    expect(failures[0]!.reason).toContain(mirror.host);
    expect(failures[0]!.reason).not.toContain("wrong-pass-xyz");
  });

  it("a pull-only token user fails on targetAuth when the target needs push", async () => {
    const { failures } = await checkMirror({}, inputs({ target: `${token.host}/${run}/app`, targetAuth: token.pullUser! }), quiet);
    expect(failures.map((f) => f.property)).toEqual(["targetAuth"]);
  });

  it("a pull-only token user passes check for a mirror that is already up to date (the push probe runs alongside, its refusal ignored)", async () => {
    const target = `${token.host}/${run}/uptodate`;
    await createMirror(inputs({ target, targetAuth: token.pushUser! }), quiet);
    const lines: string[] = [];
    const { failures, inputs: checked } = await checkMirror({}, inputs({ target, targetAuth: token.pullUser! }), {
      log: (l) => lines.push(l),
    });
    expect(failures).toEqual([]);
    // (an earlier test moves app:v1, so the digest is whatever the tag holds now)
    expect(checked.sourceDigest).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(lines.join("\n")).toMatch(/up to date|nothing to (do|copy)/i);
  });

  it("an unreachable upstream fails a new mirror but only warns for an existing one", async () => {
    const down = inputs({ source: `127.0.0.1:1/${run}/app:v1` });
    const fresh = await checkMirror({}, down, quiet);
    expect(fresh.failures[0]!.property).toBe("source");
    const lines: string[] = [];
    const kept = await checkMirror({ ...down, sourceDigest: v1.digest }, down, { log: (l) => lines.push(l) });
    expect(kept.failures).toEqual([]);
    expect(kept.inputs.sourceDigest).toBe(v1.digest);
    expect(lines.join("\n")).toMatch(/warning: .*keeping the last resolved digest/);
  });
});
