// Rate limits, shared per registry host by every copy in the process: a 429 (or a RateLimit
// header saying nothing is left) pauses the host for every caller until the server's reset, and
// the time a host spends paused is drawn from one budget. A stack of 200 mirrors of one registry
// then waits a limit out together, instead of each copy failing after four quick attempts.
import { abortableSleep } from "./retry";
import { header, parseRetryAfter, type HttpHeaders } from "./headers";

/** How long a host may keep us waiting in all, unless a caller says otherwise. */
export const DEFAULT_RATE_LIMIT_BUDGET_MS = 10 * 60_000;
/** A 429 without any hint: wait this long, doubling per consecutive 429, up to MAX. */
const FIRST_WAIT_MS = 1000;
const MAX_GUESS_MS = 60_000;
/** Never less: a "Retry-After: 0" loop would spend no budget and never end. */
const MIN_WAIT_MS = 250;

interface HostState {
  pausedUntil: number;
  /** Wall-clock time this host has kept us paused so far (overlapping pauses count once). */
  spentMs: number;
  /** Consecutive 429s without a hint, for the doubling guess. */
  strikes: number;
  /** Why the host paused us last, for messages ("429 Retry-After: 30"). */
  reason: string;
}

const hosts = new Map<string, HostState>();

export interface Pace {
  /** The registry host the budget belongs to ("registry-1.docker.io", "127.0.0.1:5001"). */
  host: string;
  /** This caller's tolerance: fail once the host's paused time would pass it. */
  budgetMs: number;
  /** Told when a new pause starts (not for every request that waits in it). */
  onPause?: (info: PauseInfo) => void;
}

export interface PauseInfo {
  host: string;
  waitMs: number;
  spentMs: number;
  budgetMs: number;
  reason: string;
}

export type PauseOutcome = { ok: true; info: PauseInfo } | { ok: false; info: PauseInfo };

/** Forgets every host's state (tests). */
export function resetRateLimits(): void {
  hosts.clear();
}

/** What a host's state is now (tests, messages). */
export function rateLimitState(host: string): Readonly<HostState> | undefined {
  return hosts.get(host);
}

function stateOf(host: string): HostState {
  let s = hosts.get(host);
  if (!s) {
    s = { pausedUntil: 0, spentMs: 0, strikes: 0, reason: "" };
    hosts.set(host, s);
  }
  return s;
}

/** Waits while the host is paused; every request to it comes through here first. */
export async function awaitHost(host: string, signal?: AbortSignal, now = Date.now): Promise<void> {
  for (;;) {
    const s = hosts.get(host);
    const wait = s ? s.pausedUntil - now() : 0;
    if (wait <= 0) return;
    await abortableSleep(wait, signal);
  }
}

/**
 * Pauses the host for `waitMs` from now unless that would take its paused time past `budgetMs`;
 * overlapping pauses (200 requests meeting one limit) are charged once.
 */
export function pauseHost(pace: Pace, waitMs: number, reason: string, now = Date.now()): PauseOutcome {
  const s = stateOf(pace.host);
  const wait = Math.max(MIN_WAIT_MS, waitMs);
  const until = Math.max(s.pausedUntil, now + wait);
  const added = until - Math.max(s.pausedUntil, now);
  const info = (): PauseInfo => ({ host: pace.host, waitMs: wait, spentMs: s.spentMs, budgetMs: pace.budgetMs, reason });
  if (s.spentMs + added > pace.budgetMs) return { ok: false, info: { ...info(), spentMs: s.spentMs + added } };
  s.spentMs += added;
  s.reason = reason;
  if (added > 0) {
    s.pausedUntil = until;
    pace.onPause?.(info());
  }
  return { ok: true, info: info() };
}

/** Whether a response is the server asking us to slow down. */
export function isRateLimited(status: number, headers: HttpHeaders): boolean {
  return status === 429 || (status === 503 && header(headers, "retry-after") !== undefined);
}

/**
 * How long a rate-limited response asks us to wait: Retry-After, else RateLimit-Reset (or the
 * reset of a combined RateLimit header), else a doubling guess. Also counts the strike.
 */
export function limitedWait(host: string, headers: HttpHeaders, now = Date.now()): { waitMs: number; reason: string } {
  const s = stateOf(host);
  const retryAfter = parseRetryAfter(header(headers, "retry-after"), now);
  if (retryAfter !== undefined) return { waitMs: retryAfter, reason: `Retry-After: ${header(headers, "retry-after")}` };
  const reset = resetMs(headers);
  if (reset !== undefined) return { waitMs: reset, reason: `RateLimit-Reset: ${Math.round(reset / 1000)}` };
  s.strikes++;
  return { waitMs: Math.min(MAX_GUESS_MS, FIRST_WAIT_MS * 2 ** (s.strikes - 1)), reason: "no Retry-After" };
}

/**
 * An answer that is not a 429 may still say the quota is used up (RateLimit-Remaining: 0, or
 * Docker Hub's "ratelimit-remaining: 0;w=21600"): then pause until its reset, when it names one.
 */
export function noteQuota(pace: Pace, headers: HttpHeaders, now = Date.now()): PauseOutcome | undefined {
  const s = hosts.get(pace.host);
  if (s) s.strikes = 0;
  const remaining = leadingNumber(header(headers, "ratelimit-remaining")) ?? combined(headers, "remaining");
  if (remaining !== 0) return undefined;
  const reset = resetMs(headers);
  if (reset === undefined || reset <= 0) return undefined;
  return pauseHost(pace, reset, `RateLimit-Remaining: 0, reset in ${Math.round(reset / 1000)} s`, now);
}

/** RateLimit-Reset (delta seconds) or the reset of a combined `RateLimit: limit=…, remaining=…, reset=…`. */
function resetMs(headers: HttpHeaders): number | undefined {
  const s = leadingNumber(header(headers, "ratelimit-reset")) ?? combined(headers, "reset");
  return s === undefined ? undefined : s * 1000;
}

function leadingNumber(v: string | undefined): number | undefined {
  const m = /^\s*(\d+(?:\.\d+)?)/.exec(v ?? "");
  return m ? Number(m[1]) : undefined;
}

function combined(headers: HttpHeaders, key: string): number | undefined {
  const m = new RegExp(`(?:^|[,;\\s])${key}=(\\d+(?:\\.\\d+)?)`, "i").exec(header(headers, "ratelimit") ?? "");
  return m ? Number(m[1]) : undefined;
}

export function formatSeconds(ms: number): string {
  const s = Math.round(ms / 1000);
  return s >= 120 ? `${Math.round(s / 60)} min` : `${s} s`;
}
