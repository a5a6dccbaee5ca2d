// Reading response headers: one value of a header, and Retry-After in either of its forms. Kept
// apart from client.ts so the rate limiter can use them without importing the client.

export type HttpHeaders = Record<string, string | string[] | undefined>;

export function header(headers: HttpHeaders, name: string): string | undefined {
  const v = headers[name.toLowerCase()];
  return Array.isArray(v) ? v[0] : v;
}

/** Retry-After is either delta-seconds or an HTTP date. */
export function parseRetryAfter(value: string | undefined, now = Date.now()): number | undefined {
  const v = value?.trim();
  // Number("") and Number(" ") are 0: a blank header must not mean "retry at once, skip backoff".
  if (!v) return undefined;
  if (/^-?\d+(\.\d+)?$/.test(v)) return Math.max(0, Number(v) * 1000);
  const at = Date.parse(v);
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}
