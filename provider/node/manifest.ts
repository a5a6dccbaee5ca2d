// The Kubernetes objects of a PrePullSet, built as plain data: one DaemonSet (the kubelet pulls
// each image as an init container that runs the agent's no-op, so shell-less images work; the
// agent then retags, pins and answers the readiness probe) and one dockerconfigjson Secret per
// image that has credentials, so they travel the kubelet's normal way.
import { createHash } from "node:crypto";
import { posix } from "node:path";
import type { KubeObject } from "./kube";

export const LABEL_SET = "imageyard.dev/prepullset";
export const LABEL_MANAGED = "app.kubernetes.io/managed-by";
export const ANNOTATION_IMAGES = "imageyard.dev/images";
/** Where the emptyDir with the agent binary is mounted in every container. */
export const AGENT_DIR = "/.imageyard";
/** The agent binary's path inside the agent image. */
export const AGENT_BINARY = "/agent";
/** Where the containerd socket's host folder is mounted in the agent container. */
const SOCKET_MOUNT = "/run/imageyard/containerd";
export const INSTALL_CONTAINER = "install-agent";
export const AGENT_CONTAINER = "agent";

export interface Toleration {
  key?: string;
  operator?: "Exists" | "Equal";
  value?: string;
  effect?: "NoSchedule" | "PreferNoSchedule" | "NoExecute" | "";
  tolerationSeconds?: number;
}

/** One image as the nodes get it. */
export interface NodeImage {
  /** What the user wrote, normalised: the key of outputs. */
  key: string;
  /** repository@sha256:… for registry images; the archive's first name for tarballs. */
  pullRef: string;
  /** The digest the nodes must hold (manifest or index digest). */
  digest: string;
  retagAs: string[];
  /** Index into the set's pull Secrets, when this image has credentials. */
  secret?: string;
  /** Imported through the agent rather than pulled by the kubelet. */
  archive?: boolean;
}

export interface SetSpec {
  name: string;
  namespace: string;
  images: NodeImage[];
  /** repository@sha256:… of the agent image, pullable by every node. */
  agentImage: string;
  /** Host path of containerd's socket; may contain ${NODE_NAME}. */
  containerdSocket: string;
  nodeSelector?: Record<string, string>;
  tolerations?: Toleration[];
  pin: boolean;
  /** Nodes re-pulling at once when the set changes (DaemonSet maxUnavailable). */
  parallelism?: number | string;
  /** Secret for the agent image's own registry. */
  agentPullSecret?: string;
}

export const DEFAULT_TOLERATIONS: Toleration[] = [{ operator: "Exists" }];
export const DEFAULT_SOCKET = "/run/containerd/containerd.sock";

export function initContainerName(i: number): string {
  return `image-${i}`;
}

/** Secret name for the i-th set of credentials. */
export function secretName(set: string, i: number): string {
  return `${set}-pull-${i}`;
}

function selectorLabels(name: string): Record<string, string> {
  return { [LABEL_SET]: name };
}

export function setLabels(name: string): Record<string, string> {
  return { ...selectorLabels(name), [LABEL_MANAGED]: "imageyard", "app.kubernetes.io/name": "imageyard-prepull" };
}

/**
 * Splits a host socket path into the volume to mount and the path the agent dials. ${NODE_NAME}
 * becomes a subPathExpr, so one DaemonSet serves nodes whose sockets live under per-node folders.
 */
export function socketMount(socket: string): { hostPath: string; subPathExpr?: string; agentSocket: string } {
  const dir = posix.dirname(socket);
  const base = posix.basename(socket);
  const at = dir.indexOf("${NODE_NAME}");
  if (at < 0) return { hostPath: dir, agentSocket: posix.join(SOCKET_MOUNT, base) };
  const parent = dir.slice(0, dir.lastIndexOf("/", at)) || "/";
  const rest = posix.relative(parent, dir).replaceAll("${NODE_NAME}", "$(NODE_NAME)");
  return { hostPath: parent, subPathExpr: rest, agentSocket: posix.join(SOCKET_MOUNT, base) };
}

/** What the agent reads from IMAGEYARD_IMAGES. */
export function agentImages(spec: SetSpec): { ref: string; retagAs?: string[]; pin?: boolean; archive?: boolean }[] {
  return spec.images.map((img) => ({
    ref: img.pullRef,
    ...(img.retagAs.length ? { retagAs: img.retagAs } : {}),
    ...(spec.pin ? { pin: true } : {}),
    ...(img.archive ? { archive: true } : {}),
  }));
}

/** A stable hash of what the nodes must hold: pods are replaced exactly when it changes. */
export function imagesHash(spec: SetSpec): string {
  return createHash("sha256")
    .update(JSON.stringify([agentImages(spec), spec.agentImage]))
    .digest("hex")
    .slice(0, 16);
}

