#!/usr/bin/env bash
# Regenerates tests/control-plane/helm/{go.mod,go.sum}: a Go tools module that builds helm
# (helm.sh/helm/v3/cmd/helm) at HELM_VERSION, for the deploy tests (helm template + server-side
# dry-run). A separate module so its dependency graph (its own k8s.io/* versions) does not mix
# with k8s.io/kubernetes'. helm's go.mod has no replace directives, so none are needed here.
#
# Usage: tests/control-plane/gen-helm-module.sh [v3.x.y]   (default: the version in versions.env)
set -euo pipefail
# shellcheck source=gen-lib.sh
. "$(dirname "$0")/gen-lib.sh"
V=${1:-$HELM_VERSION}
new_tools_module helm helm \
	"Builds helm $V for vapgen's deploy tests (a separate module so its dependency graph" \
	"does not mix with k8s.io/kubernetes')."
add_tools "helm.sh/helm/v3/cmd/helm@$V"
echo "gen-helm-module: helm.sh/helm/v3 $V (k8s.io/client-go $(go list -m -f '{{.Version}}' k8s.io/client-go))" >&2
