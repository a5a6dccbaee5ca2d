// How the RegistryClient reaches a registry: TLS material (certDir like docker and skopeo), one
// dispatcher per TLS configuration, which scheme a loopback registry settled on, and the small
// wire formats of the distribution API (Range, Link, Location queries).
import { createHash } from "node:crypto";
import { readdirSync, readFileSync } from "node:fs";
import { connect } from "node:net";
import { join } from "node:path";
import type { Dispatcher } from "undici";
import { createDispatcher, defaultDispatcher, type HttpBody, type TlsOptions } from "../http/client";
import { ImageyardError } from "../http/errors";

export type Scheme = "https" | "http";
/** What "try https, then http" settled on per registry host, so only the first call probes. */
const schemeCache = new Map<string, Scheme>();
const dispatcherCache = new Map<string, Dispatcher>();

export function knownScheme(host: string): Scheme | undefined {
  return schemeCache.get(host);
}

export function rememberScheme(host: string, scheme: Scheme): void {
  schemeCache.set(host, scheme);
}

/**
 * The first bytes of a TLS handshake record (a ClientHello too short to parse) and a line end. A
 * TLS server answers with an alert or closes; a plain HTTP server reads it as a bad request line
 * and answers "HTTP/1.1 400". Nothing of a request, let alone credentials, is in it.
 */
const TLS_HELLO_PROBE = Buffer.from([0x16, 0x03, 0x01, 0x00, 0x06, 0x01, 0x00, 0x00, 0x02, 0x03, 0x03, 0x0d, 0x0a]);
const PROBE_TIMEOUT_MS = 5_000;
const probes = new Map<string, Promise<Scheme | undefined>>();

/**
 * "http" when `host` (with an explicit port) answers the start of a TLS handshake in plain HTTP;
 * undefined when it may speak TLS, or did not say. For registries that may fall back to http, this
 * decides in one round trip on a bare socket what an https attempt costs a TLS stack for: Node's
 * TLS modules, a secure context and a failed handshake (a third of a no-op copy's CPU).
 */
export function probePlainHttp(host: string): Promise<Scheme | undefined> {
  let p = probes.get(host);
  if (!p) {
    p = probe(host);
    probes.set(host, p);
  }
  return p;
}

function probe(host: string): Promise<Scheme | undefined> {
  let url: URL;
  try {
    url = new URL(`http://${host}`);
  } catch {
    return Promise.resolve(undefined);
  }
  if (!url.port) return Promise.resolve(undefined);
  return new Promise((resolve) => {
    let got = Buffer.alloc(0);
    const socket = connect({ host: url.hostname.replace(/^\[(.*)\]$/, "$1"), port: Number(url.port) });
    const done = () => {
      clearTimeout(timer);
      socket.destroy();
      resolve(got.subarray(0, 5).toString("latin1") === "HTTP/" ? "http" : undefined);
    };
    const timer = setTimeout(done, PROBE_TIMEOUT_MS);
    timer.unref();
    socket.on("connect", () => socket.write(TLS_HELLO_PROBE));
    socket.on("data", (d: Buffer) => {
      got = Buffer.concat([got, d]);
      if (got.length >= 5) done();
    });
    socket.on("end", done);
    socket.on("error", done);
  });
}

