#!/usr/bin/env bash
# Quick start (README command 1): from a fresh Debian 12 machine to a container running in a runsc-rs sandbox.
#   1. test/setup.sh        packages, containerd 2.x (private copy), local busybox and pause images
#   2. contrib/install.sh   build and install the shim and the sandbox binary
#   3. test/containerd.sh   a private containerd (own socket, root and state; any system containerd is untouched)
#   4. ctr run --runtime io.containerd.runsc.v2 ...
# The private containerd stays up afterwards to play with; `test/containerd.sh stop` ends it.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=test/lib.sh
. "$repo/test/lib.sh"
require_root

"$repo/test/setup.sh"
"$repo/contrib/install.sh"
"$repo/test/containerd.sh" start

id=quickstart-$$
log "running $RUNSC_BUSYBOX_IMAGE with runtime io.containerd.runsc.v2 as $id"
echo "\$ ctr --address $RUNSC_CONTAINERD_ADDRESS -n $RUNSC_TEST_NAMESPACE run --rm --runtime io.containerd.runsc.v2 $RUNSC_BUSYBOX_IMAGE $id sh -c '...'"
if ! CTR run --rm --runtime io.containerd.runsc.v2 "$RUNSC_BUSYBOX_IMAGE" "$id" \
    sh -c 'echo hello from a runsc-rs sandbox; id; uname -a'; then
    log_tail "$RUNSC_CONTAINERD_LOG"
    die "the container failed; shim and sandbox logs are under /var/log/runsc-rs"
fi
cat <<EOF

Done. Try more with the same containerd:
  $RUNSC_CTR --address $RUNSC_CONTAINERD_ADDRESS -n $RUNSC_TEST_NAMESPACE run --rm -t --runtime io.containerd.runsc.v2 $RUNSC_BUSYBOX_IMAGE demo sh
Stop it with: $repo/test/containerd.sh stop
EOF
