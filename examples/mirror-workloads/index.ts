// Kubernetes workloads written the way upstream documents them (`docker.io/library/busybox:1.36`),
// run from your mirror by digest: MirrorWorkloads is a stack transform that copies each image a
// workload names into the mirror (one MirroredImage per image, shared) and rewrites the workload to
// `mirror/library/busybox@sha256:…` before it reaches the cluster. Optionally also an image built
// from a tar file (ImageFromTar, straight into the mirror) run once as a Job.
//
//   pulumi config set registry registry.internal:5000/mirror        # the mirror (repository paths kept under it)
//   pulumi config set mirrorUsername robot; pulumi config set --secret mirrorPassword …   # optional
//   pulumi config set image docker.io/library/busybox:1.36
//   pulumi config set --path 'command[0]' /bin/sleep; pulumi config set --path 'command[1]' 3600
//   pulumi config set tar ./hello.tar; pulumi config set --path 'tarCmd[0]' /hello      # optional
//   pulumi up
//   imageyard verify-mirror-use --mirror registry.internal:5000/mirror   # every pod runs from the mirror
//
// The cluster is the one kubectl uses (KUBECONFIG, ~/.kube/config; `kubeconfig`/`context` config
// override it). The nodes must be able to pull from the mirror.
import * as pulumi from "@pulumi/pulumi";
// In a project of your own: import { ImageFromTar, MirrorWorkloads } from "imageyard";
import { ImageFromTar, MirrorWorkloads } from "../../index";

const config = new pulumi.Config();
const registry = config.require("registry");
const mirrorUser = config.get("mirrorUsername");
const targetAuth = mirrorUser ? { username: mirrorUser, password: config.requireSecret("mirrorPassword") } : undefined;
const kubeconfig = config.getSecret("kubeconfig");
const context = config.get("context");

// First, so that its transform sees every workload below (and those inside components).
new MirrorWorkloads("mirror", {
  registry,
  // Fetch a registry's images from elsewhere, e.g. { "docker.io": "dockerhub-cache.internal:5000" }.
  upstreams: config.getObject<Record<string, string>>("upstreams"),
  exclude: config.getObject<string[]>("exclude"),
  targetAuth,
});

// @pulumi/kubernetes is loaded here (listed in this example's package.json), typed by what is used.
interface ContainerOut {
  name: string;
  image: string;
}
interface PodSpecOut {
  initContainers?: ContainerOut[];
  containers: ContainerOut[];
}
type K8sResource<Spec> = new (
  name: string,
  args: Record<string, unknown>,
  opts?: pulumi.CustomResourceOptions,
) => pulumi.CustomResource & { metadata: pulumi.Output<{ name: string; namespace: string }>; spec: pulumi.Output<Spec> };
const k8s = require("@pulumi/kubernetes") as {
  Provider: new (name: string, args: Record<string, unknown>) => pulumi.ProviderResource;
  core: { v1: { Namespace: K8sResource<unknown> } };
  apps: { v1: { Deployment: K8sResource<{ template: { spec: PodSpecOut } }> } };
  batch: { v1: { Job: K8sResource<{ template: { spec: PodSpecOut } }> } };
  yaml: {
    v2: { ConfigGroup: new (name: string, args: { yaml: string }, opts?: pulumi.ComponentResourceOptions) => pulumi.ComponentResource };
  };
};
// renderYamlToDirectory writes the manifests to files instead of applying them: a way to see what
// the transform hands the cluster without one.
const renderYamlToDirectory = config.get("renderYamlToDirectory");
const provider =
  kubeconfig || context || renderYamlToDirectory ? new k8s.Provider("cluster", { kubeconfig, context, renderYamlToDirectory }) : undefined;
const withProvider = (o: pulumi.CustomResourceOptions = {}): pulumi.CustomResourceOptions => (provider ? { ...o, provider } : o);

const nsName = config.get("namespace");
const ns = nsName ? new k8s.core.v1.Namespace("ns", { metadata: { name: nsName } }, withProvider()) : undefined;
const namespace = ns ? ns.metadata.name : "default";
// A cluster without a pod network (like the test bed) needs hostNetwork; most don't.
const hostNetwork = config.getBoolean("hostNetwork") ?? false;

const labels = { app: "mirrored" };
const initImage = config.get("initImage");
const deployment = new k8s.apps.v1.Deployment(
  "app",
  {
    metadata: { namespace },
    spec: {
      replicas: config.getNumber("replicas") ?? 1,
      selector: { matchLabels: labels },
      template: {
        metadata: { labels },
        spec: {
          hostNetwork,
          automountServiceAccountToken: false,
          initContainers: initImage ? [{ name: "init", image: initImage }] : [],
          containers: [{ name: "app", image: config.require("image"), command: config.getObject<string[]>("command") }],
        },
      },
    },
  },
  withProvider(),
);

// Plain Kubernetes YAML (say `helm template` output): the provider registers its objects, and
// the engine runs the transform on them too.
const manifests = config.get("manifests");
if (manifests) new k8s.yaml.v2.ConfigGroup("manifests", { yaml: manifests }, provider ? { providers: [provider] } : undefined);

const images = (spec: PodSpecOut) => [...(spec.initContainers ?? []), ...spec.containers].map((c) => c.image);
export const deploymentName = deployment.metadata.name;
export const appNamespace = namespace;
/** The Deployment's images as the cluster got them: the mirror's `…@sha256:…`. */
export const deploymentImages = deployment.spec.apply((s) => images(s.template.spec));

// FROM scratch + ADD tar / + CMD, pushed straight into the mirror (so the transform leaves it be),
// run once to completion.
const tar = config.get("tar");
const built = tar
  ? new ImageFromTar("tool", {
      source: tar,
      target: `${registry}/${config.get("tarImage") ?? "tools/hello:latest"}`,
      cmd: config.getObject<string[]>("tarCmd"),
      targetAuth,
    })
  : undefined;
const job = built
  ? new k8s.batch.v1.Job(
      "tool",
      {
        metadata: { namespace },
        spec: {
          backoffLimit: 0,
          template: {
            spec: {
              hostNetwork,
              automountServiceAccountToken: false,
              restartPolicy: "Never",
              containers: [{ name: "tool", image: built.pinnedRef }],
            },
          },
        },
      },
      withProvider(),
    )
  : undefined;
export const toolImage = built?.pinnedRef;
export const jobName = job?.metadata.name;
export const mirrorRegistry = registry;
