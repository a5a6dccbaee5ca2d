// What the compiled CLI loads before it does anything: start-up is most of a no-op copy, so
// modules a copy over HTTP/1.1 never uses must stay unloaded, and deferring them must not break
// the rare path that does use them. Runs the compiled files in a fresh node, as a user would.
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { ensureCerts } from "../../testbed/certs";
import { defaultStateDir } from "../../testbed/registry";

const dist = join(__dirname, "..", "..", "..", "dist");
const cli = join(dist, "cli", "imageyard.js");

function node(script: string, env: NodeJS.ProcessEnv = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, ["-e", script], { env: { ...process.env, ...env }, timeout: 60_000 }, (err, stdout, stderr) =>
      err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(stdout),
    );
  });
}

beforeAll(() => {
  if (!existsSync(cli)) throw new Error(`${cli} is missing: build first (npx tsc -p .)`);
});

describe("CLI start-up", () => {
  it("loads neither node:http2 nor node:child_process (nor tls, dgram behind them) until something needs them", async () => {
    const copy = join(dist, "provider", "oci", "copy.js");
    const out = await node(`require(${JSON.stringify(copy)}); console.log(JSON.stringify(process.moduleLoadList))`);
    const loaded = (JSON.parse(out) as string[]).filter((m) => m.startsWith("NativeModule ")).map((m) => m.slice("NativeModule ".length));
    expect(loaded).toContain("net");
    expect(loaded.filter((m) => /^(http2|child_process|dgram|tls|_tls_wrap)$/.test(m))).toEqual([]);
  });

  it("loads the layout and archive stores only for a copy that uses them", async () => {
    const copy = join(dist, "provider", "oci", "copy.js");
    const out = await node(`require(${JSON.stringify(copy)}); console.log(JSON.stringify(Object.keys(require.cache)))`);
    expect((JSON.parse(out) as string[]).filter((m) => /[/\\]oci[/\\](archive|archiveRead|layout|tar)\.js$/.test(m))).toEqual([]);
  });

  it("answers --version without loading the copy engine or undici", async () => {
    const script = `process.argv.push("--version"); require(${JSON.stringify(cli)}).main(["--version"]).then(() =>
      console.error(JSON.stringify(Object.keys(require.cache))))`;
    const out = await new Promise<{ stdout: string; stderr: string }>((resolve, reject) =>
      execFile(process.execPath, ["-e", script], { timeout: 60_000 }, (err, stdout, stderr) =>
        err ? reject(err) : resolve({ stdout, stderr }),
      ),
    );
    expect(out.stdout.trim()).toMatch(/^\d+\.\d+\.\d+/);
    const modules = JSON.parse(out.stderr) as string[];
    expect(modules.filter((m) => /[/\\](undici[/\\]|oci[/\\](copy|plan|registry)\.js)/.test(m))).toEqual([]);
  });

  it("still speaks HTTP/2 through undici when asked to, loading the deferred module on first use", async () => {
    const certs = ensureCerts(join(defaultStateDir(), "registry", "certs"));
    const script = `
      const client = require(${JSON.stringify(join(dist, "provider", "http", "client.js"))});
      const before = process.moduleLoadList.some((m) => m === "NativeModule http2");
      const fs = require("node:fs");
      const http2 = require("node:http2");
      const server = http2.createSecureServer({ cert: fs.readFileSync(process.env.CERT), key: fs.readFileSync(process.env.KEY) }, (req, res) => res.end("over " + req.httpVersion));
      server.listen(0, "127.0.0.1", async () => {
        const Client = require("undici/lib/dispatcher/client");
        const c = new Client("https://127.0.0.1:" + server.address().port, { allowH2: true, connect: { ca: fs.readFileSync(process.env.CA) } });
        const res = await client.send({ method: "GET", url: "https://127.0.0.1:" + server.address().port + "/", ok: [200], operation: "h2 check", dispatcher: c });
        let body = "";
        for await (const chunk of res.body) body += chunk;
        console.log(JSON.stringify({ before, body }));
        process.exit(0);
      });`;
    const out = JSON.parse(await node(script, { CERT: certs.serverCert, KEY: certs.serverKey, CA: certs.caFile })) as {
      before: boolean;
      body: string;
    };
    expect(out).toEqual({ before: false, body: "over 2.0" });
  });
});
