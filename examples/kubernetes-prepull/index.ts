// Mirror an image into a registry the cluster can reach, put it on every node with a PrePullSet,
// then run a Deployment of it with imagePullPolicy: Never — it starts from what the nodes hold,
// with no registry on the way (the air-gapped case BOSH's import-images covers).
//
//   pulumi config set source docker.io/library/busybox:1.36          # upstream image
//   pulumi config set mirror registry.internal:5000/mirror/busybox    # your registry (repository)
//   pulumi config set mirrorUsername robot; pulumi config set --secret mirrorPassword …   # optional
//   pulumi config set --path 'command[0]' /bin/sleep; pulumi config set --path 'command[1]' 3600
//   pulumi up
//
// The cluster is the one kubectl uses (KUBECONFIG, ~/.kube/config; `kubeconfig`/`context` config
// override it), for both the PrePullSet and the Deployment's provider.
import * as pulumi from "@pulumi/pulumi";
// In a project of your own: import { MirroredImage, PrePullSet } from "imageyard";
import { MirroredImage, PrePullSet, type RegistryAuthInput } from "../../index";

const config = new pulumi.Config();
const mirrorUser = config.get("mirrorUsername");
const mirrorAuth: pulumi.Input<RegistryAuthInput> | undefined = mirrorUser
  ? pulumi.output({ username: mirrorUser, password: config.requireSecret("mirrorPassword") })
  : undefined;
const kubeconfig = config.getSecret("kubeconfig");
const context = config.get("context");

const image = new MirroredImage("image", { source: config.require("source"), target: config.require("mirror"), targetAuth: mirrorAuth });

const prepull = new PrePullSet("prepull", {
  images: [mirrorAuth ? { ref: image.pinnedRef, auth: mirrorAuth } : image.pinnedRef],
  // The agent image goes to the same registry by default: the nodes can already pull from it.
  agentRegistry: config.get("agentRegistry") ?? config.require("mirror").split("/")[0]!,
  agentRegistryAuth: mirrorAuth,
  containerdSocket: config.get("containerdSocket"),
  namespace: config.get("namespace"),
  kubeconfig,
  context,
  pin: config.getBoolean("pin") ?? true,
});

// @pulumi/kubernetes is loaded here (listed in this example's package.json), typed by what is used.
type K8sResource = new (
  name: string,
  args: Record<string, unknown>,
  opts?: pulumi.CustomResourceOptions,
) => pulumi.CustomResource & { metadata: pulumi.Output<{ name: string; namespace: string }> };
const k8s = require("@pulumi/kubernetes") as {
  Provider: new (name: string, args: Record<string, unknown>) => pulumi.ProviderResource;
  apps: { v1: { Deployment: K8sResource } };
};
const provider = kubeconfig || context ? new k8s.Provider("cluster", { kubeconfig, context }) : undefined;

const labels = { app: "prepulled" };
const deployment = new k8s.apps.v1.Deployment(
  "app",
  {
    metadata: { namespace: config.get("appNamespace") ?? "default" },
    spec: {
      replicas: config.getNumber("replicas") ?? 1,
      selector: { matchLabels: labels },
      template: {
        metadata: { labels },
        spec: {
          // A cluster without a pod network (like the test bed) needs hostNetwork; most don't.
          hostNetwork: config.getBoolean("hostNetwork") ?? false,
          automountServiceAccountToken: false,
          containers: [{ name: "app", image: image.pinnedRef, imagePullPolicy: "Never", command: config.getObject<string[]>("command") }],
        },
      },
    },
  },
  // The pods may start only once every node holds the image.
  { dependsOn: [prepull], ...(provider ? { provider } : {}) },
);

export const pinnedRef = image.pinnedRef;
export const nodes = prepull.nodes;
export const ready = prepull.ready;
export const total = prepull.total;
export const warnings = prepull.warnings;
export const deploymentName = deployment.metadata.name;
