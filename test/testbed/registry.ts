// The real-registry test bed: CNCF distribution 2.8 (Debian's docker-registry) on 127.0.0.1 in
// four configurations — anonymous `upstream`, htpasswd `mirror`, TLS + htpasswd `tls`, bearer
// `token` (with our own token server) — plus ad-hoc registries a test can kill and restart.
//
// Processes run detached with their state under $IY_STATE_DIR/registry, described by
// testbed.json; a start reuses live processes whose config is unchanged, so vitest runs, the
// demo and the benches share one test bed. Users of the test bed hold a lease; the last lease
// released stops it (unless IY_KEEP_TESTBED=1 or `scripts/testbed.sh up` holds one).
import { execFileSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { requestLogMark } from "./accesslog";
export { defaultStateDir } from "./processes";
import { ensureCerts, type TestbedCerts } from "./certs";
import {
  defaultStateDir,
  freePort,
  isAlive,
  isOurProcess,
  liveLeases,
  sha256File,
  signalAndWait,
  spawnLogged,
  waitHttp,
  withLock,
} from "./processes";
import type { TokenServerConfig } from "./tokenServer";

// Request counting lives in accesslog.ts; tests and benches import it from here too.
export { countRequests, readRequests, requestLogMark, type AccessLogEntry } from "./accesslog";

/** Bump when configs or layout change, so a running older test bed is replaced. */
const GENERATION = "1";

export type RegistryAuthMode = "none" | "htpasswd" | "token";
export type TestbedRegistryName = "upstream" | "mirror" | "tls" | "token";

export interface Credentials {
  username: string;
  password: string;
}

export interface RegistryEndpoint {
  name: string;
  /** "127.0.0.1:PORT", what image references use. */
  host: string;
  port: number;
  scheme: "http" | "https";
  /** scheme://host */
  url: string;
  auth: RegistryAuthMode;
  /** htpasswd user; on the token registry the user that may push. */
  username?: string;
  password?: string;
  /** PEM CA that signed the server certificate (https only). */
  caFile?: string;
  /** skopeo-style cert dir holding only ca.crt (https only). */
  certDir?: string;
  /** Token registry: a user with pull,push,delete on every repo, and one with pull only. */
  pushUser?: Credentials;
  pullUser?: Credentials;
  tokenRealm?: string;
  tokenService?: string;
  dataDir: string;
  configFile: string;
  /** Registry output; its access-log lines are what countRequests() reads. */
  logFile: string;
  pidFile: string;
  pid: number;
}

export interface TokenServerInfo {
  url: string;
  realm: string;
  service: string;
  issuer: string;
  port: number;
  pid: number;
  configFile: string;
  logFile: string;
  pushUser: Credentials;
  pullUser: Credentials;
}

export interface RegistryTestbed {
  generation: string;
  stateDir: string;
  /** stateDir/registry */
  dir: string;
  registries: Record<TestbedRegistryName, RegistryEndpoint>;
  tokenServer: TokenServerInfo;
  caFile: string;
  certDir: string;
  /** sha256 of each process's config file when it started, keyed by process name. */
  configSha256: Record<string, string>;
}

export interface RegistryOptions {
  auth: RegistryAuthMode;
  tls: boolean;
  /** Ad-hoc only: keep the data here across processes and runs (not wiped on the first start). */
  dataDir?: string;
}

export interface RegistryHandle {
  endpoint: RegistryEndpoint;
  /** Starts (again) on the same port and data dir; `wipe` empties the data dir first. */
  start(opts?: { wipe?: boolean }): Promise<RegistryEndpoint>;
  /** SIGTERM and wait for the exit. */
  stop(): Promise<void>;
  /** SIGKILL (a crash) and wait for the exit. */
  kill(): Promise<void>;
  /** Stops it and deletes its directory (and its data, unless it was given a dataDir). */
  remove(): Promise<void>;
}

interface Users {
  mirror: Credentials;
  pusher: Credentials;
  puller: Credentials;
}

// ---------------------------------------------------------------------------------------------
// Paths

function testbedJson(stateDir: string): string {
  return join(stateDir, "registry", "testbed.json");
}

export function loadRegistryTestbed(stateDir = defaultStateDir()): RegistryTestbed {
  const file = testbedJson(stateDir);
  if (!existsSync(file)) {
    throw new Error(
      `registry test bed not running: ${file} is missing. Start it with scripts/testbed.sh up (vitest's globalSetup test/testbed/registry.setup.ts does it too).`,
    );
  }
  return JSON.parse(readFileSync(file, "utf8")) as RegistryTestbed;
}

// ---------------------------------------------------------------------------------------------
// Configuration

function registryConfig(
  name: string,
  port: number,
  dataDir: string,
  opts: RegistryOptions,
  certs: TestbedCerts,
  auth: { htpasswd: string; token?: TokenServerInfo },
): string {
  const q = (s: string) => JSON.stringify(s);
  const lines = [
    "version: 0.1",
    "log:",
    "  level: info",
    "  accesslog:",
    "    disabled: false",
    "  fields:",
    `    service: ${q(`imageyard-${name}`)}`,
    "storage:",
    "  filesystem:",
    `    rootdirectory: ${q(dataDir)}`,
    "  delete:",
    "    enabled: true",
    "  cache:",
    "    blobdescriptor: inmemory",
    "  maintenance:",
    "    uploadpurging:",
    "      enabled: false",
    "http:",
    `  addr: ${q(`127.0.0.1:${port}`)}`,
    `  secret: ${q(createHash("sha256").update(`imageyard-${name}`).digest("hex"))}`,
    "  headers:",
    "    X-Content-Type-Options: [nosniff]",
  ];
  if (opts.tls) lines.push("  tls:", `    certificate: ${q(certs.serverCert)}`, `    key: ${q(certs.serverKey)}`);
  if (opts.auth === "htpasswd") lines.push("auth:", "  htpasswd:", `    realm: ${q(`imageyard-${name}`)}`, `    path: ${q(auth.htpasswd)}`);
  if (opts.auth === "token") {
    if (!auth.token)
      throw new Error(`registry ${name}: token auth needs the test bed's token server; start the test bed first (scripts/testbed.sh up)`);
    lines.push(
      "auth:",
      "  token:",
      `    realm: ${q(auth.token.realm)}`,
      `    service: ${q(auth.token.service)}`,
      `    issuer: ${q(auth.token.issuer)}`,
      `    rootcertbundle: ${q(certs.rootBundle)}`,
    );
  }
  return `${lines.join("\n")}\n`;
}

function ensureUsers(dir: string): { users: Users; htpasswd: string } {
  const authDir = join(dir, "auth");
  const usersFile = join(authDir, "users.json");
  const htpasswd = join(authDir, "htpasswd");
  mkdirSync(authDir, { recursive: true, mode: 0o700 });
  if (existsSync(usersFile) && existsSync(htpasswd)) return { users: JSON.parse(readFileSync(usersFile, "utf8")) as Users, htpasswd };
  const pw = () => randomBytes(12).toString("base64url");
  const users: Users = {
    mirror: { username: "mirror", password: pw() },
    pusher: { username: "pusher", password: pw() },
    puller: { username: "puller", password: pw() },
  };
  const line = execFileSync("htpasswd", ["-Bbn", users.mirror.username, users.mirror.password], { encoding: "utf8" });
  writeFileSync(htpasswd, `${line.trim()}\n`, { mode: 0o600 });
  writeFileSync(usersFile, JSON.stringify(users, null, 2), { mode: 0o600 });
  return { users, htpasswd };
}

function tokenServerScript(): string {
  // Compiled (dist/) next to a .js; from sources Node strips the types itself.
  const js = join(__dirname, "tokenServer.js");
  return existsSync(js) ? js : join(__dirname, "tokenServer.ts");
}

const NODE_FLAGS = ["--disable-warning=ExperimentalWarning", "--disable-warning=MODULE_TYPELESS_PACKAGE_JSON"];

// ---------------------------------------------------------------------------------------------
// One registry process

interface RegistrySpec {
  name: string;
  dir: string;
  opts: RegistryOptions;
  certs: TestbedCerts;
  users: Users;
  htpasswd: string;
  token?: TokenServerInfo;
  preferredPort?: number;
}

function describeRegistry(spec: RegistrySpec, port: number, pid: number): RegistryEndpoint {
  const { name, dir, opts, users, token, certs } = spec;
  const host = `127.0.0.1:${port}`;
  const scheme = opts.tls ? "https" : "http";
  const ep: RegistryEndpoint = {
    name,
    host,
    port,
    scheme,
    url: `${scheme}://${host}`,
    auth: opts.auth,
    dataDir: opts.dataDir ?? join(dir, "data", name),
    configFile: join(dir, "conf", `${name}.yml`),
    logFile: join(dir, "logs", `${name}.log`),
    pidFile: join(dir, "run", `${name}.pid`),
    pid,
  };
  if (opts.tls) Object.assign(ep, { caFile: certs.caFile, certDir: certs.certDir });
  if (opts.auth === "htpasswd") Object.assign(ep, { username: users.mirror.username, password: users.mirror.password });
  if (opts.auth === "token" && token) {
    Object.assign(ep, {
      username: users.pusher.username,
      password: users.pusher.password,
      pushUser: users.pusher,
      pullUser: users.puller,
      tokenRealm: token.realm,
      tokenService: token.service,
    });
  }
  return ep;
}

async function launchRegistry(spec: RegistrySpec, wipe = false, waitForPortMs = 0, attempt = 1): Promise<RegistryEndpoint> {
  const port = await freePort(spec.preferredPort, waitForPortMs);
  const ep = describeRegistry(spec, port, 0);
  if (wipe) rmSync(ep.dataDir, { recursive: true, force: true });
  mkdirSync(ep.dataDir, { recursive: true });
  mkdirSync(dirname(ep.configFile), { recursive: true });
  writeFileSync(
    ep.configFile,
    registryConfig(spec.name, port, ep.dataDir, spec.opts, spec.certs, { htpasswd: spec.htpasswd, token: spec.token }),
  );
  const logStart = requestLogMark(ep);
  ep.pid = spawnLogged("docker-registry", ["serve", ep.configFile], ep.logFile, ep.pidFile);
  try {
    await waitHttp(`${ep.url}/v2/`, spec.opts.auth === "none" ? [200] : [401], ep.pid, ep.configFile, ep.logFile, ep.caFile);
  } catch (e) {
    // Someone took the port between our probe and the registry's bind: try again.
    const lost =
      !isOurProcess(ep.pid, ep.configFile) && readFileSync(ep.logFile, "utf8").slice(logStart).includes("address already in use");
    if (lost && attempt < 3) return launchRegistry(spec, false, waitForPortMs, attempt + 1);
    throw e;
  }
  return ep;
}

async function launchTokenServer(
  dir: string,
  certs: TestbedCerts,
  users: Users,
  preferredPort?: number,
  attempt = 1,
): Promise<TokenServerInfo> {
  const port = await freePort(preferredPort);
  const configFile = join(dir, "conf", "token-server.json");
  const logFile = join(dir, "logs", "token-server.log");
  const cfg: TokenServerConfig = {
    port,
    issuer: "imageyard-testbed-issuer",
    service: "imageyard-testbed",
    keyFile: certs.tokenKey,
    certFile: certs.tokenCert,
    header: "kid",
    ttlSeconds: 300,
    users: {
      [users.pusher.username]: { password: users.pusher.password, actions: ["pull", "push", "delete", "*"], catalog: true },
      [users.puller.username]: { password: users.puller.password, actions: ["pull"] },
    },
  };
  mkdirSync(dirname(configFile), { recursive: true });
  writeFileSync(configFile, JSON.stringify(cfg, null, 2), { mode: 0o600 });
  const pid = spawnLogged(
    process.execPath,
    [...NODE_FLAGS, tokenServerScript(), "serve", configFile],
    logFile,
    join(dir, "run", "token-server.pid"),
  );
  const url = `http://127.0.0.1:${port}`;
  const logStart = requestLogMark({ logFile });
  try {
    await waitHttp(`${url}/healthz`, [200], pid, configFile, logFile);
  } catch (e) {
    // Lost the port between our probe and its bind: try another.
    if (attempt < 3 && readFileSync(logFile, "utf8").slice(logStart).includes("EADDRINUSE"))
      return launchTokenServer(dir, certs, users, undefined, attempt + 1);
    throw e;
  }
  return {
    url,
    realm: `${url}/token`,
    service: cfg.service,
    issuer: cfg.issuer,
    port,
    pid,
    configFile,
    logFile,
    pushUser: users.pusher,
    pullUser: users.puller,
  };
}

// ---------------------------------------------------------------------------------------------
// The test bed

const TESTBED: Record<TestbedRegistryName, RegistryOptions> = {
  upstream: { auth: "none", tls: false },
  mirror: { auth: "htpasswd", tls: false },
  tls: { auth: "htpasswd", tls: true },
  token: { auth: "token", tls: false },
};

function processes(tb: RegistryTestbed): { name: string; pid: number; marker: string }[] {
  return [
    { name: "token-server", pid: tb.tokenServer.pid, marker: tb.tokenServer.configFile },
    ...Object.values(tb.registries).map((r) => ({ name: r.name, pid: r.pid, marker: r.configFile })),
  ];
}

function readTestbed(stateDir: string): RegistryTestbed | undefined {
  try {
    return JSON.parse(readFileSync(testbedJson(stateDir), "utf8")) as RegistryTestbed;
  } catch {
    return undefined;
  }
}

async function isHealthy(tb: RegistryTestbed): Promise<boolean> {
  if (tb.generation !== GENERATION) return false;
  for (const p of processes(tb)) {
    if (!isOurProcess(p.pid, p.marker)) return false;
    if (!existsSync(p.marker) || sha256File(p.marker) !== tb.configSha256[p.name]) return false;
  }
  try {
    for (const r of Object.values(tb.registries))
      await waitHttp(`${r.url}/v2/`, r.auth === "none" ? [200] : [401], r.pid, r.configFile, r.logFile, r.caFile);
    return true;
  } catch {
    return false;
  }
}

async function stopProcesses(tb: RegistryTestbed): Promise<void> {
  for (const p of processes(tb)) await signalAndWait(p.pid, p.marker, "SIGTERM");
}

/**
 * Starts the four registries and the token server, or reuses the ones already running for this
 * state dir. `lease` names who uses it ("persistent" leases survive their process).
 */
export async function startRegistryTestbed(
  stateDir = defaultStateDir(),
  opts: { lease?: string; persistent?: boolean } = {},
): Promise<RegistryTestbed> {
  const dir = join(resolve(stateDir), "registry");
  return withLock(dir, async () => {
    pruneAdhoc(dir);
    const old = readTestbed(stateDir);
    let tb: RegistryTestbed;
    if (old && (await isHealthy(old))) tb = old;
    else {
      if (old) await stopProcesses(old);
      const certs = ensureCerts(join(dir, "certs"));
      const { users, htpasswd } = ensureUsers(dir);
      const token = await launchTokenServer(dir, certs, users, old?.tokenServer.port);
      const registries = {} as Record<TestbedRegistryName, RegistryEndpoint>;
      for (const [name, o] of Object.entries(TESTBED) as [TestbedRegistryName, RegistryOptions][]) {
        registries[name] = await launchRegistry({
          name,
          dir,
          opts: o,
          certs,
          users,
          htpasswd,
          token,
          preferredPort: old?.registries[name]?.port,
        });
      }
      const configSha256: Record<string, string> = { "token-server": sha256File(token.configFile) };
      for (const r of Object.values(registries)) configSha256[r.name] = sha256File(r.configFile);
      tb = {
        generation: GENERATION,
        stateDir: resolve(stateDir),
        dir,
        registries,
        tokenServer: token,
        caFile: certs.caFile,
        certDir: certs.certDir,
        configSha256,
      };
      const tmp = `${testbedJson(stateDir)}.${process.pid}`;
      writeFileSync(tmp, JSON.stringify(tb, null, 2), { mode: 0o600 });
      renameSync(tmp, testbedJson(stateDir));
    }
    if (opts.lease) {
      mkdirSync(join(dir, "leases"), { recursive: true });
      writeFileSync(join(dir, "leases", opts.lease), opts.persistent ? "persistent\n" : `${process.pid}\n`);
    }
    return tb;
  });
}

/** Drops `lease`; stops the test bed when no live lease is left (unless IY_KEEP_TESTBED=1). */
export async function releaseRegistryTestbed(stateDir: string, lease: string): Promise<boolean> {
  const dir = join(resolve(stateDir), "registry");
  return withLock(dir, async () => {
    rmSync(join(dir, "leases", lease), { force: true });
    if (process.env.IY_KEEP_TESTBED === "1" || liveLeases(dir).length > 0) return false;
    await stopUnlocked(stateDir);
    return true;
  });
}

async function stopUnlocked(stateDir: string): Promise<void> {
  const tb = readTestbed(stateDir);
  if (tb) await stopProcesses(tb);
  rmSync(testbedJson(stateDir), { force: true });
  rmSync(join(resolve(stateDir), "registry", "leases"), { recursive: true, force: true });
}

/** Stops the test bed's own processes (by pid, checked against their command lines). */
export async function stopRegistryTestbed(stateDir = defaultStateDir()): Promise<void> {
  await withLock(join(resolve(stateDir), "registry"), () => stopUnlocked(stateDir));
}

// ---------------------------------------------------------------------------------------------
// Ad-hoc registries

/** Ad-hoc directories end in the pid of the process that made them; drop those of dead ones. */
function pruneAdhoc(dir: string): void {
  const root = join(dir, "adhoc");
  if (!existsSync(root)) return;
  for (const name of readdirSync(root)) {
    const pid = Number(/-(\d+)$/.exec(name)?.[1]);
    if (pid && !isAlive(pid)) rmSync(join(root, name), { recursive: true, force: true });
  }
}

const adhocPids = new Map<number, string>();
let exitHookInstalled = false;

/**
 * An extra registry of its own (own port, data dir, log) for tests that stop, crash or wipe it.
 * Token auth uses the running test bed's token server. The name is suffixed with this process id
 * so parallel runs never share one.
 */
export async function startRegistry(stateDir: string, name: string, opts: RegistryOptions): Promise<RegistryHandle> {
  const root = join(resolve(stateDir), "registry");
  const { certs, users, htpasswd } = await withLock(root, async () => {
    pruneAdhoc(root);
    return { certs: ensureCerts(join(root, "certs")), ...ensureUsers(root) };
  });
  const token = opts.auth === "token" ? loadRegistryTestbed(stateDir).tokenServer : undefined;
  const id = `${name}-${process.pid}`;
  const spec: RegistrySpec = { name: id, dir: join(root, "adhoc", id), opts, certs, users, htpasswd, token };
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    // Ad-hoc registries belong to the test that made them: never leave one behind.
    process.on("exit", () => {
      for (const [pid, marker] of adhocPids) if (isOurProcess(pid, marker)) process.kill(pid, "SIGKILL");
    });
  }
  const handle: RegistryHandle = {
    endpoint: await launchRegistry(spec, !opts.dataDir),
    async start(o = {}) {
      if (isOurProcess(handle.endpoint.pid, handle.endpoint.configFile)) await handle.stop();
      handle.endpoint = await launchRegistry({ ...spec, preferredPort: handle.endpoint.port }, o.wipe, 10_000);
      if (handle.endpoint.port !== spec.preferredPort && spec.preferredPort)
        throw new Error(`registry ${id}: port ${spec.preferredPort} was taken; restarted on ${handle.endpoint.port}`);
      adhocPids.set(handle.endpoint.pid, handle.endpoint.configFile);
      return handle.endpoint;
    },
    async stop() {
      await signalAndWait(handle.endpoint.pid, handle.endpoint.configFile, "SIGTERM");
      adhocPids.delete(handle.endpoint.pid);
    },
    async kill() {
      await signalAndWait(handle.endpoint.pid, handle.endpoint.configFile, "SIGKILL");
      adhocPids.delete(handle.endpoint.pid);
    },
    async remove() {
      await handle.stop();
      rmSync(spec.dir, { recursive: true, force: true });
    },
  };
  spec.preferredPort = handle.endpoint.port;
  adhocPids.set(handle.endpoint.pid, handle.endpoint.configFile);
  return handle;
}
