// openstack-image-manager's catalog format: reading (a YAML file, a directory of *.yml, or the same
// data as an object) and strict validation, like its `--check-only`: every unknown field or wrong
// type is reported with the file, the image and the field, all at once.
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { isPair, isScalar, parseDocument, visit } from "yaml";
import { InputPropertyError } from "./component";

export const DISK_FORMATS = ["raw", "qcow2", "vmdk", "vdi", "vhd", "vhdx", "iso"] as const;
export type DiskFormat = (typeof DISK_FORMATS)[number];
export const VISIBILITIES = ["public", "community", "shared", "private"] as const;
export type Visibility = (typeof VISIBILITIES)[number];

/** One version of an image as the catalog writes it (snake_case, as openstack-image-manager). */
export interface CatalogVersionEntry {
  version: string | number;
  url: string;
  mirror_url?: string;
  checksum?: string;
  build_date?: string;
}

/** One image entry as openstack-image-manager writes it. */
export interface CatalogImageEntry {
  name: string;
  enable?: boolean;
  shortname?: string;
  format?: DiskFormat;
  login?: string;
  password?: string;
  min_disk?: number;
  min_ram?: number;
  status?: "active" | "deactivated";
  visibility?: Visibility;
  multi?: boolean;
  /** multi: false names "<name><separator><version>" (default " "). */
  separator?: string;
  /** true: older versions of this image are never retired. */
  keep?: boolean;
  meta?: Record<string, string | number | boolean>;
  tags?: string[];
  versions?: CatalogVersionEntry[];
  latest_url?: string;
  latest_checksum_url?: string;
}

export interface CatalogDocument {
  images: CatalogImageEntry[];
}

/** A validated image, with where it came from (for messages). */
export interface CatalogImage extends Omit<CatalogImageEntry, "versions"> {
  versions: (CatalogVersionEntry & { version: string })[];
  origin: string;
}

export interface CatalogProblem {
  origin: string;
  image: string;
  field: string;
  reason: string;
}

/** Every problem of a catalog, in one error (propertyPath: the first one's). */
export class CatalogError extends InputPropertyError {
  readonly problems: CatalogProblem[];
  constructor(problems: CatalogProblem[]) {
    const first = problems[0] as CatalogProblem;
    const lines = problems.map((p) => `${p.origin}: ${p.image ? `image "${p.image}": ` : ""}${p.field}: ${p.reason}`);
    super("ImageCatalog", `catalog (${problems.length} problem${problems.length === 1 ? "" : "s"})`, `\n  ${lines.join("\n  ")}`);
    Object.defineProperty(this, "propertyPath", { value: `${first.origin}: ${first.image}.${first.field}` });
    this.problems = problems;
  }
}

/** The documents of a catalog source: a file, a directory of *.yml / *.yaml (sorted), or objects. */
export function readCatalog(source: string | CatalogDocument | CatalogDocument[]): { origin: string; doc: unknown }[] {
  if (typeof source !== "string") return (Array.isArray(source) ? source : [source]).map((doc, i) => ({ origin: `catalog[${i}]`, doc }));
  let isDir: boolean;
  try {
    isDir = statSync(source).isDirectory();
  } catch (e) {
    throw new CatalogError([
      {
        origin: source,
        image: "",
        field: "catalog",
        reason: `cannot read it (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}); give a YAML file, a directory of *.yml, or the catalog as objects`,
      },
    ]);
  }
  const files = isDir
    ? readdirSync(source)
        .filter((f) => /\.ya?ml$/.test(f))
        .sort()
        .map((f) => join(source, f))
    : [source];
  if (files.length === 0)
    throw new CatalogError([{ origin: source, image: "", field: "images", reason: "the directory has no *.yml or *.yaml file" }]);
  return files.map((file) => ({ origin: file, doc: parseCatalogYaml(readFileSync(file, "utf8"), file) }));
}

/**
 * YAML → plain data. A version is kept as written (`version: 1.10` stays "1.10", not 1.1), the way
 * openstack-image-manager's str() of its value would read it in a quoted catalog.
 */
