// Faults an outside probe found in the disk pipeline, each against the real disk image server,
// qemu-img and a real (tmpfs) file system: a size bomb, a full scratch disk without Content-Length,
// file:// sources, servers that close or go silent mid-body, and scratch left by killed runs.
import { execFileSync, spawn } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { isImageyardError } from "../../../../provider/http/errors";
import { prepareImage, type PrepareOptions } from "../../../../provider/disk/prepare";
import { openDownload } from "../../../../provider/disk/fetch";
import { streamImage } from "../../../../provider/disk/direct";
import { OWNER_FILE, processStart } from "../../../../provider/disk/owner";
import { reclaimStale } from "../../../../provider/disk/scratch";
import { hashStream, imageUrl, scratchBase, testbed } from "./helpers";

let scratch: ReturnType<typeof scratchBase>;
beforeEach(() => {
  scratch = scratchBase();
});
afterEach(() => scratch.remove());

async function failure(p: Promise<unknown>): Promise<{ code: string; message: string }> {
  try {
    await p;
  } catch (e) {
    if (!isImageyardError(e)) throw e;
    return { code: e.code, message: e.message };
  }
  throw new Error("expected a failure");
}

const MiB = 1024 * 1024;
const token = () => Math.random().toString(36).slice(2);

describe("size bound (maxVirtualSize)", () => {
  it("a 100 TiB qcow2 going to raw fails from its header, before the download ends and with nothing left in scratch", async () => {
    const r = await failure(prepareImage({ url: imageUrl("huge.qcow2") }, { diskFormat: "raw", scratchDir: scratch.dir }));
    expect(r.code).toBe("SIZE_MISMATCH");
    expect(r.message).toMatch(/declares a virtual size of 100(\.0)? TiB .* over maxVirtualSize 64(\.0)? GiB/);
    expect(scratch.leftovers().filter((n) => n.startsWith("op-"))).toEqual([]);
  });

  it("the same bomb inside a gzip is refused too, and so is the no-scratch direct stream", async () => {
    expect(
      (await failure(prepareImage({ url: imageUrl("huge.qcow2.gz") }, { diskFormat: "raw", scratchDir: scratch.dir }))).message,
    ).toMatch(/declares a virtual size/);
    expect((await failure(streamImage({ url: imageUrl("huge.qcow2") }, { diskFormat: "qcow2" }))).message).toMatch(
      /declares a virtual size/,
    );
  });

  it("a small gzip that expands past the bound stops while decompressing (64 MiB of zeros, bound 16 MiB)", async () => {
    const r = await failure(
      prepareImage({ url: imageUrl("zeros.raw.gz") }, { diskFormat: "raw", scratchDir: scratch.dir, maxVirtualSize: 16 * MiB }),
    );
    expect(r.code).toBe("SIZE_MISMATCH");
    expect(r.message).toMatch(/grew past \d+ bytes while decompressing, over maxVirtualSize 16(\.0)? MiB/);
    expect(scratch.leftovers().filter((n) => n.startsWith("op-"))).toEqual([]);
  });

  it("an image within the bound passes (24 MiB qcow2, bound 32 MiB)", async () => {
    const img = await prepareImage(
      { url: imageUrl("disk.qcow2") },
      { diskFormat: "raw", scratchDir: scratch.dir, maxVirtualSize: 32 * MiB },
    );
    expect(img.virtualSize).toBe(24 * MiB);
    await img.cleanup();
  });
});

describe("local files", () => {
  it("file:// is refused unless allowLocalFiles is set (and /etc/passwd is never read by default)", async () => {
    const r = await failure(prepareImage({ url: "file:///etc/passwd" }, { diskFormat: "raw", scratchDir: scratch.dir }));
    expect(r.message).toMatch(/file:\/\/ URLs read files of the host .* set allowLocalFiles: true/);
    const url = pathToFileURL(join(testbed().dir, "disk.qcow2")).href;
    const img = await prepareImage({ url }, { diskFormat: "qcow2", scratchDir: scratch.dir, allowLocalFiles: true });
    expect(img.sourceFormat).toBe("qcow2");
    await img.cleanup();
  });
});

