import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { delimiter, join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { isImageyardError } from "../../../../provider/http/errors";
import { configPaths, fromConfig, keyHost, lookupCredentials, runCredentialHelper, serverUrl } from "../../../../provider/oci/dockerconfig";

let dir: string;
let env: NodeJS.ProcessEnv;
const b64 = (s: string) => Buffer.from(s).toString("base64");

// A fake credential helper speaking docker's protocol: "get" as argv[1], the server URL on stdin.
const HELPER = `#!/bin/sh
read -r server
echo "$1 $server" >> "$HELPER_LOG"
case "$server" in
  https://index.docker.io/v1/) echo '{"ServerURL":"https://index.docker.io/v1/","Username":"hubuser","Secret":"hubpass"}' ;;
  tok.test) echo '{"ServerURL":"tok.test","Username":"<token>","Secret":"refresh-xyz"}' ;;
  store.test) echo '{"ServerURL":"store.test","Username":"storeuser","Secret":"storepass"}' ;;
  broken.test) echo 'not json' ;;
  crash.test) echo 'boom: keychain locked' >&2; exit 3 ;;
  *) echo "credentials not found in native keychain"; exit 1 ;;
esac
`;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "iy-dockerconfig-"));
  const bin = join(dir, "bin");
  mkdirSync(bin);
  writeFileSync(join(bin, "docker-credential-test"), HELPER);
  chmodSync(join(bin, "docker-credential-test"), 0o755);
  env = { PATH: `${bin}${delimiter}${process.env.PATH ?? ""}`, HOME: join(dir, "home"), HELPER_LOG: join(dir, "helper.log") };
});

afterAll(() => rmSync(dir, { recursive: true, force: true }));

function writeConfig(name: string, doc: unknown): string {
  const p = join(dir, name);
  writeFileSync(p, JSON.stringify(doc));
  return p;
}