export function parseCatalogYaml(text: string, origin: string): unknown {
  const doc = parseDocument(text, { keepSourceTokens: true, prettyErrors: true });
  if (doc.errors.length > 0) {
    throw new CatalogError(doc.errors.map((e) => ({ origin, image: "", field: "yaml", reason: e.message.split("\n")[0] as string })));
  }
  // Under `version` and `meta` a number is text to Glance: `os_version: 22.10` must stay "22.10".
  const keyIs = (p: unknown, k: string) => isPair(p) && isScalar(p.key) && p.key.value === k;
  visit(doc, {
    Scalar(_k, node, path) {
      if (typeof node.value !== "number") return;
      const parent = path[path.length - 1];
      if (keyIs(parent, "version") || path.some((p) => keyIs(p, "meta"))) {
        node.value = node.srcToken && "source" in node.srcToken ? node.srcToken.source : String(node.value);
      }
    },
  });
  return doc.toJS();
}

type Check = (v: unknown) => string | undefined;
const str: Check = (v) => (typeof v === "string" ? undefined : `must be a string, not ${show(v)}`);
const nonEmpty: Check = (v) => str(v) ?? ((v as string).trim() === "" ? "must not be empty" : undefined);
const bool: Check = (v) => (typeof v === "boolean" ? undefined : `must be true or false, not ${show(v)}`);
const wholeNumber: Check = (v) => (Number.isInteger(v) && (v as number) >= 0 ? undefined : `must be a whole number ≥ 0, not ${show(v)}`);
const oneOf =
  (values: readonly string[]): Check =>
  (v) =>
    values.includes(v as string) ? undefined : `must be one of ${values.join(", ")}, not ${show(v)}`;
const url: Check = (v) => str(v) ?? (/^(https?|file):\/\/\S+$/i.test(v as string) ? undefined : `must be an http(s) URL, not ${show(v)}`);
const date: Check = (v) =>
  typeof v === "string" && /^\d{4}-\d{2}-\d{2}$/.test(v) ? undefined : `must be a date YYYY-MM-DD, not ${show(v)}`;
const checksum: Check = (v) =>
  str(v) ??
  (/^(sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128}|md5:[0-9a-f]{32}|sha1:[0-9a-f]{40})$/i.test(v as string) || v === "unverified"
    ? undefined
    : `must be "sha256:<64 hex>", "sha512:<128 hex>" or "md5:<32 hex>", not ${show(v)}`);

function show(v: unknown): string {
  return v === undefined ? "nothing" : JSON.stringify(v);
}

const IMAGE_FIELDS: Record<string, Check> = {
  name: nonEmpty,
  enable: bool,
  shortname: nonEmpty,
  format: oneOf(DISK_FORMATS),
  login: str,
  password: str,
  min_disk: wholeNumber,
  min_ram: wholeNumber,
  status: oneOf(["active", "deactivated"]),
  visibility: oneOf(VISIBILITIES),
  multi: bool,
  separator: str,
  keep: bool,
  meta: (v) => (v && typeof v === "object" && !Array.isArray(v) ? undefined : `must be a map of key: value, not ${show(v)}`),
  tags: (v) =>
    Array.isArray(v) && v.every((t) => typeof t === "string" && t !== "")
      ? undefined
      : `must be a list of non-empty strings, not ${show(v)}`,
  versions: (v) => (Array.isArray(v) ? undefined : `must be a list of { version, url, checksum, build_date }, not ${show(v)}`),
  latest_url: url,
  latest_checksum_url: url,
};

const VERSION_FIELDS: Record<string, Check> = {
  version: (v) =>
    typeof v === "string" && v.trim() !== "" ? undefined : `must be a non-empty string (quote it: version: "20240416"), not ${show(v)}`,
  url,
  mirror_url: url,
  checksum,
  build_date: date,
};

/** SCS-0102 image metadata whose values the standard fixes. */
const SCS_META: Record<string, Check> = {
  replace_frequency: oneOf(["yearly", "quarterly", "monthly", "weekly", "daily", "critical_bug", "never"]),
  uuid_validity: (v) =>
    typeof v === "string" && /^(none|notice|forever|last-[1-9]\d*|\d{4}-\d{2}-\d{2})$/.test(v)
      ? undefined
      : `must be none, notice, forever, last-<N> or a date YYYY-MM-DD (SCS-0102), not ${show(v)}`,
  provided_until: (v) =>
    typeof v === "string" && /^(none|notice|\d{4}-\d{2}-\d{2})$/.test(v)
      ? undefined
      : `must be none, notice or a date YYYY-MM-DD (SCS-0102), not ${show(v)}`,
  hotfix_hours: (v) =>
    Number.isInteger(Number(v)) && Number(v) >= 0 && String(v).trim() !== ""
      ? undefined
      : `must be a whole number of hours ≥ 0 (SCS-0102), not ${show(v)}`,
  image_build_date: (v) =>
    typeof v === "string" && /^\d{4}-\d{2}-\d{2}( \d{2}:\d{2}(:\d{2})?)?$/.test(v)
      ? undefined
      : `must be YYYY-MM-DD[ hh:mm[:ss]] (SCS-0102), not ${show(v)}`,
};

