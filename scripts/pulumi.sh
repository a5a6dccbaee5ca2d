#!/usr/bin/env bash
# The Pulumi toolchain, offline: the `pulumi` CLI and a Node.js language host at the version of the
# @pulumi/pulumi SDK in node_modules, plus the dynamic-provider shim and Node 22, in one bin dir
# ($IY_STATE_DIR/pulumi/bin, links only), and the @pulumi/kubernetes provider plugin once
# scripts/k8s-build.sh has built it.
#
#   scripts/pulumi.sh ensure     build or reuse the toolchain, say which (idempotent)
#   scripts/pulumi.sh env        print `export …` lines for an offline engine (eval them)
#   scripts/pulumi.sh bin        print the assembled bin dir (a PulumiCommand root is its parent)
#   scripts/pulumi.sh paths      the same as JSON, with the NODE_PATH folder and both versions
#   scripts/pulumi.sh -- ARGS    run `pulumi ARGS` with that environment
#
# Where the CLI comes from, first match wins: a `pulumi` on PATH reporting the same version; the
# cache ${IY_PULUMI_CACHE:-${XDG_CACHE_HOME:-~/.cache}/imageyard/pulumi}/vX.Y.Z; a build from the
# Go module proxy into that cache. Nothing fetched is written into the work tree.
# The language host is the project's own (scripts/pulumi-language-nodejs): the upstream one is not
# served by the module proxy at any version.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

