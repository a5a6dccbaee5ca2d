// PrePullSet: container images put onto every (selected) Kubernetes node, kept there for nodes
// that join later, observed per node. Its logic is ./prePullSet.lifecycle (Pulumi-free), reached
// through the shared EngineProvider; the node side is provider/node (a DaemonSet + agent).
import * as pulumi from "@pulumi/pulumi";
import type * as lifecycle from "./prePullSet.lifecycle";
import type { RegistryAuthInput, RegistryTlsInput, TimeoutsInput } from "./args";
import { EngineProvider } from "./forward";

export interface PrePullImageInput {
  /** `registry/repo:tag`, `registry/repo@sha256:…`, `docker-archive:/path.tar` or `oci-archive:/path.tar`. */
  ref: pulumi.Input<string>;
  /** Registry credentials (kept secret), or BOSH's base64 "user:password". Handed to each node's agent in a Secret it mounts. */
  auth?: pulumi.Input<RegistryAuthInput | string>;
  /** Further name(s) the image answers to on every node (`ctr image tag`), e.g. "registry.k8s.io/debian-base:v2.0.0". */
  retagAs?: pulumi.Input<string | pulumi.Input<string>[]>;
  /** Pull exactly this platform's manifest ("linux/arm64") instead of each node's own (the node's registry mirrors/CA config does not apply). */
  platform?: pulumi.Input<string>;
}

export interface TolerationInput {
  key?: pulumi.Input<string>;
  operator?: pulumi.Input<"Exists" | "Equal">;
  value?: pulumi.Input<string>;
  effect?: pulumi.Input<"NoSchedule" | "PreferNoSchedule" | "NoExecute" | "">;
  tolerationSeconds?: pulumi.Input<number>;
}

export interface PrePullSetArgs {
  /** Images for every node: references (a tag resolves to its digest in preview) or entries with auth/retagAs. */
  images: pulumi.Input<pulumi.Input<string | PrePullImageInput>[]>;
  /** A registry every node can pull from; the bundled agent image is copied there (air-gapped clusters work). */
  agentRegistry?: pulumi.Input<string>;
  /** Credentials for agentRegistry, or BOSH's base64 "user:password" (kept secret). */
  agentRegistryAuth?: pulumi.Input<RegistryAuthInput | string>;
  agentRegistryTls?: pulumi.Input<RegistryTlsInput>;
  /** Use this agent image (repository@sha256:…) instead of copying the bundled one. */
  agentImage?: pulumi.Input<string>;
  /** Kubeconfig document (kept secret); default: KUBECONFIG, then ~/.kube/config, as kubectl. */
  kubeconfig?: pulumi.Input<string>;
  context?: pulumi.Input<string>;
  /** Where the DaemonSet lives. Default "kube-system". */
  namespace?: pulumi.Input<string>;
  /** DaemonSet name. Default: the resource name. */
  name?: pulumi.Input<string>;
  nodeSelector?: pulumi.Input<Record<string, pulumi.Input<string>>>;
  /** Default [{ operator: "Exists" }]: every node, tainted control-plane nodes included. */
  tolerations?: pulumi.Input<pulumi.Input<TolerationInput>[]>;
  /** Nodes that re-pull at once when the set changes. Default: all. */
  parallelism?: pulumi.Input<number>;
  /** Protect the images from kubelet image GC (containerd 1.7+; 1.6 nodes are reported in warnings). */
  pin?: pulumi.Input<boolean>;
  /** On delete, remove the set's image names from the nodes (never an image a running container uses). */
  removeImagesOnDelete?: pulumi.Input<boolean>;
  /** containerd's socket on the host; may hold ${NODE_NAME}. Default /run/containerd/containerd.sock. */
  containerdSocket?: pulumi.Input<string>;
  /** Deadlines per operation, seconds or "20m". Defaults: create and update 30m, delete 5m. */
  timeouts?: pulumi.Input<TimeoutsInput>;
}

// One stateless instance: the SDK caches each provider's serialization per instance.
const provider = new EngineProvider<typeof lifecycle>("imageyard/provider/resources/prePullSet.lifecycle");

export class PrePullSet extends pulumi.dynamic.Resource {
  declare readonly name: pulumi.Output<string>;
  declare readonly namespace: pulumi.Output<string>;
  /** image → digest every node holds. */
  declare readonly digests: pulumi.Output<Record<string, string>>;
  /** node → image → digest, or "failed: …" / "pending: …" as last observed. */
  declare readonly nodes: pulumi.Output<Record<string, Record<string, string>>>;
  /** Nodes holding every image. */
  declare readonly ready: pulumi.Output<number>;
  /** Nodes the set covers. */
  declare readonly total: pulumi.Output<number>;
  declare readonly warnings: pulumi.Output<string[]>;
  declare readonly agentImageRef: pulumi.Output<string>;

  constructor(name: string, args: PrePullSetArgs, opts?: pulumi.CustomResourceOptions) {
    const secret = <T>(v: pulumi.Input<T> | undefined) => (v === undefined ? undefined : pulumi.secret(v));
    super(
      provider,
      name,
      {
        ...args,
        name: args.name ?? name,
        // Credentials are secret wherever they sit: a list holding any auth is secret as a whole
        // (the engine keeps outputs of secret inputs secret), as is the kubeconfig.
        images: pulumi
          .output(args.images)
          .apply((list) => (list.some((e) => typeof e === "object" && e !== null && e.auth !== undefined) ? pulumi.secret(list) : list)),
        kubeconfig: secret(args.kubeconfig),
        agentRegistryAuth: secret(args.agentRegistryAuth),
        digests: undefined,
        nodes: undefined,
        ready: undefined,
        total: undefined,
        warnings: undefined,
        agentImageRef: undefined,
      },
      pulumi.mergeOptions(opts, { additionalSecretOutputs: ["kubeconfig", "agentRegistryAuth"] }),
      "imageyard",
      "PrePullSet",
    );
  }
}
