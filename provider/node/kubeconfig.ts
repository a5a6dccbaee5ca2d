// Finds and reads a kubeconfig the way kubectl and @pulumi/kubernetes do: the given document, else
// every file in $KUBECONFIG (merged, first one wins per name), else ~/.kube/config; the given
// context, else current-context. Certificates and tokens named by path are read here, relative
// to the file that names them; exec credential plugins run like kubectl runs them.
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { homedir } from "node:os";
import { delimiter, dirname, isAbsolute, join, resolve } from "node:path";
import { parse as parseYaml } from "yaml";
import { ImageyardError } from "../http/errors";
import type { TlsOptions } from "../http/client";

/** What a client needs to talk to one cluster as one user. */
export interface KubeConnection {
  /** https://host:port (no trailing slash) */
  server: string;
  context: string;
  tls: TlsOptions;
  /** Bearer token (never logged). */
  token?: string;
  /** Basic auth, for old clusters. */
  basic?: { username: string; password: string };
  /** The context's namespace, if it names one. */
  namespace?: string;
}

export interface KubeconfigSource {
  /** The kubeconfig document itself (YAML or JSON), as @pulumi/kubernetes' `kubeconfig` takes it. */
  kubeconfig?: string;
  /** Context to use instead of current-context. */
  context?: string;
  env?: NodeJS.ProcessEnv;
}

interface Named<T> {
  name: string;
  [k: string]: unknown;
  value?: T;
}
interface ClusterEntry {
  server?: string;
  "certificate-authority"?: string;
  "certificate-authority-data"?: string;
  "insecure-skip-tls-verify"?: boolean;
  "tls-server-name"?: string;
}
interface UserEntry {
  "client-certificate"?: string;
  "client-certificate-data"?: string;
  "client-key"?: string;
  "client-key-data"?: string;
  token?: string;
  tokenFile?: string;
  username?: string;
  password?: string;
  exec?: { command: string; args?: string[]; env?: { name: string; value: string }[]; apiVersion?: string };
}
interface ContextEntry {
  cluster?: string;
  user?: string;
  namespace?: string;
}
/** One file's entries, each remembering the folder relative paths resolve against. */
interface Doc {
  base: string;
  clusters: Map<string, ClusterEntry>;
  users: Map<string, UserEntry>;
  contexts: Map<string, ContextEntry>;
  current?: string;
}

function configError(what: string, hint: string): ImageyardError {
  return new ImageyardError("KUBE_CONFIG", `read kubeconfig: ${what}. ${hint}.`);
}

/** The kubeconfig files kubectl would read, in order. */
export function kubeconfigPaths(env: NodeJS.ProcessEnv = process.env): string[] {
  const list = (env.KUBECONFIG ?? "").split(delimiter).filter((p) => p !== "");
  if (list.length > 0) return list.map((p) => resolve(p));
  return [join(env.HOME ?? homedir(), ".kube", "config")];
}

function parseDoc(text: string, base: string, where: string): Doc {
  let raw: Record<string, unknown>;
  try {
    raw = (parseYaml(text) ?? {}) as Record<string, unknown>;
  } catch (e) {
    throw configError(`${where} is not YAML or JSON (${(e as Error).message.split("\n")[0]})`, "Give the kubeconfig document kubectl uses");
  }
  const entries = <T>(key: string, inner: string): Map<string, T> => {
    const m = new Map<string, T>();
    const list = raw[key];
    if (Array.isArray(list)) for (const e of list as Named<T>[]) if (e && typeof e.name === "string") m.set(e.name, (e[inner] ?? {}) as T);
    return m;
  };
  const doc: Doc = {
    base,
    clusters: entries("clusters", "cluster"),
    users: entries("users", "user"),
    contexts: entries("contexts", "context"),
  };
  if (typeof raw["current-context"] === "string" && raw["current-context"] !== "") doc.current = raw["current-context"];
  return doc;
}

function loadDocs(src: KubeconfigSource): { docs: Doc[]; where: string } {
  const env = src.env ?? process.env;
  if (src.kubeconfig !== undefined && src.kubeconfig.trim() !== "") {
    return { docs: [parseDoc(src.kubeconfig, process.cwd(), "the kubeconfig input")], where: "the kubeconfig input" };
  }
  const paths = kubeconfigPaths(env).filter((p) => existsSync(p));
  if (paths.length === 0) {
    throw configError(
      `no kubeconfig given and none found (${kubeconfigPaths(env).join(", ")})`,
      "Set the kubeconfig input, KUBECONFIG, or ~/.kube/config",
    );
  }
  return { docs: paths.map((p) => parseDoc(readFileSync(p, "utf8"), dirname(p), p)), where: paths.join(", ") };
}

