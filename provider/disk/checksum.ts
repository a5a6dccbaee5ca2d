// Image checksums: the inline forms users write, the SUMS files distributions publish, and a
// pass-through stream that hashes everything once and holds back the last chunk until the digest
// is known to be right, so a downstream upload can never complete with bad bytes.
import { createHash, type Hash } from "node:crypto";
import { Transform, type TransformCallback } from "node:stream";
import { DiskImageError } from "./errors";
import { StreamHasher } from "./hasher";

export type HashAlgo = "md5" | "sha256" | "sha512";
export const HASH_ALGOS: readonly HashAlgo[] = ["md5", "sha256", "sha512"];

export interface Checksum {
  algo: HashAlgo;
  /** Lowercase hex. */
  value: string;
}

export type Digests = Record<HashAlgo, string>;

const HEX_LENGTH: Record<HashAlgo, number> = { md5: 32, sha256: 64, sha512: 128 };
/** Strongest first: when a SUMS file lists several algorithms for one file, the strongest wins. */
const STRENGTH: readonly HashAlgo[] = ["sha512", "sha256", "md5"];
const EXAMPLE = "sha256:94e1e2c94dbbae7d4bdc38e68590a1daf73c9de2d03dd693857b4b0a042548e8";

export function formatChecksum(c: Checksum): string {
  return `${c.algo}:${c.value}`;
}

export function algoForHexLength(n: number): HashAlgo | undefined {
  return STRENGTH.find((a) => HEX_LENGTH[a] === n);
}

/**
 * Parses `sha256:…`, `sha512:…`, `md5:…` (also `sha256=…`), or bare hex whose length names the
 * algorithm. Anything else is an input error with an example of the right form.
 */
export function parseChecksum(input: string, property = "source.checksum"): Checksum {
  const text = input.trim();
  const bad = (why: string) =>
    new DiskImageError(
      "INVALID_INPUT",
      `${property} "${text.length > 80 ? `${text.slice(0, 80)}…` : text}": ${why}. Write <algorithm>:<hex> with sha256, sha512 or md5, e.g. "${EXAMPLE}".`,
    );
  const m = /^([A-Za-z0-9-]+)[:=](.*)$/.exec(text);
  if (m) {
    const algo = (m[1] as string).toLowerCase().replace("-", "") as HashAlgo;
    const hex = (m[2] as string).trim();
    if (!HASH_ALGOS.includes(algo)) throw bad(`unsupported algorithm "${m[1]}"`);
    if (!/^[0-9a-fA-F]+$/.test(hex)) throw bad("the value is not hexadecimal");
    if (hex.length !== HEX_LENGTH[algo]) throw bad(`a ${algo} value has ${HEX_LENGTH[algo]} hex digits, this one has ${hex.length}`);
    return { algo, value: hex.toLowerCase() };
  }
  if (/^[0-9a-fA-F]+$/.test(text)) {
    const algo = algoForHexLength(text.length);
    if (!algo) throw bad(`${text.length} hex digits match no supported algorithm (32 md5, 64 sha256, 128 sha512)`);
    return { algo, value: text.toLowerCase() };
  }
  throw bad("not a checksum");
}

export interface SumsEntry extends Checksum {
  /** The file name as listed (no leading `*` or `./`). */
  name: string;
}

const BSD_LINE = /^(MD5|SHA256|SHA512|SHA1|SHA224|SHA384|SHA-256|SHA-512)\s*\((.+)\)\s*=\s*([0-9a-fA-F]+)\s*$/i;
const GNU_LINE = /^\\?([0-9a-fA-F]{32,128})\s+\*?(.+?)\s*$/;

/**
 * Reads a checksum list in the forms distributions publish: GNU coreutils (`HEX  name`,
 * `HEX *name`), BSD/openssl (`SHA256 (name) = HEX`), Fedora CHECKSUM files inside PGP armour,
 * and files mixing several algorithms. Lines for algorithms we do not support are skipped.
 */
export function parseSums(text: string): SumsEntry[] {
  const entries: SumsEntry[] = [];
  for (const raw of stripPgpArmour(text).split(/\r?\n/)) {
    const line = raw.trim();
    if (!line || line.startsWith("#")) continue;
    const bsd = BSD_LINE.exec(line);
    if (bsd) {
      const algo = (bsd[1] as string).toLowerCase().replace("-", "") as HashAlgo;
      const value = (bsd[3] as string).toLowerCase();
      if (HASH_ALGOS.includes(algo) && value.length === HEX_LENGTH[algo]) entries.push({ algo, value, name: cleanName(bsd[2] as string) });
      continue;
    }
    const gnu = GNU_LINE.exec(line);
    if (gnu) {
      const value = (gnu[1] as string).toLowerCase();
      const algo = algoForHexLength(value.length);
      if (algo) entries.push({ algo, value, name: cleanName(gnu[2] as string, line.startsWith("\\")) });
    }
  }
  return entries;
}

function stripPgpArmour(text: string): string {
  const begin = text.indexOf("-----BEGIN PGP SIGNED MESSAGE-----");
  if (begin < 0) return text;
  // The armour headers ("Hash: SHA256") end at the first blank line; the signature follows the body.
  const rest = text.slice(begin);
  const bodyStart = rest.search(/\r?\n\r?\n/);
  const sig = rest.indexOf("-----BEGIN PGP SIGNATURE-----");
  const body = rest.slice(Math.max(bodyStart, 0), sig < 0 ? undefined : sig);
  // Dash-escaping (RFC 4880 §7.1) prefixes lines starting with "-" by "- ".
  return body.replace(/^- /gm, "");
}

