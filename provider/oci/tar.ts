// A small streaming tar (ustar + PAX + GNU long names) reader and writer. No tar package is a
// dependency of the project, and what archives and image builds need is narrow: index a tar file
// by reading its 512-byte headers at their offsets (file data is never read, only skipped), open
// one entry as a byte range, and write entries one after another with backpressure.
import { once } from "node:events";
import { createReadStream } from "node:fs";
import { open } from "node:fs/promises";
import { Readable, type Writable } from "node:stream";
import { ImageyardError } from "../http/errors";

const BLOCK = 512;
const MAX_LINK_HOPS = 8;
/** A PAX or GNU long-name record larger than this is not a header we should believe. */
const MAX_META_BYTES = 1 << 20;

export type TarType = "file" | "dir" | "symlink" | "link" | "char" | "block" | "fifo";

export interface TarHeader {
  name: string;
  type: TarType;
  size: number;
  mode: number;
  uid: number;
  gid: number;
  uname?: string;
  gname?: string;
  /** Seconds since the epoch. */
  mtime: number;
  linkname?: string;
  devmajor?: number;
  devminor?: number;
  /** PAX records carried over as they were (xattrs, …), minus the ones the header itself holds. */
  pax?: Record<string, string>;
}

export interface TarEntry extends TarHeader {
  /** Byte offset of the entry's data in the tar file. */
  offset: number;
}

const TYPE_OF: Record<string, TarType> = {
  "0": "file",
  "\0": "file",
  "7": "file",
  "1": "link",
  "2": "symlink",
  "3": "char",
  "4": "block",
  "5": "dir",
  "6": "fifo",
};
const FLAG_OF: Record<TarType, string> = { file: "0", link: "1", symlink: "2", char: "3", block: "4", dir: "5", fifo: "6" };

/** "./a/b/" → "a/b" */
export function normalizeTarName(name: string): string {
  return name
    .replace(/^(\.\/)+/, "")
    .replace(/^\/+/, "")
    .replace(/\/+$/, "");
}

// Reading ---------------------------------------------------------------------------------------

/** Every entry of a tar file in order, read header by header; data is skipped, not read. */
export async function listTar(path: string, label = path): Promise<TarEntry[]> {
  const fd = await open(path, "r");
  const bad = (at: number, why: string) =>
    new ImageyardError(
      "INVALID_INPUT",
      `read ${label}: not a readable tar archive at byte ${at} (${why}). Check that the file is an uncompressed tar (docker save, skopeo, tar -cf).`,
    );
  try {
    const size = (await fd.stat()).size;
    const entries: TarEntry[] = [];
    const header = Buffer.alloc(BLOCK);
    let pos = 0;
    let pax: Record<string, string> = {};
    let longName: string | undefined;
    let longLink: string | undefined;
    while (pos + BLOCK <= size) {
      const { bytesRead } = await fd.read(header, 0, BLOCK, pos);
      if (bytesRead < BLOCK) throw bad(pos, "short header");
      if (header.every((b) => b === 0)) break;
      if (!checksumOk(header)) throw bad(pos, "header checksum mismatch");
      const flag = String.fromCharCode(header[156]!);
      const dataSize = pax.size !== undefined ? Number(pax.size) : readNumber(header, 124, 12);
      const dataAt = pos + BLOCK;
      if (!Number.isSafeInteger(dataSize) || dataSize < 0 || dataAt + dataSize > size)
        throw bad(pos, "entry runs past the end of the file");
      pos = dataAt + Math.ceil(dataSize / BLOCK) * BLOCK;
      if (flag === "x" || flag === "g" || flag === "L" || flag === "K") {
        if (dataSize > MAX_META_BYTES) throw bad(dataAt, `a ${dataSize}-byte extended header`);
        const meta = Buffer.alloc(dataSize);
        await fd.read(meta, 0, dataSize, dataAt);
        if (flag === "x") pax = parsePax(meta);
        else if (flag === "L") longName = cString(meta, 0, dataSize);
        else if (flag === "K") longLink = cString(meta, 0, dataSize);
        continue; // a global header ("g") changes no field we rely on
      }
      const type = TYPE_OF[flag];
      const ustarName = cString(header, 0, 100);
      const prefix = header.toString("latin1", 257, 262) === "ustar" ? cString(header, 345, 155) : "";
      const name = pax.path ?? longName ?? (prefix ? `${prefix}/${ustarName}` : ustarName);
      const linkname = pax.linkpath ?? longLink ?? cString(header, 157, 100);
      if (type) {
        const e: TarEntry = {
          name: normalizeTarName(name),
          type,
          size: type === "file" ? dataSize : 0,
          mode: readNumber(header, 100, 8),
          uid: pax.uid !== undefined ? Number(pax.uid) : readNumber(header, 108, 8),
          gid: pax.gid !== undefined ? Number(pax.gid) : readNumber(header, 116, 8),
          mtime: pax.mtime !== undefined ? Math.floor(Number(pax.mtime)) : readNumber(header, 136, 12),
          offset: dataAt,
        };
        const uname = pax.uname ?? cString(header, 265, 32);
        const gname = pax.gname ?? cString(header, 297, 32);
        if (uname) e.uname = uname;
        if (gname) e.gname = gname;
        if (linkname && (type === "link" || type === "symlink")) e.linkname = linkname;
        if (type === "char" || type === "block") {
          e.devmajor = readNumber(header, 329, 8);
          e.devminor = readNumber(header, 337, 8);
        }
        const extra = Object.fromEntries(Object.entries(pax).filter(([k]) => !HEADER_PAX_KEYS.has(k)));
        if (Object.keys(extra).length > 0) e.pax = extra;
        entries.push(e);
      }
      pax = {};
      longName = undefined;
      longLink = undefined;
    }
    return entries;
  } finally {
    await fd.close();
  }
}