/** First entry of that name across the files (kubectl's merge rule: the first file wins). */
function pick<T>(docs: Doc[], kind: "clusters" | "users" | "contexts", name: string): { entry: T; base: string } | undefined {
  for (const d of docs) {
    const e = d[kind].get(name);
    if (e) return { entry: e as T, base: d.base };
  }
  return undefined;
}

function readRef(path: string, base: string, what: string): string {
  const p = isAbsolute(path) ? path : resolve(base, path);
  try {
    return readFileSync(p, "utf8");
  } catch (e) {
    throw configError(`${what} ${p} cannot be read (${(e as NodeJS.ErrnoException).code ?? "error"})`, "Check the path in the kubeconfig");
  }
}

const b64 = (s: string) => Buffer.from(s, "base64").toString("utf8");

/** Resolves the connection for a context; throws KUBE_CONFIG naming what is missing. */
export function loadKubeconfig(src: KubeconfigSource = {}): KubeConnection {
  const { docs, where } = loadDocs(src);
  const contextName = src.context ?? docs.find((d) => d.current)?.current;
  if (!contextName) throw configError(`${where} sets no current-context`, "Set the context input or run kubectl config use-context");
  const ctx = pick<ContextEntry>(docs, "contexts", contextName);
  if (!ctx)
    throw configError(
      `context "${contextName}" not found in ${where}`,
      `Use one of: ${[...new Set(docs.flatMap((d) => [...d.contexts.keys()]))].join(", ")}`,
    );
  const cluster = ctx.entry.cluster ? pick<ClusterEntry>(docs, "clusters", ctx.entry.cluster) : undefined;
  if (!cluster?.entry.server)
    throw configError(
      `context "${contextName}" names cluster "${ctx.entry.cluster ?? ""}", which has no server in ${where}`,
      "Fix the kubeconfig",
    );
  const user = ctx.entry.user ? pick<UserEntry>(docs, "users", ctx.entry.user) : undefined;
  const c = cluster.entry;
  const tls: TlsOptions = {};
  if (c["certificate-authority-data"]) tls.ca = [b64(c["certificate-authority-data"])];
  else if (c["certificate-authority"]) tls.ca = [readRef(c["certificate-authority"], cluster.base, "certificate-authority")];
  if (c["insecure-skip-tls-verify"]) tls.insecure = true;
  const conn: KubeConnection = { server: c.server!.replace(/\/+$/, ""), context: contextName, tls };
  if (ctx.entry.namespace) conn.namespace = ctx.entry.namespace;
  if (user) applyUser(conn, user.entry, user.base, src.env ?? process.env);
  return conn;
}

function applyUser(conn: KubeConnection, u: UserEntry, base: string, env: NodeJS.ProcessEnv): void {
  if (u["client-certificate-data"]) conn.tls.cert = b64(u["client-certificate-data"]);
  else if (u["client-certificate"]) conn.tls.cert = readRef(u["client-certificate"], base, "client-certificate");
  if (u["client-key-data"]) conn.tls.key = b64(u["client-key-data"]);
  else if (u["client-key"]) conn.tls.key = readRef(u["client-key"], base, "client-key");
  if (u.token) conn.token = u.token;
  else if (u.tokenFile) conn.token = readRef(u.tokenFile, base, "tokenFile").trim();
  if (u.username && u.password !== undefined) conn.basic = { username: u.username, password: u.password };
  if (u.exec) applyExec(conn, u.exec, base, env);
}

/** Runs an exec credential plugin (aws eks get-token, gke-gcloud-auth-plugin, …) once. */
function applyExec(conn: KubeConnection, exec: NonNullable<UserEntry["exec"]>, base: string, env: NodeJS.ProcessEnv): void {
  const cmd = exec.command.includes("/") && !isAbsolute(exec.command) ? resolve(base, exec.command) : exec.command;
  let out: string;
  try {
    const extra = Object.fromEntries((exec.env ?? []).map((e) => [e.name, e.value]));
    const info = JSON.stringify({
      apiVersion: exec.apiVersion ?? "client.authentication.k8s.io/v1",
      kind: "ExecCredential",
      spec: { interactive: false },
    });
    out = execFileSync(cmd, exec.args ?? [], {
      env: { ...env, ...extra, KUBERNETES_EXEC_INFO: info },
      encoding: "utf8",
      timeout: 60_000,
      stdio: ["ignore", "pipe", "pipe"],
    });
  } catch (e) {
    throw configError(
      `the exec credential plugin ${exec.command} failed (${(e as Error).message.split("\n")[0]})`,
      "Run it by hand to see why",
    );
  }
  const status = (JSON.parse(out) as { status?: { token?: string; clientCertificateData?: string; clientKeyData?: string } }).status ?? {};
  if (status.token) conn.token = status.token;
  if (status.clientCertificateData) conn.tls.cert = status.clientCertificateData;
  if (status.clientKeyData) conn.tls.key = status.clientKeyData;
}
