// Retry policy as data (undici/ky style): idempotent work only, 408/429/5xx and connection
// resets, Retry-After honoured, capped exponential backoff with jitter.
import { ImageyardError, isRetryableNetworkError } from "./errors";

export interface RetryPolicy {
  /** Attempts in all, the first included. */
  attempts: number;
  minDelayMs: number;
  maxDelayMs: number;
  /** Longest Retry-After we are willing to wait; longer ones fail now with the server's reason. */
  maxRetryAfterMs: number;
}

export const DEFAULT_RETRY: RetryPolicy = { attempts: 4, minDelayMs: 250, maxDelayMs: 15_000, maxRetryAfterMs: 120_000 };
export const NO_RETRY: RetryPolicy = { attempts: 1, minDelayMs: 0, maxDelayMs: 0, maxRetryAfterMs: 0 };

export interface RetryOptions {
  signal?: AbortSignal;
  /** Called before each wait; for progress lines and counting. */
  onRetry?: (info: { attempt: number; delayMs: number; error: unknown }) => void;
  sleep?: (ms: number, signal?: AbortSignal) => Promise<void>;
}

export function isRetryable(e: unknown): boolean {
  if (e instanceof ImageyardError) return e.retryable;
  return isRetryableNetworkError(e);
}

/** A rate limit whose wait the per-host limiter has scheduled: not an attempt, no backoff of our own. */
export function isPaced(e: unknown): boolean {
  return e instanceof ImageyardError && e.paced && e.retryable;
}

export function backoffDelay(policy: RetryPolicy, attempt: number, error: unknown, random = Math.random): number {
  const hinted = error instanceof ImageyardError ? error.retryAfterMs : undefined;
  if (hinted !== undefined) return hinted;
  const exp = Math.min(policy.maxDelayMs, policy.minDelayMs * 2 ** (attempt - 1));
  return Math.round(exp / 2 + (random() * exp) / 2);
}

/** Runs `op` until it succeeds, fails with a non-retryable error, or attempts run out. */
export async function withRetry<T>(
  op: (attempt: number) => Promise<T>,
  policy: RetryPolicy = DEFAULT_RETRY,
  opts: RetryOptions = {},
): Promise<T> {
  const sleep = opts.sleep ?? abortableSleep;
  for (let attempt = 1; ; attempt++) {
    try {
      return await op(attempt);
    } catch (e) {
      // The per-host limiter already scheduled this wait and charges it to its budget.
      if (isPaced(e) && !opts.signal?.aborted) {
        attempt--;
        continue;
      }
      if (attempt >= policy.attempts || !isRetryable(e) || opts.signal?.aborted) throw e;
      const delayMs = backoffDelay(policy, attempt, e);
      if (delayMs > policy.maxRetryAfterMs) throw e;
      opts.onRetry?.({ attempt, delayMs, error: e });
      await sleep(delayMs, opts.signal);
    }
  }
}

export function abortableSleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(new ImageyardError("CANCELLED", "cancelled while waiting to retry"));
    const t = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(t);
      reject(new ImageyardError("CANCELLED", "cancelled while waiting to retry"));
    };
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/** Bounds concurrent work per key (a registry host): explicit, never unbounded Promise.all. */
export class Limiter {
  private active = new Map<string, number>();
  private waiting = new Map<string, Array<() => void>>();
  constructor(private readonly perKey: number) {
    if (!(perKey >= 1)) throw new RangeError("Limiter needs at least 1 slot per key");
  }

  async run<T>(key: string, fn: () => Promise<T>): Promise<T> {
    await this.acquire(key);
    try {
      return await fn();
    } finally {
      this.release(key);
    }
  }

  private acquire(key: string): Promise<void> {
    const n = this.active.get(key) ?? 0;
    if (n < this.perKey) {
      this.active.set(key, n + 1);
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      const q = this.waiting.get(key) ?? [];
      q.push(resolve);
      this.waiting.set(key, q);
    });
  }

  private release(key: string): void {
    const next = this.waiting.get(key)?.shift();
    if (next) return next(); // hand the slot over directly
    const n = (this.active.get(key) ?? 1) - 1;
    if (n === 0) this.active.delete(key);
    else this.active.set(key, n);
  }
}

/** Runs `fn` over items with at most `limit` in flight; results keep input order. */
export async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (item: T, index: number) => Promise<R>): Promise<R[]> {
  // NaN would make zero workers and return holes as if every item had run.
  if (Number.isNaN(limit)) throw new RangeError("mapLimit needs a numeric limit");
  const results = new Array<R>(items.length);
  let next = 0;
  // A flag, not the error value: a rejection with undefined must still fail the whole map.
  let failure: { error: unknown } | undefined;
  const worker = async () => {
    while (failure === undefined && next < items.length) {
      const i = next++;
      try {
        results[i] = await fn(items[i] as T, i);
      } catch (e) {
        failure ??= { error: e };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(Math.floor(limit), items.length)) }, worker));
  if (failure !== undefined) throw failure.error;
  return results;
}

export type Settled<T> = { ok: true; value: T } | { ok: false; error: unknown };

/** Runs a promise to completion without letting a failure go unobserved while other work runs. */
export function settle<T>(p: Promise<T>): Promise<Settled<T>> {
  return p.then(
    (value) => ({ ok: true, value }),
    (error: unknown) => ({ ok: false, error }),
  );
}

export function unwrap<T>(s: Settled<T>): T {
  if (!s.ok) throw s.error;
  return s.value;
}
