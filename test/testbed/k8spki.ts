// The Kubernetes test bed's PKI, made with the real openssl: one CA, the apiserver's serving
// certificate for 127.0.0.1, a client certificate and kubeconfig per identity (admin, the
// apiserver's kubelet client, controller-manager, scheduler, each node), and the service-account
// key pair. EC P-256 throughout: a fraction of RSA's key-generation time, and Kubernetes takes it.
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { createCa, issue, openssl } from "./certs";

export interface K8sPki {
  dir: string;
  caFile: string;
  caKey: string;
  apiserverCert: string;
  apiserverKey: string;
  /** The apiserver's client certificate towards kubelets (logs, exec). */
  kubeletClientCert: string;
  kubeletClientKey: string;
  saKey: string;
  saPub: string;
  /** Cluster admin (O=system:masters). */
  adminKubeconfig: string;
  adminCert: string;
  adminKey: string;
}

/** `name`.crt/.key signed by the CA; a SAN list makes it a serving certificate too. */
function issueFor(dir: string, name: string, subject: string, san?: string): void {
  if (existsSync(join(dir, `${name}.crt`))) return;
  const ext = ["basicConstraints=CA:FALSE", "keyUsage=critical,digitalSignature,keyEncipherment"];
  ext.push(san ? "extendedKeyUsage=serverAuth,clientAuth" : "extendedKeyUsage=clientAuth");
  if (san) ext.push(`subjectAltName=${san}`);
  issue(dir, name, subject, `${ext.join("\n")}\n`);
}

function writeKubeconfig(dir: string, name: string, user: string, server: string): string {
  const file = join(dir, `${name}.kubeconfig`);
  const q = (s: string) => JSON.stringify(s);
  writeFileSync(
    file,
    [
      "apiVersion: v1",
      "kind: Config",
      "clusters:",
      "- name: imageyard",
      `  cluster: {server: ${q(server)}, certificate-authority: ${q(join(dir, "ca.crt"))}}`,
      "users:",
      `- name: ${q(user)}`,
      `  user: {client-certificate: ${q(join(dir, `${name}.crt`))}, client-key: ${q(join(dir, `${name}.key`))}}`,
      "contexts:",
      `- name: imageyard`,
      `  context: {cluster: imageyard, user: ${q(user)}}`,
      "current-context: imageyard",
      "",
    ].join("\n"),
    { mode: 0o600 },
  );
  return file;
}

/**
 * The control plane's certificates and kubeconfigs under `dir` (kept when already there; the
 * kubeconfigs are rewritten, since the apiserver's port can change between starts).
 * `serviceIp` is the `kubernetes` service's address, which in-cluster clients may dial.
 */
export function ensureK8sPki(dir: string, server: string, serviceIp: string): K8sPki {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  if (!existsSync(join(dir, "ca.crt"))) {
    createCa(dir, "/CN=imageyard kubernetes CA");
  }
  const names = ["kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"];
  issueFor(
    dir,
    "apiserver",
    "/CN=kube-apiserver",
    ["IP:127.0.0.1", "DNS:localhost", `IP:${serviceIp}`, ...names.map((n) => `DNS:${n}`)].join(","),
  );
  issueFor(dir, "admin", "/O=system:masters/CN=imageyard-admin");
  issueFor(dir, "apiserver-kubelet-client", "/O=system:masters/CN=kube-apiserver-kubelet-client");
  issueFor(dir, "controller-manager", "/CN=system:kube-controller-manager");
  issueFor(dir, "scheduler", "/CN=system:kube-scheduler");
  if (!existsSync(join(dir, "sa.key"))) {
    openssl(["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "sa.key"], dir);
    openssl(["ec", "-in", "sa.key", "-pubout", "-out", "sa.pub"], dir);
  }
  writeKubeconfig(dir, "controller-manager", "system:kube-controller-manager", server);
  writeKubeconfig(dir, "scheduler", "system:kube-scheduler", server);
  return {
    dir,
    caFile: join(dir, "ca.crt"),
    caKey: join(dir, "ca.key"),
    apiserverCert: join(dir, "apiserver.crt"),
    apiserverKey: join(dir, "apiserver.key"),
    kubeletClientCert: join(dir, "apiserver-kubelet-client.crt"),
    kubeletClientKey: join(dir, "apiserver-kubelet-client.key"),
    saKey: join(dir, "sa.key"),
    saPub: join(dir, "sa.pub"),
    adminKubeconfig: writeKubeconfig(dir, "admin", "imageyard-admin", server),
    adminCert: join(dir, "admin.crt"),
    adminKey: join(dir, "admin.key"),
  };
}

/** A node's identity (system:node:NAME in system:nodes, what the Node authorizer wants). */
export function ensureNodeKubeconfig(pki: K8sPki, node: string, server: string): string {
  issueFor(pki.dir, `node-${node}`, `/O=system:nodes/CN=system:node:${node}`);
  return writeKubeconfig(pki.dir, `node-${node}`, `system:node:${node}`, server);
}

export function kubeconfigOf(pki: K8sPki, name: "controller-manager" | "scheduler"): string {
  return join(pki.dir, `${name}.kubeconfig`);
}
