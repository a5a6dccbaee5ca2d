// BOSH's import-images through the real engine: examples/kubernetes-import-images on the
// Kubernetes test bed (node1 on containerd 1.6, node2 on v2), the image list in stack config.
// One stack walks what a BOSH operator does: a tag with a retag name, an image tarball for nodes
// with no registry route and a private image with base64 credentials land on every node; the tag
// moves upstream and preview shows old → new digest; wrong credentials fail the preview naming the
// image; destroy. What the nodes hold is checked with crictl from the bed, and pods that name the
// retag and the archive with pull policy Never prove the runtime serves them with no registry.
// The tagged images are busybox variants made for this run, so no kubelet of the bed pulled their
// image IDs under another name (docs/kubernetes-testbed.md pitfall 17).
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { criImagesOn, hasDigest, hasTag, prePullSetObjects, runsOffline } from "../support/bedpods";
import { holdK8sBedForThisFile } from "../support/k8shold";
import { useK8sTestbed, type K8sImage, type K8sTestbed } from "../testbed/k8s";
import { pushBusyboxVariant } from "../testbed/k8simages";
import { loadRegistryTestbed } from "../testbed/registry";
import { destroyLeftovers, exampleStack, previewCounts, storedState, type ProjectStack } from "./harness";

// One file at a time on the bed: others add and remove nodes.
holdK8sBedForThisFile();

const STEP = 300_000;
const PREPULL_TYPE = "pulumi-nodejs:dynamic/imageyard:PrePullSet";
const run = randomBytes(3).toString("hex");
const RETAG = `registry.k8s.io/e2e-${run}/busybox:retagged`;
const OFFLINE = `registry.invalid/e2e-${run}/offline-busybox:1`;
let tb: K8sTestbed;
let main: ProjectStack;
let tagged: K8sImage;
let moved: K8sImage;
let archive: string;
let base64Auth: string;

const images = () => [
  { ref: tagged.ref, retagAs: RETAG },
  { ref: `docker-archive:${archive}` },
  { ref: tb.images.privateScratch.ref, auth: "bed" },
];
const auths = (b64: string) => ({ value: JSON.stringify({ bed: b64 }), secret: true });

beforeAll(async () => {
  tb = await useK8sTestbed();
  const upstream = loadRegistryTestbed().registries.upstream;
  const dir = join(tb.dir, "images");
  [tagged, moved] = await Promise.all([
    pushBusyboxVariant(dir, upstream, `imp-${run}`),
    pushBusyboxVariant(dir, upstream, `imp-${run}-moved`),
  ]);
  // What the archive holds reaches a node through the import only: an image ID of its own.
  const offline = await pushBusyboxVariant(dir, upstream, `imp-${run}-offline`);
  archive = join(dir, `offline-${run}.tar`);
  execFileSync("skopeo", ["copy", "-q", "--src-tls-verify=false", `docker://${offline.ref}`, `docker-archive:${archive}:${OFFLINE}`]);
  const { username, password } = tb.registries.auth;
  base64Auth = Buffer.from(`${username}:${password}`).toString("base64");
  main = await exampleStack("kubernetes-import-images", "e2e", {
    images: { value: JSON.stringify(images()) },
    auths: auths(base64Auth),
    agentRegistry: { value: tb.registries.plain.host },
    kubeconfig: { value: readFileSync(tb.kubeconfig, "utf8"), secret: true },
    containerdSocket: { value: `${tb.dir}/nodes/\${NODE_NAME}/containerd.sock` },
  });
}, 900_000);

afterAll(() => destroyLeftovers(main, PREPULL_TYPE), STEP);

