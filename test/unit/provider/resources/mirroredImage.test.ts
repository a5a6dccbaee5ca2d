// The MirroredImage resource class under Pulumi's mocks: what it registers, that credentials are
// marked secret, and that the serialized provider stays thin (the engine is required by package
// name at run time, not copied into state).
import * as pulumi from "@pulumi/pulumi";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

interface Registered {
  type: string;
  name: string;
  inputs: Record<string, unknown>;
}
const registered: Registered[] = [];

beforeAll(async () => {
  await pulumi.runtime.setMocks(
    {
      newResource(args) {
        registered.push({ type: args.type, name: args.name, inputs: args.inputs });
        return { id: `${args.name}-id`, state: { ...args.inputs, digest: `sha256:${"d".repeat(64)}` } };
      },
      call: () => ({}),
    },
    "project",
    "stack",
    false,
  );
});

afterAll(() => {
  registered.length = 0;
});

describe("MirroredImage", () => {
  it("registers a dynamic resource whose serialized provider requires the engine by package name", async () => {
    const { MirroredImage } = await import("../../../../provider/resources/mirroredImage");
    const img = new MirroredImage("app", {
      source: "127.0.0.1:5001/team/app:v1",
      target: "127.0.0.1:5002/mirror/app",
      targetAuth: { username: "robot", password: "s3cret" },
    });
    const digest = await new Promise((resolve) => img.digest.apply(resolve));
    expect(digest).toBe(`sha256:${"d".repeat(64)}`);
    const r = registered.find((x) => x.name === "app")!;
    expect(r.type).toBe("pulumi-nodejs:dynamic/imageyard:MirroredImage");
    const code = String(r.inputs.__provider);
    // the engine is loaded by package name when a method runs
    expect(code).toContain("require(this.moduleName)");
    expect(code).toContain('"imageyard/provider/resources/mirroredImage.lifecycle"');
    // the copy engine itself must not be serialized into state
    expect(code).not.toContain("planCopy");
    expect(code.length).toBeLessThan(20_000);
  });

  it("marks credentials secret even when the program passes them in plain text", async () => {
    const { MirroredImage } = await import("../../../../provider/resources/mirroredImage");
    const img = new MirroredImage("secret", {
      source: "127.0.0.1:5001/team/app:v1",
      target: "127.0.0.1:5002/mirror/app",
      sourceAuth: { username: "u", password: "plain" },
    });
    await new Promise((resolve) => img.urn.apply(resolve));
    const r = registered.find((x) => x.name === "secret")!;
    // the engine receives the credentials wrapped as a secret value (Pulumi's secret signature)
    expect(r.inputs.sourceAuth).toEqual({
      "4dabf18193072939515e22adb298388d": "1b47061264138c4ac30d75fd1eb44270",
      value: { username: "u", password: "plain" },
    });
    const auth = (img as unknown as Record<string, pulumi.Output<unknown>>).sourceAuth!;
    expect(await pulumi.isSecret(auth)).toBe(true);
  });
});
