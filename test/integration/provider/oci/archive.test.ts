// Image archives (oci-archive:, docker-archive:) against real registries and skopeo as the
// independent peer: what we write skopeo reads with the same digests, what skopeo writes we push,
// and registry → archive → registry keeps the digest wherever the format can hold it.
import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ArchiveStore } from "../../../../provider/oci/archive";
import { copyImage, forgetKnownLocations, inspectImage } from "../../../../provider/oci/copy";
import type { RegistryOptions } from "../../../../provider/oci/registry";
import { digestOf, dockerRef, runSkopeo, seedImage, skopeoFlags, type SeededImage } from "../../../testbed/images";
import { loadRegistryTestbed } from "../../../testbed/registry";
import { caught } from "../../../support/caught";
import { checkMirror, createMirror, deleteMirror, diffMirror, readMirror } from "../../../../provider/resources/mirroredImage.lifecycle";

const { upstream, mirror } = loadRegistryTestbed().registries;
const run = `arc-${Date.now().toString(36)}-${randomBytes(2).toString("hex")}`;
const anonymous: RegistryOptions = { dockerConfig: false };
const mirrorOptions: RegistryOptions = { dockerConfig: false, credentials: { username: mirror.username!, password: mirror.password! } };
let dir: string;
let multi: SeededImage;
let single: SeededImage;

const sha = (b: Buffer) => `sha256:${createHash("sha256").update(b).digest("hex")}`;

