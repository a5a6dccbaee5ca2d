// `imageyard verify-mirror-use` as a pipeline step: flags map onto verifyMirrorUse, offenders are
// printed one a line, the exit status is 1 when any pod does not use the mirror and 0 otherwise,
// --json gives the whole report. The API server is the in-process fake (test/support/fakekube.ts).
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { parseCommand } from "../../../cli/args";
import { main } from "../../../cli/imageyard";
import type { MirrorUseReport } from "../../../provider/node/mirrorUse";
import type { Pod } from "../../../provider/node/status";
import { FakeKube, pullsSucceed } from "../../support/fakekube";

let kube: FakeKube;
let kubeconfig: string;
beforeEach(async () => {
  kube = await new FakeKube(pullsSucceed).start();
  kubeconfig = join(mkdtempSync(join(tmpdir(), "iy-verify-")), "config");
  writeFileSync(kubeconfig, kube.kubeconfig());
});
afterEach(async () => {
  await kube.close();
});

function addPod(namespace: string, name: string, image: string): void {
  kube.pods.set(`${namespace}/${name}`, { metadata: { name, namespace }, spec: { containers: [{ name: "c", image }] } } as unknown as Pod);
}

async function run(argv: string[]): Promise<{ status: number; out: string; err: string }> {
  let out = "";
  let err = "";
  const status = await main(argv, { stdout: (t) => (out += t), stderr: (t) => (err += t) });
  return { status, out, err };
}

describe("imageyard verify-mirror-use", () => {
  it("parses repeated and comma-listed mirrors and namespaces", () => {
    expect(
      parseCommand([
        "verify-mirror-use",
        "--mirror",
        "a:5000/m,b.local",
        "--mirror=c.local/x",
        "--namespace",
        "apps,db",
        "--context",
        "prod",
        "--kubeconfig",
        "/k",
        "--require-digest",
        "--json",
      ]),
    ).toEqual({
      kind: "verify-mirror-use",
      json: true,
      options: {
        mirror: ["a:5000/m", "b.local", "c.local/x"],
        namespaces: ["apps", "db"],
        context: "prod",
        kubeconfig: "/k",
        requireDigest: true,
      },
    });
  });

  it("exits 0 with no output on stdout when every pod runs from the mirror", async () => {
    addPod("default", "web", "127.0.0.1:5001/team/app:v1");
    const r = await run(["verify-mirror-use", "--mirror", "127.0.0.1:5001", "--kubeconfig", kubeconfig]);
    expect(r).toEqual({ status: 0, out: "", err: "1 pod, 1 container: all from the mirror\n" });
  });

  it("exits 1 and prints each offender when a pod pulls from elsewhere", async () => {
    addPod("default", "web", "127.0.0.1:5001/team/app:v1");
    addPod("default", "db", "postgres:16");
    const r = await run(["verify-mirror-use", "--mirror", "127.0.0.1:5001", "--kubeconfig", kubeconfig]);
    expect(r.status).toBe(1);
    expect(r.out).toBe("default/db c: postgres:16: served from docker.io, not the mirror (127.0.0.1:5001)\n");
    expect(r.err).toMatch(/2 pods, 2 containers: 1 container in 1 pod not served from the mirror/);
  });

  it("prints the whole report with --json, and still exits 1 on an offender", async () => {
    addPod("default", "db", "postgres:16");
    const r = await run(["verify-mirror-use", "--mirror", "127.0.0.1:5001", "--kubeconfig", kubeconfig, "--json"]);
    expect(r.status).toBe(1);
    const report = JSON.parse(r.out) as MirrorUseReport;
    expect(report).toMatchObject({ ok: false, pods: 1, containers: [{ pod: "db", image: "postgres:16", fromMirror: false }] });
  });

  it("exits 2 without --mirror, and 1 naming the file when the kubeconfig is missing", async () => {
    expect((await run(["verify-mirror-use", "--kubeconfig", kubeconfig])).status).toBe(2);
    const r = await run(["verify-mirror-use", "--mirror", "r.local", "--kubeconfig", "/nonexistent/kubeconfig"]);
    expect(r.status).toBe(1);
    expect(r.err).toMatch(/\/nonexistent\/kubeconfig does not exist.*\[INVALID_INPUT\]/);
  });
});
