// Progress for long work (blobs, bytes, percent). Engines emit events; whoever runs them decides
// where lines go (the CLI's stderr, a dynamic provider's output) and how often.

export interface ProgressEvent {
  /** "plan", "blob", "manifest", "download", "convert", "upload", …; "notice" for a sentence of its own. */
  phase: string;
  /** What the bytes belong to: a digest, a file name. */
  item?: string;
  /** Bytes done for this item so far. */
  bytes?: number;
  /** Bytes expected for this item, when known. */
  total?: number;
  /** A finished step, shown whatever the rate limit. */
  done?: boolean;
  message?: string;
}

export type ProgressSink = (event: ProgressEvent) => void;

export const noProgress: ProgressSink = () => {};

export function formatBytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${u === 0 ? v : v.toFixed(1)} ${units[u]}`;
}

export function shortDigest(d: string): string {
  const i = d.indexOf(":");
  return i >= 0 ? `${d.slice(0, i + 1)}${d.slice(i + 1, i + 13)}` : d;
}

export interface LineProgressOptions {
  /** Minimum gap between two byte-count lines of one item. */
  intervalMs?: number;
  now?: () => number;
}

/**
 * Turns events into human lines, rate-limited per item so a 4 GiB blob prints a handful of
 * lines rather than thousands.
 */
export function lineProgress(write: (line: string) => void, opts: LineProgressOptions = {}): ProgressSink {
  const interval = opts.intervalMs ?? 2000;
  const now = opts.now ?? Date.now;
  const last = new Map<string, number>();
  return (ev) => {
    const key = `${ev.phase}:${ev.item ?? ""}`;
    const t = now();
    if (!ev.done && ev.message === undefined) {
      const prev = last.get(key);
      if (prev !== undefined && t - prev < interval) return;
    }
    last.set(key, t);
    if (ev.done) last.delete(key);
    write(formatEvent(ev));
  };
}

export function formatEvent(ev: ProgressEvent): string {
  // A notice is a sentence of its own ("waiting for … from …: 30 s").
  if (ev.phase === "notice") return ev.message ?? "";
  const parts = [ev.phase];
  if (ev.item) parts.push(ev.item.startsWith("sha256:") ? shortDigest(ev.item) : ev.item);
  if (ev.bytes !== undefined) {
    const pct = ev.total ? ` (${Math.floor((100 * ev.bytes) / ev.total)}%)` : "";
    parts.push(ev.total !== undefined ? `${formatBytes(ev.bytes)}/${formatBytes(ev.total)}${pct}` : formatBytes(ev.bytes));
  }
  if (ev.done) parts.push("done");
  if (ev.message) parts.push(ev.message);
  return parts.join(" ");
}
