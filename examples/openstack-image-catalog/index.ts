// An openstack-image-manager catalog (images/*.yml, its own YAML format) kept in Glance by
// imageyard's ImageCatalog: every version an image, `multi: true` images rotated ("Name" is the
// newest, older ones "Name (version)", the oldest demoted), SCS metadata set; plus, when
// `communityImages` is configured, an azimuth-ops style key → image map (CommunityImages).
//
//   pulumi config set cloud mycloud          # a cloud in clouds.yaml (or OS_CLOUD / OS_*)
//   pulumi config set diskFormat raw         # optional: what Glance stores (raw for Ceph)
//   pulumi preview                           # the dry run: every upload, rename, visibility change
//   pulumi up
import * as pulumi from "@pulumi/pulumi";
// In a project of your own: import { CommunityImages, ImageCatalog, type OpenStackCredentialsInput, type RotationOptions } from "imageyard";
import { CommunityImages, ImageCatalog, type CommunityImageSpec, type OpenStackCredentialsInput, type RotationOptions } from "../../index";

const config = new pulumi.Config();

function credentials(): pulumi.Input<OpenStackCredentialsInput> | undefined {
  const authUrl = config.get("authUrl");
  if (authUrl === undefined) return undefined;
  return {
    authUrl,
    username: config.get("username"),
    password: config.getSecret("password"),
    projectName: config.get("projectName"),
    userDomainName: config.get("userDomainName") ?? "Default",
    projectDomainName: config.get("projectDomainName") ?? "Default",
    region: config.get("region"),
  };
}

const common = {
  cloud: config.get("cloud"),
  credentials: credentials(),
  imageArgs: {
    scratchDir: config.get("scratchDir"),
    // upload (default), glance-direct or web-download; one the cloud does not enable falls back, and says so.
    importMethod: config.get("importMethod") as "upload" | "glance-direct" | "web-download" | undefined,
    importRetries: config.getNumber("importRetries"),
    importTimeout: config.get("importTimeout"),
  },
};

// A file or a directory of *.yml, relative to the project (Pulumi runs the program there).
const catalog = new ImageCatalog("catalog", {
  catalog: config.get("catalog") ?? "images",
  filter: config.get("filter"),
  diskFormat: config.get("diskFormat") as "raw" | "qcow2" | undefined,
  rotation: config.getObject<RotationOptions>("rotation"),
  allowUnverified: config.getBoolean("allowUnverified"),
  ...common,
});

/** Image name → ID of its current version; name → version → ID. */
export const imageIds = catalog.imageIds;
export const versionIds = catalog.versionIds;

// azimuth-ops' map: key → {name, sourceUrl, sourceDiskFormat, checksum | checksumUrl, …}; keys are immutable.
const communitySpecs = config.getObject<Record<string, CommunityImageSpec>>("communityImages");
export const communityImageIds = communitySpecs
  ? new CommunityImages("community", {
      images: communitySpecs,
      extra: config.getObject<Record<string, CommunityImageSpec>>("communityImagesExtra"),
      targetDiskFormat: config.get("diskFormat") as "raw" | "qcow2" | undefined,
      allowSourceChange: config.getBoolean("allowSourceChange"),
      ...common,
    }).imageIds
  : undefined;
