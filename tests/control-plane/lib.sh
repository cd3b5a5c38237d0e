# Shared helpers for tests/control-plane/{up,down,gatekeeper-up,gatekeeper-down}. Sourced, not executed.
# shellcheck shell=bash

cp_dir=${VAPGEN_CP_DIR:-/dev/shm/vapgen-cp}

log() { echo "${0##*/}: $*" >&2; }

# proc_start_time PID: the process start time (field 22 of /proc/PID/stat), empty if the
# process is gone or a zombie (killed but not yet reaped by its new parent).
proc_start_time() {
	local stat
	stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
	# The command name (field 2) may contain spaces; cut after the last ')'.
	stat=${stat##*) }
	# shellcheck disable=SC2086
	set -- $stat
	[[ $1 == [ZX] ]] && return 0
	echo "${20}"
}

# record_pid NAME PID: writes "PID STARTTIME" to $cp_dir/NAME.pid so that `down` kills
# exactly this process and never a later process that reused the pid.
record_pid() {
	echo "$2 $(proc_start_time "$2")" >"$cp_dir/$1.pid"
}

# recorded_alive NAME: prints the pid recorded for NAME if that same process still runs.
recorded_alive() {
	local f=$cp_dir/$1.pid pid start
	[[ -f $f ]] || return 1
	read -r pid start <"$f" || return 1
	[[ -n $pid && -n $start && $(proc_start_time "$pid") == "$start" ]] || return 1
	echo "$pid"
}

# stop_recorded NAME: TERM the recorded process, KILL it after a grace period.
stop_recorded() {
	local name=$1 pid i
	pid=$(recorded_alive "$name") || { rm -f "$cp_dir/$name.pid"; return 0; }
	log "stopping $name (pid $pid)"
	kill -TERM "$pid" 2>/dev/null || true
	for ((i = 0; i < 50; i++)); do
		recorded_alive "$name" >/dev/null || { rm -f "$cp_dir/$name.pid"; return 0; }
		sleep 0.1
	done
	log "$name (pid $pid) ignored TERM for 5 s, sending KILL"
	kill -KILL "$pid" 2>/dev/null || true
	for ((i = 0; i < 20; i++)); do
		recorded_alive "$name" >/dev/null || break
		sleep 0.1
	done
	rm -f "$cp_dir/$name.pid"
}

# stop_all: stop what `up` and `gatekeeper-up` recorded in $cp_dir (Gatekeeper, then the
# apiserver, then etcd) and remove its data.
stop_all() {
	local etcd_data=
	[[ -f $cp_dir/etcd-data-dir ]] && etcd_data=$(<"$cp_dir/etcd-data-dir")
	stop_recorded gatekeeper
	stop_recorded kube-apiserver
	stop_recorded etcd
	if [[ -n $etcd_data && $etcd_data == */vapgen-etcd.* ]]; then rm -rf -- "$etcd_data"; fi
	# Only remove a directory that `up` made (it writes the marker first).
	if [[ -f $cp_dir/.vapgen-cp ]]; then rm -rf -- "$cp_dir"; fi
}
