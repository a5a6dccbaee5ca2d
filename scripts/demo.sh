#!/usr/bin/env bash
# imageyard's main job in one command, on a fresh machine with nothing else set up:
#   scripts/demo.sh        start a local sandbox (upstream + mirror registries on 127.0.0.1, seeded
#                          with generated images), `pulumi up` the demo stack (Pulumi.yaml), print
#                          what was mirrored. Run it again: the stack shows no changes.
#   scripts/demo.sh down   destroy the demo stack and stop the sandbox.
# Everything it keeps (registries, stack state, config) lives in $IY_STATE_DIR (.testbed/).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$IY_ROOT"

STACK=demo
DEMO_DIR="$IY_STATE_DIR/demo"
CONFIG="$DEMO_DIR/Pulumi.$STACK.yaml"
export PULUMI_HOME="$DEMO_DIR/home" IY_PULUMI_BACKEND_DIR="$DEMO_DIR/backend"
# Encrypts the sandbox's generated mirror password in the local state; not a real secret.
export PULUMI_CONFIG_PASSPHRASE=${PULUMI_CONFIG_PASSPHRASE-imageyard-demo}

if [ -t 2 ] && [ -z "${NO_COLOR:-}" ]; then B=$'\033[1m' D=$'\033[2m' R=$'\033[0m'; else B='' D='' R=''; fi
step() { printf '\n%s==> %s%s\n' "$B" "$*" "$R" >&2; }
pulumi_() { "$IY_ROOT/scripts/pulumi.sh" -- "$@" --stack "$STACK" --config-file "$CONFIG" --non-interactive; }

# Runs `pulumi ARGS` with the demo's stack and config, keeping the whole output in a log and
# showing the resource steps and the summary: the engine repeats every provider line (progress
# included) under Diagnostics, which buries the result.
engine_run() {
  local name=$1 log="$DEMO_DIR/$1.log"
  shift
  if ! pulumi_ "$@" >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    iy_die "pulumi $name failed; the whole output is in ${log#"$IY_ROOT"/}"
  fi
  grep -E '^ *[-+~] +pulumi-nodejs:.* (created|updated|replaced|deleted)|^Resources:|^ +[-+~]? ?[0-9]+ (created|updated|replaced|deleted|unchanged)|^Duration:' "$log" \
    | sed -E 's/pulumi-nodejs:dynamic\/imageyard://; s/ *$//' >&2 || true
  printf '%s(full engine output: %s)%s\n' "$D" "${log#"$IY_ROOT"/}" "$R" >&2
}

demo_up() {
  local started cfg
  started=$(date +%s)
  step "Installing what is missing (Debian packages, npm packages, TypeScript build)"
  "$IY_ROOT/scripts/bootstrap.sh"
  step "Pulumi CLI (built once from the Go module proxy, then cached)"
  "$IY_ROOT/scripts/pulumi.sh" ensure
  step "Sandbox: registries on 127.0.0.1 and generated images"
  cfg=$(node dist/examples/demo/sandbox.js up)
  mkdir -p "$DEMO_DIR" "$PULUMI_HOME" "$IY_PULUMI_BACKEND_DIR"
  "$IY_ROOT/scripts/pulumi.sh" -- stack select --create "$STACK" --non-interactive >/dev/null
  local key
  for key in upstream mirror mirrorUsername; do
    pulumi_ config set "$key" "$(node -p 'JSON.parse(process.argv[1])[process.argv[2]]' "$cfg" "$key")"
  done
  node -p 'JSON.parse(process.argv[1]).mirrorPassword' "$cfg" | pulumi_ config set --secret mirrorPassword
  step "pulumi up (stack '$STACK', state in ${IY_PULUMI_BACKEND_DIR#"$IY_ROOT"/})"
  engine_run up up --yes --skip-preview --suppress-progress --suppress-outputs
  step "Result"
  "$IY_ROOT/scripts/pulumi.sh" -- stack output --json --stack "$STACK" --non-interactive | node dist/examples/demo/report.js
  printf '%sDone in %ss. Run scripts/demo.sh again: no changes. Tear down: scripts/demo.sh down%s\n' "$D" "$(($(date +%s) - started))" "$R" >&2
}

demo_down() {
  [ -f dist/examples/demo/sandbox.js ] || "$IY_ROOT/scripts/bootstrap.sh"
  if [ -d "$IY_PULUMI_BACKEND_DIR/.pulumi" ]; then
    step "pulumi destroy (stack '$STACK')"
    engine_run destroy destroy --yes --skip-preview --suppress-progress
    "$IY_ROOT/scripts/pulumi.sh" -- stack rm --yes --force "$STACK" --non-interactive >/dev/null
  fi
  step "Sandbox"
  node dist/examples/demo/sandbox.js down
  rm -rf "$IY_PULUMI_BACKEND_DIR" "$PULUMI_HOME" "$CONFIG"
}

case "${1:-up}" in
  up) demo_up ;;
  down) demo_down ;;
  *) iy_die "usage: $0 [up|down]" ;;
esac
