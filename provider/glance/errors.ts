// Errors of the OpenStack side (Keystone, Glance, clouds.yaml). Glance answers JSON only when asked
// (`Accept: application/json`), with `code` as a string ("404 Not Found") and `<br />` noise in
// `message`; Keystone nests it: {"error":{"code":401,"message":…,"title":…}}. Both become one
// sentence in the DESIGN shape, with the status and the capped body kept on the error.
import type { HttpErrorContext } from "../http/client";
import { ImageyardError, isRetryableStatus, redactUrl, type ErrorCode, type ImageyardErrorOptions } from "../http/errors";

export class GlanceError extends ImageyardError {
  /** The Glance image the failure concerns, when one exists (for partial-state reporting). */
  imageId: string | undefined;
  constructor(code: ErrorCode, message: string, opts: ImageyardErrorOptions & { imageId?: string } = {}) {
    super(code, message, opts);
    this.name = "GlanceError";
    this.imageId = opts.imageId;
  }
}

export class KeystoneError extends ImageyardError {
  constructor(code: ErrorCode, message: string, opts: ImageyardErrorOptions = {}) {
    super(code, message, opts);
    this.name = "KeystoneError";
  }
}

/** The human part of an OpenStack error body: Glance's or Keystone's `message`, else the text. */
export function openstackMessage(body: string): string {
  const text = body.trim();
  if (!text) return "";
  try {
    const doc = JSON.parse(text) as { message?: unknown; title?: unknown; error?: { message?: unknown; title?: unknown } };
    const msg = doc.error?.message ?? doc.message ?? doc.error?.title ?? doc.title;
    if (typeof msg === "string") return clean(msg);
  } catch {
    // capped or HTML: fall through
  }
  const m = /"message"\s*:\s*"((?:[^"\\]|\\.)*)/.exec(text);
  if (m) return clean((m[1] as string).replace(/\\n/g, " ").replace(/\\"/g, '"'));
  return clean(text.replace(/<[^>]+>/g, " "));
}

function clean(s: string): string {
  return s
    .replace(/<br\s*\/?>/gi, " ")
    .replace(/\s+/g, " ")
    .trim()
    .replace(/[.\s]+$/, "");
}

const REASONS: Record<number, string> = {
  400: "Bad Request",
  401: "Unauthorized",
  403: "Forbidden",
  404: "Not Found",
  409: "Conflict",
  410: "Gone",
  413: "Request Entity Too Large",
  415: "Unsupported Media Type",
  500: "Internal Server Error",
  502: "Bad Gateway",
  503: "Service Unavailable",
  504: "Gateway Timeout",
};

export function statusText(status: number): string {
  return `${status}${REASONS[status] ? ` ${REASONS[status]}` : ""}`;
}

/** What to do about a Glance status, when there is a general answer. */
const GLANCE_HINTS: Partial<Record<number, [ErrorCode, string]>> = {
  401: [
    "KEYSTONE_UNAUTHORIZED",
    "The token was refused even after re-authenticating; check the credentials and that Glance trusts this Keystone",
  ],
  403: [
    "GLANCE_FORBIDDEN",
    "The project lacks the right for this (a member may not publicize images or change another project's image); use an account with the role the policy asks for",
  ],
  404: ["GLANCE_NOT_FOUND", "Check the image ID and that it belongs to (or is visible to) this project"],
  409: ["GLANCE_CONFLICT", "The image is in a state that does not allow this; check its status"],
  413: [
    "GLANCE_TOO_LARGE",
    "The image is larger than Glance's image_size_cap or the project's storage quota; ask the cloud operator or use a smaller image",
  ],
};

/** Maps an unaccepted Glance status to a typed error (send()'s mapError). */
export function glanceError(ctx: HttpErrorContext, imageId?: string): GlanceError {
  const { request: req, status } = ctx;
  const msg = openstackMessage(ctx.body);
  const [code, hint] = GLANCE_HINTS[status] ?? [
    "GLANCE_ERROR",
    status >= 500 ? "Glance failed; retry later or check its logs" : "Check the request values",
  ];
  return new GlanceError(
    code,
    `${req.operation}: Glance answered ${msg ? `"${msg}"` : "without a reason"} (${statusText(status)}). ${hint}.`,
    {
      status,
      body: ctx.body,
      retryable: isRetryableStatus(status),
      retryAfterMs: ctx.retryAfterMs,
      imageId,
    },
  );
}

/** Maps an unaccepted Keystone status to a typed error. `who` names the account, never the secret. */
export function keystoneError(ctx: HttpErrorContext, who: string): KeystoneError {
  const { request: req, status } = ctx;
  const msg = openstackMessage(ctx.body);
  const reason = msg ? `"${msg}"` : "without a reason";
  if (status === 401) {
    return new KeystoneError(
      "KEYSTONE_UNAUTHORIZED",
      `${req.operation}: Keystone refused the credentials of ${who} (${statusText(status)}). Check the user name, password or application credential, their domains and the project scope.`,
      {
        status,
        body: ctx.body,
      },
    );
  }
  if (status === 404) {
    return new KeystoneError(
      "KEYSTONE_UNAUTHORIZED",
      `${req.operation}: Keystone knows no such user, project or domain for ${who} (${statusText(status)}). Check the names and IDs.`,
      { status, body: ctx.body },
    );
  }
  return new KeystoneError(
    "HTTP_ERROR",
    `${req.operation}: Keystone at ${redactUrl(req.url)} answered ${reason} (${statusText(status)}). Check auth_url and that Keystone v3 is reachable.`,
    {
      status,
      body: ctx.body,
      retryable: isRetryableStatus(status),
      retryAfterMs: ctx.retryAfterMs,
    },
  );
}
