// The PrePullSet resource class under Pulumi's mocks: the thin provider it serializes, its name
// defaulting to the resource's, and credentials (image auth, kubeconfig) reaching the engine as
// secrets even when the program passes them in plain text.
import * as pulumi from "@pulumi/pulumi";
import { beforeAll, describe, expect, it } from "vitest";

interface Registered {
  type: string;
  name: string;
  inputs: Record<string, unknown>;
}
const registered: Registered[] = [];
const SECRET_SIG = { "4dabf18193072939515e22adb298388d": "1b47061264138c4ac30d75fd1eb44270" };

beforeAll(async () => {
  await pulumi.runtime.setMocks(
    {
      newResource(args) {
        registered.push({ type: args.type, name: args.name, inputs: args.inputs });
        return { id: `kube-system/${args.name}`, state: { ...args.inputs, ready: 2, total: 2 } };
      },
      call: () => ({}),
    },
    "project",
    "stack",
    false,
  );
});

describe("PrePullSet", () => {
  it("registers a dynamic resource named after the resource, whose provider requires the lifecycle by package name", async () => {
    const { PrePullSet } = await import("../../../../provider/resources/prePullSet");
    const set = new PrePullSet("core", { images: ["127.0.0.1:5000/busybox:1.35"], agentRegistry: "127.0.0.1:5000" });
    expect(await new Promise((r) => set.ready.apply(r))).toBe(2);
    const r = registered.find((x) => x.name === "core")!;
    expect(r.type).toBe("pulumi-nodejs:dynamic/imageyard:PrePullSet");
    expect(r.inputs.name).toBe("core");
    expect(r.inputs.images).toEqual(["127.0.0.1:5000/busybox:1.35"]);
    const code = String(r.inputs.__provider);
    expect(code).toContain('"imageyard/provider/resources/prePullSet.lifecycle"');
    expect(code).not.toContain("buildDaemonSet");
    expect(code.length).toBeLessThan(20_000);
  });

  it("makes a list holding credentials, and the kubeconfig, secret", async () => {
    const { PrePullSet } = await import("../../../../provider/resources/prePullSet");
    const set = new PrePullSet("private", {
      name: "private-set",
      images: [{ ref: "127.0.0.1:5001/app:v1", auth: { username: "u", password: "plain" } }],
      kubeconfig: "apiVersion: v1",
      agentRegistry: "127.0.0.1:5000",
    });
    await new Promise((resolve) => set.urn.apply(resolve));
    const r = registered.find((x) => x.name === "private")!;
    expect(r.inputs.name).toBe("private-set");
    expect(r.inputs.images).toEqual({
      ...SECRET_SIG,
      value: [{ ref: "127.0.0.1:5001/app:v1", auth: { username: "u", password: "plain" } }],
    });
    expect(r.inputs.kubeconfig).toEqual({ ...SECRET_SIG, value: "apiVersion: v1" });
  });
});
