// Keystone v3 against the real test bed: password and application-credential tokens, scoping,
// the catalog, wrong credentials, and re-authentication exactly once on a 401 from Glance.
import { beforeAll, describe, expect, it } from "vitest";
import { send } from "../../../../provider/http/client";
import { isImageyardError } from "../../../../provider/http/errors";
import { glanceClient, listImages } from "../../../../provider/glance/images";
import { authenticate, KeystoneSession, selectEndpoint } from "../../../../provider/glance/keystone";
import type { GlanceTestbed } from "../../../testbed/glance";
import { authFor, bed } from "./helpers";

let tb: GlanceTestbed;
beforeAll(async () => {
  tb = await bed();
}, 300_000);

describe("Keystone v3 against the real test bed", () => {
  it("a password token scoped to demo by name carries demo's project id and a catalog with Glance", async () => {
    const t = await authenticate(authFor(tb, "demo"));
    expect(t.projectId).toBe(tb.accounts.demo.projectId);
    expect(t.expiresAt).toBeGreaterThan(Date.now() + 30 * 60_000);
    expect(selectEndpoint(t.catalog, { type: "image", region: tb.region, interface: "public" })).toBe(tb.glanceUrl);
  });

  it("scoping by project id and user id works as well as by names", async () => {
    const a = tb.accounts.other;
    const t = await authenticate({ authUrl: tb.authUrl, userId: a.userId, password: a.password, projectId: a.projectId });
    expect(t.projectId).toBe(a.projectId);
    expect(t.projectName).toBe("other");
  });

  it("an application credential authenticates without a scope and lands in the credential's project", async () => {
    const ac = tb.applicationCredential;
    const session = new KeystoneSession({ authUrl: tb.authUrl, applicationCredentialId: ac.id, applicationCredentialSecret: ac.secret });
    expect(await session.projectId()).toBe(ac.projectId);
    const glance = await glanceClient(session);
    expect(Array.isArray(await listImages(glance, { max: 1 }))).toBe(true);
  });

  it("a wrong password fails with KEYSTONE_UNAUTHORIZED naming the user and never the password", async () => {
    const wrong = `not-the-password-${Date.now()}`;
    const err = await authenticate(authFor(tb, "demo", { password: wrong })).catch((e: unknown) => e);
    expect(isImageyardError(err, "KEYSTONE_UNAUTHORIZED")).toBe(true);
    const msg = (err as Error).message;
    expect(msg).toContain("user demo");
    expect(msg).toContain("401");
    expect(msg).not.toContain(wrong);
  });

  it("a token revoked behind the session's back makes Glance answer 401 and the session re-authenticates exactly once", async () => {
    const auth = authFor(tb, "demo", { projectName: "demo", region: tb.region });
    const stale = await authenticate(auth);
    // Revoke it: Glance has never seen it, so its middleware validates it and gets a refusal.
    const res = await send({
      method: "DELETE",
      url: `${tb.authUrl}/auth/tokens`,
      headers: { "x-auth-token": stale.value, "x-subject-token": stale.value },
      ok: [204],
      operation: "revoke token",
    });
    await res.body.dump();
    const session = new KeystoneSession(auth);
    session.useToken(stale);
    const glance = { session, endpoint: tb.glanceUrl };
    const images = await listImages(glance, { max: 1 });
    expect(Array.isArray(images)).toBe(true);
    expect(session.authentications).toBe(1);
    // The new token is reused: no further authentication for the next call.
    await listImages(glance, { max: 1 });
    expect(session.authentications).toBe(1);
  });
});
