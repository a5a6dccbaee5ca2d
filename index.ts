// imageyard public API: the resources, their argument types, and the error family.
export { ImageyardError, isImageyardError, type ErrorCode } from "./provider/http/errors";
