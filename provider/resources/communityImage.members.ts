// CommunityImage's members (visibility "shared"): validation, the diff against what was last
// observed, and applying them after create/update and observing them in read. Kept beside the
// lifecycle so the lifecycle only calls in at four points.
import { resolveCloud } from "../glance/clouds";
import { glanceClient, type GlanceClient } from "../glance/images";
import { KeystoneSession } from "../glance/keystone";
import { listMembers, syncMembers, type ImageMember } from "../glance/members";
import { isUnknown, type CheckFailure } from "./diff";
import type { CommunityImageInputs, CommunityImageOutputs, CredentialsInput } from "./communityImage.lifecycle";

export interface MembersInputs {
  /** Project IDs the image is shared with (visibility "shared"). */
  members?: string[];
  /** Credentials per member project ID, used only to accept the membership as that project. */
  memberCredentials?: Record<string, CredentialsInput>;
}

/** Observed members, as outputs: "projectId" (accepted) or "projectId:pending"/"…:rejected". */
export function observedMembers(members: readonly ImageMember[]): string[] {
  return members.map((m) => (m.status === "accepted" ? m.member_id : `${m.member_id}:${m.status}`)).sort();
}

/** What the inputs ask for, in the shape of observedMembers (pending where no credentials accept). */
function wantedMembers(i: MembersInputs): string[] {
  return (i.members ?? []).map((p) => (i.memberCredentials?.[p] ? p : `${p}:pending`)).sort();
}

export function validateMembers(n: MembersInputs & { visibility?: string }): CheckFailure[] {
  const out: CheckFailure[] = [];
  if (n.members === undefined || isUnknown(n.members)) return out;
  if (!Array.isArray(n.members) || n.members.some((m) => typeof m !== "string" || !/^[0-9a-f-]{8,64}$/i.test(m))) {
    out.push({ property: "members", reason: 'members must be a list of project IDs, e.g. ["8f3c0e3b6a0d4d4c9c2c9f1b2a3d4e5f"]' });
  } else if (n.members.length > 0 && n.visibility !== "shared" && !isUnknown(n.visibility)) {
    out.push({
      property: "members",
      reason: `members need visibility "shared" (it is ${JSON.stringify(n.visibility ?? "community")}): Glance shares only shared images`,
    });
  }
  for (const p of Object.keys(n.memberCredentials ?? {})) {
    if (!n.members.includes(p))
      out.push({ property: `memberCredentials.${p}`, reason: `${p} is not in members; credentials are only used to accept a membership` });
  }
  return out;
}

/** true when the wanted members differ from the last observed ones. */
export function membersChanged(olds: CommunityImageOutputs, news: CommunityImageInputs): boolean {
  if (isUnknown(news.members) || isUnknown(news.memberCredentials)) return true;
  const seen = (olds.observedMembers as string[] | undefined) ?? [];
  return JSON.stringify(seen) !== JSON.stringify(wantedMembers(news));
}

async function memberClient(creds: CredentialsInput): Promise<GlanceClient> {
  return glanceClient(new KeystoneSession(resolveCloud({ explicit: creds }).auth));
}

/** After create/update: share, accept and revoke; the observed members for the outputs. */
export async function applyMembers(
  glance: GlanceClient,
  id: string,
  i: CommunityImageInputs,
  signal?: AbortSignal,
): Promise<{ observedMembers?: string[] }> {
  const want = i.members ?? [];
  // Nothing asked and nothing to revoke: no request for images that never use members.
  if (want.length === 0 && i.visibility !== "shared") return {};
  const acceptors: Record<string, GlanceClient> = {};
  for (const [p, creds] of Object.entries(i.memberCredentials ?? {})) acceptors[p] = await memberClient(creds);
  return { observedMembers: observedMembers(await syncMembers(glance, id, want, acceptors, signal)) };
}

/** In read: the members Glance has now, so a membership changed outside shows in refresh. */
export async function readMembers(
  glance: GlanceClient,
  id: string,
  props: Partial<CommunityImageOutputs>,
): Promise<{ observedMembers?: string[] }> {
  if (props.observedMembers === undefined) return {};
  return { observedMembers: observedMembers(await listMembers(glance, id)) };
}
