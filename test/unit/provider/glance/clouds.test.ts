// clouds.yaml / secure.yaml / OS_* resolution, as openstacksdk users expect it, on temp directories.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { isImageyardError } from "../../../../provider/http/errors";
import { authFromEnv, deepMerge, findConfigFile, resolveCloud } from "../../../../provider/glance/clouds";

let root: string;
let cwd: string;
let home: string;
let sys: string;
beforeEach(() => {
  root = mkdtempSync(join(tmpdir(), "iy-clouds-unit-"));
  cwd = join(root, "project");
  home = join(root, "home");
  sys = join(root, "etc-openstack");
  for (const d of [cwd, join(home, ".config", "openstack"), sys]) mkdirSync(d, { recursive: true });
});
afterEach(() => rmSync(root, { recursive: true, force: true }));

const where = (env: Record<string, string> = {}) => ({ cwd, home, systemDir: sys, env });

const CLOUDS = `clouds:
  prod:
    auth:
      auth_url: https://keystone.example:5000
      username: alice
      project_name: images
      user_domain_name: Users
      project_domain_id: default
    region_name: RegionTwo
    interface: internal
    verify: false
  lab:
    auth_type: v3applicationcredential
    auth:
      auth_url: https://lab:5000/v3
      application_credential_id: ac-1
    regions: [LabOne]
`;

describe("resolveCloud", () => {
  it("merges secure.yaml over clouds.yaml for the named cloud, mapping snake_case keys", () => {
    writeFileSync(join(home, ".config", "openstack", "clouds.yaml"), CLOUDS);
    writeFileSync(join(home, ".config", "openstack", "secure.yaml"), "clouds:\n  prod:\n    auth:\n      password: s3cret\n");
    const { auth, source } = resolveCloud({ cloud: "prod", ...where() });
    expect(auth).toEqual({
      authUrl: "https://keystone.example:5000",
      username: "alice",
      password: "s3cret",
      projectName: "images",
      userDomainName: "Users",
      projectDomainId: "default",
      region: "RegionTwo",
      interface: "internal",
      insecure: true,
    });
    expect(source).toContain("cloud prod in");
    expect(source).not.toContain("s3cret");
  });

  it("looks in ./ before ~/.config/openstack before /etc/openstack, like openstacksdk", () => {
    writeFileSync(join(sys, "clouds.yaml"), "clouds:\n  x:\n    auth:\n      auth_url: https://from-etc\n");
    expect(resolveCloud({ cloud: "x", ...where() }).auth.authUrl).toBe("https://from-etc");
    writeFileSync(join(home, ".config", "openstack", "clouds.yml"), "clouds:\n  x:\n    auth:\n      auth_url: https://from-home\n");
    expect(resolveCloud({ cloud: "x", ...where() }).auth.authUrl).toBe("https://from-home");
    writeFileSync(join(cwd, "clouds.yaml"), "clouds:\n  x:\n    auth:\n      auth_url: https://from-cwd\n");
    expect(resolveCloud({ cloud: "x", ...where() }).auth.authUrl).toBe("https://from-cwd");
  });

  it("OS_CLIENT_CONFIG_FILE names the file and OS_CLOUD the cloud", () => {
    const f = join(root, "elsewhere.yaml");
    writeFileSync(f, CLOUDS);
    const { auth } = resolveCloud(where({ OS_CLIENT_CONFIG_FILE: f, OS_CLOUD: "lab" }));
    expect(auth).toEqual({
      authUrl: "https://lab:5000/v3",
      authType: "v3applicationcredential",
      applicationCredentialId: "ac-1",
      region: "LabOne",
    });
  });

  it("without a cloud name the OS_* variables are used, and explicit values win over them", () => {
    const env = {
      OS_AUTH_URL: "https://env:5000/v3",
      OS_USERNAME: "bob",
      OS_PASSWORD: "pw",
      OS_PROJECT_NAME: "p",
      OS_USER_DOMAIN_NAME: "Default",
      OS_REGION_NAME: "R1",
      OS_INTERFACE: "public",
      OS_INSECURE: "true",
    };
    const r = resolveCloud({ ...where(env), explicit: { region: "R2", password: undefined } });
    expect(r.auth).toMatchObject({
      authUrl: "https://env:5000/v3",
      username: "bob",
      password: "pw",
      projectName: "p",
      region: "R2",
      insecure: true,
    });
    expect(r.source).toBe("explicit credentials over OS_* environment variables");
  });

  it("an unknown cloud name lists the known ones; no config at all says where it looked", () => {
    writeFileSync(join(cwd, "clouds.yaml"), CLOUDS);
    const e = (() => {
      try {
        resolveCloud({ cloud: "nope", ...where() });
      } catch (err) {
        return err;
      }
    })();
    expect(isImageyardError(e, "CLOUD_CONFIG")).toBe(true);
    expect((e as Error).message).toContain('no cloud named "nope" (it has: lab, prod)');
    rmSync(join(cwd, "clouds.yaml"));
    expect(() => resolveCloud({ cloud: "prod", ...where() })).toThrow(/no clouds.yaml found \(looked in .*project.*\.config\/openstack/);
    expect(() => resolveCloud(where())).toThrow(/no auth URL/);
  });

  it("invalid YAML is a CLOUD_CONFIG error naming the file", () => {
    writeFileSync(join(cwd, "clouds.yaml"), "clouds: [unclosed\n");
    expect(() => resolveCloud({ cloud: "x", ...where() })).toThrow(/clouds.yaml: not valid YAML/);
  });
});

describe("helpers", () => {
  it("deepMerge merges nested mappings and replaces the rest", () => {
    expect(deepMerge({ a: { b: 1, c: 2 }, l: [1] }, { a: { c: 3 }, l: [2] })).toEqual({ a: { b: 1, c: 3 }, l: [2] });
  });

  it("authFromEnv reads legacy tenant names and endpoint type", () => {
    expect(authFromEnv({ OS_TENANT_NAME: "t", OS_ENDPOINT_TYPE: "internalURL" })).toEqual({ projectName: "t", interface: "internalURL" });
  });

  it("findConfigFile fails clearly when OS_CLIENT_CONFIG_FILE names a missing file", () => {
    expect(() => findConfigFile("clouds", where({ OS_CLIENT_CONFIG_FILE: join(root, "missing.yaml") }))).toThrow(
      /OS_CLIENT_CONFIG_FILE names a file that does not exist/,
    );
  });
});
