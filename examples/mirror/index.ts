// Mirror one upstream image into your registry, driven by stack config:
//
//   pulumi config set source registry.example.com/team/app:v1
//   pulumi config set target mirror.internal:5000/mirror/app      # repository; the tag follows the source
//   pulumi config set targetUsername robot
//   pulumi config set --secret targetPassword …
//   pulumi config set --path 'platforms[0]' linux/amd64          # optional subset
//   pulumi config set targetCaFile /etc/ssl/mirror-ca.pem          # optional; or targetInsecure true
//
// Then `pulumi up`: the stack outputs the digest and a pinned `repo@sha256:…` to deploy from.
import { readFileSync } from "node:fs";
import * as pulumi from "@pulumi/pulumi";
// In a project of your own: import { MirroredImage } from "imageyard";
import { MirroredImage, type RegistryAuthInput, type RegistryTlsInput } from "../../index";

const config = new pulumi.Config();

function auth(side: "source" | "target"): pulumi.Output<RegistryAuthInput> | undefined {
  const username = config.get(`${side}Username`);
  return username === undefined ? undefined : pulumi.output({ username, password: config.requireSecret(`${side}Password`) });
}

function tls(side: "source" | "target"): RegistryTlsInput | undefined {
  const caFile = config.get(`${side}CaFile`);
  const insecure = config.getBoolean(`${side}Insecure`);
  if (caFile === undefined && insecure === undefined) return undefined;
  return { ...(caFile ? { caCert: readFileSync(caFile, "utf8") } : {}), ...(insecure !== undefined ? { insecure } : {}) };
}

const image = new MirroredImage("image", {
  source: config.require("source"),
  target: config.require("target"),
  platforms: config.getObject<string[]>("platforms"),
  sourceAuth: auth("source"),
  targetAuth: auth("target"),
  sourceTls: tls("source"),
  targetTls: tls("target"),
  copySignatures: config.getBoolean("copySignatures"),
});

export const digest = image.digest;
export const pinnedRef = image.pinnedRef;
export const tagRef = image.tagRef;
export const sourceDigest = image.sourceDigest;
export const mediaType = image.mediaType;
export const platforms = image.platforms;
export const totalSize = image.totalSize;
export const blobsCopied = image.blobsCopied;
export const blobsMounted = image.blobsMounted;
export const blobsSkipped = image.blobsSkipped;
