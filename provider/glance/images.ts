// Glance v2, one small function per operation (gophercloud style): build the request, state the
// statuses it accepts, parse the answer. Everything goes through the Keystone session, which adds
// the token and re-authenticates once on a 401. Image data is streamed, never buffered.
import type { Readable } from "node:stream";
import { drain, readJson, type HttpErrorContext } from "../http/client";
import { redactUrl } from "../http/errors";
import { withRetry } from "../http/retry";
import { GlanceError, glanceError } from "./errors";
import { glanceRoot, type KeystoneSession } from "./keystone";

export type ImageStatus =
  | "queued"
  | "saving"
  | "uploading"
  | "importing"
  | "active"
  | "deactivated"
  | "killed"
  | "deleted"
  | "pending_delete";
export type Visibility = "public" | "community" | "shared" | "private";
export const VISIBILITIES: readonly Visibility[] = ["community", "public", "shared", "private"];
export const CONTAINER_FORMATS = ["bare", "ovf", "ova", "aki", "ari", "ami", "docker", "compressed"] as const;

/** An image as Glance returns it: core attributes plus custom properties (all strings). */
export interface GlanceImage {
  id: string;
  name: string | null;
  status: ImageStatus;
  visibility: Visibility;
  protected: boolean;
  os_hidden?: boolean;
  owner: string | null;
  disk_format: string | null;
  container_format: string | null;
  min_disk: number;
  min_ram: number;
  size: number | null;
  virtual_size: number | null;
  checksum: string | null;
  os_hash_algo: string | null;
  os_hash_value: string | null;
  tags: string[];
  created_at: string;
  updated_at: string;
  [property: string]: unknown;
}

/** Attributes that are not custom properties (or that Glance owns). */
export const CORE_ATTRIBUTES = new Set([
  "id",
  "name",
  "status",
  "visibility",
  "protected",
  "os_hidden",
  "owner",
  "disk_format",
  "container_format",
  "min_disk",
  "min_ram",
  "size",
  "virtual_size",
  "checksum",
  "os_hash_algo",
  "os_hash_value",
  "tags",
  "created_at",
  "updated_at",
  "self",
  "file",
  "schema",
  "direct_url",
  "locations",
  "stores",
  "os_glance_importing_to_stores",
  "os_glance_failed_import",
  "os_glance_import_task",
]);

/** The custom properties of an image (strings), without Glance's own bookkeeping. */
export function customProperties(img: GlanceImage): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(img)) {
    if (CORE_ATTRIBUTES.has(k) || k.startsWith("os_glance_")) continue;
    if (typeof v === "string") out[k] = v;
  }
  return out;
}

/** A Glance endpoint reached through a Keystone session. */
export interface GlanceClient {
  session: KeystoneSession;
  /** Glance root without version, e.g. http://127.0.0.1:9292 (from the catalog when omitted). */
  endpoint: string;
}

export async function glanceClient(session: KeystoneSession): Promise<GlanceClient> {
  return { session, endpoint: glanceRoot(await session.endpoint("image")) };
}

function url(c: GlanceClient, path: string): string {
  return `${c.endpoint}/v2${path}`;
}

const enc = encodeURIComponent;

// ---------------------------------------------------------------- images

export interface CreateImageOpts {
  name: string;
  disk_format: string;
  container_format: string;
  visibility?: Visibility;
  min_disk?: number;
  min_ram?: number;
  protected?: boolean;
  os_hidden?: boolean;
  tags?: string[];
  /** Custom properties: strings only. */
  properties?: Record<string, string>;
}

/** POST /v2/images → 201, the image in `queued`. */
export async function createImage(c: GlanceClient, opts: CreateImageOpts, signal?: AbortSignal): Promise<GlanceImage> {
  const { properties, ...core } = opts;
  const res = await c.session.request({
    method: "POST",
    url: url(c, "/images"),
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ ...properties, ...core }),
    ok: [201],
    operation: `create image ${opts.name} in Glance ${c.endpoint}`,
    signal,
    mapError: (ctx) => glanceError(ctx),
  });
  return readJson<GlanceImage>(res, `create image ${opts.name}`);
}

/** GET /v2/images/{id} → 200; undefined on 404. Retried on 5xx and resets. */
export async function findImage(c: GlanceClient, id: string, signal?: AbortSignal): Promise<GlanceImage | undefined> {
  return withRetry(
    async () => {
      const res = await c.session.request({
        method: "GET",
        url: url(c, `/images/${enc(id)}`),
        ok: [200, 404],
        operation: `get image ${id} from Glance ${c.endpoint}`,
        signal,
        mapError: (ctx) => glanceError(ctx, id),
      });
      if (res.status === 404) {
        await drain(res);
        return undefined;
      }
      return readJson<GlanceImage>(res, `get image ${id}`);
    },
    undefined,
    { signal },
  );
}

