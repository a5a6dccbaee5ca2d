// A catalogue of VM images published to OpenStack Glance as community images (every project can
// boot them by ID; they stay out of default image lists), exported as a map of key → image ID the
// rest of a platform can consume (as azimuth's `infra_community_image_info` does).
//
//   pulumi config set cloud mycloud                     # a cloud in clouds.yaml (or set OS_CLOUD / OS_*)
//   pulumi config set diskFormat raw                    # what your cloud stores: raw for Ceph, else qcow2
//   pulumi up
//
// Credentials can also be given in stack config instead of clouds.yaml:
//   pulumi config set authUrl https://keystone.example.com:5000/v3
//   pulumi config set username demo; pulumi config set projectName demo
//   pulumi config set --secret password …
//
// The catalogue below is the default; `pulumi config set --path images …` (a map of key →
// {name, url, checksum | checksumUrl, format, compression, login, buildDate, properties}) replaces it.
// A source without a published checksum needs checksum: "unverified", said out loud.
//   pulumi config set maxVirtualSize 16GiB             # refuse images whose disk is larger (default 64GiB)
// Keys are meant to be immutable, like azimuth-ops': a new build gets a new key, and a changed
// url or checksum under the same key publishes the new image before deleting the old one.
import * as pulumi from "@pulumi/pulumi";
// In a project of your own: import { CommunityImage, type OpenStackCredentialsInput } from "imageyard";
import { CommunityImage, type OpenStackCredentialsInput } from "../../index";

interface ImageSpec {
  name: string;
  url: string;
  checksum?: string;
  checksumUrl?: string;
  format?: "qcow2" | "raw" | "vmdk";
  compression?: "auto" | "none" | "gz" | "gzip" | "bz2" | "bzip2" | "xz" | "zst" | "zstd";
  login?: string;
  buildDate?: string;
  minDisk?: number;
  minRam?: number;
  properties?: Record<string, string>;
  tags?: string[];
}

const DEFAULT_IMAGES: Record<string, ImageSpec> = {
  cirros_0_6_2: {
    name: "cirros-0.6.2-x86_64",
    url: "https://github.com/cirros-dev/cirros/releases/download/0.6.2/cirros-0.6.2-x86_64-disk.img",
    checksumUrl: "https://github.com/cirros-dev/cirros/releases/download/0.6.2/MD5SUMS",
    format: "qcow2",
    login: "cirros",
    buildDate: "2023-05-30",
    minRam: 64,
    properties: { os_distro: "cirros", os_version: "0.6.2", architecture: "x86_64", hw_disk_bus: "virtio" },
  },
  debian_12_20240717: {
    name: "debian-12-genericcloud-amd64-20240717-1811",
    url: "https://cloud.debian.org/images/cloud/bookworm/20240717-1811/debian-12-genericcloud-amd64-20240717-1811.qcow2",
    checksumUrl: "https://cloud.debian.org/images/cloud/bookworm/20240717-1811/SHA512SUMS",
    format: "qcow2",
    login: "debian",
    buildDate: "2024-07-17",
    minDisk: 3,
    minRam: 512,
    properties: { os_distro: "debian", os_version: "12", architecture: "x86_64", hw_disk_bus: "scsi", hw_scsi_model: "virtio-scsi" },
  },
};

const config = new pulumi.Config();
const images = config.getObject<Record<string, ImageSpec>>("images") ?? DEFAULT_IMAGES;
const diskFormat = (config.get("diskFormat") ?? "qcow2") as "qcow2" | "raw";

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
    applicationCredentialId: config.get("applicationCredentialId"),
    applicationCredentialSecret: config.getSecret("applicationCredentialSecret"),
  };
}

const published: Record<string, CommunityImage> = {};
for (const [key, spec] of Object.entries(images)) {
  published[key] = new CommunityImage(key, {
    name: spec.name,
    source: { url: spec.url, checksum: spec.checksum, checksumUrl: spec.checksumUrl, format: spec.format, compression: spec.compression },
    diskFormat,
    visibility: "community",
    minDisk: spec.minDisk,
    minRam: spec.minRam,
    login: spec.login,
    buildDate: spec.buildDate,
    properties: spec.properties,
    tags: spec.tags ?? ["imageyard"],
    importMethod: config.get("importMethod") as "upload" | "web-download" | undefined,
    cloud: config.get("cloud"),
    credentials: credentials(),
    scratchDir: config.get("scratchDir"),
    maxVirtualSize: config.get("maxVirtualSize"),
  });
}

/** key → Glance image ID, for other stacks (StackReference) or the server below. */
export const imageIds = pulumi.output(Object.fromEntries(Object.entries(published).map(([k, img]) => [k, img.id])));
export const imageNames = pulumi.output(Object.fromEntries(Object.entries(published).map(([k, img]) => [k, img.name])));

// A server booting one of the images with @pulumi/openstack (listed in this example's
// package.json). Shown, not run here: enable it with `pulumi config set bootImage debian_12_20240717`
// once @pulumi/openstack and its provider plugin are installed.
const bootImage = config.get("bootImage");
if (bootImage !== undefined) {
  const image = published[bootImage];
  if (!image) throw new Error(`bootImage "${bootImage}" is not one of the image keys: ${Object.keys(published).join(", ")}`);
  // Loaded only when asked for, so the catalogue works without the package installed.
  const openstack = require("@pulumi/openstack") as {
    compute: {
      Instance: new (
        name: string,
        args: Record<string, unknown>,
        opts?: pulumi.CustomResourceOptions,
      ) => pulumi.CustomResource & { accessIpV4: pulumi.Output<string> };
    };
  };
  const server = new openstack.compute.Instance("server", {
    name: `boot-${bootImage}`,
    imageId: image.id,
    flavorName: config.get("flavor") ?? "m1.small",
    networks: [{ name: config.get("network") ?? "private" }],
    keyPair: config.get("keyPair"),
  });
  exports.serverIp = server.accessIpV4;
}
