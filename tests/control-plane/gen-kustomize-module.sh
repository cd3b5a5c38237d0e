#!/usr/bin/env bash
# Regenerates tests/control-plane/kustomize/{go.mod,go.sum}: a Go tools module that builds the
# standalone kustomize (sigs.k8s.io/kustomize/kustomize/v5) at KUSTOMIZE_VERSION, for the KRM
# function test (tests/tests/krm.rs): kubectl's built-in kustomize has no --enable-exec, which
# exec KRM functions need. A separate module so its dependency graph does not mix with the
# others'.
#
# Usage: tests/control-plane/gen-kustomize-module.sh [v5.x.y]   (default: versions.env)
set -euo pipefail
# shellcheck source=gen-lib.sh
. "$(dirname "$0")/gen-lib.sh"
V=${1:-$KUSTOMIZE_VERSION}
new_tools_module kustomize kustomize \
	"Builds kustomize $V for vapgen's KRM function test (a separate module so its dependency" \
	"graph does not mix with the other tools')."
add_tools "sigs.k8s.io/kustomize/kustomize/v5@$V"
echo "gen-kustomize-module: sigs.k8s.io/kustomize/kustomize/v5 $V" >&2
