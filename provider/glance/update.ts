// In-place changes to a published image: the minimal JSON-patch from what Glance has to what is
// wanted (typed ops, `/tags` replaced whole, only our own properties removed), and the
// deactivate/reactivate actions around it.
import {
  deactivateImage,
  deleteImage,
  getImage,
  patchImage,
  pointer,
  reactivateImage,
  customProperties,
  type GlanceClient,
  type GlanceImage,
  type PatchOp,
  type Visibility,
} from "./images";

/** What can change in place on an image. */
export interface ImageAttributes {
  name: string;
  visibility: Visibility;
  minDisk: number;
  minRam: number;
  /** Custom properties (strings), SCS metadata included. */
  properties: Record<string, string>;
  tags: string[];
  protected: boolean;
  hidden: boolean;
  /** false = deactivated. */
  active: boolean;
}

/**
 * The JSON-patch taking `current` to `want`. Only properties we manage are touched: the wanted ones,
 * plus `removable` keys (managed before, no longer wanted), which are removed.
 */
export function planPatch(current: GlanceImage, want: ImageAttributes, removable: readonly string[] = []): PatchOp[] {
  const ops: PatchOp[] = [];
  const replace = (path: string, value: unknown) => ops.push({ op: "replace", path, value });
  if (current.name !== want.name) replace("/name", want.name);
  if (current.visibility !== want.visibility) replace("/visibility", want.visibility);
  if (current.min_disk !== want.minDisk) replace("/min_disk", want.minDisk);
  if (current.min_ram !== want.minRam) replace("/min_ram", want.minRam);
  if (Boolean(current.os_hidden) !== want.hidden) replace("/os_hidden", want.hidden);
  if (!sameSet(current.tags ?? [], want.tags)) replace("/tags", [...new Set(want.tags)]);
  const props = customProperties(current);
  for (const [k, v] of Object.entries(want.properties)) {
    if (props[k] === undefined) ops.push({ op: "add", path: pointer(k), value: v });
    else if (props[k] !== v) replace(pointer(k), v);
  }
  for (const k of removable) {
    if (!(k in want.properties) && props[k] !== undefined) ops.push({ op: "remove", path: pointer(k) });
  }
  if (current.protected !== want.protected) replace("/protected", want.protected);
  return ops;
}

function sameSet(a: readonly string[], b: readonly string[]): boolean {
  const x = [...new Set(a)].sort();
  const y = [...new Set(b)].sort();
  return x.length === y.length && x.every((v, i) => v === y[i]);
}

export interface UpdatePlan {
  reactivate: boolean;
  patch: PatchOp[];
  deactivate: boolean;
}

export function planUpdate(current: GlanceImage, want: ImageAttributes, removable: readonly string[] = []): UpdatePlan {
  return {
    reactivate: want.active && current.status === "deactivated",
    patch: planPatch(current, want, removable),
    deactivate: !want.active && current.status === "active",
  };
}

export async function applyAttributes(
  glance: GlanceClient,
  current: GlanceImage,
  want: ImageAttributes,
  removable: readonly string[],
  signal?: AbortSignal,
): Promise<GlanceImage> {
  const plan = planUpdate(current, want, removable);
  if (plan.reactivate) await reactivateImage(glance, current.id, signal);
  if (plan.patch.length > 0) await patchImage(glance, current.id, plan.patch, signal);
  if (plan.deactivate) await deactivateImage(glance, current.id, signal);
  return plan.reactivate || plan.patch.length > 0 || plan.deactivate ? getImage(glance, current.id, signal) : current;
}

/**
 * Updates an image in place to `want`: reactivate first (if asked), then one JSON-patch, then
 * deactivate (if asked). `previous` says which properties were ours, so dropped ones are removed.
 */
export async function updateImage(
  glance: GlanceClient,
  id: string,
  previous: Pick<ImageAttributes, "properties"> | undefined,
  want: ImageAttributes,
  signal?: AbortSignal,
): Promise<GlanceImage> {
  const current = await getImage(glance, id, signal);
  return applyAttributes(glance, current, want, Object.keys(previous?.properties ?? {}), signal);
}

/** Deletes an image; false when it was already gone. A protected image fails with GLANCE_PROTECTED. */
export function removeImage(glance: GlanceClient, id: string, signal?: AbortSignal): Promise<boolean> {
  return deleteImage(glance, id, signal);
}
