import { describe, expect, it } from "vitest";
import { ImageyardError } from "../../../../provider/http/errors";
import {
  abortableSleep,
  backoffDelay,
  DEFAULT_RETRY,
  Limiter,
  mapLimit,
  NO_RETRY,
  withRetry,
  type RetryPolicy,
} from "../../../../provider/http/retry";

const policy: RetryPolicy = { attempts: 4, minDelayMs: 100, maxDelayMs: 1000, maxRetryAfterMs: 5000 };
const retryable = (extra: { retryAfterMs?: number } = {}) =>
  new ImageyardError("HTTP_ERROR", "503", { retryable: true, status: 503, ...extra });

function recorder() {
  const waits: number[] = [];
  return { waits, sleep: async (ms: number) => void waits.push(ms) };
}

describe("withRetry", () => {
  it("returns the first success and passes the attempt number", async () => {
    const seen: number[] = [];
    const { sleep, waits } = recorder();
    const out = await withRetry(
      async (n) => {
        seen.push(n);
        if (n < 3) throw retryable();
        return "ok";
      },
      policy,
      { sleep },
    );
    expect(out).toBe("ok");
    expect(seen).toEqual([1, 2, 3]);
    expect(waits).toHaveLength(2);
  });

  it("stops at the policy's attempts and rethrows the last error", async () => {
    const { sleep } = recorder();
    let n = 0;
    const err = await withRetry(
      async () => {
        n++;
        throw retryable();
      },
      policy,
      { sleep },
    ).catch((e) => e);
    expect(n).toBe(4);
    expect(err).toBeInstanceOf(ImageyardError);
  });

  it("does not retry errors that are not retryable", async () => {
    let n = 0;
    await expect(
      withRetry(async () => {
        n++;
        throw new ImageyardError("MANIFEST_UNKNOWN", "404");
      }, policy),
    ).rejects.toThrow("404");
    expect(n).toBe(1);
  });

  it("retries raw network errors by their code (ECONNRESET) but not others", async () => {
    const { sleep } = recorder();
    let n = 0;
    await withRetry(
      async () => {
        if (n++ === 0) throw Object.assign(new Error("reset"), { code: "ECONNRESET" });
        return 1;
      },
      policy,
      { sleep },
    );
    expect(n).toBe(2);
    n = 0;
    await expect(
      withRetry(async () => {
        n++;
        throw Object.assign(new Error("bad"), { code: "ERR_INVALID_ARG_TYPE" });
      }, policy),
    ).rejects.toThrow("bad");
    expect(n).toBe(1);
  });

  it("waits exactly the server's Retry-After instead of the backoff", async () => {
    const { sleep, waits } = recorder();
    let n = 0;
    await withRetry(
      async () => {
        if (n++ === 0) throw retryable({ retryAfterMs: 3000 });
        return 1;
      },
      policy,
      { sleep },
    );
    expect(waits).toEqual([3000]);
  });

  it("fails at once when Retry-After is longer than the policy accepts", async () => {
    const { sleep, waits } = recorder();
    let n = 0;
    await expect(
      withRetry(
        async () => {
          n++;
          throw retryable({ retryAfterMs: 60_000 });
        },
        policy,
        { sleep },
      ),
    ).rejects.toThrow("503");
    expect(n).toBe(1);
    expect(waits).toEqual([]);
  });

  it("reports each retry to onRetry", async () => {
    const infos: Array<{ attempt: number; delayMs: number }> = [];
    const { sleep } = recorder();
    await withRetry(
      async (n) => {
        if (n < 3) throw retryable({ retryAfterMs: 7 });
        return 1;
      },
      policy,
      { sleep, onRetry: ({ attempt, delayMs }) => infos.push({ attempt, delayMs }) },
    );
    expect(infos).toEqual([
      { attempt: 1, delayMs: 7 },
      { attempt: 2, delayMs: 7 },
    ]);
  });

  it("NO_RETRY makes a single attempt", async () => {
    let n = 0;
    await expect(
      withRetry(async () => {
        n++;
        throw retryable();
      }, NO_RETRY),
    ).rejects.toThrow();
    expect(n).toBe(1);
  });

  it("stops retrying once the signal is aborted, and the sleep itself is abortable", async () => {
    const ac = new AbortController();
    let n = 0;
    await expect(
      withRetry(
        async () => {
          n++;
          ac.abort();
          throw retryable();
        },
        policy,
        { signal: ac.signal },
      ),
    ).rejects.toThrow("503");
    expect(n).toBe(1);

    const ac2 = new AbortController();
    const t0 = Date.now();
    const p = abortableSleep(10_000, ac2.signal);
    ac2.abort();
    await expect(p).rejects.toMatchObject({ code: "CANCELLED" });
    expect(Date.now() - t0).toBeLessThan(1000);
    await expect(abortableSleep(10, ac2.signal)).rejects.toMatchObject({ code: "CANCELLED" });
  });
});

