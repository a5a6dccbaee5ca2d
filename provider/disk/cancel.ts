// Ending work when the process is told to stop. The Pulumi engine stops its plugins with SIGINT
// and a SIGKILL 5 s later (sdk/go/common/resource/plugin/plugin.go); a provider that ignores the
// SIGINT keeps downloading and uploading, and leaves its scratch behind. terminationSignal()
// aborts on the first SIGTERM or SIGINT, so every transfer given the signal stops; once the
// operations running under whileRunning() have cleaned up (or GRACE_MS passed), this process's
// scratch directories are removed and the signal's default action ends the process.
import { removeLiveScratch } from "./scratch";

const SIGNALS: readonly NodeJS.Signals[] = ["SIGTERM", "SIGINT"];
/** Time the aborted operations get to clean up (delete a half-made Glance image): under the engine's 5 s. */
const GRACE_MS = 3_500;

let controller: AbortController | undefined;
let active = 0;
let exitNow: (() => void) | undefined;

/** Runs an operation that a SIGTERM/SIGINT aborts; the process ends once every such operation has settled. */
export async function whileRunning<T>(fn: (signal: AbortSignal) => Promise<T>, log?: (line: string) => void): Promise<T> {
  const signal = terminationSignal(log);
  active++;
  try {
    return await fn(signal);
  } finally {
    active--;
    if (active === 0) exitNow?.();
  }
}

/** Aborted when the process receives SIGTERM or SIGINT; installs the handlers on first use. */
export function terminationSignal(log: (line: string) => void = (l) => console.error(l)): AbortSignal {
  if (controller) return controller.signal;
  const c = new AbortController();
  controller = c;
  const onSignal = (sig: NodeJS.Signals) => {
    if (c.signal.aborted) return;
    log(`imageyard: ${sig} received; stopping transfers and removing scratch`);
    c.abort(Object.assign(new Error(`stopped by ${sig}`), { name: "AbortError", code: "ABORT_ERR" }));
    let exited = false;
    const exit = () => {
      if (exited) return;
      exited = true;
      const n = removeLiveScratch();
      if (n > 0) log(`imageyard: removed ${n} scratch director${n === 1 ? "y" : "ies"}`);
      for (const s of SIGNALS) process.removeListener(s, onSignal);
      // The default action now: the process ends as the sender expects.
      process.kill(process.pid, sig);
    };
    // Not unref'd: the process stays at most GRACE_MS, so the cleanup below always runs.
    const timer = setTimeout(exit, GRACE_MS);
    exitNow = () => {
      clearTimeout(timer);
      // Let the failed operation's reply reach the engine first.
      setImmediate(exit);
    };
    if (active === 0) exitNow();
  };
  for (const s of SIGNALS) process.on(s, onSignal);
  return c.signal;
}
