// Connection reuse against the real registries of the test bed. A copy's plan HEADs every blob and a
// preview HEADs every image: when each HEAD costs a new TCP (and TLS) connection, connecting is the
// largest single CPU cost of a small copy.
import { subscribe, unsubscribe } from "node:diagnostics_channel";
import { randomBytes } from "node:crypto";
import { afterEach, beforeAll, describe, expect, it } from "vitest";
import { RegistryClient, type RegistryOptions } from "../../../../provider/oci/registry";
import { knownScheme } from "../../../../provider/oci/transport";
import { seedImage, type SeededImage } from "../../../testbed/images";
import { loadRegistryTestbed, type RegistryEndpoint, type RegistryTestbed } from "../../../testbed/registry";

const run = `ka-${Date.now().toString(36)}-${randomBytes(2).toString("hex")}`;
let tb: RegistryTestbed;
let image: SeededImage;

/** Counts TCP connections opened to `host` while it runs. */
const connections: string[] = [];
const onConnected = (m: unknown) => {
  const { connectParams } = m as { connectParams: { host: string; protocol: string } };
  connections.push(`${connectParams.protocol}//${connectParams.host}`);
};

beforeAll(async () => {
  tb = loadRegistryTestbed();
  image = await seedImage(tb.registries.upstream, `${run}/app:v1`, { layers: 3, layerSize: "16K", seed: "keepalive" });
  await seedImage(tb.registries.tls, `${run}/app:v1`, { layers: 3, layerSize: "16K", seed: "keepalive" });
  subscribe("undici:client:connected", onConnected);
});

afterEach(() => {
  connections.length = 0;
});

function opened(ep: RegistryEndpoint): number {
  return connections.filter((c) => c.endsWith(`//${ep.host}`)).length;
}

describe.each([
  ["plain http, anonymous", "upstream" as const],
  ["https with htpasswd", "tls" as const],
])("HEAD keeps the connection (%s)", (_what, name) => {
  it("ten HEADs in a row (manifests and blobs) open at most two connections, not one each", async () => {
    const ep = tb.registries[name];
    const opts: RegistryOptions = {
      dockerConfig: false,
      scheme: ep.scheme,
      ...(ep.username ? { credentials: { username: ep.username, password: ep.password! } } : {}),
      ...(ep.scheme === "https" ? { certDir: tb.certDir } : {}),
    };
    const client = new RegistryClient(ep.host, opts);
    const blobs = image.blobs.slice(0, 3);
    for (let i = 0; i < 5; i++) expect((await client.headManifest(`${run}/app`, "v1"))?.digest).toBe(image.digest);
    for (const b of [...blobs, ...blobs]) expect(await client.headBlob(`${run}/app`, b.digest)).toBe(b.size);
    // The pool may open a second connection when a request follows the previous one within the
    // same turn of the event loop (undici hands a socket back a turn later); one per HEAD is the fault.
    expect(opened(ep)).toBeGreaterThanOrEqual(1);
    expect(opened(ep)).toBeLessThanOrEqual(2);
  });
});

describe("settling a loopback registry's scheme", () => {
  it("takes a plain-HTTP registry as http without a TLS attempt, and still finds https on the TLS one", async () => {
    // A failed TLS handshake is a connectError, not a connection.
    const attempts: string[] = [];
    const onAttempt = (m: unknown) => {
      const { connectParams } = m as { connectParams: { host: string; protocol: string } };
      attempts.push(`${connectParams.protocol}//${connectParams.host}`);
    };
    subscribe("undici:client:connectError", onAttempt);
    subscribe("undici:client:connected", onAttempt);
    try {
      const plain = tb.registries.upstream;
      const client = new RegistryClient(plain.host, { dockerConfig: false });
      expect((await client.headManifest(`${run}/app`, "v1"))?.digest).toBe(image.digest);
      expect(knownScheme(plain.host)).toBe("http");
      expect(attempts.filter((a) => a === `https://${plain.host}`)).toEqual([]);

      const secure = tb.registries.tls;
      const tlsClient = new RegistryClient(secure.host, {
        dockerConfig: false,
        certDir: tb.certDir,
        credentials: { username: secure.username!, password: secure.password! },
      });
      expect((await tlsClient.headManifest(`${run}/app`, "v1"))?.digest).toBe(image.digest);
      expect(knownScheme(secure.host)).toBe("https");
    } finally {
      unsubscribe("undici:client:connectError", onAttempt);
      unsubscribe("undici:client:connected", onAttempt);
    }
  });
});

process.on("exit", () => unsubscribe("undici:client:connected", onConnected));
