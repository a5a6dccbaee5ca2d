// Cloud configuration the way OpenStack users already have it: clouds.yaml (+ secure.yaml merged
// over it) found where openstacksdk looks, OS_CLOUD, OS_* variables, or explicit values.
// Precedence: explicit values > the named cloud (input, else OS_CLOUD) > OS_* variables.
import { existsSync, readFileSync } from "node:fs";
import { homedir } from "node:os";
import { join, resolve } from "node:path";
import { parse as parseYaml } from "yaml";
import { ImageyardError } from "../http/errors";
import type { AuthOptions } from "./keystone";

export interface CloudLookup {
  /** Name of a cloud in clouds.yaml; defaults to OS_CLOUD. */
  cloud?: string;
  /** Values that win over the cloud's and the environment's. */
  explicit?: Partial<AuthOptions>;
  /** Defaults to process.env. */
  env?: Record<string, string | undefined>;
  cwd?: string;
  home?: string;
  /** Defaults to /etc/openstack. */
  systemDir?: string;
}

export interface ResolvedCloud {
  auth: AuthOptions;
  /** Where the values came from, for messages: "clouds.yaml (/home/u/.config/openstack/clouds.yaml) cloud mycloud". */
  source: string;
}

const SUFFIXES = [".yaml", ".yml", ".json"];

/** The directories openstacksdk searches, in order: ./, ~/.config/openstack, /etc/openstack. */
export function searchDirs(l: Pick<CloudLookup, "cwd" | "home" | "systemDir"> = {}): string[] {
  return [resolve(l.cwd ?? process.cwd()), join(l.home ?? homedir(), ".config", "openstack"), l.systemDir ?? "/etc/openstack"];
}

/** First existing `<base><suffix>` in the search dirs, or the file named by the override variable. */
export function findConfigFile(base: "clouds" | "secure", l: CloudLookup = {}): string | undefined {
  const env = l.env ?? process.env;
  const override = base === "clouds" ? env.OS_CLIENT_CONFIG_FILE : env.OS_CLIENT_SECURE_FILE;
  if (override) {
    if (!existsSync(override))
      throw new ImageyardError(
        "CLOUD_CONFIG",
        `read ${override}: ${base === "clouds" ? "OS_CLIENT_CONFIG_FILE" : "OS_CLIENT_SECURE_FILE"} names a file that does not exist. Fix the variable or unset it.`,
      );
    return override;
  }
  for (const dir of searchDirs(l)) {
    for (const s of SUFFIXES) {
      const f = join(dir, `${base}${s}`);
      if (existsSync(f)) return f;
    }
  }
  return undefined;
}

type CloudEntry = Record<string, unknown> & { auth?: Record<string, unknown> };

function readClouds(file: string): Record<string, CloudEntry> {
  let doc: unknown;
  try {
    doc = parseYaml(readFileSync(file, "utf8"));
  } catch (e) {
    throw new ImageyardError("CLOUD_CONFIG", `read ${file}: not valid YAML (${(e as Error).message.split("\n")[0]}). Fix the file.`, {
      cause: e,
    });
  }
  const clouds = (doc as { clouds?: unknown } | null)?.clouds;
  if (clouds === undefined) return {};
  if (typeof clouds !== "object" || clouds === null)
    throw new ImageyardError("CLOUD_CONFIG", `read ${file}: "clouds" must be a mapping of cloud names to settings.`);
  return clouds as Record<string, CloudEntry>;
}

/** secure.yaml merges into clouds.yaml key by key (nested mappings merge, the rest replaces). */
export function deepMerge<T extends Record<string, unknown>>(base: T, over: Record<string, unknown>): T {
  const out: Record<string, unknown> = { ...base };
  for (const [k, v] of Object.entries(over)) {
    const b = out[k];
    out[k] = isMapping(b) && isMapping(v) ? deepMerge(b, v) : v;
  }
  return out as T;
}