describe.sequential("import-images (a BOSH job's image list) with the real pulumi engine", () => {
  it(
    "up puts the tag with its retag name, the archive and the private image on both nodes; pods run them with pull policy Never",
    async () => {
      const res = await main.stack.up({ onOutput: main.onOutput("up-1"), onEvent: main.onEvent });
      expect(res.summary.result).toBe("succeeded");
      expect(res.outputs.ready!.value).toBe(2);
      expect(res.outputs.total!.value).toBe(2);
      const digests = res.outputs.digests!.value as Record<string, string>;
      expect(digests[tagged.ref]).toBe(tagged.digest);
      expect(digests[tb.images.privateScratch.ref]).toBe(tb.images.privateScratch.digest);
      for (const node of ["node1", "node2"]) {
        const imgs = await criImagesOn(tb, node);
        expect(hasDigest(imgs, tagged.digest), `${node} holds ${tagged.ref}`).toBeDefined();
        expect(
          hasTag(imgs, RETAG)?.repoDigests.some((d) => d.endsWith(tagged.digest)),
          `${node}: ${RETAG} → ${tagged.digest}`,
        ).toBe(true);
        expect(hasTag(imgs, OFFLINE), `${node} answers to ${OFFLINE}`).toBeDefined();
        expect(hasDigest(imgs, tb.images.privateScratch.digest), `${node} holds the private image`).toBeDefined();
      }
      await runsOffline(tb, "node1", RETAG, ["/bin/true"]);
      await runsOffline(tb, "node2", OFFLINE, ["/bin/true"]);
      // The credentials are secret config and secret state: neither the password nor its base64 is stored in plain.
      const state = storedState(main);
      expect(state).not.toContain(base64Auth);
      expect(state).not.toContain(tb.registries.auth.password!);
    },
    STEP,
  );

  it(
    "a second preview shows no changes",
    async () => {
      expect(await previewCounts(main, "preview-nochange")).toMatchObject({ update: 0, replace: 0 });
    },
    STEP,
  );

  it(
    "the tag moves upstream: preview shows the update from the old digest to the new, and up moves the tag and its retag name on every node",
    async () => {
      execFileSync("skopeo", [
        "copy",
        "-q",
        "--preserve-digests",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        `docker://${moved.ref}`,
        `docker://${tagged.ref}`,
      ]);
      const pre = await main.stack.preview({ onOutput: main.onOutput("preview-moved"), onEvent: main.onEvent });
      expect(pre.changeSummary.update).toBe(1);
      expect(main.log.all()).toContain(`${tagged.ref}: ${tagged.digest} → ${moved.digest}`);
      const res = await main.stack.up({ onOutput: main.onOutput("up-moved"), onEvent: main.onEvent });
      expect((res.outputs.digests!.value as Record<string, string>)[tagged.ref]).toBe(moved.digest);
      expect(res.outputs.ready!.value).toBe(2);
      for (const node of ["node1", "node2"]) {
        const imgs = await criImagesOn(tb, node);
        expect(
          hasTag(imgs, tagged.ref)?.repoDigests.some((d) => d.endsWith(moved.digest)),
          `${node}: ${tagged.ref} moved`,
        ).toBe(true);
        expect(
          hasTag(imgs, RETAG)?.repoDigests.some((d) => d.endsWith(moved.digest)),
          `${node}: ${RETAG} moved`,
        ).toBe(true);
      }
      await runsOffline(tb, "node2", RETAG, ["/bin/true"]);
    },
    STEP,
  );

  it(
    "wrong credentials fail the preview naming the image; nothing changes on the cluster",
    async () => {
      await main.stack.setConfig("auths", auths(Buffer.from(`${tb.registries.auth.username}:wrong`).toString("base64")));
      const out: string[] = [];
      const err = await main.stack.preview({ onOutput: (l) => out.push(l) }).then(
        () => undefined,
        (e: unknown) => e as Error,
      );
      expect(err, "preview should fail").toBeDefined();
      const text = `${out.join("")}\n${err?.message}`;
      expect(text).toContain("images[2].auth");
      expect(text).toContain(tb.images.privateScratch.ref);
      expect(text).not.toContain(":wrong");
      expect(text).not.toContain(Buffer.from(`${tb.registries.auth.username}:wrong`).toString("base64"));
      await main.stack.setConfig("auths", auths(base64Auth));
      expect(await previewCounts(main, "preview-fixed")).toMatchObject({ update: 0, replace: 0 });
    },
    STEP,
  );

  it(
    "destroy removes the DaemonSet and Secrets and leaves the images on the nodes",
    async () => {
      const res = await main.stack.destroy({ onOutput: main.onOutput("destroy"), onEvent: main.onEvent });
      expect(res.summary.result).toBe("succeeded");
      expect(await prePullSetObjects(tb, "images")).toBe("");
      expect(hasTag(await criImagesOn(tb, "node2"), RETAG)).toBeDefined();
    },
    STEP,
  );
});
