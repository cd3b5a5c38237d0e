#!/usr/bin/env bash
# Cross-host test: run vapgen's decision components from Node.js through jco and compare every
# result with the Rust host's (wasmtime). Exits non-zero on any mismatch.
#
#   1. npm ci (jco, pinned in package-lock.json)
#   2. for the bundled module and the alternative module (modules/system-namespaces-exempt):
#      write the component (vapgen describe --emit / the build_module example), write the
#      vectors (the vectors example: every decision-suite case, planned by the Rust host),
#      and transpile the component with `jco transpile`
#   3. node --test: same inputs through jco, results compared with the vectors
#
# Environment: VAPGEN_NODE_WORK (default embed/node/generated) is where modules, vectors and
# generated JS go; VAPGEN_NODE_SKIP_ALT=1 checks the bundled module only.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
work="${VAPGEN_NODE_WORK:-$here/generated}"
export VAPGEN_NODE_WORK="$work"

ms_since() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }

for tool in node npm cargo; do
  command -v "$tool" >/dev/null || { echo "run-test.sh: $tool not found" >&2; exit 1; }
done

cd "$here"
echo "== npm ci"
npm ci --no-audit --no-fund --loglevel=error

rm -rf "$work"
mkdir -p "$work/bundled"

echo "== bundled module"
(cd "$root" && cargo run -q --locked -p vapgen -- describe --emit "$work/bundled/decider.wasm")
(cd "$root" && cargo run -q --locked -p vapgen --example vectors -- \
    -o "$work/bundled/vectors.json" tests/decisions)

if [ "${VAPGEN_NODE_SKIP_ALT:-}" != 1 ]; then
  echo "== alternative module: system-namespaces-exempt"
  mkdir -p "$work/system-namespaces-exempt"
  (cd "$root" && cargo run -q --locked -p vapgen --example build_module -- \
      --package vapgen-module-system-namespaces-exempt --lib system_namespaces_exempt \
      -o "$work/system-namespaces-exempt/decider.wasm")
  (cd "$root" && cargo run -q --locked -p vapgen --example vectors -- \
      --module "$work/system-namespaces-exempt/decider.wasm" \
      -o "$work/system-namespaces-exempt/vectors.json" \
      tests/decisions modules/system-namespaces-exempt/suite.yaml)
fi

echo "== jco transpile"
for dir in "$work"/*/; do
  start=$(date +%s%N)
  node transpile.mjs "$dir/decider.wasm" "$dir/js" >/dev/null
  echo "$(basename "$dir"): $(stat -c %s "$dir/decider.wasm") bytes, transpiled in $(ms_since "$start") ms"
done

echo "== node --test"
node -e '
  const fs = require("fs"), path = require("path"), w = process.env.VAPGEN_NODE_WORK;
  for (const d of fs.readdirSync(w)) {
    const v = JSON.parse(fs.readFileSync(path.join(w, d, "vectors.json"), "utf8"));
    console.log(`${d}: ${v.vectors.length} vectors, module ${v.module.info.name} sha256 ${v.module.sha256}`);
  }'
node --test test/
