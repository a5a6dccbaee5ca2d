// ImageManifest (Atmosphere's image_manifest / mirror_images): a map of manifest key → image
// reference, from a YAML file in Atmosphere's shape or an object, with per-key overrides that
// merge (no copying the whole dict to change one image). With `registry` every image is rewritten
// onto it keeping its repository path; with `mirror: true` each (or `only` some) becomes a
// MirroredImage child, and the outputs give key → pinned mirror reference and the manifest as
// YAML in the input's shape, ready for the consuming tool.
import { readFileSync, writeFileSync } from "node:fs";
import * as pulumi from "@pulumi/pulumi";
import { parseDocument, stringify } from "yaml";
import { formatReference, parseReference } from "../provider/oci/reference";
import { MirroredImage } from "../provider/resources/mirroredImage";
import { childName, ImageyardComponent, InputPropertyError } from "./component";
import { mirrorArgs, mirrorTarget, rewriteReference, type MirrorOptions } from "./mirrorOptions";

export interface ImageManifestArgs extends MirrorOptions {
  /** key → image reference, e.g. { keystone_api: "quay.io/vexxhost/keystone:zed" }. */
  images?: Record<string, string>;
  /** A YAML file: `atmosphere_images: {key: ref}` (any one top-level key) or a flat map. Read once, at program time. */
  manifestFile?: string;
  /** The same, as YAML text. */
  manifestYaml?: string;
  /** Merged over the manifest key by key (new keys are added). */
  overrides?: Record<string, string>;
  /** "registry.example.com[:port][/prefix]": every image is rewritten onto it, repository path kept. */
  registry?: string;
  /** Copy the images to `registry` (MirroredImage children); the outputs then pin them by digest. */
  mirror?: boolean;
  /** Mirror only these keys (Atmosphere's image_manifest_images); the rest are only rewritten. */
  only?: string[];
  /** Also write the resulting manifest YAML here (after an update; previews leave the file alone). */
  outputFile?: string;
}

/** A parsed manifest: entries in file order and the top-level key they sat under, if any. */
export interface ManifestShape {
  rootKey?: string;
  images: Record<string, string>;
}

const NAME = "ImageManifest";

/** Reads Atmosphere's shape (`atmosphere_images: {…}`), any single-key wrapper of a map, or a flat map. */
export function parseManifestYaml(text: string, where: string): ManifestShape {
  const doc = parseDocument(text);
  if (doc.errors.length > 0) throw new InputPropertyError(NAME, where, `not valid YAML: ${doc.errors[0]!.message}`);
  const value = doc.toJS() as unknown;
  if (!isStringMap(value) && isRecord(value)) {
    const keys = Object.keys(value);
    if (keys.length === 1 && isStringMap(value[keys[0]!])) return { rootKey: keys[0]!, images: value[keys[0]!] as Record<string, string> };
  }
  if (isStringMap(value)) return { images: value };
  throw new InputPropertyError(
    NAME,
    where,
    "expected a map of key → image reference, or one top-level key holding such a map (atmosphere_images: {keystone_api: quay.io/…})",
  );
}

