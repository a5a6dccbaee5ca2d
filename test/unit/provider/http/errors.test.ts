import { describe, expect, it, vi } from "vitest";
import {
  capBody,
  HttpStatusError,
  ImageyardError,
  isImageyardError,
  isRetryableNetworkError,
  isRetryableStatus,
  redactUrl,
} from "../../../../provider/http/errors";

describe("ImageyardError", () => {
  it("carries code, retryable, status, body, Retry-After and cause", () => {
    const cause = new Error("root");
    const e = new ImageyardError("HTTP_ERROR", "msg", { retryable: true, status: 503, body: "b", retryAfterMs: 10, cause });
    expect(e).toMatchObject({
      code: "HTTP_ERROR",
      retryable: true,
      status: 503,
      body: "b",
      retryAfterMs: 10,
      name: "ImageyardError",
      message: "msg",
    });
    expect(e.cause).toBe(cause);
    expect(new ImageyardError("INVALID_INPUT", "x").retryable).toBe(false);
  });

  it("stays instanceof across two loaded copies of the module (a serialized provider's own copy)", async () => {
    vi.resetModules();
    const other = await import("../../../../provider/http/errors");
    expect(other.ImageyardError).not.toBe(ImageyardError);
    const foreign = new other.ImageyardError("MANIFEST_UNKNOWN", "x");
    expect(foreign instanceof ImageyardError).toBe(true);
    expect(isImageyardError(foreign, "MANIFEST_UNKNOWN")).toBe(true);
    expect(new ImageyardError("TIMEOUT", "y") instanceof other.ImageyardError).toBe(true);
    expect(new Error("plain") instanceof ImageyardError).toBe(false);
    expect(isImageyardError(null)).toBe(false);
  });

  it("brands every subclass on its own: siblings never match, parents always do", async () => {
    const { RegistryError } = await import("../../../../provider/oci/errors");
    const { GlanceError, KeystoneError } = await import("../../../../provider/glance/errors");
    const { DiskImageError } = await import("../../../../provider/disk/errors");
    const base = new ImageyardError("TIMEOUT", "t");
    const disk = new DiskImageError("QEMU_FAILED", "q");
    const glance = new GlanceError("GLANCE_ERROR", "g");
    const http = new HttpStatusError("HTTP_ERROR", "h", "GET", "http://h/x");
    expect(base instanceof DiskImageError).toBe(false);
    expect(glance instanceof DiskImageError).toBe(false);
    expect(disk instanceof GlanceError).toBe(false);
    expect(disk instanceof KeystoneError).toBe(false);
    expect(http instanceof RegistryError).toBe(false);
    expect(disk instanceof DiskImageError && disk instanceof ImageyardError).toBe(true);
    expect(glance instanceof GlanceError && glance instanceof ImageyardError).toBe(true);
    expect(http instanceof HttpStatusError && !(http instanceof GlanceError)).toBe(true);
  });

  it("keeps each subclass's brand across two loaded copies of the modules", async () => {
    const { DiskImageError } = await import("../../../../provider/disk/errors");
    const { RegistryError } = await import("../../../../provider/oci/errors");
    vi.resetModules();
    const otherDisk = await import("../../../../provider/disk/errors");
    const otherOci = await import("../../../../provider/oci/errors");
    const otherHttp = await import("../../../../provider/http/errors");
    expect(otherDisk.DiskImageError).not.toBe(DiskImageError);
    const foreignDisk = new otherDisk.DiskImageError("QEMU_FAILED", "q");
    expect(foreignDisk instanceof DiskImageError).toBe(true);
    expect(foreignDisk instanceof ImageyardError).toBe(true);
    expect(foreignDisk instanceof RegistryError).toBe(false);
    expect(new otherHttp.ImageyardError("TIMEOUT", "x") instanceof DiskImageError).toBe(false);
    expect(new DiskImageError("QEMU_FAILED", "q") instanceof otherDisk.DiskImageError).toBe(true);
    expect(new ImageyardError("TIMEOUT", "x") instanceof otherOci.RegistryError).toBe(false);
    expect(new HttpStatusError("HTTP_ERROR", "h", "GET", "http://h/") instanceof otherHttp.HttpStatusError).toBe(true);
  });

  it("gives every error class of the package a distinct brand name", async () => {
    const classes = [
      ImageyardError,
      HttpStatusError,
      (await import("../../../../provider/oci/errors")).RegistryError,
      (await import("../../../../provider/glance/errors")).GlanceError,
      (await import("../../../../provider/glance/errors")).KeystoneError,
      (await import("../../../../provider/disk/errors")).DiskImageError,
    ];
    const brands = classes.map((c) => c.brand);
    expect(new Set(brands).size).toBe(brands.length);
  });

  it("isImageyardError filters by code", () => {
    const e = new ImageyardError("DIGEST_MISMATCH", "x");
    expect(isImageyardError(e, "DIGEST_MISMATCH")).toBe(true);
    expect(isImageyardError(e, "TIMEOUT")).toBe(false);
  });

  it("HttpStatusError keeps method and a redacted URL", () => {
    const e = new HttpStatusError("HTTP_ERROR", "m", "PUT", "https://u:p@h/x?X-Amz-Signature=abc&n=1");
    expect(e.method).toBe("PUT");
    expect(e.url).toBe("https://h/x?X-Amz-Signature=REDACTED&n=1");
    expect(e instanceof ImageyardError).toBe(true);
  });
});

