// Distribution error bodies ({"errors":[{"code":"MANIFEST_UNKNOWN",…}]}) and bare statuses mapped
// onto ImageyardError codes, with messages a person can act on.
import { HttpStatusError, isRetryableStatus, type ErrorCode } from "../http/errors";
import type { HttpErrorContext } from "../http/client";

export class RegistryError extends HttpStatusError {
  /** The distribution spec code, when the registry sent one ("MANIFEST_UNKNOWN"). */
  readonly specCode: string | undefined;
  constructor(code: ErrorCode, message: string, ctx: HttpErrorContext, specCode: string | undefined, retryable: boolean) {
    super(code, message, ctx.request.method, ctx.request.url, {
      status: ctx.status,
      body: ctx.body,
      retryable,
      retryAfterMs: ctx.retryAfterMs,
      paced: (ctx.paced ?? false) && retryable,
    });
    this.name = "RegistryError";
    this.specCode = specCode;
  }
}

/** What a registry call was doing, for messages: "pull 127.0.0.1:5001/team/app:v9". */
export interface RegistryTarget {
  operation: string;
  /** registry/repo[:tag|@digest] */
  target: string;
  registry: string;
  /** What the call addressed when the status alone says "not found". */
  object: "manifest" | "blob" | "upload" | "repository" | "tags" | "referrers" | "registry";
  /** Where the credentials came from, for auth messages: "targetAuth", "/root/.docker/config.json". */
  credentialsHint: string;
  /** Whether any credentials were sent. */
  hadCredentials: boolean;
  /** Which side answered, for messages: "the target registry 127.0.0.1:5002". */
  peer?: string;
}

interface SpecError {
  code?: unknown;
  message?: unknown;
  detail?: unknown;
}

export interface SpecBody {
  code?: string;
  message?: string;
  /** The registry's own words on what went wrong (a storage driver's error, a missing blob), capped. */
  detail?: string;
  /** Whether the detail was a sentence rather than a JSON object (`{"Tag":"v9"}` says nothing new). */
  detailIsText?: boolean;
}

const MAX_DETAIL = 300;

/** The first spec error code, message and detail in a body, if the body is the distribution JSON shape. */
export function parseErrorBody(body: string): SpecBody {
  try {
    const doc = JSON.parse(body) as { errors?: SpecError[] };
    const first = Array.isArray(doc?.errors) ? doc.errors[0] : undefined;
    const out: SpecBody = {};
    if (typeof first?.code === "string") out.code = first.code.toUpperCase();
    if (typeof first?.message === "string") out.message = first.message;
    const detail =
      typeof first?.detail === "string"
        ? first.detail
        : first?.detail !== undefined && first.detail !== null
          ? JSON.stringify(first.detail)
          : "";
    if (detail.trim() !== "" && detail !== "{}" && detail !== "[]") {
      out.detail = detail.length > MAX_DETAIL ? `${detail.slice(0, MAX_DETAIL)}…` : detail;
      out.detailIsText = typeof first?.detail === "string";
    }
    return out;
  } catch {
    return {};
  }
}

/** A storage driver's "disk full" in whatever words the registry passed on. */
const NO_SPACE = /no space left on device|\bENOSPC\b|disk quota exceeded|\bEDQUOT\b|insufficient storage/i;

interface Mapping {
  code: ErrorCode;
  what: string;
  hint: string;
  retryable?: boolean;
  /** The spec code to show when the body carried none (HEAD answers have no body). */
  spec?: string;
}

function byStatus(status: number, t: RegistryTarget): Mapping {
  if (status === 401) return unauthorized(t);
  if (status === 403) return denied(t);
  if (status === 404) {
    if (t.object === "manifest") return { code: "MANIFEST_UNKNOWN", what: "manifest not found", hint: "Check the tag and repository name" };
    if (t.object === "blob")
      return {
        code: "BLOB_UNKNOWN",
        what: "blob not found",
        hint: "The registry no longer holds a blob the manifest names; check the source image",
      };
    if (t.object === "upload")
      return {
        code: "BLOB_UNKNOWN",
        what: "upload session not found",
        hint: "The registry dropped the upload; run again to start a new one",
      };
    if (t.object === "referrers")
      return {
        code: "UNSUPPORTED",
        what: "the registry has no referrers API",
        hint: "Use a registry that implements OCI distribution 1.1, or skip referrers",
      };
    return { code: "NAME_UNKNOWN", what: "repository not found", hint: "Check the repository name" };
  }
  if (status === 405)
    return {
      code: "UNSUPPORTED",
      what: "the registry does not support this operation",
      hint: "Enable it on the registry (e.g. storage.delete.enabled for deletes) or skip it",
    };
  if (status === 429) return tooMany();
  if (status === 416)
    return { code: "HTTP_ERROR", what: "the registry rejected the byte range", hint: "Restart the transfer from the beginning" };
  if (status === 507) return noSpace(t);
  if (status >= 500)
    return {
      code: "HTTP_ERROR",
      what: `${t.peer ?? "the registry"} failed`,
      hint: "Retry later; check the registry's logs if it persists",
      retryable: true,
    };
  return { code: "HTTP_ERROR", what: "unexpected answer", hint: "Check the registry address and its logs" };
}

