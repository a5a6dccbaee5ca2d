import { describe, expect, it } from "vitest";
import {
  Authenticator,
  basicHeader,
  clearAuthCache,
  credentialsKey,
  mergeScopes,
  parseChallenges,
  repositoryScope,
  scopesCover,
} from "../../../../provider/oci/auth";

describe("parseChallenges", () => {
  it("reads a Bearer challenge with quoted realm, service and scope", () => {
    expect(parseChallenges('Bearer realm="https://auth.test/token",service="registry.test",scope="repository:foo/bar:pull"')).toEqual([
      { scheme: "bearer", params: { realm: "https://auth.test/token", service: "registry.test", scope: "repository:foo/bar:pull" } },
    ]);
  });

  it("keeps commas and spaces inside quoted values (a mount's two scopes)", () => {
    const [c] = parseChallenges(
      'Bearer realm="https://a.test/t",service="r",scope="repository:foo/bar:pull,push repository:other/repo:pull",error="insufficient_scope"',
    );
    expect(c?.params.scope).toBe("repository:foo/bar:pull,push repository:other/repo:pull");
    expect(c?.params.error).toBe("insufficient_scope");
  });

  it("reads a Basic challenge and lowercases the scheme and parameter names", () => {
    expect(parseChallenges('BASIC Realm="Registry Realm"')).toEqual([{ scheme: "basic", params: { realm: "Registry Realm" } }]);
  });

  it("splits several challenges in one header and across header lines", () => {
    const one = parseChallenges('Basic realm="r1", Bearer realm="https://t.test/token", service="svc"');
    expect(one.map((c) => c.scheme)).toEqual(["basic", "bearer"]);
    expect(one[1]?.params).toEqual({ realm: "https://t.test/token", service: "svc" });
    const many = parseChallenges(['Basic realm="a"', 'Bearer realm="b",service=s2']);
    expect(many.map((c) => [c.scheme, c.params.realm])).toEqual([
      ["basic", "a"],
      ["bearer", "b"],
    ]);
    expect(many[1]?.params.service).toBe("s2");
  });

  it("reads unquoted values, escaped quotes and empty input", () => {
    expect(parseChallenges("Bearer realm=https://t.test/token,service=reg")[0]?.params).toEqual({
      realm: "https://t.test/token",
      service: "reg",
    });
    expect(parseChallenges('Basic realm="say \\"hi\\""')[0]?.params.realm).toBe('say "hi"');
    expect(parseChallenges(undefined)).toEqual([]);
    expect(parseChallenges("")).toEqual([]);
  });

  it("keeps a token68 credential form apart from parameters", () => {
    const cs = parseChallenges("Negotiate abc123==, Basic realm=x");
    expect(cs).toEqual([
      { scheme: "negotiate", params: { token68: "abc123==" } },
      { scheme: "basic", params: { realm: "x" } },
    ]);
  });
});

describe("scopes", () => {
  it("repositoryScope lists each action once", () => {
    expect(repositoryScope("team/app", ["pull", "push", "pull"])).toBe("repository:team/app:pull,push");
  });

  it("mergeScopes unions actions per resource and sorts resources", () => {
    expect(mergeScopes(["repository:a:pull"], ["repository:a:push", "repository:b:pull"])).toEqual([
      "repository:a:pull,push",
      "repository:b:pull",
    ]);
    expect(mergeScopes(["repository:foo/bar:push,pull repository:other/repo:pull"])).toEqual([
      "repository:foo/bar:pull,push",
      "repository:other/repo:pull",
    ]);
    expect(mergeScopes(["registry:catalog:*"], ["repository:x:delete"])).toEqual(["registry:catalog:*", "repository:x:delete"]);
    expect(mergeScopes([], ["garbage"])).toEqual([]);
  });

  it("keeps a registry host's port inside the resource name", () => {
    expect(mergeScopes(["repository:host:5000/a:pull"], ["repository:host:5000/a:push"])).toEqual(["repository:host:5000/a:pull,push"]);
  });

  it("scopesCover accepts supersets and '*' and refuses missing actions or resources", () => {
    expect(scopesCover(["repository:a:pull,push"], ["repository:a:pull"])).toBe(true);
    expect(scopesCover(["repository:a:*"], ["repository:a:delete"])).toBe(true);
    expect(scopesCover(["repository:a:pull"], ["repository:a:pull,push"])).toBe(false);
    expect(scopesCover(["repository:a:pull,push"], ["repository:a:push", "repository:b:pull"])).toBe(false);
    expect(scopesCover(["repository:a:pull"], [])).toBe(true);
  });
});

describe("credential helpers for headers and cache keys", () => {
  it("basicHeader is base64 of user:password", () => {
    expect(basicHeader("mirror", "s3cret")).toBe(`Basic ${Buffer.from("mirror:s3cret").toString("base64")}`);
  });

  it("credentialsKey separates credentials without revealing them", () => {
    const a = credentialsKey({ username: "u", password: "p1" });
    const b = credentialsKey({ username: "u", password: "p2" });
    expect(a).not.toBe(b);
    expect(a).not.toContain("p1");
    expect(credentialsKey(undefined)).toBe("anonymous");
    expect(credentialsKey({})).toBe("anonymous");
  });
});

describe("credentials and a token realm on another host", () => {
  const challenge = (realm: string) => ({
    status: 401,
    headers: { "www-authenticate": `Bearer realm="${realm}",service="s"` },
    body: null as never,
  });
  const auth = (withCreds: boolean, insecureHosts: string[] = []) =>
    new Authenticator({
      origin: "127.0.0.1:5000",
      registry: "127.0.0.1:5000",
      credentialsHint: "targetAuth",
      insecureHosts,
      credentials: async () => ({ credentials: withCreds ? { username: "robot", password: "S3cret" } : undefined, source: "targetAuth" }),
    });
  const attempt = async (a: Authenticator, realm: string) => {
    clearAuthCache();
    return a.onUnauthorized(challenge(realm), ["repository:x:pull"], undefined).catch((e: Error & { code?: string }) => e);
  };

  it("refuses to send credentials to another host over plain http, and says why and what to do", async () => {
    const e = (await attempt(auth(true), "http://127.0.0.3:9/token")) as Error & { code: string };
    expect(e.code).toBe("REGISTRY_UNAUTHORIZED");
    expect(e.message).toMatch(/another host over plain http; imageyard refuses/);
    expect(e.message).toContain("--insecure-host 127.0.0.3:9");
    expect(e.message).not.toContain("S3cret");
  });

  it("lets anonymous token requests, the registry's own host, and hosts named insecure through (then the realm is simply down)", async () => {
    for (const [a, realm] of [
      [auth(false), "http://127.0.0.3:9/token"],
      [auth(true), "http://127.0.0.1:9/token"],
      [auth(true, ["127.0.0.3:9"]), "http://127.0.0.3:9/token"],
    ] as const) {
      const e = (await attempt(a, realm)) as Error & { code: string };
      expect(e.code, realm).toBe("NETWORK_ERROR");
    }
  });
});
