// Credentials from the files docker, podman and skopeo write (config.json / auth.json) and from
// docker credential helpers (docker-credential-<name> get), looked up the way docker does.
import { readFile } from "node:fs/promises";
import { homedir } from "node:os";
import { join } from "node:path";
import { ImageyardError } from "../http/errors";
import type { Credentials } from "./auth";
import { DOCKER_HUB } from "./reference";

export interface DockerConfigFile {
  auths?: Record<
    string,
    { auth?: string; username?: string; password?: string; identitytoken?: string; registrytoken?: string; email?: string }
  >;
  credHelpers?: Record<string, string>;
  credsStore?: string;
}

export interface FoundCredentials {
  credentials: Credentials;
  /** Names where they came from, for messages (never the secret): "/root/.docker/config.json". */
  source: string;
}

export interface LookupOptions {
  /** One explicit file (config.json or auth.json); otherwise the default search list. */
  path?: string;
  env?: NodeJS.ProcessEnv;
  /** Seconds a credential helper may take. */
  helperTimeoutMs?: number;
}

const DOCKER_HUB_KEYS = [
  "https://index.docker.io/v1/",
  "index.docker.io",
  "docker.io",
  "registry-1.docker.io",
  "https://index.docker.io/v1",
  "registry.hub.docker.com",
];

/** The files searched, in order (skopeo's order: containers auth first, then docker's). */
export function configPaths(env: NodeJS.ProcessEnv = process.env): string[] {
  const out: string[] = [];
  if (env.REGISTRY_AUTH_FILE) out.push(env.REGISTRY_AUTH_FILE);
  if (env.XDG_RUNTIME_DIR) out.push(join(env.XDG_RUNTIME_DIR, "containers", "auth.json"));
  out.push(join(env.DOCKER_CONFIG || join(env.HOME || homedir(), ".docker"), "config.json"));
  return [...new Set(out)];
}

/** The host a config key names: keys may be hosts, or URLs with a scheme and a path. */
export function keyHost(key: string): string {
  let k = key.trim();
  k = k.replace(/^[a-z][a-z0-9+.-]*:\/\//i, "");
  const slash = k.indexOf("/");
  if (slash >= 0) k = k.slice(0, slash);
  return k.toLowerCase();
}

/** The server URL docker passes to credential helpers and uses as the auths key. */
export function serverUrl(registry: string): string {
  return registry === DOCKER_HUB ? "https://index.docker.io/v1/" : registry;
}

function matches(key: string, registry: string): boolean {
  if (registry === DOCKER_HUB) return DOCKER_HUB_KEYS.includes(key) || DOCKER_HUB_KEYS.includes(keyHost(key));
  return keyHost(key) === registry.toLowerCase();
}

/** Finds credentials for `registry` (a reference's registry name, e.g. "docker.io"); undefined if none. */
export async function lookupCredentials(registry: string, opts: LookupOptions = {}): Promise<FoundCredentials | undefined> {
  const env = opts.env ?? process.env;
  const paths = opts.path ? [opts.path] : configPaths(env);
  for (const path of paths) {
    const config = await readConfig(path, Boolean(opts.path));
    if (!config) continue;
    const found = await fromConfig(config, registry, path, env, opts.helperTimeoutMs);
    if (found) return found;
  }
  return undefined;
}

async function readConfig(path: string, explicit: boolean): Promise<DockerConfigFile | undefined> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT" && !explicit) return undefined;
    throw new ImageyardError("INVALID_INPUT", `read docker config ${path}: ${(e as Error).message}. Check the dockerConfig path.`, {
      cause: e,
    });
  }
  try {
    const doc = JSON.parse(text) as unknown;
    if (typeof doc !== "object" || doc === null || Array.isArray(doc)) throw new Error("not a JSON object");
    return doc as DockerConfigFile;
  } catch (e) {
    throw new ImageyardError(
      "INVALID_INPUT",
      `read docker config ${path}: not valid JSON (${(e as Error).message}). Fix or remove the file.`,
      { cause: e },
    );
  }
}