function cleanName(name: string, escaped = false): string {
  let n = name.trim();
  if (escaped) n = n.replace(/\\n/g, "\n").replace(/\\\\/g, "\\");
  while (n.startsWith("./")) n = n.slice(2);
  return n;
}

/** The file name a URL points at, as SUMS files list it. */
export function fileNameOf(url: string): string {
  let path: string;
  try {
    path = new URL(url).pathname;
  } catch {
    path = url;
  }
  const last = path.split("/").filter(Boolean).pop() ?? "";
  try {
    return decodeURIComponent(last);
  } catch {
    return last;
  }
}

/** The strongest entry for `fileName` (compared by base name), or an error listing what the file has. */
export function pickSumsEntry(entries: readonly SumsEntry[], fileName: string, what: string): SumsEntry {
  const base = (n: string) => n.split("/").pop() ?? n;
  const matches = entries.filter((e) => e.name === fileName || base(e.name) === fileName);
  for (const algo of STRENGTH) {
    const hit = matches.find((e) => e.algo === algo);
    if (hit) return hit;
  }
  const listed = [...new Set(entries.map((e) => e.name))];
  const sample = listed.slice(0, 8).join(", ") + (listed.length > 8 ? `, … (${listed.length} in all)` : "");
  throw new DiskImageError(
    "INVALID_INPUT",
    listed.length === 0
      ? `${what}: no sha256, sha512 or md5 lines found. Check that source.checksumUrl points at a SUMS file.`
      : `${what}: no entry for "${fileName}" (it lists ${sample}). Check source.checksumUrl or the file name in source.url.`,
  );
}

/** md5, sha256 and sha512 over one pass of the bytes. */
export class MultiHash {
  private readonly hashes: Array<[HashAlgo, Hash]>;
  bytes = 0;
  constructor(algos: readonly HashAlgo[] = HASH_ALGOS) {
    this.hashes = algos.map((a) => [a, createHash(a)]);
  }
  update(chunk: Buffer): void {
    this.bytes += chunk.length;
    for (const [, h] of this.hashes) h.update(chunk);
  }
  digest(): Partial<Digests> {
    const out: Partial<Digests> = {};
    for (const [a, h] of this.hashes) out[a] = h.digest("hex");
    return out;
  }
}

export interface VerifyingStreamOptions {
  /** The digest the bytes must have; without it the stream only hashes. */
  expected?: Checksum;
  /** Algorithms to compute (the expected one is always added). */
  algos?: readonly HashAlgo[];
  /** For messages: "download https://host/x.qcow2". */
  what: string;
  /** Hint appended to a mismatch message. */
  hint?: string;
}

/**
 * Hashes what passes through and verifies at EOF. The latest chunk is always held back and only
 * released once the digest matches, so a consumer never sees the end of a bad stream.
 */
export class VerifyingStream extends Transform {
  private readonly hash: StreamHasher;
  private held: Buffer | undefined;
  private result: Partial<Digests> | undefined;

  constructor(private readonly opts: VerifyingStreamOptions) {
    super({ highWaterMark: 1 << 20 });
    const algos = new Set<HashAlgo>(opts.algos ?? []);
    if (opts.expected) algos.add(opts.expected.algo);
    if (algos.size === 0) algos.add("sha256");
    this.hash = new StreamHasher([...algos]);
  }

  get bytes(): number {
    return this.hash.bytes;
  }

  /** Digests of everything that passed; only after the stream has ended. */
  get digests(): Partial<Digests> {
    if (!this.result) throw new Error("VerifyingStream: digests read before the stream ended");
    return this.result;
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    const wait = this.hash.update(chunk);
    const prev = this.held;
    this.held = chunk;
    if (wait) wait.then(() => cb(null, prev), cb);
    else cb(null, prev);
  }

  override _flush(cb: TransformCallback): void {
    this.hash.digest().then((d) => this.finish(d, cb), cb);
  }

  override _destroy(err: Error | null, cb: (e?: Error | null) => void): void {
    this.hash.dispose();
    cb(err);
  }

  private finish(digests: Partial<Digests>, cb: TransformCallback): void {
    this.result = digests;
    const exp = this.opts.expected;
    if (exp) {
      const got = this.result[exp.algo] as string;
      if (got !== exp.value) {
        this.held = undefined;
        cb(checksumMismatch(this.opts.what, exp, { algo: exp.algo, value: got }, this.hash.bytes, this.opts.hint));
        return;
      }
    }
    const last = this.held;
    this.held = undefined;
    cb(null, last);
  }
}

export function checksumMismatch(what: string, expected: Checksum, got: Checksum, bytes: number, hint?: string): DiskImageError {
  return new DiskImageError(
    "CHECKSUM_MISMATCH",
    `${what}: expected ${formatChecksum(expected)}, got ${formatChecksum(got)} after ${bytes} bytes; file discarded. ${hint ?? "Check source.checksum or the SUMS file."}`,
  );
}
