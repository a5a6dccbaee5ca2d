// The compiled `imageyard` CLI end to end against the test bed: stdout carries the digest, stderr
// the progress and the errors, and the exit status says which.
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { startFaultProxy } from "../../../testbed/faultproxy";
import { digestOf, seedImage, type SeededImage } from "../../../testbed/images";
import { loadRegistryTestbed } from "../../../testbed/registry";

const { upstream, mirror, tls } = loadRegistryTestbed().registries;
const run = `b2c-${Date.now().toString(36)}-${randomBytes(2).toString("hex")}`;
const cli = join(__dirname, "..", "..", "..", "..", "dist", "cli", "imageyard.js");
let image: SeededImage;

function imageyard(args: string[]): Promise<{ status: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    // HOME points at nothing, so no developer's docker config leaks into the test.
    execFile(
      process.execPath,
      [cli, ...args],
      { env: { ...process.env, HOME: "/nonexistent", DOCKER_CONFIG: "/nonexistent" }, timeout: 120_000 },
      (err, stdout, stderr) => {
        resolve({ status: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
      },
    );
  });
}

const mirrorCreds = () => ["--dest-creds", `${mirror.username}:${mirror.password}`];

beforeAll(async () => {
  if (!existsSync(cli)) throw new Error(`${cli} is missing: build first (npx tsc -p .)`);
  image = await seedImage(upstream, `${run}/app:v1`, {
    layers: 2,
    layerSize: "256K",
    platforms: ["linux/amd64", "linux/arm64"],
    seed: "b2-cli",
  });
});

describe("imageyard CLI", () => {
  it("copy prints the digest the registry then serves, and progress on stderr", async () => {
    const r = await imageyard([
      "copy",
      `docker://${image.ref}`,
      `docker://${mirror.host}/${run}/app`,
      "--src-tls-verify=false",
      "--dest-tls-verify=false",
      ...mirrorCreds(),
    ]);
    expect(r.stderr).not.toMatch(/imageyard: /);
    expect(r).toMatchObject({ status: 0, stdout: `${image.digest}\n` });
    expect(r.stderr).toMatch(/blob sha256:[0-9a-f]{12} .*done/);
    expect(await digestOf(mirror, `${run}/app:v1`)).toBe(image.digest);
  });

  it("a second copy reports up to date", async () => {
    const r = await imageyard(["copy", image.ref, `${mirror.host}/${run}/app`, ...mirrorCreds()]);
    expect(r.status).toBe(0);
    expect(r.stderr).toMatch(/up to date at sha256:[0-9a-f]{64}/);
  });

  it("copies one platform with --platform and to the TLS registry with --dest-cert-dir", async () => {
    const r = await imageyard([
      "copy",
      image.ref,
      `${tls.host}/${run}/amd64:v1`,
      "--platform",
      "linux/amd64",
      "--dest-cert-dir",
      tls.certDir!,
      "--dest-creds",
      `${tls.username}:${tls.password}`,
      "-q",
    ]);
    expect(r.status).toBe(0);
    expect(r.stderr).toBe("");
    expect(r.stdout.trim()).not.toBe(image.digest);
    expect(await digestOf(tls, `${run}/amd64:v1`)).toBe(r.stdout.trim());
  });

  it("exits 1 with the registry's reason and the flag to fix for wrong credentials, without echoing them", async () => {
    const r = await imageyard([
      "copy",
      image.ref,
      `${mirror.host}/${run}/denied`,
      "--dest-creds",
      `${mirror.username}:not-the-password`,
      "-q",
    ]);
    expect(r.status).toBe(1);
    expect(r.stdout).toBe("");
    expect(r.stderr).toMatch(
      /registry refused the credentials \(401.*\)\. Check --dest-creds for 127\.0\.0\.1:\d+\. \[REGISTRY_UNAUTHORIZED\]/,
    );
    expect(r.stderr).not.toContain("not-the-password");
  });

  it("exits 1 with MANIFEST_UNKNOWN for a missing tag, and inspect prints a digest", async () => {
    const missing = await imageyard(["copy", `${upstream.host}/${run}/app:nope`, `${mirror.host}/${run}/x`, ...mirrorCreds(), "-q"]);
    expect(missing.status).toBe(1);
    expect(missing.stderr).toContain("manifest not found (404 MANIFEST_UNKNOWN)");
    const inspect = await imageyard(["inspect", image.ref, "--no-creds"]);
    expect(inspect).toMatchObject({ status: 0, stdout: `${image.digest}\n` });
  });

  it("never echoes a password typed into the target reference, and names --dest-creds", async () => {
    const r = await imageyard(["copy", image.ref, `robot:S3cret@${mirror.host}/${run}/repo`]);
    expect(r.status).toBe(1);
    expect(r.stderr).not.toContain("S3cret");
    expect(r.stderr).toMatch(
      /"\*\*\*@127\.0\.0\.1:\d+\/.*a reference cannot carry credentials.*Put the credentials in --dest-creds instead/,
    );
  });

  it("--timeout ends a copy whose source stalls on a blob, naming the blob and the source registry", async () => {
    // Every blob stalls, the first one (a config, read while planning) included: no race with the clock.
    const proxy = await startFaultProxy(upstream, [{ method: "GET", path: /\/blobs\/sha256:/, fault: { kind: "stall" } }]);
    try {
      const started = Date.now();
      const r = await imageyard([
        "copy",
        `${proxy.host}/${run}/app:v1`,
        `${mirror.host}/${run}/stalled`,
        ...mirrorCreds(),
        // 8 s, not less: at load ~20 a shorter deadline could run out while planning still checks the
        // target, and the message then rightly names the target instead of the stalled source.
        "--timeout",
        "8s",
        "-q",
      ]);
      expect(Date.now() - started).toBeLessThan(25_000);
      expect(r.status).toBe(1);
      expect(r.stderr).toMatch(
        new RegExp(`waiting for blob sha256:[0-9a-f]{12} from the source registry ${proxy.host.replace(/\./g, "\\.")}`),
      );
      expect(r.stderr).toMatch(/\(TIMEOUT\)\..*--timeout.*\[TIMEOUT\]/);
    } finally {
      await proxy.close();
    }
  });

  it("plan lists the work without doing it, and exits 2 on bad usage", async () => {
    const plan = await imageyard(["plan", image.ref, `${mirror.host}/${run}/planned`, ...mirrorCreds()]);
    expect(plan.status).toBe(0);
    expect(plan.stdout).toMatch(/\d+ blobs? to upload \([^)]+\), 0 to mount, 0 already there; 3 manifests/);
    expect(
      await imageyard(["inspect", `${mirror.host}/${run}/planned:v1`, "--creds", `${mirror.username}:${mirror.password}`]),
    ).toMatchObject({ status: 1 });
    expect((await imageyard(["copy", "just-one"])).status).toBe(2);
  });
});
