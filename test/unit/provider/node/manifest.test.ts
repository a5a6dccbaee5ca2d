// The DaemonSet and Secrets a PrePullSet applies, built as data: what the kubelet and the agent
// will see on every node.
import { describe, expect, it } from "vitest";
import {
  buildAuthSecret,
  buildDaemonSet,
  buildPullSecret,
  imagesHash,
  socketMount,
  type SetSpec,
} from "../../../../provider/node/manifest";

const D1 = `sha256:${"1".repeat(64)}`;
const D2 = `sha256:${"2".repeat(64)}`;
const AGENT = `127.0.0.1:5000/imageyard/prepull-agent@sha256:${"a".repeat(64)}`;

function spec(over: Partial<SetSpec> = {}): SetSpec {
  return {
    name: "core",
    namespace: "kube-system",
    agentImage: AGENT,
    containerdSocket: "/run/containerd/containerd.sock",
    pin: false,
    images: [
      {
        key: "127.0.0.1:5000/busybox:1.35",
        pullRef: `127.0.0.1:5000/busybox@${D1}`,
        digest: D1,
        retagAs: ["registry.k8s.io/busybox:1.35"],
        tag: "127.0.0.1:5000/busybox:1.35",
      },
      {
        key: "127.0.0.1:5001/private/app:v1",
        pullRef: `127.0.0.1:5001/private/app@${D2}`,
        digest: D2,
        retagAs: [],
        auth: true,
        platform: "linux/arm64",
      },
    ],
    authSecret: "core-auth",
    ...over,
  };
}

type Pod = {
  hostNetwork: boolean;
  tolerations: unknown[];
  nodeSelector?: unknown;
  imagePullSecrets?: { name: string }[];
  initContainers?: Record<string, any>[];
  containers: Record<string, any>[];
  volumes: Record<string, any>[];
};
const podOf = (s: SetSpec) => (buildDaemonSet(s).spec as { template: { spec: Pod } }).template.spec;

describe("buildDaemonSet", () => {
  it("runs only the agent, which pulls every image itself: no image runs as a container, so none is pulled by the kubelet", () => {
    const pod = podOf(spec());
    expect(pod.initContainers).toBeUndefined();
    expect(pod.containers.map((c) => [c.name, c.image, c.command])).toEqual([["agent", AGENT, ["/agent", "serve"]]]);
  });

  it("runs on the host network and on every node, tainted control-plane included, unless told otherwise", () => {
    const pod = podOf(spec());
    expect(pod.hostNetwork).toBe(true);
    expect(pod.tolerations).toEqual([{ operator: "Exists" }]);
    expect(pod.nodeSelector).toBeUndefined();
    const narrowed = podOf(spec({ nodeSelector: { pool: "gpu" }, tolerations: [] }));
    expect(narrowed.nodeSelector).toEqual({ pool: "gpu" });
    expect(narrowed.tolerations).toEqual([]);
  });

  it("hands the agent the images' credentials as a mounted Secret, never in its environment or arguments", () => {
    const pod = podOf(spec());
    const agent = pod.containers[0]!;
    expect(pod.volumes).toContainEqual({ name: "auth", secret: { secretName: "core-auth", defaultMode: 0o400 } });
    expect(agent.volumeMounts).toContainEqual({ name: "auth", mountPath: "/run/imageyard/auth", readOnly: true });
    expect(agent.env).toContainEqual({ name: "IMAGEYARD_AUTH_FILE", value: "/run/imageyard/auth/auth.json" });
    // the kubelet needs credentials only for the agent image itself
    expect(pod.imagePullSecrets).toBeUndefined();
    expect(podOf(spec({ agentPullSecret: "core-pull-agent" })).imagePullSecrets).toEqual([{ name: "core-pull-agent" }]);
    const { authSecret: _none, ...noAuth } = spec();
    expect(podOf(noAuth).volumes.map((v) => v.name)).toEqual(["containerd"]);
  });

  it("gives the agent its images (the tag and retag names, platform, pin) as JSON, the socket and the node name", () => {
    const agent = podOf(spec({ pin: true })).containers[0]!;
    const env = Object.fromEntries(agent.env.map((e: { name: string; value?: string }) => [e.name, e.value]));
    expect(JSON.parse(env.IMAGEYARD_IMAGES)).toEqual([
      { ref: `127.0.0.1:5000/busybox@${D1}`, names: ["127.0.0.1:5000/busybox:1.35", "registry.k8s.io/busybox:1.35"], pin: true },
      { ref: `127.0.0.1:5001/private/app@${D2}`, platform: "linux/arm64", pin: true },
    ]);
    expect(env.IMAGEYARD_IMAGES).not.toMatch(/password|username/);
    expect(env.CONTAINERD_SOCKET).toBe("/run/imageyard/containerd/containerd.sock");
    expect(agent.env[0]).toEqual({ name: "NODE_NAME", valueFrom: { fieldRef: { fieldPath: "spec.nodeName" } } });
    expect(agent.readinessProbe.exec.command).toEqual(["/agent", "check"]);
  });

  it("marks archive images, which the agent imports when the provider streams them in", () => {
    const s = spec();
    s.images.push({ key: "docker-archive:/srv/app.tar", pullRef: "registry.local/app:v1", digest: D1, retagAs: [], archive: true });
    const env = podOf(s).containers[0]!.env.find((e: { name: string }) => e.name === "IMAGEYARD_IMAGES").value;
    expect(JSON.parse(env)[2]).toEqual({ ref: "registry.local/app:v1", archive: true });
  });

  it("changes the pod template's hash exactly when what the nodes must hold changes", () => {
    const a = imagesHash(spec());
    expect(imagesHash(spec())).toBe(a);
    const moved = spec();
    moved.images[0] = { ...moved.images[0]!, pullRef: `127.0.0.1:5000/busybox@${D2}`, digest: D2 };
    expect(imagesHash(moved)).not.toBe(a);
    expect(imagesHash(spec({ nodeSelector: { a: "b" } }))).toBe(a);
  });
});