/** GET /v2/images/{id} → 200; a 404 is a GLANCE_NOT_FOUND error. */
export async function getImage(c: GlanceClient, id: string, signal?: AbortSignal): Promise<GlanceImage> {
  const img = await findImage(c, id, signal);
  if (!img) {
    throw glanceError(notFoundContext(`get image ${id} from Glance ${c.endpoint}`, url(c, `/images/${enc(id)}`)), id);
  }
  return img;
}

function notFoundContext(operation: string, u: string): HttpErrorContext {
  return {
    request: { method: "GET", url: u, ok: [200], operation },
    status: 404,
    headers: {},
    body: `No image found with ID ${u.split("/").pop()}`,
    retryAfterMs: undefined,
  };
}

export interface ListImagesOpts {
  name?: string;
  owner?: string;
  /** Images carrying every one of these tags. */
  tags?: string[];
  visibility?: Visibility | "all";
  status?: ImageStatus;
  /** Custom property filters (Glance matches them exactly). */
  properties?: Record<string, string>;
  /** Stop after this many images. */
  max?: number;
}

/** GET /v2/images with filters, following `next` links → every matching image. */
export async function listImages(c: GlanceClient, opts: ListImagesOpts = {}, signal?: AbortSignal): Promise<GlanceImage[]> {
  const q = new URLSearchParams();
  if (opts.name !== undefined) q.set("name", opts.name);
  if (opts.owner !== undefined) q.set("owner", opts.owner);
  for (const t of opts.tags ?? []) q.append("tag", t);
  if (opts.visibility !== undefined) q.set("visibility", opts.visibility);
  if (opts.status !== undefined) q.set("status", opts.status);
  for (const [k, v] of Object.entries(opts.properties ?? {})) q.set(k, v);
  q.set("limit", "100");
  const out: GlanceImage[] = [];
  let next: string | undefined = `/v2/images?${q}`;
  while (next && out.length < (opts.max ?? Infinity)) {
    const u: string = `${c.endpoint}${next}`;
    const page: { images: GlanceImage[]; next?: string } = await withRetry(
      async () => {
        const res = await c.session.request({
          method: "GET",
          url: u,
          ok: [200],
          operation: `list images in Glance ${c.endpoint}`,
          signal,
          mapError: (ctx) => glanceError(ctx),
        });
        return readJson<{ images: GlanceImage[]; next?: string }>(res, "list images");
      },
      undefined,
      { signal },
    );
    out.push(...page.images);
    next = page.next;
  }
  return opts.max !== undefined ? out.slice(0, opts.max) : out;
}

// ---------------------------------------------------------------- data

/** PUT /v2/images/{id}/file → 204: streams `body` (exactly `size` bytes) into a queued image. */
export function uploadImageData(
  c: GlanceClient,
  id: string,
  body: Readable,
  size: number | undefined,
  signal?: AbortSignal,
): Promise<void> {
  return putData(c, id, "file", `upload image data to ${id}`, body, size, signal);
}

/** PUT /v2/images/{id}/stage → 204: the first half of the glance-direct import. */
export function stageImageData(c: GlanceClient, id: string, body: Readable, size: number | undefined, signal?: AbortSignal): Promise<void> {
  return putData(c, id, "stage", `stage image data for ${id}`, body, size, signal);
}

async function putData(
  c: GlanceClient,
  id: string,
  target: "file" | "stage",
  what: string,
  body: Readable,
  size: number | undefined,
  signal?: AbortSignal,
): Promise<void> {
  const res = await c.session.request({
    method: "PUT",
    url: url(c, `/images/${enc(id)}/${target}`),
    headers: { "content-type": "application/octet-stream", ...(size !== undefined ? { "content-length": String(size) } : {}) },
    body,
    ok: [204],
    operation: `${what} in Glance ${c.endpoint}`,
    signal,
    mapError: (ctx) => glanceError(ctx, id),
  });
  await drain(res);
}

export type ImportMethod = { name: "glance-direct" } | { name: "web-download"; uri: string };

/** POST /v2/images/{id}/import → 202: Glance starts the import task and returns at once. */
export async function importImage(c: GlanceClient, id: string, method: ImportMethod, signal?: AbortSignal): Promise<void> {
  const what = method.name === "web-download" ? `${method.name} ${redactUrl(method.uri)}` : method.name;
  const res = await c.session.request({
    method: "POST",
    url: url(c, `/images/${enc(id)}/import`),
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ method }),
    ok: [202],
    operation: `import ${id} (${what}) in Glance ${c.endpoint}`,
    signal,
    mapError: (ctx) => glanceError(ctx, id),
  });
  await drain(res);
}

/**
 * GET /v2/info/import → 200: the import methods the cloud enables (Glance's enabled_import_methods).
 * "upload" (PUT /file) is not an import method and is not listed.
 */
