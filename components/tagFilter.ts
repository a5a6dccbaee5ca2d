// Which tags of a repository a TagSync mirrors: a regular expression (whole tag), a semver range
// (the npm grammar's common subset: comparators, ^, ~, x-ranges, ||), and the newest N. The
// project has no semver dependency, and this subset is what regsync/skopeo sync users write.

export interface TagFilter {
  /** Whole-tag regular expression, e.g. "^v?1\\.2[0-9]\\.\\d+$". */
  include?: string;
  exclude?: string;
  /** e.g. ">=1.24 <2", "^1.27.0", "~3.20", "1.x || 2.0.x". Tags that are not versions never match. */
  semver?: string;
  /** Keep only the newest N of what matched (by version, then by name). */
  latest?: number;
}

type Version = [number, number, number, string];

/** "v1.2.3", "1.2", "3" → [1,2,3,""] (missing parts 0); prerelease kept; anything else undefined. */
export function parseVersion(tag: string): Version | undefined {
  const m = /^v?(\d+)(?:\.(\d+))?(?:\.(\d+))?(?:-([0-9A-Za-z.-]+))?$/.exec(tag);
  if (!m) return undefined;
  return [Number(m[1]), Number(m[2] ?? 0), Number(m[3] ?? 0), m[4] ?? ""];
}

export function compareVersions(a: Version, b: Version): number {
  for (let i = 0; i < 3; i++) if (a[i] !== b[i]) return (a[i] as number) - (b[i] as number);
  if (a[3] === b[3]) return 0;
  if (a[3] === "") return 1; // a release sorts after its prereleases
  if (b[3] === "") return -1;
  return a[3] < b[3] ? -1 : 1;
}

type Test = (v: Version) => boolean;

/** A semver range as a predicate; throws on what it cannot read, naming the part. */
export function semverRange(range: string): Test {
  const alternatives = range.split("||").map((alt) => {
    const parts = alt
      .trim()
      .replace(/(>=|<=|>|<|=)\s+/g, "$1")
      .split(/\s+/)
      .filter(Boolean);
    const tests = parts.map(comparator);
    // As npm: a prerelease matches only a range that names a prerelease itself.
    const allowsPre = parts.some((p) => /\d-[0-9A-Za-z]/.test(p));
    return (v: Version) => (v[3] === "" || allowsPre) && tests.every((t) => t(v));
  });
  return (v) => alternatives.some((t) => t(v));
}

function comparator(part: string): Test {
  const m = /^(\^|~|>=|<=|>|<|=)?v?(\d+|x|\*)(?:\.(\d+|x|\*))?(?:\.(\d+|x|\*))?(?:-([0-9A-Za-z.-]+))?$/.exec(part);
  if (!m) throw new Error(`"${part}" is not a version comparator (write ">=1.2.0", "^1.2", "~1.2.3", "1.x")`);
  const [, op = "", a, b, c, pre = ""] = m;
  const wild = (s: string | undefined) => s === undefined || s === "x" || s === "*";
  const base: Version = [wild(a) ? 0 : Number(a), wild(b) ? 0 : Number(b), wild(c) ? 0 : Number(c), pre];
  const cmp = (v: Version) => compareVersions(v, base);
  // x-ranges and ^/~ are [low, high): the upper bound bumps the first part that may vary.
  const upTo = (i: number): Version =>
    i === 0 ? [base[0] + 1, 0, 0, ""] : i === 1 ? [base[0], base[1] + 1, 0, ""] : [base[0], base[1], base[2] + 1, ""];
  const within = (hi: Version) => (v: Version) => cmp(v) >= 0 && compareVersions(v, hi) < 0 && (v[3] === "" || base[3] !== "");
  const fixed = wild(a) ? -1 : wild(b) ? 0 : wild(c) ? 1 : 2;
  switch (op) {
    case ">=":
      return (v) => cmp(v) >= 0;
    case ">":
      return (v) => cmp(v) > 0;
    case "<=":
      return (v) => cmp(v) <= 0;
    case "<":
      return (v) => cmp(v) < 0;
    case "^":
      return within(upTo(base[0] > 0 || fixed === 0 ? 0 : base[1] > 0 || fixed === 1 ? 1 : 2));
    case "~":
      return within(upTo(fixed === 0 ? 0 : 1));
    default:
      if (fixed < 0) return (v) => v[3] === "";
      return fixed === 2 ? (v) => cmp(v) === 0 : within(upTo(fixed));
  }
}

/** The tags `filter` keeps, newest version first (non-versions after, by name). */
export function selectTags(tags: string[], filter: TagFilter): string[] {
  const include = filter.include !== undefined ? new RegExp(`^(?:${filter.include})$`) : undefined;
  const exclude = filter.exclude !== undefined ? new RegExp(`^(?:${filter.exclude})$`) : undefined;
  const range = filter.semver !== undefined ? semverRange(filter.semver) : undefined;
  const kept = tags.filter((t) => {
    if (include && !include.test(t)) return false;
    if (exclude?.test(t)) return false;
    if (range) {
      const v = parseVersion(t);
      return v !== undefined && range(v);
    }
    return true;
  });
  kept.sort((x, y) => {
    const a = parseVersion(x);
    const b = parseVersion(y);
    if (a && b) return compareVersions(b, a) || (x < y ? -1 : 1);
    if (a || b) return a ? -1 : 1;
    return x < y ? -1 : 1;
  });
  return filter.latest !== undefined ? kept.slice(0, filter.latest) : kept;
}
