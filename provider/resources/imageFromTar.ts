// ImageFromTar: an image built from a tar file or a directory, no Docker daemon, no root
// (`FROM scratch` + `ADD --chown=0:0 ovl.tar /` + `CMD [...]`). Reproducible: the same input gives
// the same digest, so a changed tar shows in preview as an update. Logic: ./imageFromTar.lifecycle.
import * as pulumi from "@pulumi/pulumi";
import type * as lifecycle from "./imageFromTar.lifecycle";
import type { RegistryAuthInput, RegistryTlsInput, TimeoutsInput } from "./args";
import { EngineProvider } from "./forward";
import { urnInput } from "./urn";

export interface ImageFromTarArgs {
  /** The root filesystem: an uncompressed tar file or a directory. */
  source: pulumi.Input<string>;
  /** `registry:5000/library/metallb:latest`, `oci:/dir:tag`, `oci-archive:/x.tar:tag`, `docker-archive:/x.tar:repo:tag`. */
  target: pulumi.Input<string>;
  entrypoint?: pulumi.Input<pulumi.Input<string>[]>;
  cmd?: pulumi.Input<pulumi.Input<string>[]>;
  env?: pulumi.Input<Record<string, pulumi.Input<string>>>;
  workingDir?: pulumi.Input<string>;
  user?: pulumi.Input<string>;
  labels?: pulumi.Input<Record<string, pulumi.Input<string>>>;
  /** `["8080", "53/udp"]` */
  exposedPorts?: pulumi.Input<pulumi.Input<string>[]>;
  /** Default `linux/amd64`. */
  platform?: pulumi.Input<string>;
  /** Owner of every file, `"uid:gid"` (ADD --chown), or `"keep"`. Default `"0:0"`. */
  chown?: pulumi.Input<string>;
  /** Newer mtimes are clamped to this (seconds since the epoch); also the config's `created`. Default 0. */
  mtime?: pulumi.Input<number>;
  /** `"gzip"` (default) or `"none"`. */
  compression?: pulumi.Input<"gzip" | "none">;
  targetAuth?: pulumi.Input<RegistryAuthInput>;
  targetTls?: pulumi.Input<RegistryTlsInput>;
  /** Deadlines per operation, seconds or "20m". Defaults: create and update 1h, delete 5m. */
  timeouts?: pulumi.Input<TimeoutsInput>;
}

const provider = new EngineProvider<typeof lifecycle>("imageyard/provider/resources/imageFromTar.lifecycle");

export class ImageFromTar extends pulumi.dynamic.Resource {
  /** Manifest digest of the built image. */
  declare readonly digest: pulumi.Output<string>;
  /** `registry/repo@sha256:…`: pin workloads to this. */
  declare readonly pinnedRef: pulumi.Output<string>;
  declare readonly tagRef: pulumi.Output<string>;
  declare readonly configDigest: pulumi.Output<string>;
  declare readonly layerDigest: pulumi.Output<string>;
  /** sha256 of the uncompressed layer. */
  declare readonly diffId: pulumi.Output<string>;
  declare readonly layerSize: pulumi.Output<number>;
  /** What the target pointed at when last observed ("" when missing). */
  declare readonly targetDigest: pulumi.Output<string>;

  constructor(name: string, args: ImageFromTarArgs, opts?: pulumi.CustomResourceOptions) {
    super(
      provider,
      name,
      {
        ...urnInput("ImageFromTar", name, opts),
        ...args,
        targetAuth: args.targetAuth === undefined ? undefined : pulumi.secret(args.targetAuth),
        digest: undefined,
        pinnedRef: undefined,
        tagRef: undefined,
        configDigest: undefined,
        layerDigest: undefined,
        diffId: undefined,
        layerSize: undefined,
        targetDigest: undefined,
      },
      pulumi.mergeOptions(opts, { additionalSecretOutputs: ["targetAuth"] }),
      "imageyard",
      "ImageFromTar",
    );
  }
}
