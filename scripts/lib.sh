# Sourced by the project's scripts: paths, logging, and Node 22 first on PATH.
IY_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export IY_ROOT
export PATH="$IY_ROOT/node_modules/.bin:$PATH"
# Test-bed state lives inside the checkout (ignored by git) unless told otherwise.
export IY_STATE_DIR=${IY_STATE_DIR:-$IY_ROOT/.testbed}
iy_log() { printf '[%s] %s\n' "$(basename "$0")" "$*" >&2; }
iy_die() { iy_log "ERROR: $*"; exit 1; }