describe("compression spellings", () => {
  for (const [given, file] of [
    ["gzip", "disk.qcow2.gz"],
    ["gz", "disk.qcow2.gz"],
    ["bzip2", "disk.qcow2.bz2"],
    ["zstd", "disk.qcow2.zst"],
    ["zst", "disk.qcow2.zst"],
  ] as const) {
    it(`source.compression "${given}" decompresses ${file}`, async () => {
      const img = await prepareImage({ url: imageUrl(file), compression: given }, { diskFormat: "qcow2", scratchDir: scratch.dir });
      expect(img.sha512).toBe(testbed().files["disk.qcow2"]!.sha512);
      await img.cleanup();
    });
  }
});

describe("bodies that end badly", () => {
  it("a server that closes a `Connection: close` answer half way is resumed (was: UND_ERR_RES_CONTENT_LENGTH_MISMATCH, not resumed)", async () => {
    const dl = await openDownload(`${testbed().url}/close-mid/${token()}/disk.raw`);
    const h = await hashStream(dl.stream);
    expect(h.sha512).toBe(testbed().files["disk.raw"]!.sha512);
    expect(dl.resumes()).toBe(1);
  });

  it("a body that goes silent on an open socket is dropped after idleTimeoutMs and resumed, instead of waiting for ever", async () => {
    const t0 = Date.now();
    const dl = await openDownload(`${testbed().url}/stall-once/${token()}/disk.raw`, { idleTimeoutMs: 1000 });
    const h = await hashStream(dl.stream);
    expect(h.sha512).toBe(testbed().files["disk.raw"]!.sha512);
    expect(dl.resumes()).toBe(1);
    expect(Date.now() - t0).toBeLessThan(20_000);
  });
});

// A real full disk: an 18 MiB tmpfs as the scratch base (room for the 16 MiB reserve the free-space
// check keeps, not for the 24 MiB image). Needs root (mount); skipped otherwise.
const canMount = process.getuid?.() === 0;
describe.runIf(canMount)("scratch full without Content-Length", () => {
  let mnt: string;
  beforeEach(() => {
    mnt = mkdtempSync(join(tmpdir(), "iy-tmpfs-"));
    execFileSync("mount", ["-t", "tmpfs", "-o", "size=18m", "tmpfs", mnt]);
  });
  afterEach(() => {
    execFileSync("umount", [mnt]);
    rmSync(mnt, { recursive: true, force: true });
  });

  for (const [label, opts] of [
    ["raw kept as raw, with a checksum", { file: "disk.raw", checksum: true }],
    ["xz-compressed raw, decompressed into scratch", { file: "raw-xz-named.img", checksum: false }],
  ] as const) {
    it(`${label}: fails NO_SPACE within seconds (was: an unhandled ENOSPC and a hang) and removes its scratch`, async () => {
      const source = {
        url: `${testbed().url}/chunked/${opts.file}`,
        ...(opts.checksum ? { checksum: `sha512:${testbed().files[opts.file]!.sha512}` } : {}),
      };
      const unhandled: unknown[] = [];
      const onUnhandled = (e: unknown) => unhandled.push(e);
      process.on("unhandledRejection", onUnhandled);
      try {
        const t0 = Date.now();
        const p = (async () => {
          const img = await prepareImage(source, { diskFormat: "raw", scratchDir: mnt } as PrepareOptions);
          try {
            await hashStream(img.open());
          } finally {
            await img.cleanup();
          }
        })();
        const r = await failure(p);
        expect(r.code).toBe("NO_SPACE");
        expect(r.message).toMatch(/ran out of space/);
        expect(Date.now() - t0).toBeLessThan(20_000);
        expect(readdirSync(mnt).filter((n) => n.startsWith("op-"))).toEqual([]);
        expect(unhandled).toEqual([]);
      } finally {
        process.off("unhandledRejection", onUnhandled);
      }
    }, 30_000);
  }
});

