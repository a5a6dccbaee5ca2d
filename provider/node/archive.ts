// Image tarballs for nodes that reach no registry: read what an archive holds (names, and the
// digest to verify: the config digest of a docker-archive, the manifest digest of an
// oci-archive) in one streaming pass, then stream the file to each node's agent through the API
// server (pods/exec) for containerd to import; what the node stored is checked against it.
// The same exec channel removes the set's images from the nodes on delete when asked.
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { open } from "node:fs/promises";
import type { Readable } from "node:stream";
import { createGunzip } from "node:zlib";
import { ImageyardError } from "../http/errors";
import { formatBytes } from "../http/progress";
import { formatReference, parseReference } from "../oci/reference";
import { execInPod } from "./exec";
import type { ArchiveFormat, PlannedImage } from "./images";
import type { KubeClient } from "./kube";
import { AGENT_BINARY, AGENT_CONTAINER, type SetSpec } from "./manifest";
import { podsByNode } from "./prepull";

export interface ArchiveInfo {
  /** Normalised names the archive carries (docker-archive RepoTags, oci-archive ref.name). */
  names: string[];
  /** docker-archive: the config digest (image ID); oci-archive: the manifest or index digest. */
  digest: string;
}

/** An archive file as a stream of tar bytes: gzip is undone on the way (containerd wants plain tar). */
async function tarStream(path: string): Promise<Readable> {
  const fh = await open(path, "r");
  const magic = Buffer.alloc(2);
  await fh.read(magic, 0, 2, 0);
  await fh.close();
  const raw = createReadStream(path);
  return magic[0] === 0x1f && magic[1] === 0x8b ? raw.pipe(createGunzip()) : raw;
}

