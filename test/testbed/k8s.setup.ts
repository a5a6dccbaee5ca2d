// vitest globalSetup for the Kubernetes test bed. It starts nothing: the bed's binaries and
// processes are big, so only tests that need it start it (useK8sTestbed() in their beforeAll),
// under the lease named here. The teardown releases that lease; the last one out stops the bed
// unless IY_KEEP_TESTBED=1 or `scripts/k8sbed.sh up` holds a lease.
import { releaseK8sTestbed } from "./k8s";
import { defaultStateDir } from "./processes";

export default function setup(): () => Promise<void> {
  const stateDir = defaultStateDir();
  process.env.IY_STATE_DIR = stateDir;
  // Workers inherit these: their leases last as long as this (the main vitest) process.
  const lease = `vitest-${process.pid}`;
  process.env.IY_K8S_LEASE = lease;
  process.env.IY_K8S_LEASE_PID = String(process.pid);
  return async () => {
    await releaseK8sTestbed(stateDir, lease);
  };
}
