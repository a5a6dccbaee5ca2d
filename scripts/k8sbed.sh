#!/usr/bin/env bash
# Starts, stops, describes or changes the Kubernetes test bed (a real cluster on 127.0.0.1: etcd,
# control plane, node1 on containerd 1.6, node2 on containerd v2; state in $IY_STATE_DIR/k8s):
#   scripts/k8sbed.sh up | down | status [--json] | rss
#   scripts/k8sbed.sh add-node NAME [--runtime containerd1|containerd2] | stop-node NAME | remove-node NAME
# `up` holds a lease, so vitest runs reuse the running bed and leave it up. The binaries come
# from scripts/k8s-build.sh ensure.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$IY_ROOT"
cli=dist/test/testbed/k8scli.js
if [ ! -f "$cli" ] || [ -n "$(find test/testbed provider/http provider/oci -name '*.ts' -newer "$cli" 2>/dev/null | head -1)" ]; then
  iy_log "compiling TypeScript to dist/"
  nice tsc -p tsconfig.json >&2 || iy_log "tsc reported errors (see above); running what it emitted"
  [ -f "$cli" ] || iy_die "tsc did not emit $cli"
fi
exec node "$cli" "$@"
