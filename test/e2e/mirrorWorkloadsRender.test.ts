// MirrorWorkloads through the real engine and the real @pulumi/kubernetes provider, without a
// cluster: examples/mirror-workloads with renderYamlToDirectory, so the manifests the provider
// would apply land in files — including a DaemonSet that a yaml/v2 ConfigGroup registers from
// inside the provider, which the engine-run transform reaches too. The registry test bed's anonymous registry stands in for Docker Hub
// (`upstreams`) and its htpasswd registry is the mirror. What the files and the registries hold is
// read with the yaml parser and skopeo, not through imageyard.
import { randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execFileSync } from "node:child_process";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseAllDocuments } from "yaml";
import { digestOf, seedImage, servesImage, type SeededImage } from "../testbed/images";
import { repoRoot } from "../testbed/processes";
import { loadRegistryTestbed, type RegistryEndpoint } from "../testbed/registry";
import { destroyLeftovers, exampleStack, MIRRORED_IMAGE_TYPE, resourcesOfType, type ProjectStack } from "./harness";

// Needs the @pulumi/kubernetes plugin (scripts/k8s-build.sh plugin); no cluster.
const pluginBuilt = existsSync(execFileSync(join(repoRoot(), "scripts", "k8s-build.sh"), ["plugin-bin"], { encoding: "utf8" }).trim());

const STEP = 300_000;
const run = `e2e-wr-${randomBytes(3).toString("hex")}`;
let upstream: RegistryEndpoint;
let mirror: RegistryEndpoint;
let dir: string;
let main: ProjectStack;
let app1: SeededImage;
let app2: SeededImage;
let init: SeededImage;
let agent: SeededImage;

interface Rendered {
  kind: string;
  spec: { template: { spec: { initContainers?: { image: string }[]; containers: { image: string }[] } } };
}
/** The object of `kind` as the provider rendered it. */
function rendered(kind: string): Rendered {
  const root = join(dir, "render");
  const files = readdirSync(root, { recursive: true, encoding: "utf8" }).filter((f) => f.endsWith(".yaml"));
  const docs = files.flatMap((f) => parseAllDocuments(readFileSync(join(root, f), "utf8")).map((d) => d.toJS() as Rendered));
  const found = docs.filter((d) => d?.kind === kind);
  if (found.length !== 1) throw new Error(`expected one rendered ${kind} under ${root}, found ${found.length} in ${files.join(", ")}`);
  return found[0]!;
}
const images = (d: Rendered) => [...(d.spec.template.spec.initContainers ?? []), ...d.spec.template.spec.containers].map((c) => c.image);

beforeAll(async () => {
  if (!pluginBuilt) return;
  const tb = loadRegistryTestbed();
  upstream = tb.registries.upstream;
  mirror = tb.registries.mirror;
  dir = mkdtempSync(join(tmpdir(), "iy-e2e-wr-"));
  app1 = await seedImage(upstream, `${run}/app:1`, { layers: 1, layerSize: "32K", seed: `${run}-app1` });
  app2 = await seedImage(upstream, `${run}/app:2`, { layers: 1, layerSize: "32K", seed: `${run}-app2` });
  init = await seedImage(upstream, `${run}/init:1`, { layers: 1, layerSize: "32K", seed: `${run}-init` });
  agent = await seedImage(upstream, `${run}/agent:1`, { layers: 1, layerSize: "32K", seed: `${run}-agent` });
  main = await exampleStack("mirror-workloads", "e2e", {
    registry: { value: `${mirror.host}/${run}-mirror` },
    mirrorUsername: { value: mirror.username ?? "" },
    mirrorPassword: { value: mirror.password ?? "", secret: true },
    upstreams: { value: JSON.stringify({ "docker.io": upstream.host }) },
    image: { value: `docker.io/${run}/app:1` },
    initImage: { value: `docker.io/${run}/init:1` },
    renderYamlToDirectory: { value: join(dir, "render") },
    // A DaemonSet the yaml/v2 ConfigGroup registers from inside the provider, sharing the init image.
    manifests: {
      value: `apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: agent, namespace: default}\nspec:\n  selector: {matchLabels: {app: agent}}\n  template:\n    metadata: {labels: {app: agent}}\n    spec:\n      initContainers: [{name: i, image: "docker.io/${run}/init:1"}]\n      containers: [{name: a, image: "${run}/agent:1"}]\n`,
    },
  });
}, STEP);

