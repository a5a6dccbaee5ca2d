import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { parseCommand, secretsOf, UsageError } from "../../../cli/args";
import { main } from "../../../cli/imageyard";
import { forgetKnownLocations } from "../../../provider/oci/copy";
import { FakeRegistry } from "../provider/oci/fakeregistry";
import { seedFake } from "../provider/oci/fakeimages";

describe("parseCommand", () => {
  it("maps skopeo's flags onto a copy request", () => {
    const cmd = parseCommand([
      "copy",
      "docker://127.0.0.1:5001/team/app:v1",
      "docker://127.0.0.1:5002/mirror/app",
      "--platform",
      "linux/amd64,linux/arm64",
      "--platform=linux/arm/v7",
      "--src-creds",
      "alice:pa:ss",
      "--dest-creds=bob:secret",
      "--src-tls-verify=false",
      "--dest-cert-dir",
      "/etc/certs",
      "--no-signatures",
      "-q",
      "--concurrency",
      "2",
    ]);
    expect(cmd).toEqual({
      kind: "copy",
      quiet: true,
      json: false,
      request: {
        source: "docker://127.0.0.1:5001/team/app:v1",
        target: "docker://127.0.0.1:5002/mirror/app",
        platforms: ["linux/amd64", "linux/arm64", "linux/arm/v7"],
        copySignatures: false,
        concurrency: 2,
        sourceOptions: { credentialsInput: "--src-creds", credentials: { username: "alice", password: "pa:ss" }, tls: { insecure: true } },
        targetOptions: { credentialsInput: "--dest-creds", credentials: { username: "bob", password: "secret" }, certDir: "/etc/certs" },
      },
    });
  });

  it("keeps TLS verification on unless told false, and accepts --all", () => {
    const cmd = parseCommand(["copy", "a/b:c", "d/e", "--src-tls-verify", "--dest-tls-verify=true", "--all"]);
    expect(cmd.kind === "copy" && cmd.request.sourceOptions?.tls).toBeUndefined();
    expect(cmd.kind === "copy" && cmd.request.platforms).toBeUndefined();
  });

  it("reads --src-no-creds as anonymous access, and refuses it next to --src-creds", () => {
    const cmd = parseCommand(["copy", "a/b:c", "d/e", "--src-no-creds"]);
    expect(cmd.kind === "copy" && cmd.request.sourceOptions?.dockerConfig).toBe(false);
    expect(() => parseCommand(["copy", "a/b:c", "d/e", "--src-no-creds", "--src-creds", "u:p"])).toThrow(/contradicts/);
  });

  it("rejects bad usage with a message naming the flag", () => {
    expect(() => parseCommand(["copy", "a"])).toThrow(UsageError);
    expect(() => parseCommand(["copy", "a", "b", "--bogus"])).toThrow(/unknown flag --bogus/);
    expect(() => parseCommand(["copy", "a", "b", "--src-creds", "nocolon"])).toThrow(/--src-creds takes USER:PASS/);
    expect(() => parseCommand(["copy", "a", "b", "--all", "--platform", "linux/amd64"])).toThrow(/contradict/);
    expect(() => parseCommand(["copy", "a", "b", "--src-tls-verify=maybe"])).toThrow(/true or false/);
    expect(() => parseCommand(["frobnicate"])).toThrow(/unknown command/);
  });
});

describe("deadline, rate-limit and credential flags", () => {
  it("reads --timeout and --rate-limit-wait as durations, and --insecure-host for both sides", () => {
    const cmd = parseCommand([
      "copy",
      "a/b:c",
      "d/e",
      "--timeout",
      "90s",
      "--rate-limit-wait=20m",
      "--insecure-host",
      "auth.test:8080",
      "--insecure-host",
      "10.0.0.9",
    ]);
    if (cmd.kind !== "copy") throw new Error(cmd.kind);
    expect(cmd.timeoutMs).toBe(90_000);
    expect(cmd.request.rateLimitBudgetMs).toBe(1_200_000);
    expect(cmd.request.sourceOptions?.insecureHosts).toEqual(["auth.test:8080", "10.0.0.9"]);
    expect(cmd.request.targetOptions?.insecureHosts).toEqual(["auth.test:8080", "10.0.0.9"]);
    expect((parseCommand(["plan", "a/b:c", "d/e", "--timeout", "1h30m"]) as { timeoutMs?: number }).timeoutMs).toBe(5_400_000);
    expect(parseCommand(["copy", "a/b:c", "d/e"])).not.toHaveProperty("timeoutMs");
  });

  it("refuses a duration it cannot read, naming the flag", () => {
    expect(() => parseCommand(["copy", "a", "b", "--timeout", "soon"])).toThrow(/--timeout takes a duration like 90s, 20m or 1h30m/);
    expect(() => parseCommand(["copy", "a", "b", "--rate-limit-wait", "-5"])).toThrow(/--rate-limit-wait takes a duration/);
  });

  it("finds every secret on a command line: --*creds passwords and user info in references", () => {
    const argv = [
      "copy",
      "docker://robot:S3cret@r.test/a",
      "x:p@ss@r.test/b",
      "--src-creds",
      "u:pa:ss",
      "--dest-creds=v:qwerty",
      "--creds",
      "w:zzz9",
    ];
    expect(secretsOf(argv)).toEqual(["S3cret", "p@ss", "pa:ss", "qwerty", "zzz9"]);
  });
});

