// verifyMirrorUse against an in-process API server (test/support/fakekube.ts): every kind of
// container is judged by its spec image after Docker's normalisation, pages are followed,
// namespaces narrow the listing, and a kubeconfig is taken as a path or as the document. The real
// cluster runs the same code in test/integration/provider/node/mirrorUse.test.ts.
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { describeOffenders, judgeImage, parseMirror, verifyMirrorUse } from "../../../../provider/node/mirrorUse";
import type { Pod } from "../../../../provider/node/status";
import { FakeKube, pullsSucceed } from "../../../support/fakekube";
import { caught } from "../../../support/caught";

const D = `sha256:${"d".repeat(64)}`;
const MIRROR = "127.0.0.1:5001/mirror";

let kube: FakeKube;
beforeEach(async () => {
  kube = await new FakeKube(pullsSucceed).start();
});
afterEach(async () => {
  await kube.close();
});

interface PodShape {
  containers?: { name: string; image: string }[];
  initContainers?: { name: string; image: string }[];
  ephemeralContainers?: { name: string; image: string }[];
  imageIDs?: Record<string, string>;
}
function addPod(namespace: string, name: string, shape: PodShape): void {
  const statuses = (list: { name: string }[] | undefined) =>
    list?.map((c) => ({ name: c.name, ready: true, ...(shape.imageIDs?.[c.name] ? { imageID: shape.imageIDs[c.name] } : {}) }));
  const pod = {
    metadata: { name, namespace },
    spec: { containers: shape.containers ?? [], initContainers: shape.initContainers, ephemeralContainers: shape.ephemeralContainers },
    status: {
      containerStatuses: statuses(shape.containers),
      initContainerStatuses: statuses(shape.initContainers),
      ephemeralContainerStatuses: statuses(shape.ephemeralContainers),
    },
  };
  kube.pods.set(`${namespace}/${name}`, pod as unknown as Pod);
}

describe("verifyMirrorUse", () => {
  it("passes when every container, init container and ephemeral container runs from the mirror, reporting imageIDs", async () => {
    addPod("default", "web", {
      initContainers: [{ name: "setup", image: `${MIRROR}/library/busybox:1.36` }],
      containers: [{ name: "app", image: `${MIRROR}/team/app@${D}` }],
      ephemeralContainers: [{ name: "debug", image: `${MIRROR}/library/busybox:1.36` }],
      imageIDs: { app: `${MIRROR}/team/app@${D}` },
    });
    const report = await verifyMirrorUse({ mirror: MIRROR, kubeconfig: kube.kubeconfig() });
    expect(report.ok).toBe(true);
    expect(report.pods).toBe(1);
    expect(report.containers.map((c) => [c.kind, c.container, c.fromMirror])).toEqual([
      ["initContainer", "setup", true],
      ["container", "app", true],
      ["ephemeralContainer", "debug", true],
    ]);
    expect(report.containers[1]).toMatchObject({ namespace: "default", pod: "web", imageID: `${MIRROR}/team/app@${D}` });
    expect(report.containers[1]!.reason).toBeUndefined();
    expect(kube.requests).toContain("GET /api/v1/pods");
  });

  it("fails on an image from another registry, naming the pod, container and where it comes from", async () => {
    addPod("default", "ok", { containers: [{ name: "app", image: `${MIRROR}/team/app:v1` }] });
    addPod("kube-system", "dns", {
      initContainers: [{ name: "init", image: "busybox" }],
      containers: [{ name: "c", image: "quay.io/org/x:1" }],
    });
    const report = await verifyMirrorUse({ mirror: MIRROR, kubeconfig: kube.kubeconfig() });
    expect(report.ok).toBe(false);
    expect(report.pods).toBe(2);
    expect(describeOffenders(report)).toEqual([
      `kube-system/dns initContainer init: busybox: served from docker.io, not the mirror (${MIRROR})`,
      `kube-system/dns c: quay.io/org/x:1: served from quay.io, not the mirror (${MIRROR})`,
    ]);
  });

  it("requireDigest fails a mirror image pinned only by tag", async () => {
    addPod("default", "web", { containers: [{ name: "app", image: `${MIRROR}/team/app:v1` }] });
    const loose = await verifyMirrorUse({ mirror: MIRROR, kubeconfig: kube.kubeconfig() });
    expect(loose.ok).toBe(true);
    const strict = await verifyMirrorUse({ mirror: MIRROR, kubeconfig: kube.kubeconfig(), requireDigest: true });
    expect(strict.ok).toBe(false);
    expect(strict.containers[0]).toMatchObject({ fromMirror: true, reason: expect.stringMatching(/not pinned by digest/) });
  });

  it("narrows to the namespaces named, listing each on its own", async () => {
    addPod("apps", "web", { containers: [{ name: "app", image: `${MIRROR}/team/app:v1` }] });
    addPod("kube-system", "dns", { containers: [{ name: "c", image: "registry.k8s.io/coredns/coredns:v1.11.1" }] });
    const report = await verifyMirrorUse({ mirror: MIRROR, kubeconfig: kube.kubeconfig(), namespaces: ["apps"] });
    expect(report).toMatchObject({ ok: true, pods: 1 });
    expect(kube.requests).toEqual(["GET /api/v1/namespaces/apps/pods"]);
  });

  it("follows the API server's continue tokens past the first page of 500 pods", async () => {
    for (let i = 0; i < 1203; i++) addPod("default", `p${i}`, { containers: [{ name: "c", image: `${MIRROR}/a:${i}` }] });
    addPod("default", "last", { containers: [{ name: "c", image: "ghcr.io/org/b:1" }] });
    const report = await verifyMirrorUse({ mirror: MIRROR, kubeconfig: kube.kubeconfig() });
    expect(report.pods).toBe(1204);
    expect(kube.requests.filter((r) => r === "GET /api/v1/pods")).toHaveLength(3);
    expect(describeOffenders(report)).toEqual([`default/last c: ghcr.io/org/b:1: served from ghcr.io, not the mirror (${MIRROR})`]);
  });

  it("takes the kubeconfig as a file path, and the context named in it", async () => {
    const dir = mkdtempSync(join(tmpdir(), "iy-mirroruse-"));
    const path = join(dir, "config");
    const doc = JSON.parse(kube.kubeconfig()) as { contexts: { name: string }[]; "current-context": string };
    doc.contexts.push({ ...doc.contexts[0]!, name: "other" });
    doc["current-context"] = "missing";
    writeFileSync(path, JSON.stringify(doc));
    addPod("default", "web", { containers: [{ name: "app", image: `${MIRROR}/team/app:v1` }] });
    expect(await verifyMirrorUse({ mirror: MIRROR, kubeconfig: path, context: "other" })).toMatchObject({ ok: true, pods: 1 });
    expect((await caught(verifyMirrorUse({ mirror: MIRROR, kubeconfig: path }))).message).toMatch(/context "missing" not found/);
    expect((await caught(verifyMirrorUse({ mirror: MIRROR, kubeconfig: join(dir, "nope") }))).message).toMatch(/nope does not exist/);
  });

  it("rejects a missing mirror or a bad namespace before calling the cluster", async () => {
    expect((await caught(verifyMirrorUse({ mirror: [], kubeconfig: kube.kubeconfig() }))).message).toMatch(/no mirror given/);
    expect((await caught(verifyMirrorUse({ mirror: MIRROR, kubeconfig: kube.kubeconfig(), namespaces: ["Bad_NS"] }))).message).toMatch(
      /"Bad_NS" is not a namespace name/,
    );
    expect(kube.requests).toEqual([]);
  });
});

