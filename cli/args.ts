// Command-line parsing for `imageyard`: skopeo's flag names mapped onto the engine's request, and
// nothing else (crane style: the CLI is a thin shell over provider/oci/copy).
import type { MirrorUseOptions } from "../provider/node/mirrorUse";
import type { CopyRequest } from "../provider/oci/copy";
import { hasUserinfo } from "../provider/oci/reference";
import type { RegistryOptions } from "../provider/oci/registry";
import { timeoutSeconds } from "../provider/resources/timeouts";

export class UsageError extends Error {
  override name = "UsageError";
}

export type Command =
  | { kind: "copy" | "plan"; request: CopyRequest; quiet: boolean; json: boolean; timeoutMs?: number }
  | { kind: "inspect"; ref: string; options: RegistryOptions; json: boolean }
  | { kind: "verify-mirror-use"; options: MirrorUseOptions; json: boolean }
  | { kind: "help" }
  | { kind: "version" };

export const USAGE = `Usage:
  imageyard copy SRC DST [flags]     copy an image (all platforms unless --platform); prints its digest
  imageyard plan SRC DST [flags]     show what a copy would upload, mount and skip; changes nothing
  imageyard inspect REF [flags]      print the digest REF resolves to
  imageyard verify-mirror-use --mirror HOST[:PORT][/PREFIX] [flags]
                                     check that every pod's images come from the mirror

References: registry/repo[:tag][@sha256:…] (a docker:// prefix is accepted), or an OCI image
layout directory as oci:PATH[:tag] / oci-layout:PATH[:tag], or a tar file as oci-archive:PATH[:tag] /
docker-archive:PATH[:repo:tag]. A DST without a tag takes SRC's tag.

Copy and plan flags:
  --platform OS/ARCH[/VARIANT]   copy only these platforms (repeat, or a comma list); the index
                                 then gets a new digest
  --all                          copy every platform (the default)
  --src-creds USER:PASS          credentials for SRC   (default: docker config / auth.json)
  --dest-creds USER:PASS         credentials for DST
  --src-authfile / --dest-authfile PATH   docker config.json or auth.json to read credentials from
  --src-no-creds / --dest-no-creds        access anonymously (ignore docker config)
  --src-tls-verify=false         do not verify SRC's TLS certificate (and allow plain http)
  --dest-tls-verify=false        the same for DST
  --src-cert-dir / --dest-cert-dir DIR    CA files (*.crt) and client certificate (*.cert + *.key)
  --no-signatures                do not copy cosign signatures/attestations or referrers
  --concurrency N                blobs in flight at once (default 4)
  --timeout DURATION             give up after this long, naming what stalled (90s, 20m, 1h30m;
                                 default 1h)
  --rate-limit-wait DURATION     how long each registry may keep us waiting by rate limits (429,
                                 RateLimit headers) before the copy fails (default 10m)
  --insecure-host HOST[:PORT]    a token service host that may get credentials over plain http
                                 (repeat); other hosts never do
  --quiet, -q                    no progress lines on stderr
  --json                         print the result (or plan) as JSON on stdout
Inspect flags: --creds USER:PASS, --authfile PATH, --no-creds, --tls-verify=false, --cert-dir DIR, --json

Verify-mirror-use flags (lists every container, init and ephemeral container of every pod):
  --mirror HOST[:PORT][/PREFIX]  the mirror (repeat for several); images elsewhere fail the check
  --kubeconfig PATH              default: $KUBECONFIG, else ~/.kube/config
  --context NAME                 default: the kubeconfig's current-context
  --namespace NS                 only these namespaces (repeat, or a comma list; default all)
  --require-digest               also fail mirror images not pinned by digest (@sha256:…)
  --json                         print the whole report as JSON on stdout

Exit status: 0 done (verify-mirror-use: every pod uses the mirror), 1 the copy failed or a pod
does not use the mirror (the message says why and what to do), 2 bad usage.`;

interface Spec {
  /** Flags taking a value: name → repeatable. */
  values: Record<string, boolean>;
  /** Boolean flags (accept --flag, --flag=true|false). */
  booleans: string[];
}