describe("redactUrl", () => {
  it("drops user info and signed query values, keeps the rest", () => {
    expect(redactUrl("https://user:pass@reg.test/v2/?token=t0k&n=10")).toBe("https://reg.test/v2/?token=REDACTED&n=10");
    expect(redactUrl("https://s3.test/b?X-Amz-Credential=AKIA&X-Amz-Signature=s&partNumber=2")).toBe(
      "https://s3.test/b?X-Amz-Credential=REDACTED&X-Amz-Signature=REDACTED&partNumber=2",
    );
    expect(redactUrl("https://blob.test/c?sv=1&se=2&sp=r&sig=abc&comp=block")).toBe(
      "https://blob.test/c?sv=REDACTED&se=REDACTED&sp=REDACTED&sig=REDACTED&comp=block",
    );
    expect(redactUrl("http://127.0.0.1:5002/v2/a/blobs/uploads/u?_state=xyz&digest=sha256:1")).toContain("_state=REDACTED");
  });

  it("redacts other common secret parameters (passwords, keys, OAuth codes)", () => {
    const out = redactUrl("https://h/p?password=pw&api_key=k&key=k2&client_secret=s&code=c&access_token=a&refresh_token=r&page=3");
    for (const v of ["pw", "=k&", "k2", "=s&", "=c&", "=a&", "=r&"]) expect(out).not.toContain(v);
    expect(out).toContain("page=3");
  });

  it("redacts relative URLs too (registries answer relative upload Locations)", () => {
    expect(redactUrl("/v2/a/blobs/uploads/u?_state=secretstate&x=1")).toBe("/v2/a/blobs/uploads/u?_state=REDACTED&x=1");
    expect(redactUrl("//u:p@host/x")).toBe("//host/x");
    expect(redactUrl("127.0.0.1:5001/x?token=t")).toBe("127.0.0.1:5001/x?REDACTED");
  });

  it("leaves a URL without secrets unchanged", () => {
    expect(redactUrl("https://reg.test/v2/library/alpine/manifests/3.20")).toBe("https://reg.test/v2/library/alpine/manifests/3.20");
  });
});

describe("capBody", () => {
  it("folds whitespace and <br>, and caps the length with an ellipsis", () => {
    expect(capBody("a\n\n  b<br/>c")).toBe("a b c");
    expect(capBody("x".repeat(600))).toBe(`${"x".repeat(512)}…`);
    expect(capBody("abcdef", 3)).toBe("abc…");
  });
});

describe("retryable classification", () => {
  it("retries 408, 429 and 5xx gateway-type statuses only", () => {
    for (const s of [408, 429, 500, 502, 503, 504]) expect(isRetryableStatus(s)).toBe(true);
    for (const s of [200, 400, 401, 403, 404, 409, 501]) expect(isRetryableStatus(s)).toBe(false);
  });

  it("recognises connection-level error codes", () => {
    expect(isRetryableNetworkError({ code: "ECONNRESET" })).toBe(true);
    expect(isRetryableNetworkError({ code: "UND_ERR_SOCKET" })).toBe(true);
    expect(isRetryableNetworkError({ code: "EACCES" })).toBe(false);
    expect(isRetryableNetworkError(undefined)).toBe(false);
  });
});
