#!/usr/bin/env bash
# Installs everything the project needs on a fresh machine, idempotently:
# Debian packages (registry, skopeo, qemu-img, Keystone + Glance, …), npm dependencies
# (including Node 22 from the `node` package), and the compiled dist/.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$IY_ROOT"

APT_PKGS=(
  docker-registry skopeo apache2-utils openssl jq curl time ca-certificates
  qemu-utils gzip bzip2 xz-utils zstd
  python3-keystone python3-glance python3-keystonemiddleware python3-openstackclient
  # the Kubernetes test bed: node runtimes, etcd, CNI loopback, images, the pause compile
  containerd runc etcd-server etcd-client conntrack socat containernetworking-plugins busybox-static gcc libc6-dev
)
missing=()
for p in "${APT_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  [ "$(id -u)" = 0 ] || iy_die "need root to install: ${missing[*]}"
  iy_log "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >&2
  apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
fi

stamp=node_modules/.iy-installed
if [ ! -f "$stamp" ] || [ package-lock.json -nt "$stamp" ] || [ package.json -nt "$stamp" ]; then
  # `npm install` rather than `npm ci`: this npm leaves other platforms' optional packages
  # (rollup's, esbuild's) out of the lock and then refuses the lock in `npm ci`. With a lock in
  # place `npm install` installs exactly its versions.
  iy_log "installing npm dependencies (npm install, from package-lock.json)"
  npm install --no-audit --no-fund >&2
  touch "$stamp"
fi
ver=$(node --version)
case "$ver" in v2[2-9].*|v[3-9][0-9].*) ;; *) iy_die "node on PATH is $ver; expected >= 22 from node_modules/.bin (npm package 'node')";; esac

iy_log "compiling TypeScript to dist/"
tsc -p tsconfig.json >&2
