// The DaemonSet and Secret a PrePullSet applies, built as data: what the kubelet and the agent
// will see on every node.
import { describe, expect, it } from "vitest";
import { buildDaemonSet, buildPullSecret, imagesHash, socketMount, type SetSpec } from "../../../../provider/node/manifest";

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
      },
      { key: "127.0.0.1:5001/private/app:v1", pullRef: `127.0.0.1:5001/private/app@${D2}`, digest: D2, retagAs: [], secret: "core-pull-0" },
    ],
    ...over,
  };
}

type Pod = {
  hostNetwork: boolean;
  tolerations: unknown[];
  nodeSelector?: unknown;
  imagePullSecrets?: { name: string }[];
  initContainers: Record<string, any>[];
  containers: Record<string, any>[];
  volumes: Record<string, any>[];
};
const podOf = (s: SetSpec) => (buildDaemonSet(s).spec as { template: { spec: Pod } }).template.spec;

describe("buildDaemonSet", () => {
  it("pulls each image by digest in its own init container that runs the agent's no-op, after the agent is installed", () => {
    const pod = podOf(spec());
    expect(pod.initContainers.map((c) => c.name)).toEqual(["install-agent", "image-0", "image-1"]);
    expect(pod.initContainers[0]).toMatchObject({ image: AGENT, command: ["/agent", "install", "/.imageyard"] });
    expect(pod.initContainers[1]).toMatchObject({
      image: `127.0.0.1:5000/busybox@${D1}`,
      imagePullPolicy: "IfNotPresent",
      command: ["/.imageyard/agent", "pulled"],
    });
    // numeric user: shell-less images without /etc/passwd still start the no-op
    expect(pod.initContainers[1]!.securityContext.runAsUser).toBe(65534);
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

  it("passes credentials the kubelet's way: imagePullSecrets naming the set's Secrets", () => {
    expect(podOf(spec()).imagePullSecrets).toEqual([{ name: "core-pull-0" }]);
    expect(podOf(spec({ images: [spec().images[0]!] })).imagePullSecrets).toBeUndefined();
  });

  it("gives the agent its images, retag names and pin as JSON, the socket and the node name", () => {
    const agent = podOf(spec({ pin: true })).containers[0]!;
    const env = Object.fromEntries(agent.env.map((e: { name: string; value?: string }) => [e.name, e.value]));
    expect(JSON.parse(env.IMAGEYARD_IMAGES)).toEqual([
      { ref: `127.0.0.1:5000/busybox@${D1}`, retagAs: ["registry.k8s.io/busybox:1.35"], pin: true },
      { ref: `127.0.0.1:5001/private/app@${D2}`, pin: true },
    ]);
    expect(env.CONTAINERD_SOCKET).toBe("/run/imageyard/containerd/containerd.sock");
    expect(agent.env[0]).toEqual({ name: "NODE_NAME", valueFrom: { fieldRef: { fieldPath: "spec.nodeName" } } });
    expect(agent.readinessProbe.exec.command).toEqual(["/agent", "check"]);
  });

  it("imports archive images through the agent instead of an init container", () => {
    const s = spec();
    s.images.push({ key: "docker-archive:/srv/app.tar", pullRef: "registry.local/app:v1", digest: D1, retagAs: [], archive: true });
    const pod = podOf(s);
    expect(pod.initContainers.map((c) => c.name)).toEqual(["install-agent", "image-0", "image-1"]);
    const env = pod.containers[0]!.env.find((e: { name: string }) => e.name === "IMAGEYARD_IMAGES").value;
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

describe("buildPullSecret", () => {
  it("is a kubernetes.io/dockerconfigjson Secret with the credentials in docker's auths shape", () => {
    const s = buildPullSecret("kube-system", "core-pull-0", "core", [
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
