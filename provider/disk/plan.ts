// What preparing a source will take, for a preview: the bytes to download (the server's
// Content-Length), the bytes once decompressed where the compression records them, the conversion
// and how prepareImage will do it, and the most scratch space it will use. The choices mirror
// prepareImage's (./prepare.ts), from what probeSource saw in the first bytes.
import { formatBytes } from "../http/progress";
import type { SourceProbe } from "./probe";
import type { DiskFormat } from "./qemu";
import { expandedCap, sameBytes } from "./source";

export interface PreparePlan {
  downloadBytes: number | undefined;
  compression: SourceProbe["compression"];
  /** Bytes of the image file once decompressed (= downloadBytes when not compressed). */
  imageBytes: number | undefined;
  sourceFormat: DiskFormat;
  targetFormat: DiskFormat;
  virtualSize: number | undefined;
  /**
   * none: the download is what is uploaded; stream: qcow2 → raw read in guest order while it
   * downloads; extents: raw read from the downloaded file at qemu-img map's offsets; convert:
   * qemu-img convert into a second scratch file (or qemu-nbd when scratch is short).
   */
  conversion: "none" | "stream" | "extents" | "convert";
  /** Most scratch space used at once, bytes (an upper bound); undefined when nothing bounds it. */
  scratchBytes: number | undefined;
}

export function planPreparation(probe: SourceProbe, diskFormat: DiskFormat, opts: { checksummed: boolean }): PreparePlan {
  const v = probe.virtualSize;
  // The decompressed file: as recorded, else bounded by the guest size (plus qcow2/vmdk metadata).
  const image = probe.compression ? (probe.uncompressedBytes ?? (v !== undefined ? expandedCap(v) : undefined)) : probe.total;
  let conversion: PreparePlan["conversion"];
  let scratch = image;
  if (sameBytes(probe.format, diskFormat)) conversion = "none";
  else if (diskFormat === "raw" && probe.format === "qcow2" && opts.checksummed) conversion = "stream";
  else if (diskFormat === "raw" && !probe.compression) conversion = "extents";
  else {
    conversion = "convert";
    // The source stays until the converted file is complete; a raw result is sparse, so at most the guest size.
    scratch = image !== undefined && v !== undefined ? image + (diskFormat === "raw" ? v : expandedCap(v)) : undefined;
  }
  return {
    downloadBytes: probe.total,
    compression: probe.compression,
    imageBytes: probe.compression ? probe.uncompressedBytes : probe.total,
    sourceFormat: probe.format,
    targetFormat: diskFormat,
    virtualSize: v,
    conversion,
    scratchBytes: scratch,
  };
}

const size = (n: number | undefined, unknown: string) => (n === undefined ? unknown : formatBytes(n));

/** One line for a preview: download, decompression, conversion, scratch. */
export function describePlan(p: PreparePlan): string {
  const parts = [`download ${size(p.downloadBytes, "of unknown size (no Content-Length)")}`];
  if (p.compression)
    parts.push(
      `${p.compression}-compressed, ${p.imageBytes !== undefined ? `${formatBytes(p.imageBytes)} decompressed` : "decompressed size not recorded in the file"}`,
    );
  const virtual = p.virtualSize !== undefined ? ` (virtual size ${formatBytes(p.virtualSize)})` : "";
  const how: Record<PreparePlan["conversion"], string> = {
    none: `no conversion (${p.sourceFormat} uploaded as is)${virtual}`,
    stream: `convert ${p.sourceFormat} → ${p.targetFormat}, streamed while downloading${virtual}`,
    extents: `convert ${p.sourceFormat} → ${p.targetFormat}, read from the downloaded file${virtual}`,
    convert: `convert ${p.sourceFormat} → ${p.targetFormat} with qemu-img${virtual}`,
  };
  parts.push(how[p.conversion]);
  parts.push(`scratch needed ${p.scratchBytes !== undefined ? `≤ ${formatBytes(p.scratchBytes)}` : "unknown (no size in the header)"}`);
  return parts.join("; ");
}

/** The same line for Glance's web-download: Glance fetches and converts, nothing is staged here. */
export function describeWebDownload(probe: SourceProbe, diskFormat: DiskFormat): string {
  const conv = sameBytes(probe.format, diskFormat)
    ? `no conversion (${probe.format})`
    : `Glance converts ${probe.format} → ${diskFormat} (its image_conversion plugin)`;
  const virtual = probe.virtualSize !== undefined ? ` (virtual size ${formatBytes(probe.virtualSize)})` : "";
  return `Glance downloads ${size(probe.total, "an unknown size (no Content-Length)")} itself (web-download); ${conv}${virtual}; no scratch space here`;
}
