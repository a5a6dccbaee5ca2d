import { describe, expect, it } from "vitest";
import { UNKNOWN } from "../../../../provider/resources/diff";
import { checkTimeouts, timeoutMs, timeoutSeconds } from "../../../../provider/resources/timeouts";

describe("timeouts", () => {
  it("reads seconds and Pulumi-style durations alike", () => {
    expect(timeoutSeconds(90)).toBe(90);
    expect(timeoutSeconds("90")).toBe(90);
    expect(timeoutSeconds("90s")).toBe(90);
    expect(timeoutSeconds("20m")).toBe(1200);
    expect(timeoutSeconds("1h30m")).toBe(5400);
    expect(timeoutSeconds("1.5h")).toBe(5400);
  });

  it("rejects what is not a positive duration", () => {
    for (const bad of [0, -5, Number.NaN, "", "soon", "10 minutes", "m", "0s", true, {}])
      expect(timeoutSeconds(bad), String(bad)).toBeUndefined();
  });

  it("check names the operation that is wrong and lets unknown values through", () => {
    expect(checkTimeouts({ create: "30m", delete: 300 })).toEqual([]);
    expect(checkTimeouts({ create: UNKNOWN })).toEqual([]);
    expect(checkTimeouts({ create: "later", destroy: 5 }).map((f) => f.property)).toEqual(["timeouts.create", "timeouts.destroy"]);
    expect(checkTimeouts(30)[0]?.reason).toMatch(/object \{ create, update, delete \}/);
  });

  it("uses the operation's value, else the default", () => {
    expect(timeoutMs({ update: "2m" }, "update", 60)).toBe(120_000);
    expect(timeoutMs({ update: "2m" }, "create", 60)).toBe(60_000);
    expect(timeoutMs(undefined, "delete", 300)).toBe(300_000);
  });
});
