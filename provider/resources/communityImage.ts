// CommunityImage: a VM disk image downloaded, verified, converted and published to OpenStack Glance
// (community visibility by default). Its logic is ./communityImage.lifecycle (Pulumi-free),
// reached through the shared EngineProvider.
import * as pulumi from "@pulumi/pulumi";
import type * as lifecycle from "./communityImage.lifecycle";
import type { TimeoutsInput } from "./args";
import { EngineProvider } from "./forward";
import { urnInput } from "./urn";

export interface CommunityImageSourceInput {
  /** http(s):// URL of the image, possibly compressed (gz, bz2, xz, zst); file:// only with allowLocalFiles. */
  url: pulumi.Input<string>;
  /**
   * Downloaded first (openstack-image-manager's mirror_url); when it fails (unreachable, an HTTP
   * error, a checksum mismatch) the download falls back to url, and the log says which was used.
   * Checked against the same checksum. Changing it does not replace the image.
   */
  mirrorUrl?: pulumi.Input<string>;
  /**
   * `sha256:…`, `sha512:…` or `md5:…` of the file at url. One of checksum and checksumUrl is
   * required; `"unverified"` publishes without verification, on purpose and visibly.
   */
  checksum?: pulumi.Input<string>;
  /** A SUMS file that lists the file at url (SHA256SUMS, SHA512SUMS, Fedora CHECKSUM, BSD style). */
  checksumUrl?: pulumi.Input<string>;
  /** What the (decompressed) image is; checked against its magic bytes. */
  format?: pulumi.Input<"raw" | "qcow2" | "vmdk" | "vdi" | "vhd" | "vhdx" | "iso">;
  /** Default "auto" (by magic bytes). The file suffix or the program's name: gz/gzip, bz2/bzip2, xz, zst/zstd. */
  compression?: pulumi.Input<"auto" | "none" | "gz" | "gzip" | "bz2" | "bzip2" | "xz" | "zst" | "zstd">;
}

/** OpenStack credentials; they override the cloud's values and the OS_* variables. Kept secret. */
export interface OpenStackCredentialsInput {
  authUrl?: pulumi.Input<string>;
  username?: pulumi.Input<string>;
  userId?: pulumi.Input<string>;
  password?: pulumi.Input<string>;
  projectName?: pulumi.Input<string>;
  projectId?: pulumi.Input<string>;
  userDomainName?: pulumi.Input<string>;
  projectDomainName?: pulumi.Input<string>;
  domainName?: pulumi.Input<string>;
  region?: pulumi.Input<string>;
  interface?: pulumi.Input<"public" | "internal" | "admin">;
  applicationCredentialId?: pulumi.Input<string>;
  applicationCredentialName?: pulumi.Input<string>;
  applicationCredentialSecret?: pulumi.Input<string>;
  /** PEM CA bundle file of a private cloud. */
  cacert?: pulumi.Input<string>;
  insecure?: pulumi.Input<boolean>;
  /** Glance URL to use instead of the catalog's. */
  imageEndpoint?: pulumi.Input<string>;
}