/** Resolves one config document: credHelpers[host], then the file's auths, then credsStore. */
export async function fromConfig(
  config: DockerConfigFile,
  registry: string,
  path: string,
  env: NodeJS.ProcessEnv = process.env,
  timeoutMs?: number,
): Promise<FoundCredentials | undefined> {
  const helperKey = Object.keys(config.credHelpers ?? {}).find((k) => matches(k, registry));
  if (helperKey) {
    const helper = config.credHelpers![helperKey]!;
    const c = await runCredentialHelper(helper, serverUrl(registry), env, timeoutMs);
    return c ? { credentials: c, source: `credential helper docker-credential-${helper} (from ${path})` } : undefined;
  }
  const authKey = Object.keys(config.auths ?? {}).find((k) => matches(k, registry));
  const entry = authKey ? config.auths![authKey] : undefined;
  const fromFile = entry ? decodeAuthEntry(entry, path, authKey!) : undefined;
  if (fromFile) return { credentials: fromFile, source: path };
  if (config.credsStore) {
    const c = await runCredentialHelper(config.credsStore, serverUrl(registry), env, timeoutMs);
    if (c) return { credentials: c, source: `credential store docker-credential-${config.credsStore} (from ${path})` };
  }
  return undefined;
}

function decodeAuthEntry(entry: NonNullable<DockerConfigFile["auths"]>[string], path: string, key: string): Credentials | undefined {
  const c: Credentials = {};
  if (entry.auth) {
    const decoded = Buffer.from(entry.auth, "base64").toString("utf8");
    const colon = decoded.indexOf(":");
    if (colon < 0)
      throw new ImageyardError(
        "INVALID_INPUT",
        `read docker config ${path}: the "auth" of "${key}" is not base64 of user:password. Log in again.`,
      );
    c.username = decoded.slice(0, colon);
    c.password = decoded.slice(colon + 1);
  } else if (entry.username !== undefined && entry.password !== undefined) {
    c.username = entry.username;
    c.password = entry.password;
  }
  if (entry.identitytoken) c.identityToken = entry.identitytoken;
  if (entry.registrytoken) c.registryToken = entry.registrytoken;
  return Object.keys(c).length > 0 ? c : undefined;
}

/**
 * Runs `docker-credential-<name> get`: the server URL on stdin, JSON {Username, Secret} on stdout.
 * Username "<token>" means the secret is an identity (refresh) token. "not found" means none.
 */
export function runCredentialHelper(
  name: string,
  server: string,
  env: NodeJS.ProcessEnv = process.env,
  timeoutMs = 30_000,
): Promise<Credentials | undefined> {
  if (!/^[A-Za-z0-9._-]+$/.test(name)) {
    return Promise.reject(
      new ImageyardError(
        "INVALID_INPUT",
        `credential helper "${name}" has an invalid name. Fix credHelpers/credsStore in the docker config.`,
      ),
    );
  }
  const program = `docker-credential-${name}`;
  // Required here, not at the top: child_process (and dgram behind it) is ~5% of the CLI's
  // start-up, and most copies never run a helper.
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { execFile } = require("node:child_process") as typeof import("node:child_process");
  return new Promise((resolve, reject) => {
    const child = execFile(
      program,
      ["get"],
      { env, timeout: timeoutMs, maxBuffer: 1024 * 1024, windowsHide: true },
      (err, stdout, stderr) => {
        if (err) {
          const text = `${stdout}\n${stderr}`.toLowerCase();
          if (text.includes("credentials not found") || text.includes("not found in native keychain")) return resolve(undefined);
          const why =
            (err as NodeJS.ErrnoException).code === "ENOENT"
              ? `${program} is not on PATH`
              : `it failed (${stderr.toString().trim().slice(0, 200) || err.message})`;
          return reject(
            new ImageyardError(
              "REGISTRY_UNAUTHORIZED",
              `get credentials for ${server} from ${program}: ${why}. Install the helper or fix credHelpers/credsStore in the docker config.`,
              { cause: err },
            ),
          );
        }
        try {
          const doc = JSON.parse(stdout.toString()) as { Username?: string; Secret?: string };
          if (!doc.Secret) return resolve(undefined);
          if (doc.Username === "<token>") return resolve({ identityToken: doc.Secret });
          resolve({ username: doc.Username ?? "", password: doc.Secret });
        } catch (e) {
          reject(
            new ImageyardError(
              "REGISTRY_UNAUTHORIZED",
              `get credentials for ${server} from ${program}: the helper printed something other than JSON. Check the helper.`,
              { cause: e },
            ),
          );
        }
      },
    );
    child.stdin?.end(server);
  });
}