describe("scratch of killed runs", () => {
  it("a scratch dir whose owner process is gone is reclaimed at the next start; one of a live process, and one without our marker, are kept", async () => {
    const dead = spawn(process.execPath, ["-e", ""]);
    const deadPid = dead.pid as number;
    const deadStart = processStart(deadPid);
    await new Promise((r) => dead.on("exit", r));
    const mk = (name: string, owner?: object) => {
      const dir = join(scratch.dir, name);
      mkdirSync(dir);
      writeFileSync(join(dir, "source.img"), Buffer.alloc(4096, 1));
      if (owner) writeFileSync(join(dir, OWNER_FILE), JSON.stringify(owner));
      return dir;
    };
    const { hostname } = await import("node:os");
    const gone = mk("op-gone", { host: hostname(), pid: deadPid, start: deadStart ?? "1" });
    const reused = mk("op-reused", { host: hostname(), pid: process.pid, start: "1" });
    const alive = mk("op-alive", { host: hostname(), pid: process.pid, start: processStart(process.pid) });
    const foreign = mk("op-foreign");
    const otherHost = mk("op-otherhost", { host: "elsewhere.example", pid: deadPid, start: "1" });
    const lines: string[] = [];
    const reclaimed = await reclaimStale(scratch.dir, (l) => lines.push(l));
    expect(reclaimed.sort()).toEqual([gone, reused].sort());
    for (const d of [alive, foreign, otherHost]) expect(existsSync(d)).toBe(true);
    expect(lines.join("\n")).toMatch(/reclaimed scratch .*op-gone .* left by an earlier run \(pid \d+\) that is gone/);
  });

  it("a run killed with SIGKILL mid-download leaves its scratch; the next prepareImage in that base reclaims it", async () => {
    const child = spawn(process.execPath, ["-e", killedRunScript(scratch.dir, `${testbed().url}/slow/disk.raw`)], {
      stdio: ["ignore", "pipe", "inherit"],
    });
    await new Promise<void>((ok, fail) => {
      child.stdout.on("data", (d: Buffer) => d.toString().includes("scratch") && ok());
      child.on("exit", (c) => fail(new Error(`child exited early (${c})`)));
    });
    child.kill("SIGKILL");
    await new Promise((r) => child.on("exit", r));
    expect(scratch.leftovers().filter((n) => n.startsWith("op-"))).toHaveLength(1);
    const lines: string[] = [];
    const img = await prepareImage(
      { url: imageUrl("disk.qcow2") },
      { diskFormat: "qcow2", scratchDir: scratch.dir, log: (l) => lines.push(l) },
    );
    expect(lines.join("\n")).toMatch(/reclaimed scratch/);
    expect(scratch.leftovers().filter((n) => n.startsWith("op-"))).toHaveLength(1);
    await img.cleanup();
    expect(scratch.leftovers().filter((n) => n.startsWith("op-"))).toEqual([]);
  }, 30_000);
});

/** A node program that starts a slow download into `base` and says so once its scratch exists. */
function killedRunScript(base: string, url: string): string {
  // The compiled engine (npx tsc -p tsconfig.json): a plain node process, as the provider runs.
  const prepare = join(__dirname, "../../../../dist/provider/disk/prepare.js");
  if (!existsSync(prepare)) throw new Error(`${prepare} is missing: build first (npx tsc -p tsconfig.json)`);
  return `
    const { prepareImage } = require(${JSON.stringify(prepare)});
    const fs = require("node:fs");
    const t = setInterval(() => { if (fs.readdirSync(${JSON.stringify(base)}).some((n) => n.startsWith("op-"))) { clearInterval(t); console.log("scratch"); } }, 20);
    prepareImage({ url: ${JSON.stringify(url)} }, { diskFormat: "raw", scratchDir: ${JSON.stringify(base)} }).catch(() => {});
  `;
}
