// The agent image the provider packs and pushes: reproducible (same binary, same digest, also from
// a fresh layout), read back by skopeo with the digest the provider reports, and runnable: a real
// containerd 1.6 pulls it and runs its static `/agent` in a container (no shell, no libc).
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { agentBinaryPath, agentLayout } from "../../../../provider/node/agentimage";
import { ensureAgentImage } from "../../../../provider/node/agentpush";
import { loadRegistryTestbed } from "../../../testbed/registry";
import { digestOf } from "../../../testbed/skopeo";
import { waitUntil } from "../../../testbed/processes";

const run = promisify(execFile);
const { upstream } = loadRegistryTestbed().registries;
const dir = mkdtempSync(join(tmpdir(), "iy-agentimage-"));
const sock = join(dir, "containerd.sock");
let containerd: ChildProcess;
const ctr = async (...args: string[]) => (await run("ctr", ["--address", sock, "-n", "k8s.io", ...args], { encoding: "utf8" })).stdout;

beforeAll(async () => {
  writeFileSync(
    join(dir, "config.toml"),
    [
      "version = 2",
      `root = "${dir}/root"`,
      `state = "${dir}/state"`,
      "[grpc]",
      `  address = "${sock}"`,
      "[ttrpc]",
      `  address = "${sock}.ttrpc"`,
      '[plugins."io.containerd.grpc.v1.cri"]',
      "  disable_cri = true",
      "",
    ].join("\n"),
  );
  containerd = spawn("/usr/bin/containerd", ["--config", join(dir, "config.toml"), "--log-level", "warn"], { stdio: "ignore" });
  await waitUntil(
    `containerd on ${sock}`,
    60_000,
    async () =>
      existsSync(sock) &&
      (await ctr("version").then(
        () => true,
        () => false,
      )),
  );
}, 120_000);

afterAll(async () => {
  containerd?.kill("SIGTERM");
  await new Promise((r) => containerd?.once("exit", r));
  await run("sh", ["-c", `umount -R ${dir}/root 2>/dev/null; true`]);
  rmSync(dir, { recursive: true, force: true });
});

describe("agent image", () => {
  it("is reproducible: a fresh layout of the same binary has the same digest", async () => {
    const a = await agentLayout();
    const copy = join(dir, "bin", "agent");
    mkdirSync(join(dir, "bin"));
    copyFileSync(agentBinaryPath(), copy);
    const b = await agentLayout(copy);
    expect(b.dir).not.toBe(a.dir);
    expect(b.digest).toBe(a.digest);
  });

  it("is pushed to the agent registry as repo@digest that skopeo reads back", async () => {
    const ref = await ensureAgentImage(upstream.host, undefined, undefined, () => {});
    const { digest } = await agentLayout();
    expect(ref).toBe(`${upstream.host}/imageyard/prepull-agent@${digest}`);
    expect(await digestOf(upstream, `imageyard/prepull-agent@${digest}`)).toBe(digest);
  }, 60_000);

  it("runs in a real containerd: the image's /agent starts and answers (`check` before any serve fails saying so)", async () => {
    const ref = await ensureAgentImage(upstream.host, undefined, undefined, () => {});
    await ctr("images", "pull", "--plain-http", "--snapshotter", "native", ref);
    // The static binary alone in the image (no shell, no libc) must run: the DaemonSet's agent
    // container is this image. `check` with no serve done is the one answer needing no node socket.
    const answer = await ctr("run", "--rm", "--snapshotter", "native", ref, `check-${process.pid}`, "/agent", "check").then(
      (out) => ({ ok: true, text: out }),
      (e: { stdout?: string; stderr?: string }) => ({ ok: false, text: `${e.stdout ?? ""}${e.stderr ?? ""}` }),
    );
    expect(answer.ok).toBe(false);
    expect(answer.text).toMatch(/agent serve has not pulled every image yet/);
    const usage = await ctr("run", "--rm", "--snapshotter", "native", ref, `usage-${process.pid}`, "/agent").then(
      (out) => out,
      (e: { stdout?: string; stderr?: string }) => `${e.stdout ?? ""}${e.stderr ?? ""}`,
    );
    expect(usage).toMatch(/usage: agent serve\|check\|import\|remove/);
  }, 120_000);
});
