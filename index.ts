// imageyard's public API: the resources, their argument types, and the error family.
export * from "./provider/resources/mirroredImage";
export { ImageyardError, isImageyardError, type ErrorCode } from "./provider/http/errors";
export * from "./provider/resources/communityImage";
export * from "./provider/resources/prePullSet";
export * from "./provider/resources/imageFromTar";
export * from "./components";
export { verifyMirrorUse, type MirrorUseOptions, type MirrorUseReport, type ContainerImageUse } from "./provider/node/mirrorUse";
