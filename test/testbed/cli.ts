// `node dist/test/testbed/cli.js up|down|status [--json] [--show-passwords]` (scripts/testbed.sh wraps it): starts,
// stops or describes the registry test bed for the demo, the benches and manual poking.
import {
  defaultStateDir,
  loadRegistryTestbed,
  startRegistryTestbed,
  stopRegistryTestbed,
  type RegistryEndpoint,
  type RegistryTestbed,
} from "./registry";

function describe(tb: RegistryTestbed, showPasswords: boolean): string {
  const rows: string[] = [];
  const secret = (p: string | undefined) => (showPasswords ? p : "***");
  const creds = (r: RegistryEndpoint) => (r.username ? `${r.username}:${secret(r.password)}` : "anonymous");
  for (const r of Object.values(tb.registries)) {
    rows.push(`${r.name.padEnd(9)} ${r.url.padEnd(24)} auth=${r.auth.padEnd(8)} ${creds(r)}`);
    if (r.certDir) rows.push(`${"".padEnd(9)} ca=${r.caFile}  cert-dir=${r.certDir}`);
    if (r.pullUser)
      rows.push(
        `${"".padEnd(9)} pull-only=${r.pullUser.username}:${secret(r.pullUser.password)}  realm=${r.tokenRealm} service=${r.tokenService}`,
      );
  }
  rows.push(`realm     ${tb.tokenServer.realm}`);
  rows.push(`state     ${tb.dir}/testbed.json${showPasswords ? "" : "  (passwords: --show-passwords, or read it)"}`);
  return rows.join("\n");
}

async function main(argv: string[]): Promise<number> {
  const cmd = argv[0];
  const json = argv.includes("--json");
  const show = argv.includes("--show-passwords");
  const stateDir = defaultStateDir();
  if (cmd === "up") {
    const tb = await startRegistryTestbed(stateDir, { lease: "cli", persistent: true });
    process.stdout.write(`${json ? JSON.stringify(tb, null, 2) : describe(tb, show)}\n`);
    return 0;
  }
  if (cmd === "down") {
    await stopRegistryTestbed(stateDir);
    process.stdout.write("registry test bed stopped\n");
    return 0;
  }
  if (cmd === "status") {
    let tb: RegistryTestbed;
    try {
      tb = loadRegistryTestbed(stateDir);
    } catch (e) {
      process.stdout.write(`${(e as Error).message}\n`);
      return 1;
    }
    process.stdout.write(`${json ? JSON.stringify(tb, null, 2) : describe(tb, show)}\n`);
    return 0;
  }
  process.stderr.write("usage: testbed.sh up|down|status [--json] [--show-passwords]\n");
  return 2;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (e: unknown) => {
    process.stderr.write(`testbed: ${(e as Error).message}\n`);
    process.exit(1);
  },
);
