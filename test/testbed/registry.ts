// The real-registry test bed: CNCF distribution 2.8 (Debian's docker-registry) on 127.0.0.1 in
// four configurations — anonymous `upstream`, htpasswd `mirror`, TLS + htpasswd `tls`, bearer
// `token` (with our own token server) — plus ad-hoc registries a test can kill and restart.
//
// Processes run detached with their state under $IY_STATE_DIR/registry, described by
// testbed.json; a start reuses live processes whose config is unchanged, so vitest runs, the
// demo and the benches share one test bed. Users of the test bed hold a lease; the last lease
// released stops it (unless IY_KEEP_TESTBED=1 or `scripts/testbed.sh up` holds one).
import { execFileSync, spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, readSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { dirname, join, resolve } from "node:path";
import { createDispatcher, send } from "../../provider/http/client";
import { ensureCerts, type TestbedCerts } from "./certs";
import type { TokenServerConfig } from "./tokenServer";

/** Bump when configs or layout change, so a running older test bed is replaced. */
const GENERATION = "1";
const READY_TIMEOUT_MS = 20_000;
const LOCK_TIMEOUT_MS = 180_000;

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

function repoRoot(): string {
  let dir = __dirname;
  for (;;) {
    const pkg = join(dir, "package.json");
    if (existsSync(pkg) && (JSON.parse(readFileSync(pkg, "utf8")) as { name?: string }).name === "imageyard") return dir;
    const up = dirname(dir);
    if (up === dir) return process.cwd();
    dir = up;
  }
}

export function defaultStateDir(): string {
  return resolve(process.env.IY_STATE_DIR ?? join(repoRoot(), ".testbed"));
}

function testbedJson(stateDir: string): string {
  return join(stateDir, "registry", "testbed.json");
}

export function loadRegistryTestbed(stateDir = defaultStateDir()): RegistryTestbed {
  const file = testbedJson(stateDir);
  if (!existsSync(file)) {
    throw new Error(`registry test bed not running: ${file} is missing. Start it with scripts/testbed.sh up (vitest's globalSetup test/testbed/registry.setup.ts does it too).`);
  }
  return JSON.parse(readFileSync(file, "utf8")) as RegistryTestbed;
}

// ---------------------------------------------------------------------------------------------
// Processes

const tryListen = (port: number) =>
  new Promise<number>((ok, fail) => {
    const srv = createServer();
    srv.once("error", fail);
    srv.listen(port, "127.0.0.1", () => {
      const addr = srv.address();
      srv.close(() => ok(typeof addr === "object" && addr ? addr.port : 0));
    });
  });

/**
 * A free port below the kernel's ephemeral range (32768+ on Linux), so that a registry restarted
 * on its old port never finds it taken by some client connection's local end. `preferred` wins
 * when it is free (a restart keeps its port); `waitMs` keeps trying it that long.
 */
async function freePort(preferred?: number, waitMs = 0): Promise<number> {
  if (preferred) {
    const deadline = Date.now() + waitMs;
    for (;;) {
      try {
        return await tryListen(preferred);
      } catch {
        if (Date.now() >= deadline) break;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  }
  for (let i = 0; i < 50; i++) {
    try {
      return await tryListen(20_000 + Math.floor(Math.random() * 12_000));
    } catch {
      /* taken: draw again */
    }
  }
  return tryListen(0);
}

/** True when `pid` is a live (non-zombie) process whose command line mentions `marker`. */
function isOurProcess(pid: number | undefined, marker: string): boolean {
  if (!pid) return false;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    if (/\) Z /.test(stat)) return false;
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").includes(marker);
  } catch {
    return false;
  }
}

async function waitUntil(what: string, deadlineMs: number, check: () => boolean | Promise<boolean>): Promise<void> {
  const deadline = Date.now() + deadlineMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) throw new Error(`${what}: still not done after ${deadlineMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function signalAndWait(pid: number | undefined, marker: string, signal: NodeJS.Signals): Promise<void> {
  if (!pid || !isOurProcess(pid, marker)) return;
  try {
    process.kill(pid, signal);
  } catch {
    return;
  }
  await waitUntil(`stop pid ${pid}`, 15_000, () => !isOurProcess(pid, marker));
}

function spawnLogged(cmd: string, args: string[], logFile: string, pidFile: string): number {
  mkdirSync(dirname(logFile), { recursive: true });
  mkdirSync(dirname(pidFile), { recursive: true });
  const fd = openSync(logFile, "a");
  // REGISTRY_* variables would override the config file.
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("REGISTRY_")));
  try {
    // Detached: the test bed outlives the process that started it (scripts/testbed.sh up).
    const child = spawn(cmd, args, { detached: true, stdio: ["ignore", fd, fd], env });
    child.unref();
    if (!child.pid) throw new Error(`cannot start ${cmd}: no pid`);
    writeFileSync(pidFile, `${child.pid}\n`);
    return child.pid;
  } finally {
    closeSync(fd);
  }
}

function logTail(file: string, lines = 15): string {
  try {
    return readFileSync(file, "utf8").trimEnd().split("\n").slice(-lines).join("\n");
  } catch {
    return "(no log)";
  }
}

async function waitHttp(url: string, ok: number[], pid: number, marker: string, logFile: string, ca?: string): Promise<void> {
  const dispatcher = createDispatcher({ tls: ca ? { ca: [readFileSync(ca, "utf8")] } : undefined, connections: 1, connectTimeoutMs: 2_000 });
  try {
    await waitUntil(`wait for ${url}`, READY_TIMEOUT_MS, async () => {
      if (!isOurProcess(pid, marker)) throw new Error(`${marker} exited before answering ${url}:\n${logTail(logFile)}`);
      try {
        const res = await send({ method: "GET", url, ok, operation: "test bed readiness", dispatcher });
        await res.body.dump();
        return true;
      } catch (e) {
        if ((e as { status?: number }).status !== undefined) throw e;
        return false;
      }
    });
  } finally {
    await dispatcher.close();
  }
}

function sha256File(file: string): string {
  return createHash("sha256").update(readFileSync(file)).digest("hex");
}

// ---------------------------------------------------------------------------------------------
// Lock and leases

async function withLock<T>(dir: string, fn: () => Promise<T>): Promise<T> {
  const lock = join(dir, ".lock");
  mkdirSync(dir, { recursive: true });
  const deadline = Date.now() + LOCK_TIMEOUT_MS;
  for (;;) {
    try {
      mkdirSync(lock);
      writeFileSync(join(lock, "pid"), `${process.pid}\n`);
      break;
    } catch {
      let holder = 0;
      try {
        holder = Number(readFileSync(join(lock, "pid"), "utf8"));
      } catch {
        /* being created or removed */
      }
      if (holder && !isAlive(holder)) rmSync(lock, { recursive: true, force: true });
      if (Date.now() > deadline) throw new Error(`registry test bed: lock ${lock} held by pid ${holder} for ${LOCK_TIMEOUT_MS} ms`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  try {
    return await fn();
  } finally {
    rmSync(lock, { recursive: true, force: true });
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return !/\) Z /.test(readFileSync(`/proc/${pid}/stat`, "utf8"));
  } catch {
    return false;
  }
}

/** Leases whose holder is gone no longer keep the test bed up; "persistent" ones always do. */
function liveLeases(dir: string): string[] {
  const leases = join(dir, "leases");
  if (!existsSync(leases)) return [];
  return readdirSync(leases).filter((name) => {
    const holder = readFileSync(join(leases, name), "utf8").trim();
    if (holder === "persistent" || isAlive(Number(holder))) return true;
    rmSync(join(leases, name), { force: true });
    return false;
  });
}

// ---------------------------------------------------------------------------------------------
// Configuration

function registryConfig(name: string, port: number, dataDir: string, opts: RegistryOptions, certs: TestbedCerts, auth: { htpasswd: string; token?: TokenServerInfo }): string {
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
    if (!auth.token) throw new Error(`registry ${name}: token auth needs the test bed's token server; start the test bed first (scripts/testbed.sh up)`);
    lines.push("auth:", "  token:", `    realm: ${q(auth.token.realm)}`, `    service: ${q(auth.token.service)}`, `    issuer: ${q(auth.token.issuer)}`, `    rootcertbundle: ${q(certs.rootBundle)}`);
  }
  return lines.join("\n") + "\n";
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
  writeFileSync(htpasswd, line.trim() + "\n", { mode: 0o600 });
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
    Object.assign(ep, { username: users.pusher.username, password: users.pusher.password, pushUser: users.pusher, pullUser: users.puller, tokenRealm: token.realm, tokenService: token.service });
  }
  return ep;
}

