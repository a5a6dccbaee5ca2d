// imageyard's components: ComponentResources that expand a list (a catalog, a manifest, a map)
// into the resources of provider/resources and export the maps users wire into other stacks.
// Every component follows the convention in ./component.ts.
export { childName, ImageyardComponent, InputPropertyError } from "./component";
export { ImageCatalog, type CatalogImageArgs, type ImageCatalogArgs } from "./imageCatalog";
export { CatalogError, type CatalogDocument, type CatalogImageEntry, type CatalogVersionEntry } from "./catalogFile";
export type { PlannedImage, PlannedVersion, RotationOptions } from "./catalogPlan";
export { CommunityImages, type CommunityImageSpec, type CommunityImagesArgs } from "./communityImages";
export {
  ImageManifest,
  manifestYaml,
  parseManifestYaml,
  resolveManifest,
  type ImageManifestArgs,
  type ManifestShape,
} from "./imageManifest";
export { mirrorTarget, rewriteReference, type MirrorOptions } from "./mirrorOptions";
export { MirrorWorkloads, rewritePodImages, workloadKind, type ImageSite, type MirrorWorkloadsArgs } from "./mirrorWorkloads";
export { imageKey, RegistryPreload, type RegistryPreloadArgs } from "./registryPreload";
export { collectWorkloadImages, imagesOfYaml, type FoundImage } from "./workloadImages";
export { compareVersions, parseVersion, selectTags, semverRange, type TagFilter } from "./tagFilter";
export { TagSync, type TagSyncArgs } from "./tagSync";