export function buildDaemonSet(spec: SetSpec): KubeObject & { spec: unknown } {
  const mount = socketMount(spec.containerdSocket);
  const agentVolume = { name: "agent", mountPath: AGENT_DIR };
  const pulls = spec.images
    .map((img, i) => ({ img, i }))
    .filter(({ img }) => !img.archive)
    .map(({ img, i }) => ({
      name: initContainerName(i),
      image: img.pullRef,
      imagePullPolicy: "IfNotPresent",
      command: [`${AGENT_DIR}/agent`, "pulled"],
      volumeMounts: [{ ...agentVolume, readOnly: true }],
      // Numeric ids need no /etc/passwd: scratch and distroless images run the no-op as they are.
      securityContext: { runAsUser: 65534, runAsGroup: 65534, allowPrivilegeEscalation: false },
      resources: { requests: { cpu: "1m", memory: "8Mi" }, limits: { memory: "32Mi" } },
      terminationMessagePolicy: "FallbackToLogsOnError",
    }));
  const secrets = [
    ...new Set(spec.images.map((i) => i.secret).filter((s): s is string => !!s)),
    ...(spec.agentPullSecret ? [spec.agentPullSecret] : []),
  ];
  const socketVolumeMount: Record<string, unknown> = { name: "containerd", mountPath: SOCKET_MOUNT };
  if (mount.subPathExpr) socketVolumeMount.subPathExpr = mount.subPathExpr;
  const env = [
    { name: "NODE_NAME", valueFrom: { fieldRef: { fieldPath: "spec.nodeName" } } },
    { name: "CONTAINERD_SOCKET", value: mount.agentSocket },
    { name: "IMAGEYARD_IMAGES", value: JSON.stringify(agentImages(spec)) },
  ];
  const hash = imagesHash(spec);
  return {
    apiVersion: "apps/v1",
    kind: "DaemonSet",
    metadata: { name: spec.name, namespace: spec.namespace, labels: setLabels(spec.name), annotations: { [ANNOTATION_IMAGES]: hash } },
    spec: {
      selector: { matchLabels: selectorLabels(spec.name) },
      updateStrategy: { type: "RollingUpdate", rollingUpdate: { maxUnavailable: spec.parallelism ?? "100%" } },
      template: {
        metadata: { labels: setLabels(spec.name), annotations: { [ANNOTATION_IMAGES]: hash } },
        spec: {
          // No pod network needed (the agent listens on nothing): works before or without CNI.
          hostNetwork: true,
          dnsPolicy: "ClusterFirstWithHostNet",
          automountServiceAccountToken: false,
          enableServiceLinks: false,
          terminationGracePeriodSeconds: 5,
          tolerations: spec.tolerations ?? DEFAULT_TOLERATIONS,
          ...(spec.nodeSelector && Object.keys(spec.nodeSelector).length ? { nodeSelector: spec.nodeSelector } : {}),
          ...(secrets.length ? { imagePullSecrets: secrets.map((name) => ({ name })) } : {}),
          volumes: [
            { name: "agent", emptyDir: { sizeLimit: "64Mi" } },
            { name: "containerd", hostPath: { path: mount.hostPath, type: "Directory" } },
          ],
          initContainers: [
            {
              name: INSTALL_CONTAINER,
              image: spec.agentImage,
              imagePullPolicy: "IfNotPresent",
              command: [AGENT_BINARY, "install", AGENT_DIR],
              volumeMounts: [agentVolume],
              resources: { requests: { cpu: "1m", memory: "8Mi" }, limits: { memory: "64Mi" } },
            },
            ...pulls,
          ],
          containers: [
            {
              name: AGENT_CONTAINER,
              image: spec.agentImage,
              imagePullPolicy: "IfNotPresent",
              command: [AGENT_BINARY, "serve"],
              env,
              volumeMounts: [socketVolumeMount],
              // Root for the containerd socket; nothing else is granted.
              securityContext: { runAsUser: 0, allowPrivilegeEscalation: false },
              // Startup: checked every second, so a node counts as ready as soon as the agent is done;
              // then every 10 s, so a name removed from the runtime shows in read.
              startupProbe: { exec: { command: [AGENT_BINARY, "check"] }, periodSeconds: 1, timeoutSeconds: 15, failureThreshold: 600 },
              readinessProbe: {
                exec: { command: [AGENT_BINARY, "check"] },
                periodSeconds: 10,
                timeoutSeconds: 15,
                failureThreshold: 1,
                successThreshold: 1,
              },
              resources: { requests: { cpu: "5m", memory: "16Mi" }, limits: { memory: "128Mi" } },
              terminationMessagePolicy: "FallbackToLogsOnError",
            },
          ],
        },
      },
    },
  };
}

export interface DockerAuth {
  registry: string;
  username: string;
  password: string;
}

/** A kubernetes.io/dockerconfigjson Secret (the kubelet's own format for imagePullSecrets). */
export function buildPullSecret(
  namespace: string,
  name: string,
  set: string,
  auths: DockerAuth[],
): KubeObject & { type: string; data: Record<string, string> } {
  const doc = {
    auths: Object.fromEntries(
      auths.map((a) => [
        a.registry,
        { username: a.username, password: a.password, auth: Buffer.from(`${a.username}:${a.password}`).toString("base64") },
      ]),
    ),
  };
  return {
    apiVersion: "v1",
    kind: "Secret",
    metadata: { name, namespace, labels: setLabels(set) },
    type: "kubernetes.io/dockerconfigjson",
    data: { ".dockerconfigjson": Buffer.from(JSON.stringify(doc)).toString("base64") },
  };
}
