// MirrorWorkloads: which Kubernetes type tokens are workloads, the copy-on-write image rewrite of
// every container list, and — under Pulumi's mocks, with the transform the component registers on
// the stack — one shared MirroredImage per source image, upstream fetch hosts, exclusions, the
// workload depending on its mirrors, and bad references named by resource and property path.
import * as pulumi from "@pulumi/pulumi";
import { describe, expect, it, vi } from "vitest";
import type * as Module from "../../../components/mirrorWorkloads";
import { rewritePodImages, workloadKind } from "../../../components/mirrorWorkloads";

const D = (c: string) => `sha256:${c.repeat(64)}`;

describe("workloadKind", () => {
  it("recognises every workload kind of every API version, and patches, by type token", () => {
    expect(workloadKind("kubernetes:core/v1:Pod")).toBe("Pod");
    expect(workloadKind("kubernetes:apps/v1:Deployment")).toBe("Deployment");
    expect(workloadKind("kubernetes:apps/v1beta2:DaemonSet")).toBe("DaemonSet");
    expect(workloadKind("kubernetes:apps/v1:StatefulSetPatch")).toBe("StatefulSet");
    expect(workloadKind("kubernetes:extensions/v1beta1:ReplicaSet")).toBe("ReplicaSet");
    expect(workloadKind("kubernetes:batch/v1:Job")).toBe("Job");
    expect(workloadKind("kubernetes:batch/v1beta1:CronJob")).toBe("CronJob");
    expect(workloadKind("kubernetes:core/v1:ReplicationController")).toBe("ReplicationController");
  });

  it("ignores non-workloads, lists and other providers' tokens", () => {
    expect(workloadKind("kubernetes:core/v1:ConfigMap")).toBeUndefined();
    expect(workloadKind("kubernetes:apps/v1:DeploymentList")).toBeUndefined();
    expect(workloadKind("kubernetes:yaml/v2:ConfigGroup")).toBeUndefined();
    expect(workloadKind("pulumi-nodejs:dynamic/imageyard:MirroredImage")).toBeUndefined();
    expect(workloadKind("other:apps/v1:Deployment")).toBeUndefined();
  });
});

describe("rewritePodImages", () => {
  const cronJob = () => ({
    apiVersion: "batch/v1",
    kind: "CronJob",
    metadata: { name: "nightly", labels: { a: "b" } },
    spec: {
      schedule: "@daily",
      jobTemplate: {
        spec: {
          template: {
            spec: {
              initContainers: [{ name: "init", image: "busybox:1.36" }],
              containers: [{ name: "job", image: "quay.io/org/backup:2", args: ["x"] }, { name: "side" }],
              ephemeralContainers: [{ name: "dbg", image: "debug:1" }],
              volumes: [{ name: "v" }],
            },
          },
        },
      },
    },
  });

  it("replaces the image of every container list at the kind's pod-spec path, leaving the input untouched", () => {
    const input = cronJob();
    const snapshot = JSON.parse(JSON.stringify(input));
    const { props, changed } = rewritePodImages("CronJob", input, (s) => `m/${s.image}`);
    expect(input).toEqual(snapshot);
    const spec = (props as ReturnType<typeof cronJob>).spec.jobTemplate.spec.template.spec;
    expect(spec.initContainers[0]!.image).toBe("m/busybox:1.36");
    expect(spec.containers).toEqual([{ name: "job", image: "m/quay.io/org/backup:2", args: ["x"] }, { name: "side" }]);
    expect(spec.ephemeralContainers[0]!.image).toBe("m/debug:1");
    expect(changed.map((c) => c.path)).toEqual([
      "spec.jobTemplate.spec.template.spec.initContainers[0].image",
      "spec.jobTemplate.spec.template.spec.containers[0].image",
      "spec.jobTemplate.spec.template.spec.ephemeralContainers[0].image",
    ]);
    // Copy-on-write: what the rewrite did not touch is the caller's object.
    expect(spec.volumes).toBe(input.spec.jobTemplate.spec.template.spec.volumes);
    expect((props as ReturnType<typeof cronJob>).metadata).toBe(input.metadata);
  });

  it("returns the very input when nothing is replaced, and skips images that are not strings (unknown in a preview)", () => {
    const input = {
      spec: {
        containers: [
          { name: "a", image: pulumi.output("x") },
          { name: "b", image: "keep:1" },
        ],
      },
    };
    const { props, changed } = rewritePodImages("Pod", input, (s) => (s.image === "keep:1" ? undefined : "never"));
    expect(props).toBe(input);
    expect(changed).toEqual([]);
  });

  it("leaves a patch without a pod spec alone", () => {
    const input = { metadata: { name: "web" }, spec: { replicas: 3 } };
    expect(rewritePodImages("Deployment", input, () => "x").props).toBe(input);
  });
});

// Mocks are set once (again would forget the resources already registered); modules load after.
const registered: Array<{ type: string; name: string; inputs: Record<string, unknown> }> = [];
const transforms: pulumi.ResourceTransform[] = [];
let loaded: Promise<typeof Module> | undefined;
function mocked(): Promise<typeof Module> {
  loaded ??= (async () => {
    await pulumi.runtime.setMocks(
      {
        newResource(a) {
          registered.push({ type: a.type, name: a.name, inputs: a.inputs });
          const repo = String(a.inputs.target ?? "").replace(/:[^/:]+$/, "");
          return { id: `${a.name}-id`, state: { ...a.inputs, pinnedRef: `${repo}@${D("c")}` } };
        },
        call: () => ({}),
        registerTransform: (t) => transforms.push(t),
      },
      "project",
      "stack",
      false,
    );
    return import("../../../components/mirrorWorkloads");
  })();
  return loaded;
}

