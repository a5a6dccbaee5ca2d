// RegistryPreload (xcluster `images lreg_preload`): every container image the given Kubernetes
// YAML uses, mirrored into a local registry. Images already served from that registry are left
// alone; for the rest a MirroredImage makes one HEAD per side and copies only what is missing.
// Outputs: the images found, each one's pinned reference in the registry, and what was copied.
import * as pulumi from "@pulumi/pulumi";
import { familiarName, parseReference } from "../provider/oci/reference";
import { MirroredImage } from "../provider/resources/mirroredImage";
import { childName, ImageyardComponent, InputPropertyError } from "./component";
import { mirrorArgs, mirrorTarget, parseRegistry, type MirrorOptions } from "./mirrorOptions";
import { collectWorkloadImages, type FoundImage } from "./workloadImages";

export interface RegistryPreloadArgs extends MirrorOptions {
  /** YAML/JSON files or directories of them (multi-document is fine). */
  files?: string[];
  /** YAML text, e.g. the output of `helm template`. */
  manifests?: string[];
  /** The local registry, "localhost:5000[/prefix]"; repository paths are kept under it. */
  registry: string;
  /** Images to leave out (exact references as written in the YAML). */
  exclude?: string[];
}

const NAME = "RegistryPreload";

/** A child-name key for an image: "docker.io/library/nginx:1.27" → "nginx-1.27". */
export function imageKey(image: string): string {
  const r = parseReference(image);
  const short = familiarName({ registry: r.registry, repository: r.repository, ...(r.tag ? { tag: r.tag } : {}) });
  const digest = r.digest ? `-${r.digest.slice(r.digest.indexOf(":") + 1, r.digest.indexOf(":") + 13)}` : "";
  return `${short}${digest}`.replace(/[/:@]/g, "-");
}

export class RegistryPreload extends ImageyardComponent {
  /** Every image the YAML names, as written, in first-seen order. */
  readonly images: string[];
  /** Where each image is used ("files[0] (app.yaml)#2 Deployment/web container api"). */
  readonly usedBy: Record<string, string[]>;
  /** Images already served from the registry (nothing to do). */
  readonly alreadyLocal: string[];
  /** image → `registry/repo@sha256:…` in the local registry. */
  readonly pinned: pulumi.Output<Record<string, string>>;
  /** Images whose mirroring moved bytes (the others were already there). */
  readonly copied: pulumi.Output<string[]>;
  readonly mirrors: Record<string, MirroredImage> = {};

  constructor(name: string, args: RegistryPreloadArgs, opts?: pulumi.ComponentResourceOptions) {
    super(NAME, name, opts);
    if (!args.registry) throw new InputPropertyError(NAME, "registry", 'give the local registry, e.g. "localhost:5000"');
    if (!args.files?.length && !args.manifests?.length)
      throw new InputPropertyError(NAME, "files", "give files (or directories) of Kubernetes YAML, or manifests as YAML text");
    const found: FoundImage[] = collectWorkloadImages(args.files ?? [], args.manifests ?? [], NAME).filter(
      (f) => !(args.exclude ?? []).includes(f.image),
    );
    const host = parseRegistry(args.registry).host;
    this.images = found.map((f) => f.image);
    this.usedBy = Object.fromEntries(found.map((f) => [f.image, f.usedBy]));
    this.alreadyLocal = [];
    const keys = new Map<string, string>();
    for (const f of found) {
      let ref: ReturnType<typeof parseReference>;
      try {
        ref = parseReference(f.image);
      } catch (e) {
        throw new InputPropertyError(NAME, f.usedBy[0]!, (e as Error).message);
      }
      if (ref.registry === host) {
        this.alreadyLocal.push(f.image);
        continue;
      }
      const key = imageKey(f.image);
      if (keys.has(key))
        throw new InputPropertyError(NAME, f.usedBy[0]!, `${f.image} and ${keys.get(key)} give the same child name ${key}; exclude one`);
      keys.set(key, f.image);
      this.mirrors[f.image] = new MirroredImage(
        childName(name, key),
        { source: f.image, target: mirrorTarget(f.image, args.registry), ...mirrorArgs(args) },
        this.childOptions(),
      );
    }
    const entries = Object.entries(this.mirrors);
    this.pinned = pulumi.all(Object.fromEntries(entries.map(([img, m]) => [img, m.pinnedRef]))) as pulumi.Output<Record<string, string>>;
    this.copied = pulumi
      .all(
        entries.map(([img, m]) =>
          pulumi.all([m.blobsCopied, m.blobsMounted]).apply(([c, mo]) => ((c ?? 0) + (mo ?? 0) > 0 ? img : undefined)),
        ),
      )
      .apply((xs) => xs.filter((x): x is string => x !== undefined));
    this.registerOutputs({
      images: this.images,
      usedBy: this.usedBy,
      alreadyLocal: this.alreadyLocal,
      pinned: this.pinned,
      copied: this.copied,
    });
  }
}
