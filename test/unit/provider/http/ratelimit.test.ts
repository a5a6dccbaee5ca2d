import { afterEach, describe, expect, it } from "vitest";
import {
  awaitHost,
  isRateLimited,
  limitedWait,
  noteQuota,
  pauseHost,
  rateLimitState,
  resetRateLimits,
  type PauseInfo,
} from "../../../../provider/http/ratelimit";

afterEach(() => resetRateLimits());

describe("per-host rate-limit budget", () => {
  it("charges overlapping pauses of one host once: 200 requests meeting one limit spend its wait, not 200 waits", () => {
    const pace = { host: "reg.test", budgetMs: 10_000 };
    for (let i = 0; i < 200; i++) expect(pauseHost(pace, 5000, "429", 1000).ok).toBe(true);
    expect(rateLimitState("reg.test")).toMatchObject({ pausedUntil: 6000, spentMs: 5000 });
  });

  it("extends a pause by the part that sticks out, and refuses once the budget would be passed", () => {
    const pace = { host: "reg.test", budgetMs: 8000 };
    expect(pauseHost(pace, 5000, "429", 0).ok).toBe(true);
    expect(pauseHost(pace, 5000, "429", 2000)).toMatchObject({ ok: true, info: { spentMs: 7000 } });
    const refused = pauseHost(pace, 5000, "429", 7000);
    expect(refused).toMatchObject({ ok: false, info: { spentMs: 12_000, budgetMs: 8000 } });
    expect(rateLimitState("reg.test")!.pausedUntil).toBe(7000);
  });

  it("keeps budgets per host, and a caller with a larger budget may go on where another stops", () => {
    expect(pauseHost({ host: "a.test", budgetMs: 1000 }, 900, "429", 0).ok).toBe(true);
    expect(pauseHost({ host: "b.test", budgetMs: 1000 }, 900, "429", 0).ok).toBe(true);
    expect(pauseHost({ host: "a.test", budgetMs: 1000 }, 900, "429", 900).ok).toBe(false);
    expect(pauseHost({ host: "a.test", budgetMs: 5000 }, 900, "429", 900).ok).toBe(true);
  });

  it("never pauses for less than 250 ms, so Retry-After: 0 cannot loop for free", () => {
    const pace = { host: "zero.test", budgetMs: 1000 };
    let n = 0;
    while (pauseHost(pace, 0, "429", n * 250).ok) n++;
    expect(n).toBe(4);
  });

  it("tells onPause once per new pause, not per request waiting in it", () => {
    const seen: PauseInfo[] = [];
    const pace = { host: "reg.test", budgetMs: 60_000, onPause: (p: PauseInfo) => seen.push(p) };
    pauseHost(pace, 2000, "429 Retry-After: 2", 0);
    pauseHost(pace, 1000, "429 Retry-After: 1", 500);
    expect(seen).toEqual([{ host: "reg.test", waitMs: 2000, spentMs: 2000, budgetMs: 60_000, reason: "429 Retry-After: 2" }]);
  });

  it("awaitHost returns at once for a host that is not paused, and waits out a pause", async () => {
    await awaitHost("free.test");
    pauseHost({ host: "p.test", budgetMs: 5000 }, 300, "429");
    const t = Date.now();
    await awaitHost("p.test");
    expect(Date.now() - t).toBeGreaterThanOrEqual(250);
  });
});

describe("reading rate-limit headers", () => {
  it("prefers Retry-After, then RateLimit-Reset, then the combined RateLimit header, then a doubling guess", () => {
    expect(limitedWait("h", { "retry-after": "7", "ratelimit-reset": "30" })).toEqual({ waitMs: 7000, reason: "Retry-After: 7" });
    expect(limitedWait("h", { "ratelimit-reset": "30" }).waitMs).toBe(30_000);
    expect(limitedWait("h", { ratelimit: "limit=100, remaining=0, reset=12" }).waitMs).toBe(12_000);
    expect([limitedWait("g", {}).waitMs, limitedWait("g", {}).waitMs, limitedWait("g", {}).waitMs]).toEqual([1000, 2000, 4000]);
  });

  it("pauses on RateLimit-Remaining: 0 (Docker Hub's '0;w=21600' too) only when a reset is named", () => {
    const pace = { host: "hub.test", budgetMs: 600_000 };
    expect(noteQuota(pace, { "ratelimit-remaining": "3;w=21600", "ratelimit-reset": "5" }, 0)).toBeUndefined();
    expect(noteQuota(pace, { "ratelimit-remaining": "0;w=21600" }, 0)).toBeUndefined();
    expect(noteQuota(pace, { "ratelimit-remaining": "0;w=21600", "ratelimit-reset": "5" }, 0)).toMatchObject({
      ok: true,
      info: { waitMs: 5000 },
    });
    expect(rateLimitState("hub.test")!.pausedUntil).toBe(5000);
  });

  it("counts 429, and 503 with Retry-After, as rate limits", () => {
    expect(isRateLimited(429, {})).toBe(true);
    expect(isRateLimited(503, { "retry-after": "1" })).toBe(true);
    expect(isRateLimited(503, {})).toBe(false);
    expect(isRateLimited(500, { "retry-after": "1" })).toBe(false);
  });
});
