// The tag filter of TagSync: regex on the whole tag, semver ranges (npm's common subset), newest N.
import { describe, expect, it } from "vitest";
import { selectTags, semverRange, parseVersion } from "../../../components/tagFilter";

const TAGS = ["3.18.4", "3.19.0", "3.19.1", "3.20.0-rc1", "3.20.0", "3.20.3", "v4.0.0", "latest", "edge", "3.19.1-debug", "sha256-abc.sig"];

describe("tag selection", () => {
  it("applies semver ranges: comparators, ^, ~, x-ranges and ||, prereleases only when asked", () => {
    expect(selectTags(TAGS, { semver: ">=3.19 <4" })).toEqual(["3.20.3", "3.20.0", "3.19.1", "3.19.0"]);
    expect(selectTags(TAGS, { semver: "^3.19.0" })).toEqual(["3.20.3", "3.20.0", "3.19.1", "3.19.0"]);
    expect(selectTags(TAGS, { semver: "~3.19.0" })).toEqual(["3.19.1", "3.19.0"]);
    expect(selectTags(TAGS, { semver: "3.18.x || >=4" })).toEqual(["v4.0.0", "3.18.4"]);
    expect(selectTags(TAGS, { semver: "~3.20.0-rc1" })).toEqual(["3.20.3", "3.20.0", "3.20.0-rc1"]);
  });

  it("matches regexes against the whole tag, excludes, and keeps the newest N", () => {
    expect(selectTags(TAGS, { include: "3\\.19\\..*" })).toEqual(["3.19.1", "3.19.1-debug", "3.19.0"]);
    expect(selectTags(TAGS, { include: "3\\.19\\..*", exclude: ".*-debug" })).toEqual(["3.19.1", "3.19.0"]);
    expect(selectTags(TAGS, { include: "edge" })).toEqual(["edge"]);
    expect(selectTags(TAGS, { semver: ">=3", latest: 2 })).toEqual(["v4.0.0", "3.20.3"]);
  });

  it("rejects a range it cannot read, naming the part", () => {
    expect(() => semverRange(">=1.2 banana")).toThrow(/"banana" is not a version comparator/);
    expect(parseVersion("latest")).toBeUndefined();
  });
});