describe("socketMount", () => {
  it("mounts the socket's folder when the path is fixed", () => {
    expect(socketMount("/run/k3s/containerd/containerd.sock")).toEqual({
      hostPath: "/run/k3s/containerd",
      agentSocket: "/run/imageyard/containerd/containerd.sock",
    });
  });
  it("turns ${NODE_NAME} into a subPathExpr under the last fixed folder", () => {
    expect(socketMount("/var/lib/bed/${NODE_NAME}/containerd.sock")).toEqual({
      hostPath: "/var/lib/bed",
      subPathExpr: "$(NODE_NAME)",
      agentSocket: "/run/imageyard/containerd/containerd.sock",
    });
    expect(socketMount("/srv/nodes/${NODE_NAME}/run/containerd.sock").subPathExpr).toBe("$(NODE_NAME)/run");
  });
});

describe("buildAuthSecret", () => {
  it("is an Opaque Secret mapping each pull reference to its credentials, under the key the agent reads", () => {
    const s = buildAuthSecret("kube-system", "core-auth", "core", { "r/app@sha256:1": { username: "u", password: "p" } });
    expect(s).toMatchObject({ type: "Opaque", metadata: { name: "core-auth", labels: { "imageyard.dev/prepullset": "core" } } });
    expect(JSON.parse(Buffer.from(s.data["auth.json"]!, "base64").toString())).toEqual({
      "r/app@sha256:1": { username: "u", password: "p" },
    });
  });
});

describe("buildPullSecret", () => {
  it("is a kubernetes.io/dockerconfigjson Secret with the credentials in docker's auths shape", () => {
    const s = buildPullSecret("kube-system", "core-pull-agent", "core", [
      { registry: "127.0.0.1:5001", username: "puller", password: "s3cret" },
    ]);
    expect(s.type).toBe("kubernetes.io/dockerconfigjson");
    expect(s.metadata.labels?.["imageyard.dev/prepullset"]).toBe("core");
    const doc = JSON.parse(Buffer.from(s.data[".dockerconfigjson"]!, "base64").toString());
    expect(doc.auths["127.0.0.1:5001"]).toEqual({
      username: "puller",
      password: "s3cret",
      auth: Buffer.from("puller:s3cret").toString("base64"),
    });
  });
});
