// Media types in one leaf module. Registries pick the manifest representation from Accept, so
// every manifest request sends all four kinds we understand (see MANIFEST_ACCEPT).

export const OCI_INDEX = "application/vnd.oci.image.index.v1+json";
export const OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json";
export const OCI_CONFIG = "application/vnd.oci.image.config.v1+json";
export const OCI_LAYER = "application/vnd.oci.image.layer.v1.tar";
export const OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip";
export const OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd";
export const OCI_LAYER_NONDIST_GZIP = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";
export const OCI_EMPTY = "application/vnd.oci.empty.v1+json";

export const DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json";
export const DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json";
export const DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json";
export const DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip";
export const DOCKER_FOREIGN_LAYER = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
/** Schema 1: read-only legacy; we refuse to copy it (its digest is not stable across registries). */
export const DOCKER_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json";
export const DOCKER_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws";

export const INDEX_TYPES: readonly string[] = [OCI_INDEX, DOCKER_MANIFEST_LIST];
export const MANIFEST_TYPES: readonly string[] = [OCI_MANIFEST, DOCKER_MANIFEST];

/** Without all four, distribution 2.8 answers 404 for OCI and rewrites Docker lists to schema 1. */
export const MANIFEST_ACCEPT = [OCI_INDEX, DOCKER_MANIFEST_LIST, OCI_MANIFEST, DOCKER_MANIFEST].join(", ");

/** The media type without parameters ("; charset=utf-8") and case. */
export function baseMediaType(mt: string | undefined): string {
  return (mt ?? "").split(";")[0]!.trim().toLowerCase();
}

export function isIndex(mt: string | undefined): boolean {
  return INDEX_TYPES.includes(baseMediaType(mt));
}

export function isManifest(mt: string | undefined): boolean {
  return MANIFEST_TYPES.includes(baseMediaType(mt));
}

export function isSchema1(mt: string | undefined): boolean {
  const b = baseMediaType(mt);
  return b === DOCKER_SCHEMA1 || b === DOCKER_SCHEMA1_SIGNED;
}

/** Docker types belong with Docker types: an index of Docker manifests is a manifest list. */
export function isDockerType(mt: string | undefined): boolean {
  return baseMediaType(mt).startsWith("application/vnd.docker.");
}
