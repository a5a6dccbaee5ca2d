// ImageCatalog: openstack-image-manager's image catalog (YAML file, directory of *.yml, or the same
// data as objects) as CommunityImage resources, with its rotation of `multi: true` images.
//
// Rotation and ordering. Each version is one CommunityImage keyed `<image>-<version>`, so adding a
// version never touches another version's identity; only names and visibility change in place.
// "Name" must never be missing, so:
//   1. the newest version is uploaded under "Name (version)" (publishName) and takes "Name" only once
//      Glance reports it active (CommunityImage renames it at the end of its create);
//   2. every older version `dependsOn` the newest one. Pulumi runs a resource's step only after its
//      dependencies' steps finished, so the previous "Name" is renamed "Name (its version)" (and
//      demoted, hidden, …) only after the new image is active and named "Name". If the new upload
//      fails, the older ones are not touched and the previous "Name" stays;
//   3. versions rotated out (deleteAfter) or removed from the catalog are deleted by Pulumi after
//      all creates and updates, i.e. after the renames.
// For a few moments two active images are named "Name" (Glance names are not unique); never none.
import * as pulumi from "@pulumi/pulumi";
import { CommunityImage, type CommunityImageArgs, type OpenStackCredentialsInput } from "../provider/resources/communityImage";
import { readCatalog, validateCatalog, type CatalogDocument, type DiskFormat } from "./catalogFile";
import { planCatalog, type PlannedImage, type RotationOptions } from "./catalogPlan";
import { childName, ImageyardComponent, InputPropertyError } from "./component";

/** CommunityImage inputs a catalog passes to every image unchanged. */
export type CatalogImageArgs = Pick<
  CommunityImageArgs,
  | "scratchDir"
  | "timeouts"
  | "keepOnFailure"
  | "importMethod"
  | "importRetries"
  | "importTimeout"
  | "allowLocalFiles"
  | "maxVirtualSize"
  | "containerFormat"
  | "protected"
>;

export interface ImageCatalogArgs {
  /** A YAML file, a directory of *.yml / *.yaml files, or the same data as objects (openstack-image-manager's format). */
  catalog: string | CatalogDocument | CatalogDocument[];
  /** A regular expression on image names: only matching images are managed (like --filter). */
  filter?: string;
  /** The format Glance stores ("raw" for Ceph); default each image's `format`. */
  diskFormat?: DiskFormat;
  /** Older versions of `multi: true` images: keep (default 3), hideAfter, deactivateAfter, deleteAfter. */
  rotation?: RotationOptions;
  /** Publish versions without a checksum (no latest_checksum_url either) unverified instead of failing. */
  allowUnverified?: boolean;
  /** A cloud of clouds.yaml (default OS_CLOUD, else OS_* variables). */
  cloud?: pulumi.Input<string>;
  credentials?: pulumi.Input<OpenStackCredentialsInput>;
  /** Passed to every CommunityImage. */
  imageArgs?: CatalogImageArgs;
  /** Project IDs every `visibility: shared` image is shared with (removing one revokes it). */
  members?: CommunityImageArgs["members"];
  /** Per member project ID, credentials to accept the share as that project (secret). */
  memberCredentials?: CommunityImageArgs["memberCredentials"];
}

export class ImageCatalog extends ImageyardComponent {
  /** Image name → the current (newest) version's Glance ID. */
  readonly imageIds: pulumi.Output<Record<string, string>>;
  /** Image name → version → Glance ID. */
  readonly versionIds: pulumi.Output<Record<string, Record<string, string>>>;
  /** The expansion the children were made from (names, visibility, state per version). */
  readonly plan: PlannedImage[];
  /** The CommunityImage per child key (`<image>-<version>`). */
  readonly images: Record<string, CommunityImage> = {};

  constructor(name: string, args: ImageCatalogArgs, opts?: pulumi.ComponentResourceOptions) {
    super("ImageCatalog", name, opts);
    this.plan = planCatalog(validateCatalog(readCatalog(args.catalog)), {
      filter: compileFilter(args.filter),
      diskFormat: args.diskFormat,
      rotation: args.rotation,
      allowUnverified: args.allowUnverified,
    });
    const ids: Record<string, pulumi.Output<string>> = {};
    const versionIds: Record<string, Record<string, pulumi.Output<string>>> = {};
    for (const image of this.plan) {
      const current = image.versions[image.versions.length - 1];
      if (!current) continue;
      versionIds[image.name] = {};
      // The newest first: the others depend on it (see the comment at the top).
      const newest = this.version(name, image, current, args, []);
      for (const v of image.versions.slice(0, -1)) {
        const child = this.version(name, image, v, args, [newest]);
        versionIds[image.name]![v.version] = child.id;
      }
      versionIds[image.name]![current.version] = newest.id;
      ids[image.name] = newest.id;
    }
    this.imageIds = pulumi.output(ids);
    this.versionIds = pulumi.output(versionIds);
    this.registerOutputs({ imageIds: this.imageIds, versionIds: this.versionIds });
  }

  private version(
    name: string,
    image: PlannedImage,
    v: PlannedImage["versions"][number],
    args: ImageCatalogArgs,
    dependsOn: CommunityImage[],
  ): CommunityImage {
    const child = new CommunityImage(
      childName(name, v.key),
      {
        ...args.imageArgs,
        name: v.name,
        ...(v.publishName ? { publishName: v.publishName } : {}),
        source: v.source,
        diskFormat: v.diskFormat,
        visibility: v.visibility,
        hidden: v.hidden,
        active: v.active,
        properties: v.properties,
        tags: image.tags,
        minDisk: image.minDisk,
        minRam: image.minRam,
        login: image.login,
        buildDate: v.buildDate,
        cloud: args.cloud,
        credentials: args.credentials,
        ...(v.visibility === "shared" ? { members: args.members, memberCredentials: args.memberCredentials } : {}),
      },
      this.childOptions({ dependsOn }),
    );
    this.images[v.key] = child;
    return child;
  }
}

function compileFilter(filter: string | undefined): RegExp | undefined {
  if (filter === undefined) return undefined;
  try {
    return new RegExp(filter);
  } catch (e) {
    throw new InputPropertyError("ImageCatalog", "filter", `not a regular expression: ${(e as Error).message}`);
  }
}