async function launchRegistry(spec: RegistrySpec, wipe = false, waitForPortMs = 0, attempt = 1): Promise<RegistryEndpoint> {
  const port = await freePort(spec.preferredPort, waitForPortMs);
  const ep = describeRegistry(spec, port, 0);
  if (wipe) rmSync(ep.dataDir, { recursive: true, force: true });
  mkdirSync(ep.dataDir, { recursive: true });
  mkdirSync(dirname(ep.configFile), { recursive: true });
  writeFileSync(ep.configFile, registryConfig(spec.name, port, ep.dataDir, spec.opts, spec.certs, { htpasswd: spec.htpasswd, token: spec.token }));
  const logStart = requestLogMark(ep);
  ep.pid = spawnLogged("docker-registry", ["serve", ep.configFile], ep.logFile, ep.pidFile);
  try {
    await waitHttp(`${ep.url}/v2/`, spec.opts.auth === "none" ? [200] : [401], ep.pid, ep.configFile, ep.logFile, ep.caFile);
  } catch (e) {
    // Someone took the port between our probe and the registry's bind: try again.
    const lost = !isOurProcess(ep.pid, ep.configFile) && readFileSync(ep.logFile, "utf8").slice(logStart).includes("address already in use");
    if (lost && attempt < 3) return launchRegistry(spec, false, waitForPortMs, attempt + 1);
    throw e;
  }
  return ep;
}