const COPY_SPEC: Spec = {
  values: {
    platform: true,
    "src-creds": false,
    "dest-creds": false,
    "src-cert-dir": false,
    "dest-cert-dir": false,
    "src-authfile": false,
    "dest-authfile": false,
    concurrency: false,
    timeout: false,
    "rate-limit-wait": false,
    "insecure-host": true,
  },
  booleans: ["all", "src-tls-verify", "dest-tls-verify", "src-no-creds", "dest-no-creds", "no-signatures", "quiet", "json"],
};
const VERIFY_SPEC: Spec = {
  values: { mirror: true, kubeconfig: false, context: false, namespace: true },
  booleans: ["require-digest", "json"],
};
const INSPECT_SPEC: Spec = { values: { creds: false, "cert-dir": false, authfile: false }, booleans: ["tls-verify", "no-creds", "json"] };

interface Parsed {
  positional: string[];
  values: Map<string, string[]>;
  booleans: Map<string, boolean>;
}

function parseFlags(argv: string[], spec: Spec): Parsed {
  const out: Parsed = { positional: [], values: new Map(), booleans: new Map() };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === "--") {
      out.positional.push(...argv.slice(i + 1));
      break;
    }
    if (arg === "-q") {
      out.booleans.set("quiet", true);
      continue;
    }
    if (!arg.startsWith("--")) {
      out.positional.push(arg);
      continue;
    }
    const eq = arg.indexOf("=");
    const name = arg.slice(2, eq < 0 ? undefined : eq);
    const inline = eq < 0 ? undefined : arg.slice(eq + 1);
    if (name in spec.values) {
      const value = inline ?? argv[++i];
      if (value === undefined || value === "") throw new UsageError(`--${name} needs a value`);
      if (!spec.values[name] && out.values.has(name)) throw new UsageError(`--${name} was given twice`);
      out.values.set(name, [...(out.values.get(name) ?? []), value]);
    } else if (spec.booleans.includes(name)) {
      if (inline !== undefined && inline !== "true" && inline !== "false")
        throw new UsageError(`--${name} takes true or false, not "${inline}"`);
      out.booleans.set(name, inline !== "false");
    } else {
      throw new UsageError(`unknown flag --${name}`);
    }
  }
  return out;
}

function one(p: Parsed, name: string): string | undefined {
  return p.values.get(name)?.[0];
}

/** "90s", "20m", "1h30m" or plain seconds, in ms. */
function duration(p: Parsed, name: string): number | undefined {
  const v = one(p, name);
  if (v === undefined) return undefined;
  const s = timeoutSeconds(v);
  if (s === undefined) throw new UsageError(`--${name} takes a duration like 90s, 20m or 1h30m (or seconds), not "${v}"`);
  return s * 1000;
}

/**
 * Every secret on a command line: passwords of --*creds and user info typed into references.
 * Messages are scrubbed of them before they are printed, whatever produced the message.
 */
