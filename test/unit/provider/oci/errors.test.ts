import { describe, expect, it } from "vitest";
import type { HttpErrorContext } from "../../../../provider/http/client";
import { isImageyardError } from "../../../../provider/http/errors";
import { parseErrorBody, registryError, type RegistryTarget } from "../../../../provider/oci/errors";

const t: RegistryTarget = {
  operation: "pull",
  target: "127.0.0.1:5001/team/app:v9",
  registry: "127.0.0.1:5001",
  object: "manifest",
  credentialsHint: "sourceAuth",
  hadCredentials: true,
};

function ctx(status: number, body = "", retryAfterMs?: number): HttpErrorContext {
  return {
    request: { method: "GET", url: "http://127.0.0.1:5001/v2/team/app/manifests/v9?_state=secret", ok: [200], operation: "pull" },
    status,
    headers: {},
    body,
    retryAfterMs,
  };
}
const spec = (code: string, message = "m") => JSON.stringify({ errors: [{ code, message, detail: null }] });

describe("registryError maps distribution errors onto stable codes", () => {
  it("gives the DESIGN message for an unknown manifest", () => {
    const e = registryError(ctx(404, spec("MANIFEST_UNKNOWN")), t);
    expect(e.code).toBe("MANIFEST_UNKNOWN");
    expect(e.message).toBe(
      "pull 127.0.0.1:5001/team/app:v9: manifest not found (404 MANIFEST_UNKNOWN). Check the tag and repository name.",
    );
    expect(e.specCode).toBe("MANIFEST_UNKNOWN");
    expect(e.status).toBe(404);
    expect(e.retryable).toBe(false);
    expect(isImageyardError(e)).toBe(true);
  });

  const table: Array<[number, string | undefined, RegistryTarget["object"], string]> = [
    [404, "BLOB_UNKNOWN", "blob", "BLOB_UNKNOWN"],
    [404, "BLOB_UPLOAD_UNKNOWN", "upload", "BLOB_UNKNOWN"],
    [404, "NAME_UNKNOWN", "repository", "NAME_UNKNOWN"],
    [400, "MANIFEST_INVALID", "manifest", "MANIFEST_INVALID"],
    [400, "MANIFEST_BLOB_UNKNOWN", "manifest", "MANIFEST_INVALID"],
    [400, "DIGEST_INVALID", "upload", "DIGEST_MISMATCH"],
    [400, "SIZE_INVALID", "upload", "SIZE_MISMATCH"],
    [400, "NAME_INVALID", "manifest", "INVALID_INPUT"],
    [400, "TAG_INVALID", "manifest", "INVALID_INPUT"],
    [405, "UNSUPPORTED", "manifest", "UNSUPPORTED"],
    [405, undefined, "manifest", "UNSUPPORTED"],
    [401, "UNAUTHORIZED", "manifest", "REGISTRY_UNAUTHORIZED"],
    [403, "DENIED", "manifest", "REGISTRY_DENIED"],
    [403, undefined, "blob", "REGISTRY_DENIED"],
    [404, undefined, "manifest", "MANIFEST_UNKNOWN"],
    [404, undefined, "blob", "BLOB_UNKNOWN"],
    [404, undefined, "repository", "NAME_UNKNOWN"],
    [404, undefined, "referrers", "UNSUPPORTED"],
    [429, "TOOMANYREQUESTS", "manifest", "TOO_MANY_REQUESTS"],
    [429, undefined, "blob", "TOO_MANY_REQUESTS"],
    [502, undefined, "blob", "HTTP_ERROR"],
    [418, undefined, "blob", "HTTP_ERROR"],
  ];
  for (const [status, code, object, want] of table) {
    it(`${status} ${code ?? "(no body)"} on a ${object} → ${want}`, () => {
      expect(registryError(ctx(status, code ? spec(code) : ""), { ...t, object }).code).toBe(want);
    });
  }

  it("marks 429 and 5xx retryable and keeps Retry-After; 4xx are final", () => {
    const rl = registryError(ctx(429, spec("TOOMANYREQUESTS"), 2000), t);
    expect(rl.retryable).toBe(true);
    expect(rl.retryAfterMs).toBe(2000);
    expect(registryError(ctx(503), t).retryable).toBe(true);
    expect(registryError(ctx(400, spec("MANIFEST_INVALID")), t).retryable).toBe(false);
  });

  it("names the credentials input on 401, and what to set when none were given", () => {
    expect(registryError(ctx(401), t).message).toBe(
      "pull 127.0.0.1:5001/team/app:v9: registry refused the credentials (401 UNAUTHORIZED). Check sourceAuth for 127.0.0.1:5001.",
    );
    expect(registryError(ctx(401), { ...t, hadCredentials: false, credentialsHint: "targetAuth" }).message).toMatch(
      /registry requires credentials and none were given \(401 UNAUTHORIZED\)\. Set targetAuth for 127\.0\.0\.1:5001/,
    );
  });

  it("uses the status, not a contradicting body code, for 401/403", () => {
    expect(registryError(ctx(403, spec("MANIFEST_UNKNOWN")), t).code).toBe("REGISTRY_DENIED");
  });

  it("never carries the signed upload state in the error's URL", () => {
    const e = registryError(ctx(500), t);
    expect(e.url).not.toContain("secret");
  });
});

