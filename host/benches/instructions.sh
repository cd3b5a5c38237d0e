#!/usr/bin/env bash
# Instruction counts of the per-kind plan: the cases of host/benches/plan.rs (the same template
# and constraints), counted by callgrind instead of timed, so that the figures do not move with
# the load of the machine. Prints one table, N | native | wasm | wasm/native | Gatekeeper Go |
# wasm/Go, in instructions per call (callgrind's Ir: user space only, no kernel, no page faults).
#
#   native         vapgen's decision logic called natively (NativeDecider), plan dropped
#   wasm           the same through the bundled module, as the controller calls it: a fresh
#                  Store and instance per call, inputs copied in, the plan copied out and dropped
#   Gatekeeper Go  Gatekeeper v3.23.1's own code over the same inputs (BenchmarkTransform in
#                  tests/oracle/bench_test.go): the template decoded from JSON, the constraints
#                  as the informer cache holds them (unstructured, as vapgen's plan gets them
#                  parsed); decode + transform + marshal of the VAP and the bindings; no GC
#
# How: each case runs twice under callgrind, with a few calls and with more; the difference of
# the totals divided by the difference of the call counts is the cost of one call, exactly: the
# process start, the inputs, the module load (from a precompile cache filled before the runs)
# and for Go the package init and the oracle client cancel out. Rust: the main thread only (the
# wasm runtime's epoch ticker thread wakes every 10 ms, so its count follows the wall clock);
# Go: every thread but sysmon's (the GC workers do the benchmark's work; sysmon wakes on a timer).
# A run's first call is never in the difference (steady state: warm allocator, warm caches).
# The wasm side under valgrind: one pooling slot (plan.rs says why; the script checks that the
# pool is used), and the module compiled for the CPU that valgrind presents (other features
# than the real one: its own precompile cache entry, filled under valgrind before the runs).
#
# Usage: host/benches/instructions.sh
#   VAPGEN_BENCH_NS="0 10 100 1000 10000"   the constraint counts (default all five)
#   VAPGEN_BENCH_GO=0                         no Gatekeeper column (no Go build)
# Needs valgrind (Debian's package) and jq; the Go column needs Go and the module cache that
# tests/oracle/build fills (GOFLAGS=-mod=readonly: nothing is resolved; on a cold cache the
# modules come from the Go proxy). Progress on stderr, the table on stdout. Measured: 6 min for
# all five N on 2 cores with the builds cached (and another build running), half of it Go's
# N=10000; the run prints its own time at the end.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
ns=${VAPGEN_BENCH_NS:-0 10 100 1000 10000}
with_go=${VAPGEN_BENCH_GO:-1}
start=$(date +%s)

for tool in valgrind callgrind_annotate jq cargo awk; do
	command -v "$tool" >/dev/null || { echo "instructions: $tool is not installed" >&2; exit 2; }
done

work=$(mktemp -d "${TMPDIR:-/tmp}/vapgen-instructions.XXXXXX")
trap 'rm -rf "$work"' EXIT

log() { echo "instructions: $*" >&2; }

# The calls of the two runs of one case: more calls where a call is cheap, so that the
# difference is large against the noise; fewer where it is not, so that a run stays short.
calls() {
	local n=$1
	if ((n <= 1000)); then echo "1 11"; else echo "1 5"; fi
}
# The same for Go, whose setup (package init, the oracle client) varies by ~1 M instructions
# from run to run (randomised map seeds): the difference must be ~100 M or more.
go_calls() {
	local n=$1
	if ((n <= 10)); then echo "1 201"
	elif ((n <= 100)); then echo "1 31"
	elif ((n <= 1000)); then echo "1 11"
	else echo "1 5"; fi
}

