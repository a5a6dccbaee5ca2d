// The Kubernetes test bed's images, built from real binaries without Docker: Kubernetes' pause
// (the sandbox image every pod starts with), Debian's static busybox (a shell and coreutils), and
// a "scratch" image holding one static binary and nothing else (no shell: what pre-pullers that
// run `sh -c` inside the image fail on). Written as OCI layouts, pushed with skopeo.
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { digestOf, dockerRef, MEDIA, OciLayoutWriter, runSkopeo, skopeoFlags, type LayerEntry } from "./images";
import { repoRoot } from "./processes";
import type { RegistryEndpoint } from "./registry";

export interface K8sImage {
  /** HOST/REPO:TAG, what a pod spec names. */
  ref: string;
  repository: string;
  tag: string;
  /** Manifest digest the registry serves. */
  digest: string;
  /** `ref` at its digest: HOST/REPO@sha256:… */
  pinnedRef: string;
  /** Which of the bed's registries holds it. */
  registry: "plain" | "auth";
}

export interface K8sImages {
  /** The sandbox image every node's containerd is configured with. */
  pause: K8sImage;
  /** A shell and coreutils (Debian busybox-static); `/bin/sh`, `/bin/sleep`, `/bin/true`, … */
  busybox: K8sImage;
  /** One static binary `/hello` (prints and exits 0; `/hello sleep` waits for SIGTERM), no shell. */
  scratch: K8sImage;
  /** busybox again on the registry that wants credentials (imagePullSecrets). */
  privateBusybox: K8sImage;
  /** scratch again on the registry that wants credentials. */
  privateScratch: K8sImage;
}

const BUSYBOX = "/bin/busybox";
const BUSYBOX_APPLETS = ["sh", "sleep", "true", "false", "echo", "cat", "ls", "env", "id", "wget"];

async function writeImage(
  dir: string,
  tag: string,
  entries: LayerEntry[],
  config: { Entrypoint?: string[]; Cmd?: string[]; Labels?: Record<string, string> },
): Promise<void> {
  rmSync(dir, { recursive: true, force: true });
  const w = new OciLayoutWriter(dir);
  const layer = await w.writeFilesLayer(entries);
  const cfg = w.writeJson(
    {
      architecture: "amd64",
      os: "linux",
      config: { Env: ["PATH=/bin"], ...config },
      rootfs: { type: "layers", diff_ids: [layer.diffId] },
      history: [{ created_by: "imageyard kubernetes test bed" }],
    },
    MEDIA.ociConfig,
  );
  w.tag(w.writeJson({ schemaVersion: 2, mediaType: MEDIA.ociManifest, config: cfg, layers: [layer.descriptor] }, MEDIA.ociManifest), tag);
}

/** `binDir/pause/pause` and the Kubernetes tag its source carries (scripts/k8s-build.sh makes both). */
function pauseBinary(binDir: string): { file: string; tag: string } {
  const file = join(binDir, "pause", "pause");
  const tagFile = join(binDir, "pause", "TAG");
  if (!existsSync(file) || !existsSync(tagFile))
    throw new Error(`Kubernetes test bed: no pause binary in ${join(binDir, "pause")}. Run scripts/k8s-build.sh ensure.`);
  return { file, tag: readFileSync(tagFile, "utf8").trim() };
}

function busyboxVersion(): string {
  if (!existsSync(BUSYBOX)) throw new Error(`Kubernetes test bed: no ${BUSYBOX}. Install busybox-static (scripts/bootstrap.sh).`);
  const banner = execFileSync(BUSYBOX, [], { encoding: "utf8" }).split("\n")[0] ?? "";
  const v = /BusyBox v(\d+\.\d+\.\d+)/.exec(banner)?.[1];
  if (!v) throw new Error(`Kubernetes test bed: cannot read busybox's version from ${JSON.stringify(banner)}`);
  return v;
}

/** Compiles test/testbed/hello.c statically, once per source content. */
function helloBinary(dir: string): { file: string; tag: string } {
  const src = join(repoRoot(), "test", "testbed", "hello.c");
  const hash = createHash("sha256").update(readFileSync(src)).digest("hex").slice(0, 12);
  const file = join(dir, `hello-${hash}`);
  if (!existsSync(file)) {
    mkdirSync(dir, { recursive: true });
    try {
      execFileSync("gcc", ["-Os", "-Wall", "-static", "-o", `${file}.tmp`, src], { stdio: ["ignore", "pipe", "pipe"] });
      execFileSync("mv", [`${file}.tmp`, file]);
    } catch (e) {
      throw new Error(
        `Kubernetes test bed: gcc -static ${src} failed: ${(e as { stderr?: Buffer }).stderr?.toString().trim() ?? String(e)}. Install gcc and libc6-dev (scripts/bootstrap.sh).`,
      );
    }
  }
  return { file, tag: hash };
}