describe("parseErrorBody", () => {
  it("reads the first spec error, upper-casing the code", () => {
    expect(parseErrorBody(JSON.stringify({ errors: [{ code: "denied", message: "no" }, { code: "X" }] }))).toEqual({
      code: "DENIED",
      message: "no",
    });
  });
  it("tolerates bodies that are not the spec shape", () => {
    expect(parseErrorBody("<html>")).toEqual({});
    expect(parseErrorBody("null")).toEqual({});
    expect(parseErrorBody(JSON.stringify({ errors: "x" }))).toEqual({});
  });
});

describe("registryError surfaces what the registry itself said", () => {
  const body = (detail: unknown, message = "unknown error", code = "UNKNOWN") => JSON.stringify({ errors: [{ code, message, detail }] });

  it("turns a storage driver's 'no space left on device' into NO_SPACE, naming the side, not retryable", () => {
    const e = registryError(ctx(500, body("filesystem: write /var/lib/registry/x/data: no space left on device")), {
      ...t,
      operation: "push",
      peer: "the target registry 127.0.0.1:5001",
    });
    expect(e.code).toBe("NO_SPACE");
    expect(e.retryable).toBe(false);
    expect(e.message).toBe(
      "push 127.0.0.1:5001/team/app:v9: the target registry 127.0.0.1:5001 is out of storage: filesystem: write /var/lib/registry/x/data: no space left on device (500 UNKNOWN). Free space on the registry's storage (this copy cancelled its unfinished uploads), then run again.",
    );
  });

  it("shows a 5xx's message and detail, capped, and keeps JSON details out of 4xx messages", () => {
    const long = registryError(ctx(500, body("d".repeat(1000), "storage backend failed")), t);
    expect(long.code).toBe("HTTP_ERROR");
    expect(long.message).toMatch(/: storage backend failed: d{300}… \(500 UNKNOWN\)/);
    expect(registryError(ctx(404, body({ Tag: "v9" }, "manifest unknown", "MANIFEST_UNKNOWN")), t).message).toContain(
      "manifest not found (404 MANIFEST_UNKNOWN)",
    );
    expect(registryError(ctx(400, body("sha256:abc", "blob unknown to registry", "MANIFEST_BLOB_UNKNOWN")), t).message).toContain(
      "lacks: sha256:abc (400 MANIFEST_BLOB_UNKNOWN)",
    );
  });

  it("reads 507 Insufficient Storage as NO_SPACE too", () => {
    expect(registryError(ctx(507, ""), t).code).toBe("NO_SPACE");
  });

  it("parseErrorBody keeps the detail, as text or as JSON", () => {
    expect(parseErrorBody(body("no space"))).toMatchObject({ code: "UNKNOWN", detail: "no space", detailIsText: true });
    expect(parseErrorBody(body({ a: 1 }))).toMatchObject({ detail: '{"a":1}', detailIsText: false });
  });
});
