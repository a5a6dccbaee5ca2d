// Immutable keys (azimuth-ops' rule: a key always names the exact same image). Only check() sees
// both the inputs in state and the new ones before anything happens, so the refusal lives here:
// a changed source under an existing key fails the preview, with the way out in the message.
import { redactUrl } from "../http/errors";
import { isUnknown, type CheckFailure } from "./diff";
import type { CommunityImageInputs } from "./communityImage.lifecycle";

/** Set by a component that promises key → image stability (CommunityImages). */
export interface ImmutableSource {
  /** The user's key, for the message. */
  key: string;
  /** What to do instead (how to add a new key, which option allows a replacement). */
  hint?: string;
}

type SourceInputs = Pick<CommunityImageInputs, "source" | "resolvedChecksum"> & { immutableSource?: ImmutableSource };

/** One line describing what a source is: its URL and its checksum (given or resolved). */
function describe(i: SourceInputs): string {
  const s = i.source;
  const sum = s.checksum ?? i.resolvedChecksum ?? (s.checksumUrl ? `the entry in ${redactUrl(s.checksumUrl)}` : "no checksum");
  return `${redactUrl(s.url)} (${sum.length > 80 ? `${sum.slice(0, 80)}…` : sum})`;
}

/**
 * A failure when `news.immutableSource` is set and the image already exists (olds has a source)
 * with another URL, checksum, checksumUrl or resolved SUMS entry. Runs after the checksumUrl
 * resolution, so a new upstream build behind the same SUMS URL is a change too.
 */
export function checkImmutableSource(olds: Partial<SourceInputs>, news: SourceInputs): CheckFailure[] {
  const lock = news.immutableSource;
  if (lock === undefined || isUnknown(lock)) return [];
  if (typeof lock !== "object" || lock === null || typeof lock.key !== "string" || lock.key === "") {
    return [{ property: "immutableSource", reason: 'immutableSource must be { key: "<the map key>", hint?: "…" }' }];
  }
  const o = olds.source;
  const n = news.source;
  if (!o || !n || isUnknown(n) || isUnknown(o)) return [];
  const same = (a?: string, b?: string) => (a ?? "") === (b ?? "");
  const resolvedChanged =
    olds.resolvedChecksum !== undefined && news.resolvedChecksum !== undefined && olds.resolvedChecksum !== news.resolvedChecksum;
  if (same(o.url, n.url) && same(o.checksum, n.checksum) && same(o.checksumUrl, n.checksumUrl) && !resolvedChanged) return [];
  const what =
    resolvedChanged && same(o.url, n.url) ? "its checksum file now lists another build" : `its source changed to ${describe(news)}`;
  return [
    {
      property: "source",
      reason: `key "${lock.key}" was published from ${describe(olds as SourceInputs)}, and ${what}. Keys are immutable: a key always names the same image, so this change is refused. ${lock.hint ?? "Publish the new image under a new key and point its users at it."}`,
    },
  ];
}
