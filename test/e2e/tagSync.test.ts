// TagSync through the real pulumi engine on the examples/tag-sync program: rateLimitWait is one
// rate-limit budget per registry for the whole deployment. The upstream sits behind a proxy that
// refuses each of two tags once with 429 Retry-After: 2. With rateLimitWait 3s the two 2 s pauses
// come out of one budget (the stack's MirroredImages share the provider process), so the second
// one fails the deployment naming the budget, though no image waited more than 2 s itself; with
// 10s the same deployment goes through. Destroy leaves nothing of ours in the mirror.
import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startFaultProxy, type FaultProxy, type FaultRule } from "../testbed/faultproxy";
import { seedImage, servesImage, type SeededImage } from "../testbed/images";
import { loadRegistryTestbed, type RegistryEndpoint } from "../testbed/registry";
import { destroyLeftovers, exampleStack, MIRRORED_IMAGE_TYPE, resourcesOfType, type ProjectStack } from "./harness";

const STEP_TIMEOUT = 300_000;
const run = `e2e-ts-${randomBytes(3).toString("hex")}`;
let mirror: RegistryEndpoint;
let proxy: FaultProxy;
let main: ProjectStack;
const seeded: Record<string, SeededImage> = {};

/** Each of 1.0.0 and 1.1.0 refused once, asking for 2 s. */
const refuseEachOnce = (): FaultRule[] =>
  ["1.0.0", "1.1.0"].map((tag) => ({
    path: new RegExp(`/manifests/${tag.replace(/\./g, "\\.")}$`),
    times: 1,
    fault: { kind: "status", status: 429, headers: { "retry-after": "2" } },
  }));

beforeAll(async () => {
  const tb = loadRegistryTestbed();
  mirror = tb.registries.mirror;
  for (const tag of ["1.0.0", "1.1.0", "2.0.0"])
    seeded[tag] = await seedImage(tb.registries.upstream, `${run}/app:${tag}`, { layers: 1, layerSize: "16K", seed: `${run}-${tag}` });
  proxy = await startFaultProxy(tb.registries.upstream);
  main = await exampleStack("tag-sync", "e2e", {
    source: { value: `${proxy.host}/${run}/app` },
    target: { value: `${mirror.host}/${run}/app` },
    semver: { value: "^1" },
    rateLimitWait: { value: "3s" },
    targetUsername: { value: mirror.username ?? "" },
    targetPassword: { value: mirror.password ?? "", secret: true },
  });
}, STEP_TIMEOUT);

afterAll(async () => {
  await destroyLeftovers(main, MIRRORED_IMAGE_TYPE);
  await proxy?.close();
}, STEP_TIMEOUT);

describe.sequential("TagSync with the real pulumi engine", () => {
  it(
    "fails the deployment once two images' rate-limit pauses together pass the stack's rateLimitWait",
    async () => {
      proxy.setRules(refuseEachOnce());
      const err = await main.stack.up({ onOutput: main.onOutput("up-3s"), onEvent: main.onEvent }).then(
        () => undefined,
        (e: unknown) => e as Error,
      );
      expect(err, "up with rateLimitWait 3s").toBeDefined();
      expect(`${String(err)}\n${main.log.all()}`).toMatch(/4 s, past the rate-limit budget of 3 s/);
      expect(proxy.hits(0) + proxy.hits(1)).toBe(2);
    },
    STEP_TIMEOUT,
  );

  it(
    "goes through with rateLimitWait 10s, mirroring every tag in range pinned by digest",
    async () => {
      await main.stack.setConfig("rateLimitWait", { value: "10s" });
      proxy.setRules(refuseEachOnce());
      const res = await main.stack.up({ onOutput: main.onOutput("up-10s"), onEvent: main.onEvent });
      expect(res.summary.result).toBe("succeeded");
      expect(res.outputs.tags!.value).toEqual(["1.1.0", "1.0.0"]);
      expect(res.outputs.pinned!.value).toEqual({
        "1.1.0": `${mirror.host}/${run}/app@${seeded["1.1.0"]!.digest}`,
        "1.0.0": `${mirror.host}/${run}/app@${seeded["1.0.0"]!.digest}`,
      });
      expect(proxy.hits(0) + proxy.hits(1)).toBe(2);
    },
    STEP_TIMEOUT,
  );

  it(
    "destroy removes the mirrored tags",
    async () => {
      await main.stack.destroy({ onOutput: main.onOutput("destroy"), onEvent: main.onEvent });
      for (const tag of ["1.0.0", "1.1.0"]) expect(await servesImage(mirror, `${run}/app:${tag}`)).toBe(false);
      expect(await resourcesOfType(main.stack, MIRRORED_IMAGE_TYPE)).toEqual([]);
    },
    STEP_TIMEOUT,
  );
});
