#!/usr/bin/env bash
# Regenerates tests/control-plane/etcd/{go.mod,go.sum}: a Go tools module that builds etcd
# (the main package is the module root go.etcd.io/etcd/server/v3) at ETCD_VERSION.
# It is separate from the k8s module so minimal version selection never mixes the two
# dependency graphs. etcd's own replace directives point at published siblings of the same
# version, so no replace lines are needed here.
#
# Usage: tests/control-plane/gen-etcd-module.sh [v3.6.x]   (default: the version in versions.env)
set -euo pipefail
# shellcheck source=gen-lib.sh
. "$(dirname "$0")/gen-lib.sh"
V=${1:-$ETCD_VERSION}
new_tools_module etcd etcd \
	"Builds etcd $V for vapgen's test control plane (a separate module so its dependency" \
	"graph does not mix with k8s.io/kubernetes')."
add_tools "go.etcd.io/etcd/server/v3@$V"
echo "gen-etcd-module: go.etcd.io/etcd/server/v3 $V" >&2
