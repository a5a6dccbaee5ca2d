// What a catalog means in Glance, as plain data (no Pulumi): per image, which versions exist, the
// name each carries, its visibility, hidden/deactivated state, its source and metadata — the
// rotation of openstack-image-manager (multi: true) or fixed per-version names (multi: false).
import { CatalogError, type CatalogImage, type CatalogProblem, type DiskFormat, type Visibility } from "./catalogFile";

/** What happens to older versions of a `multi: true` image (openstack-image-manager's keep/hide/deactivate/delete). */
export interface RotationOptions {
  /** The newest `keep` versions keep the catalog's visibility (default 3). Older public ones become community. */
  keep?: number;
  /** Versions `hideAfter` places past `keep` are hidden (os_hidden) as well. */
  hideAfter?: number;
  /** … deactivated (no new servers, no downloads). */
  deactivateAfter?: number;
  /** … deleted from Glance (opt-in: a server may still use them, openstack-image-manager #503). */
  deleteAfter?: number;
}

export interface PlanOptions {
  /** Only images whose name matches are managed (openstack-image-manager's --filter). */
  filter?: RegExp;
  /** The format Glance stores (raw for Ceph); default each image's `format`. */
  diskFormat?: DiskFormat;
  rotation?: RotationOptions;
  /** Publish versions that have no checksum (and no latest_checksum_url) without verification. */
  allowUnverified?: boolean;
}

export interface PlannedVersion {
  /** Stable child key: `<shortname or slug of name>-<version>`. */
  key: string;
  version: string;
  /** The Glance name now. */
  name: string;
  /** The name while uploading ("Name (version)"), set only when it differs from `name`. */
  publishName?: string;
  visibility: Visibility;
  hidden: boolean;
  active: boolean;
  /** url is upstream's (image_source); mirrorUrl, when the catalog has mirror_url, is downloaded first. */
  source: { url: string; mirrorUrl?: string; checksum?: string; checksumUrl?: string; format?: DiskFormat };
  diskFormat: DiskFormat;
  properties: Record<string, string>;
  buildDate?: string;
}

export interface PlannedImage {
  name: string;
  key: string;
  multi: boolean;
  /** Oldest first; the last is the current one. Deleted (rotated-out) versions are absent. */
  versions: PlannedVersion[];
  /** Versions in the catalog that rotation deletes. */
  deleted: string[];
  tags: string[];
  minDisk?: number;
  minRam?: number;
  login?: string;
}

const LATEST = "latest";

/** Natural order, as openstack-image-manager's natsorted: "1.9" < "1.10"; "latest" is newest. */
export function compareVersions(a: string, b: string): number {
  if (a === b) return 0;
  if (a === LATEST) return 1;
  if (b === LATEST) return -1;
  const split = (s: string) => s.match(/\d+|\D+/g) ?? [];
  const x = split(a);
  const y = split(b);
  for (let i = 0; i < Math.min(x.length, y.length); i++) {
    const p = x[i] as string;
    const q = y[i] as string;
    const bothNumbers = /^\d/.test(p) && /^\d/.test(q);
    const c = bothNumbers ? Number(BigInt(p) - BigInt(q)) || p.length - q.length : p < q ? -1 : p > q ? 1 : 0;
    if (c !== 0) return Math.sign(c);
  }
  return x.length - y.length;
}

/** A child key from an image name: lowercase, runs of other characters as "-". */
export function slug(name: string): string {
  return (
    name
      .toLowerCase()
      .replace(/[^a-z0-9.]+/g, "-")
      .replace(/^-+|-+$/g, "") || "image"
  );
}

function wholeOption(v: number | undefined, what: string, dflt?: number): number | undefined {
  if (v === undefined) return dflt;
  if (!Number.isInteger(v) || v < 0)
    throw new CatalogError([
      { origin: "options", image: "", field: `rotation.${what}`, reason: `must be a whole number ≥ 0, not ${JSON.stringify(v)}` },
    ]);
  return v;
}

