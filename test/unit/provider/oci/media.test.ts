import { describe, expect, it } from "vitest";
import * as mt from "../../../../provider/oci/media";

describe("media types", () => {
  it("sends all four manifest types in Accept", () => {
    for (const t of [mt.OCI_INDEX, mt.DOCKER_MANIFEST_LIST, mt.OCI_MANIFEST, mt.DOCKER_MANIFEST]) expect(mt.MANIFEST_ACCEPT).toContain(t);
  });

  it("classifies indexes and manifests ignoring parameters and case", () => {
    expect(mt.isIndex(`${mt.OCI_INDEX}; charset=utf-8`)).toBe(true);
    expect(mt.isIndex(mt.DOCKER_MANIFEST_LIST.toUpperCase())).toBe(true);
    expect(mt.isIndex(mt.OCI_MANIFEST)).toBe(false);
    expect(mt.isManifest(mt.DOCKER_MANIFEST)).toBe(true);
    expect(mt.isManifest(mt.OCI_CONFIG)).toBe(false);
    expect(mt.isManifest(undefined)).toBe(false);
  });
});

describe("media type helpers", () => {
  it("baseMediaType drops parameters, spaces and case", () => {
    expect(mt.baseMediaType(" Application/JSON ; charset=utf-8")).toBe("application/json");
    expect(mt.baseMediaType(undefined)).toBe("");
  });

  it("recognises schema 1 in both its forms", () => {
    expect(mt.isSchema1(mt.DOCKER_SCHEMA1)).toBe(true);
    expect(mt.isSchema1(mt.DOCKER_SCHEMA1_SIGNED)).toBe(true);
    expect(mt.isSchema1(mt.DOCKER_MANIFEST)).toBe(false);
  });

  it("tells Docker types from OCI types", () => {
    expect(mt.isDockerType(mt.DOCKER_MANIFEST_LIST)).toBe(true);
    expect(mt.isDockerType(mt.OCI_INDEX)).toBe(false);
  });
});
