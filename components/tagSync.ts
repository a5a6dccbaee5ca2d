// TagSync (regsync / skopeo sync parity): every tag of a repository that matches a regex or a
// semver range becomes one MirroredImage, so a new upstream tag shows in preview as a new resource.
//
// This is the one component that does I/O of its own: it lists the source repository's tags
// (GET /v2/<repo>/tags/list, following Link pages) while the program runs. It has to: children
// exist only if the program creates them, and a resource's outputs are unknown in preview, so a
// "list tags" resource could never show a new tag as a new resource until a second `up`. The
// listing is read-only and cheap; a registry that cannot be listed fails preview saying why.
//
// Rate limits: `rateLimitWait` is one budget per registry for the whole stack. Every child
// MirroredImage carries it, and the copies all run in the stack's one provider process, where the
// time a registry host keeps us paused is counted once for every caller (provider/http/ratelimit):
// a 429 pauses all copies to that host together, and once the paused time passes the budget they
// fail together, instead of each image waiting out its own 10 minutes. The listing here runs in
// the program's process and gets the same budget for its own requests.
import * as pulumi from "@pulumi/pulumi";
import { parseReference } from "../provider/oci/reference";
import { RegistryClient } from "../provider/oci/registry";
import { registryOptions, type AuthInput, type TlsInput } from "../provider/resources/mirroredImage.lifecycle";
import { timeoutSeconds } from "../provider/resources/timeouts";
import { MirroredImage } from "../provider/resources/mirroredImage";
import { childName, ImageyardComponent, InputPropertyError } from "./component";
import { mirrorArgs, type MirrorOptions } from "./mirrorOptions";
import { selectTags, semverRange, type TagFilter } from "./tagFilter";

export interface TagSyncArgs extends TagFilter, MirrorOptions {
  /** The source repository, without a tag: "docker.io/library/alpine". */
  source: string;
  /** The mirror repository: "registry.local:5000/mirror/alpine". */
  target: string;
  /** Plain credentials for listing the source's tags (the MirroredImages get `sourceAuth`). */
  listAuth?: AuthInput;
  listTls?: TlsInput;
}

const NAME = "TagSync";

export class TagSync extends ImageyardComponent {
  /** The tags mirrored, newest version first. */
  readonly tags: pulumi.Output<string[]>;
  /** tag → `registry/repo@sha256:…` in the mirror. */
  readonly pinned: pulumi.Output<Record<string, string>>;
  /** tag → its MirroredImage, once the listing has answered. */
  readonly mirrors: Promise<Record<string, MirroredImage>>;

  constructor(name: string, args: TagSyncArgs, opts?: pulumi.ComponentResourceOptions) {
    super(NAME, name, opts);
    const source = parseRepository(args.source, "source");
    parseRepository(args.target, "target");
    for (const k of ["include", "exclude"] as const) {
      if (args[k] === undefined) continue;
      try {
        new RegExp(args[k]!);
      } catch (e) {
        throw new InputPropertyError(NAME, k, `not a regular expression: ${(e as Error).message}`);
      }
    }
    if (args.semver !== undefined) {
      try {
        semverRange(args.semver);
      } catch (e) {
        throw new InputPropertyError(NAME, "semver", (e as Error).message);
      }
    }
    if (args.latest !== undefined && !(Number.isInteger(args.latest) && args.latest > 0))
      throw new InputPropertyError(NAME, "latest", "latest is a positive whole number");
    if (args.include === undefined && args.semver === undefined && args.latest === undefined) {
      throw new InputPropertyError(
        NAME,
        "include",
        'give include (a regex), semver (a range) or latest, e.g. semver: ">=3.19"; mirroring every tag is rarely meant',
      );
    }
    const wait = args.rateLimitWait;
    // An Output is only known later: the children check it, the listing keeps the default.
    const plainWait = typeof wait === "number" || typeof wait === "string" ? wait : undefined;
    if (plainWait !== undefined && timeoutSeconds(plainWait) === undefined)
      throw new InputPropertyError(
        NAME,
        "rateLimitWait",
        `a positive number of seconds or a duration like "30m", not ${JSON.stringify(plainWait)}`,
      );
    const client = new RegistryClient(source.registry, registryOptions(args.listAuth, args.listTls, "source", plainWait));
    this.mirrors = client.listTags(source.repository).then((all) => {
      const out: Record<string, MirroredImage> = {};
      for (const tag of selectTags(all, args)) {
        out[tag] = new MirroredImage(
          childName(name, tag),
          { source: `${args.source}:${tag}`, target: `${args.target}:${tag}`, ...mirrorArgs(args) },
          this.childOptions(),
        );
      }
      return out;
    });
    this.tags = pulumi.output(this.mirrors.then((m) => Object.keys(m)));
    this.pinned = pulumi
      .output(this.mirrors)
      .apply((m) => pulumi.all(Object.fromEntries(Object.entries(m).map(([t, r]) => [t, r.pinnedRef])))) as pulumi.Output<
      Record<string, string>
    >;
    this.registerOutputs({ tags: this.tags, pinned: this.pinned });
  }
}

function parseRepository(ref: string, property: string): ReturnType<typeof parseReference> {
  let r: ReturnType<typeof parseReference>;
  try {
    r = parseReference(ref);
  } catch (e) {
    throw new InputPropertyError(NAME, property, (e as Error).message);
  }
  if (r.digest || /:[^/]+$/.test(ref.split("/").slice(1).join("/")))
    throw new InputPropertyError(NAME, property, `give a repository without a tag or digest, e.g. "${r.registry}/${r.repository}"`);
  return r;
}
