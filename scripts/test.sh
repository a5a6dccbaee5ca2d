#!/usr/bin/env bash
# The whole test suite: installs what is missing, builds, then runs unit, integration (real
# registries, Keystone + Glance, a Kubernetes cluster on 127.0.0.1) and end-to-end (real pulumi CLI) tests.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
"$IY_ROOT/scripts/bootstrap.sh"
cd "$IY_ROOT"
# Formatting and lint (Biome, biome.json) over the whole tree; a finding fails the run.
biome ci --colors=off .
# Kubernetes binaries before the engine toolchain: pulumi.sh links the provider plugin it builds.
"$IY_ROOT/scripts/k8s-build.sh" ensure
# The @pulumi/kubernetes provider plugin, for the PrePullSet and MirrorWorkloads e2e (cached; 70 min cold on 2 busy cores).
"$IY_ROOT/scripts/k8s-build.sh" plugin
"$IY_ROOT/scripts/pulumi.sh" ensure
# PrePullSet's node agent (Go, static): its image is packed from this build.
"$IY_ROOT/scripts/build-agent.sh" >/dev/null
exec vitest run "$@"