export async function getImportMethods(c: GlanceClient, signal?: AbortSignal): Promise<string[]> {
  const res = await c.session.request({
    method: "GET",
    url: url(c, "/info/import"),
    ok: [200],
    operation: `get the import methods of Glance ${c.endpoint}`,
    signal,
    mapError: (ctx) => glanceError(ctx),
  });
  const doc = await readJson<{ "import-methods"?: { value?: unknown } }>(res, "get import methods");
  const value = doc["import-methods"]?.value;
  return Array.isArray(value) ? value.filter((v): v is string => typeof v === "string") : [];
}

export interface GlanceTask {
  id: string;
  type: string;
  status: "pending" | "processing" | "success" | "failure";
  message?: string;
  result?: unknown;
  created_at?: string;
  updated_at?: string;
}

/** GET /v2/images/{id}/tasks → 200: the import tasks, where Glance writes why an import failed. */
export async function getImageTasks(c: GlanceClient, id: string, signal?: AbortSignal): Promise<GlanceTask[]> {
  const res = await c.session.request({
    method: "GET",
    url: url(c, `/images/${enc(id)}/tasks`),
    ok: [200],
    operation: `get tasks of image ${id}`,
    signal,
    mapError: (ctx) => glanceError(ctx, id),
  });
  return (await readJson<{ tasks?: GlanceTask[] }>(res, `get tasks of image ${id}`)).tasks ?? [];
}

// ---------------------------------------------------------------- updates and actions

/** JSON-Patch operations Glance accepts (RFC 6902 subset); `/tags` is replaced whole. */
export type PatchOp =
  | { op: "replace"; path: string; value: unknown }
  | { op: "add"; path: string; value: unknown }
  | { op: "remove"; path: string };

/** JSON pointer for an attribute or property name (`~` → `~0`, `/` → `~1`). */
export function pointer(name: string): string {
  return `/${name.replace(/~/g, "~0").replace(/\//g, "~1")}`;
}

/** PATCH /v2/images/{id} (application/openstack-images-v2.1-json-patch) → 200, the updated image. */
export async function patchImage(c: GlanceClient, id: string, ops: readonly PatchOp[], signal?: AbortSignal): Promise<GlanceImage> {
  const res = await c.session.request({
    method: "PATCH",
    url: url(c, `/images/${enc(id)}`),
    headers: { "content-type": "application/openstack-images-v2.1-json-patch" },
    body: JSON.stringify(ops),
    ok: [200],
    operation: `update image ${id} in Glance ${c.endpoint} (${ops.map((o) => `${o.op} ${o.path}`).join(", ")})`,
    signal,
    mapError: (ctx) => glanceError(ctx, id),
  });
  return readJson<GlanceImage>(res, `update image ${id}`);
}

async function imageAction(c: GlanceClient, id: string, action: "deactivate" | "reactivate", signal?: AbortSignal): Promise<void> {
  const res = await c.session.request({
    method: "POST",
    url: url(c, `/images/${enc(id)}/actions/${action}`),
    ok: [204],
    operation: `${action} image ${id} in Glance ${c.endpoint}`,
    signal,
    mapError: (ctx) => glanceError(ctx, id),
  });
  await drain(res);
}

/** POST /v2/images/{id}/actions/deactivate → 204: data can no longer be downloaded or booted. */
export function deactivateImage(c: GlanceClient, id: string, signal?: AbortSignal): Promise<void> {
  return imageAction(c, id, "deactivate", signal);
}

/** POST /v2/images/{id}/actions/reactivate → 204. */
export function reactivateImage(c: GlanceClient, id: string, signal?: AbortSignal): Promise<void> {
  return imageAction(c, id, "reactivate", signal);
}

/**
 * DELETE /v2/images/{id} → 204; a 404 counts as deleted. A protected image answers 403: that
 * becomes GLANCE_PROTECTED naming the flag. Returns false when the image was already gone.
 */
export async function deleteImage(c: GlanceClient, id: string, signal?: AbortSignal): Promise<boolean> {
  const operation = `delete image ${id} from Glance ${c.endpoint}`;
  const res = await withRetry(
    () =>
      c.session.request({
        method: "DELETE",
        url: url(c, `/images/${enc(id)}`),
        ok: [204, 404],
        operation,
        signal,
        mapError: (ctx) =>
          ctx.status === 403 && /protected/i.test(ctx.body)
            ? new GlanceError(
                "GLANCE_PROTECTED",
                `${operation}: the image is protected (403 Forbidden). Set protected: false on the resource and apply it (or unset the protected flag in Glance) before deleting it.`,
                { status: 403, body: ctx.body, imageId: id },
              )
            : glanceError(ctx, id),
      }),
    undefined,
    { signal },
  );
  await drain(res);
  return res.status === 204;
}
