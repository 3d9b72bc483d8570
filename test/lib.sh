# shellcheck shell=bash disable=SC2034
# Shared paths and helpers for test/*.sh and contrib/quickstart.sh. Source it; it sets no shell options.
#
# Everything the tests touch lives under private paths, so a system containerd (if any) is never disturbed.

RUNSC_REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# containerd 2.x (task API v3) unpacked from Debian sid into a private prefix (see setup.sh).
RUNSC_CONTAINERD_PREFIX=/opt/runsc-rs/containerd
RUNSC_CONTAINERD_BIN=$RUNSC_CONTAINERD_PREFIX/usr/bin
# Private apt configuration (sources, lists, archives) used only to download containerd from sid.
RUNSC_APT_SID_DIR=/var/cache/runsc-rs/apt-sid

# The private containerd instance used by the tests.
RUNSC_TEST_ROOT=/var/lib/runsc-rs-test
RUNSC_TEST_STATE=/run/runsc-rs-test
RUNSC_TEST_ETC=/etc/runsc-rs-test
RUNSC_TEST_LOG_DIR=/var/log/runsc-rs-test
RUNSC_CONTAINERD_ROOT=$RUNSC_TEST_ROOT/containerd
RUNSC_CONTAINERD_STATE=$RUNSC_TEST_STATE/containerd
RUNSC_CONTAINERD_CONFIG=$RUNSC_TEST_ETC/containerd.toml
RUNSC_CONTAINERD_LOG=$RUNSC_TEST_LOG_DIR/containerd.log
RUNSC_CONTAINERD_PIDFILE=$RUNSC_TEST_STATE/containerd.pid
RUNSC_CNI_CONF_DIR=$RUNSC_TEST_ETC/cni/net.d
RUNSC_CNI_BIN_DIR=/usr/lib/cni

# Locally built images (no registry is reachable): OCI archives and the plain rootfs they were made from.
RUNSC_IMAGE_DIR=$RUNSC_TEST_ROOT/images
RUNSC_BUSYBOX_IMAGE=localhost/busybox:latest
RUNSC_PAUSE_IMAGE=localhost/pause:latest

# Where the shim and the sandbox binary are installed (contrib/install.sh) and the shim's runtime options.
RUNSC_PREFIX=${PREFIX:-/usr/local}
RUNSC_RUNTIME_CONFIG=/etc/runsc-rs/runsc.toml

# The environment the Rust tests read.
export RUNSC_TEST_ROOTFS=$RUNSC_TEST_ROOT/rootfs/busybox     # plain busybox rootfs directory (sandbox tests)
export RUNSC_CONTAINERD_ADDRESS=$RUNSC_TEST_STATE/containerd.sock
export RUNSC_CTR=$RUNSC_CONTAINERD_BIN/ctr
export RUNSC_TEST_NAMESPACE=runsc-test
export RUNSC_TEST_IMAGE=$RUNSC_BUSYBOX_IMAGE
export RUNSC_TEST_PAUSE_IMAGE=$RUNSC_PAUSE_IMAGE

# containerd 1.6 (bookworm's own package, task API v2), unpacked like the 2.x one (see setup.sh).
RUNSC_CONTAINERD16_PREFIX=/opt/runsc-rs/containerd-1.6
# RUNSC_CONTAINERD_FLAVOR=1.6: the same scripts and ctr tests against containerd 1.6, with its own root, state,
# socket, config and log (images and rootfs are shared).
if [ "${RUNSC_CONTAINERD_FLAVOR:-}" = 1.6 ]; then
    RUNSC_CONTAINERD_PREFIX=$RUNSC_CONTAINERD16_PREFIX
    RUNSC_CONTAINERD_BIN=$RUNSC_CONTAINERD_PREFIX/usr/bin
    RUNSC_CONTAINERD_ROOT=$RUNSC_TEST_ROOT/containerd-1.6
    RUNSC_CONTAINERD_STATE=$RUNSC_TEST_STATE/containerd-1.6
    RUNSC_CONTAINERD_CONFIG=$RUNSC_TEST_ETC/containerd-1.6.toml
    RUNSC_CONTAINERD_LOG=$RUNSC_TEST_LOG_DIR/containerd-1.6.log
    RUNSC_CONTAINERD_PIDFILE=$RUNSC_TEST_STATE/containerd-1.6.pid
    export RUNSC_CONTAINERD_ADDRESS=$RUNSC_TEST_STATE/containerd-1.6.sock
    export RUNSC_CTR=$RUNSC_CONTAINERD_BIN/ctr
fi
# Where the tests find bundles (io.containerd.runtime.v2.task/<namespace>/<id>).
export RUNSC_CONTAINERD_STATE

# cargo is often only in root's ~/.cargo/bin, which non-login shells lack.
if ! command -v cargo >/dev/null 2>&1 && [ -x "${HOME:-/root}/.cargo/bin/cargo" ]; then
    PATH=${HOME:-/root}/.cargo/bin:$PATH
fi

# CTR [args...]: ctr talking to the private containerd, in the test namespace unless -n/--namespace is given
# (the namespace goes through ctr's environment default, since ctr rejects the flag twice).
CTR() {
    CONTAINERD_NAMESPACE=${CONTAINERD_NAMESPACE:-$RUNSC_TEST_NAMESPACE} \
        "$RUNSC_CTR" --address "$RUNSC_CONTAINERD_ADDRESS" "$@"
}

log() { printf '[%s] %s\n' "$(basename "$0")" "$*" >&2; }

die() {
    printf '[%s] ERROR: %s\n' "$(basename "$0")" "$*" >&2
    exit 1
}

# log_tail FILE [LINES]: show the end of a log, for failures that are explained there.
log_tail() {
    local file=$1 lines=${2:-40}
    [ -f "$file" ] || return 0
    printf -- '--- last %s lines of %s ---\n' "$lines" "$file" >&2
    tail -n "$lines" "$file" >&2
    printf -- '--- end of %s ---\n' "$file" >&2
}

# die_with_log FILE MESSAGE: die, showing the log that explains why.
die_with_log() {
    local file=$1
    shift
    log_tail "$file"
    die "$@"
}

require_root() {
    [ "$(id -u)" -eq 0 ] || die "must run as root (containerd, mounts and namespaces need it)"
}

# containerd_up: does the private containerd answer?
containerd_up() {
    [ -S "$RUNSC_CONTAINERD_ADDRESS" ] && [ -x "$RUNSC_CTR" ] &&
        timeout 5 "$RUNSC_CTR" --address "$RUNSC_CONTAINERD_ADDRESS" version >/dev/null 2>&1
}
