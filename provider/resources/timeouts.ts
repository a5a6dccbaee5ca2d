// One timeout shape for every resource: `timeouts: { create, update, delete }`, each a number of
// seconds or a duration string as Pulumi's customTimeouts take it ("90s", "20m", "1h30m").
// Pulumi's own customTimeouts never reach a dynamic provider, so the lifecycles enforce these.
import { isUnknown, type CheckFailure } from "./diff";

export type TimeoutValue = number | string;
export interface Timeouts {
  create?: TimeoutValue;
  update?: TimeoutValue;
  delete?: TimeoutValue;
}
export type Operation = keyof Timeouts;
const OPERATIONS: readonly Operation[] = ["create", "update", "delete"];
const UNIT_S: Record<string, number> = { s: 1, m: 60, h: 3600 };

/** Seconds of a timeout value, or undefined when it is not a valid one. */
export function timeoutSeconds(v: unknown): number | undefined {
  if (typeof v === "number") return Number.isFinite(v) && v > 0 ? v : undefined;
  if (typeof v !== "string") return undefined;
  const s = v.trim();
  if (/^\d+(\.\d+)?$/.test(s)) return timeoutSeconds(Number(s));
  if (!/^(\d+(\.\d+)?[hms])+$/.test(s)) return undefined;
  let total = 0;
  for (const m of s.matchAll(/(\d+(?:\.\d+)?)([hms])/g)) total += Number(m[1]) * (UNIT_S[m[2] as string] as number);
  return total > 0 ? total : undefined;
}

/** check(): failures for a `timeouts` input (unknown values pass until they are known). */
export function checkTimeouts(timeouts: unknown, property = "timeouts"): CheckFailure[] {
  if (timeouts === undefined || isUnknown(timeouts)) return [];
  if (!timeouts || typeof timeouts !== "object" || Array.isArray(timeouts)) {
    return [{ property, reason: `${property} is an object { create, update, delete }, e.g. { create: "30m" }` }];
  }
  const failures: CheckFailure[] = [];
  for (const [k, v] of Object.entries(timeouts)) {
    if (!OPERATIONS.includes(k as Operation))
      failures.push({
        property: `${property}.${k}`,
        reason: `${property} has create, update and delete, e.g. { create: "30m", delete: 300 }`,
      });
    else if (v !== undefined && !isUnknown(v) && timeoutSeconds(v) === undefined) {
      failures.push({
        property: `${property}.${k}`,
        reason: `${property}.${k} must be a positive number of seconds or a duration like "90s", "20m", "1h30m"; got ${JSON.stringify(v)}`,
      });
    }
  }
  return failures;
}

/** Milliseconds allowed for an operation: the input's, else the resource's default (seconds). */
export function timeoutMs(timeouts: Timeouts | undefined, op: Operation, defaultSeconds: number): number {
  return (timeoutSeconds(timeouts?.[op]) ?? defaultSeconds) * 1000;
}