beforeAll(async () => {
  forgetKnownLocations();
  dir = mkdtempSync(join(tmpdir(), "iy-archive-it-"));
  multi = await seedImage(upstream, `${run}/multi:v1`, {
    layers: 2,
    layerSize: "256K",
    platforms: ["linux/amd64", "linux/arm64"],
    seed: "arc-multi",
    withSignature: true,
  });
  single = await seedImage(upstream, `${run}/single:v1`, { layers: 2, layerSize: "256K", seed: "arc-single" });
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("oci-archive", () => {
  it("carries an index registry → oci-archive → registry with its digest, and skopeo reads the archive with the same digest", async () => {
    const file = join(dir, "multi.tar");
    const out = await copyImage({ source: multi.ref, target: `oci-archive:${file}`, sourceOptions: anonymous });
    expect(out.digest).toBe(multi.digest);
    expect(out.tagRef).toBe(`oci-archive:${file}:v1`);
    const { stdout } = await runSkopeo(["inspect", "--raw", `oci-archive:${file}:v1`]);
    expect(sha(stdout)).toBe(multi.digest);

    const again = await copyImage({ source: multi.ref, target: `oci-archive:${file}`, sourceOptions: anonymous });
    expect(again.upToDate).toBe(true);

    const back = await copyImage({
      source: `oci-archive:${file}:v1`,
      target: `${mirror.host}/${run}/from-oci-archive`,
      targetOptions: mirrorOptions,
    });
    expect(back.digest).toBe(multi.digest);
    expect(back.signaturesCopied).toBe(1);
    expect(await digestOf(mirror, `${run}/from-oci-archive:v1`)).toBe(multi.digest);
  });

  it("pushes an oci-archive skopeo wrote, digest intact", async () => {
    const file = join(dir, "by-skopeo-oci.tar");
    await runSkopeo([
      "copy",
      "-q",
      "--preserve-digests",
      ...skopeoFlags(upstream, "src"),
      dockerRef(upstream, `${run}/single:v1`),
      `oci-archive:${file}:v1`,
    ]);
    expect((await inspectImage(`oci-archive:${file}:v1`))?.digest).toBe(single.digest);
    const r = await copyImage({
      source: `oci-archive:${file}`,
      target: `${mirror.host}/${run}/skopeo-oci-archive:v1`,
      targetOptions: mirrorOptions,
    });
    expect(r.digest).toBe(single.digest);
    expect(await digestOf(mirror, `${run}/skopeo-oci-archive:v1`)).toBe(single.digest);
  });
});

describe("docker-archive", () => {
  it("round-trips registry → docker-archive → registry with the digest intact (the archive also stores the manifest), and skopeo and docker-style readers see the same config", async () => {
    const file = join(dir, "ours-docker.tar");
    const out = await copyImage({ source: single.ref, target: `docker-archive:${file}:team/app:v1`, sourceOptions: anonymous });
    expect(out.digest).toBe(single.digest);
    const names = JSON.parse((await tarFile(file, "manifest.json")).toString()) as Array<{ RepoTags: string[]; Config: string }>;
    expect(names[0]!.RepoTags).toEqual(["team/app:v1"]);

    const back = await copyImage({
      source: `docker-archive:${file}:team/app:v1`,
      target: `${mirror.host}/${run}/from-docker-archive:v1`,
      targetOptions: mirrorOptions,
    });
    expect(back.digest).toBe(single.digest);

    // skopeo reads manifest.json (re-encoding the manifest, as it always does for docker-archive): same config.
    const cfg = await runSkopeo(["inspect", "--config", "--raw", `docker-archive:${file}`]);
    const ourCfg = await runSkopeo([
      "inspect",
      "--config",
      "--raw",
      ...skopeoFlags(mirror),
      dockerRef(mirror, `${run}/from-docker-archive:v1`),
    ]);
    expect(sha(cfg.stdout)).toBe(sha(ourCfg.stdout));
  });

  it("reads a docker-archive skopeo wrote (no manifest inside): config and layer digests kept, a stable new manifest digest", async () => {
    const file = join(dir, "by-skopeo-docker.tar");
    await runSkopeo([
      "copy",
      "-q",
      ...skopeoFlags(upstream, "src"),
      dockerRef(upstream, `${run}/single:v1`),
      `docker-archive:${file}:${run}/single:v1`,
    ]);
    const first = await inspectImage(`docker-archive:${file}:${run}/single:v1`);
    const second = await inspectImage(`docker-archive:${file}`);
    expect(first?.digest).toBe(second?.digest);
    const r = await copyImage({
      source: `docker-archive:${file}`,
      target: `${mirror.host}/${run}/skopeo-docker-archive:v1`,
      targetOptions: mirrorOptions,
    });
    expect(r.digest).toBe(first?.digest);
    expect(await digestOf(mirror, `${run}/skopeo-docker-archive:v1`)).toBe(r.digest);
    const pushed = await runSkopeo([
      "inspect",
      "--config",
      "--raw",
      ...skopeoFlags(mirror),
      dockerRef(mirror, `${run}/skopeo-docker-archive:v1`),
    ]);
    const original = await runSkopeo(["inspect", "--config", "--raw", ...skopeoFlags(upstream), dockerRef(upstream, `${run}/single:v1`)]);
    expect(sha(pushed.stdout)).toBe(sha(original.stdout));
  });

  it("survives skopeo's round trip docker-archive → oci: → docker-archive and back into a registry", async () => {
    const ours = join(dir, "rt-ours.tar");
    await copyImage({ source: single.ref, target: `docker-archive:${ours}:rt/app:v1`, sourceOptions: anonymous });
    const layout = join(dir, "rt-layout");
    await runSkopeo(["copy", "-q", `docker-archive:${ours}`, `oci:${layout}:v1`]);
    const theirs = join(dir, "rt-theirs.tar");
    await runSkopeo(["copy", "-q", `oci:${layout}:v1`, `docker-archive:${theirs}:rt/app:v1`]);
    const r = await copyImage({
      source: `docker-archive:${theirs}:rt/app:v1`,
      target: `${mirror.host}/${run}/rt:v1`,
      targetOptions: mirrorOptions,
    });
    expect(await digestOf(mirror, `${run}/rt:v1`)).toBe(r.digest);
    // skopeo rewrites the config on its way through oci: (the layers and their diff_ids stay).
    const cfg = await runSkopeo(["inspect", "--config", "--raw", ...skopeoFlags(mirror), dockerRef(mirror, `${run}/rt:v1`)]);
    const original = await runSkopeo(["inspect", "--config", "--raw", ...skopeoFlags(upstream), dockerRef(upstream, `${run}/single:v1`)]);
    const diffIds = (b: Buffer) => (JSON.parse(b.toString()) as { rootfs: { diff_ids: string[] } }).rootfs.diff_ids;
    expect(diffIds(cfg.stdout)).toEqual(diffIds(original.stdout));
  });

  it("refuses to put a multi-platform index into a docker-archive, naming platforms as the fix; with one platform it works", async () => {
    const file = join(dir, "multi-docker.tar");
    const e = await caught(copyImage({ source: multi.ref, target: `docker-archive:${file}`, sourceOptions: anonymous }));
    expect(String((e as Error).message)).toMatch(/one platform.*platforms/);
    const r = await copyImage({
      source: multi.ref,
      target: `docker-archive:${file}`,
      sourceOptions: anonymous,
      platforms: ["linux/arm64"],
      copySignatures: false,
    });
    expect(r.platforms).toEqual(["linux/arm64"]);
    expect((await inspectImage(`docker-archive:${file}`))?.digest).toBe(r.digest);
    const { stdout } = await runSkopeo(["inspect", "--config", "--raw", `docker-archive:${file}`]);
    expect(JSON.parse(stdout.toString()).architecture).toBe("arm64");
  });
});

describe("MirroredImage with archives", () => {
  it("goes registry → oci-archive (check, create, no-change diff, read, delete removes the file) and reads an archive as a source", async () => {
    const file = join(dir, "lifecycle.tar");
    const quiet = { log: (_: string) => {} };
    const checked = await checkMirror({}, { source: multi.ref, target: `oci-archive:${file}` }, quiet);
    expect(checked.failures).toEqual([]);
    const { id, outs } = await createMirror(checked.inputs, quiet);
    expect(id).toBe(`oci-archive:${file}:v1`);
    expect(outs.digest).toBe(multi.digest);
    const again = await checkMirror(checked.inputs, { source: multi.ref, target: `oci-archive:${file}` }, quiet);
    expect(diffMirror(outs, again.inputs).changes).toBe(false);
    expect((await readMirror(id, outs)).props?.targetDigest).toBe(multi.digest);

    const fromArchive = await checkMirror(
      {},
      {
        source: `oci-archive:${file}:v1`,
        target: `${mirror.host}/${run}/lc-from-archive`,
        targetAuth: { username: mirror.username!, password: mirror.password! },
      },
      quiet,
    );
    expect(fromArchive.failures).toEqual([]);
    expect(fromArchive.inputs.sourceDigest).toBe(multi.digest);

    await deleteMirror(id, outs, quiet);
    expect((await readMirror(id, outs)).props?.targetDigest).toBe("");
  });
});

async function tarFile(file: string, name: string): Promise<Buffer> {
  const store = new ArchiveStore("docker-archive", file, "source");
  await store.read();
  const { listTar, openTarEntry } = await import("../../../../provider/oci/tar");
  const e = (await listTar(file)).find((x) => x.name === name)!;
  const chunks: Buffer[] = [];
  for await (const c of openTarEntry(file, e)) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}
