// RegistryPreload: images collected from Kubernetes YAML (every workload kind and container list,
// multi-document files, directories, Helm output), bad YAML named by file and document, and the
// component's children under Pulumi's mocks.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as pulumi from "@pulumi/pulumi";
import { afterAll, describe, expect, it } from "vitest";
import type * as Module from "../../../components/registryPreload";
import { collectWorkloadImages } from "../../../components/workloadImages";

const dir = mkdtempSync(join(tmpdir(), "iy-preload-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const APP = `apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  template:
    spec:
      initContainers: [{name: init, image: busybox:1.36}]
      containers: [{name: web, image: nginx:1.27}, {name: side, image: "ghcr.io/org/sidecar@sha256:${"a".repeat(64)}"}]
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: nightly}
spec: {jobTemplate: {spec: {template: {spec: {containers: [{name: job, image: "quay.io/org/backup:2"}]}}}}}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: not-a-workload}
data: {image: "ignored:1"}
`;
const MORE = `apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: Pod, metadata: {name: dbg}, spec: {containers: [{name: a, image: nginx:1.27}], ephemeralContainers: [{name: e, image: "debug:1"}]}}
- {apiVersion: apps/v1, kind: DaemonSet, metadata: {name: ds}, spec: {template: {spec: {containers: [{name: n, image: "registry.k8s.io/kube-proxy:v1.31.0"}]}}}}
- {apiVersion: apps/v1, kind: StatefulSet, metadata: {name: db}, spec: {template: {spec: {containers: [{name: db, image: "localhost:5000/db:1"}]}}}}
`;
const HELM = `# Source: chart/templates/job.yaml
apiVersion: batch/v1
kind: Job
metadata: {name: migrate}
spec: {template: {spec: {containers: [{name: m, image: "migrate:3"}]}}}
`;

describe("collecting images from Kubernetes YAML", () => {
  it("finds containers, initContainers and ephemeralContainers of every workload kind across files, directories, Lists and Helm output", () => {
    mkdirSync(join(dir, "deploy", "more"), { recursive: true });
    writeFileSync(join(dir, "deploy", "app.yaml"), APP);
    writeFileSync(join(dir, "deploy", "more", "list.yml"), MORE);
    writeFileSync(join(dir, "deploy", "README.md"), "kind: Pod\nspec: {containers: [{image: nope}]}");
    const found = collectWorkloadImages([join(dir, "deploy")], [HELM], "RegistryPreload");
    expect(found.map((f) => f.image)).toEqual([
      "busybox:1.36",
      "nginx:1.27",
      `ghcr.io/org/sidecar@sha256:${"a".repeat(64)}`,
      "quay.io/org/backup:2",
      "debug:1",
      "registry.k8s.io/kube-proxy:v1.31.0",
      "localhost:5000/db:1",
      "migrate:3",
    ]);
    expect(found.find((f) => f.image === "nginx:1.27")!.usedBy).toEqual([
      `files (${join(dir, "deploy", "app.yaml")})#1 Deployment/web container web`,
      `files (${join(dir, "deploy", "more", "list.yml")})#1 Pod/dbg container a`,
    ]);
  });

  it("fails on bad YAML naming the file and the document", () => {
    const bad = join(dir, "bad.yaml");
    writeFileSync(bad, `${APP}---\nkind: Pod\nspec: {containers: [\n`);
    expect(() => collectWorkloadImages([bad], [], "RegistryPreload")).toThrow(
      `RegistryPreload: files[0] (${bad}): document 4 is not valid YAML`,
    );
    expect(() => collectWorkloadImages([], ["a: [", "ok: 1"], "RegistryPreload")).toThrow(/manifests\[0\]: document 1 is not valid YAML/);
  });
});

describe("RegistryPreload", () => {
  it("mirrors what the local registry does not serve, keeping repository paths, and leaves local images alone", async () => {
    await pulumi.runtime.setMocks(
      {
        newResource: (a) => ({
          id: `${a.name}-id`,
          state: {
            ...a.inputs,
            pinnedRef: `${String(a.inputs.target).replace(/:[^/:]+$/, "")}@sha256:${"c".repeat(64)}`,
            blobsCopied: 2,
            blobsMounted: 0,
          },
        }),
        call: () => ({}),
      },
      "project",
      "stack",
      false,
    );
    const { RegistryPreload } = (await import("../../../components/registryPreload")) as typeof Module;
    // One image to mirror: more than one dynamic child under a parent never resolves under the
    // SDK's mocks (the e2e of ImageManifest covers several with the real engine).
    const p = new RegistryPreload("lreg", {
      manifests: [
        "kind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: a, image: nginx:1.27}, {name: b, image: 'localhost:5000/db:1'}]}",
      ],
      registry: "localhost:5000",
    });
    expect(p.alreadyLocal).toEqual(["localhost:5000/db:1"]);
    expect(Object.keys(p.mirrors)).toEqual(["nginx:1.27"]);
    const pinned = await new Promise<Record<string, string>>((ok) => p.pinned.apply(ok));
    expect(pinned).toEqual({ "nginx:1.27": `localhost:5000/library/nginx@sha256:${"c".repeat(64)}` });
    expect(await new Promise((ok) => p.copied.apply(ok))).toEqual(["nginx:1.27"]);
    const urn = await new Promise<string>((ok) => p.mirrors["nginx:1.27"]!.urn.apply(ok));
    expect(urn).toMatch(/imageyard:index:RegistryPreload\$pulumi-nodejs:dynamic\/imageyard:MirroredImage::lreg-nginx-1\.27$/);
  });
});
