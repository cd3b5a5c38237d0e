#!/usr/bin/env bash
# Regenerates tests/control-plane/k8s/{go.mod,go.sum}: a Go tools module that builds
# kube-apiserver and kubectl from k8s.io/kubernetes at K8S_VERSION.
#
# k8s.io/kubernetes maps every staging module (k8s.io/api, k8s.io/client-go, ...) to
# ./staging/... at v0.0.0, which the module proxy does not serve. We read those replace
# lines from the go.mod that `go mod download -json` puts in the module cache and repeat
# each one in our own module with the published tag v0.<minor>.<patch>.
# See ../../../shared/spec/test-control-plane.md §1.7 (no hand-maintained list).
#
# Usage: tests/control-plane/gen-k8s-module.sh [v1.34.x]   (default: the version in versions.env)
set -euo pipefail
# shellcheck source=gen-lib.sh
. "$(dirname "$0")/gen-lib.sh"
K=${1:-$K8S_VERSION}
S=v0.${K#v1.}                     # v1.34.4 -> v0.34.4

GOMOD=$(go mod download -json "k8s.io/kubernetes@$K" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
[[ -f $GOMOD ]] || { echo "gen-k8s-module: no go.mod for k8s.io/kubernetes@$K" >&2; exit 1; }
MODS=$(sed -n 's#^[[:space:]]*\(k8s\.io/[^ ]*\) => \./staging/.*#\1#p' "$GOMOD" | sort -u)
[[ -n $MODS ]] || { echo "gen-k8s-module: no staging replaces found in $GOMOD" >&2; exit 1; }
GODEBUG_LINE=$(sed -n 's/^godebug[[:space:]]\+\(default=go[0-9.]*\).*/\1/p' "$GOMOD" | head -n1)

new_tools_module k8s k8s "Builds kube-apiserver and kubectl $K for vapgen's test control plane."
[[ -n $GODEBUG_LINE ]] && go mod edit -godebug="$GODEBUG_LINE"
# shellcheck disable=SC2046
go mod edit $(for m in $MODS; do printf -- '-replace=%s=%s@%s ' "$m" "$m" "$S"; done)
add_tools "k8s.io/kubernetes/cmd/kube-apiserver@$K" "k8s.io/kubernetes/cmd/kubectl@$K"
echo "gen-k8s-module: k8s.io/kubernetes $K, $(wc -w <<<"$MODS") staging replaces at $S, ${GODEBUG_LINE:-no godebug}" >&2