/** Walks a tar stream; `want` picks entries to read whole (small JSON) or hash. */
async function scanTar(input: Readable, want: (name: string) => "read" | "hash" | undefined): Promise<Map<string, Buffer | string>> {
  const found = new Map<string, Buffer | string>();
  let buf: Buffer = Buffer.alloc(0);
  let entry:
    | { name: string; left: number; pad: number; mode?: "read" | "hash"; parts: Buffer[]; hash?: ReturnType<typeof createHash> }
    | undefined;
  for await (const chunk of input) {
    buf = buf.length ? Buffer.concat([buf, chunk as Buffer]) : (chunk as Buffer);
    for (;;) {
      if (entry) {
        const take = Math.min(entry.left, buf.length);
        const part = buf.subarray(0, take);
        if (entry.mode === "read") entry.parts.push(Buffer.from(part));
        entry.hash?.update(part);
        entry.left -= take;
        buf = buf.subarray(take);
        if (entry.left > 0) break;
        if (buf.length < entry.pad) break;
        buf = buf.subarray(entry.pad);
        if (entry.mode === "read") found.set(entry.name, Buffer.concat(entry.parts));
        if (entry.hash) found.set(entry.name, `sha256:${entry.hash.digest("hex")}`);
        entry = undefined;
        continue;
      }
      if (buf.length < 512) break;
      const h = buf.subarray(0, 512);
      buf = buf.subarray(512);
      if (h.every((b) => b === 0)) continue;
      const field = (o: number, n: number) =>
        h
          .subarray(o, o + n)
          .toString("utf8")
          .replace(/\0.*$/s, "");
      const prefix = field(345, 155);
      const name = (prefix ? `${prefix}/` : "") + field(0, 100);
      const size = parseInt(field(124, 12).trim() || "0", 8);
      const mode = want(name.replace(/^\.\//, ""));
      entry = {
        name: name.replace(/^\.\//, ""),
        left: size,
        pad: (512 - (size % 512)) % 512,
        parts: [],
        ...(mode ? { mode } : {}),
        ...(mode === "hash" ? { hash: createHash("sha256") } : {}),
      };
    }
  }
  return found;
}

function archiveError(path: string, why: string): ImageyardError {
  return new ImageyardError("INVALID_INPUT", `read archive ${path}: ${why}.`);
}

const normalise = (n: string) => formatReference(parseReference(n));

/** Names and digest of an archive, in one pass (docker-archive configs are hashed as they pass). */
export async function readArchive(a: { format: ArchiveFormat; path: string }): Promise<ArchiveInfo> {
  const found = await scanTar(await tarStream(a.path), (n) =>
    n === "manifest.json" || n === "index.json" ? "read" : a.format === "docker-archive" && n.endsWith(".json") ? "hash" : undefined,
  );
  if (a.format === "oci-archive") {
    const index = found.get("index.json");
    if (!(index instanceof Buffer))
      throw archiveError(a.path, "no index.json: not an oci-archive. Use docker-archive: for `docker save` files");
    const doc = JSON.parse(index.toString("utf8")) as { manifests?: { digest: string; annotations?: Record<string, string> }[] };
    const m = doc.manifests?.[0];
    const name = m?.annotations?.["io.containerd.image.name"] ?? m?.annotations?.["org.opencontainers.image.ref.name"];
    if (!m || !name || !/[/:]/.test(name))
      throw archiveError(
        a.path,
        `index.json names no full image reference (ref.name ${JSON.stringify(name ?? null)}). Write it with a full name, e.g. skopeo copy … oci-archive:${a.path}:registry.local/app:v1`,
      );
    return { names: [normalise(name)], digest: m.digest };
  }
  const manifest = found.get("manifest.json");
  if (!(manifest instanceof Buffer))
    throw archiveError(a.path, "no manifest.json: not a docker-archive. Use oci-archive: for OCI archives");
  const entries = JSON.parse(manifest.toString("utf8")) as { Config: string; RepoTags?: string[] }[];
  const first = entries[0];
  if (!first?.RepoTags?.length)
    throw archiveError(a.path, "manifest.json names no RepoTags. Save the image with a name (docker save registry.local/app:v1)");
  const config = found.get(first.Config);
  if (typeof config !== "string") throw archiveError(a.path, `the config ${first.Config} that manifest.json names is missing`);
  return { names: first.RepoTags.map(normalise), digest: config };
}

interface Stored {
  name: string;
  digest: string;
  config: string;
}

/** Streams every archive image to every node's agent and verifies what containerd stored. */
export async function importArchives(
  client: KubeClient,
  spec: SetSpec,
  planned: PlannedImage[],
  archives: Map<string, ArchiveInfo>,
  deadline: number,
  log: (line: string) => void,
): Promise<void> {
  const pods = await podsByNode(client, spec.namespace, spec.name);
  for (const img of planned.filter((p) => p.kind === "archive")) {
    const info = archives.get(img.key) ?? (await readArchive(img.archive!));
    const size = await open(img.archive!.path, "r").then(async (fh) => (await fh.stat().finally(() => fh.close())).size);
    // Nodes in parallel: each gets its own stream of the file (wall time ≈ the slowest node).
    await Promise.all(
      [...pods].map(async ([node, pod]) => {
        const { stdout } = await execInPod(client, {
          namespace: spec.namespace,
          pod: pod.metadata.name,
          container: AGENT_CONTAINER,
          command: [AGENT_BINARY, "import"],
          stdin: await tarStream(img.archive!.path),
          deadline,
        });
        const stored = JSON.parse(stdout) as Stored[];
        const ok = stored.some(
          (s) => (img.archive!.format === "docker-archive" ? s.config : s.digest) === info.digest && info.names.includes(s.name),
        );
        if (!ok) {
          throw new ImageyardError(
            "DIGEST_MISMATCH",
            `import ${img.key} on node ${node}: containerd stored ${stored.map((s) => `${s.name} ${s.digest}`).join(", ")}, expected ${info.names[0]} with ${info.digest} (DIGEST_MISMATCH). Check the archive is complete and run again.`,
          );
        }
        log(`${node}: imported ${img.key} (${formatBytes(size)}) as ${info.names.join(", ")}`);
      }),
    );
  }
}

/** On delete with removeImagesOnDelete: each node's agent removes the set's names not in use. */
export async function removeImagesFromNodes(
  client: KubeClient,
  ns: string,
  name: string,
  deadline: number,
  log: (line: string) => void,
): Promise<void> {
  const pods = await podsByNode(client, ns, name);
  await Promise.all(
    [...pods].map(async ([node, pod]) => {
      try {
        const { stdout } = await execInPod(client, {
          namespace: ns,
          pod: pod.metadata.name,
          container: AGENT_CONTAINER,
          command: [AGENT_BINARY, "remove"],
          deadline,
        });
        const r = JSON.parse(stdout) as { removed: string[]; kept?: Record<string, string> };
        log(
          `${node}: removed ${r.removed.length} name(s)${
            Object.keys(r.kept ?? {}).length
              ? `; kept ${Object.entries(r.kept ?? {})
                  .map(([k, v]) => `${k} (${v})`)
                  .join(", ")}`
              : ""
          }`,
        );
      } catch (e) {
        // A node whose agent cannot run keeps its images; the DaemonSet still goes.
        log(`${node}: images not removed: ${(e as Error).message}`);
      }
    }),
  );
}
