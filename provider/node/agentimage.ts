// The agent image, made here rather than downloaded: the static binary scripts/build-agent.sh
// builds, packed into a one-layer OCI image (a reproducible tar: fixed mtimes, owners and order;
// gzip without a timestamp), written as an OCI layout beside the binary, and copied by the copy
// engine into a registry the nodes can pull from. Same binary, same digest: no churn on re-runs.
import { createHash } from "node:crypto";
import { createReadStream, createWriteStream, existsSync, readlinkSync, statSync } from "node:fs";
import { mkdir, rm } from "node:fs/promises";
import { homedir } from "node:os";
import { dirname, join } from "node:path";
import { PassThrough, Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { createGzip } from "node:zlib";
import { ImageyardError } from "../http/errors";
import { LayoutStore } from "../oci/layout";

const OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip";
export const AGENT_TAG = "agent";
/** Repository name under the agent registry. */
export const AGENT_REPOSITORY = "imageyard/prepull-agent";

/** Where the agent binary is: $IMAGEYARD_AGENT_BINARY, else the build cache's current build. */
export function agentBinaryPath(env: NodeJS.ProcessEnv = process.env): string {
  if (env.IMAGEYARD_AGENT_BINARY) return env.IMAGEYARD_AGENT_BINARY;
  const cache = env.IY_AGENT_CACHE ?? join(env.XDG_CACHE_HOME ?? join(env.HOME ?? homedir(), ".cache"), "imageyard", "agent");
  const current = join(cache, "current");
  const dir = existsSync(current) ? join(cache, readlinkSync(current)) : current;
  return join(dir, "agent");
}

/** One 512-byte ustar header; numbers in octal, fixed owner and mtime for reproducibility. */
function tarHeader(name: string, size: number, mode: number, type: "0" | "5"): Buffer {
  const h = Buffer.alloc(512, 0);
  h.write(name, 0, 100, "utf8");
  const octal = (n: number, len: number) => `${n.toString(8).padStart(len - 1, "0")}\0`;
  h.write(octal(mode, 8), 100);
  h.write(octal(0, 8), 108);
  h.write(octal(0, 8), 116);
  h.write(octal(size, 12), 124);
  h.write(octal(0, 12), 136);
  h.write("        ", 148);
  h.write(type, 156);
  h.write("ustar\0" + "00", 257);
  let sum = 0;
  for (const b of h) sum += b;
  h.write(`${sum.toString(8).padStart(6, "0")}\0 `, 148);
  return h;
}

/** The layer: /tmp (the agent's marker file lives there) and /agent. */
async function* layerTar(binary: string): AsyncGenerator<Buffer> {
  const size = statSync(binary).size;
  yield tarHeader("tmp/", 0, 0o1777, "5");
  yield tarHeader("agent", size, 0o755, "0");
  for await (const chunk of createReadStream(binary)) yield chunk as Buffer;
  const pad = (512 - (size % 512)) % 512;
  yield Buffer.alloc(pad + 1024, 0);
}

function hashing(h: ReturnType<typeof createHash>, count: { n: number }): PassThrough {
  return new PassThrough({
    transform(chunk: Buffer, _enc, cb) {
      h.update(chunk);
      count.n += chunk.length;
      cb(null, chunk);
    },
  });
}

export interface AgentLayout {
  /** The layout folder (oci:DIR:agent is the copy source). */
  dir: string;
  digest: string;
}

/** Builds (once per binary) the agent image's OCI layout beside the binary. */
export async function agentLayout(binary = agentBinaryPath()): Promise<AgentLayout> {
  if (!existsSync(binary)) {
    throw new ImageyardError(
      "INVALID_INPUT",
      `build the prepull agent image: no agent binary at ${binary}. Run scripts/build-agent.sh (or set IMAGEYARD_AGENT_BINARY), or give agentImage.`,
    );
  }
  const dir = join(dirname(binary), "layout");
  const store = new LayoutStore(dir);
  const known = existsSync(join(dir, "index.json")) ? await store.headManifest(AGENT_TAG).catch(() => undefined) : undefined;
  if (known) return { dir, digest: known.digest };
  await mkdir(dir, { recursive: true });
  const tmp = join(dir, `layer.${process.pid}.tmp`);
  const diff = createHash("sha256");
  const gz = createHash("sha256");
  const diffN = { n: 0 };
  const gzN = { n: 0 };
  try {
    await pipeline(
      Readable.from(layerTar(binary)),
      hashing(diff, diffN),
      createGzip({ level: 6 }),
      hashing(gz, gzN),
      createWriteStream(tmp),
    );
    const layer = { mediaType: OCI_LAYER, digest: `sha256:${gz.digest("hex")}`, size: gzN.n };
    await store.writeBlob({ digest: layer.digest, size: layer.size, open: async () => createReadStream(tmp), from: tmp });
    const config = Buffer.from(
      JSON.stringify({
        architecture: "amd64",
        os: "linux",
        config: { Entrypoint: ["/agent"], Cmd: ["serve"] },
        rootfs: { type: "layers", diff_ids: [`sha256:${diff.digest("hex")}`] },
      }),
    );
    const configDesc = { mediaType: OCI_CONFIG, digest: sha256(config), size: config.length };
    await store.writeBlob({
      digest: configDesc.digest,
      size: config.length,
      open: async () => Readable.from([config]),
      from: "agent config",
    });
    const manifest = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: configDesc, layers: [layer] }));
    const digest = await store.putManifest(AGENT_TAG, manifest, OCI_MANIFEST, { root: true });
    return { dir, digest };
  } finally {
    await rm(tmp, { force: true });
  }
}

function sha256(b: Buffer): string {
  return `sha256:${createHash("sha256").update(b).digest("hex")}`;
}

/** The agent's repository in a registry ("127.0.0.1:5000" or "registry.local/platform"). */
export function agentRepository(agentRegistry: string): string {
  return `${agentRegistry.replace(/\/+$/, "")}/${AGENT_REPOSITORY}`;
}
