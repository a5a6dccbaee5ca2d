#!/usr/bin/env bash
# Runs bench/prepull.ts: N images onto the Kubernetes test bed's nodes, PrePullSet against the
# BOSH import-images way (crictl pull image after image, node after node). Arguments go to it:
#   scripts/bench-prepull.sh [--images 8] [--layer-size 16M] [--runs 3]
# Needs the bed's binaries (scripts/k8s-build.sh ensure) and the agent (scripts/build-agent.sh).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$IY_ROOT"
scripts/build-agent.sh >/dev/null
tsc -p tsconfig.json >&2 || iy_log "tsc reported errors elsewhere in the tree; running the compiled bench anyway"
exec node dist/bench/prepull.js "$@"
