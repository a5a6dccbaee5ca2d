import { afterEach, describe, expect, it, vi } from "vitest";
import { describeWait, WaitBoard, waitingFor } from "../../../../provider/http/waits";

afterEach(() => vi.useRealTimers());

describe("WaitBoard", () => {
  it("names the wait silent longest; progress starts a wait's silence again", () => {
    let now = 0;
    const board = new WaitBoard(() => now);
    const a = board.begin("blob sha256:aaa", "the source registry s:1");
    now = 10;
    board.begin("manifest t:2/x:v1", "the target registry t:2");
    expect(board.longest()?.what).toBe("blob sha256:aaa");
    now = 20;
    board.touch(a, "an answer to the upload of blob sha256:aaa", "the target registry t:2");
    expect(board.longest()?.what).toBe("manifest t:2/x:v1");
    board.end(a);
    expect(board.silentFor(10).map((w) => w.peer)).toEqual(["the target registry t:2"]);
  });

  it("reports every silent wait each interval, with how long it has been silent", () => {
    vi.useFakeTimers();
    const board = new WaitBoard();
    board.begin("blob sha256:0123456789ab", "the source registry 127.0.0.1:5001");
    const lines: string[] = [];
    const stop = board.watch(30_000, (line) => lines.push(line));
    vi.advanceTimersByTime(120_000);
    stop();
    vi.advanceTimersByTime(60_000);
    expect(lines).toEqual(
      [30, 60, 90, 120].map((s) => `waiting for blob sha256:0123456789ab from the source registry 127.0.0.1:5001: ${s} s`),
    );
  });

  it("waitingFor removes its wait however the work ends", async () => {
    const board = new WaitBoard();
    await waitingFor(board, "x", "y", async () => 1);
    await waitingFor(board, "x", "y", async () => Promise.reject(new Error("no"))).catch(() => undefined);
    expect(board.longest()).toBeUndefined();
    expect(describeWait({ what: "a", peer: "b", since: 0 }, 1499)).toBe("waiting for a from b: 1 s");
  });
});
