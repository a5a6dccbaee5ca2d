// The Kubernetes objects of a PrePullSet, built as plain data: one DaemonSet whose agent pulls every
// image into its node's containerd itself (not the kubelet: kubelet >= 1.35 would verify pull
// credentials per name for images it pulled, refusing retag names to pull-policy-Never pods), an
// Opaque Secret with the images' credentials mounted into the agent (never in env, args or logs),
// and a dockerconfigjson Secret for the agent image's own registry when it needs credentials.
import { createHash } from "node:crypto";
import { posix } from "node:path";
import type { KubeObject } from "./kube";

export const LABEL_SET = "imageyard.dev/prepullset";
export const LABEL_MANAGED = "app.kubernetes.io/managed-by";
export const ANNOTATION_IMAGES = "imageyard.dev/images";
/** The agent binary's path inside the agent image. */
export const AGENT_BINARY = "/agent";
/** Where the containerd socket's host folder is mounted in the agent container. */
const SOCKET_MOUNT = "/run/imageyard/containerd";
/** Where the credentials Secret is mounted in the agent container, and its one key. */
const AUTH_MOUNT = "/run/imageyard/auth";
export const AUTH_KEY = "auth.json";
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
  /** The tagged name the user wrote (registry/repo:tag): the nodes answer to it too, as after `crictl pull`. */
  tag?: string;
  /** "linux/arm64": the agent pulls this platform's manifest, whatever the node's. */
  platform?: string;
  /** The set's credentials Secret holds this image's. */
  auth?: boolean;
  /** Imported through the agent from a tarball rather than pulled. */
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
  /** Secret for the agent image's own registry (the kubelet pulls the agent image). */
  agentPullSecret?: string;
  /** The Opaque Secret with the images' credentials, mounted into the agent. */
  authSecret?: string;
}

export const DEFAULT_TOLERATIONS: Toleration[] = [{ operator: "Exists" }];
export const DEFAULT_SOCKET = "/run/containerd/containerd.sock";

/** Name of the Secret with a set's image credentials. */
export function authSecretName(set: string): string {
  return `${set}-auth`;
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

/** Every name an image answers to on the nodes besides its pull reference. */
export function namesOf(img: NodeImage): string[] {
  return [...new Set([...(img.tag && img.tag !== img.pullRef ? [img.tag] : []), ...img.retagAs])];
}

export interface AgentImage {
  ref: string;
  names?: string[];
  platform?: string;
  pin?: boolean;
  archive?: boolean;
}

/** What the agent reads from IMAGEYARD_IMAGES (no credentials: those come from the mounted Secret). */
export function agentImages(spec: SetSpec): AgentImage[] {
  return spec.images.map((img) => {
    const names = namesOf(img);
    return {
      ref: img.pullRef,
      ...(names.length ? { names } : {}),
      ...(img.platform ? { platform: img.platform } : {}),
      ...(spec.pin ? { pin: true } : {}),
      ...(img.archive ? { archive: true } : {}),
    };
  });
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
  const socketVolumeMount: Record<string, unknown> = { name: "containerd", mountPath: SOCKET_MOUNT };
  if (mount.subPathExpr) socketVolumeMount.subPathExpr = mount.subPathExpr;
  const env = [
    { name: "NODE_NAME", valueFrom: { fieldRef: { fieldPath: "spec.nodeName" } } },
    { name: "CONTAINERD_SOCKET", value: mount.agentSocket },
    { name: "IMAGEYARD_IMAGES", value: JSON.stringify(agentImages(spec)) },
    ...(spec.authSecret ? [{ name: "IMAGEYARD_AUTH_FILE", value: posix.join(AUTH_MOUNT, AUTH_KEY) }] : []),
  ];
  const hash = imagesHash(spec);
  const probe = { exec: { command: [AGENT_BINARY, "check"] }, timeoutSeconds: 15 };
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
          // The agent pulls from where the node's containerd pulls (host network, the node's DNS),
          // and works before or without a pod network.
          hostNetwork: true,
          dnsPolicy: "Default",
          automountServiceAccountToken: false,
          enableServiceLinks: false,
          terminationGracePeriodSeconds: 5,
          tolerations: spec.tolerations ?? DEFAULT_TOLERATIONS,
          ...(spec.nodeSelector && Object.keys(spec.nodeSelector).length ? { nodeSelector: spec.nodeSelector } : {}),
          ...(spec.agentPullSecret ? { imagePullSecrets: [{ name: spec.agentPullSecret }] } : {}),
          volumes: [
            { name: "containerd", hostPath: { path: mount.hostPath, type: "Directory" } },
            ...(spec.authSecret ? [{ name: "auth", secret: { secretName: spec.authSecret, defaultMode: 0o400 } }] : []),
          ],
          containers: [
            {
              name: AGENT_CONTAINER,
              image: spec.agentImage,
              imagePullPolicy: "IfNotPresent",
              command: [AGENT_BINARY, "serve"],
              env,
              volumeMounts: [socketVolumeMount, ...(spec.authSecret ? [{ name: "auth", mountPath: AUTH_MOUNT, readOnly: true }] : [])],
              // Root for the containerd socket; nothing else is granted.
              securityContext: { runAsUser: 0, allowPrivilegeEscalation: false },
              // Startup: checked every second, so a node counts as ready as soon as the agent is done
              // (a pull may take long: no restart for that); then every 10 s, so a name removed from
              // the runtime shows in read.
              startupProbe: { ...probe, periodSeconds: 1, failureThreshold: 86_400 },
              readinessProbe: { ...probe, periodSeconds: 10, failureThreshold: 1, successThreshold: 1 },
              resources: { requests: { cpu: "5m", memory: "16Mi" }, limits: { memory: "256Mi" } },
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

/** The Opaque Secret the agent reads its image credentials from: pull reference → credentials. */
export function buildAuthSecret(
  namespace: string,
  name: string,
  set: string,
  credentials: Record<string, { username: string; password: string }>,
): KubeObject & { type: string; data: Record<string, string> } {
  return {
    apiVersion: "v1",
    kind: "Secret",
    metadata: { name, namespace, labels: setLabels(set) },
    type: "Opaque",
    data: { [AUTH_KEY]: Buffer.from(JSON.stringify(credentials)).toString("base64") },
  };
}