export interface CommunityImageArgs {
  /** Image name in Glance (names need not be unique; the ID is the identity). */
  name: pulumi.Input<string>;
  source: pulumi.Input<CommunityImageSourceInput>;
  /** The format Glance stores: "raw" (Ceph), "qcow2", … Converted locally when the source differs. */
  diskFormat: pulumi.Input<"raw" | "qcow2" | "vmdk" | "vdi" | "vhd" | "vhdx" | "iso">;
  /** Default "bare". */
  containerFormat?: pulumi.Input<string>;
  /** Default "community": every project can boot it by ID; it is not listed by default. */
  visibility?: pulumi.Input<"community" | "public" | "shared" | "private">;
  /** GiB. */
  minDisk?: pulumi.Input<number>;
  /** MiB. */
  minRam?: pulumi.Input<number>;
  /** Custom properties (os_distro, hw_disk_bus, …). */
  properties?: pulumi.Input<Record<string, pulumi.Input<string>>>;
  tags?: pulumi.Input<pulumi.Input<string>[]>;
  protected?: pulumi.Input<boolean>;
  /** os_hidden: left out of image lists. */
  hidden?: pulumi.Input<boolean>;
  /** false deactivates the image (it can no longer be booted or downloaded). Default true. */
  active?: pulumi.Input<boolean>;
  /**
   * upload (default: download, verify and convert here, then PUT), glance-direct (the same, then
   * stage + import) or web-download (Glance fetches the URL). A method the cloud's
   * enabled_import_methods lacks falls back (web-download → glance-direct → upload) and says so.
   */
  importMethod?: pulumi.Input<"upload" | "glance-direct" | "web-download">;
  /** How often a stuck import (not active by importTimeout) is deleted and started again before failing. 0–10, default 2. */
  importRetries?: pulumi.Input<number>;
  /** When a glance-direct or web-download import that is not active yet is stuck: seconds or "30m" (default 30 min). */
  importTimeout?: pulumi.Input<number | string>;
  /** SCS metadata: image_original_user. */
  login?: pulumi.Input<string>;
  /** SCS metadata: image_build_date (YYYY-MM-DD). */
  buildDate?: pulumi.Input<string>;
  /** SCS metadata: image_description (default: the name). */
  description?: pulumi.Input<string>;
  /** Name of a cloud in clouds.yaml (default OS_CLOUD, else the OS_* variables). */
  cloud?: pulumi.Input<string>;
  credentials?: pulumi.Input<OpenStackCredentialsInput>;
  /** Where downloads and conversions are staged (default the system temp dir). */
  scratchDir?: pulumi.Input<string>;
  /** Deadlines per operation, seconds or "20m"/"1h30m" (Pulumi's customTimeouts do not reach dynamic providers). */
  timeouts?: pulumi.Input<TimeoutsInput>;
  /** Keep a failed image in Glance (recorded in state) instead of deleting it. */
  keepOnFailure?: pulumi.Input<boolean>;
  /** Let a file:// source.url read files of the host running the provider. Default false. */
  allowLocalFiles?: pulumi.Input<boolean>;
  /**
   * Largest guest (virtual) size accepted, in bytes or as "64GiB"/"500MiB". Default 64 GiB. Checked
   * in preview from the source's header when it can be read, and again before and during the
   * download: a small file declaring a huge disk never starts an upload.
   */
  maxVirtualSize?: pulumi.Input<number | string>;
  /**
   * For components that promise a key always names the same image (CommunityImages): a changed
   * source (URL, checksum, or the build a checksumUrl lists) fails the preview with this key and hint.
   */
  immutableSource?: pulumi.Input<{ key: pulumi.Input<string>; hint?: pulumi.Input<string> }>;
  /** The image's name while its data is uploaded; it takes `name` once active (ImageCatalog's rotation). */
  publishName?: pulumi.Input<string>;
  /** Project IDs to share the image with (visibility "shared"); removing one revokes it. */
  members?: pulumi.Input<pulumi.Input<string>[]>;
  /** Per member project ID, its credentials: the membership is accepted as that project (kept secret). */
  memberCredentials?: pulumi.Input<Record<string, pulumi.Input<OpenStackCredentialsInput>>>;
}

// One stateless instance: the SDK caches each provider's serialization per instance.
const provider = new EngineProvider<typeof lifecycle>("imageyard/provider/resources/communityImage.lifecycle");

export class CommunityImage extends pulumi.dynamic.Resource {
  /** The Glance image UUID (also the resource ID). */
  declare readonly imageId: pulumi.Output<string>;
  declare readonly name: pulumi.Output<string>;
  /** Glance status: active, or deactivated when active is false. */
  declare readonly status: pulumi.Output<string>;
  /** md5 of the stored data. */
  declare readonly checksum: pulumi.Output<string>;
  declare readonly osHashAlgo: pulumi.Output<string>;
  declare readonly osHashValue: pulumi.Output<string>;
  declare readonly size: pulumi.Output<number>;
  declare readonly virtualSize: pulumi.Output<number>;
  declare readonly diskFormat: pulumi.Output<string>;
  declare readonly containerFormat: pulumi.Output<string>;
  declare readonly visibility: pulumi.Output<string>;
  /** Project ID that owns the image. */
  declare readonly owner: pulumi.Output<string>;
  /** All custom properties as Glance has them (SCS metadata included). */
  declare readonly properties: pulumi.Output<Record<string, string>>;
  declare readonly tags: pulumi.Output<string[]>;
  declare readonly minDisk: pulumi.Output<number>;
  declare readonly minRam: pulumi.Output<number>;
  declare readonly protected: pulumi.Output<boolean>;
  declare readonly hidden: pulumi.Output<boolean>;
  declare readonly active: pulumi.Output<boolean>;
  declare readonly createdAt: pulumi.Output<string>;
  declare readonly updatedAt: pulumi.Output<string>;
  /** Members as Glance has them: "projectId" when accepted, "projectId:pending" otherwise. */
  declare readonly observedMembers: pulumi.Output<string[] | undefined>;

  constructor(name: string, args: CommunityImageArgs, opts?: pulumi.CustomResourceOptions) {
    super(
      provider,
      name,
      {
        ...urnInput("CommunityImage", name, opts),
        ...args,
        credentials: args.credentials === undefined ? undefined : pulumi.secret(args.credentials),
        memberCredentials: args.memberCredentials === undefined ? undefined : pulumi.secret(args.memberCredentials),
        observedMembers: undefined,
        imageId: undefined,
        status: undefined,
        checksum: undefined,
        osHashAlgo: undefined,
        osHashValue: undefined,
        size: undefined,
        virtualSize: undefined,
        owner: undefined,
        managedProperties: undefined,
        createdAt: undefined,
        updatedAt: undefined,
      },
      pulumi.mergeOptions(opts, { additionalSecretOutputs: ["credentials", "memberCredentials"] }),
      "imageyard",
      "CommunityImage",
    );
  }
}
