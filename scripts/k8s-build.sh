#!/usr/bin/env bash
# The Kubernetes test bed's binaries, built from the Go module proxy into a cache outside the tree
# (${IY_K8S_CACHE:-${XDG_CACHE_HOME:-~/.cache}/imageyard/k8s}), reused when present:
#   kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kubectl  (k8s.io/kubernetes)
#   crictl (sigs.k8s.io/cri-tools), containerd v2 + ctr + shim (a second runtime for the bed)
#
#   scripts/k8s-build.sh ensure      build what is missing, say what is reused (idempotent)
#   scripts/k8s-build.sh bin         print the bin dir
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
  iy_log "kubernetes test-bed binaries ready in $BIN"
}

case "${1:-ensure}" in
  ensure) ensure ;;
  bin) printf '%s\n' "$BIN" ;;
  *) iy_die "usage: $0 [ensure|bin]" ;;
esac
