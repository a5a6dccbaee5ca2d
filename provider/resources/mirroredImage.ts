// MirroredImage: a container image copied from an upstream registry into a mirror, digest kept.
// Its logic is ./mirroredImage.lifecycle (Pulumi-free), reached through the shared EngineProvider.
import * as pulumi from "@pulumi/pulumi";
import type * as lifecycle from "./mirroredImage.lifecycle";
import type { RegistryAuthInput, RegistryTlsInput, TimeoutsInput } from "./args";
import { EngineProvider } from "./forward";
import { urnInput } from "./urn";

export type { RegistryAuthInput, RegistryTlsInput, TimeoutsInput } from "./args";

export interface MirroredImageArgs {
  /** Upstream image: `docker.io/library/alpine:3.20`, `ghcr.io/org/app@sha256:…`, `oci-layout:/path:tag`. */
  source: pulumi.Input<string>;
  /** Mirror repository (`registry.local:5000/mirror/alpine`) or full reference; the tag defaults to the source's. */
  target: pulumi.Input<string>;
  /** Copy only these platforms (`["linux/amd64"]`); the mirror then holds a new index with its own digest. */
  platforms?: pulumi.Input<pulumi.Input<string>[]>;
  /** Credentials for the upstream registry (kept secret); else docker config.json and credential helpers. */
  sourceAuth?: pulumi.Input<RegistryAuthInput>;
  /** Credentials for the mirror (kept secret); else docker config.json and credential helpers. */
  targetAuth?: pulumi.Input<RegistryAuthInput>;
  sourceTls?: pulumi.Input<RegistryTlsInput>;
  targetTls?: pulumi.Input<RegistryTlsInput>;
  /** Copy cosign signatures, attestations and SBOMs (`sha256-<hex>.sig|.att|.sbom`) too. Default true. */
  copySignatures?: pulumi.Input<boolean>;
  /**
   * Deadlines per operation, seconds or "20m"/"1h30m" (Pulumi's customTimeouts do not reach dynamic
   * providers). Defaults: create and update 1h, delete 5m.
   */
  timeouts?: pulumi.Input<TimeoutsInput>;
  /**
   * How long in all each registry may keep this stack's copies paused by rate limits (429,
   * RateLimit headers) before they fail: seconds or "30m". The paused time is counted once per
   * registry host for every MirroredImage of the stack (they share one provider process), so this
   * is one budget per registry for the whole stack, not per image. Default 10m. Changing it alone
   * changes nothing in the mirror and shows no diff.
   */
  rateLimitWait?: pulumi.Input<number | string>;
}

// One stateless instance: the SDK caches each provider's serialization per instance.
const provider = new EngineProvider<typeof lifecycle>("imageyard/provider/resources/mirroredImage.lifecycle");

export class MirroredImage extends pulumi.dynamic.Resource {
  /** Digest the mirror tag points at (equals sourceDigest unless platforms were filtered). */
  declare readonly digest: pulumi.Output<string>;
  /** `registry/repo@sha256:…` in the mirror: pin workloads to this. */
  declare readonly pinnedRef: pulumi.Output<string>;
  /** `registry/repo:tag` in the mirror. */
  declare readonly tagRef: pulumi.Output<string>;
  declare readonly mediaType: pulumi.Output<string>;
  declare readonly platforms: pulumi.Output<string[]>;
  declare readonly platformsFiltered: pulumi.Output<boolean>;
  /** Bytes of all blobs and manifests the image consists of. */
  declare readonly totalSize: pulumi.Output<number>;
  declare readonly blobsCopied: pulumi.Output<number>;
  declare readonly blobsMounted: pulumi.Output<number>;
  declare readonly blobsSkipped: pulumi.Output<number>;
  declare readonly signaturesCopied: pulumi.Output<number>;
  /** Digest of the upstream image as its registry reported it. */
  declare readonly sourceDigest: pulumi.Output<string>;
  declare readonly sourceRef: pulumi.Output<string>;
  declare readonly targetRef: pulumi.Output<string>;
  /** What the mirror tag pointed at when last observed ("" when missing): differs from digest on drift. */
  declare readonly targetDigest: pulumi.Output<string>;

  constructor(name: string, args: MirroredImageArgs, opts?: pulumi.CustomResourceOptions) {
    const secretAuth = (a: pulumi.Input<RegistryAuthInput> | undefined) => (a === undefined ? undefined : pulumi.secret(a));
    super(
      provider,
      name,
      {
        ...urnInput("MirroredImage", name, opts),
        source: args.source,
        target: args.target,
        platforms: args.platforms,
        sourceAuth: secretAuth(args.sourceAuth),
        targetAuth: secretAuth(args.targetAuth),
        sourceTls: args.sourceTls,
        targetTls: args.targetTls,
        copySignatures: args.copySignatures,
        timeouts: args.timeouts,
        rateLimitWait: args.rateLimitWait,
        digest: undefined,
        pinnedRef: undefined,
        tagRef: undefined,
        mediaType: undefined,
        platformsFiltered: undefined,
        totalSize: undefined,
        blobsCopied: undefined,
        blobsMounted: undefined,
        blobsSkipped: undefined,
        signaturesCopied: undefined,
        sourceDigest: undefined,
        sourceRef: undefined,
        targetRef: undefined,
        targetDigest: undefined,
      },
      pulumi.mergeOptions(opts, { additionalSecretOutputs: ["sourceAuth", "targetAuth"] }),
      "imageyard",
      "MirroredImage",
    );
  }
}
