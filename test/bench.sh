#!/usr/bin/env bash
# Benchmark of runsc-rs against runc through containerd, from one run, side by side:
#   cold start    `ctr run --rm IMAGE ID true`, wall time of ctr
#   exec latency  `ctr task exec --exec-id E ID true` into a running `sleep` container
#   syscall loop  `dd if=/dev/zero of=/dev/null bs=1` inside that container, timed by busybox time
#   idle memory   PSS (sum of Pss in /proc/PID/smaps_rollup) of one idle `sleep` container's
#                 shim + runsc-sandbox processes (runc: its shim; runc has no sandbox process),
#                 and, separately, of the container's own processes
#   Stats latency Task.Stats of a running `sleep` container, timed two ways: `ctr task metrics`
#                 (ctr's start and containerd included), and the RPC alone, sent straight to the
#                 shim's socket on one connection (test/src/bin/shim-stats-latency.rs)
# Each figure: min, median and max over BENCH_RUNS runs (default 20), after one unmeasured warm-up;
# the Stats latencies: median and p99 over BENCH_STATS_RUNS ctr calls (default 100) and
# BENCH_STATS_RPC_RUNS direct calls (default 1000).
# Uses the private containerd of test/containerd.sh (started if needed, and then stopped again).
#   BENCH_RUNS=N                number of runs of each measurement
#   BENCH_RUNTIMES="A B"        runtimes to compare (default: io.containerd.runsc.v2 io.containerd.runc.v2
#                               io.containerd.runc.v2+seccomp); a "+seccomp" suffix runs that runtime's containers
#                               with containerd's default seccomp profile (`ctr run --seccomp`), as Kubernetes'
#                               RuntimeDefault does: our sandbox always has a seccomp filter, and any filter puts
#                               every syscall on the kernel's slower entry path;
#                               an absolute path to a shim binary is a runtime too (e.g. a build not installed)
#   BENCH_SETTLE=S              seconds an idle container settles before its memory is read (default 1)
#   BENCH_STATS_RUNS=N          `ctr task metrics` calls timed (default 100)
#   BENCH_STATS_RPC_RUNS=N      direct Stats calls timed (default 1000; 0 skips them and their build)
set -euo pipefail
# shellcheck source=test/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_root

RUNS=${BENCH_RUNS:-20}
# The syscall loop: runs, and bytes copied one at a time (two syscalls each).
SYSCALL_RUNS=${BENCH_SYSCALL_RUNS:-5}
SYSCALL_COUNT=${BENCH_SYSCALL_COUNT:-2000000}
SETTLE=${BENCH_SETTLE:-1}
STATS_RUNS=${BENCH_STATS_RUNS:-100}
STATS_RPC_RUNS=${BENCH_STATS_RPC_RUNS:-1000}
read -r -a RUNTIMES <<<"${BENCH_RUNTIMES:-io.containerd.runsc.v2 io.containerd.runc.v2 io.containerd.runc.v2+seccomp}"
IMAGE=$RUNSC_TEST_IMAGE
PREFIX=bench-$$
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "BENCH_RUNS must be a positive integer, not '$RUNS'"
[[ $STATS_RUNS =~ ^[1-9][0-9]*$ ]] || die "BENCH_STATS_RUNS must be a positive integer, not '$STATS_RUNS'"
[[ $STATS_RPC_RUNS =~ ^[0-9]+$ ]] || die "BENCH_STATS_RPC_RUNS must be a non-negative integer, not '$STATS_RPC_RUNS'"

work=$(mktemp -d /tmp/runsc-bench.XXXXXX)
started_containerd=0

# remove_ours: delete every container this run created (also after a failure or ^C).
remove_ours() {
    local id
    containerd_up || return 0
    for id in $(CTR containers ls -q 2>/dev/null | grep "^$PREFIX-" || true); do
        CTR tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true
        timeout 30 "$RUNSC_CTR" --address "$RUNSC_CONTAINERD_ADDRESS" -n "$RUNSC_TEST_NAMESPACE" \
            tasks delete -f "$id" >/dev/null 2>&1 || true
        CTR containers delete "$id" >/dev/null 2>&1 || log "could not delete container $id"
    done
}

