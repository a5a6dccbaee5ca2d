// A source with a mirror: the mirror is downloaded first and `url` only when the mirror fails
// (openstack-image-manager's mirror_url). Both are held to the one checksum, resolved for `url`
// (a SUMS file names upstream's file, which the mirror may call otherwise), so a mirror serving
// other bytes is a failed mirror, never a published image.
import { redactUrl, isImageyardError } from "../http/errors";
import { formatChecksum } from "./checksum";
import { resolveChecksum, type ImageSource, type SourceOptions } from "./source";

/** Where the bytes of a prepared source came from. */
export interface SourceChoice {
  url: string;
  /** The mirror was used (false: `url`, either without a mirror or after the mirror failed). */
  mirror: boolean;
  /** Why the mirror was given up, when it was. */
  mirrorFailure?: string;
}

/** The URLs to download from, in order. */
export function sourceUrls(source: Pick<ImageSource, "url" | "mirrorUrl">): string[] {
  return source.mirrorUrl && source.mirrorUrl !== source.url ? [source.mirrorUrl, source.url] : [source.url];
}

/**
 * Whether a failed attempt on the mirror is worth retrying on `url`: anything about the mirror's
 * answer or bytes is; a cancellation, a full scratch disk or a deadline is not (`url` would meet it too).
 */
export function mirrorMayFallBack(e: unknown, signal?: AbortSignal): boolean {
  if (signal?.aborted) return false;
  return !isImageyardError(e, "CANCELLED") && !isImageyardError(e, "NO_SPACE");
}

/**
 * Runs `attempt` on the mirror, then on `url` if the mirror failed. The source each attempt gets
 * has one URL and the checksum resolved once for `url`. `onFallback` hears why the mirror was left.
 */
export async function withMirror<T>(
  source: ImageSource,
  opts: Pick<SourceOptions, "signal" | "allowLocalFiles" | "dispatcher" | "retry">,
  attempt: (single: ImageSource, choice: SourceChoice) => Promise<T>,
  log: (line: string) => void = () => {},
): Promise<{ result: T; choice: SourceChoice }> {
  const urls = sourceUrls(source);
  const { mirrorUrl: _mirror, ...rest } = source;
  if (urls.length === 1)
    return { result: await attempt(rest, { url: source.url, mirror: false }), choice: { url: source.url, mirror: false } };
  // A SUMS entry is looked up by url's file name, once, and enforced on both downloads.
  let single: ImageSource = rest;
  if (source.checksumUrl !== undefined) {
    const c = await resolveChecksum(source, opts);
    single = { ...rest, checksum: c ? formatChecksum(c) : "unverified" };
    delete single.checksumUrl;
  }
  const mirrorChoice: SourceChoice = { url: urls[0] as string, mirror: true };
  try {
    log(`downloading from the mirror ${redactUrl(mirrorChoice.url)}`);
    return { result: await attempt({ ...single, url: mirrorChoice.url }, mirrorChoice), choice: mirrorChoice };
  } catch (e) {
    if (!mirrorMayFallBack(e, opts.signal)) throw e;
    const why = (e as Error).message ?? String(e);
    log(`the mirror ${redactUrl(mirrorChoice.url)} failed (${why}); falling back to ${redactUrl(source.url)}`);
    const choice: SourceChoice = { url: source.url, mirror: false, mirrorFailure: why };
    return { result: await attempt({ ...single, url: source.url }, choice), choice };
  }
}
