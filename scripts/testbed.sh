#!/usr/bin/env bash
# Starts, stops or describes the registry test bed (four registries + a token server on
# 127.0.0.1, state under $IY_STATE_DIR/registry):  scripts/testbed.sh up|down|status [--json] [--show-passwords]
# `up` holds a lease, so vitest runs reuse the running test bed and leave it up.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$IY_ROOT"
cli=dist/test/testbed/cli.js
if [ ! -f "$cli" ] || [ -n "$(find test/testbed provider/http -name '*.ts' -newer "$cli" 2>/dev/null | head -1)" ]; then
  iy_log "compiling TypeScript to dist/"
  tsc -p tsconfig.json >&2 || iy_log "tsc reported errors (see above); running what it emitted"
  [ -f "$cli" ] || iy_die "tsc did not emit $cli"
fi
exec node "$cli" "$@"
