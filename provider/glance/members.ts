// Image members (visibility "shared"): one small function per Glance call, and a sync that takes
// an image's member list to the wanted project IDs — add what is missing, revoke what is no longer
// wanted, and accept on behalf of a member project where its credentials are given (only the
// member itself may accept in Glance).
import { drain, readJson } from "../http/client";
import { glanceError } from "./errors";
import type { GlanceClient } from "./images";

export type MemberStatus = "pending" | "accepted" | "rejected";

export interface ImageMember {
  image_id: string;
  member_id: string;
  status: MemberStatus;
}

const enc = encodeURIComponent;
const membersUrl = (c: GlanceClient, id: string, member?: string) =>
  `${c.endpoint}/v2/images/${enc(id)}/members${member ? `/${enc(member)}` : ""}`;

/** GET /v2/images/{id}/members → 200. */
export async function listMembers(c: GlanceClient, id: string, signal?: AbortSignal): Promise<ImageMember[]> {
  const res = await c.session.request({
    method: "GET",
    url: membersUrl(c, id),
    ok: [200],
    operation: `list members of image ${id}`,
    signal,
    mapError: (ctx) => glanceError(ctx, id),
  });
  return (await readJson<{ members?: ImageMember[] }>(res, `list members of image ${id}`)).members ?? [];
}

/** POST /v2/images/{id}/members {member} → 200 (409 when it is a member already: fine). */
export async function addMember(c: GlanceClient, id: string, projectId: string, signal?: AbortSignal): Promise<void> {
  const res = await c.session.request({
    method: "POST",
    url: membersUrl(c, id),
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ member: projectId }),
    ok: [200, 409],
    operation: `share image ${id} with project ${projectId}`,
    signal,
    mapError: (ctx) => glanceError(ctx, id),
  });
  await drain(res);
}

/** PUT /v2/images/{id}/members/{member} {status} → 200; only the member project may call it. */
export async function setMemberStatus(
  c: GlanceClient,
  id: string,
  projectId: string,
  status: MemberStatus,
  signal?: AbortSignal,
): Promise<void> {
  const res = await c.session.request({
    method: "PUT",
    url: membersUrl(c, id, projectId),
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ status }),
    ok: [200],
    operation: `mark image ${id} ${status} for project ${projectId}`,
    signal,
    mapError: (ctx) => glanceError(ctx, id),
  });
  await drain(res);
}

/** DELETE /v2/images/{id}/members/{member} → 204; 404 (not a member) counts as done. */
export async function removeMember(c: GlanceClient, id: string, projectId: string, signal?: AbortSignal): Promise<void> {
  const res = await c.session.request({
    method: "DELETE",
    url: membersUrl(c, id, projectId),
    ok: [204, 404],
    operation: `revoke project ${projectId} from image ${id}`,
    signal,
    mapError: (ctx) => glanceError(ctx, id),
  });
  await drain(res);
}

export interface MemberPlan {
  add: string[];
  remove: string[];
  /** Members (new or pending/rejected) to accept with their own project's session. */
  accept: string[];
}

/** What to do to take `current` to `want`; `acceptable` are the projects we can accept for. */
export function planMembers(current: readonly ImageMember[], want: readonly string[], acceptable: readonly string[]): MemberPlan {
  const have = new Map(current.map((m) => [m.member_id, m.status]));
  const wanted = new Set(want);
  return {
    add: [...wanted].filter((p) => !have.has(p)),
    remove: [...have.keys()].filter((p) => !wanted.has(p)),
    accept: [...wanted].filter((p) => acceptable.includes(p) && have.get(p) !== "accepted"),
  };
}

/**
 * Takes the image's members to `want`: revokes first (access goes as soon as it is unwanted), then
 * adds, then accepts with the member projects' own sessions. Returns the members afterwards.
 */
export async function syncMembers(
  owner: GlanceClient,
  id: string,
  want: readonly string[],
  acceptors: Readonly<Record<string, GlanceClient>> = {},
  signal?: AbortSignal,
): Promise<ImageMember[]> {
  const current = await listMembers(owner, id, signal);
  const plan = planMembers(current, want, Object.keys(acceptors));
  for (const p of plan.remove) await removeMember(owner, id, p, signal);
  for (const p of plan.add) await addMember(owner, id, p, signal);
  for (const p of plan.accept) await setMemberStatus(acceptors[p] as GlanceClient, id, p, "accepted", signal);
  return plan.add.length + plan.remove.length + plan.accept.length > 0 ? listMembers(owner, id, signal) : current;
}
