#!/usr/bin/env bash
# Runs bench/preview.ts: `pulumi preview` of a stack of N MirroredImages whose upstream has not
# changed (default 200), median of --runs (default 3), with the registry requests it made.
#   scripts/bench-preview.sh [--images 200] [--runs 3]
# Needs the Pulumi toolchain (scripts/pulumi.sh ensure builds it once) and joins or starts the
# registry test bed.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$IY_ROOT"
"$IY_ROOT/scripts/pulumi.sh" ensure
tsc -p tsconfig.json >&2 || iy_log "tsc reported errors elsewhere in the tree; running the compiled bench anyway"
exec node dist/bench/preview.js "$@"
