// xcluster's `images lreg_preload` and `images mkimage` as one Pulumi stack:
//
//   pulumi config set registry localhost:5000                       # the local registry
//   pulumi config set registryUsername robot                        # optional, with --secret registryPassword
//   pulumi config set --path 'manifests[0]' ./ovl/metallb/default    # YAML files or directories
//   pulumi config set ovlTar ./ovl/metallb/image/ovl.tar             # optional: FROM scratch + ADD ovl.tar
//   pulumi config set ovlImage library/metallb:latest
//
// `pulumi up` copies every image the YAML names that the local registry lacks (one HEAD per side
// for the rest) and builds the tar image reproducibly, without a Docker daemon or root.
import * as pulumi from "@pulumi/pulumi";
// In a project of your own: import { ImageFromTar, RegistryPreload } from "imageyard";
import { ImageFromTar, RegistryPreload } from "../../index";

const config = new pulumi.Config();
const registry = config.require("registry");
const username = config.get("registryUsername");
const targetAuth = username === undefined ? undefined : { username, password: config.requireSecret("registryPassword") };

const preload = new RegistryPreload("lreg", {
  files: config.requireObject<string[]>("manifests"),
  registry,
  platforms: config.getObject<string[]>("platforms"),
  targetAuth,
});

export const images = preload.images;
export const alreadyLocal = preload.alreadyLocal;
export const pinned = preload.pinned;
export const copied = preload.copied;

const ovlTar = config.get("ovlTar");
const ovl = ovlTar
  ? new ImageFromTar("ovl", {
      source: ovlTar,
      target: `${registry}/${config.require("ovlImage")}`,
      chown: "0:0",
      targetAuth,
      cmd: config.getObject<string[]>("ovlCmd") ?? ["/bin/controller"],
    })
  : undefined;
export const ovlImage = ovl?.pinnedRef;
