import { describe, expect, it } from "vitest";
import { isImageyardError } from "../../../../provider/http/errors";
import {
  apiHost,
  familiarName,
  formatReference,
  identifierOf,
  isDigest,
  isLoopbackRegistry,
  parseReference,
  repositoryOf,
  withDigest,
  withTag,
} from "../../../../provider/oci/reference";

const D = `sha256:${"a".repeat(64)}`;

describe("parseReference normalises like Docker", () => {
  const table: Array<[string, string]> = [
    ["alpine", "docker.io/library/alpine:latest"],
    ["alpine:3.20", "docker.io/library/alpine:3.20"],
    ["library/alpine", "docker.io/library/alpine:latest"],
    ["bitnami/redis:7", "docker.io/bitnami/redis:7"],
    ["docker.io/alpine", "docker.io/library/alpine:latest"],
    ["index.docker.io/library/alpine:3", "docker.io/library/alpine:3"],
    ["registry-1.docker.io/foo/bar", "docker.io/foo/bar:latest"],
    ["localhost/x", "localhost/x:latest"],
    ["localhost:5000/x/y:t", "localhost:5000/x/y:t"],
    ["127.0.0.1:5001/team/app:v1", "127.0.0.1:5001/team/app:v1"],
    ["ghcr.io/org/app", "ghcr.io/org/app:latest"],
    [`host:5000/a/b@${D}`, `host:5000/a/b@${D}`],
    [`alpine:3.20@${D}`, `docker.io/library/alpine:3.20@${D}`],
    [`alpine@${D}`, `docker.io/library/alpine@${D}`],
    ["[::1]:5000/a:b", "[::1]:5000/a:b"],
    ["quay.io/a/b/c/d:1.0-rc_1", "quay.io/a/b/c/d:1.0-rc_1"],
    ["my.registry/a__b/c-d/e.f", "my.registry/a__b/c-d/e.f:latest"],
    ["Foo/bar", "Foo/bar:latest"], // an uppercase first component is a host, as in Docker
  ];
  for (const [input, want] of table) {
    it(`"${input}" → ${want}`, () => {
      expect(formatReference(parseReference(input))).toBe(want);
    });
  }

  it("keeps a digest-only reference without inventing a tag", () => {
    const r = parseReference(`host:5000/a/b@${D}`);
    expect(r).toEqual({ registry: "host:5000", repository: "a/b", digest: D });
    expect(identifierOf(r)).toBe(D);
  });

  it("splits a port from a tag by the last '/'", () => {
    expect(parseReference("host:5000/app")).toEqual({ registry: "host:5000", repository: "app", tag: "latest" });
  });
});

describe("parseReference rejects bad input with INVALID_INPUT and an example", () => {
  const bad: Array<[string, RegExp]> = [
    ["", /empty/],
    [" alpine", /white space/],
    ["UPPER", /lowercase/],
    ["docker.io/Library/alpine", /lowercase/],
    ["alpine:", /not a valid tag/],
    ["alpine:-x", /not a valid tag/],
    [`alpine:${"t".repeat(129)}`, /not a valid tag/],
    ["alpine@sha256:abc", /64 lowercase hex/],
    [`alpine@md5:${"a".repeat(32)}`, /unsupported digest algorithm/],
    ["alpine@", /not a digest/],
    ["https://ghcr.io/org/app", /URL scheme/],
    [`a${"/b".repeat(0)}//c`, /not a valid repository path component/],
    ["ghcr.io/", /repository name is missing/],
    ["ghcr.io/a/-b", /not a valid repository path component/],
    ["a".repeat(64), /image ID/],
    [`x.io/${"a".repeat(260)}`, /longer than 255/],
    ["-bad.host:5000/x", /not a valid registry/],
  ];
  for (const [input, why] of bad) {
    it(`rejects ${JSON.stringify(input.length > 40 ? `${input.slice(0, 40)}…` : input)}`, () => {
      let err: unknown;
      try {
        parseReference(input);
      } catch (e) {
        err = e;
      }
      expect(isImageyardError(err, "INVALID_INPUT")).toBe(true);
      expect((err as Error).message).toMatch(why);
      expect((err as Error).message).toMatch(/e\.g\. "alpine:3\.20"/);
    });
  }
});

