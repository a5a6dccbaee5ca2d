// CommunityImages: azimuth-ops' community images as a component. A map key → image spec (defaults
// merged with extras, like infra_community_images + infra_community_images_extra), each published
// as a community CommunityImage in the target disk format (default qcow2), exported as imageIds
// (key → Glance ID, azimuth's infra_community_image_info).
//
// Keys are immutable, as azimuth documents: a key always names the same image. Each child carries
// `immutableSource`, so CommunityImage's check (which alone sees the state's inputs next to the
// new ones, during preview) refuses a changed source under an existing key and says how to add a
// new key; `allowSourceChange: true` turns that into an ordinary replacement (new image first).
import * as pulumi from "@pulumi/pulumi";
import { CommunityImage, type CommunityImageArgs, type OpenStackCredentialsInput } from "../provider/resources/communityImage";
import { DISK_FORMATS, VISIBILITIES, type DiskFormat, type Visibility } from "./catalogFile";
import type { CatalogImageArgs } from "./imageCatalog";
import { childName, ImageyardComponent, InputPropertyError } from "./component";

export interface CommunityImageSpec {
  /** Glance name. */
  name: string;
  sourceUrl: string;
  /** Downloaded first; sourceUrl when it fails (same checksum). Changing it does not replace the image. */
  sourceMirrorUrl?: string;
  /** Format of the file at sourceUrl (after decompression); converted when it differs from diskFormat. */
  sourceDiskFormat?: DiskFormat;
  /** Default "bare". */
  containerFormat?: string;
  /** Default: the component's targetDiskFormat. */
  diskFormat?: DiskFormat;
  /** `sha256:…` / `sha512:…` / `md5:…`, or "unverified". One of checksum and checksumUrl is required. */
  checksum?: string;
  /** A SUMS file listing sourceUrl's file. */
  checksumUrl?: string;
  minDisk?: number;
  minRam?: number;
  properties?: Record<string, string>;
  tags?: string[];
  login?: string;
  buildDate?: string;
}

/** azimuth-ops' own spelling, accepted as well so its YAML can be pasted. */
const SNAKE: Record<string, keyof CommunityImageSpec> = {
  source_url: "sourceUrl",
  source_mirror_url: "sourceMirrorUrl",
  source_disk_format: "sourceDiskFormat",
  container_format: "containerFormat",
  disk_format: "diskFormat",
  checksum_url: "checksumUrl",
  min_disk: "minDisk",
  min_ram: "minRam",
  build_date: "buildDate",
};
const FIELDS: readonly (keyof CommunityImageSpec)[] = [
  "name",
  "sourceUrl",
  "sourceMirrorUrl",
  "sourceDiskFormat",
  "containerFormat",
  "diskFormat",
  "checksum",
  "checksumUrl",
  "minDisk",
  "minRam",
  "properties",
  "tags",
  "login",
  "buildDate",
];

export interface CommunityImagesArgs {
  /** The default set (azimuth's community_images environment). */
  images?: Record<string, CommunityImageSpec>;
  /** Merged over `images` (infra_community_images_extra); a key here replaces the default's spec. */
  extra?: Record<string, CommunityImageSpec>;
  /** The format the cloud stores, for specs without diskFormat (infra_community_images_target_disk_format). Default qcow2. */
  targetDiskFormat?: DiskFormat;
  /** Default "community". */
  visibility?: Visibility;
  /** Let a changed source under an existing key replace its image instead of failing the preview. */
  allowSourceChange?: boolean;
  cloud?: pulumi.Input<string>;
  credentials?: pulumi.Input<OpenStackCredentialsInput>;
  /** Passed to every CommunityImage. */
  imageArgs?: CatalogImageArgs;
  /** With visibility "shared": the project IDs to share with, and credentials to accept as them. */
  members?: CommunityImageArgs["members"];
  memberCredentials?: CommunityImageArgs["memberCredentials"];
}

export class CommunityImages extends ImageyardComponent {
  /** key → Glance image ID (azimuth's infra_community_image_info). */
  readonly imageIds: pulumi.Output<Record<string, string>>;
  /** The merged, normalised specs the children were made from. */
  readonly specs: Record<string, CommunityImageSpec>;
  readonly images: Record<string, CommunityImage> = {};