afterAll(() => destroyLeftovers(main, MIRRORED_IMAGE_TYPE, () => dir && rmSync(dir, { recursive: true, force: true })), STEP);

describe.runIf(pluginBuilt).sequential("MirrorWorkloads with the real engine and @pulumi/kubernetes (rendered, no cluster)", () => {
  const pinned = (img: SeededImage, repo: string) => `${mirror.host}/${run}-mirror/${run}/${repo}@${img.digest}`;

  it(
    "up copies each docker.io image into the mirror and the Deployment the provider renders names them by digest",
    async () => {
      const res = await main.stack.up({ onOutput: main.onOutput("up-1"), onEvent: main.onEvent });
      expect(res.summary.result).toBe("succeeded");
      expect(images(rendered("Deployment"))).toEqual([pinned(init, "init"), pinned(app1, "app")]);
      expect(res.outputs.deploymentImages!.value).toEqual([pinned(init, "init"), pinned(app1, "app")]);
      expect(images(rendered("DaemonSet"))).toEqual([pinned(init, "init"), pinned(agent, "agent")]);
      expect(await digestOf(mirror, `${run}-mirror/${run}/app:1`)).toBe(app1.digest);
      expect(await digestOf(mirror, `${run}-mirror/${run}/init:1`)).toBe(init.digest);
      const children = await resourcesOfType(main.stack, MIRRORED_IMAGE_TYPE);
      expect(children.map((c) => c.urn.split("::").pop()).sort()).toEqual([
        `mirror-${run}-agent-1`,
        `mirror-${run}-app-1`,
        `mirror-${run}-init-1`,
      ]);
      // The Deployment was registered only once its mirrors had digests. The engine (3.276) does not
      // record a stack transform's dependsOn in the state (it reparses dependencies only for a
      // resource's own transforms), so no assertion on `dependencies` here; see the README.
    },
    STEP,
  );

  it(
    "a second preview shows no changes",
    async () => {
      const res = await main.stack.preview({ onOutput: main.onOutput("preview-noop"), onEvent: main.onEvent });
      expect(Object.keys(res.changeSummary).filter((k) => k !== "same")).toEqual([]);
    },
    STEP,
  );

  it(
    "a new upstream tag previews as one new mirror, an update of the Deployment and the old mirror's deletion; up renders the new digest",
    async () => {
      await main.stack.setConfig("image", { value: `docker.io/${run}/app:2` });
      const pre = await main.stack.preview({ onOutput: main.onOutput("preview-tag"), onEvent: main.onEvent });
      expect(pre.changeSummary).toMatchObject({ create: 1, update: 1, delete: 1 });
      await main.stack.up({ onOutput: main.onOutput("up-2"), onEvent: main.onEvent });
      expect(images(rendered("Deployment"))).toEqual([pinned(init, "init"), pinned(app2, "app")]);
      expect(await servesImage(mirror, `${run}-mirror/${run}/app:1`)).toBe(false);
    },
    STEP,
  );

  it(
    "destroy removes the mirrored images and leaves the upstream alone",
    async () => {
      await main.stack.destroy({ onOutput: main.onOutput("destroy"), onEvent: main.onEvent });
      for (const ref of [`${run}-mirror/${run}/app:2`, `${run}-mirror/${run}/init:1`, `${run}-mirror/${run}/agent:1`])
        expect(await servesImage(mirror, ref)).toBe(false);
      expect(await digestOf(upstream, `${run}/app:1`)).toBe(app1.digest);
    },
    STEP,
  );
});
