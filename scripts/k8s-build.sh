#!/usr/bin/env bash
# The Kubernetes test bed's binaries, built from the Go module proxy into a cache outside the tree
# (${IY_K8S_CACHE:-${XDG_CACHE_HOME:-~/.cache}/imageyard/k8s}), reused when present:
#   kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kubectl  (k8s.io/kubernetes)
#   crictl (sigs.k8s.io/cri-tools), containerd v2 + ctr + shim (a second runtime for the bed)
#   pause (Kubernetes' own build/pause/linux/pause.c, gcc -static): the bed's sandbox image
#   pulumi-resource-kubernetes (the @pulumi/kubernetes provider plugin, for the e2e tests)
#
#   scripts/k8s-build.sh ensure      build what is missing, say what is reused (idempotent)
#   scripts/k8s-build.sh bin         print the bin dir
#   scripts/k8s-build.sh plugin      build (or reuse) only the provider plugin
#   scripts/k8s-build.sh plugin-bin  print the provider plugin's path (built or not)
#
# k8s.io/kubernetes cannot be `go install`ed: its go.mod replaces ~33 k8s.io/* modules with
# ./staging/..., which the module zip lacks. So a wrapper module requires k8s.io/kubernetes and
# replaces each staging module with its published k8s.io/X v0.MINOR.PATCH.
# Cold on 2 cores: ~30 min (kube-apiserver alone ~20); warm Go cache: seconds.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

K8S_VERSION=1.37.2
CRICTL_VERSION=1.37.0
CONTAINERD2_VERSION=2.4.2
# The provider plugin: a commit the module proxy serves (no tagged provider/v4 release is served).
K8S_PROVIDER_MODULE=github.com/pulumi/pulumi-kubernetes/provider/v4
K8S_PROVIDER_COMMIT=v4.0.0-20260115033456-f47bc2d6f199
# The version it reports must be the one the npm SDK asks the engine for; the installed SDK wins.
# Default: the newest npm release not newer than the commit (which requires sdk/v4 v4.24.0).
K8S_PROVIDER_DEFAULT_VERSION=4.24.1
K8S_CACHE=${IY_K8S_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/imageyard/k8s}
BIN="$K8S_CACHE/v$K8S_VERSION/bin"
export GOWORK=off CGO_ENABLED=0 GOTOOLCHAIN=local

need_go() { command -v go >/dev/null 2>&1 || iy_die "no \`go\` on PATH: the Kubernetes binaries are built from the Go module proxy"; }

# Writes the wrapper module once per version.
wrapper_module() {
  local work="$K8S_CACHE/src-v$K8S_VERSION" minor patch kmod
  minor=$(cut -d. -f2 <<<"$K8S_VERSION")
  patch=$(cut -d. -f3 <<<"$K8S_VERSION")
  mkdir -p "$work"
  if [ ! -f "$work/go.sum" ]; then
    (cd "$work" && go list -m -json "k8s.io/kubernetes@v$K8S_VERSION" >/dev/null)
    kmod="$(go env GOMODCACHE)/cache/download/k8s.io/kubernetes/@v/v$K8S_VERSION.mod"
    {
      echo "module imageyard.dev/k8sbed"
      echo
      grep -m1 '^go ' "$kmod"
      grep -m1 '^godebug ' "$kmod" || true
      echo
      echo "require k8s.io/kubernetes v$K8S_VERSION"
      echo
      echo "replace ("
      # sample-* staging modules are not published and not needed.
      grep '=> ./staging' "$kmod" | awk '{print $1}' | grep -v 'sample-' |
        while read -r m; do printf '\t%s => %s v0.%s.%s\n' "$m" "$m" "$minor" "$patch"; done
      echo ")"
      echo
      echo "tool ("
      for c in kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl; do printf '\tk8s.io/kubernetes/cmd/%s\n' "$c"; done
      echo ")"
    } >"$work/go.mod"
    (cd "$work" && rm -f go.sum && GOFLAGS=-mod=mod nice -n 10 go mod tidy >&2)
  fi
  printf '%s\n' "$work"
}

build_kube() {
  local c=$1 work ld bd started
  work=$(wrapper_module)
  bd=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  ld="-s -w"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld="$ld -X $p.gitVersion=v$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$(cut -d. -f2 <<<"$K8S_VERSION") -X $p.gitTreeState=clean -X $p.buildDate=$bd"
  done
  started=$(date +%s)
  (cd "$work" && GOFLAGS=-mod=mod nice -n 10 go build -trimpath -ldflags "$ld" -o "$BIN/$c.tmp" "k8s.io/kubernetes/cmd/$c")
  mv "$BIN/$c.tmp" "$BIN/$c"
  iy_log "built $c v$K8S_VERSION in $(($(date +%s) - started)) s"
}

# go install of a module's commands at a version into a folder.
install_go() {
  local dest=$1 started
  shift
  started=$(date +%s)
  mkdir -p "$dest"
  GOBIN="$dest" nice -n 10 go install -trimpath -ldflags "-s -w" "$@"
  iy_log "built $* in $(($(date +%s) - started)) s"
}

