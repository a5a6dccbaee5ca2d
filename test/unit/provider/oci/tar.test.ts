// The streaming tar reader/writer checked against GNU tar, the independent implementation.
import { execFileSync } from "node:child_process";
import { createWriteStream, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { finished } from "node:stream/promises";
import { afterAll, describe, expect, it } from "vitest";
import { listTar, openTarEntry, resolveTarFile, TarWriter } from "../../../../provider/oci/tar";

const dir = mkdtempSync(join(tmpdir(), "iy-tar-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const long = `${"deep/".repeat(30)}file-with-a-name-longer-than-one-hundred-bytes.txt`;

describe("tar", () => {
  it("writes what GNU tar lists and extracts byte for byte: long names (PAX), dirs, symlinks, owners, mtimes", async () => {
    const file = join(dir, "ours.tar");
    const out = createWriteStream(file);
    const w = new TarWriter(out);
    await w.add({ name: "etc", type: "dir", size: 0, mode: 0o755, uid: 0, gid: 0, mtime: 1 });
    await w.add(
      { name: "etc/hello", type: "file", size: 5, mode: 0o644, uid: 1000, gid: 1000, uname: "me", gname: "me", mtime: 1 },
      Readable.from([Buffer.from("hel"), Buffer.from("lo")]),
    );
    await w.add({ name: long, type: "file", size: 3, mode: 0o600, uid: 0, gid: 0, mtime: 2 }, Buffer.from("abc"));
    await w.add({ name: "link", type: "symlink", size: 0, mode: 0o777, uid: 0, gid: 0, mtime: 3, linkname: "etc/hello" });
    await w.finish();
    out.end();
    await finished(out);
    const listing = execFileSync("tar", ["-tvf", file, "--numeric-owner"]).toString();
    expect(listing).toContain("1000/1000");
    expect(listing).toContain(long);
    expect(listing).toContain("link -> etc/hello");
    const x = join(dir, "x");
    mkdirSync(x);
    execFileSync("tar", ["-xf", file, "-C", x]);
    expect(execFileSync("cat", [join(x, long)]).toString()).toBe("abc");
    expect(execFileSync("cat", [join(x, "link")]).toString()).toBe("hello");
  });

  it("indexes a GNU tar with long names and links without reading file data, and opens entries by byte range", async () => {
    const src = join(dir, "src");
    mkdirSync(join(src, ...long.split("/").slice(0, -1)), { recursive: true });
    writeFileSync(join(src, long), "payload");
    symlinkSync(long, join(src, "alias"));
    const file = join(dir, "gnu.tar");
    for (const format of ["gnu", "pax"]) {
      execFileSync("tar", [`--format=${format}`, "-cf", file, "-C", src, "."]);
      const entries = await listTar(file);
      const byName = new Map(entries.map((e) => [e.name, e]));
      const target = resolveTarFile(byName, "alias")!;
      expect(target.name).toBe(long);
      const chunks: Buffer[] = [];
      for await (const c of openTarEntry(file, target)) chunks.push(c as Buffer);
      expect(Buffer.concat(chunks).toString()).toBe("payload");
    }
  });

  it("rejects a file that is not a tar, naming the byte offset", async () => {
    const file = join(dir, "junk.tar");
    writeFileSync(file, Buffer.alloc(1024, 7));
    await expect(listTar(file)).rejects.toThrow(/not a readable tar archive at byte 0 \(header checksum mismatch\)/);
  });
});
