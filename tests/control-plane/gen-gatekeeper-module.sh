#!/usr/bin/env bash
# Regenerates tests/control-plane/gatekeeper/{go.mod,go.sum}: a Go tools module that builds the
# real Gatekeeper manager (the main package is the module root github.com/open-policy-agent/
# gatekeeper/v3) at GATEKEEPER_VERSION, for the coexist test (tests/tests/coexist.rs, started by
# tests/control-plane/gatekeeper-up). A separate module so its dependency graph (its own k8s.io/*,
# OPA and cel-go versions) does not mix with k8s.io/kubernetes' or helm's. Gatekeeper's go.mod has
# no replace directives, so none are needed here. Nothing of Gatekeeper is copied into the repo:
# `build` reads its CRDs from the Go module cache.
#
# Usage: tests/control-plane/gen-gatekeeper-module.sh [v3.x.y]   (default: the version in versions.env)
set -euo pipefail
# shellcheck source=gen-lib.sh
. "$(dirname "$0")/gen-lib.sh"
V=${1:-$GATEKEEPER_VERSION}
new_tools_module gatekeeper gatekeeper \
	"Builds the Gatekeeper $V manager for vapgen's coexist test (a separate module so its" \
	"dependency graph does not mix with k8s.io/kubernetes' or helm's)."
add_tools "github.com/open-policy-agent/gatekeeper/v3@$V"
echo "gen-gatekeeper-module: github.com/open-policy-agent/gatekeeper/v3 $V (k8s.io/client-go $(go list -m -f '{{.Version}}' k8s.io/client-go))" >&2
