// The demo stack (root Pulumi.yaml): mirrors the sandbox's generated images from its upstream
// registry into its password-protected mirror. scripts/demo.sh writes the config; the same
// program works against real registries with other config:
//
//   upstream        registry host the images come from        (127.0.0.1:5000, docker.io, …)
//   mirror          registry host they are mirrored into
//   mirrorUsername  / mirrorPassword (secret)
//   images          optional JSON list: [{"name":"webapp","source":"demo/webapp:1.4","platforms":["linux/arm64"]}]
import * as pulumi from "@pulumi/pulumi";
// In a project of your own: import { MirroredImage } from "imageyard";
import { MirroredImage } from "../../index";

interface DemoImage {
  /** Resource name and key in the `images` output. */
  name: string;
  /** Repository and tag in the upstream registry. */
  source: string;
  /** Mirror repository; defaults to the source's. */
  target?: string;
  platforms?: string[];
}

const DEFAULT_IMAGES: DemoImage[] = [
  // A multi-arch image with a cosign-style signature: copied whole, digest and signature kept.
  { name: "webapp", source: "demo/webapp:1.4" },
  // The same image, only its arm64 half: the mirror holds a new index with its own digest.
  { name: "webapp-arm64", source: "demo/webapp:1.4", target: "demo/webapp-arm64", platforms: ["linux/arm64"] },
  // A single-platform image.
  { name: "toolbox", source: "demo/toolbox:2.0" },
];

const config = new pulumi.Config();
const upstream = config.require("upstream");
const mirror = config.require("mirror");
const mirrorAuth = pulumi.output({ username: config.require("mirrorUsername"), password: config.requireSecret("mirrorPassword") });
const images = config.getObject<DemoImage[]>("images") ?? DEFAULT_IMAGES;

const mirrored = images.map(
  (img) =>
    [
      img.name,
      new MirroredImage(img.name, {
        source: `${upstream}/${img.source}`,
        target: `${mirror}/${img.target ?? img.source.replace(/:[^/:]+$/, "")}`,
        platforms: img.platforms,
        targetAuth: mirrorAuth,
      }),
    ] as const,
);

/** Per image: what to deploy from, and what the copy did. */
export const result = Object.fromEntries(
  mirrored.map(([name, m]) => [
    name,
    {
      pinnedRef: m.pinnedRef,
      tagRef: m.tagRef,
      digest: m.digest,
      sourceDigest: m.sourceDigest,
      platforms: m.platforms,
      platformsFiltered: m.platformsFiltered,
      totalSize: m.totalSize,
      blobsCopied: m.blobsCopied,
      blobsMounted: m.blobsMounted,
      blobsSkipped: m.blobsSkipped,
      signaturesCopied: m.signaturesCopied,
    },
  ]),
);
export { upstream, mirror };
