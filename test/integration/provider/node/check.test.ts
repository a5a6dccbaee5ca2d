// PrePullSet's check() against the real registries of the test bed (the cluster side is an
// in-process API server): each tag resolves to the digest the registry serves with one request,
// a moved tag becomes an update, refused credentials and an unreachable cluster fail the preview
// naming the image or the kubeconfig, and a registry that is down keeps the digest the nodes hold.
import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { checkPrePull, diffPrePull, type PrePullInputs, type PrePullOutputs } from "../../../../provider/resources/prePullSet.lifecycle";
import { seedImage, type SeededImage } from "../../../testbed/images";
import {
  defaultStateDir,
  loadRegistryTestbed,
  readRequests,
  requestLogMark,
  startRegistry,
  type RegistryHandle,
} from "../../../testbed/registry";
import { FakeKube, kubeconfigFor, pullsSucceed } from "../../../support/fakekube";

const { upstream, mirror } = loadRegistryTestbed().registries;
const run = `chk-${Date.now().toString(36)}-${randomBytes(2).toString("hex")}`;
let kube: FakeKube;
let kubeconfig: string;
let v1: SeededImage;
let priv: SeededImage;
const lines: string[] = [];
const deps = { log: (l: string) => lines.push(l) };

const base = (over: Partial<PrePullInputs> = {}): PrePullInputs => ({
  name: "core",
  agentRegistry: upstream.host,
  kubeconfig,
  images: [],
  ...over,
});

beforeAll(async () => {
  kube = await new FakeKube(pullsSucceed).start();
  kubeconfig = kube.kubeconfig();
  [v1, priv] = await Promise.all([
    seedImage(upstream, `${run}/app:v1`, { layers: 1, layerSize: "16K", seed: `${run}-1` }),
    seedImage(mirror, `${run}/private:v1`, { layers: 1, layerSize: "16K", seed: `${run}-p` }),
  ]);
}, 120_000);

afterAll(() => kube.close());

describe("PrePullSet check against real registries", () => {
  it("resolves each tag to the registry's digest with one request per image", async () => {
    const mark = requestLogMark(upstream);
    const { inputs, failures } = await checkPrePull({}, base({ images: [v1.ref, `${upstream.host}/${run}/app@${v1.digest}`] }), deps);
    expect(failures).toEqual([]);
    expect(inputs.digests).toEqual({ [v1.ref]: v1.digest, [`${upstream.host}/${run}/app@${v1.digest}`]: v1.digest });
    // the digest reference needs no request at all; the tag one HEAD
    expect(
      readRequests(upstream, mark)
        .filter((r) => r.path.includes(`/${run}/`))
        .map((r) => `${r.method} ${r.status}`),
    ).toEqual(["HEAD 200"]);
  });

  it("turns a moved tag into an update and says old → new", async () => {
    const first = await checkPrePull({}, base({ images: [v1.ref] }), deps);
    const olds = {
      ...first.inputs,
      namespace: "kube-system",
      nodes: {},
      ready: 2,
      total: 2,
      warnings: [],
      agentImageRef: "x",
    } as PrePullOutputs;
    const moved = await seedImage(upstream, `${run}/app:v1`, { layers: 1, layerSize: "16K", seed: `${run}-2` });
    const second = await checkPrePull(first.inputs, base({ images: [v1.ref] }), deps);
    expect(second.inputs.digests![v1.ref]).toBe(moved.digest);
    expect(diffPrePull(olds, second.inputs)).toEqual({ changes: true });
    expect(lines).toContain(`${v1.ref}: ${v1.digest} → ${moved.digest}`);
  });

  it("fails naming images[i].auth when the registry refuses the credentials, and accepts BOSH's base64 form", async () => {
    const bad = await checkPrePull(
      {},
      base({ images: [v1.ref, { ref: priv.ref, auth: { username: mirror.username!, password: "wrong" } }] }),
      deps,
    );
    expect(bad.failures).toHaveLength(1);
    expect(bad.failures[0]).toMatchObject({
      property: "images[1].auth",
      reason: expect.stringMatching(new RegExp(`^${priv.ref.replace(/[.]/g, "\\.")}: .*refused the credentials \\(401`)),
    });
    const bosh = Buffer.from(`${mirror.username}:${mirror.password}`).toString("base64");
    const ok = await checkPrePull({}, base({ images: [{ ref: priv.ref, auth: bosh }] }), deps);
    expect(ok.failures).toEqual([]);
    expect(ok.inputs.digests![priv.ref]).toBe(priv.digest);
  });

  it("fails the preview on an unreachable cluster, naming kubeconfig", async () => {
    const { failures } = await checkPrePull({}, base({ images: [v1.ref], kubeconfig: kubeconfigFor("https://127.0.0.1:1") }), deps);
    expect(failures).toEqual([
      {
        property: "kubeconfig",
        reason: expect.stringMatching(/^cannot reach the cluster for 1 image\(s\): connect to https:\/\/127\.0\.0\.1:1/),
      },
    ]);
  });

  it("keeps the digest the nodes hold when the registry is down, and refuses a new image then", async () => {
    let down: RegistryHandle | undefined;
    try {
      down = await startRegistry(defaultStateDir(), `${run}-down`, { auth: "none", tls: false });
      const img = await seedImage(down.endpoint, `${run}/gone:v1`, { layers: 1, layerSize: "16K", seed: `${run}-g` });
      const first = await checkPrePull({}, base({ images: [img.ref] }), deps);
      await down.stop();
      const again = await checkPrePull(first.inputs, base({ images: [img.ref] }), deps);
      expect(again.failures).toEqual([]);
      expect(again.inputs.digests![img.ref]).toBe(img.digest);
      expect(lines.some((l) => l.startsWith(`warning: ${img.ref}:`) && l.includes("keeping the digest the nodes hold"))).toBe(true);
      const fresh = await checkPrePull({}, base({ images: [img.ref] }), deps);
      expect(fresh.failures[0]?.property).toBe("images[0]");
    } finally {
      await down?.remove();
    }
  }, 120_000);
});
