// What an `images` entry means: normalised references, BOSH's base64 auth, retag names checked,
// archives recognised; and what a docker-archive holds (names, config digest), read in one pass.
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { decodeAuth, planImage } from "../../../../provider/node/images";
import { readArchive } from "../../../../provider/node/archive";

describe("planImage", () => {
  it("normalises references the way Docker does and keys outputs by the normalised name", () => {
    expect(planImage("nginx", 0)).toMatchObject({ key: "docker.io/library/nginx:latest", kind: "registry", retagAs: [] });
    expect(planImage({ ref: "127.0.0.1:5000/team/app:v1", retagAs: "debian-base:v2.0.0" }, 0).retagAs).toEqual([
      "docker.io/library/debian-base:v2.0.0",
    ]);
  });

  it("accepts BOSH's base64 user:password auth as well as { username, password }", () => {
    expect(decodeAuth(Buffer.from("robot:pa:ss").toString("base64"), "images[0].auth")).toEqual({ username: "robot", password: "pa:ss" });
    expect(planImage({ ref: "r.local/a:1", auth: { username: "u", password: "p" } }, 0).auth).toEqual({ username: "u", password: "p" });
    expect(() => decodeAuth("not base64 at all!", "images[3].auth")).toThrow(
      /images\[3\]\.auth: a string auth is base64 of "user:password"/,
    );
  });

  it("rejects a retagAs that is not a name, or that names a digest, naming the property", () => {
    expect(() => planImage({ ref: "r.local/a:1", retagAs: ["ok:1", "Bad Name"] }, 2)).toThrow(
      /^images\[2\]\.retagAs\[1\]: parse image reference "Bad Name"/,
    );
    expect(() => planImage({ ref: "r.local/a:1", retagAs: `r.local/a@sha256:${"0".repeat(64)}` }, 0)).toThrow(/names a digest/);
  });

  it("recognises tarballs and refuses credentials for them", () => {
    expect(planImage("docker-archive:/srv/app.tar", 0)).toMatchObject({
      kind: "archive",
      key: "docker-archive:/srv/app.tar",
      archive: { format: "docker-archive", path: "/srv/app.tar" },
    });
    expect(() => planImage({ ref: "oci-archive:/x.tar", auth: { username: "u", password: "p" } }, 1)).toThrow(
      /images\[1\]\.auth: an archive needs no credentials/,
    );
  });
});

describe("readArchive", () => {
  it("reads a docker-archive's names and hashes its config on the way (gzip too)", async () => {
    const dir = mkdtempSync(join(tmpdir(), "archive-"));
    const src = join(dir, "src");
    mkdirSync(src);
    const config = JSON.stringify({ architecture: "amd64", os: "linux", rootfs: { type: "layers", diff_ids: [] } });
    const hex = createHash("sha256").update(config).digest("hex");
    writeFileSync(join(src, `${hex}.json`), config);
    writeFileSync(
      join(src, "manifest.json"),
      JSON.stringify([{ Config: `${hex}.json`, RepoTags: ["busybox:1.35", "registry.local/tools/busybox:1.35"], Layers: [] }]),
    );
    execFileSync("tar", ["-C", src, "-cf", join(dir, "a.tar"), "manifest.json", `${hex}.json`]);
    execFileSync("sh", ["-c", `gzip -c ${join(dir, "a.tar")} > ${join(dir, "a.tar.gz")}`]);
    for (const f of ["a.tar", "a.tar.gz"]) {
      expect(await readArchive({ format: "docker-archive", path: join(dir, f) })).toEqual({
        names: ["docker.io/library/busybox:1.35", "registry.local/tools/busybox:1.35"],
        digest: `sha256:${hex}`,
      });
    }
    await expect(readArchive({ format: "oci-archive", path: join(dir, "a.tar") })).rejects.toThrow(/no index.json: not an oci-archive/);
  });
});