/** Validates every document; throws one CatalogError listing every problem found. */
export function validateCatalog(docs: { origin: string; doc: unknown }[]): CatalogImage[] {
  const problems: CatalogProblem[] = [];
  const images: CatalogImage[] = [];
  const seen = new Map<string, string>();
  for (const { origin, doc } of docs) {
    const fail = (image: string, field: string, reason: string) => problems.push({ origin, image, field, reason });
    if (!doc || typeof doc !== "object" || Array.isArray(doc)) {
      fail("", "images", "the file must be a map with an images: list");
      continue;
    }
    for (const k of Object.keys(doc)) if (k !== "images") fail("", k, 'unknown top-level field (only "images")');
    const list = (doc as { images?: unknown }).images;
    if (!Array.isArray(list)) {
      fail("", "images", `must be a list of images, not ${show(list)}`);
      continue;
    }
    list.forEach((raw, i) => {
      const img = (raw ?? {}) as Record<string, unknown>;
      const label = typeof img.name === "string" && img.name !== "" ? img.name : `images[${i}]`;
      const before = problems.length;
      if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
        fail(label, `images[${i}]`, "must be a map");
        return;
      }
      for (const [k, v] of Object.entries(img)) {
        const check = IMAGE_FIELDS[k];
        if (!check) fail(label, k, `unknown field (known: ${Object.keys(IMAGE_FIELDS).join(", ")})`);
        else if (v !== null) {
          const why = check(v);
          if (why) fail(label, k, why);
        }
      }
      if (img.name === undefined) fail(label, "name", "is required");
      if (img.latest_checksum_url !== undefined && img.latest_url === undefined)
        fail(label, "latest_checksum_url", "needs latest_url (the file it lists)");
      for (const [k, v] of Object.entries((img.meta ?? {}) as Record<string, unknown>)) {
        if (v === null || !["string", "number", "boolean"].includes(typeof v))
          fail(label, `meta.${k}`, `must be a string, number or boolean, not ${show(v)}`);
        else if (SCS_META[k]) {
          const why = SCS_META[k](v);
          if (why) fail(label, `meta.${k}`, why);
        }
      }
      const versions = Array.isArray(img.versions) ? (img.versions as unknown[]) : [];
      const versionNames = new Set<string>();
      versions.forEach((rv, j) => {
        const where = `versions[${j}]`;
        if (!rv || typeof rv !== "object" || Array.isArray(rv)) {
          fail(label, where, "must be a map { version, url, checksum, build_date }");
          return;
        }
        for (const [k, v] of Object.entries(rv as Record<string, unknown>)) {
          const check = VERSION_FIELDS[k];
          if (!check) fail(label, `${where}.${k}`, `unknown field (known: ${Object.keys(VERSION_FIELDS).join(", ")})`);
          else {
            const why = check(v);
            if (why) fail(label, `${where}.${k}`, why);
          }
        }
        const v = (rv as { version?: unknown }).version;
        if (v === undefined) fail(label, `${where}.version`, "is required");
        if ((rv as { url?: unknown }).url === undefined) fail(label, `${where}.url`, "is required");
        if (typeof v === "string") {
          if (versionNames.has(v)) fail(label, `${where}.version`, `"${v}" appears twice`);
          if (v === "latest" && img.latest_url !== undefined)
            fail(label, `${where}.version`, '"latest" is the version latest_url publishes; name this one by its build');
          versionNames.add(v);
        }
      });
      if (typeof img.name === "string") {
        const other = seen.get(img.name);
        if (other) fail(label, "name", `is also defined in ${other}`);
        seen.set(img.name, origin);
      }
      if (problems.length === before)
        images.push({ ...(img as unknown as CatalogImageEntry), versions: versions as CatalogImage["versions"], origin });
    });
  }
  if (problems.length > 0) throw new CatalogError(problems);
  return images;
}
