// What a long operation is waiting for right now, and since when: a request's answer, the next
// bytes of a body. A watcher prints waits that go silent ("waiting for blob sha256:… from the
// source registry 127.0.0.1:5001: 120 s"), and a deadline names the one that stalled.

export interface Wait {
  /** "blob sha256:0123456789ab", "manifest 127.0.0.1:5001/team/app:v1". */
  what: string;
  /** Who should answer: "the source registry 127.0.0.1:5001". */
  peer: string;
  /** When it began, or last made progress. */
  since: number;
}

export class WaitBoard {
  private readonly waits = new Set<Wait>();
  constructor(private readonly now: () => number = Date.now) {}

  begin(what: string, peer: string): Wait {
    const w: Wait = { what, peer, since: this.now() };
    this.waits.add(w);
    return w;
  }

  /** Progress: the wait starts again from now (optionally as something else). */
  touch(w: Wait, what?: string, peer?: string): void {
    w.since = this.now();
    if (what !== undefined) w.what = what;
    if (peer !== undefined) w.peer = peer;
  }

  end(w: Wait | undefined): void {
    if (w) this.waits.delete(w);
  }

  /** The wait that has gone longest without progress. */
  longest(): Wait | undefined {
    let best: Wait | undefined;
    for (const w of this.waits) if (!best || w.since < best.since) best = w;
    return best;
  }

  /** Waits silent for at least `ms`. */
  silentFor(ms: number): Wait[] {
    const t = this.now();
    return [...this.waits].filter((w) => t - w.since >= ms);
  }

  /**
   * Every `intervalMs`, reports each wait silent for at least that long (one line per wait, so a
   * stalled blob keeps saying so: 30 s, 60 s, 90 s …). Returns the function that stops it.
   */
  watch(intervalMs: number, report: (line: string, w: Wait) => void): () => void {
    const timer = setInterval(() => {
      const t = this.now();
      for (const w of this.silentFor(intervalMs)) report(describeWait(w, t - w.since), w);
    }, intervalMs);
    timer.unref();
    return () => clearInterval(timer);
  }
}

export function describeWait(w: Wait, ms: number): string {
  return `waiting for ${w.what} from ${w.peer}: ${Math.round(ms / 1000)} s`;
}

/** Runs `fn` as one wait on the board (when there is one). */
export async function waitingFor<T>(board: WaitBoard | undefined, what: string, peer: string, fn: () => Promise<T>): Promise<T> {
  const w = board?.begin(what, peer);
  try {
    return await fn();
  } finally {
    board?.end(w);
  }
}