/** The regular file an entry name leads to, following symlinks and hard links (docker save uses both). */
export function resolveTarFile(entries: Map<string, TarEntry>, name: string): TarEntry | undefined {
  let current = normalizeTarName(name);
  for (let hop = 0; hop <= MAX_LINK_HOPS; hop++) {
    const e = entries.get(current);
    if (!e) return undefined;
    if (e.type === "file") return e;
    if (!e.linkname) return undefined;
    current = e.type === "symlink" ? joinTarPath(current, e.linkname) : normalizeTarName(e.linkname);
  }
  return undefined;
}

function joinTarPath(from: string, link: string): string {
  if (link.startsWith("/")) return normalizeTarName(link);
  const parts = from.split("/").slice(0, -1);
  for (const p of link.split("/")) {
    if (p === "..") parts.pop();
    else if (p !== "." && p !== "") parts.push(p);
  }
  return parts.join("/");
}

/** One entry's data as a stream of its byte range. */
export function openTarEntry(path: string, e: TarEntry): Readable {
  if (e.size === 0) return Readable.from([]);
  return createReadStream(path, { start: e.offset, end: e.offset + e.size - 1 });
}

// Writing ---------------------------------------------------------------------------------------

/** Writes entries in order to a stream, honouring backpressure; `finish()` writes the end marker. */
export class TarWriter {
  private bytes = 0;

  constructor(private readonly out: Writable) {}

  get written(): number {
    return this.bytes;
  }

  /** A header followed by exactly `h.size` bytes from `data` (for files), padded to a block. */
  async add(h: TarHeader, data?: Readable | Buffer): Promise<void> {
    for (const block of encodeHeader(h)) await this.write(block);
    if (h.type !== "file" || h.size === 0) {
      if (data instanceof Readable) data.destroy();
      return;
    }
    if (!data)
      throw new ImageyardError("INVALID_INPUT", `write tar entry ${h.name}: ${h.size} bytes announced, no data given. Report this.`);
    let seen = 0;
    if (Buffer.isBuffer(data)) {
      seen = data.length;
      await this.write(data);
    } else {
      for await (const chunk of data as AsyncIterable<Buffer>) {
        seen += chunk.length;
        if (seen > h.size) break;
        await this.write(chunk);
      }
    }
    if (seen !== h.size) {
      throw new ImageyardError(
        "SIZE_MISMATCH",
        `write tar entry ${h.name}: expected ${h.size} bytes, the source gave ${seen > h.size ? "more" : seen} (SIZE_MISMATCH). The file changed while it was read; run again.`,
      );
    }
    const pad = (BLOCK - (h.size % BLOCK)) % BLOCK;
    if (pad) await this.write(Buffer.alloc(pad));
  }

  async finish(): Promise<void> {
    await this.write(Buffer.alloc(BLOCK * 2));
  }

  private async write(chunk: Buffer): Promise<void> {
    this.bytes += chunk.length;
    if (!this.out.write(chunk)) await once(this.out, "drain");
  }
}

const HEADER_PAX_KEYS = new Set(["path", "linkpath", "size", "uid", "gid", "uname", "gname", "mtime", "atime", "ctime"]);

