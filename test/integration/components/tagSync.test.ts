// TagSync against the real registry test bed: it lists the upstream repository's tags and makes
// one MirroredImage per selected tag (registrations under Pulumi's mocks); a tag pushed later is a
// new child on the next run, which is how it shows in preview. Its rateLimitWait is one budget per
// registry: the children's copies, run as the stack's one provider
// process runs them (the lifecycle functions in one process), draw on it together.
import { randomBytes } from "node:crypto";
import * as pulumi from "@pulumi/pulumi";
import { afterEach, beforeAll, describe, expect, it } from "vitest";
import type * as Module from "../../../components/tagSync";
import { forgetKnownLocations } from "../../../provider/oci/copy";
import { checkMirror, createMirror, type MirrorInputs } from "../../../provider/resources/mirroredImage.lifecycle";
import { startFaultProxy, type FaultProxy, type FaultRule } from "../../testbed/faultproxy";
import { seedImage } from "../../testbed/images";
import { loadRegistryTestbed } from "../../testbed/registry";

const { upstream, mirror } = loadRegistryTestbed().registries;
const run = `ts-${Date.now().toString(36)}-${randomBytes(2).toString("hex")}`;
/** Every registration under the mocks: resource name → its inputs. */
const registered = new Map<string, Record<string, unknown>>();
let TagSync: typeof Module.TagSync;
let proxy: FaultProxy | undefined;

beforeAll(async () => {
  for (const tag of ["1.0.0", "1.1.0", "2.0.0", "latest"])
    await seedImage(upstream, `${run}/app:${tag}`, { layers: 1, layerSize: "16K", seed: `${run}-${tag}` });
  await pulumi.runtime.setMocks(
    {
      newResource: (a) => {
        registered.set(a.name, a.inputs as Record<string, unknown>);
        return {
          id: `${a.name}-id`,
          state: { ...a.inputs, pinnedRef: `${String(a.inputs.target).replace(/:[^/:]+$/, "")}@sha256:${"e".repeat(64)}` },
        };
      },
      call: () => ({}),
    },
    "project",
    "stack",
    false,
  );
  ({ TagSync } = (await import("../../../components/tagSync")) as typeof Module);
});

afterEach(async () => {
  await proxy?.close();
  proxy = undefined;
  forgetKnownLocations();
});

const outputOf = <T>(o: pulumi.Output<T>) => new Promise<T>((ok) => o.apply(ok));
const tooMany = (retryAfter: string, times: number): FaultRule[] => [
  { path: /\/manifests\//, times, fault: { kind: "status", status: 429, headers: { "retry-after": retryAfter } } },
];

describe("TagSync", () => {
  it("mirrors the tags of the source that match the range, one MirroredImage each; a new tag is a new child on the next run", async () => {
    const args = { source: `${upstream.host}/${run}/app`, target: `${mirror.host}/${run}/app`, semver: "^1" };
    const first = new TagSync("sync", args);
    expect(await outputOf(first.tags)).toEqual(["1.1.0", "1.0.0"]);
    const pinned = await outputOf(first.pinned);
    expect(pinned["1.1.0"]).toBe(`${mirror.host}/${run}/app@sha256:${"e".repeat(64)}`);
    expect([...registered.keys()]).toEqual(expect.arrayContaining(["sync-1.1.0", "sync-1.0.0"]));
    expect([...registered.keys()]).not.toContain("sync-2.0.0");

    await seedImage(upstream, `${run}/app:1.2.0`, { layers: 1, layerSize: "16K", seed: `${run}-1.2.0` });
    const second = new TagSync("sync2", args);
    expect(await outputOf(second.tags)).toEqual(["1.2.0", "1.1.0", "1.0.0"]);
  });

  it("refuses a rateLimitWait that is not a duration, naming the property", () => {
    expect(
      () =>
        new TagSync("bad", {
          source: `${upstream.host}/${run}/app`,
          target: `${mirror.host}/${run}/m`,
          semver: "^1",
          rateLimitWait: "soon",
        }),
    ).toThrow(/rateLimitWait.*"soon"/);
  });

  it("gives every child the stack's rateLimitWait; their copies pause together and draw on one budget per registry", async () => {
    proxy = await startFaultProxy(upstream, []);
    const target = `${mirror.host}/${run}/shared`;
    const sync = new TagSync("shared", { source: `${proxy.host}/${run}/app`, target, semver: "^1", rateLimitWait: "3s" });
    const tags = await outputOf(sync.tags);
    expect(tags).toEqual(["1.2.0", "1.1.0", "1.0.0"]);
    await outputOf(sync.pinned); // registered by now
    const children = tags.map((t) => registered.get(`shared-${t}`)!);
    expect(children.map((c) => c.rateLimitWait)).toEqual(["3s", "3s", "3s"]);
    const inputsOf = (c: Record<string, unknown>): MirrorInputs => ({
      source: String(c.source),
      target: String(c.target),
      targetAuth: { username: mirror.username!, password: mirror.password! },
      rateLimitWait: c.rateLimitWait as string,
    });
    // What the provider process does for each child: check (resolve the digest), then create.
    const checked = await Promise.all(children.map(async (c) => (await checkMirror({}, inputsOf(c), { log: () => {} })).inputs));
    const create = (i: MirrorInputs) =>
      createMirror(i, { log: () => {} }).then(
        (r) => r.outs.digest,
        (e: unknown) => e as Error & { code?: string },
      );

    // Round one: one 429 asking for 2 s holds back the registry host for all three copies (no
    // request reaches it in the pause), and the 2 s come out of the one 3 s budget. All finish.
    proxy.setRules(tooMany("2", 1));
    const first = await Promise.all(checked.map(create));
    expect(
      first.every((d) => typeof d === "string" && d.startsWith("sha256:")),
      String(first),
    ).toBe(true);
    const limited = proxy.requests.find((r) => r.status === 429)!;
    const during = proxy.requests.filter((r) => r.at > limited.at + 100 && r.at < limited.at + 1800);
    expect(during, "requests that reached the registry during the pause").toEqual([]);
    expect(
      new Set(proxy.requests.filter((r) => r.at >= limited.at + 1800).map((r) => r.path.split("/manifests/")[0])).size,
    ).toBeGreaterThan(1);

    // Round two (the next images of the same stack): another 2 s would make 4 s in all. No image
    // has waited more than 2 s itself, so per-image budgets would wait again; the shared budget
    // is spent, and the copy the registry refuses fails at once, naming the host and the budget.
    proxy.setRules(tooMany("2", 1));
    const again = checked.map((i) => ({ ...i, target: `${target}-2` }));
    const t1 = Date.now();
    const second = await Promise.all(again.map(create));
    const failed = second.filter((r): r is Error & { code?: string } => typeof r !== "string");
    expect(failed).toHaveLength(1);
    expect(failed[0]).toMatchObject({ code: "TOO_MANY_REQUESTS" });
    expect(failed[0]!.message).toMatch(new RegExp(`${proxy.host.replace(/\./g, "\\.")}.*4 s, past the rate-limit budget of 3 s`));
    expect(Date.now() - t1).toBeLessThan(1500);
  }, 60_000);
});