describe("reference helpers", () => {
  const r = parseReference("127.0.0.1:5001/team/app:v1");

  it("withTag replaces tag and drops any digest", () => {
    expect(formatReference(withTag(parseReference(`a.io/x:1@${D}`), "2"))).toBe("a.io/x:2");
    expect(() => withTag(r, "bad tag")).toThrow(/not a valid tag/);
  });

  it("withDigest pins while keeping the tag for readability", () => {
    expect(formatReference(withDigest(r, D))).toBe(`127.0.0.1:5001/team/app:v1@${D}`);
    expect(() => withDigest(r, "sha256:zz")).toThrow(/64 lowercase hex/);
  });

  it("repositoryOf is registry/repo", () => {
    expect(repositoryOf(r)).toBe("127.0.0.1:5001/team/app");
  });

  it("familiarName shortens Docker Hub names only", () => {
    expect(familiarName(parseReference("alpine:3"))).toBe("alpine:3");
    expect(familiarName(parseReference("bitnami/redis"))).toBe("bitnami/redis:latest");
    expect(familiarName(r)).toBe("127.0.0.1:5001/team/app:v1");
  });

  it("apiHost maps docker.io to its API host and leaves others alone", () => {
    expect(apiHost("docker.io")).toBe("registry-1.docker.io");
    expect(apiHost("index.docker.io")).toBe("registry-1.docker.io");
    expect(apiHost("ghcr.io")).toBe("ghcr.io");
    expect(apiHost("127.0.0.1:5001")).toBe("127.0.0.1:5001");
  });

  it("isDigest tells digests from tags", () => {
    expect(isDigest(D)).toBe(true);
    expect(isDigest("v1.2")).toBe(false);
    expect(isDigest("latest")).toBe(false);
  });

  it("isLoopbackRegistry knows localhost, 127/8 and ::1 but not other hosts", () => {
    for (const h of ["localhost", "localhost:5000", "127.0.0.1:5001", "127.1.2.3", "[::1]:5000", "reg.localhost:80"])
      expect(isLoopbackRegistry(h)).toBe(true);
    for (const h of ["ghcr.io", "10.0.0.1:5000", "localhost.example.com", "docker.io"]) expect(isLoopbackRegistry(h)).toBe(false);
  });
});

describe("credentials typed into a reference are never echoed", () => {
  it("refuses user info, redacts it, and says where credentials go", async () => {
    const { parseLocation } = await import("../../../../provider/oci/location");
    for (const input of [
      "robot:S3cret@127.0.0.1:5602/repo",
      "docker://robot:S3cret@127.0.0.1:5602/repo:v1",
      "https://robot:S3cret@reg.test/team/app",
      "robot:pa@ss/x@reg.test/a",
    ]) {
      let err: unknown;
      try {
        parseLocation(input, { credentialsHint: "--dest-creds" });
      } catch (e) {
        err = e;
      }
      expect(isImageyardError(err, "INVALID_INPUT"), input).toBe(true);
      const msg = (err as Error).message;
      expect(msg).not.toContain("S3cret");
      expect(msg).not.toContain("pa@ss");
      expect(msg).toContain("***@");
      expect(msg).toContain("Put the credentials in --dest-creds instead");
    }
  });

  it("names both inputs when the side is not known, and leaves digests alone", async () => {
    const { redactUserinfo, hasUserinfo } = await import("../../../../provider/oci/reference");
    expect(() => parseReference("u:p@reg.test/a")).toThrow(/--src-creds \/ --dest-creds \(CLI\) or sourceAuth \/ targetAuth/);
    expect(hasUserinfo(`alpine@${D}`)).toBe(false);
    expect(redactUserinfo(`reg.test/a@${D}`)).toBe(`reg.test/a@${D}`);
    expect(redactUserinfo("docker://u:p@reg.test/a")).toBe("docker://***@reg.test/a");
  });
});