# callgrind's total Ir of the threads of one run: $1 the out file prefix, $2 "main" (thread 1
# only) or "all-but-sysmon".
total() {
	local prefix=$1 which=$2 sum=0 f t
	for f in "$prefix"-*; do
		if [[ $which == main && $f != "$prefix-01" ]]; then continue; fi
		if [[ $which == all-but-sysmon ]] && grep -q 'runtime\.sysmon$' "$f"; then continue; fi
		t=$(sed -n 's/^totals: *\([0-9]*\).*/\1/p' "$f")
		[[ -n $t ]] || t=$(sed -n 's/^summary: *\([0-9]*\).*/\1/p' "$f")
		[[ -n $t ]] || { echo "instructions: no totals in $f" >&2; exit 1; }
		sum=$((sum + t))
	done
	echo "$sum"
}

# One run under callgrind; prints its total. $1 label, $2 thread selection, then the command.
callgrind() {
	local label=$1 which=$2 t0 out
	shift 2
	out="$work/cg.$label"
	t0=$(date +%s.%N)
	valgrind --tool=callgrind --separate-threads=yes --dump-line=no --dump-instr=no \
		--callgrind-out-file="$out" "$@" >"$work/run.log" 2>&1 || {
		echo "instructions: $label failed under callgrind:" >&2
		tail -20 "$work/run.log" >&2
		exit 1
	}
	local t
	t=$(total "$out" "$which")
	# libc's memset, self cost (it is rep stosb past a few KiB, which callgrind counts one
	# instruction per byte stored).
	callgrind_annotate --threshold=100 "$out-01" 2>/dev/null |
		awk '/__memset/ { gsub(",", "", $1); s += $1 } END { print s + 0 }' >"$work/memset.$label"
	# The wasm side must run on the pooling allocator, as in production (the runtime falls
	# back to on-demand allocation without a word when the pool cannot be reserved).
	if [[ $label == wasm* ]] && ! grep -q 'pooling::memory_pool::MemoryPool::allocate' "$out-01"; then
		echo "instructions: $label did not allocate from the pooling allocator under valgrind" >&2
		exit 1
	fi
	rm -f "$out"-*
	log "$(printf '%-22s %14s Ir  %6.1f s' "$label" "$t" "$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { print b - a }')")"
	echo "$t"
}

# Per-call Ir from two totals: (hi - lo) / (calls_hi - calls_lo).
per_call() { echo $((($2 - $1) / ($4 - $3))); }

log "building the bench (cargo bench -p vapgen --bench plan --no-run) ..."
bench=$(cd "$root" && cargo bench -p vapgen --bench plan --no-run --message-format=json 2>"$work/cargo.log" |
	jq -r 'select(.reason == "compiler-artifact" and .target.name == "plan" and (.target.kind | index("bench"))) | .executable // empty' |
	tail -1) || true
if [[ -z $bench || ! -x $bench ]]; then
	echo "instructions: the bench did not build:" >&2
	tail -30 "$work/cargo.log" >&2
	exit 1
fi
log "bench: $bench"
# Fill the precompile cache before the measured runs, which load the module from it. Under
# valgrind: its CPU has other features than the real one, and so another cache key.
export VAPGEN_BENCH_CACHE="$work/modules"
VAPGEN_BENCH_ONE=wasm:0:0 valgrind --tool=none "$bench" >"$work/run.log" 2>&1 || {
	echo "instructions: the module did not load under valgrind:" >&2
	tail -20 "$work/run.log" >&2
	exit 1
}

gotest=
go_note=
if [[ $with_go == 0 ]]; then
	go_note="Gatekeeper Go: not measured (VAPGEN_BENCH_GO=0)"
elif ! command -v go >/dev/null; then
	go_note="Gatekeeper Go: skipped: go is not installed"
else
	log "building the Gatekeeper benchmark (go test -c in tests/oracle) ..."
	if (cd "$root/tests/oracle" && CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=-mod=readonly \
		go test -c -trimpath -o "$work/oracle.test" .) >"$work/go.log" 2>&1; then
		gotest="$work/oracle.test"
	else
		go_note="Gatekeeper Go: skipped: the benchmark did not build (modules not cached and not fetchable?): $(tail -3 "$work/go.log" | tr '\n' ' ')"
	fi
