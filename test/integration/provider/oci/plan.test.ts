// Round trips to a distant source: a stack's MirroredImages are checked one after another by the
// engine, so every serial round trip of planCopy is paid once per image. The real registry sits
// behind a proxy that holds each request 1 s; requests that leave together arrive together,
// so the arrival times fall into one group per round trip.
import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { copyImage, forgetKnownLocations, planCopy, summarizePlan, type CopyRequest } from "../../../../provider/oci/copy";
import type { RegistryOptions } from "../../../../provider/oci/registry";
import { startFaultProxy, type FaultProxy, type ProxiedRequest } from "../../../testbed/faultproxy";
import { seedImage, type SeededImage } from "../../../testbed/images";
import { loadRegistryTestbed, type RegistryEndpoint } from "../../../testbed/registry";

const { upstream, mirror } = loadRegistryTestbed().registries;
const run = `rt-${Date.now().toString(36)}-${randomBytes(2).toString("hex")}`;
const DELAY_MS = 1000;

function options(ep: RegistryEndpoint | undefined): RegistryOptions {
  const o: RegistryOptions = { dockerConfig: false, scheme: "http" };
  if (ep?.username) o.credentials = { username: ep.username, password: ep.password! };
  return o;
}

/** Requests grouped by arrival: a gap of half the delay or more starts the next round trip. */
function roundTrips(requests: ProxiedRequest[]): string[][] {
  const groups: string[][] = [];
  let last = Number.NEGATIVE_INFINITY;
  for (const r of [...requests].sort((a, b) => a.at - b.at)) {
    if (r.at - last >= DELAY_MS / 2) groups.push([]);
    groups.at(-1)!.push(`${r.method} ${r.path.replace(/sha256[:-][0-9a-f]{64}/g, "D")}`);
    last = r.at;
  }
  return groups.map((g) => g.sort());
}

let image: SeededImage;
let proxy: FaultProxy;

beforeAll(async () => {
  image = await seedImage(upstream, `${run}/app:v1`, { layers: 2, layerSize: "64K", seed: "rt-app" });
  proxy = await startFaultProxy(upstream, [{ fault: { kind: "delay", ms: DELAY_MS } }]);
});

afterAll(async () => {
  await proxy.close();
  forgetKnownLocations();
});

const request = (repo: string, source = `${proxy.host}/${run}/app:v1`): CopyRequest => ({
  source,
  target: `${mirror.host}/${run}/${repo}`,
  sourceOptions: options(undefined),
  targetOptions: options(mirror),
});

describe("planCopy against a source a round trip away", () => {
  it("plans a new mirror in two round trips: the manifest by tag with the HEAD, then config, signature tags and referrers together", async () => {
    proxy.requests.length = 0;
    const plan = await planCopy(request("new"));
    expect(plan.sourceDigest).toBe(image.digest);
    expect(plan.totals.upload).toBe(3);
    expect(roundTrips(proxy.requests)).toEqual([
      [`GET /v2/${run}/app/manifests/v1`, `HEAD /v2/${run}/app/manifests/v1`],
      [
        `GET /v2/${run}/app/blobs/D`,
        `GET /v2/${run}/app/referrers/D`,
        `HEAD /v2/${run}/app/manifests/D.att`,
        `HEAD /v2/${run}/app/manifests/D.sbom`,
        `HEAD /v2/${run}/app/manifests/D.sig`,
      ],
    ]);
  });

  it("plans a preview (check) of a new mirror in one round trip: the manifest by tag with the HEAD", async () => {
    proxy.requests.length = 0;
    const plan = await planCopy({ ...request("preview"), preview: true });
    expect(plan.sourceDigest).toBe(image.digest);
    expect(plan.totals.upload).toBe(3);
    expect(summarizePlan(plan)).toContain("signatures, found when copying");
    expect(roundTrips(proxy.requests)).toEqual([[`GET /v2/${run}/app/manifests/v1`, `HEAD /v2/${run}/app/manifests/v1`]]);
  });

  it("copies a source pinned by digest (what create gets from check) with blobs in the third round trip", async () => {
    forgetKnownLocations();
    proxy.requests.length = 0;
    const r = await copyImage(request("pinned", `${proxy.host}/${run}/app@${image.digest}`));
    expect(r.digest).toBe(image.digest);
    const trips = roundTrips(proxy.requests);
    expect(trips).toHaveLength(3);
    expect(trips[0]).toEqual([`GET /v2/${run}/app/manifests/D`]);
    expect(trips[2]!.every((q) => q.startsWith(`GET /v2/${run}/app/blobs/`))).toBe(true);
  });

  it("copies what check planned in this process without reading the manifest again: blobs in the second round trip", async () => {
    forgetKnownLocations();
    const plan = await planCopy({ ...request("after-check"), preview: true });
    proxy.requests.length = 0;
    const r = await copyImage(request("after-check", `${proxy.host}/${run}/app@${plan.sourceDigest}`));
    expect(r.digest).toBe(image.digest);
    const trips = roundTrips(proxy.requests);
    expect(trips.flat()).not.toContain(`GET /v2/${run}/app/manifests/D`);
    expect(trips).toHaveLength(2);
    expect(trips[1]!.every((q) => q.startsWith(`GET /v2/${run}/app/blobs/`))).toBe(true);
  });

  it("answers an up-to-date mirror with one HEAD to the source and no GET", async () => {
    await copyImage(request("same"));
    proxy.requests.length = 0;
    const plan = await planCopy(request("same"));
    expect(plan.upToDate).toBe(true);
    expect(roundTrips(proxy.requests)).toEqual([[`HEAD /v2/${run}/app/manifests/v1`]]);
  });
});
