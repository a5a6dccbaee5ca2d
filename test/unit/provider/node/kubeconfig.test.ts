// Finding and reading a kubeconfig as kubectl does: KUBECONFIG lists merged (first wins), the
// given context over current-context, paths relative to the file that names them, inline data.
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { loadKubeconfig } from "../../../../provider/node/kubeconfig";
import { caught } from "../../../support/caught";

const dir = mkdtempSync(join(tmpdir(), "kubeconfig-"));
writeFileSync(join(dir, "ca.pem"), "CA-FROM-FILE");
const a = join(dir, "a.yaml");
const b = join(dir, "b.yaml");
writeFileSync(
  a,
  `
apiVersion: v1
kind: Config
current-context: bed
clusters:
- name: bed
  cluster: { server: "https://127.0.0.1:6443/", certificate-authority: ca.pem }
users:
- name: admin
  user: { client-certificate-data: ${Buffer.from("CERT").toString("base64")}, client-key-data: ${Buffer.from("KEY").toString("base64")} }
contexts:
- name: bed
  context: { cluster: bed, user: admin, namespace: tools }
`,
);
writeFileSync(
  b,
  `
current-context: other
clusters:
- name: bed
  cluster: { server: "https://shadowed:1" }
- name: prod
  cluster: { server: "https://prod:6443", insecure-skip-tls-verify: true }
users:
- name: robot
  user: { token: abc123 }
contexts:
- name: prod
  context: { cluster: prod, user: robot }
`,
);

describe("loadKubeconfig", () => {
  it("merges KUBECONFIG files: the first file's current-context and entries win", () => {
    const c = loadKubeconfig({ env: { KUBECONFIG: `${a}:${b}` } });
    expect(c).toMatchObject({
      server: "https://127.0.0.1:6443",
      context: "bed",
      namespace: "tools",
      tls: { ca: ["CA-FROM-FILE"], cert: "CERT", key: "KEY" },
    });
  });

  it("uses the given context, found in a later file", () => {
    const c = loadKubeconfig({ context: "prod", env: { KUBECONFIG: `${a}:${b}` } });
    expect(c).toMatchObject({ server: "https://prod:6443", token: "abc123", tls: { insecure: true } });
  });

  it("reads a kubeconfig document given as input (JSON too) before any file", () => {
    const doc = JSON.stringify({
      "current-context": "x",
      clusters: [{ name: "c", cluster: { server: "https://json:1" } }],
      contexts: [{ name: "x", context: { cluster: "c" } }],
    });
    expect(loadKubeconfig({ kubeconfig: doc, env: { KUBECONFIG: a } }).server).toBe("https://json:1");
  });

  it("falls back to ~/.kube/config and says where it looked when nothing is found", async () => {
    const e = await caught((async () => loadKubeconfig({ env: { HOME: dir } }))());
    expect(e.message).toMatch(/no kubeconfig given and none found \(.*\.kube\/config\)/);
  });

  it("names the missing context and lists the ones there are", async () => {
    const e = await caught((async () => loadKubeconfig({ context: "nope", env: { KUBECONFIG: `${a}:${b}` } }))());
    expect(e.message).toMatch(/context "nope" not found.*Use one of: bed, prod/);
  });
});
