#!/usr/bin/env bash
# The project's test command (README command 2; CI runs it through .ci/run). As root, on Debian 12:
#   1. test/setup.sh                      packages, containerd 2.x, local images, busybox rootfs
#   2. cargo fmt --check, cargo clippy -D warnings
#   3. cargo test --workspace             unit tests and sandbox integration tests (RUNSC_TEST_ROOTFS)
#   4. contrib/install.sh                 release build of the shim and the sandbox into /usr/local/bin
#   5. test/containerd.sh start           the private containerd (left as found at the end)
#   6. cargo test -p runsc-tests --test '*'   end-to-end suite through containerd (RUNSC_E2E=1)
#   7. cargo test -p runsc-cri-tests      pods through containerd's CRI, handler runsc (RUNSC_E2E=1)
#   8. the ctr suite and the CRI suite again against containerd 1.6 (task API v2), started and stopped for it
# Stops at the first failing step and prints a PASS/FAIL summary with the test counts.
# RUNSC_BUILD_PROFILE=dev makes step 4 install a debug build (quicker while developing).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
# shellcheck source=test/lib.sh
. test/lib.sh
require_root

mkdir -p "$RUNSC_TEST_LOG_DIR"
cargo_log=$RUNSC_TEST_LOG_DIR/cargo-test.log
: >"$cargo_log"
current=""
passed_steps=()
started_containerd=0

# The end-to-end tests are opted into by step 6 only.
unset RUNSC_E2E

summary() {
    local rc=$? p=0 f=0 i=0
    trap - EXIT
    if [ "$started_containerd" = 1 ] && [ "${RUNSC_KEEP_CONTAINERD:-0}" != 1 ]; then
        "$repo/test/containerd.sh" stop || true
    fi
    # Totals of cargo's "test result: ok. 5 passed; 0 failed; 1 ignored; ..." lines.
    read -r p f i < <(awk '/^test result:/ {
            for (k = 1; k <= NF; k++) {
                if ($(k+1) ~ /^passed;?$/) p += $k; if ($(k+1) ~ /^failed;?$/) f += $k; if ($(k+1) ~ /^ignored;?$/) i += $k
            }
        } END { print p+0, f+0, i+0 }' "$cargo_log")
    echo
    echo "================ runsc-rs test summary ================"
    for s in "${passed_steps[@]}"; do echo "  ok    $s"; done
    if [ "$rc" -eq 0 ]; then
        echo "PASS: all steps succeeded"
    else
        echo "  FAIL  $current"
        echo "FAIL: step '$current' failed (exit $rc); cargo output: $cargo_log"
    fi
    # Counts only when cargo test ran, in the plain form CI reads.
    if grep -q '^test result:' "$cargo_log"; then echo "tests: $p passed, $f failed, $i skipped"; fi
    exit "$rc"
}
trap summary EXIT

step() {
    current=$1
    shift
    echo
    log "==== $current"
    "$@"
    passed_steps+=("$current")
}

# cargo test, its output also kept for the summary's counts.
cargo_test() {
    cargo test "$@" 2>&1 | tee -a "$cargo_log"
}

e2e() {
    if [ -z "$(find test/tests -name '*.rs' 2>/dev/null | head -n 1)" ]; then
        log "WARNING: no end-to-end tests (test/tests/*.rs) yet: nothing to run"
        return 0
    fi
    RUNSC_E2E=1 cargo_test -p runsc-tests --test '*' -- --test-threads=1 || {
        log_tail "$RUNSC_CONTAINERD_LOG" 60
        log "shim and sandbox logs: /var/log/runsc-rs"
        return 1
    }
}

# Pods through containerd's CRI (test/cri): the same containerd, namespace k8s.io, handler runsc.
cri_e2e() {
    RUNSC_E2E=1 cargo_test -p runsc-cri-tests -- --test-threads=1 || {
        log_tail "$RUNSC_CONTAINERD_LOG" 60
        log "shim and sandbox logs: /var/log/runsc-rs; kept pod logs: /var/lib/runsc-rs-test/cri"
        return 1
    }
}

# The ctr and CRI suites again, against containerd 1.6 (task API v2, the CRI of 1.x): its own daemon,
# started and stopped here.
legacy_e2e() {
    local rc=0
    RUNSC_CONTAINERD_FLAVOR=1.6 test/containerd.sh start || return 1
    (
        export RUNSC_CONTAINERD_FLAVOR=1.6
        # shellcheck source=test/lib.sh
        . test/lib.sh
        { RUNSC_E2E=1 cargo_test -p runsc-tests --test ctr -- --test-threads=1 &&
            RUNSC_E2E=1 cargo_test -p runsc-cri-tests -- --test-threads=1; } || {
            log_tail "$RUNSC_CONTAINERD_LOG" 60
            exit 1
        }
    ) || rc=1
    RUNSC_CONTAINERD_FLAVOR=1.6 test/containerd.sh stop || rc=1
    return "$rc"
}

start_containerd() {
    containerd_up || started_containerd=1
    test/containerd.sh start
}

step "setup (test/setup.sh)" test/setup.sh
step "cargo fmt --check" cargo fmt --all -- --check
step "cargo clippy -D warnings" cargo clippy --workspace --all-targets -- -D warnings
step "cargo test --workspace (unit + sandbox integration)" cargo_test --workspace
step "install (contrib/install.sh)" contrib/install.sh
step "containerd start" start_containerd
step "end-to-end (cargo test -p runsc-tests, RUNSC_E2E=1)" e2e
step "CRI end-to-end (cargo test -p runsc-cri-tests, RUNSC_E2E=1)" cri_e2e
step "containerd 1.6, task API v2 (ctr and CRI suites, RUNSC_E2E=1)" legacy_e2e
