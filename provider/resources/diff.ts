// Pure helpers shared by the dynamic providers: unknown-value handling during preview,
// stable comparison of input values, and check-failure shapes. No Pulumi import here, so the
// engines' tests and every provider can use them.

/** The sentinel the engine puts in place of a value not known until apply (preview). */
export const UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9";

export function isUnknown(v: unknown): boolean {
  if (v === UNKNOWN) return true;
  if (Array.isArray(v)) return v.some(isUnknown);
  if (v && typeof v === "object") return Object.values(v as Record<string, unknown>).some(isUnknown);
  return false;
}

/** JSON-equality with object keys sorted, so {a,b} equals {b,a}; undefined ≡ absent. */
export function sameValue(a: unknown, b: unknown): boolean {
  return canonical(a) === canonical(b);
}

function canonical(v: unknown): string {
  return (
    JSON.stringify(v, (_k, val: unknown) => {
      if (val && typeof val === "object" && !Array.isArray(val)) {
        return Object.fromEntries(
          Object.entries(val as Record<string, unknown>)
            .filter(([, x]) => x !== undefined)
            .sort(([x], [y]) => (x < y ? -1 : x > y ? 1 : 0)),
        );
      }
      return val;
    }) ?? "undefined"
  );
}

/** Keys among `keys` whose values differ between olds and news. */
export function changedKeys<T extends object>(olds: Partial<T>, news: Partial<T>, keys: readonly (keyof T & string)[]): string[] {
  return keys.filter((k) => !sameValue(olds[k], news[k]));
}

export interface CheckFailure {
  property: string;
  reason: string;
}

export interface DiffResult {
  changes: boolean;
  replaces?: string[];
  deleteBeforeReplace?: boolean;
}

/** Builds the dynamic-provider diff answer from the keys that update and the keys that replace. */
export function diffResult(updates: readonly string[], replaces: readonly string[]): DiffResult {
  const all = [...new Set([...updates, ...replaces])];
  return replaces.length > 0
    ? { changes: true, replaces: [...new Set(replaces)], deleteBeforeReplace: false }
    : { changes: all.length > 0 };
}

/** The dynamic provider's serialized code, present in both olds and news. */
export const PROVIDER_KEY = "__provider";

/**
 * Reports a change of the provider's own code between deployments. Without it the engine keeps
 * the old code in state (diff said "no change"), and refresh/delete keep running the old code.
 */
export function providerChanged(olds: Record<string, unknown>, news: Record<string, unknown>): boolean {
  const o = olds[PROVIDER_KEY];
  const n = news[PROVIDER_KEY];
  return typeof o === "string" && typeof n === "string" && n !== UNKNOWN && o !== n;
}

/** Drops keys whose value is undefined, so outputs never carry explicit undefineds. */
export function compact<T extends object>(o: T): T {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as T;
}