finish() {
    local rc=$?
    trap - EXIT INT TERM
    remove_ours
    if [ "$started_containerd" = 1 ]; then "$RUNSC_REPO_ROOT/test/containerd.sh" stop >/dev/null 2>&1 || true; fi
    rm -rf "$work"
    exit "$rc"
}
trap finish EXIT
trap 'exit 130' INT TERM

if ! containerd_up; then
    "$RUNSC_REPO_ROOT/test/containerd.sh" start >&2
    started_containerd=1
fi

# now_ns: monotonic-enough wall clock in nanoseconds.
now_ns() { date +%s%N; }

# timed_ctr OUTFILE ARGS...: run ctr (60 s at most), append its wall time in ms to OUTFILE; die on failure.
timed_ctr() {
    local out=$1 t0 t1 rc=0
    shift
    t0=$(now_ns)
    timeout -s KILL 60 env CONTAINERD_NAMESPACE="$RUNSC_TEST_NAMESPACE" \
        "$RUNSC_CTR" --address "$RUNSC_CONTAINERD_ADDRESS" "$@" >"$work/last.out" 2>&1 || rc=$?
    t1=$(now_ns)
    if [ "$rc" -ne 0 ]; then
        cat "$work/last.out" >&2
        die "ctr $* failed (exit $rc)"
    fi
    [ -z "$out" ] || awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f\n", (b - a) / 1e6 }' >>"$out"
}

# stats FILE [FORMAT]: "min median max" of the numbers in FILE (one a line), each printed with FORMAT.
stats() {
    sort -n "$1" | awk -v f="${2:-%.1f}" '{ v[NR] = $1 } END {
        if (NR == 0) { print "- - -"; exit }
        m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
        printf f " " f " " f "\n", v[1], m, v[NR] }'
}

# pct FILE: "median p99" of the numbers in FILE (nearest rank), each printed with %.1f.
pct() {
    sort -n "$1" | awk '{ v[NR] = $1 } END {
        if (NR == 0) { print "- -"; exit }
        m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
        r = int(NR * 0.99); if (r < NR * 0.99) r++; if (r < 1) r = 1
        printf "%.1f %.1f\n", m, v[r] }'
}

# shim_socket ID: the socket of the shim serving task ID (from its bundle's bootstrap.json).
shim_socket() {
    sed -n 's|.*"address":"unix://\([^"]*\)".*|\1|p' \
        "$RUNSC_CONTAINERD_STATE/io.containerd.runtime.v2.task/$RUNSC_TEST_NAMESPACE/$1/bootstrap.json" 2>/dev/null
}