const out = <T>(o: pulumi.Input<T>) => new Promise<T>((ok) => pulumi.output(o).apply((v) => (ok(v as T), v)));
const deployment = (...images: string[]) => ({
  apiVersion: "apps/v1",
  kind: "Deployment",
  metadata: { name: "web" },
  spec: { template: { spec: { containers: images.map((image, i) => ({ name: `c${i}`, image })) } } },
});
const call = (t: pulumi.ResourceTransform, type: string, name: string, props: Record<string, unknown>, opts: pulumi.ResourceOptions = {}) =>
  t({ custom: true, type, name, props, opts }) as pulumi.ResourceTransformResult | undefined;

describe("MirrorWorkloads under mocks", () => {
  it("registers its transform on the stack, and it pins a workload's images to one shared MirroredImage per source, fetched from the upstream host", async () => {
    const { MirrorWorkloads } = await mocked();
    const before = transforms.length;
    const mw = new MirrorWorkloads("mw", {
      registry: "mirror.local:5000/m",
      upstreams: { "docker.io": "127.0.0.1:5001" },
      exclude: ["registry.k8s.io"],
    });
    // The SDK registers stack transforms with the monitor asynchronously.
    await vi.waitFor(() => expect(transforms.length).toBe(before + 1), { timeout: 10_000 });
    const t = transforms[transforms.length - 1]!;

    const res = call(t, "kubernetes:apps/v1:Deployment", "web", deployment("busybox:1.36", "docker.io/library/busybox:1.36"), {
      dependsOn: [mw],
    });
    expect([...mw.mirrors.keys()]).toEqual(["docker.io/library/busybox:1.36"]);
    const m = mw.mirrors.get("docker.io/library/busybox:1.36")!;
    const containers = (res!.props as ReturnType<typeof deployment>).spec.template.spec.containers;
    expect(await out(containers[0]!.image)).toBe(`mirror.local:5000/m/library/busybox@${D("c")}`);
    expect(await out(containers[1]!.image)).toBe(`mirror.local:5000/m/library/busybox@${D("c")}`);
    expect(res!.opts.dependsOn).toEqual([mw, m]);
    await out(m.urn);
    const child = registered.find((r) => r.name === "mw-busybox-1.36")!;
    expect(child.inputs.source).toBe("127.0.0.1:5001/library/busybox:1.36");
    expect(child.inputs.target).toBe("mirror.local:5000/m/library/busybox:1.36");
    expect(await out(m.urn)).toMatch(/imageyard:index:MirrorWorkloads\$pulumi-nodejs:dynamic\/imageyard:MirroredImage::mw-busybox-1\.36$/);

    // A second workload naming the same image reuses the child.
    const pod = call(t, "kubernetes:core/v1:Pod", "dbg", { spec: { containers: [{ name: "a", image: "busybox:1.36" }] } });
    expect(mw.mirrors.size).toBe(1);
    expect(pod!.opts.dependsOn).toEqual([m]);
  });

  it("leaves images on the mirror, excluded ones and non-workloads alone", async () => {
    const { MirrorWorkloads } = await mocked();
    const mw = new MirrorWorkloads("mw2", {
      registry: "mirror.local:5000/m",
      exclude: ["registry.k8s.io", "nginx:1.27"],
      stackTransform: false,
    });
    const t = mw.transform;
    const props = deployment(`mirror.local:5000/m/app@${D("a")}`, "registry.k8s.io/pause:3.10", "nginx:1.27");
    expect(call(t, "kubernetes:apps/v1:Deployment", "web", props)).toBeUndefined();
    expect(call(t, "kubernetes:core/v1:ConfigMap", "cm", { data: { image: "busybox:1" } })).toBeUndefined();
    expect(
      t({ custom: false, type: "kubernetes:apps/v1:Deployment", name: "c", props: deployment("busybox:1"), opts: {} }),
    ).toBeUndefined();
    expect(mw.mirrors.size).toBe(0);
  });

  it("fails on a bad image reference naming the workload and the property path, and on a bad registry", async () => {
    const { MirrorWorkloads } = await mocked();
    const mw = new MirrorWorkloads("mw3", { registry: "mirror.local:5000", stackTransform: false });
    expect(() => call(mw.transform, "kubernetes:apps/v1:Deployment", "web", deployment("ok:1", "Bad Ref!"))).toThrow(
      /MirrorWorkloads: Deployment\/web spec\.template\.spec\.containers\[1\]\.image: /,
    );
    expect(() => new MirrorWorkloads("mw4", { registry: "", stackTransform: false })).toThrow(/MirrorWorkloads: registry: /);
    expect(() => new MirrorWorkloads("mw5", { registry: "m:5000", upstreams: { "docker.io": "a b" }, stackTransform: false })).toThrow(
      /MirrorWorkloads: upstreams\.docker\.io: /,
    );
  });
});
