// Images built from a tar or a directory (no daemon, no root), checked with skopeo: pushed to the
// real registry, the config says what was asked, the layer holds the files owned 0:0, and the same
// input gives the same digest whatever the files' owners and mtimes were.
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, utimesSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildImage, planBuild } from "../../../../provider/oci/build";
import type { RegistryOptions } from "../../../../provider/oci/registry";
import {
  checkImageFromTar,
  diffImageFromTar,
  lifecycle,
  type ImageFromTarOutputs,
} from "../../../../provider/resources/imageFromTar.lifecycle";
import { digestOf, dockerRef, runSkopeo, skopeoFlags } from "../../../testbed/images";
import { loadRegistryTestbed } from "../../../testbed/registry";

const { mirror } = loadRegistryTestbed().registries;
const run = `bld-${Date.now().toString(36)}-${randomBytes(2).toString("hex")}`;
const auth: RegistryOptions = { dockerConfig: false, credentials: { username: mirror.username!, password: mirror.password! } };
let dir: string;

function makeTree(root: string, mtime: number): void {
  mkdirSync(join(root, "bin"), { recursive: true });
  writeFileSync(join(root, "bin", "controller"), "#!/bin/sh\necho hi\n", { mode: 0o755 });
  writeFileSync(join(root, "config.yaml"), "a: 1\n");
  symlinkSync("bin/controller", join(root, "entry"));
  for (const p of ["bin/controller", "config.yaml", "bin", "."]) utimesSync(join(root, p), mtime, mtime);
}

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "iy-build-it-"));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("building an image from a tar or a directory", () => {
  it("pushes FROM scratch + ADD --chown=0:0 ovl.tar + CMD; skopeo reads the config and the digest the build reported", async () => {
    const tree = join(dir, "tree1");
    makeTree(tree, 1_600_000_000);
    const ovl = join(dir, "ovl.tar");
    execFileSync("tar", ["-cf", ovl, "-C", tree, "--owner=1234", "--group=5678", "."]);
    const target = `${mirror.host}/${run}/metallb:latest`;
    const r = await buildImage({
      source: ovl,
      target,
      cmd: ["/bin/controller"],
      env: { LOG: "debug" },
      workingDir: "/",
      user: "65534",
      labels: { team: "net" },
      exposedPorts: ["7472"],
      platform: "linux/arm64",
      targetOptions: auth,
    });
    expect(await digestOf(mirror, `${run}/metallb:latest`)).toBe(r.digest);
    const cfg = JSON.parse(
      (
        await runSkopeo(["inspect", "--config", "--raw", ...skopeoFlags(mirror), dockerRef(mirror, `${run}/metallb:latest`)])
      ).stdout.toString(),
    );
    expect(cfg).toMatchObject({
      architecture: "arm64",
      os: "linux",
      config: {
        Cmd: ["/bin/controller"],
        Env: ["LOG=debug"],
        WorkingDir: "/",
        User: "65534",
        Labels: { team: "net" },
        ExposedPorts: { "7472/tcp": {} },
      },
    });
    expect(cfg.rootfs.diff_ids).toEqual([r.diffId]);

    // The layer as skopeo fetches it: owners rewritten to 0:0, mtimes clamped to 0, the symlink kept.
    const out = join(dir, "pulled");
    await runSkopeo(["copy", "-q", ...skopeoFlags(mirror, "src"), dockerRef(mirror, `${run}/metallb:latest`), `dir:${out}`]);
    const listing = execFileSync("tar", ["-tvzf", join(out, r.layerDigest.slice(7)), "--numeric-owner"]).toString();
    expect(listing).toMatch(/-rwxr-xr-x 0\/0 +\d+ 1970-01-01 00:00 bin\/controller/);
    expect(listing).toContain("entry -> bin/controller");
    expect(listing).not.toContain("1234");

    const again = await buildImage({
      source: ovl,
      target,
      cmd: ["/bin/controller"],
      env: { LOG: "debug" },
      workingDir: "/",
      user: "65534",
      labels: { team: "net" },
      exposedPorts: ["7472"],
      platform: "linux/arm64",
      targetOptions: auth,
    });
    expect(again.upToDate).toBe(true);
  });

  it("is reproducible: the same files with other mtimes, owners and as a directory or a tar give one digest; a changed byte gives another", async () => {
    const a = join(dir, "treeA");
    const b = join(dir, "treeB");
    makeTree(a, 1_600_000_000);
    makeTree(b, 1_700_000_000);
    const tarA = join(dir, "a.tar");
    execFileSync("tar", ["-cf", tarA, "-C", a, "--owner=42", "--group=42", "--sort=name", "."]);
    const req = { target: "oci:/unused", cmd: ["/entry"] };
    const fromDirA = await planBuild({ ...req, source: a });
    const fromDirB = await planBuild({ ...req, source: b });
    expect(fromDirB.digest).toBe(fromDirA.digest);
    const fromTar = await planBuild({ ...req, source: tarA });
    expect(fromTar.diffId).toBe(fromDirA.diffId);
    writeFileSync(join(b, "config.yaml"), "a: 2\n");
    expect((await planBuild({ ...req, source: b })).digest).not.toBe(fromDirA.digest);
  });

  it("writes an oci-archive skopeo reads with the same digest", async () => {
    const tree = join(dir, "tree2");
    makeTree(tree, 1);
    const file = join(dir, "built.tar");
    const r = await buildImage({ source: tree, target: `oci-archive:${file}:v1`, entrypoint: ["/entry"] });
    const raw = (await runSkopeo(["inspect", "--raw", `oci-archive:${file}:v1`])).stdout;
    expect(`sha256:${(await import("node:crypto")).createHash("sha256").update(raw).digest("hex")}`).toBe(r.digest);
  });

  it("check puts the digest in the inputs, so a changed tar is an update of digest in preview, and an unchanged one is no change", async () => {
    const tree = join(dir, "tree3");
    makeTree(tree, 1);
    const news = {
      source: tree,
      target: `${mirror.host}/${run}/lc:v1`,
      cmd: ["/entry"],
      targetAuth: { username: mirror.username!, password: mirror.password! },
    };
    const first = await checkImageFromTar({}, news);
    expect(first.failures).toEqual([]);
    const created = await lifecycle.create(first.inputs);
    expect(created.outs.digest).toBe(first.inputs.digest);
    expect(await digestOf(mirror, `${run}/lc:v1`)).toBe(created.outs.digest);
    const same = await checkImageFromTar(created.outs, news);
    expect(diffImageFromTar(created.outs as ImageFromTarOutputs, same.inputs).changes).toBe(false);
    writeFileSync(join(tree, "config.yaml"), "changed\n");
    const changed = await checkImageFromTar(created.outs, news);
    const d = diffImageFromTar(created.outs as ImageFromTarOutputs, changed.inputs);
    expect(d.changes).toBe(true);
    expect(d.replaces ?? []).toEqual([]);
    await lifecycle.delete(created.id, created.outs);
    const gone = await lifecycle.read(created.id, created.outs);
    expect(gone.props?.targetDigest).toBe("");
  });

  it("refuses a gzipped tar in check, naming the fix", async () => {
    const tree = join(dir, "tree4");
    makeTree(tree, 1);
    const tgz = join(dir, "ovl.tar.gz");
    execFileSync("tar", ["-czf", tgz, "-C", tree, "."]);
    const r = await checkImageFromTar({}, { source: tgz, target: "oci:/tmp/x:v1" });
    expect(r.failures[0]?.reason).toMatch(/compressed.*plain tar/);
  });
});
