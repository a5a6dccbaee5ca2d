// vitest globalSetup: starts the registry test bed (or joins the one already running for this
// state dir) under a lease of this run; the teardown releases the lease, and the last one out
// stops the registries unless IY_KEEP_TESTBED=1 or `scripts/testbed.sh up` holds a lease.
import { defaultStateDir, releaseRegistryTestbed, startRegistryTestbed } from "./registry";

export default async function setup(): Promise<() => Promise<void>> {
  const stateDir = defaultStateDir();
  // Workers read the same state dir through loadRegistryTestbed().
  process.env.IY_STATE_DIR = stateDir;
  const lease = `vitest-${process.pid}`;
  await startRegistryTestbed(stateDir, { lease });
  return async () => {
    await releaseRegistryTestbed(stateDir, lease);
  };
}
