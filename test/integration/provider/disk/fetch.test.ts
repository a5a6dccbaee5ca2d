// openDownload against the test image server: resume, restart, caps and failures.
import { randomUUID } from "node:crypto";
import { describe, expect, it } from "vitest";
import { openDownload } from "../../../../provider/disk/fetch";
import { isImageyardError } from "../../../../provider/http/errors";
import type { ProgressEvent } from "../../../../provider/http/progress";
import { hashStream, imageUrl, requestCount, testbed } from "./helpers";

const fast = { attempts: 4, minDelayMs: 10, maxDelayMs: 50, maxRetryAfterMs: 1000 };

describe("openDownload", () => {
  it("resumes with Range after the server cuts the connection mid-body, and the bytes are exactly the file's", async () => {
    const tb = testbed();
    const path = `/drop-once/${randomUUID()}/disk.qcow2`;
    const events: ProgressEvent[] = [];
    const dl = await openDownload(`${tb.url}${path}`, { retry: fast, onProgress: (e) => events.push(e) });
    expect(dl.total).toBe(tb.files["disk.qcow2"]!.size);
    const got = await hashStream(dl.stream);
    expect(got.sha256).toBe(tb.files["disk.qcow2"]!.sha256);
    expect(dl.resumes()).toBe(1);
    expect(await requestCount(path)).toBe(2);
    expect(events.some((e) => /resuming at byte \d+/.test(e.message ?? ""))).toBe(true);
    expect(events.at(-1)).toMatchObject({ phase: "download", done: true, bytes: tb.files["disk.qcow2"]!.size });
  });

  it("restarts from byte 0 and skips what it already passed on when the server ignores Range", async () => {
    const tb = testbed();
    const path = `/norange-drop/${randomUUID()}/disk.raw`;
    const dl = await openDownload(`${tb.url}${path}`, { retry: fast });
    const got = await hashStream(dl.stream);
    expect(got.sha512).toBe(tb.files["disk.raw"]!.sha512);
    expect(got.size).toBe(tb.files["disk.raw"]!.size);
    expect(dl.resumes()).toBe(1);
  });

  it("does not splice a 206 that starts at another offset than asked; reads the whole file again instead", async () => {
    const tb = testbed();
    const path = `/badrange-drop/${randomUUID()}/disk.qcow2`;
    const dl = await openDownload(`${tb.url}${path}`, { retry: fast });
    expect((await hashStream(dl.stream)).sha256).toBe(tb.files["disk.qcow2"]!.sha256);
    expect(await requestCount(path)).toBe(3);
  });

  it("refuses a file over maxBytes from its Content-Length before reading the body", async () => {
    try {
      await openDownload(imageUrl("disk.raw"), { maxBytes: 1024 });
      throw new Error("accepted");
    } catch (e) {
      expect(isImageyardError(e, "SIZE_MISMATCH")).toBe(true);
      expect((e as Error).message).toMatch(/25165824 bytes, over the size cap of 1024 bytes/);
    }
  });

  it("fails a missing file:// path with the path and a hint", async () => {
    await expect(openDownload("file:///nonexistent/disk.qcow2", { allowLocalFiles: true })).rejects.toThrow(
      /cannot read \/nonexistent\/disk\.qcow2 \(ENOENT\)\. Check source\.url\./,
    );
  });

  it("fails an unreachable port as a network error naming the host", async () => {
    await expect(openDownload("http://127.0.0.1:9/x.qcow2", { retry: { ...fast, attempts: 1 } })).rejects.toThrow(
      /cannot reach 127\.0\.0\.1:9 \(ECONNREFUSED\)/,
    );
  });
});
