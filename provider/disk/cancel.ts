// Ending work when the process is told to stop. The Pulumi engine cancels an update by signalling
// its plugins (SIGINT, then SIGTERM/SIGKILL); a provider that ignores that keeps downloading and
// uploading, and leaves its scratch behind. terminationSignal() aborts on the first SIGTERM or
// SIGINT, so every transfer given the signal stops, removes this process's scratch directories,
// and then lets the signal's default action end the process.
import { removeLiveScratch } from "./scratch";

const SIGNALS: readonly NodeJS.Signals[] = ["SIGTERM", "SIGINT"];
/** Time the aborted operations get to clean up (delete a half-made Glance image) before exit. */
const GRACE_MS = 5_000;

let controller: AbortController | undefined;

/** Aborted when the process receives SIGTERM or SIGINT; installs the handlers on first use. */
export function terminationSignal(log: (line: string) => void = (l) => console.error(l)): AbortSignal {
  if (controller) return controller.signal;
  const c = new AbortController();
  controller = c;
  const onSignal = (sig: NodeJS.Signals) => {
    if (c.signal.aborted) return;
    log(`imageyard: ${sig} received; stopping transfers and removing scratch`);
    c.abort(Object.assign(new Error(`stopped by ${sig}`), { name: "AbortError", code: "ABORT_ERR" }));
    const exit = () => {
      const n = removeLiveScratch();
      if (n > 0) log(`imageyard: removed ${n} scratch director${n === 1 ? "y" : "ies"}`);
      for (const s of SIGNALS) process.removeListener(s, onSignal);
      // The default action now: the process ends as the sender expects.
      process.kill(process.pid, sig);
    };
    // Not unref'd: the process stays at most GRACE_MS, so the cleanup below always runs.
    setTimeout(exit, GRACE_MS);
  };
  for (const s of SIGNALS) process.on(s, onSignal);
  return c.signal;
}
