#!/usr/bin/env bash
# Builds the PrePullSet node agent (provider/node/agent, Go, static) into a cache outside the
# tree: ${IY_AGENT_CACHE:-${XDG_CACHE_HOME:-~/.cache}/imageyard/agent}/<source hash>/agent.
# The provider packages that binary into an OCI image itself (provider/node/agentimage.ts); nothing
# is downloaded at deploy time. Modules come from the Go module proxy on the first build only.
#
#   scripts/build-agent.sh          build if the source changed; print the binary's path
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
src="$root/provider/node/agent"
cache=${IY_AGENT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/imageyard/agent}
hash=$(cd "$src" && cat go.mod go.sum *.go | sha256sum | cut -c1-16)
out="$cache/$hash/agent"
if [ ! -x "$out" ]; then
  mkdir -p "$cache/$hash"
  command -v go >/dev/null || { echo "build-agent: no go on PATH" >&2; exit 1; }
  (cd "$src" && GOWORK=off GOTOOLCHAIN=local CGO_ENABLED=0 GOOS=linux GOARCH=${GOARCH:-amd64} GOFLAGS=-mod=mod \
    nice go build -trimpath -buildvcs=false -ldflags "-s -w" -o "$out.tmp" .) >&2
  mv "$out.tmp" "$out"
fi
# Always: a build of older source that finished later must not stay `current`.
ln -sfn "$hash" "$cache/current"
echo "$out"
