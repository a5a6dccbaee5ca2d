// Atmosphere's `image_manifest` + `mirror_images` as one Pulumi stack:
//
//   pulumi config set manifestFile ./atmosphere_images.yml        # Atmosphere's shape, or a flat map
//   pulumi config set registry registry.example.com:5000           # optionally with a /prefix
//   pulumi config set targetUsername robot
//   pulumi config set --secret targetPassword …
//   pulumi config set --path 'overrides.keystone_api' quay.io/me/keystone:patched   # one key, merged
//   pulumi config set --path 'only[0]' keystone_api               # optional: mirror a subset
//   pulumi config set outputFile /tmp/atmosphere_images.yml        # optional: the manifest for Ansible
//
// `pulumi up` copies every image (or `only` those) and outputs key → host/repo@sha256:… and the
// manifest as YAML in the same shape, pinned by digest, ready to include in the inventory.
import * as pulumi from "@pulumi/pulumi";
// In a project of your own: import { ImageManifest } from "imageyard";
import { ImageManifest } from "../../index";

const config = new pulumi.Config();
const username = config.get("targetUsername");

const manifest = new ImageManifest("atmosphere", {
  manifestFile: config.require("manifestFile"),
  overrides: config.getObject<Record<string, string>>("overrides"),
  registry: config.require("registry"),
  mirror: config.getBoolean("mirror") ?? true,
  only: config.getObject<string[]>("only"),
  outputFile: config.get("outputFile"),
  targetAuth: username === undefined ? undefined : { username, password: config.requireSecret("targetPassword") },
});

export const images = manifest.images;
export const pinned = manifest.pinned;
export const yaml = manifest.yaml;
