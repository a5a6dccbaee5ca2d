// CommunityImage's look at the source during check(), so a preview shows the work and fails where
// an up would: for a new image, or one a change replaces, a line saying what the create will do
// (download size from the server, decompression, conversion, scratch space needed, or Glance's
// web-download); and the guest size the source's header declares, against maxVirtualSize.
import { formatBytes } from "../http/progress";
import { isImageyardError, redactUrl } from "../http/errors";
import { sourceUrls } from "../disk/mirror";
import { describePlan, describeWebDownload, planPreparation } from "../disk/plan";
import { probeSource, type SourceProbe } from "../disk/probe";
import { isUnverified } from "../disk/source";
import type { CheckFailure } from "./diff";
import type { CommunityImageInputs } from "./communityImage.lifecycle";

export const PREFLIGHT_TIMEOUT_MS = 30_000;

/** A failure worth a warning rather than a failed preview: the network, not the input. */
export function transient(e: unknown): boolean {
  return isImageyardError(e) && (e.retryable || e.code === "NETWORK_ERROR" || e.code === "TIMEOUT" || e.code === "CANCELLED");
}

/** A change diffCommunityImage answers with a replacement (or there was no image yet). */
export function replacesImage(olds: Partial<CommunityImageInputs>, news: CommunityImageInputs): boolean {
  const o = olds.source;
  const n = news.source;
  return (
    o === undefined ||
    o.url !== n.url ||
    (o.checksum ?? "") !== (n.checksum ?? "") ||
    (o.checksumUrl ?? "") !== (n.checksumUrl ?? "") ||
    olds.diskFormat !== news.diskFormat ||
    (olds.containerFormat ?? "bare") !== (news.containerFormat ?? "bare") ||
    (olds.resolvedChecksum ?? "") !== (news.resolvedChecksum ?? "")
  );
}

/**
 * Probes the source (the mirror first) when the image is new or replaced, or maxVirtualSize changed;
 * an image already published is not probed on every preview.
 */
export async function previewSource(
  olds: Partial<CommunityImageInputs>,
  news: CommunityImageInputs,
  maxVirtualSize: number | undefined,
  log: (line: string) => void,
): Promise<CheckFailure[]> {
  const replaced = replacesImage(olds, news);
  if (!replaced && olds.maxVirtualSize === news.maxVirtualSize) return [];
  const web = news.importMethod === "web-download";
  const urls = sourceUrls(news.source);
  let probe: SourceProbe | undefined;
  let from = news.source.url;
  for (const [i, url] of urls.entries()) {
    try {
      probe = await probeSource(
        { ...news.source, url },
        { allowLocalFiles: news.allowLocalFiles === true, signal: AbortSignal.timeout(PREFLIGHT_TIMEOUT_MS) },
      );
      from = url;
      break;
    } catch (e) {
      const why = (e as Error).message;
      if (i < urls.length - 1) {
        log(
          `warning: ${news.name}: the mirror ${redactUrl(url)} failed during check (${why}); the download would fall back to ${redactUrl(news.source.url)}`,
        );
      } else if (transient(e) || web) {
        // Glance may reach what this host cannot; and a network blip must not fail every preview.
        log(`warning: ${news.name}: could not look at the source during check (${why}); its size is checked again while downloading`);
        return [];
      } else return [{ property: "source.url", reason: why }];
    }
  }
  if (!probe) return [];
  if (!web && maxVirtualSize !== undefined && probe.virtualSize !== undefined && probe.virtualSize > maxVirtualSize) {
    return [
      {
        property: "maxVirtualSize",
        reason: `${redactUrl(from)}: the ${probe.format}${probe.compression ? ` (inside ${probe.compression})` : ""} declares a virtual size of ${formatBytes(probe.virtualSize)} (${probe.virtualSize} bytes), over maxVirtualSize ${formatBytes(maxVirtualSize)}. Raise maxVirtualSize if the image is meant to be this large, or check source.url.`,
      },
    ];
  }
  if (replaced) {
    const work = web
      ? describeWebDownload(probe, news.diskFormat)
      : describePlan(planPreparation(probe, news.diskFormat, { checksummed: !isUnverified(news.source) }));
    const what = olds.source === undefined ? "new image" : "replacement image";
    log(`${news.name}: ${what} from ${from !== news.source.url ? "the mirror " : ""}${redactUrl(from)}: ${work}`);
  }
  return [];
}