async function push(
  layout: string,
  tag: string,
  ep: RegistryEndpoint,
  repository: string,
  registry: K8sImage["registry"],
): Promise<K8sImage> {
  await runSkopeo([
    "copy",
    "-q",
    "--preserve-digests",
    ...skopeoFlags(ep, "dest"),
    `oci:${layout}:${tag}`,
    dockerRef(ep, `${repository}:${tag}`),
  ]);
  const digest = await digestOf(ep, `${repository}:${tag}`);
  return { ref: `${ep.host}/${repository}:${tag}`, repository, tag, digest, pinnedRef: `${ep.host}/${repository}@${digest}`, registry };
}

function busyboxLayer(): LayerEntry[] {
  return [
    { type: "dir", path: "bin" },
    { type: "file", path: "bin/busybox", source: BUSYBOX },
    ...BUSYBOX_APPLETS.map((a): LayerEntry => ({ type: "symlink", path: `bin/${a}`, target: "busybox" })),
  ];
}

/**
 * busybox with a label of its own, pushed to `ep` as k8sbed/variants/<variant>/busybox: the same
 * layer, a new image ID, so no kubelet of the bed has pulled it (kubelet >= 1.35 keeps per image ID
 * the names it pulled, and treats other names of that ID differently; docs/kubernetes-testbed.md).
 */
export async function pushBusyboxVariant(dir: string, ep: RegistryEndpoint, variant: string): Promise<K8sImage> {
  const version = busyboxVersion();
  const layout = join(dir, "layouts", `busybox-${variant}`);
  await writeImage(layout, version, busyboxLayer(), { Cmd: ["/bin/sh"], Labels: { "imageyard.dev/variant": variant } });
  try {
    return await push(layout, version, ep, `k8sbed/variants/${variant}/busybox`, ep.username ? "auth" : "plain");
  } finally {
    rmSync(layout, { recursive: true, force: true });
  }
}

/** Builds the three images under `dir` and pushes them to `plain` (and two to `auth`). */
export async function buildAndPushImages(dir: string, binDir: string, plain: RegistryEndpoint, auth: RegistryEndpoint): Promise<K8sImages> {
  const pause = pauseBinary(binDir);
  const busybox = busyboxVersion();
  const hello = helloBinary(join(dir, "bin"));
  const layouts = join(dir, "layouts");
  await writeImage(join(layouts, "pause"), pause.tag, [{ type: "file", path: "pause", source: pause.file }], { Entrypoint: ["/pause"] });
  await writeImage(join(layouts, "busybox"), busybox, busyboxLayer(), { Cmd: ["/bin/sh"] });
  await writeImage(join(layouts, "scratch"), hello.tag, [{ type: "file", path: "hello", source: hello.file }], { Entrypoint: ["/hello"] });
  return {
    pause: await push(join(layouts, "pause"), pause.tag, plain, "k8sbed/pause", "plain"),
    busybox: await push(join(layouts, "busybox"), busybox, plain, "k8sbed/busybox", "plain"),
    scratch: await push(join(layouts, "scratch"), hello.tag, plain, "k8sbed/scratch", "plain"),
    privateBusybox: await push(join(layouts, "busybox"), busybox, auth, "k8sbed/private/busybox", "auth"),
    privateScratch: await push(join(layouts, "scratch"), hello.tag, auth, "k8sbed/private/scratch", "auth"),
  };
}

/** True when every image is still in its registry at the digest recorded (another test may have deleted it). */
export async function imagesPresent(images: K8sImages, plain: RegistryEndpoint, auth: RegistryEndpoint): Promise<boolean> {
  try {
    for (const img of Object.values(images)) {
      const ep = img.registry === "plain" ? plain : auth;
      if (!img.ref.startsWith(`${ep.host}/`) || (await digestOf(ep, `${img.repository}:${img.tag}`)) !== img.digest) return false;
    }
    return true;
  } catch {
    return false;
  }
}
