#!/usr/bin/env bash
# Stops the Keystone + Glance that test/testbed/glance.sh started: only the pids in its pid files,
# and only while that pid's command line still names the state dir (a reused pid is left alone).
#   glance-down.sh           stop, keep the data (the next start is a fast warm start)
#   glance-down.sh --purge   stop and delete $IY_STATE_DIR/glance
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$HERE/../../scripts/lib.sh"
DIR="$IY_STATE_DIR/glance"
[ -d "$DIR" ] || { iy_log "nothing to stop: $DIR does not exist"; exit 0; }
DIR=$(cd "$DIR" && pwd)

for name in glance keystone; do
  pf="$DIR/run/$name.pid"
  [ -f "$pf" ] || continue
  pid=$(cat "$pf")
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "$DIR"; then
    kill -TERM "$pid"
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then iy_log "$name ($pid) ignored SIGTERM; sending SIGKILL"; kill -KILL "$pid"; fi
    iy_log "$name ($pid) stopped"
  else
    iy_log "$name: pid ${pid:-?} is not running (or not ours); removing its pid file"
  fi
  rm -f "$pf" "$DIR/run/$name.cfgsum"
done
# testbed.json stays: its accounts and application credential are still valid at the next start.

if [ "${1:-}" = --purge ]; then
  case "$DIR" in */glance) rm -rf -- "$DIR"; iy_log "deleted $DIR" ;; *) iy_die "refusing to delete $DIR" ;; esac
fi
