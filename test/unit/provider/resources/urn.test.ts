// urnInput under Pulumi's mocks: the URN input must not make children of one component wait for
// each other (a dependency on a component is a dependency on all of its children).
import * as pulumi from "@pulumi/pulumi";
import { beforeAll, describe, expect, it } from "vitest";

const registered: string[] = [];

beforeAll(async () => {
  await pulumi.runtime.setMocks(
    {
      newResource: (a) => {
        registered.push(a.name);
        return { id: `id-${a.name}`, state: a.inputs };
      },
      call: (a) => a.inputs,
    },
    "project",
    "stack",
    false,
  );
});

const within = <T>(o: pulumi.Output<T>, ms: number) =>
  Promise.race([
    new Promise<T>((ok) => o.apply(ok)),
    new Promise<never>((_, no) => setTimeout(() => no(new Error(`not resolved within ${ms} ms: the children wait for each other`)), ms)),
  ]);

describe("urnInput", () => {
  it("two CommunityImages under one component both register (the URN input used to deadlock them)", async () => {
    const { CommunityImage } = await import("../../../../provider/resources/communityImage");
    const parent = new pulumi.ComponentResource("test:index:Catalog", "comp", {});
    const source = { url: "https://img.example/a.img", checksum: `sha256:${"0".repeat(64)}` };
    const a = new CommunityImage("comp-a", { name: "a", source, diskFormat: "qcow2" }, { parent });
    const b = new CommunityImage("comp-b", { name: "b", source, diskFormat: "qcow2" }, { parent });
    expect(await within(pulumi.all([a.id, b.id]), 20_000)).toEqual(["id-comp-a", "id-comp-b"]);
    expect(registered).toEqual(expect.arrayContaining(["comp-a", "comp-b"]));
  }, 30_000);
});
