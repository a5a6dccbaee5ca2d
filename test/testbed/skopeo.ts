// skopeo, the independent peer: flags for each side of a registry endpoint, and digests read back
// with `skopeo inspect --raw` (sha256 of the exact bytes the registry serves).
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import type { RegistryEndpoint } from "./registry";

export interface SkopeoResult {
  stdout: Buffer;
  stderr: string;
}

/** Runs skopeo; a failure says what was run (without credentials) and what skopeo said. */
export function runSkopeo(args: string[], opts: { timeoutMs?: number } = {}): Promise<SkopeoResult> {
  return new Promise((ok, fail) => {
    execFile("skopeo", args, { encoding: "buffer", maxBuffer: 64 << 20, timeout: opts.timeoutMs ?? 600_000 }, (err, stdout, stderr) => {
      if (err) {
        const shown = args.map((a, i) => (/^--(src-|dest-)?creds$/.test(args[i - 1] ?? "") ? "***" : a)).join(" ");
        fail(new Error(`skopeo ${shown}: ${stderr.toString().trim() || err.message}`));
      } else ok({ stdout, stderr: stderr.toString() });
    });
  });
}

/**
 * skopeo's flags for one side of a copy ("src" | "dest") or for inspect (no prefix):
 * credentials, and TLS (cert dir for https, plain http otherwise).
 */
export function skopeoFlags(
  ep: Pick<RegistryEndpoint, "scheme" | "username" | "password" | "certDir">,
  side: "src" | "dest" | "" = "",
): string[] {
  const p = side ? `--${side}-` : "--";
  const out: string[] = [];
  if (ep.username) out.push(`${p}creds`, `${ep.username}:${ep.password ?? ""}`);
  else out.push(`${p}no-creds`);
  if (ep.scheme === "https" && ep.certDir) out.push(`${p}cert-dir`, ep.certDir);
  else out.push(`${p}tls-verify=false`);
  return out;
}

export function splitRef(ref: string): { repo: string; tag: string } {
  const at = ref.indexOf("@");
  if (at > 0) return { repo: ref.slice(0, at), tag: ref.slice(at) };
  const colon = ref.lastIndexOf(":");
  if (colon <= 0 || ref.slice(colon).includes("/")) return { repo: ref, tag: "latest" };
  return { repo: ref.slice(0, colon), tag: ref.slice(colon + 1) };
}

/** `docker://HOST/REPO:TAG` (or `@digest`) for a repo-relative reference on `ep`. */
export function dockerRef(ep: Pick<RegistryEndpoint, "host">, ref: string): string {
  const { repo, tag } = splitRef(ref);
  return `docker://${ep.host}/${repo}${tag.startsWith("@") ? tag : `:${tag}`}`;
}

/** The manifest digest at `ep` for "repo:tag" / "repo@digest", read with skopeo (an independent check). */
export async function digestOf(ep: RegistryEndpoint, ref: string): Promise<string> {
  const { stdout } = await runSkopeo(["inspect", "--raw", ...skopeoFlags(ep), dockerRef(ep, ref)]);
  return `sha256:${createHash("sha256").update(stdout).digest("hex")}`;
}

/** Whether `ep` serves "repo:tag" / "repo@digest" (skopeo's view); other failures throw. */
export async function servesImage(ep: RegistryEndpoint, ref: string): Promise<boolean> {
  try {
    await runSkopeo(["inspect", "--raw", ...skopeoFlags(ep), dockerRef(ep, ref)], { timeoutMs: 60_000 });
    return true;
  } catch (e) {
    if (/manifest unknown|not found|name unknown/i.test((e as Error).message)) return false;
    throw e;
  }
}
