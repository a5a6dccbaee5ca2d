#!/usr/bin/env bash
# crane (go-containerregistry), the yardstick of the ImageManifest bench (bench/manifest.ts):
# Atmosphere's mirror_images runs `crane copy` image after image. Built from the Go module proxy
# at a pinned version into a cache outside the tree, reused when present; nothing fetched is
# written into the work tree.
#
#   scripts/crane.sh ensure      build or reuse, print the binary's path
#   scripts/crane.sh bin         print the binary's path (built or not)
#   scripts/crane.sh -- ARGS     run `crane ARGS`
#
# Cache: ${IY_CRANE_CACHE:-${XDG_CACHE_HOME:-~/.cache}/imageyard/crane}/vX.Y.Z/bin/crane.
# Cold on 2 cores: a few minutes; warm Go cache: seconds.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

CRANE_MODULE=github.com/google/go-containerregistry/cmd/crane
CRANE_VERSION=${IY_CRANE_VERSION:-v0.22.1}
CACHE=${IY_CRANE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/imageyard/crane}/$CRANE_VERSION
BIN="$CACHE/bin/crane"
export GOWORK=off CGO_ENABLED=0 GOTOOLCHAIN=local

ensure() {
  if [ -x "$BIN" ] && "$BIN" version >/dev/null 2>&1; then
    iy_log "crane $CRANE_VERSION: reusing $BIN"
  else
    command -v go >/dev/null 2>&1 || iy_die "no \`go\` on PATH: crane is built from the Go module proxy"
    mkdir -p "$CACHE"
    # One build at a time per version: a second caller waits for the first one's binary.
    exec 9>"$CACHE/.lock"
    flock 9
    if ! [ -x "$BIN" ]; then
      iy_log "building crane $CRANE_VERSION ($CRANE_MODULE) from the Go module proxy into $CACHE (a few minutes on 2 cores)"
      GOBIN="$CACHE/bin.tmp" go install -trimpath -ldflags=-s "$CRANE_MODULE@$CRANE_VERSION"
      rm -rf "$CACHE/bin" && mv "$CACHE/bin.tmp" "$CACHE/bin"
    fi
    flock -u 9
  fi
  printf '%s\n' "$BIN"
}

case "${1:-}" in
  ensure) ensure ;;
  bin) printf '%s\n' "$BIN" ;;
  --)
    shift
    ensure >/dev/null
    exec "$BIN" "$@"
    ;;
  *) iy_die "usage: scripts/crane.sh ensure | bin | -- ARGS" ;;
esac