function isMapping(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

const str = (v: unknown): string | undefined => (v === undefined || v === null || v === "" ? undefined : String(v));

type StringKey = Exclude<keyof AuthOptions, "insecure">;

/** Each option's clouds.yaml key(s) (under `auth:` unless marked top-level) and OS_* variable(s). */
const FIELDS: ReadonlyArray<[StringKey, string[], string[]]> = [
  ["authUrl", ["auth_url"], ["OS_AUTH_URL"]],
  ["authType", ["^auth_type"], ["OS_AUTH_TYPE"]],
  ["username", ["username"], ["OS_USERNAME"]],
  ["userId", ["user_id"], ["OS_USER_ID"]],
  ["password", ["password"], ["OS_PASSWORD"]],
  ["userDomainName", ["user_domain_name"], ["OS_USER_DOMAIN_NAME"]],
  ["userDomainId", ["user_domain_id"], ["OS_USER_DOMAIN_ID"]],
  ["projectName", ["project_name", "tenant_name"], ["OS_PROJECT_NAME", "OS_TENANT_NAME"]],
  ["projectId", ["project_id", "tenant_id"], ["OS_PROJECT_ID", "OS_TENANT_ID"]],
  ["projectDomainName", ["project_domain_name"], ["OS_PROJECT_DOMAIN_NAME"]],
  ["projectDomainId", ["project_domain_id"], ["OS_PROJECT_DOMAIN_ID"]],
  ["domainName", ["domain_name"], ["OS_DOMAIN_NAME"]],
  ["domainId", ["domain_id"], ["OS_DOMAIN_ID"]],
  ["applicationCredentialId", ["application_credential_id"], ["OS_APPLICATION_CREDENTIAL_ID"]],
  ["applicationCredentialName", ["application_credential_name"], ["OS_APPLICATION_CREDENTIAL_NAME"]],
  ["applicationCredentialSecret", ["application_credential_secret"], ["OS_APPLICATION_CREDENTIAL_SECRET"]],
  ["region", ["^region_name"], ["OS_REGION_NAME"]],
  ["interface", ["^interface", "^endpoint_type"], ["OS_INTERFACE", "OS_ENDPOINT_TYPE"]],
  ["cacert", ["^cacert"], ["OS_CACERT"]],
  ["imageEndpoint", ["^image_endpoint_override"], ["OS_IMAGE_URL"]],
];

const TRUE = new Set(["true", "True", "TRUE", "1", "yes"]);
const FALSE = new Set(["false", "False", "FALSE", "0", "no"]);

/** openstacksdk's snake_case cloud entry → AuthOptions. */
export function authFromCloudEntry(entry: CloudEntry): Partial<AuthOptions> {
  const auth = entry.auth ?? {};
  const out: Partial<AuthOptions> = {};
  for (const [key, names] of FIELDS) {
    const v = names
      .map((n) => (n.startsWith("^") ? entry[n.slice(1)] : auth[n]))
      .map(str)
      .find((x) => x !== undefined);
    if (v !== undefined) out[key] = v;
  }
  if (out.region === undefined && Array.isArray(entry.regions)) {
    const r = regionName(entry.regions[0]);
    if (r) out.region = r;
  }
  if (entry.verify === false || FALSE.has(String(entry.verify)) || entry.insecure === true) out.insecure = true;
  return out;
}

function regionName(r: unknown): string | undefined {
  return typeof r === "string" ? r : isMapping(r) ? str(r.name) : undefined;
}

/** OS_* variables as openstackclient reads them. */
export function authFromEnv(env: Record<string, string | undefined>): Partial<AuthOptions> {
  const out: Partial<AuthOptions> = {};
  for (const [key, , vars] of FIELDS) {
    const v = vars.map((n) => str(env[n])).find((x) => x !== undefined);
    if (v !== undefined) out[key] = v;
  }
  if (TRUE.has(env.OS_INSECURE ?? "")) out.insecure = true;
  return out;
}

function compactAuth(a: Partial<AuthOptions>): Partial<AuthOptions> {
  return Object.fromEntries(Object.entries(a).filter(([, v]) => v !== undefined)) as Partial<AuthOptions>;
}

/** Loads one cloud entry from clouds.yaml with secure.yaml merged over it. */
export function loadCloudEntry(name: string, l: CloudLookup = {}): { entry: CloudEntry; file: string } {
  const file = findConfigFile("clouds", l);
  const secureFile = findConfigFile("secure", l);
  if (!file && !secureFile) {
    throw new ImageyardError(
      "CLOUD_CONFIG",
      `load cloud ${name}: no clouds.yaml found (looked in ${searchDirs(l).join(", ")} and OS_CLIENT_CONFIG_FILE). Create one or give credentials explicitly.`,
    );
  }
  const clouds = file ? readClouds(file) : {};
  const secure = secureFile ? readClouds(secureFile) : {};
  const base = clouds[name];
  const extra = secure[name];
  if (base === undefined && extra === undefined) {
    const known = Object.keys(clouds).sort().join(", ") || "none";
    throw new ImageyardError(
      "CLOUD_CONFIG",
      `load cloud ${name}: ${file ?? secureFile} has no cloud named "${name}" (it has: ${known}). Fix the cloud name or OS_CLOUD.`,
    );
  }
  return { entry: deepMerge(base ?? {}, extra ?? {}), file: file ?? (secureFile as string) };
}

/** Resolves the options to authenticate with, and says where they came from. */
export function resolveCloud(l: CloudLookup = {}): ResolvedCloud {
  const env = l.env ?? process.env;
  const name = l.cloud ?? str(env.OS_CLOUD);
  let base: Partial<AuthOptions>;
  let source: string;
  if (name !== undefined) {
    const { entry, file } = loadCloudEntry(name, { ...l, env });
    base = authFromCloudEntry(entry);
    source = `cloud ${name} in ${file}`;
  } else {
    base = authFromEnv(env);
    source = "OS_* environment variables";
  }
  const explicit = compactAuth(l.explicit ?? {});
  const auth = { ...base, ...explicit } as Partial<AuthOptions>;
  if (Object.keys(explicit).length > 0)
    source = Object.keys(base).length > 0 ? `explicit credentials over ${source}` : "explicit credentials";
  if (!auth.authUrl) {
    throw new ImageyardError(
      "CLOUD_CONFIG",
      `configure OpenStack: no auth URL (looked at ${source}). Set cloud to a name in clouds.yaml, set OS_CLOUD or OS_AUTH_URL and friends, or give credentials.authUrl.`,
    );
  }
  return { auth: auth as AuthOptions, source };
}