/** The manifest after overrides and the registry rewrite, validated; pure, for tests and the component. */
export function resolveManifest(args: ImageManifestArgs): {
  shape: ManifestShape;
  sources: Record<string, string>;
  rewritten: Record<string, string>;
} {
  const given = [args.images, args.manifestFile, args.manifestYaml].filter((x) => x !== undefined).length;
  if (given !== 1) throw new InputPropertyError(NAME, "images", "give exactly one of images, manifestFile or manifestYaml");
  let shape: ManifestShape;
  if (args.images) shape = { images: { ...args.images } };
  else if (args.manifestYaml !== undefined) shape = parseManifestYaml(args.manifestYaml, "manifestYaml");
  else {
    let text: string;
    try {
      text = readFileSync(args.manifestFile!, "utf8");
    } catch (e) {
      throw new InputPropertyError(NAME, "manifestFile", `cannot read ${args.manifestFile}: ${(e as Error).message}`);
    }
    shape = parseManifestYaml(text, `manifestFile (${args.manifestFile})`);
  }
  const sources: Record<string, string> = { ...shape.images, ...(args.overrides ?? {}) };
  const rewritten: Record<string, string> = {};
  for (const [key, ref] of Object.entries(sources)) {
    const where = args.overrides && key in args.overrides ? `overrides.${key}` : `images.${key}`;
    if (typeof ref !== "string") throw new InputPropertyError(NAME, where, `expected an image reference string, got ${typeof ref}`);
    try {
      rewritten[key] = args.registry ? formatReference(rewriteReference(ref, args.registry)) : formatReference(parseReference(ref));
    } catch (e) {
      throw new InputPropertyError(NAME, where, (e as Error).message);
    }
  }
  if (args.mirror && !args.registry)
    throw new InputPropertyError(NAME, "registry", 'mirror: true needs a registry to copy to, e.g. registry: "registry.example.com:5000"');
  (args.only ?? []).forEach((k, i) => {
    if (!(k in sources))
      throw new InputPropertyError(
        NAME,
        `only[${i}]`,
        `"${k}" is not a key of the manifest (keys: ${Object.keys(sources).slice(0, 10).join(", ")}${Object.keys(sources).length > 10 ? ", …" : ""})`,
      );
  });
  if (args.only && !args.mirror) throw new InputPropertyError(NAME, "only", "only selects keys to mirror; set mirror: true as well");
  return { shape, sources, rewritten };
}

/** The manifest as YAML in the shape it came in. */
export function manifestYaml(images: Record<string, string>, rootKey: string | undefined): string {
  return stringify(rootKey !== undefined ? { [rootKey]: images } : images);
}

export class ImageManifest extends ImageyardComponent {
  /** key → the reference to use: the pinned mirror reference for mirrored keys, else the (rewritten) reference. */
  readonly images: pulumi.Output<Record<string, string>>;
  /** key → `host/repo@sha256:…` for the keys that were mirrored. */
  readonly pinned: pulumi.Output<Record<string, string>>;
  /** The manifest as YAML in the input's shape (atmosphere_images: …), with `images` as values. */
  readonly yaml: pulumi.Output<string>;
  /** key → the MirroredImage child. */
  readonly mirrors: Record<string, MirroredImage> = {};

  constructor(name: string, args: ImageManifestArgs, opts?: pulumi.ComponentResourceOptions) {
    super(NAME, name, opts);
    const { shape, sources, rewritten } = resolveManifest(args);
    const keys = args.mirror ? (args.only ?? Object.keys(sources)) : [];
    for (const key of keys) {
      this.mirrors[key] = new MirroredImage(
        childName(name, key),
        { source: sources[key]!, target: mirrorTarget(sources[key]!, args.registry!), ...mirrorArgs(args) },
        this.childOptions(),
      );
    }
    this.pinned = pulumi.all(Object.fromEntries(Object.entries(this.mirrors).map(([k, m]) => [k, m.pinnedRef]))) as pulumi.Output<
      Record<string, string>
    >;
    this.images = this.pinned.apply((p) => Object.fromEntries(Object.keys(sources).map((k) => [k, p[k] ?? rewritten[k]!])));
    this.yaml = this.images.apply((m) => manifestYaml(m, shape.rootKey));
    if (args.outputFile) {
      const file = args.outputFile;
      this.yaml.apply((text) => {
        if (!pulumi.runtime.isDryRun()) writeFileSync(file, text);
        return text;
      });
    }
    this.registerOutputs({ images: this.images, pinned: this.pinned, yaml: this.yaml });
  }
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function isStringMap(v: unknown): v is Record<string, string> {
  return isRecord(v) && Object.keys(v).length > 0 && Object.values(v).every((x) => typeof x === "string");
}
