// Errors of the disk pipeline (download, checksum, decompress, qemu-img, scratch). One subclass
// so callers can tell the disk side from Glance's, with the codes of provider/http/errors.ts.
import { ImageyardError, redactUrl, type ErrorCode, type ImageyardErrorOptions } from "../http/errors";

export class DiskImageError extends ImageyardError {
  constructor(code: ErrorCode, message: string, opts: ImageyardErrorOptions = {}) {
    super(code, message, opts);
    this.name = "DiskImageError";
  }
}

/** "download https://host/x.qcow2" with credentials and signed queries removed. */
export function downloadTarget(url: string): string {
  return `download ${redactUrl(url)}`;
}

/** Last lines of a program's stderr, for an error message. */
export function tailText(text: string, max = 600): string {
  const t = text.trim();
  return t.length > max ? `…${t.slice(-max)}` : t;
}