# Kubernetes' pause, compiled from the module the build already downloaded; TAG is the
# version Kubernetes' own Makefile gives that source.
build_pause() {
  local work kdir tag started
  work=$(wrapper_module)
  kdir=$(cd "$work" && go list -m -f '{{.Dir}}' k8s.io/kubernetes)
  [ -f "$kdir/build/pause/linux/pause.c" ] || (cd "$work" && go mod download k8s.io/kubernetes)
  tag=$(sed -n 's/^TAG ?= *//p' "$kdir/build/pause/Makefile")
  [ -n "$tag" ] || iy_die "no TAG in $kdir/build/pause/Makefile"
  command -v gcc >/dev/null || iy_die "no gcc: the pause image is compiled here (scripts/bootstrap.sh installs it)"
  started=$(date +%s)
  mkdir -p "$BIN/pause"
  gcc -Os -Wall -static -DVERSION="v$tag-imageyard" -o "$BIN/pause/pause.tmp" "$kdir/build/pause/linux/pause.c"
  strip "$BIN/pause/pause.tmp"
  printf '%s\n' "$tag" >"$BIN/pause/TAG"
  mv "$BIN/pause/pause.tmp" "$BIN/pause/pause"
  iy_log "built pause $tag in $(($(date +%s) - started)) s"
}

provider_version() {
  local pkg="$IY_ROOT/node_modules/@pulumi/kubernetes/package.json"
  if [ -f "$pkg" ]; then node -p 'const p = require(process.argv[1]); (p.pulumi && p.pulumi.version) || p.version' "$pkg"
  else printf '%s\n' "$K8S_PROVIDER_DEFAULT_VERSION"; fi
}
plugin_bin() { printf '%s\n' "$K8S_CACHE/pulumi-kubernetes/v$(provider_version)/pulumi-resource-kubernetes"; }

# The module zip lacks ../sdk (its replace target) and the schema files its main.go embeds, which
# upstream's Makefile generates: drop the replace for the published sdk/v4 it requires (no tidy:
# -mod=mod fetches only what the command imports, not every test dependency), and write
# the embedded files the way its generate.go does (schema with the version set, compact JSON).
build_plugin() {
  need_go
  local version out src work started
  version=$(provider_version)
  out=$(plugin_bin)
  started=$(date +%s)
  work="$K8S_CACHE/src-pulumi-kubernetes"
  src=$(mkdir -p "$K8S_CACHE" && cd "$K8S_CACHE" && go mod download -json "$K8S_PROVIDER_MODULE@$K8S_PROVIDER_COMMIT" |
    node -e 'let s="";process.stdin.on("data",(d)=>(s+=d)).on("end",()=>{const j=JSON.parse(s);if(j.Error||!j.Dir){console.error(j.Error||"no module directory");process.exit(1)}process.stdout.write(j.Dir)})') ||
    iy_die "the Go module proxy did not serve $K8S_PROVIDER_MODULE@$K8S_PROVIDER_COMMIT"
  rm -rf "$work"
  cp -r "$src" "$work"
  chmod -R u+w "$work"
  (cd "$work/cmd/pulumi-resource-kubernetes" && VERSION="$version" node -e '
    const fs = require("fs");
    const schema = JSON.parse(fs.readFileSync("schema.json", "utf8"));
    schema.version = process.env.VERSION;
    fs.writeFileSync("schema-embed.json", JSON.stringify(schema));
    fs.writeFileSync("terraform-mapping-embed.json", JSON.stringify(JSON.parse(fs.readFileSync("terraform-mapping.json", "utf8"))));')
  mkdir -p "$(dirname "$out")"
  (cd "$work" &&
    go mod edit -dropreplace=github.com/pulumi/pulumi-kubernetes/sdk/v4 &&
    GOFLAGS=-mod=mod nice -n 10 go build -trimpath -o "$out.tmp" \
      -ldflags "-s -w -X github.com/pulumi/pulumi-kubernetes/provider/v4/pkg/version.Version=$version" ./cmd/pulumi-resource-kubernetes >&2)
  mv "$out.tmp" "$out"
  rm -rf "$work"
  iy_log "built pulumi-resource-kubernetes v$version ($K8S_PROVIDER_COMMIT) in $(($(date +%s) - started)) s"
}

ensure_plugin() {
  if [ -x "$(plugin_bin)" ]; then iy_log "using cached pulumi-resource-kubernetes: $(plugin_bin)"; else build_plugin; fi
}

ensure() {
  need_go
  mkdir -p "$BIN"
  local c
  for c in kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl; do
    if [ -x "$BIN/$c" ]; then iy_log "using cached $c: $BIN/$c"; else build_kube "$c"; fi
  done
  if [ -x "$BIN/crictl" ]; then iy_log "using cached crictl"; else
    install_go "$BIN" "sigs.k8s.io/cri-tools/cmd/crictl@v$CRICTL_VERSION"
  fi
  local c2="$BIN/containerd2"
  if [ -x "$c2/containerd" ] && [ -x "$c2/ctr" ] && [ -x "$c2/containerd-shim-runc-v2" ]; then iy_log "using cached containerd v$CONTAINERD2_VERSION"; else
    local m=github.com/containerd/containerd/v2/cmd
    install_go "$c2" "$m/containerd@v$CONTAINERD2_VERSION" "$m/ctr@v$CONTAINERD2_VERSION" "$m/containerd-shim-runc-v2@v$CONTAINERD2_VERSION"
  fi
  if [ -x "$BIN/pause/pause" ] && [ -s "$BIN/pause/TAG" ]; then iy_log "using cached pause $(cat "$BIN/pause/TAG")"; else build_pause; fi
  iy_log "kubernetes test-bed binaries ready in $BIN"
}

case "${1:-ensure}" in
  ensure) ensure ;;
  bin) printf '%s\n' "$BIN" ;;
  plugin) ensure_plugin ;;
  plugin-bin) plugin_bin ;;
  *) iy_die "usage: $0 [ensure|bin|plugin|plugin-bin]" ;;
esac
