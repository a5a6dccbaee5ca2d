import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createServer as createHttpServer } from "node:http";
import { createServer as createNetServer, type AddressInfo, type Server } from "node:net";
import { createServer as createTlsServer } from "node:tls";
import { readFileSync } from "node:fs";
import { ensureCerts } from "../../../testbed/certs";
import { defaultStateDir } from "../../../testbed/registry";
import { isStream, probePlainHttp, stripQuery, tlsError, tlsOptions } from "../../../../provider/oci/transport";

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "iy-certdir-"));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("tlsOptions", () => {
  it("is undefined without tls or certDir, so the shared default dispatcher is used", () => {
    expect(tlsOptions({})).toBeUndefined();
  });

  it("reads every *.crt in a certDir as a CA, after the explicit ones, and a *.cert/*.key pair as the client certificate", () => {
    const d = join(dir, "pair");
    mkdirSync(d);
    writeFileSync(join(d, "b.crt"), "CA-B");
    writeFileSync(join(d, "a.crt"), "CA-A");
    writeFileSync(join(d, "client.cert"), "CERT");
    writeFileSync(join(d, "client.key"), "KEY");
    writeFileSync(join(d, "README"), "ignored");
    expect(tlsOptions({ certDir: d, tls: { ca: ["EXPLICIT"] } })).toEqual({ ca: ["EXPLICIT", "CA-A", "CA-B"], cert: "CERT", key: "KEY" });
  });

  it("refuses a client certificate without its key, and a certDir that cannot be read", () => {
    const d = join(dir, "nokey");
    mkdirSync(d);
    writeFileSync(join(d, "client.cert"), "CERT");
    expect(() => tlsOptions({ certDir: d })).toThrow(/client\.cert has no matching client\.key/);
    expect(() => tlsOptions({ certDir: join(dir, "absent") })).toThrow(/read certDir .*absent/);
  });

  it("keeps insecure as given", () => {
    expect(tlsOptions({ tls: { insecure: true } })).toEqual({ insecure: true, ca: [] });
  });
});

describe("tlsError", () => {
  it("turns a certificate verification failure anywhere in the cause chain into TLS_ERROR with what to do", () => {
    const e = tlsError({ code: "NETWORK_ERROR", cause: { code: "SELF_SIGNED_CERT_IN_CHAIN" } }, "pull h/r:t", "h");
    expect(e?.code).toBe("TLS_ERROR");
    expect(e?.message).toBe(
      "pull h/r:t: the registry's TLS certificate is not trusted (SELF_SIGNED_CERT_IN_CHAIN). Give the registry's CA (tls ca or certDir) for h, or set insecure for it explicitly.",
    );
  });

  it("leaves other network errors alone", () => {
    expect(tlsError({ code: "ECONNREFUSED" }, "x", "h")).toBeUndefined();
    expect(tlsError(undefined, "x", "h")).toBeUndefined();
  });
});

describe("small helpers", () => {
  it("isStream tells streaming bodies (not replayable) from buffers", () => {
    expect(isStream(Readable.from([]))).toBe(true);
    expect(isStream(Buffer.from("x"))).toBe(false);
    expect(isStream(null)).toBe(false);
    expect(isStream("s")).toBe(false);
  });

  it("stripQuery drops the query for request logs", () => {
    expect(stripQuery("http://h/v2/x?_state=s&digest=d")).toBe("http://h/v2/x");
    expect(stripQuery("http://h/v2/")).toBe("http://h/v2/");
  });
});

describe("probePlainHttp", () => {
  async function listening(server: Server): Promise<string> {
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    return `127.0.0.1:${(server.address() as AddressInfo).port}`;
  }
  const servers: Server[] = [];
  afterAll(() => {
    for (const s of servers) s.close();
  });
  const serve = (s: Server) => {
    servers.push(s);
    return listening(s);
  };

  it("says http for a server that answers the start of a TLS handshake in plain HTTP", async () => {
    const host = await serve(createHttpServer((_req, res) => res.end("ok")));
    expect(await probePlainHttp(host)).toBe("http");
  });

  it("says nothing for a TLS server, a server that closes, a closed port, or a host without a port", async () => {
    const certs = ensureCerts(join(defaultStateDir(), "registry", "certs"));
    const tls = await serve(createTlsServer({ cert: readFileSync(certs.serverCert), key: readFileSync(certs.serverKey) }, (s) => s.end()));
    const closer = await serve(createNetServer((s) => s.destroy()));
    const gone = await serve(createNetServer());
    servers.pop()!.close();
    expect(await probePlainHttp(tls)).toBeUndefined();
    expect(await probePlainHttp(closer)).toBeUndefined();
    expect(await probePlainHttp(gone)).toBeUndefined();
    expect(await probePlainHttp("localhost")).toBeUndefined();
  });
});