describe("backoffDelay", () => {
  it("grows exponentially with jitter between half and the full step, capped at maxDelayMs", () => {
    expect(backoffDelay(policy, 1, new Error(), () => 0)).toBe(50);
    expect(backoffDelay(policy, 1, new Error(), () => 1)).toBe(100);
    expect(backoffDelay(policy, 3, new Error(), () => 1)).toBe(400);
    expect(backoffDelay(policy, 10, new Error(), () => 1)).toBe(1000);
    expect(backoffDelay(policy, 10, new Error(), () => 0)).toBe(500);
  });

  it("prefers the error's Retry-After, zero included", () => {
    expect(backoffDelay(policy, 1, retryable({ retryAfterMs: 0 }))).toBe(0);
    expect(backoffDelay(policy, 5, retryable({ retryAfterMs: 1234 }))).toBe(1234);
  });

  it("keeps DEFAULT_RETRY's backoff below its Retry-After ceiling", () => {
    expect(DEFAULT_RETRY.maxDelayMs).toBeLessThanOrEqual(DEFAULT_RETRY.maxRetryAfterMs);
    expect(DEFAULT_RETRY.attempts).toBeGreaterThan(1);
  });
});

describe("Limiter", () => {
  it("runs at most perKey tasks per key and keys independently", async () => {
    const lim = new Limiter(2);
    const active = new Map<string, number>();
    const peak = new Map<string, number>();
    const gates: Array<() => void> = [];
    const task = (key: string) =>
      lim.run(key, async () => {
        active.set(key, (active.get(key) ?? 0) + 1);
        peak.set(key, Math.max(peak.get(key) ?? 0, active.get(key)!));
        await new Promise<void>((r) => gates.push(r));
        active.set(key, active.get(key)! - 1);
      });
    const all = [task("a"), task("a"), task("a"), task("a"), task("b")];
    // Let every task reach its gate or its queue, then open gates one by one until all finish.
    const tick = () => new Promise((r) => setImmediate(r));
    await tick();
    while (gates.length) {
      gates.shift()!();
      await tick();
    }
    await Promise.all(all);
    expect(peak.get("a")).toBe(2);
    expect(peak.get("b")).toBe(1);
  });

  it("releases the slot when a task throws", async () => {
    const lim = new Limiter(1);
    await expect(lim.run("k", async () => Promise.reject(new Error("x")))).rejects.toThrow("x");
    await expect(lim.run("k", async () => 42)).resolves.toBe(42);
  });

  it("rejects a size below one", () => {
    expect(() => new Limiter(0)).toThrow(RangeError);
    expect(() => new Limiter(Number.NaN)).toThrow(RangeError);
  });
});

describe("mapLimit", () => {
  it("keeps input order and never exceeds the limit", async () => {
    let active = 0;
    let peak = 0;
    const out = await mapLimit([30, 10, 20, 5, 1], 2, async (ms, i) => {
      active++;
      peak = Math.max(peak, active);
      await new Promise((r) => setTimeout(r, ms));
      active--;
      return i * 10;
    });
    expect(out).toEqual([0, 10, 20, 30, 40]);
    expect(peak).toBe(2);
  });

  it("handles an empty list", async () => {
    expect(await mapLimit([], 4, async () => 1)).toEqual([]);
  });

  it("stops taking new items after a failure and rethrows it", async () => {
    const started: number[] = [];
    await expect(
      mapLimit([1, 2, 3, 4, 5], 1, async (x) => {
        started.push(x);
        if (x === 2) throw new Error("two");
        return x;
      }),
    ).rejects.toThrow("two");
    expect(started).toEqual([1, 2]);
  });

  it("reports a rejection even when the rejection value is undefined", async () => {
    await expect(mapLimit([1, 2], 2, async (x) => (x === 2 ? Promise.reject(undefined) : x))).rejects.toBeUndefined();
  });

  it("refuses a limit that is not a positive number instead of running nothing", async () => {
    let ran = 0;
    await expect(
      mapLimit([1, 2], Number.NaN, async () => {
        ran++;
      }),
    ).rejects.toThrow(RangeError);
    expect(ran).toBe(0);
    expect(await mapLimit([1, 2], 0.5, async (x) => x)).toEqual([1, 2]);
  });
});

describe("withRetry and the host limiter", () => {
  it("does not count a paced rate limit as an attempt and adds no backoff of its own", async () => {
    let calls = 0;
    const slept: number[] = [];
    const paced = () => new ImageyardError("TOO_MANY_REQUESTS", "429", { retryable: true, paced: true, retryAfterMs: 60_000 });
    const out = await withRetry(
      async () => {
        calls++;
        if (calls <= 5) throw paced();
        if (calls === 6) throw new ImageyardError("HTTP_ERROR", "503", { retryable: true });
        return "ok";
      },
      { attempts: 2, minDelayMs: 1, maxDelayMs: 1, maxRetryAfterMs: 10 },
      { sleep: async (ms) => void slept.push(ms) },
    );
    expect(out).toBe("ok");
    expect(calls).toBe(7);
    expect(slept).toEqual([1]);
  });
});
