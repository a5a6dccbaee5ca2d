#!/usr/bin/env bash
# Runs bench/manifest.ts: an Atmosphere-style ImageManifest of N small images mirrored by
# `pulumi up` against Atmosphere's way (`crane copy` image after image), then the no-op preview.
#   scripts/bench-manifest.sh [--images 30] [--runs 3] [--layer-size 256K]
# Needs the Pulumi toolchain (scripts/pulumi.sh ensure) and crane (scripts/crane.sh ensure), both
# built once from the Go module proxy; starts its own two registries of the registry test bed.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$IY_ROOT"
command -v /usr/bin/time >/dev/null || iy_die "GNU time (/usr/bin/time) is needed; run scripts/bootstrap.sh"
"$IY_ROOT/scripts/pulumi.sh" ensure
"$IY_ROOT/scripts/crane.sh" ensure >/dev/null
tsc -p tsconfig.json >&2 || iy_log "tsc reported errors elsewhere in the tree; running the compiled bench anyway"
exec node dist/bench/manifest.js "$@"