  constructor(name: string, args: CommunityImagesArgs, opts?: pulumi.ComponentResourceOptions) {
    super("CommunityImages", name, opts);
    this.specs = mergeSpecs(args);
    const target = args.targetDiskFormat ?? "qcow2";
    if (!DISK_FORMATS.includes(target))
      throw new InputPropertyError(
        "CommunityImages",
        "targetDiskFormat",
        `must be one of ${DISK_FORMATS.join(", ")}, not ${JSON.stringify(target)}`,
      );
    const visibility = args.visibility ?? "community";
    if (!VISIBILITIES.includes(visibility))
      throw new InputPropertyError("CommunityImages", "visibility", `must be one of ${VISIBILITIES.join(", ")}`);
    const ids: Record<string, pulumi.Output<string>> = {};
    for (const [key, s] of Object.entries(this.specs)) {
      const image = new CommunityImage(
        childName(name, key),
        {
          ...args.imageArgs,
          name: s.name,
          source: {
            url: s.sourceUrl,
            ...(s.sourceMirrorUrl ? { mirrorUrl: s.sourceMirrorUrl } : {}),
            checksum: s.checksum,
            checksumUrl: s.checksumUrl,
            format: s.sourceDiskFormat,
          },
          diskFormat: s.diskFormat ?? target,
          containerFormat: s.containerFormat ?? args.imageArgs?.containerFormat,
          visibility,
          minDisk: s.minDisk,
          minRam: s.minRam,
          properties: s.properties,
          tags: s.tags,
          login: s.login,
          buildDate: s.buildDate,
          cloud: args.cloud,
          credentials: args.credentials,
          ...(visibility === "shared" ? { members: args.members, memberCredentials: args.memberCredentials } : {}),
          ...(args.allowSourceChange
            ? {}
            : {
                immutableSource: {
                  key,
                  hint: `Add the new image under a new key (e.g. "${key}_${today()}") and point its users at that key's ID, then remove "${key}" once nothing uses it; or set allowSourceChange: true on CommunityImages "${name}" to replace the image under "${key}" (new image first, then the old one is deleted).`,
                },
              }),
        },
        this.childOptions(),
      );
      this.images[key] = image;
      ids[key] = image.id;
    }
    this.imageIds = pulumi.output(ids);
    this.registerOutputs({ imageIds: this.imageIds });
  }
}

function today(): string {
  return new Date().toISOString().slice(0, 10).replace(/-/g, "");
}

/** defaults ⊕ extra, each spec checked and normalised (snake_case accepted), with errors naming the path. */
export function mergeSpecs(args: Pick<CommunityImagesArgs, "images" | "extra">): Record<string, CommunityImageSpec> {
  const out: Record<string, CommunityImageSpec> = {};
  for (const where of ["images", "extra"] as const) {
    const map = args[where];
    if (map === undefined) continue;
    if (typeof map !== "object" || map === null || Array.isArray(map))
      throw new InputPropertyError("CommunityImages", where, "must be a map of key → image spec");
    for (const [key, raw] of Object.entries(map)) out[key] = normaliseSpec(`${where}.${key}`, key, raw);
  }
  if (Object.keys(out).length === 0) throw new InputPropertyError("CommunityImages", "images", "no images: give images and/or extra");
  return out;
}

function normaliseSpec(path: string, key: string, raw: unknown): CommunityImageSpec {
  const fail = (field: string, reason: string) => {
    throw new InputPropertyError("CommunityImages", field ? `${path}.${field}` : path, reason);
  };
  if (!/^[A-Za-z0-9_.-]+$/.test(key))
    fail("", `key "${key}" must be letters, digits, "_", "-" or "." (it names a child resource and an output)`);
  if (!raw || typeof raw !== "object" || Array.isArray(raw)) fail("", "must be a map { name, sourceUrl, checksum | checksumUrl, … }");
  const spec: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(raw as Record<string, unknown>)) {
    const field = (SNAKE[k] ?? k) as keyof CommunityImageSpec;
    if (!FIELDS.includes(field)) fail(k, `unknown field (known: ${FIELDS.join(", ")})`);
    if (v !== undefined && v !== null) spec[field] = v;
  }
  const s = spec as unknown as CommunityImageSpec;
  for (const f of ["name", "sourceUrl", "sourceMirrorUrl", "containerFormat", "checksum", "checksumUrl", "login", "buildDate"] as const) {
    if (s[f] !== undefined && (typeof s[f] !== "string" || s[f] === "")) fail(f, `must be a non-empty string, not ${JSON.stringify(s[f])}`);
  }
  if (s.name === undefined) fail("name", "is required");
  if (s.sourceUrl === undefined) fail("sourceUrl", "is required (source_url in azimuth's spelling)");
  for (const f of ["sourceDiskFormat", "diskFormat"] as const) {
    if (s[f] !== undefined && !DISK_FORMATS.includes(s[f]))
      fail(f, `must be one of ${DISK_FORMATS.join(", ")}, not ${JSON.stringify(s[f])}`);
  }
  for (const f of ["minDisk", "minRam"] as const) {
    if (s[f] !== undefined && !(Number.isInteger(s[f]) && (s[f] as number) >= 0))
      fail(f, `must be a whole number ≥ 0, not ${JSON.stringify(s[f])}`);
  }
  if (s.tags !== undefined && !(Array.isArray(s.tags) && s.tags.every((t) => typeof t === "string")))
    fail("tags", "must be a list of strings");
  if (s.properties !== undefined && (typeof s.properties !== "object" || Array.isArray(s.properties)))
    fail("properties", "must be a map of strings");
  if (s.checksum === undefined && s.checksumUrl === undefined)
    fail("checksum", 'one of checksum ("sha256:…") and checksumUrl (a SUMS file) is required; "unverified" publishes without verification');
  return s;
}
