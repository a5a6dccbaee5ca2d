#!/usr/bin/env bash
# Benchmarks against the peer tools.  scripts/bench.sh mirror [cases…]
#   mirror: imageyard copy vs skopeo copy (bench/mirror.ts; cases 1g-8layers 4g-8layers 20x1m
#           multiarch noop; RUNS=3 and the sizes are set by environment, see bench/mirror.ts).
# Starts (or joins) the registry test bed; needs root for skopeo's isolated blob-info cache.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$IY_ROOT"
what=${1:-}
[ -n "$what" ] || iy_die "usage: scripts/bench.sh mirror [cases…]"
shift
command -v /usr/bin/time >/dev/null || iy_die "GNU time (/usr/bin/time) is needed; run scripts/bootstrap.sh"
command -v skopeo >/dev/null || iy_die "skopeo is needed; run scripts/bootstrap.sh"
tsc -p tsconfig.json >&2 || iy_log "tsc reported errors elsewhere in the tree; running what it emitted"
case "$what" in
  mirror) exec node dist/bench/mirror.js "$@" ;;
  *) iy_die "unknown bench '$what' (known: mirror)" ;;
esac
