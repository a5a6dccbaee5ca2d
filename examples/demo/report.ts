// Prints the demo stack's outputs (`pulumi stack output --json --show-secrets=false` on stdin) as
// a short table a person reads at a glance: what was mirrored where, and what to deploy from.
import { readFileSync } from "node:fs";
import { formatBytes } from "../../provider/http/progress";

interface ImageResult {
  pinnedRef: string;
  tagRef: string;
  digest: string;
  sourceDigest: string;
  platforms: string[];
  platformsFiltered: boolean;
  totalSize: number;
  blobsCopied: number;
  blobsMounted: number;
  blobsSkipped: number;
  signaturesCopied?: number;
}

interface DemoOutputs {
  upstream: string;
  mirror: string;
  result: Record<string, ImageResult>;
}

const color = process.stdout.isTTY && !process.env.NO_COLOR;
const bold = (s: string) => (color ? `\x1b[1m${s}\x1b[0m` : s);
const dim = (s: string) => (color ? `\x1b[2m${s}\x1b[0m` : s);
const short = (digest: string) => digest.replace(/^sha256:(.{12}).*$/, "sha256:$1…");

function report(outs: DemoOutputs): string {
  const rows = Object.entries(outs.result ?? {});
  const lines = [bold(`imageyard demo: ${rows.length} images mirrored from ${outs.upstream} (upstream) to ${outs.mirror} (mirror)`), ""];
  const nameWidth = Math.max(...rows.map(([n]) => n.length), 5);
  for (const [name, r] of rows) {
    const what = [
      r.platforms.join(", ") + (r.platformsFiltered ? " (subset: new index)" : ""),
      formatBytes(r.totalSize),
      `${r.blobsCopied} copied, ${r.blobsMounted} mounted, ${r.blobsSkipped} already there` +
        (r.signaturesCopied ? `, ${r.signaturesCopied} signature${r.signaturesCopied > 1 ? "s" : ""}` : ""),
    ].join(dim("  ·  "));
    lines.push(`  ${bold(name.padEnd(nameWidth))}  ${what}`);
    lines.push(`  ${"".padEnd(nameWidth)}  ${dim("deploy")} ${r.pinnedRef}`);
    lines.push(
      `  ${"".padEnd(nameWidth)}  ${dim("tag   ")} ${r.tagRef}${r.digest === r.sourceDigest ? dim(`  (same digest as upstream ${short(r.sourceDigest)})`) : dim(`  (upstream ${short(r.sourceDigest)})`)}`,
    );
    lines.push("");
  }
  return lines.join("\n");
}

process.stdout.write(report(JSON.parse(readFileSync(0, "utf8")) as DemoOutputs));
