// BOSH's import-images job as a stack: the list of images lives in stack config as the job's
// properties do (a reference, `retagAs` names, the name of a credential), credentials are secret
// config in BOSH's own form (base64 `user:pass`), and every node of the cluster holds the images —
// nodes that join later too, with no new `pulumi up`.
//
//   pulumi config set --path 'images[0].ref' harbor.internal/base/debian:v2.0.0
//   pulumi config set --path 'images[0].retagAs' registry.k8s.io/debian-base:v2.0.0
//   pulumi config set --path 'images[0].auth' harbor                       # a key of `auths`
//   pulumi config set --secret --path 'auths.harbor' "$(printf robot:s3cret | base64)"
//   pulumi config set --path 'images[1].ref' docker-archive:/srv/offline/app.tar   # nodes with no registry route
//   pulumi config set agentRegistry harbor.internal      # every node can pull the agent image from there
//   pulumi config set agentRegistryAuth harbor           # optional: a key of `auths` for it
//   pulumi up
//
// A tag is resolved to its digest in preview: when it moves, `pulumi preview` shows the set's update
// from the old digest to the new, and `up` moves the tag (and its retag names) on every node.
import * as pulumi from "@pulumi/pulumi";
// In a project of your own: import { PrePullSet, type PrePullImageInput } from "imageyard";
import { PrePullSet, type PrePullImageInput } from "../../index";

interface ImageConfig {
  ref: string;
  retagAs?: string | string[];
  /** A key of the `auths` secret config. */
  auth?: string;
  platform?: string;
}

const config = new pulumi.Config();
const images = config.requireObject<ImageConfig[]>("images");
const auths = config.getSecretObject<Record<string, string>>("auths") ?? pulumi.secret<Record<string, string>>({});

/** The credential `key` names, still secret; a key `auths` lacks fails the preview naming where it was asked for. */
const authOf = (key: string, where: string): pulumi.Output<string> =>
  auths.apply((all) => {
    const value = all[key];
    if (value === undefined) throw new Error(`${where}: no "${key}" in the auths config (keys: ${Object.keys(all).join(", ") || "none"})`);
    return value;
  });

const agentAuthKey = config.get("agentRegistryAuth");

const set = new PrePullSet("images", {
  images: images.map(
    (img, i): PrePullImageInput => ({
      ref: img.ref,
      ...(img.retagAs ? { retagAs: img.retagAs } : {}),
      ...(img.platform ? { platform: img.platform } : {}),
      ...(img.auth ? { auth: authOf(img.auth, `images[${i}].auth`) } : {}),
    }),
  ),
  agentRegistry: config.require("agentRegistry"),
  agentRegistryAuth: agentAuthKey ? authOf(agentAuthKey, "agentRegistryAuth") : undefined,
  kubeconfig: config.getSecret("kubeconfig"),
  context: config.get("context"),
  nodeSelector: config.getObject<Record<string, string>>("nodeSelector"),
  containerdSocket: config.get("containerdSocket"),
  pin: config.getBoolean("pin") ?? true,
});

export const digests = set.digests;
export const nodes = set.nodes;
export const ready = set.ready;
export const total = set.total;
export const warnings = set.warnings;
