// The few qcow2 structures needed to read guest data in order while the file is still arriving:
// the header, L1 entries (where each L2 table is) and L2 entries (where each cluster is, or that
// it reads as zeros). Anything beyond plain clusters — compression, subclusters, encryption,
// backing files, external data — is reported as unsupported and left to qemu (see follow.ts).
// Whatever this reader streams is cross-checked against `qemu-img map` before the upload may end.

export interface Qcow2Header {
  version: number;
  clusterBits: number;
  clusterSize: number;
  virtualSize: number;
  l1Size: number;
  l1TableOffset: number;
  headerLength: number;
  incompatibleFeatures: bigint;
}

const MAGIC = 0x514649fb;
/** Host offset bits of L1 and standard L2 entries (9..55). */
const OFFSET_MASK = 0x00fffffffffffe00n;
const L2_COMPRESSED = 1n << 62n;
const L2_ZERO = 1n;
const INCOMPAT_DIRTY = 1n << 0n;
const INCOMPAT_COMPRESSION_TYPE = 1n << 3n;
/** Incompatible features the streaming reader copes with: a dirty bit (lazy refcounts) and a compression type field. */
const FOLLOWABLE_INCOMPAT = INCOMPAT_DIRTY | INCOMPAT_COMPRESSION_TYPE;

/** Parses the header; returns the reason when the image cannot be read in order by this reader. */
export function parseQcow2Header(b: Buffer): { header: Qcow2Header } | { unsupported: string } {
  if (b.length < 72 || b.readUInt32BE(0) !== MAGIC) return { unsupported: "not a qcow2 header" };
  const version = b.readUInt32BE(4);
  if (version !== 2 && version !== 3) return { unsupported: `qcow2 version ${version}` };
  if (b.readBigUInt64BE(8) !== 0n) return { unsupported: "backing file" };
  const clusterBits = b.readUInt32BE(20);
  if (clusterBits < 9 || clusterBits > 21) return { unsupported: `cluster_bits ${clusterBits}` };
  if (b.readUInt32BE(32) !== 0) return { unsupported: "encryption" };
  let incompatibleFeatures = 0n;
  let headerLength = 72;
  if (version === 3) {
    if (b.length < 104) return { unsupported: "truncated v3 header" };
    incompatibleFeatures = b.readBigUInt64BE(72);
    headerLength = b.readUInt32BE(100);
    if ((incompatibleFeatures & ~FOLLOWABLE_INCOMPAT) !== 0n)
      return { unsupported: `incompatible features 0x${incompatibleFeatures.toString(16)}` };
  }
  const virtualSize = b.readBigUInt64BE(24);
  const l1TableOffset = b.readBigUInt64BE(40);
  if (virtualSize > BigInt(Number.MAX_SAFE_INTEGER) || l1TableOffset > BigInt(Number.MAX_SAFE_INTEGER))
    return { unsupported: "sizes beyond 2^53" };
  const clusterSize = 2 ** clusterBits;
  const header: Qcow2Header = {
    version,
    clusterBits,
    clusterSize,
    virtualSize: Number(virtualSize),
    l1Size: b.readUInt32BE(36),
    l1TableOffset: Number(l1TableOffset),
    headerLength,
    incompatibleFeatures,
  };
  const entriesPerL2 = clusterSize / 8;
  const needed = Math.ceil(header.virtualSize / clusterSize / entriesPerL2);
  if (header.l1Size < needed) return { unsupported: `L1 table of ${header.l1Size} entries for ${needed} L2 tables` };
  if (header.l1TableOffset % clusterSize !== 0) return { unsupported: "unaligned L1 table" };
  return { header };
}

export type ClusterLocation = { kind: "zero" } | { kind: "data"; offset: number } | { kind: "compressed" };

/** Where an L1 entry's L2 table is; undefined when that whole range is unallocated (reads as zeros). */
export function l2TableOffset(l1Entry: bigint): number | undefined {
  const off = l1Entry & OFFSET_MASK;
  return off === 0n ? undefined : Number(off);
}

/** Decodes a standard (64-bit) L2 entry. Without a backing file, unallocated clusters read as zeros. */
export function clusterLocation(l2Entry: bigint, version: number): ClusterLocation {
  if ((l2Entry & L2_COMPRESSED) !== 0n) return { kind: "compressed" };
  if (version >= 3 && (l2Entry & L2_ZERO) !== 0n) return { kind: "zero" };
  const off = l2Entry & OFFSET_MASK;
  return off === 0n ? { kind: "zero" } : { kind: "data", offset: Number(off) };
}

/** A run of guest bytes: zeros, or data at a host offset of the image file. */
export interface GuestRun {
  start: number;
  length: number;
  /** Host offset of `start`; undefined for zeros. */
  offset?: number;
}

/** Appends a run, merging with the previous one when it continues it (same kind, contiguous host bytes). */
export function appendRun(runs: GuestRun[], run: GuestRun): void {
  const last = runs[runs.length - 1];
  if (last && last.start + last.length === run.start) {
    const bothZero = last.offset === undefined && run.offset === undefined;
    const contiguous = last.offset !== undefined && run.offset !== undefined && last.offset + last.length === run.offset;
    if (bothZero || contiguous) {
      last.length += run.length;
      return;
    }
  }
  runs.push({ ...run });
}

/** The first difference between two run lists over [0, upTo), or undefined when they agree. */
export function compareRuns(ours: readonly GuestRun[], theirs: readonly GuestRun[], upTo: number): string | undefined {
  const clip = (rs: readonly GuestRun[]) => {
    const out: GuestRun[] = [];
    for (const r of rs) {
      if (r.start >= upTo) break;
      appendRun(out, { ...r, length: Math.min(r.length, upTo - r.start) });
    }
    return out;
  };
  const a = clip(ours);
  const b = clip(theirs);
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    const x = a[i];
    const y = b[i];
    if (!x || !y || x.start !== y.start || x.length !== y.length || x.offset !== y.offset) {
      const show = (r?: GuestRun) => (r ? `${r.start}+${r.length}${r.offset === undefined ? " zeros" : ` @${r.offset}`}` : "nothing");
      return `run ${i}: ours ${show(x)}, qemu-img map ${show(y)}`;
    }
  }
  return undefined;
}