sdk_pkg="$IY_ROOT/node_modules/@pulumi/pulumi/package.json"
iy_pulumi_version() {
  [ -f "$sdk_pkg" ] || iy_die "no @pulumi/pulumi in node_modules: run scripts/bootstrap.sh first"
  node -p 'require(process.argv[1]).version' "$sdk_pkg"
}
SDK_VERSION=$(iy_pulumi_version)
CACHE_ROOT=${IY_PULUMI_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/imageyard/pulumi}
# The module proxy on these machines stops serving pkg/v3 at some release (3.260.0 was refused
# while its sdk/v3 was served). When the SDK's own version is refused, build this one instead:
# the engine and the Node SDK negotiate features over gRPC, so a CLI one minor behind works.
FALLBACK_VERSION=3.276.0
# Which CLI serves this SDK: an explicit IY_PULUMI_VERSION, else what an earlier ensure chose.
sdk_link="$CACHE_ROOT/for-sdk-v$SDK_VERSION"
if [ -n "${IY_PULUMI_VERSION:-}" ]; then
  VERSION=${IY_PULUMI_VERSION#v}
elif [ -L "$sdk_link" ]; then
  VERSION=$(basename "$(readlink "$sdk_link")")
  VERSION=${VERSION#v}
else
  VERSION=$SDK_VERSION
fi
set_version() {
  VERSION=$1
  CACHE="$CACHE_ROOT/v$VERSION"
  # The built binaries (shared by every checkout on the machine).
  BIN="$CACHE/bin"
}
set_version "$VERSION"
HOST_SRC="$IY_ROOT/scripts/pulumi-language-nodejs"
# A folder holding only `imageyard` -> this checkout, put on NODE_PATH for the engine: a dynamic
# provider's methods `require("imageyard/…")` from a module with no filename, which Node resolves
# from node_modules folders and NODE_PATH only (never by self-reference), so programs inside this
# checkout need it to find the package the way a user's node_modules/imageyard does.
NODE_LINKS="$IY_STATE_DIR/pulumi/node_path"
# The engine's PATH, per checkout: links to the cached pulumi and language host, and to this
# checkout's provider shim and Node 22 (another checkout may hold other node_modules).
ENGINE_BIN="$IY_STATE_DIR/pulumi/bin"
# Engine state for scripts that do not bring their own (tests and the demo pass theirs).
: "${PULUMI_HOME:=$IY_STATE_DIR/pulumi/home}"
: "${IY_PULUMI_BACKEND_DIR:=$IY_STATE_DIR/pulumi/backend}"

cli_version_of() { "$1" version 2>/dev/null | head -n1 | tr -d '[:space:]'; }

# A `pulumi` already on PATH (not our own bin dir) that reports exactly vVERSION.
find_path_cli() {
  local p
  local path=${PATH//$BIN:/}
  p=$(PATH=${path//$ENGINE_BIN:/} command -v pulumi 2>/dev/null) || return 1
  [ "$(cli_version_of "$p")" = "v$VERSION" ] && printf '%s\n' "$p"
}

need_go() {
  command -v go >/dev/null 2>&1 || iy_die "cannot build pulumi v$VERSION: no \`go\` on PATH (install Go >= 1.25, or put a pulumi v$VERSION on PATH)"
}

# go mod download; prints the module's directory, or the proxy's own words and returns 1.
download_module() {
  local json
  json=$(mkdir -p "$CACHE" && cd "$CACHE" && go mod download -json "$1" 2>&1) || true
  printf '%s' "$json" | node -e '
    let s = "";
    process.stdin.on("data", (d) => (s += d)).on("end", () => {
      let j;
      try { j = JSON.parse(s); } catch { j = { Error: s.trim() }; }
      if (j.Error || !j.Dir) { process.stdout.write(j.Error || "no module directory"); process.exit(1); }
      process.stdout.write(j.Dir);
    });'
}

build_cli() {
  need_go
  local started src work
  started=$(date +%s)
  mkdir -p "$CACHE/src" "$BIN"
  if ! src=$(download_module "github.com/pulumi/pulumi/pkg/v3@v$VERSION"); then
    rmdir "$CACHE/src" "$BIN" "$CACHE" 2>/dev/null || true
    if [ -z "${IY_PULUMI_VERSION:-}" ] && [ "$VERSION" != "$FALLBACK_VERSION" ] && [[ "$src" == *"not available"* ]]; then
      iy_log "the Go module proxy refuses pulumi pkg/v3@v$VERSION; using v$FALLBACK_VERSION for the CLI and language host instead"
      set_version "$FALLBACK_VERSION"
      return 2
    fi
    iy_die "cannot build pulumi v$VERSION: the Go module proxy did not serve github.com/pulumi/pulumi/pkg/v3@v$VERSION: $src. Pin @pulumi/pulumi in package.json to a version it serves, or set IY_PULUMI_VERSION."
  fi
  iy_log "building pulumi v$VERSION from the Go module proxy into $CACHE (about 13 min on 2 cores)"
  work="$CACHE/src/pkg"
  rm -rf "$work"
  cp -r "$src" "$work"
  chmod -R u+w "$work"
  # pkg/v3 points at the sdk beside it in the monorepo; use the published sdk of the same version.
  (cd "$work" &&
    go mod edit -dropreplace=github.com/pulumi/pulumi/sdk/v3 -require=github.com/pulumi/pulumi/sdk/v3@v"$VERSION" &&
    GOFLAGS=-mod=mod go mod tidy >&2 &&
    CGO_ENABLED=0 go build -trimpath -o "$BIN/pulumi.tmp" \
      -ldflags "-s -w -X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=v$VERSION" ./cmd/pulumi >&2)
  mv "$BIN/pulumi.tmp" "$BIN/pulumi"
  rm -rf "$work"
  iy_log "built pulumi v$VERSION in $(($(date +%s) - started)) s ($(du -h "$BIN/pulumi" | cut -f1))"
}

# The language host is rebuilt whenever its source is newer than the binary.
build_host() {
  need_go
  local started
  started=$(date +%s)
  mkdir -p "$BIN" "$CACHE/src"
  iy_log "building pulumi-language-nodejs (project source, sdk v$VERSION)"
  rm -rf "$CACHE/src/host"
  cp -r "$HOST_SRC" "$CACHE/src/host"
  (cd "$CACHE/src/host" &&
    go mod edit -require=github.com/pulumi/pulumi/sdk/v3@v"$VERSION" &&
    GOFLAGS=-mod=mod go mod tidy >&2 &&
    CGO_ENABLED=0 go build -trimpath -o "$BIN/pulumi-language-nodejs.tmp" \
      -ldflags "-s -w -X main.version=v$VERSION" . >&2)
  mv "$BIN/pulumi-language-nodejs.tmp" "$BIN/pulumi-language-nodejs"
  rm -rf "$CACHE/src/host"
  iy_log "built pulumi-language-nodejs in $(($(date +%s) - started)) s ($(du -h "$BIN/pulumi-language-nodejs" | cut -f1))"
}

host_stale() {
  local b="$BIN/pulumi-language-nodejs"
  [ -x "$b" ] || return 0
  [ -n "$(find "$HOST_SRC" -type f -newer "$b" -print -quit)" ]
}

link_self() {
  mkdir -p "$NODE_LINKS"
  ln -sfn "$IY_ROOT" "$NODE_LINKS/imageyard"
}

# The engine's bin dir: links to the cached binaries and to this checkout's shim and node.
link_engine_bin() {
  local shim="$IY_ROOT/node_modules/@pulumi/pulumi/pulumi-resource-pulumi-nodejs"
  [ -x "$shim" ] || iy_die "missing $shim: run scripts/bootstrap.sh first"
  # Links an older layout of this script put beside the binaries.
  rm -f "$BIN/node" "$BIN/pulumi-resource-pulumi-nodejs"
  mkdir -p "$ENGINE_BIN"
  ln -sfn "$BIN/pulumi" "$ENGINE_BIN/pulumi"
  ln -sfn "$BIN/pulumi-language-nodejs" "$ENGINE_BIN/pulumi-language-nodejs"
  ln -sfn "$shim" "$ENGINE_BIN/pulumi-resource-pulumi-nodejs"
  ln -sfn "$(readlink -f "$IY_ROOT/node_modules/.bin/node")" "$ENGINE_BIN/node"
  # The @pulumi/kubernetes provider, when scripts/k8s-build.sh has built it: the engine takes
  # provider plugins from PATH before PULUMI_HOME, so no `pulumi plugin install` per test home.
  local k8s_plugin
  k8s_plugin=$("$IY_ROOT/scripts/k8s-build.sh" plugin-bin)
  if [ -x "$k8s_plugin" ]; then ln -sfn "$k8s_plugin" "$ENGINE_BIN/pulumi-resource-kubernetes"; else rm -f "$ENGINE_BIN/pulumi-resource-kubernetes"; fi
  link_self
}

ensure_cli() {
  local cli
  if cli=$(find_path_cli); then
    mkdir -p "$BIN"
    ln -sfn "$cli" "$BIN/pulumi"
    iy_log "using pulumi v$VERSION from PATH: $cli"
  elif [ -x "$BIN/pulumi" ] && [ ! -L "$BIN/pulumi" ] && [ "$(cli_version_of "$BIN/pulumi")" = "v$VERSION" ]; then
    iy_log "using cached pulumi v$VERSION: $BIN/pulumi"
  else
    rm -f "$BIN/pulumi"
    build_cli
  fi
}

ensure() {
  local rc=0
  ensure_cli || rc=$?
  if [ "$rc" = 2 ]; then ensure_cli; elif [ "$rc" != 0 ]; then exit "$rc"; fi
  [ "$VERSION" = "$SDK_VERSION" ] || iy_log "note: pulumi v$VERSION serves @pulumi/pulumi $SDK_VERSION (see FALLBACK_VERSION in $0)"
  mkdir -p "$CACHE_ROOT"
  ln -sfn "v$VERSION" "$sdk_link"
  if host_stale; then build_host; else iy_log "using cached pulumi-language-nodejs: $BIN/pulumi-language-nodejs"; fi
  link_engine_bin
  iy_log "toolchain ready in $ENGINE_BIN: pulumi $("$ENGINE_BIN/pulumi" version), node $("$ENGINE_BIN/node" --version)"
}

print_env() {
  cat <<EOF
export PATH="$ENGINE_BIN:\$PATH"
export NODE_PATH="$NODE_LINKS\${NODE_PATH:+:\$NODE_PATH}"
export PULUMI_HOME="$PULUMI_HOME"
export PULUMI_BACKEND_URL="file://$IY_PULUMI_BACKEND_DIR"
export PULUMI_CONFIG_PASSPHRASE="${PULUMI_CONFIG_PASSPHRASE-}"
export PULUMI_SKIP_UPDATE_CHECK=true
export PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION=true
export PULUMI_AUTOMATION_API_SKIP_VERSION_CHECK=true
EOF
}

case "${1:-ensure}" in
  ensure) ensure ;;
  env) [ ! -x "$BIN/pulumi" ] || link_engine_bin; print_env ;;
  bin) printf '%s\n' "$ENGINE_BIN" ;;
  paths) { [ ! -x "$BIN/pulumi" ] || link_engine_bin; } && printf '{"bin":"%s","nodePath":"%s","version":"%s","sdkVersion":"%s"}\n' "$ENGINE_BIN" "$NODE_LINKS" "$VERSION" "$SDK_VERSION" ;;
  --)
    shift
    [ -x "$ENGINE_BIN/pulumi" ] && [ -x "$ENGINE_BIN/pulumi-language-nodejs" ] && [ -x "$ENGINE_BIN/node" ] || ensure
    link_engine_bin
    eval "$(print_env)"
    mkdir -p "$PULUMI_HOME" "$IY_PULUMI_BACKEND_DIR"
    exec pulumi "$@"
    ;;
  *) iy_die "usage: $0 [ensure|env|bin|paths|-- PULUMI-ARGS…]" ;;
esac