function unauthorized(t: RegistryTarget): Mapping {
  return t.hadCredentials
    ? {
        code: "REGISTRY_UNAUTHORIZED",
        spec: "UNAUTHORIZED",
        what: "registry refused the credentials",
        hint: `Check ${t.credentialsHint} for ${t.registry}`,
      }
    : {
        code: "REGISTRY_UNAUTHORIZED",
        spec: "UNAUTHORIZED",
        what: "registry requires credentials and none were given",
        hint: `Set ${t.credentialsHint} for ${t.registry} (or log in with docker login ${t.registry})`,
      };
}

function denied(t: RegistryTarget): Mapping {
  return {
    code: "REGISTRY_DENIED",
    spec: "DENIED",
    what: "registry denied access",
    hint: t.hadCredentials
      ? `Check that the account in ${t.credentialsHint} for ${t.registry} may ${t.operation} this repository`
      : `Set ${t.credentialsHint} for ${t.registry}`,
  };
}

function noSpace(t: RegistryTarget): Mapping {
  return {
    code: "NO_SPACE",
    what: `${t.peer ?? "the registry"} is out of storage`,
    hint: "Free space on the registry's storage (this copy cancelled its unfinished uploads), then run again",
    retryable: false,
  };
}

function tooMany(): Mapping {
  return {
    code: "TOO_MANY_REQUESTS",
    spec: "TOOMANYREQUESTS",
    what: "the registry is rate-limiting requests",
    hint: "Wait and retry, or authenticate to get a higher limit",
    retryable: true,
  };
}

const BY_SPEC_CODE: Record<string, (t: RegistryTarget) => Mapping> = {
  MANIFEST_UNKNOWN: () => ({ code: "MANIFEST_UNKNOWN", what: "manifest not found", hint: "Check the tag and repository name" }),
  BLOB_UNKNOWN: (t) => byStatus(404, { ...t, object: "blob" }),
  BLOB_UPLOAD_UNKNOWN: (t) => byStatus(404, { ...t, object: "upload" }),
  BLOB_UPLOAD_INVALID: () => ({ code: "HTTP_ERROR", what: "the registry rejected the upload", hint: "Run again to start a new upload" }),
  NAME_UNKNOWN: () => ({ code: "NAME_UNKNOWN", what: "repository not found", hint: "Check the repository name" }),
  NAME_INVALID: () => ({
    code: "INVALID_INPUT",
    what: "invalid repository name",
    hint: "Use lowercase letters, digits and separators ('.', '_', '-', '/')",
  }),
  TAG_INVALID: () => ({ code: "INVALID_INPUT", what: "invalid tag", hint: "Use letters, digits, '_', '.' and '-' (at most 128)" }),
  MANIFEST_INVALID: () => ({
    code: "MANIFEST_INVALID",
    what: "the registry rejected the manifest",
    hint: "Check that Content-Type equals the manifest's mediaType and the document is valid",
  }),
  MANIFEST_UNVERIFIED: () => ({
    code: "MANIFEST_INVALID",
    what: "the registry could not verify the manifest",
    hint: "Check the manifest signature",
  }),
  MANIFEST_BLOB_UNKNOWN: () => ({
    code: "MANIFEST_INVALID",
    what: "the manifest refers to blobs or manifests the repository lacks",
    hint: "Push every blob and child manifest before the manifest that names them",
  }),
  DIGEST_INVALID: () => ({
    code: "DIGEST_MISMATCH",
    what: "the uploaded content does not match its digest",
    hint: "The data changed in transit; run again",
  }),
  SIZE_INVALID: () => ({ code: "SIZE_MISMATCH", what: "the uploaded content does not match its declared size", hint: "Run again" }),
  UNAUTHORIZED: unauthorized,
  DENIED: denied,
  UNSUPPORTED: () => ({
    code: "UNSUPPORTED",
    what: "the registry does not support this operation",
    hint: "Enable it on the registry or skip it",
  }),
  TOOMANYREQUESTS: tooMany,
};

/** Maps an unaccepted response onto a typed error with a message in the project's shape. */
export function registryError(ctx: HttpErrorContext, t: RegistryTarget): RegistryError {
  const spec = parseErrorBody(ctx.body);
  const auth = ctx.status === 401 || ctx.status === 403;
  const full = !auth && NO_SPACE.test(`${spec.detail ?? ""} ${spec.message ?? ""}`);
  const m = full ? noSpace(t) : ((spec.code && !auth ? BY_SPEC_CODE[spec.code]?.(t) : undefined) ?? byStatus(ctx.status, t));
  const shown = spec.code ?? m.spec;
  const label = shown ? `${ctx.status} ${shown}` : `${ctx.status}`;
  const retryable = m.retryable ?? isRetryableStatus(ctx.status);
  return new RegistryError(
    m.code,
    `${t.operation} ${t.target}: ${m.what}${auth ? "" : registrySays(spec, ctx.status)} (${label}). ${m.hint}.`,
    ctx,
    spec.code,
    retryable,
  );
}

/** What the registry itself said, when it says more than its code: a textual detail; on a 5xx also its message and any detail. */
function registrySays(spec: SpecBody, status: number): string {
  const failed = status >= 500;
  const words = [
    failed && spec.message && !/^unknown error$/i.test(spec.message) ? spec.message : undefined,
    failed || spec.detailIsText ? spec.detail : undefined,
  ].filter(Boolean);
  return words.length > 0 ? `: ${words.join(": ")}` : "";
}
