import * as pulumi from "@pulumi/pulumi";
import { beforeAll, describe, expect, it } from "vitest";
import { childName, ImageyardComponent, InputPropertyError } from "../../../components/component";

const registered: { type: string; name: string; parent?: string }[] = [];

beforeAll(async () => {
  await pulumi.runtime.setMocks({
    newResource: (args) => {
      registered.push({ type: args.type, name: args.name });
      return { id: `${args.name}-id`, state: args.inputs };
    },
    call: (args) => args.inputs,
  });
});

// A minimal component written the way every imageyard component is.
class Pair extends ImageyardComponent {
  readonly keys: pulumi.Output<string[]>;
  readonly children: pulumi.CustomResource[] = [];
  constructor(name: string, args: { items: Record<string, string> }) {
    super("Pair", name);
    for (const [key, value] of Object.entries(args.items)) {
      if (value === "") throw new InputPropertyError("Pair", `items.${key}`, "must not be empty");
      this.children.push(new pulumi.CustomResource("test:index:Leaf", childName(name, key), { value }, this.childOptions()));
    }
    this.keys = pulumi.output(Object.keys(args.items));
    this.registerOutputs({ keys: this.keys });
  }
}

describe("component convention", () => {
  it("uses the imageyard:index type token and names children ${name}-${key}, parented to the component", async () => {
    const c = new Pair("cat", { items: { a: "1", b: "2" } });
    const urn = await new Promise<string>((ok) => c.urn.apply(ok));
    expect(urn).toContain("imageyard:index:Pair::cat");
    const childUrns = await Promise.all(c.children.map((r) => new Promise<string>((ok) => r.urn.apply(ok))));
    // A child's URN carries its parent's type: the component is its parent.
    expect(childUrns).toEqual([
      expect.stringMatching(/imageyard:index:Pair\$test:index:Leaf::cat-a$/),
      expect.stringMatching(/imageyard:index:Pair\$test:index:Leaf::cat-b$/),
    ]);
    expect(registered.map((r) => r.name)).toEqual(expect.arrayContaining(["cat-a", "cat-b"]));
  });

  it("rejects bad input with an error that names the property path", () => {
    expect(() => new Pair("bad", { items: { x: "" } })).toThrow(/Pair: items\.x: must not be empty/);
    try {
      new Pair("bad2", { items: { y: "" } });
    } catch (e) {
      expect((e as InputPropertyError).propertyPath).toBe("items.y");
      expect((e as InputPropertyError).code).toBe("INVALID_INPUT");
    }
  });
});
