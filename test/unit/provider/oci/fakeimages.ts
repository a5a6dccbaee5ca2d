// Deterministic test images written straight into a FakeRegistry (or returned as bytes): configs,
// layers, manifests, OCI indexes and Docker manifest lists, plus cosign-style signature tags.
import { createHash } from "node:crypto";
import { afterEach, beforeEach } from "vitest";
import { forgetKnownLocations, type CopyRequest } from "../../../../provider/oci/copy";
import type { RegistryOptions } from "../../../../provider/oci/registry";
import { FakeRegistry } from "./fakeregistry";

/** Plain http, no docker config, quick retries: what copy tests use against fake registries. */
export const plain: RegistryOptions = {
  scheme: "http",
  dockerConfig: false,
  retry: { attempts: 2, minDelayMs: 1, maxDelayMs: 5, maxRetryAfterMs: 1000 },
};

export interface RegistryPair {
  src: FakeRegistry;
  dst: FakeRegistry;
}

/** A fresh source and target registry per test (and a clean known-locations map). */
export function useRegistryPair(): RegistryPair {
  const pair = {} as RegistryPair;
  beforeEach(async () => {
    forgetKnownLocations();
    pair.src = await new FakeRegistry().start();
    pair.dst = await new FakeRegistry().start();
  });
  afterEach(async () => {
    await pair.src.stop();
    await pair.dst.stop();
  });
  return pair;
}

export function copyRequest(source: string, target: string, extra: Partial<CopyRequest> = {}): CopyRequest {
  return { source, target, sourceOptions: plain, targetOptions: plain, ...extra };
}

export const OCI_INDEX = "application/vnd.oci.image.index.v1+json";
export const OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json";
export const DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json";
export const DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json";

export interface FakeImageOptions {
  platforms?: string[];
  layers?: number;
  layerSize?: number;
  format?: "oci" | "docker";
  seed?: string;
  /** A layer put into every platform's image (to prove dedupe). */
  sharedLayer?: Buffer;
}

export interface FakeImage {
  digest: string;
  mediaType: string;
  bytes: Buffer;
  children: Array<{ digest: string; platform: string; blobs: string[] }>;
  blobs: string[];
}

export function digestOf(b: Buffer): string {
  return `sha256:${createHash("sha256").update(b).digest("hex")}`;
}

/** Pseudo-random bytes from a seed: the same seed gives the same layer. */
export function bytesFrom(seed: string, size: number): Buffer {
  const out = Buffer.alloc(size);
  let block = createHash("sha256").update(seed).digest();
  for (let i = 0; i < size; i += block.length) {
    block.copy(out, i, 0, Math.min(block.length, size - i));
    block = createHash("sha256").update(block).digest();
  }
  return out;
}

/** Pushes an image (an index when several platforms are given) to repo:tag of the fake registry. */
export function seedFake(reg: FakeRegistry, repo: string, tag: string | undefined, opts: FakeImageOptions = {}): FakeImage {
  const platforms = opts.platforms ?? ["linux/amd64"];
  const docker = opts.format === "docker";
  const children = platforms.map((p) => {
    const m = manifestFor(p, opts);
    for (const b of m.blobData) reg.putBlob(repo, b);
    const digest = reg.putManifest(repo, digestOf(m.bytes), m.bytes, m.mediaType);
    return { digest, platform: p, blobs: m.blobData.map(digestOf), bytes: m.bytes, mediaType: m.mediaType };
  });
  if (platforms.length === 1 && !opts.platforms) {
    const only = children[0]!;
    if (tag) reg.putManifest(repo, tag, only.bytes, only.mediaType);
    return { digest: only.digest, mediaType: only.mediaType, bytes: only.bytes, children: [], blobs: only.blobs };
  }
  const mediaType = docker ? DOCKER_LIST : OCI_INDEX;
  const bytes = Buffer.from(
    JSON.stringify(
      {
        schemaVersion: 2,
        mediaType,
        manifests: children.map((c) => ({
          mediaType: c.mediaType,
          digest: c.digest,
          size: c.bytes.length,
          platform: platformObject(c.platform),
        })),
      },
      null,
      3,
    ),
  );
  const digest = reg.putManifest(repo, tag ?? digestOf(bytes), bytes, mediaType);
  return {
    digest,
    mediaType,
    bytes,
    children: children.map(({ digest, platform, blobs }) => ({ digest, platform, blobs })),
    blobs: [...new Set(children.flatMap((c) => c.blobs))],
  };
}

/** A cosign-style signature tag (sha256-<hex>.sig) for `digest`: a small manifest with one layer. */
export function seedSignature(reg: FakeRegistry, repo: string, digest: string, suffix = "sig"): string {
  const payload = Buffer.from(JSON.stringify({ critical: { image: { "docker-manifest-digest": digest } } }));
  const config = Buffer.from("{}");
  reg.putBlob(repo, payload);
  reg.putBlob(repo, config);
  const bytes = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: digestOf(config), size: config.length },
      layers: [{ mediaType: "application/vnd.dev.cosign.simplesigning.v1+json", digest: digestOf(payload), size: payload.length }],
    }),
  );
  return reg.putManifest(repo, `${digest.replace(":", "-")}.${suffix}`, bytes, OCI_MANIFEST);
}

function platformObject(p: string): Record<string, string> {
  const [os, architecture, variant] = p.split("/");
  return { os: os!, architecture: architecture!, ...(variant ? { variant } : {}) };
}

function manifestFor(platform: string, opts: FakeImageOptions): { bytes: Buffer; mediaType: string; blobData: Buffer[] } {
  const docker = opts.format === "docker";
  const seed = `${opts.seed ?? "img"}/${platform}`;
  const layers = Array.from({ length: opts.layers ?? 2 }, (_, i) => bytesFrom(`${seed}/layer${i}`, opts.layerSize ?? 2048));
  if (opts.sharedLayer) layers.push(opts.sharedLayer);
  const config = Buffer.from(
    JSON.stringify({ ...platformObject(platform), rootfs: { type: "layers", diff_ids: layers.map(digestOf) }, seed }),
  );
  const mediaType = docker ? DOCKER_MANIFEST : OCI_MANIFEST;
  const bytes = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType,
      config: {
        mediaType: docker ? "application/vnd.docker.container.image.v1+json" : "application/vnd.oci.image.config.v1+json",
        digest: digestOf(config),
        size: config.length,
      },
      layers: layers.map((l) => ({
        mediaType: docker ? "application/vnd.docker.image.rootfs.diff.tar.gzip" : "application/vnd.oci.image.layer.v1.tar",
        digest: digestOf(l),
        size: l.length,
      })),
    }),
  );
  return { bytes, mediaType, blobData: [config, ...layers] };
}