describe("imageyard CLI against an in-process registry", () => {
  let reg: FakeRegistry;
  beforeEach(async () => {
    forgetKnownLocations();
    reg = await new FakeRegistry({ auth: "basic", users: { alice: { password: "s3cret" } } }).start();
  });
  afterEach(() => reg.stop());

  async function run(argv: string[]): Promise<{ status: number; out: string; err: string }> {
    let out = "";
    let err = "";
    const status = await main(argv, { stdout: (t) => (out += t), stderr: (t) => (err += t) });
    return { status, out, err };
  }

  it("copy prints the digest on stdout and progress on stderr; a second run says up to date", async () => {
    const img = seedFake(reg, "team/app", "v1");
    const creds = ["--src-creds", "alice:s3cret", "--dest-creds", "alice:s3cret", "--src-tls-verify=false", "--dest-tls-verify=false"];
    const first = await run(["copy", `docker://${reg.host}/team/app:v1`, `docker://${reg.host}/mirror/app`, ...creds]);
    expect(first).toMatchObject({ status: 0, out: `${img.digest}\n` });
    expect(first.err).toMatch(/0 blobs to upload \(0 B\), 3 to mount, 0 already there; 1 manifest/);
    expect(first.err).toMatch(/mounted/);
    const second = await run(["copy", `${reg.host}/team/app:v1`, `${reg.host}/mirror/app`, ...creds, "--json"]);
    expect(second.status).toBe(0);
    expect(JSON.parse(second.out)).toMatchObject({ digest: img.digest, upToDate: true, tagRef: `${reg.host}/mirror/app:v1` });
  });

  it("fails with status 1 and an actionable message naming the flag when credentials are wrong, never printing the password", async () => {
    seedFake(reg, "team/app", "v1");
    const r = await run([
      "copy",
      `${reg.host}/team/app:v1`,
      `${reg.host}/mirror/app`,
      "--src-creds",
      "alice:WRONGPASS",
      "--dest-creds",
      "alice:s3cret",
      "--src-tls-verify=false",
      "--dest-tls-verify=false",
      "-q",
    ]);
    expect(r.status).toBe(1);
    expect(r.err).toMatch(
      /registry refused the credentials \(401.*\)\. Check --src-creds for 127\.0\.0\.1:\d+\. \[REGISTRY_UNAUTHORIZED\]/,
    );
    expect(r.err).not.toContain("WRONGPASS");
    expect(r.out).toBe("");
  });

  it("plan shows what a copy would do and writes nothing", async () => {
    seedFake(reg, "team/app", "v1", { layers: 2 });
    const r = await run([
      "plan",
      `${reg.host}/team/app:v1`,
      `${reg.host}/other/app:v9`,
      "--src-creds",
      "alice:s3cret",
      "--dest-creds",
      "alice:s3cret",
      "--src-tls-verify=false",
      "--dest-tls-verify=false",
      "-q",
    ]);
    expect(r.status).toBe(0);
    expect(r.out).toContain("0 blobs to upload (0 B), 3 to mount, 0 already there; 1 manifest");
    expect(reg.manifests.has("other/app")).toBe(false);
  });

  it("inspect prints the digest, and exits 1 for a missing tag", async () => {
    const img = seedFake(reg, "team/app", "v1");
    const flags = ["--creds", "alice:s3cret", "--tls-verify=false"];
    expect(await run(["inspect", `${reg.host}/team/app:v1`, ...flags])).toMatchObject({ status: 0, out: `${img.digest}\n` });
    const missing = await run(["inspect", `${reg.host}/team/app:v2`, ...flags]);
    expect(missing.status).toBe(1);
    expect(missing.err).toMatch(/MANIFEST_UNKNOWN/);
  });

  it("never prints a password typed into a reference, and says where credentials go", async () => {
    const r = await run(["copy", `${reg.host}/team/app:v1`, `robot:S3cret@${reg.host}/repo`, "-q"]);
    expect(r.status).toBe(1);
    expect(r.err).not.toContain("S3cret");
    expect(r.err).toContain("Put the credentials in --dest-creds instead");
    expect(r.err).toContain("[INVALID_INPUT]");
  });

  it("exits 2 on bad usage", async () => {
    const r = await run(["copy", "only-one"]);
    expect(r.status).toBe(2);
    expect(r.err).toMatch(/needs SRC and DST/);
  });
});