fi
[[ -z $go_note ]] || log "$go_note"

fmt() { # 1234567 -> 1,234,567
	echo "$1" | sed ':a;s/\B[0-9]\{3\}\>/,&/;ta'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "–" }'; }

# BenchmarkTransform/N=$1 for $2 + 2 ops: -test.benchtime=Kx with K > 1 runs K + 1 ops (one
# in run1, then K), so two runs differ by exactly the difference of $2. GOGC=off: no garbage
# collection but the testing package's runtime.GC() before each round (as many in both runs),
# so the Go figure leaves out marking and sweeping: a lower bound. With the collector on, the
# count follows when cycles fall and how large the live heap is (the oracle client's here, the
# informer caches' in Gatekeeper): measured once at N=10 with constraints decoded in the op,
# 6.9 M per op with it on against 1.2 M off. GOMAXPROCS=1: no idle P spinning for work.
# asyncpreemptoff=1: callgrind 3.19 aborts on the runtime's preemption signal (threads.c:
# vgCallgrind_post_signal assertion).
go_run() {
	GOGC=off GOMAXPROCS=1 GODEBUG=asyncpreemptoff=1 \
		callgrind "go N=$1 x$(($2 + 2))" all-but-sysmon "$gotest" -test.run='^$' \
		-test.bench="^BenchmarkTransform\$/^N=$1\$" -test.benchtime="$(($2 + 1))x"
}

rows=() notes=()
for n in $ns; do
	read -r lo hi < <(calls "$n")
	# (Assignments, so that a failed run stops the script: set -e.)
	a=$(VAPGEN_BENCH_ONE="native:$n:$lo" callgrind "native N=$n x$lo" main "$bench")
	b=$(VAPGEN_BENCH_ONE="native:$n:$hi" callgrind "native N=$n x$hi" main "$bench")
	native=$(per_call "$a" "$b" "$lo" "$hi")
	a=$(VAPGEN_BENCH_ONE="wasm:$n:$lo" callgrind "wasm N=$n x$lo" main "$bench")
	b=$(VAPGEN_BENCH_ONE="wasm:$n:$hi" callgrind "wasm N=$n x$hi" main "$bench")
	wasm=$(per_call "$a" "$b" "$lo" "$hi")
	gk="–" wasm_go="–"
	if [[ -n $gotest ]]; then
		read -r glo ghi < <(go_calls "$n")
		a=$(go_run "$n" "$glo")
		b=$(go_run "$n" "$ghi")
		gk=$(per_call "$a" "$b" "$glo" "$ghi")
		wasm_go=$(ratio "$wasm" "$gk")
		gk=$(fmt "$gk")
	fi
	memset=$(per_call "$(cat "$work/memset.wasm N=$n x$lo")" "$(cat "$work/memset.wasm N=$n x$hi")" "$lo" "$hi")
	notes+=("N=$(fmt "$n"): $(fmt "$memset") of wasm's $(fmt "$wasm") ($(ratio $((100 * memset)) "$wasm") %); wasm without it / native: $(ratio $((wasm - memset)) "$native")")
	rows+=("| $(fmt "$n") | $(fmt "$native") | $(fmt "$wasm") | $(ratio "$wasm" "$native") | $gk | $wasm_go |")
done

echo "Instructions per call (callgrind Ir), one kind, same inputs as host/benches/plan.rs:"
echo
echo "| N constraints | native | wasm | wasm/native | Gatekeeper Go (decode + transform + marshal, GC off) | wasm/Go |"
echo "|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
echo
echo "memset per call (libc's, self cost; on the wasm side the pooling allocator's reset of the"
echo "instance's memory slot: rep stosb, which callgrind counts as one instruction per byte):"
printf '  %s\n' "${notes[@]}"
[[ -z $go_note ]] || { echo; echo "$go_note"; }
echo
echo "($(($(date +%s) - start)) s, valgrind $(valgrind --version | sed 's/^valgrind-//'), $(nproc) cores)"
