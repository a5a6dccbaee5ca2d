// Test-bed PKI made with the real openssl: a CA, a server certificate for 127.0.0.1/localhost, a
// token-signing certificate the token registry trusts, and a skopeo-style cert dir (only ca.crt).
// Generated once per state dir and reused, so certificates stay stable while registries run.
import { execFileSync } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";

export interface TestbedCerts {
  dir: string;
  caFile: string;
  caKey: string;
  serverCert: string;
  serverKey: string;
  /** Certificate + key that sign bearer tokens; the token registry's rootcertbundle holds it. */
  tokenCert: string;
  tokenKey: string;
  /** What `auth.token.rootcertbundle` points at (token cert + CA). */
  rootBundle: string;
  /** skopeo/containers cert dir: holds only ca.crt. */
  certDir: string;
}

/** Runs openssl in `cwd`; its own words on failure. Shared by the registry and Kubernetes PKIs. */
export function openssl(args: string[], cwd: string): void {
  try {
    execFileSync("openssl", args, { cwd, stdio: ["ignore", "pipe", "pipe"] });
  } catch (e) {
    const err = e as { stderr?: Buffer };
    throw new Error(
      `openssl ${args[0]} in ${cwd}: ${err.stderr?.toString().trim() ?? String(e)}. Check that openssl 3 is installed (scripts/bootstrap.sh).`,
    );
  }
}

export const EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];

/** A self-signed EC CA, ca.crt + ca.key in `dir`. */
export function createCa(dir: string, subject: string): void {
  openssl(
    ["req", "-x509", ...EC, "-keyout", "ca.key", "-out", "ca.crt", "-days", "3650", "-sha256", "-subj", subject].concat([
      "-addext",
      "basicConstraints=critical,CA:TRUE",
      "-addext",
      "keyUsage=critical,keyCertSign,cRLSign",
    ]),
    dir,
  );
}

/** Signs `name`.key's CSR with the CA (ca.crt/ca.key in `dir`), adding the extensions in `ext`. */
export function issue(dir: string, name: string, subject: string, ext: string): void {
  openssl(["req", "-new", ...EC, "-keyout", `${name}.key`, "-out", `${name}.csr`, "-subj", subject], dir);
  writeFileSync(join(dir, `${name}.ext`), ext);
  openssl(
    [
      "x509",
      "-req",
      "-in",
      `${name}.csr`,
      "-CA",
      "ca.crt",
      "-CAkey",
      "ca.key",
      "-CAcreateserial",
      "-days",
      "3650",
      "-sha256",
      "-out",
      `${name}.crt`,
      "-extfile",
      `${name}.ext`,
    ],
    dir,
  );
  rmSync(join(dir, `${name}.csr`));
  rmSync(join(dir, `${name}.ext`), { force: true });
}

/** Creates the PKI under `dir` unless a complete one is already there. */
export function ensureCerts(dir: string): TestbedCerts {
  const certs: TestbedCerts = {
    dir,
    caFile: join(dir, "ca.crt"),
    caKey: join(dir, "ca.key"),
    serverCert: join(dir, "server.crt"),
    serverKey: join(dir, "server.key"),
    tokenCert: join(dir, "token.crt"),
    tokenKey: join(dir, "token.key"),
    rootBundle: join(dir, "token-bundle.crt"),
    certDir: join(dir, "certs.d"),
  };
  const done = join(dir, ".complete");
  if (existsSync(done)) return certs;
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  createCa(dir, "/CN=imageyard test CA");
  issue(
    dir,
    "server",
    "/CN=localhost",
    "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
  );
  issue(dir, "token", "/CN=imageyard test token signer", "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n");
  writeFileSync(certs.rootBundle, readFileSync(certs.tokenCert, "utf8") + readFileSync(certs.caFile, "utf8"));
  mkdirSync(certs.certDir, { recursive: true });
  copyFileSync(certs.caFile, join(certs.certDir, "ca.crt"));
  writeFileSync(done, `${new Date().toISOString()}\n`);
  return certs;
}
