#!/usr/bin/env bash
# Runs the Glance benches against the azimuth-ops sequence (curl, qemu-img convert -O raw,
# openstack image create --file):
#   scripts/bench-glance.sh [--runs 3] [--size-gib 2] [--data-fraction 0.6] [--upload glance|none]
#       bench/glance.ts: one image through the CommunityImage pipeline (publishImage)
#   scripts/bench-glance.sh catalog [--images 4] [--versions 2] [--size-mib 512] [--data-fraction 0.5] [--runs 3]
#       bench/glanceCatalog.ts: a catalog of images × versions by `pulumi up` (ImageCatalog), against
#       the sequence run image after image
# The Keystone + Glance test bed must be up (or OS_* set) unless --upload none.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$IY_ROOT"
command -v /usr/bin/time >/dev/null || iy_die "GNU time (/usr/bin/time) is needed; run scripts/bootstrap.sh"
bench=glance
if [ "${1:-}" = catalog ]; then
  bench=glanceCatalog
  shift
  "$IY_ROOT/scripts/pulumi.sh" ensure
fi
tsc -p tsconfig.json >&2 || iy_log "tsc reported errors elsewhere in the tree; running the compiled bench anyway"
exec node "dist/bench/$bench.js" "$@"