describe("judgeImage", () => {
  const mirrors = [parseMirror("127.0.0.1:5001/mirror"), parseMirror("index.docker.io/myorg")];

  it("normalises references the way the runtime does before comparing", () => {
    expect(judgeImage("127.0.0.1:5001/mirror/library/alpine", mirrors, false)).toEqual({ fromMirror: true });
    // Docker Hub's aliases and the implied docker.io/ name the same registry.
    expect(judgeImage("myorg/app:1", mirrors, false)).toEqual({ fromMirror: true });
    expect(judgeImage("registry-1.docker.io/myorg/app:1", mirrors, false)).toEqual({ fromMirror: true });
    // "alpine" is docker.io/library/alpine, outside docker.io/myorg.
    expect(judgeImage("alpine", mirrors, false).reason).toMatch(/docker.io\/library\/alpine, outside the mirror's prefix/);
  });

  it("matches the prefix by whole path components", () => {
    expect(judgeImage("127.0.0.1:5001/mirrored/app:1", mirrors, false)).toMatchObject({ fromMirror: false });
    expect(judgeImage("127.0.0.1:5001/mirror", mirrors, false)).toMatchObject({ fromMirror: true });
  });

  it("fails an image the runtime could not parse, saying so", () => {
    expect(judgeImage("Not A Ref", mirrors, false)).toMatchObject({
      fromMirror: false,
      reason: expect.stringMatching(/not an image reference/),
    });
  });

  it("parseMirror takes host[:port][/prefix], a scheme or trailing slash, and refuses a bare word", () => {
    expect(parseMirror("docker://Registry.Local:5000/a/b/")).toMatchObject({ host: "registry.local:5000", prefix: "a/b" });
    expect(parseMirror("localhost:5000")).toMatchObject({ host: "localhost:5000", prefix: "" });
    expect(() => parseMirror("mirror")).toThrow(/"mirror" is not a registry host/);
    expect(() => parseMirror("")).toThrow(/not a registry host/);
  });
});