# The direct Stats client (test/src/bin/shim-stats-latency.rs), built once; empty when unavailable.
stats_client=""
if [ "$STATS_RPC_RUNS" -gt 0 ]; then
    log "building the direct Stats client (test/src/bin/shim-stats-latency.rs)"
    if (cd "$RUNSC_REPO_ROOT" && cargo build -q -p runsc-tests --bin shim-stats-latency) >&2; then
        target_dir=${CARGO_TARGET_DIR:-$RUNSC_REPO_ROOT/target}
        case "$target_dir" in /*) ;; *) target_dir=$RUNSC_REPO_ROOT/$target_dir ;; esac
        stats_client=$target_dir/debug/shim-stats-latency
    else
        log "could not build the direct Stats client: its rows are left out"
    fi
fi

# shim_pid ID: pid of the shim serving container ID (argv0 containerd-shim-*, flag -id ID).
shim_pid() {
    ps -e -o pid=,args= | awk -v id="$1" '{
        n = split($2, p, "/"); if (p[n] !~ /^containerd-shim-/) next
        for (i = 3; i < NF; i++) if (($i == "-id" || $i == "--id") && $(i + 1) == id) { print $1; exit }
    }'
}

# descendants PID: pids of every descendant of PID, with their argv0 ("PID ARGV0" lines).
descendants() {
    ps -e -o pid=,ppid=,args= | awk -v root="$1" '
        { parent[$1] = $2; argv0[$1] = $3; pids[NR] = $1 }
        END {
            keep[root] = 1; changed = 1
            while (changed) {
                changed = 0
                for (i in pids) { p = pids[i]; if (!(p in keep) && (parent[p] in keep)) { keep[p] = 1; changed = 1 } }
            }
            for (p in keep) if (p != root) print p, argv0[p]
        }'
}

# pss_kib PID...: sum of Pss (KiB) of the given processes.
pss_kib() {
    local pid total=0 v
    for pid in "$@"; do
        v=$(awk '/^Pss:/ { print $2; exit }' "/proc/$pid/smaps_rollup" 2>/dev/null || true)
        total=$((total + ${v:-0}))
    done
    echo "$total"
}

# bench_runtime RUNTIME KEY: all measurements of one runtime into $work/KEY.*.
bench_runtime() {
    local rt=$1 key=$2 i id shim runtime_pids workload_pids pid argv0 flags=()
    case $rt in *+seccomp) rt=${rt%+seccomp}; flags=(--seccomp) ;; esac
    log "$rt: cold start x$RUNS"
    timed_ctr "" run --rm "${flags[@]}" --runtime "$rt" "$IMAGE" "$PREFIX-$key-warm" true
    for i in $(seq 1 "$RUNS"); do
        timed_ctr "$work/$key.cold" run --rm "${flags[@]}" --runtime "$rt" "$IMAGE" "$PREFIX-$key-cold-$i" true
    done

    log "$rt: exec latency x$RUNS"
    id=$PREFIX-$key-exec
    timed_ctr "" run -d "${flags[@]}" --runtime "$rt" "$IMAGE" "$id" sleep 3600
    timed_ctr "" task exec --exec-id warm "$id" true
    for i in $(seq 1 "$RUNS"); do
        timed_ctr "$work/$key.exec" task exec --exec-id "e$i" "$id" true
    done

    log "$rt: syscall loop x$SYSCALL_RUNS (dd bs=1 count=$SYSCALL_COUNT: 2 syscalls a byte)"
    for i in $(seq 1 "$SYSCALL_RUNS"); do
        # busybox time prints "real\t0m 1.23s" on stderr; measured inside the
        # container, so neither ctr nor containerd is in the figure.
        CTR task exec --exec-id "sys$i" "$id" busybox time dd if=/dev/zero of=/dev/null bs=1 \
            count="$SYSCALL_COUNT" 2>&1 | awk '/^real/ {
                split($2, m, "m"); s = $3; sub(/s$/, "", s); printf "%.0f\n", (m[1] * 60 + s) * 1000
            }' >>"$work/$key.syscall"
    done

    log "$rt: Stats latency: ctr task metrics x$STATS_RUNS, direct RPC x$STATS_RPC_RUNS"
    timed_ctr "" task metrics "$id"
    for i in $(seq 1 "$STATS_RUNS"); do
        timed_ctr "$work/$key.metrics" task metrics "$id"
    done
    if [ -n "$stats_client" ]; then
        local socket
        socket=$(shim_socket "$id")
        [ -n "$socket" ] || die "no shim socket found for $id"
        "$stats_client" "$socket" "$RUNSC_TEST_NAMESPACE" "$id" "$STATS_RPC_RUNS" \
            >"$work/$key.statsrpc" 2>"$work/last.out" || {
            cat "$work/last.out" >&2
            die "direct Stats calls to $socket failed"
        }
    fi
    remove_ours

    log "$rt: idle memory x$RUNS"
    for i in $(seq 1 "$RUNS"); do
        id=$PREFIX-$key-mem-$i
        timed_ctr "" run -d "${flags[@]}" --runtime "$rt" "$IMAGE" "$id" sleep 3600
        sleep "$SETTLE"
        shim=$(shim_pid "$id")
        [ -n "$shim" ] || die "no shim process found for $id"
        runtime_pids=("$shim")
        workload_pids=()
        while read -r pid argv0; do
            [ -n "$pid" ] || continue
            if [ "$argv0" = runsc-sandbox ]; then runtime_pids+=("$pid"); else workload_pids+=("$pid"); fi
        done < <(descendants "$shim")
        awk -v k="$(pss_kib "${runtime_pids[@]}")" 'BEGIN { printf "%.1f\n", k / 1024 }' >>"$work/$key.pss"
        awk -v k="$(pss_kib "${workload_pids[@]}")" 'BEGIN { printf "%.1f\n", k / 1024 }' >>"$work/$key.work"
        echo "${#runtime_pids[@]}" >>"$work/$key.nproc"
        remove_ours
    done
}

# shim_binary RUNTIME: the shim binary containerd runs for RUNTIME (a name like io.containerd.runc.v2,
# or an absolute path to a shim binary, which containerd accepts as a runtime too).
shim_binary() {
    case ${1%+seccomp} in
        /*) echo "${1%+seccomp}" ;;
        *) echo "containerd-shim-$(echo "${1%+seccomp}" | awk -F. '{ print $(NF-1) "-" $NF }')" ;;
    esac
}

keys=()
for rt in "${RUNTIMES[@]}"; do
    key=$(echo "$rt" | tr -cs 'a-zA-Z0-9\n' '_' | sed 's/^_//; s/_$//')
    shim_bin=$(shim_binary "$rt")
    if ! PATH="$RUNSC_PREFIX/bin:$RUNSC_CONTAINERD_BIN:$PATH" command -v "$shim_bin" >/dev/null; then
        log "$rt: $shim_bin is not installed: skipped"
        keys+=("-")
        continue
    fi
    bench_runtime "$rt" "$key"
    keys+=("$key")
done

# The table: one row per figure, one column per runtime (min / median / max).
cpus=$(nproc)
version=$("$RUNSC_CTR" --address "$RUNSC_CONTAINERD_ADDRESS" version | awk '/Version/ { v = $2 } END { print v }')
echo
echo "runsc-rs benchmark: $RUNS runs each (min / median / max), containerd $version, $IMAGE, $cpus CPUs, kernel $(uname -r)"
for rt in "${RUNTIMES[@]}"; do
    shim_bin=$(shim_binary "$rt")
    path=$(PATH="$RUNSC_PREFIX/bin:$RUNSC_CONTAINERD_BIN:$PATH" command -v "$shim_bin" || true)
    [ -n "$path" ] && echo "  $rt: $path ($(du -m "$path" | cut -f1) MiB)"
done
printf '%-40s' ""
for rt in "${RUNTIMES[@]}"; do printf '  %-30s' "$rt"; done
echo
row() {
    local label=$1 suffix=$2 format=${3:-%.1f} key min med max
    printf '%-40s' "$label"
    for key in "${keys[@]}"; do
        if [ "$key" = - ] || [ ! -s "$work/$key.$suffix" ]; then
            printf '  %-30s' "not installed"
            continue
        fi
        read -r min med max < <(stats "$work/$key.$suffix" "$format")
        printf '  %-30s' "$min / $med / $max"
    done
    echo
}
row "cold start, ctr run --rm true (ms)" cold
row "exec latency, ctr task exec true (ms)" exec
row "syscall loop, dd bs=1 inside (ms)" syscall %d
row "idle PSS, shim + sandbox (MiB)" pss
row "  processes counted" nproc %d
row "idle PSS, container's processes (MiB)" work
# pct_row LABEL SUFFIX: "median / p99" of $work/KEY.SUFFIX for each runtime.
pct_row() {
    local label=$1 suffix=$2 key med p99
    printf '%-40s' "$label"
    for key in "${keys[@]}"; do
        if [ "$key" = - ] || [ ! -s "$work/$key.$suffix" ]; then
            printf '  %-30s' "-"
            continue
        fi
        read -r med p99 < <(pct "$work/$key.$suffix")
        printf '  %-30s' "$med / $p99"
    done
    echo
}
echo
printf '%-40s' "Stats latency (median / p99)"
echo
pct_row "  ctr task metrics (ms)" metrics
pct_row "  Task.Stats RPC to the shim (µs)" statsrpc
echo
echo "Memory: shim + runsc-sandbox processes for runsc-rs; the shim alone for runc, which has no sandbox"
echo "process (its container runs directly on the host kernel). The container's own processes (sleep) are"
echo "shown apart for both."
echo "Stats: \`ctr task metrics\` includes ctr's own start and containerd's hop; the RPC row is Task.Stats"
echo "alone, sent to the shim's socket over one connection (test/src/bin/shim-stats-latency.rs)."