/** Explicit TLS options plus a certDir's CAs and client certificate. */
export function tlsOptions(opts: { tls?: TlsOptions; certDir?: string }): TlsOptions | undefined {
  if (!opts.tls && !opts.certDir) return undefined;
  const tls: TlsOptions = { ...opts.tls, ca: [...(opts.tls?.ca ?? [])] };
  if (opts.certDir) {
    let names: string[];
    try {
      names = readdirSync(opts.certDir).sort();
    } catch (e) {
      throw new ImageyardError(
        "INVALID_INPUT",
        `read certDir ${opts.certDir}: ${(e as Error).message}. Point certDir at a directory holding *.crt CA files.`,
        { cause: e },
      );
    }
    for (const n of names) if (n.endsWith(".crt")) tls.ca!.push(readFileSync(join(opts.certDir, n), "utf8"));
    const cert = names.find((n) => n.endsWith(".cert"));
    if (cert && !tls.cert) {
      const key = cert.replace(/\.cert$/, ".key");
      if (!names.includes(key))
        throw new ImageyardError(
          "INVALID_INPUT",
          `read certDir ${opts.certDir}: ${cert} has no matching ${key}. Put the client key next to its certificate.`,
        );
      tls.cert = readFileSync(join(opts.certDir, cert), "utf8");
      tls.key = readFileSync(join(opts.certDir, key), "utf8");
    }
  }
  return tls;
}

export function sharedDispatcher(tls: TlsOptions | undefined): Dispatcher {
  if (!tls || (!tls.ca?.length && !tls.insecure && !tls.cert)) return defaultDispatcher();
  const key = createHash("sha256").update(JSON.stringify(tls)).digest("hex");
  let d = dispatcherCache.get(key);
  if (!d) {
    d = createDispatcher({ tls });
    dispatcherCache.set(key, d);
  }
  return d;
}

const TLS_VERIFY_CODES = new Set([
  "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
  "SELF_SIGNED_CERT_IN_CHAIN",
  "DEPTH_ZERO_SELF_SIGNED_CERT",
  "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
  "UNABLE_TO_GET_ISSUER_CERT",
  "CERT_HAS_EXPIRED",
  "CERT_NOT_YET_VALID",
  "CERT_UNTRUSTED",
  "ERR_TLS_CERT_ALTNAME_INVALID",
]);

/** A certificate the client does not trust becomes TLS_ERROR, with what to do about it. */
export function tlsError(e: unknown, what: string, registry: string): ImageyardError | undefined {
  for (let cur = e as { code?: string; cause?: unknown } | undefined, depth = 0; cur && depth < 5; cur = cur.cause as typeof cur, depth++) {
    if (typeof cur.code === "string" && TLS_VERIFY_CODES.has(cur.code)) {
      return new ImageyardError(
        "TLS_ERROR",
        `${what}: the registry's TLS certificate is not trusted (${cur.code}). Give the registry's CA (tls ca or certDir) for ${registry}, or set insecure for it explicitly.`,
        { cause: e },
      );
    }
  }
  return undefined;
}

export function isStream(body: HttpBody | undefined): boolean {
  return typeof body === "object" && body !== null && typeof (body as { pipe?: unknown }).pipe === "function";
}

/** "0-1023" → 1024 bytes held. 2.8 reports "0-0" for an empty session too; we read it as 0. */
export function rangeEnd(range: string | undefined): number | undefined {
  const m = /^(?:bytes=)?(\d+)-(\d+)$/.exec((range ?? "").trim());
  if (!m) return undefined;
  const end = Number(m[2]);
  return end === 0 ? 0 : end + 1;
}

/** Appends to a Location verbatim: re-encoding its opaque _state could change it. */
export function withQuery(url: string, key: string, value: string): string {
  const hash = url.indexOf("#");
  const base = hash < 0 ? url : url.slice(0, hash);
  return `${base}${base.includes("?") ? "&" : "?"}${encodeURIComponent(key)}=${encodeURIComponent(value)}`;
}

/** The target of `Link: <…>; rel="next"`, if any. */
export function nextLink(link: string | undefined): string | undefined {
  if (!link) return undefined;
  for (const part of link.split(",")) {
    const m = /<([^>]+)>\s*;(.*)/.exec(part.trim());
    if (m && /rel\s*=\s*"?next"?/i.test(m[2]!)) return m[1];
  }
  return undefined;
}

export function stripQuery(url: string): string {
  const q = url.indexOf("?");
  return q < 0 ? url : url.slice(0, q);
}