async function launchTokenServer(dir: string, certs: TestbedCerts, users: Users, preferredPort?: number): Promise<TokenServerInfo> {
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
  const pid = spawnLogged(process.execPath, [...NODE_FLAGS, tokenServerScript(), "serve", configFile], logFile, join(dir, "run", "token-server.pid"));
  const url = `http://127.0.0.1:${port}`;
  await waitHttp(`${url}/healthz`, [200], pid, configFile, logFile);
  return { url, realm: `${url}/token`, service: cfg.service, issuer: cfg.issuer, port, pid, configFile, logFile, pushUser: users.pusher, pullUser: users.puller };
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
    for (const r of Object.values(tb.registries)) await waitHttp(`${r.url}/v2/`, r.auth === "none" ? [200] : [401], r.pid, r.configFile, r.logFile, r.caFile);
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
export async function startRegistryTestbed(stateDir = defaultStateDir(), opts: { lease?: string; persistent?: boolean } = {}): Promise<RegistryTestbed> {
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
        registries[name] = await launchRegistry({ name, dir, opts: o, certs, users, htpasswd, token, preferredPort: old?.registries[name]?.port });
      }
      const configSha256: Record<string, string> = { "token-server": sha256File(token.configFile) };
      for (const r of Object.values(registries)) configSha256[r.name] = sha256File(r.configFile);
      tb = { generation: GENERATION, stateDir: resolve(stateDir), dir, registries, tokenServer: token, caFile: certs.caFile, certDir: certs.certDir, configSha256 };
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
      if (handle.endpoint.port !== spec.preferredPort && spec.preferredPort) throw new Error(`registry ${id}: port ${spec.preferredPort} was taken; restarted on ${handle.endpoint.port}`);
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

// ---------------------------------------------------------------------------------------------
// Counting requests

export interface AccessLogEntry {
  method: string;
  path: string;
  status: number;
}

const ACCESS_LINE = /^127\.0\.0\.1 - \S+ \[[^\]]+\] "(\S+) (\S+) [^"]*" (\d{3}) /;

/** Where the registry's log ends now; pass it to readRequests() to see only later requests. */
export function requestLogMark(ep: Pick<RegistryEndpoint, "logFile">): number {
  try {
    return statSync(ep.logFile).size;
  } catch {
    return 0;
  }
}

/**
 * The requests the registry logged after byte offset `since` (its access log, one line per
 * request, written once the response is complete).
 */
export function readRequests(ep: Pick<RegistryEndpoint, "logFile">, since = 0): AccessLogEntry[] {
  const end = requestLogMark(ep);
  if (end <= since) return [];
  const fd = openSync(ep.logFile, "r");
  const out: AccessLogEntry[] = [];
  try {
    // Read in slices: a bench log can grow large.
    const buf = Buffer.alloc(1 << 20);
    let pos = since;
    let rest = "";
    while (pos < end) {
      const n = readSync(fd, buf, 0, Math.min(buf.length, end - pos), pos);
      if (n <= 0) break;
      pos += n;
      const lines = (rest + buf.toString("utf8", 0, n)).split("\n");
      rest = lines.pop() ?? "";
      for (const l of lines) {
        const m = ACCESS_LINE.exec(l);
        if (m) out.push({ method: m[1]!, path: m[2]!, status: Number(m[3]) });
      }
    }
  } finally {
    closeSync(fd);
  }
  return out;
}

export function countRequests(ep: Pick<RegistryEndpoint, "logFile">, since = 0): number {
  return readRequests(ep, since).length;
}