export function planCatalog(images: CatalogImage[], opts: PlanOptions = {}): PlannedImage[] {
  const r = opts.rotation ?? {};
  const keep = wholeOption(r.keep, "keep", 3) as number;
  const hideAfter = wholeOption(r.hideAfter, "hideAfter");
  const deactivateAfter = wholeOption(r.deactivateAfter, "deactivateAfter");
  const deleteAfter = wholeOption(r.deleteAfter, "deleteAfter");
  const problems: CatalogProblem[] = [];
  const keys = new Map<string, string>();
  const out: PlannedImage[] = [];
  for (const img of images) {
    if (img.enable === false) continue;
    if (opts.filter && !opts.filter.test(img.name)) continue;
    const key = img.shortname ?? slug(img.name);
    const clash = keys.get(key);
    if (clash)
      problems.push({
        origin: img.origin,
        image: img.name,
        field: img.shortname ? "shortname" : "name",
        reason: `gives the key "${key}", as "${clash}" does; set a distinct shortname`,
      });
    keys.set(key, img.name);
    const multi = img.multi ?? true;
    const entries = [
      ...img.versions.map((v) => ({ ...v, latest: false })),
      ...(img.latest_url ? [{ version: LATEST, url: img.latest_url, latest: true } as const] : []),
    ];
    entries.sort((a, b) => compareVersions(a.version, b.version));
    const planned: PlannedImage = {
      name: img.name,
      key,
      multi,
      versions: [],
      deleted: [],
      tags: img.tags ?? [],
      minDisk: img.min_disk ?? undefined,
      minRam: img.min_ram ?? undefined,
      login: img.login ?? undefined,
    };
    entries.forEach((v, i) => {
      const age = entries.length - 1 - i;
      const past = age - keep;
      const retire = multi && img.keep !== true;
      if (retire && deleteAfter !== undefined && past >= deleteAfter) {
        planned.deleted.push(v.version);
        return;
      }
      const checksum = "checksum" in v ? v.checksum : undefined;
      const checksumUrl = v.latest ? img.latest_checksum_url : undefined;
      if (checksum === undefined && checksumUrl === undefined && !opts.allowUnverified) {
        const field = v.latest ? "latest_checksum_url" : `versions[${img.versions.findIndex((x) => x.version === v.version)}].checksum`;
        problems.push({
          origin: img.origin,
          image: img.name,
          field,
          reason: "is required: every download is verified (or set allowUnverified on the ImageCatalog to publish without)",
        });
        return;
      }
      const name = multi ? (age === 0 ? img.name : `${img.name} (${v.version})`) : `${img.name}${img.separator ?? " "}${v.version}`;
      const catalogVisibility = img.visibility ?? "private";
      planned.versions.push({
        key: `${key}-${v.version}`,
        version: v.version,
        name,
        ...(multi && age === 0 ? { publishName: `${img.name} (${v.version})` } : {}),
        // Making an older private or shared image community would publish it: only public ones step down.
        visibility: retire && past >= 0 && catalogVisibility === "public" ? "community" : catalogVisibility,
        hidden: retire && hideAfter !== undefined && past >= hideAfter,
        active: img.status !== "deactivated" && !(retire && deactivateAfter !== undefined && past >= deactivateAfter),
        source: {
          // The mirror is downloaded first, url when it fails; the same checksum holds either way.
          url: v.url,
          ...("mirror_url" in v && v.mirror_url ? { mirrorUrl: v.mirror_url } : {}),
          ...(checksum !== undefined ? { checksum } : checksumUrl !== undefined ? { checksumUrl } : { checksum: "unverified" }),
          ...(img.format ? { format: img.format } : {}),
        },
        diskFormat: opts.diskFormat ?? img.format ?? "qcow2",
        properties: propertiesOf(img, v.version, v.url),
        ...("build_date" in v && v.build_date ? { buildDate: v.build_date } : {}),
      });
    });
    out.push(planned);
  }
  if (problems.length > 0) throw new CatalogError(problems);
  return out;
}

/** meta (as strings) plus the SCS and openstack-image-manager bookkeeping properties. */
function propertiesOf(img: CatalogImage, version: string, url: string): Record<string, string> {
  const meta = Object.fromEntries(Object.entries(img.meta ?? {}).map(([k, v]) => [k, String(v)]));
  return { image_description: img.name, ...meta, image_source: url, image_name: img.name, internal_version: version };
}
