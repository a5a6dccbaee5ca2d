#!/usr/bin/env bash
# Runs bench/glance.ts: imageyard's disk pipeline + Glance upload against the azimuth-ops
# sequence (curl, qemu-img convert -O raw, openstack image create). Arguments go to the bench:
#   scripts/bench-glance.sh [--runs 3] [--size-gib 2] [--data-fraction 0.6] [--upload glance|none]
# The Keystone + Glance test bed must be up (or OS_* set) unless --upload none.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$IY_ROOT"
command -v /usr/bin/time >/dev/null || iy_die "GNU time (/usr/bin/time) is needed; run scripts/bootstrap.sh"
tsc -p tsconfig.json >&2 || iy_log "tsc reported errors elsewhere in the tree; running the compiled bench anyway"
exec node dist/bench/glance.js "$@"