describe("docker config lookup", () => {
  it("decodes base64 auth for a host key", async () => {
    const path = writeConfig("c1.json", { auths: { "127.0.0.1:5002": { auth: b64("mirror:s3:cret") } } });
    const found = await lookupCredentials("127.0.0.1:5002", { path, env });
    expect(found).toEqual({ credentials: { username: "mirror", password: "s3:cret" }, source: path });
  });

  it("matches docker.io under https://index.docker.io/v1/", async () => {
    const path = writeConfig("c2.json", { auths: { "https://index.docker.io/v1/": { auth: b64("hub:pw") } } });
    expect((await lookupCredentials("docker.io", { path, env }))?.credentials).toEqual({ username: "hub", password: "pw" });
  });

  it("matches keys written as URLs with a scheme and path, and not other hosts", async () => {
    const path = writeConfig("c3.json", {
      auths: { "https://ghcr.io/v2/": { username: "u", password: "p" }, "quay.io": { identitytoken: "idt" } },
    });
    expect((await lookupCredentials("ghcr.io", { path, env }))?.credentials).toEqual({ username: "u", password: "p" });
    expect((await lookupCredentials("quay.io", { path, env }))?.credentials).toEqual({ identityToken: "idt" });
    expect(await lookupCredentials("ghcr.io.evil", { path, env })).toBeUndefined();
  });

  it("reads registrytoken as a bearer token", async () => {
    const path = writeConfig("c4.json", { auths: { "r.test": { registrytoken: "rt" } } });
    expect((await lookupCredentials("r.test", { path, env }))?.credentials).toEqual({ registryToken: "rt" });
  });

  it("prefers credHelpers[host] over auths and passes the server URL on stdin", async () => {
    const path = writeConfig("c5.json", {
      auths: { "https://index.docker.io/v1/": { auth: b64("file:pw") } },
      credHelpers: { "docker.io": "test" },
    });
    const found = await lookupCredentials("docker.io", { path, env });
    expect(found?.credentials).toEqual({ username: "hubuser", password: "hubpass" });
    expect(found?.source).toMatch(/docker-credential-test/);
    expect(readFileSync(env.HELPER_LOG!, "utf8")).toContain("get https://index.docker.io/v1/");
  });

  it("turns the helper's <token> username into an identity token", async () => {
    const path = writeConfig("c6.json", { credHelpers: { "tok.test": "test" } });
    expect((await lookupCredentials("tok.test", { path, env }))?.credentials).toEqual({ identityToken: "refresh-xyz" });
  });

  it("falls back to credsStore when no auths entry has credentials", async () => {
    const path = writeConfig("c7.json", { auths: { "store.test": {} }, credsStore: "test" });
    expect((await lookupCredentials("store.test", { path, env }))?.credentials).toEqual({ username: "storeuser", password: "storepass" });
  });

  it("treats the helper's 'credentials not found' as no credentials", async () => {
    const path = writeConfig("c8.json", { credsStore: "test" });
    expect(await lookupCredentials("nothing.test", { path, env })).toBeUndefined();
  });

  it("reports a failing, garbled or missing helper as REGISTRY_UNAUTHORIZED naming the helper, not secrets", async () => {
    await expect(runCredentialHelper("test", "crash.test", env)).rejects.toThrow(
      /docker-credential-test: it failed \(boom: keychain locked\)/,
    );
    await expect(runCredentialHelper("test", "broken.test", env)).rejects.toThrow(/other than JSON/);
    const missing = await runCredentialHelper("absent", "x.test", env).catch((e) => e);
    expect(isImageyardError(missing, "REGISTRY_UNAUTHORIZED")).toBe(true);
    expect(missing.message).toMatch(/docker-credential-absent is not on PATH/);
    await expect(runCredentialHelper("../evil", "x.test", env)).rejects.toThrow(/invalid name/);
  });

  it("searches REGISTRY_AUTH_FILE, containers auth.json, then DOCKER_CONFIG, and skips absent files", async () => {
    const xdg = join(dir, "xdg");
    mkdirSync(join(xdg, "containers"), { recursive: true });
    writeFileSync(join(xdg, "containers", "auth.json"), JSON.stringify({ auths: { "a.test": { auth: b64("podman:pw") } } }));
    const dockerDir = join(dir, "dockercfg");
    mkdirSync(dockerDir);
    writeFileSync(
      join(dockerDir, "config.json"),
      JSON.stringify({ auths: { "a.test": { auth: b64("docker:pw") }, "b.test": { auth: b64("docker:pw2") } } }),
    );
    const e2 = { ...env, XDG_RUNTIME_DIR: xdg, DOCKER_CONFIG: dockerDir, REGISTRY_AUTH_FILE: join(dir, "absent.json") };
    expect(configPaths(e2)).toEqual([join(dir, "absent.json"), join(xdg, "containers", "auth.json"), join(dockerDir, "config.json")]);
    expect((await lookupCredentials("a.test", { env: e2 }))?.credentials.username).toBe("podman");
    expect((await lookupCredentials("b.test", { env: e2 }))?.credentials.username).toBe("docker");
    expect(configPaths({ HOME: "/h" })).toEqual(["/h/.docker/config.json"]);
  });

  it("rejects an explicit config that is missing or not JSON with INVALID_INPUT", async () => {
    await expect(lookupCredentials("a.test", { path: join(dir, "nope.json"), env })).rejects.toThrow(/read docker config .*nope\.json/);
    writeFileSync(join(dir, "bad.json"), "{");
    await expect(lookupCredentials("a.test", { path: join(dir, "bad.json"), env })).rejects.toThrow(/not valid JSON/);
    const bad = writeConfig("c9.json", { auths: { "a.test": { auth: b64("nocolon") } } });
    await expect(lookupCredentials("a.test", { path: bad, env })).rejects.toThrow(/not base64 of user:password/);
  });

  it("fromConfig and the key helpers agree with docker's naming", async () => {
    expect(keyHost("https://Index.Docker.io/v1/")).toBe("index.docker.io");
    expect(keyHost("127.0.0.1:5002")).toBe("127.0.0.1:5002");
    expect(serverUrl("docker.io")).toBe("https://index.docker.io/v1/");
    expect(serverUrl("ghcr.io")).toBe("ghcr.io");
    expect(await fromConfig({}, "ghcr.io", "mem")).toBeUndefined();
  });
});