export function secretsOf(argv: string[]): string[] {
  const out: string[] = [];
  argv.forEach((arg, i) => {
    const m = /^--(?:src-|dest-)?creds(?:=(.*))?$/.exec(arg);
    const creds = m ? (m[1] ?? argv[i + 1]) : undefined;
    if (creds?.includes(":")) out.push(creds.slice(creds.indexOf(":") + 1));
    if (!arg.startsWith("--") && hasUserinfo(arg)) {
      const bare = arg.replace(/^[a-z][a-z0-9+.-]*:\/\//i, "");
      const info = bare.slice(0, bare.lastIndexOf("@"));
      out.push(info.includes(":") ? info.slice(info.indexOf(":") + 1) : info);
    }
  });
  return out.filter((s) => s.length >= 3);
}

/** "USER:PASS" (the password may hold ':'); never echoed back in messages. */
export function parseCreds(value: string, flag: string): { username: string; password: string } {
  const colon = value.indexOf(":");
  if (colon <= 0) throw new UsageError(`${flag} takes USER:PASS`);
  return { username: value.slice(0, colon), password: value.slice(colon + 1) };
}

function sideOptions(p: Parsed, prefix: string, credentialsInput: string): RegistryOptions {
  const opts: RegistryOptions = { credentialsInput };
  const creds = one(p, `${prefix}creds`);
  if (creds !== undefined) opts.credentials = parseCreds(creds, `--${prefix}creds`);
  const certDir = one(p, `${prefix}cert-dir`);
  if (certDir !== undefined) opts.certDir = certDir;
  const authfile = one(p, `${prefix}authfile`);
  if (authfile !== undefined) opts.dockerConfig = authfile;
  if (p.booleans.get(`${prefix}no-creds`)) {
    if (creds !== undefined || authfile !== undefined)
      throw new UsageError(`--${prefix}no-creds contradicts --${prefix}creds and --${prefix}authfile`);
    opts.dockerConfig = false;
  }
  if (p.booleans.get(`${prefix}tls-verify`) === false) opts.tls = { insecure: true };
  return opts;
}

export function parseCommand(argv: string[]): Command {
  const [cmd, ...rest] = argv;
  if (cmd === undefined || cmd === "help" || cmd === "--help" || cmd === "-h") return { kind: "help" };
  if (cmd === "version" || cmd === "--version") return { kind: "version" };
  if (cmd === "copy" || cmd === "plan") {
    const p = parseFlags(rest, COPY_SPEC);
    if (p.positional.length !== 2)
      throw new UsageError(`${cmd} needs SRC and DST (got ${p.positional.length} argument${p.positional.length === 1 ? "" : "s"})`);
    const platforms = (p.values.get("platform") ?? [])
      .flatMap((v) => v.split(","))
      .map((v) => v.trim())
      .filter(Boolean);
    if (platforms.length > 0 && p.booleans.get("all")) throw new UsageError("--all and --platform contradict each other; give one");
    const request: CopyRequest = {
      source: p.positional[0]!,
      target: p.positional[1]!,
      sourceOptions: sideOptions(p, "src-", "--src-creds"),
      targetOptions: sideOptions(p, "dest-", "--dest-creds"),
    };
    if (platforms.length > 0) request.platforms = platforms;
    if (p.booleans.get("no-signatures")) request.copySignatures = false;
    const rateLimit = duration(p, "rate-limit-wait");
    if (rateLimit !== undefined) request.rateLimitBudgetMs = rateLimit;
    const insecureHosts = p.values.get("insecure-host");
    if (insecureHosts) for (const o of [request.sourceOptions!, request.targetOptions!]) o.insecureHosts = insecureHosts;
    const concurrency = one(p, "concurrency");
    if (concurrency !== undefined) {
      const n = Number(concurrency);
      if (!Number.isInteger(n) || n < 1 || n > 64) throw new UsageError("--concurrency takes a whole number from 1 to 64");
      request.concurrency = n;
    }
    const timeoutMs = duration(p, "timeout");
    return {
      kind: cmd,
      request,
      quiet: p.booleans.get("quiet") ?? false,
      json: p.booleans.get("json") ?? false,
      ...(timeoutMs !== undefined ? { timeoutMs } : {}),
    };
  }
  if (cmd === "inspect") {
    const p = parseFlags(rest, INSPECT_SPEC);
    if (p.positional.length !== 1) throw new UsageError("inspect needs exactly one REF");
    return { kind: "inspect", ref: p.positional[0]!, options: sideOptions(p, "", "--creds"), json: p.booleans.get("json") ?? false };
  }
  if (cmd === "verify-mirror-use") {
    const p = parseFlags(rest, VERIFY_SPEC);
    if (p.positional.length > 0) throw new UsageError(`verify-mirror-use takes no arguments, only flags (got "${p.positional[0]}")`);
    const list = (name: string) =>
      (p.values.get(name) ?? [])
        .flatMap((v) => v.split(","))
        .map((v) => v.trim())
        .filter(Boolean);
    const mirror = list("mirror");
    if (mirror.length === 0) throw new UsageError("verify-mirror-use needs --mirror HOST[:PORT][/PREFIX]");
    const options: MirrorUseOptions = { mirror };
    const namespaces = list("namespace");
    if (namespaces.length > 0) options.namespaces = namespaces;
    const kubeconfig = one(p, "kubeconfig");
    if (kubeconfig !== undefined) options.kubeconfig = kubeconfig;
    const context = one(p, "context");
    if (context !== undefined) options.context = context;
    if (p.booleans.get("require-digest")) options.requireDigest = true;
    return { kind: cmd, options, json: p.booleans.get("json") ?? false };
  }
  throw new UsageError(`unknown command "${cmd}"`);
}