/** One ustar header, preceded by a PAX header when a field does not fit. */
export function encodeHeader(h: TarHeader): Buffer[] {
  const pax: Record<string, string> = { ...(h.pax ?? {}) };
  const name = h.type === "dir" && !h.name.endsWith("/") ? `${h.name}/` : h.name;
  const split = splitName(name);
  if (!split) pax.path = name;
  if (h.linkname !== undefined && Buffer.byteLength(h.linkname) > 100) pax.linkpath = h.linkname;
  if (h.size > 0o77777777777) pax.size = String(h.size);
  if (h.uid > 0o7777777) pax.uid = String(h.uid);
  if (h.gid > 0o7777777) pax.gid = String(h.gid);
  const out: Buffer[] = [];
  if (Object.keys(pax).length > 0) {
    const body = Buffer.from(
      Object.entries(pax)
        .sort(([a], [b]) => (a < b ? -1 : 1))
        .map(([k, v]) => paxRecord(k, v))
        .join(""),
    );
    const paxName = `PaxHeaders/${(split?.name ?? name).slice(-80)}`;
    out.push(rawHeader({ name: paxName, type: "file", size: body.length, mode: 0o644, uid: 0, gid: 0, mtime: h.mtime }, "x", paxName, ""));
    out.push(Buffer.concat([body, Buffer.alloc((BLOCK - (body.length % BLOCK)) % BLOCK)]));
  }
  out.push(rawHeader(h, FLAG_OF[h.type], split?.name ?? name.slice(0, 100), split?.prefix ?? ""));
  return out;
}

function rawHeader(h: TarHeader, flag: string, name: string, prefix: string): Buffer {
  const b = Buffer.alloc(BLOCK);
  b.write(name, 0, 100, "utf8");
  writeOctal(b, 100, 8, h.mode & 0o7777);
  writeOctal(b, 108, 8, Math.min(h.uid, 0o7777777));
  writeOctal(b, 116, 8, Math.min(h.gid, 0o7777777));
  writeOctal(b, 124, 12, h.type === "file" || flag === "x" ? Math.min(h.size, 0o77777777777) : 0);
  writeOctal(b, 136, 12, Math.max(0, Math.min(h.mtime, 0o77777777777)));
  b.fill(0x20, 148, 156);
  b.write(flag, 156, 1, "latin1");
  if (h.linkname) b.write(h.linkname.slice(0, 100), 157, 100, "utf8");
  b.write("ustar\u000000", 257, 8, "latin1");
  if (h.uname) b.write(h.uname.slice(0, 31), 265, 32, "utf8");
  if (h.gname) b.write(h.gname.slice(0, 31), 297, 32, "utf8");
  if (h.devmajor !== undefined) writeOctal(b, 329, 8, h.devmajor);
  if (h.devminor !== undefined) writeOctal(b, 337, 8, h.devminor);
  if (prefix) b.write(prefix, 345, 155, "utf8");
  let sum = 0;
  for (const byte of b) sum += byte;
  writeOctal(b, 148, 7, sum);
  return b;
}

/** ustar's name/prefix split, or undefined when the name needs a PAX path. */
function splitName(name: string): { name: string; prefix: string } | undefined {
  if (!/^[\x20-\x7e]*$/.test(name)) return undefined;
  if (name.length <= 100) return { name, prefix: "" };
  for (let i = name.indexOf("/"); i >= 0; i = name.indexOf("/", i + 1)) {
    if (i <= 155 && name.length - i - 1 <= 100 && name.length - i - 1 > 0) return { prefix: name.slice(0, i), name: name.slice(i + 1) };
  }
  return undefined;
}

function paxRecord(key: string, value: string): string {
  const body = ` ${key}=${value}\n`;
  let len = Buffer.byteLength(body) + 1;
  while (String(len).length + Buffer.byteLength(body) !== len) len = String(len).length + Buffer.byteLength(body);
  return `${len}${body}`;
}

function parsePax(buf: Buffer): Record<string, string> {
  const out: Record<string, string> = {};
  let i = 0;
  while (i < buf.length) {
    const space = buf.indexOf(0x20, i);
    if (space < 0) break;
    const len = Number(buf.toString("latin1", i, space));
    if (!Number.isInteger(len) || len <= 0 || i + len > buf.length) break;
    const record = buf.toString("utf8", space + 1, i + len - 1);
    const eq = record.indexOf("=");
    if (eq > 0) out[record.slice(0, eq)] = record.slice(eq + 1);
    i += len;
  }
  return out;
}

function checksumOk(b: Buffer): boolean {
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 0x20 : b[i]!;
  return sum === readNumber(b, 148, 8);
}

/** Octal, or GNU base-256 when the top bit of the first byte is set. */
function readNumber(b: Buffer, at: number, len: number): number {
  if (b[at]! & 0x80) {
    let v = b[at]! & 0x7f;
    for (let i = 1; i < len; i++) v = v * 256 + b[at + i]!;
    return v;
  }
  const s = b
    .toString("latin1", at, at + len)
    .replace(/\0.*$/s, "")
    .trim();
  return s ? Number.parseInt(s, 8) : 0;
}

function writeOctal(b: Buffer, at: number, len: number, v: number): void {
  b.write(`${v.toString(8).padStart(len - 1, "0")}\0`, at, len, "latin1");
}

function cString(b: Buffer, at: number, len: number): string {
  const end = b.indexOf(0, at);
  return b.toString("utf8", at, end >= 0 && end < at + len ? end : at + len);
}
