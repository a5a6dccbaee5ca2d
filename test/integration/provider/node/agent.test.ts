// The node agent (provider/node/agent, Go) against real containerds with their CRI plugin, each
// started on its own socket: Debian's 1.6 and, when built (scripts/k8s-build.sh, or
// IY_CONTAINERD2_DIR), v2.4.2. Pulls through CRI with credentials from a file (never printed),
// a refused pull logged and retried, a platform pulled by its own manifest, tag and retag names,
// pin (labelled on v2, reported unsupported on 1.6), the readiness check seeing a lost name,
// tarball import, removal. Every effect is checked with the runtime's own ctr, not the agent.
import { execFile, execFileSync, spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { createReadStream, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { agentBinaryPath } from "../../../../provider/node/agentimage";
import { readArchive } from "../../../../provider/node/archive";
import { ensureAgentImage } from "../../../../provider/node/agentpush";
import { seedImage, type SeededImage } from "../../../testbed/images";
import { loadRegistryTestbed } from "../../../testbed/registry";
import { runSkopeo, skopeoFlags, dockerRef } from "../../../testbed/skopeo";
import { freePort, waitUntil } from "../../../testbed/processes";

const run = promisify(execFile);
const tb = loadRegistryTestbed();
const { upstream, mirror } = tb.registries;
const agent = agentBinaryPath();

interface RuntimeSpec {
  label: string;
  containerd: string;
  ctr: string;
  v2: boolean;
}

/** containerd v2 from $IY_CONTAINERD2_DIR or the k8s bed's build, if there. */
function containerd2Dir(): string | undefined {
  const candidates = [
    process.env.IY_CONTAINERD2_DIR,
    join(process.env.HOME ?? "", ".cache/imageyard/k8s/v1.37.2/bin/containerd2"),
    "/tmp/prepull-containerd2",
  ];
  return candidates.find((d) => d && existsSync(join(d, "containerd")) && existsSync(join(d, "ctr")));
}

const runtimes: RuntimeSpec[] = [{ label: "containerd 1.6", containerd: "/usr/bin/containerd", ctr: "/usr/bin/ctr", v2: false }];
const c2 = containerd2Dir();
if (c2) runtimes.push({ label: "containerd 2.4", containerd: join(c2, "containerd"), ctr: join(c2, "ctr"), v2: true });

function configToml(rt: RuntimeSpec, dir: string, sock: string, stream: number): string {
  const common = [`root = "${dir}/root"`, `state = "${dir}/state"`];
  if (!rt.v2) {
    const cri = '[plugins."io.containerd.grpc.v1.cri"';
    return [
      "version = 2",
      ...common,
      "[grpc]",
      `  address = "${sock}"`,
      "[ttrpc]",
      `  address = "${sock}.ttrpc"`,
      '[plugins."io.containerd.internal.v1.opt"]',
      `  path = "${dir}/opt"`,
      `${cri}]`,
      "  disable_tcp_service = true",
      '  stream_server_address = "127.0.0.1"',
      `  stream_server_port = "${stream}"`,
      `${cri}.containerd]`,
      '  snapshotter = "native"',
      `${cri}.cni]`,
      `  bin_dir = "${dir}/cni"`,
      `  conf_dir = "${dir}/cni"`,
      "",
    ].join("\n");
  }
  return [
    // containerd 2.4's current config version: the servers are plugins
    "version = 4",
    ...common,
    "[plugins.'io.containerd.server.v1.grpc']",
    `  address = "${sock}"`,
    "[plugins.'io.containerd.server.v1.ttrpc']",
    `  address = "${sock}.ttrpc"`,
    "[plugins.'io.containerd.internal.v1.opt']",
    `  path = "${dir}/opt"`,
    "[plugins.'io.containerd.nri.v1.nri']",
    "  disable = true",
    "[plugins.'io.containerd.cri.v1.images']",
    '  snapshotter = "native"',
    "[plugins.'io.containerd.cri.v1.runtime'.cni]",
    `  bin_dirs = ["${dir}/cni"]`,
    `  conf_dir = "${dir}/cni"`,
    "[plugins.'io.containerd.grpc.v1.cri']",
    "  disable_tcp_service = true",
    '  stream_server_address = "127.0.0.1"',
    `  stream_server_port = "${stream}"`,
    "[[plugins.'io.containerd.transfer.v1.local'.unpack_config]]",
    '  platform = "linux/amd64"',
    '  snapshotter = "native"',
    '  differ = "walking"',
    "",
  ].join("\n");
}

for (const rt of runtimes)
  describe(`prepull agent on ${rt.label}`, () => {
    const id = `agent-${rt.v2 ? "v2" : "v1"}-${Date.now().toString(36)}-${randomBytes(2).toString("hex")}`;
    const dir = mkdtempSync(join(tmpdir(), "iy-agent-"));
    const sock = join(dir, "containerd.sock");
    let containerd: ChildProcess;
    let image: SeededImage;
    let pinnedRef: string;
    let priv: SeededImage;
    let privRef: string;
    const RETAG = `registry.k8s.io/${id}/app:v2.0.0`;

    const ctr = async (...args: string[]) => (await run(rt.ctr, ["--address", sock, "-n", "k8s.io", ...args], { encoding: "utf8" })).stdout;
    /** name → target digest (and labels), as containerd itself lists them. */
    async function ctrImages(): Promise<Map<string, string>> {
      const out = await ctr("images", "ls");
      return new Map(
        out
          .split("\n")
          .slice(1)
          .filter(Boolean)
          .map((l) => l.split(/\s+/))
          .map((f) => [f[0]!, f[2]!]),
      );
    }
    const authFile = join(dir, "auth.json");
    const agentEnv = (images: unknown) => ({
      CONTAINERD_SOCKET: sock,
      IMAGEYARD_IMAGES: JSON.stringify(images),
      IMAGEYARD_STATE_DIR: dir,
      IMAGEYARD_AUTH_FILE: authFile,
    });
    /** Runs `agent serve` until its log says `until`; returns the log and stops it. */
    async function serveUntil(images: unknown, until: (log: string) => boolean, ms = 60_000): Promise<string> {
      rmSync(join(dir, "imageyard-applied"), { force: true });
      const serve = spawn(agent, ["serve"], { env: agentEnv(images) });
      let out = "";
      serve.stdout.on("data", (b: Buffer) => (out += b.toString()));
      serve.stderr.on("data", (b: Buffer) => (out += b.toString()));
      try {
        await waitUntil("the agent's log", ms, () => until(out));
      } finally {
        serve.kill("SIGTERM");
        await new Promise((r) => serve.once("exit", r));
      }
      return out;
    }
    const events = (log: string) =>
      log
        .split("\n")
        .filter((l) => l.startsWith("{"))
        .map((l) => JSON.parse(l) as Record<string, unknown>);
    function runAgent(cmd: string[], images: unknown, input?: string): Promise<{ code: number; stdout: string; stderr: string }> {
      return new Promise((resolve) => {
        const p = execFile(agent, cmd, { env: agentEnv(images), encoding: "utf8" }, (err, stdout, stderr) =>
          resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
        );
        if (input) createReadStream(input).pipe(p.stdin!);
        else p.stdin!.end();
      });
    }

    beforeAll(async () => {
      if (!existsSync(agent)) throw new Error(`no agent binary at ${agent}: run scripts/build-agent.sh`);
      writeFileSync(join(dir, "config.toml"), configToml(rt, dir, sock, await freePort()));
      mkdirSync(join(dir, "cni"));
      containerd = spawn(rt.containerd, ["--config", join(dir, "config.toml")], {
        stdio: "ignore",
        env: { ...process.env, PATH: `${dirname(rt.containerd)}:${process.env.PATH}` },
      });
      await waitUntil(
        `${rt.label} on ${sock}`,
        60_000,
        async () =>
          existsSync(sock) &&
          (await ctr("version").then(
            () => true,
            () => false,
          )),
      );
      [image, priv] = await Promise.all([
        seedImage(upstream, `${id}/app:v1`, { layers: 1, layerSize: "64K", seed: id }),
        seedImage(mirror, `${id}/private:v1`, { layers: 1, layerSize: "64K", seed: `${id}-p` }),
      ]);
      pinnedRef = `${upstream.host}/${id}/app@${image.digest}`;
      privRef = `${mirror.host}/${id}/private@${priv.digest}`;
    }, 180_000);

    afterAll(async () => {
      containerd?.kill("SIGTERM");
      await new Promise((r) => containerd?.once("exit", r));
      execFileSync("sh", ["-c", `umount -R ${dir}/root 2>/dev/null; true`]);
      rmSync(dir, { recursive: true, force: true });
    });

    it("serve pulls through CRI (credentials from the file, never printed), names and pins, logs each image; check then passes", async () => {
      writeFileSync(authFile, JSON.stringify({ [privRef]: { username: mirror.username, password: mirror.password } }));
      const images = [
        { ref: pinnedRef, names: [image.ref, RETAG], pin: true },
        { ref: privRef, pin: true },
      ];
      const log = await serveUntil(images, (l) => l.includes('"event":"done"'));
      expect(log).not.toContain(mirror.password!);
      const byImage = new Map(
        events(log)
          .filter((e) => e.image && e.state !== "pulling")
          .map((e) => [e.image, e]),
      );
      expect(byImage.get(pinnedRef)).toMatchObject({ state: "present", digest: image.digest });
      expect(byImage.get(privRef)).toMatchObject({ state: "present", digest: priv.digest });
      const seen = await ctrImages();
      for (const n of [pinnedRef, image.ref, RETAG]) expect(seen.get(n), n).toBe(image.digest);
      expect(seen.get(privRef)).toBe(priv.digest);
      if (rt.v2) {
        expect(byImage.get(pinnedRef)).toMatchObject({ pinned: true });
        expect(await ctr("images", "ls", `name==${pinnedRef}`)).toContain("io.cri-containerd.pinned=pinned");
      } else {
        expect(byImage.get(pinnedRef)!.warning).toMatch(/pin not supported by containerd 1\.6/);
      }
      expect((await runAgent(["check"], images)).code).toBe(0);
    }, 120_000);

    it("logs a refused pull with the registry's words, retries, and succeeds once the credentials are right", async () => {
      const other = await seedImage(mirror, `${id}/retry:v1`, { layers: 1, layerSize: "16K", seed: `${id}-r` });
      const ref = `${mirror.host}/${id}/retry@${other.digest}`;
      writeFileSync(authFile, JSON.stringify({ [ref]: { username: mirror.username, password: "wrong" } }));
      const log = await serveUntil([{ ref }], (l) => l.includes('"event":"retry"'));
      const failed = events(log).find((e) => e.state === "failed")!;
      expect(failed.image).toBe(ref);
      expect(String(failed.error)).toMatch(/401|unauthorized|authorization failed/i);
      expect(String(failed.error)).not.toMatch(/^rpc error/);
      expect(log).not.toContain("wrong");
      // the retry reads the file again
      const fixed = await serveUntil(
        [{ ref }],
        (l) => {
          if (l.includes('"event":"retry"'))
            writeFileSync(authFile, JSON.stringify({ [ref]: { username: mirror.username, password: mirror.password } }));
          return l.includes('"event":"done"');
        },
        90_000,
      );
      expect(events(fixed).find((e) => e.state === "present")).toMatchObject({ image: ref, digest: other.digest });
    }, 150_000);

    it("pulls exactly the platform asked for, whatever the node's", async () => {
      const multi = await seedImage(upstream, `${id}/multi:v1`, {
        layers: 1,
        layerSize: "16K",
        platforms: ["linux/amd64", "linux/arm64"],
        seed: `${id}-m`,
      });
      const arm = multi.manifests.find((m) => m.platform?.architecture === "arm64")!;
      const ref = `${upstream.host}/${id}/multi@${arm.digest}`;
      const log = await serveUntil([{ ref, platform: "linux/arm64" }], (l) => l.includes('"event":"done"') || l.includes('"failed"'));
      expect(events(log).find((e) => e.image === ref && e.state !== "pulling")).toMatchObject({ state: "present", digest: arm.digest });
      expect((await ctrImages()).get(ref)).toBe(arm.digest);
    }, 120_000);

    it("check fails naming the name removed by hand; serve puts it back over the existing names", async () => {
      const images = [{ ref: pinnedRef, names: [RETAG] }];
      await ctr("images", "rm", RETAG);
      const lost = await runAgent(["check"], images);
      expect(lost.code).toBe(1);
      expect(lost.stderr).toContain(`missing from the runtime: ${RETAG}`);
      await serveUntil(images, (l) => l.includes('"event":"done"'));
      expect((await ctrImages()).get(RETAG)).toBe(image.digest);
      expect((await runAgent(["check"], images)).code).toBe(0);
    }, 120_000);

    // Regression: on containerd v2 the snapshotter was read from CRI's status, which no longer names
    // it, so imports were unpacked to overlayfs where CRI (native here) never looks.
    it("imports a docker-archive from stdin under its own name plus retagAs, unpacked where CRI looks (v2 too)", async () => {
      const file = join(dir, "app.tar");
      const name = `registry.local/${id}/offline:v1`;
      // content this containerd has never unpacked, so what labels it can only come from the import
      await seedImage(upstream, `${id}/offline-src:v1`, { layers: 1, layerSize: "32K", seed: `${id}-offline` });
      await runSkopeo([
        "copy",
        "-q",
        ...skopeoFlags(upstream, "src"),
        dockerRef(upstream, `${id}/offline-src:v1`),
        `docker-archive:${file}:${name}`,
      ]);
      const r = await runAgent(["import"], [{ ref: name, names: [`registry.k8s.io/${id}/offline:v1`], archive: true }], file);
      expect(r.code, r.stderr).toBe(0);
      const stored = JSON.parse(r.stdout) as { name: string; digest: string; config: string }[];
      const seen = await ctrImages();
      expect(stored.map((s) => s.name)).toContain(name);
      expect(seen.get(name)).toBe(stored.find((s) => s.name === name)!.digest);
      expect(seen.get(`registry.k8s.io/${id}/offline:v1`)).toBe(seen.get(name));
      // unpacked with the snapshotter CRI uses here (native), so pods can start from it: containerd
      // labels the config blob with the snapshotter it unpacked to (v2's CRI status no longer names it)
      const configRow = (await ctr("content", "ls")).split("\n").find((l) => l.startsWith(stored.find((s) => s.name === name)!.config));
      expect(configRow).toMatch(/containerd\.io\/gc\.ref\.snapshot\.native/);
      // what the provider verifies after an import: the config digest it read from the archive itself
      expect(stored.find((s) => s.name === name)!.config).toBe((await readArchive({ format: "docker-archive", path: file })).digest);
    });

    it("imports an oci-archive under its ref.name, normalised, with the manifest digest readArchive expects", async () => {
      const file = join(dir, "app-oci.tar");
      const name = `registry.local/${id}/oci:v1`;
      await runSkopeo(["copy", "-q", ...skopeoFlags(upstream, "src"), dockerRef(upstream, `${id}/app:v1`), `oci-archive:${file}:${name}`]);
      const expected = await readArchive({ format: "oci-archive", path: file });
      expect(expected.names).toEqual([name]);
      const r = await runAgent(["import"], [{ ref: name, archive: true }], file);
      expect(r.code, r.stderr).toBe(0);
      expect((await ctrImages()).get(name)).toBe(expected.digest);
    });

    // Regression: only CRI's containers counted, so an image a non-CRI container ran was removed.
    it("remove keeps an image a running container uses, and removes it once the container stopped", async () => {
      const agentRef = await ensureAgentImage(upstream.host, undefined, undefined, () => {});
      await ctr("images", "pull", "--plain-http", "--snapshotter", "native", agentRef);
      const cid = `inuse-${id}`;
      // a long-running container of that image: the agent's own serve, with nothing to apply
      await ctr(
        "run",
        "-d",
        "--snapshotter",
        "native",
        "--env",
        "IMAGEYARD_IMAGES=[]",
        "--env",
        "CONTAINERD_SOCKET=/run/c.sock",
        "--mount",
        `type=bind,src=${sock},dst=/run/c.sock,options=rbind`,
        agentRef,
        cid,
        "/agent",
        "serve",
      );
      try {
        const kept = await runAgent(["remove"], [{ ref: agentRef }]);
        expect(kept.code, kept.stderr).toBe(0);
        expect(JSON.parse(kept.stdout)).toEqual({ removed: [], kept: { [agentRef]: "in use by a running container" } });
        expect((await ctrImages()).has(agentRef)).toBe(true);
      } finally {
        await ctr("tasks", "kill", "-s", "SIGKILL", cid).catch(() => undefined);
        await waitUntil(
          `task ${cid} to stop`,
          30_000,
          async () => !(await ctr("tasks", "ls")).includes(`${cid} `) || (await ctr("tasks", "ls")).includes("STOPPED"),
        );
        await ctr("tasks", "delete", cid).catch(() => undefined);
        await ctr("containers", "delete", cid).catch(() => undefined);
      }
      const gone = await runAgent(["remove"], [{ ref: agentRef }]);
      expect(JSON.parse(gone.stdout).removed).toEqual([agentRef]);
      expect((await ctrImages()).has(agentRef)).toBe(false);
    }, 120_000);

    it("remove deletes only the set's names (and CRI's image-ID name left alone with them) and reports them", async () => {
      const images = [{ ref: pinnedRef, names: [image.ref, RETAG] }, { ref: privRef }];
      const r = await runAgent(["remove"], images);
      expect(r.code, r.stderr).toBe(0);
      expect(JSON.parse(r.stdout).removed).toEqual([pinnedRef, image.ref, RETAG, privRef]);
      const seen = await ctrImages();
      const namesOf = (digest: string) => [...seen].filter(([, d]) => d === digest).map(([n]) => n);
      // the oci-archive test stored the same image under its own name: that name and the ID name stay
      expect(namesOf(image.digest)).toEqual([`registry.local/${id}/oci:v1`, expect.stringMatching(/^sha256:/)]);
      // nothing else holds the private image: CRI's ID name goes with the set's, so its space is freed
      expect(namesOf(priv.digest)).toEqual([]);
      expect(seen.has(`registry.local/${id}/offline:v1`)).toBe(true);
    });
  });
