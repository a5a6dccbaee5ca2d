// One deadline for a whole copy, and what to say when it passes: every request and blob transfer
// records what it waits for (http/waits.ts), so the TIMEOUT names the blob and the registry that
// stalled instead of "cancelled". Silent waits are reported while they last.
import { ImageyardError } from "../http/errors";
import { WaitBoard, type Wait } from "../http/waits";
import type { CopyDeps } from "./plan";
import { redactUserinfo } from "./reference";

const DEFAULT_NOTICE_MS = 30_000;

/** Whether an abort reason is a deadline (AbortSignal.timeout's TimeoutError), not a cancel. */
export function isTimeoutReason(reason: unknown): boolean {
  return (reason as { name?: unknown } | null)?.name === "TimeoutError";
}

/**
 * Runs `fn` with `deps` extended by the deadline (deps.timeoutMs, or a timeout signal given by the
 * caller) and a wait board; a failure caused by the deadline becomes TIMEOUT naming the wait that
 * had been silent longest when it passed.
 */
export async function withDeadline<T>(
  label: { source: string; target: string },
  deps: CopyDeps,
  fn: (deps: CopyDeps) => Promise<T>,
): Promise<T> {
  const waits = deps.waits ?? new WaitBoard();
  const parts = [deps.signal, deps.timeoutMs !== undefined ? AbortSignal.timeout(deps.timeoutMs) : undefined].filter(
    (s): s is AbortSignal => s !== undefined,
  );
  const signal = parts.length > 1 ? AbortSignal.any(parts) : parts[0];
  const started = Date.now();
  let stalled: { wait: Wait; silentMs: number } | undefined;
  const onAbort = () => {
    const w = waits.longest();
    if (w) stalled = { wait: { ...w }, silentMs: Date.now() - w.since };
  };
  signal?.addEventListener("abort", onAbort, { once: true });
  const onProgress = deps.onProgress;
  const stopWatch = onProgress
    ? waits.watch(deps.waitNoticeMs ?? DEFAULT_NOTICE_MS, (line) => onProgress({ phase: "notice", message: line }))
    : () => {};
  try {
    return await fn({ ...deps, waits, ...(signal ? { signal } : {}) });
  } catch (e) {
    if (!signal?.aborted || !isTimeoutReason(signal.reason)) throw e;
    throw timeoutError(label, Date.now() - started, stalled, e);
  } finally {
    stopWatch();
    signal?.removeEventListener("abort", onAbort);
  }
}

function timeoutError(
  label: { source: string; target: string },
  elapsedMs: number,
  stalled: { wait: Wait; silentMs: number } | undefined,
  cause: unknown,
): ImageyardError {
  const secs = (ms: number) => `${Math.round(ms / 1000)} s`;
  const what = stalled
    ? `timed out after ${secs(elapsedMs)} waiting for ${stalled.wait.what} from ${stalled.wait.peer} (silent for ${secs(stalled.silentMs)})`
    : `timed out after ${secs(elapsedMs)}`;
  const check = stalled ? `check ${stalled.wait.peer}, or` : "";
  return new ImageyardError(
    "TIMEOUT",
    `copy ${redactUserinfo(label.source)} → ${redactUserinfo(label.target)}: ${what} (TIMEOUT). The target tag was not changed and unfinished uploads were cancelled; ${check} allow more time (--timeout, timeouts.create).`,
    { cause, retryable: true },
  );
}
