#!/usr/bin/env bash
# The private containerd 2.x the tests run against: its own root, state, socket, config and CNI network,
# so a system containerd (if any) is never disturbed.
#   test/containerd.sh start    start it unless it already answers; import the local images
#   test/containerd.sh stop     remove its tasks and containers, then stop it
#   test/containerd.sh restart  stop it, leaving its tasks (shims and sandboxes) running, and start it again:
#                               what an operator's containerd upgrade does
#   test/containerd.sh status   say whether it answers
#   test/containerd.sh config   (re)write its config and CNI network, print the config path
# With RUNSC_CONTAINERD_FLAVOR=1.6 it runs containerd 1.6 instead (task API v2, CRI of 1.x), on its own paths.
# Needs test/setup.sh to have run (containerd binaries, images).
set -euo pipefail
# shellcheck source=test/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# Namespaces the images are imported into: the tests' and the CRI's.
IMAGE_NAMESPACES=("$RUNSC_TEST_NAMESPACE" k8s.io)

# config_head VERSION OPT_DIR: the start of a containerd config, up to [plugins] and the opt plugin.
config_head() {
    cat <<EOF
# Written by test/containerd.sh; edits are lost on the next start.
version = $1
root = '$RUNSC_CONTAINERD_ROOT'
state = '$RUNSC_CONTAINERD_STATE'

[grpc]
  address = '$RUNSC_CONTAINERD_ADDRESS'

[debug]
  level = '${RUNSC_CONTAINERD_LOG_LEVEL:-info}'

[plugins]
  # Keep containerd's own files out of the system's /opt/containerd.
  [plugins.'io.containerd.internal.v1.opt']
    path = '$2'
EOF
}

# config_runtimes TABLE: the runsc and runc runtimes of the CRI, below TABLE (its name differs in 1.x and 2.x).
config_runtimes() {
    cat <<EOF

      [$1.runsc]
        runtime_type = 'io.containerd.runsc.v2'
        [$1.runsc.options]
          ConfigPath = '$RUNSC_RUNTIME_CONFIG'

      [$1.runc]
        runtime_type = 'io.containerd.runc.v2'
        [$1.runc.options]
          BinaryName = '/usr/sbin/runc'
EOF
}

write_config() {
    mkdir -p "$RUNSC_TEST_ETC" "$RUNSC_CNI_CONF_DIR" "$RUNSC_CONTAINERD_ROOT" "$RUNSC_CONTAINERD_STATE" \
        "$RUNSC_TEST_LOG_DIR" "$RUNSC_TEST_ROOT/cni/networks" "$RUNSC_TEST_ROOT/opt"
    if [ "${RUNSC_CONTAINERD_FLAVOR:-}" = 1.6 ]; then
        # containerd 1.6 config format (version 2): the same runtimes, CRI section names of 1.x.
        {
            config_head 2 "$RUNSC_TEST_ROOT/opt-1.6"
            cat <<EOF

  [plugins.'io.containerd.grpc.v1.cri']
    sandbox_image = '$RUNSC_PAUSE_IMAGE'
    restrict_oom_score_adj = true

    [plugins.'io.containerd.grpc.v1.cri'.containerd]
      snapshotter = 'overlayfs'
      default_runtime_name = 'runc'
EOF
            config_runtimes "plugins.'io.containerd.grpc.v1.cri'.containerd.runtimes"
            cat <<EOF

    [plugins.'io.containerd.grpc.v1.cri'.cni]
      bin_dir = '$RUNSC_CNI_BIN_DIR'
      conf_dir = '$RUNSC_CNI_CONF_DIR'
      max_conf_num = 1
EOF
        } >"$RUNSC_CONTAINERD_CONFIG.new"
    else
        # containerd 2.x config format (version 3): section names from `containerd config default`.
        {
            config_head 3 "$RUNSC_TEST_ROOT/opt"
            cat <<EOF

  # NRI's default socket (/var/run/nri/nri.sock) is shared with any system containerd; the tests need no NRI.
  [plugins.'io.containerd.nri.v1.nri']
    disable = true

  [plugins.'io.containerd.cri.v1.images']
    snapshotter = 'overlayfs'

    # Built by test/setup.sh and imported by this script: no registry is reachable.
    [plugins.'io.containerd.cri.v1.images'.pinned_images]
      sandbox = '$RUNSC_PAUSE_IMAGE'

  [plugins.'io.containerd.cri.v1.runtime']
    # Root here lacks CAP_SYS_RESOURCE: without this, lowering a container's oom_score_adj fails every pod.
    restrict_oom_score_adj = true

    [plugins.'io.containerd.cri.v1.runtime'.containerd]
      default_runtime_name = 'runc'
EOF
            config_runtimes "plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes"
            cat <<EOF

    [plugins.'io.containerd.cri.v1.runtime'.cni]
      bin_dirs = ['$RUNSC_CNI_BIN_DIR']
      conf_dir = '$RUNSC_CNI_CONF_DIR'
      max_conf_num = 1
EOF
        } >"$RUNSC_CONTAINERD_CONFIG.new"
    fi
    mv "$RUNSC_CONTAINERD_CONFIG.new" "$RUNSC_CONTAINERD_CONFIG"

    # Pod network: a bridge of its own (not the usual cni0), addresses kept in a private host-local store.
    cat >"$RUNSC_CNI_CONF_DIR/10-runsc-test.conflist.new" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "runsc-test",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "runsc-test0",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{ "subnet": "10.88.0.0/16" }]],
        "routes": [{ "dst": "0.0.0.0/0" }],
        "dataDir": "$RUNSC_TEST_ROOT/cni/networks"
      }
    },
    { "type": "loopback" }
  ]
}
EOF
    mv "$RUNSC_CNI_CONF_DIR/10-runsc-test.conflist.new" "$RUNSC_CNI_CONF_DIR/10-runsc-test.conflist"
}

# import_images: import each local image into each namespace where it is missing or out of date.
import_images() {
    local image tar want have ns
    for image in busybox pause; do
        tar=$RUNSC_IMAGE_DIR/$image.tar
        [ -f "$tar" ] || die "$tar is missing: run test/setup.sh"
        want=$(cat "$RUNSC_IMAGE_DIR/$image.digest")
        for ns in "${IMAGE_NAMESPACES[@]}"; do
            have=$(CTR -n "$ns" images ls | awk -v ref="localhost/$image:latest" '$1 == ref { print $3 }')
            [ "$have" = "$want" ] && continue
            log "importing localhost/$image:latest into namespace $ns"
            CTR -n "$ns" images import "$tar" >/dev/null ||
                die_with_log "$RUNSC_CONTAINERD_LOG" "ctr images import $tar failed"
            have=$(CTR -n "$ns" images ls | awk -v ref="localhost/$image:latest" '$1 == ref { print $3 }')
            [ "$have" = "$want" ] || die "after import, localhost/$image:latest in $ns is '$have', expected $want"
        done
    done
}

containerd_pid() {
    local pid
    [ -f "$RUNSC_CONTAINERD_PIDFILE" ] || return 1
    pid=$(cat "$RUNSC_CONTAINERD_PIDFILE")
    # Make sure the pid is still ours and not reused by another process.
    [ -n "$pid" ] && [ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = "$RUNSC_CONTAINERD_BIN/containerd" ] || return 1
    echo "$pid"
}

start() {
    require_root
    [ -x "$RUNSC_CONTAINERD_BIN/containerd" ] || die "$RUNSC_CONTAINERD_BIN/containerd is missing: run test/setup.sh"
    if containerd_up; then
        import_images
        log "containerd already answers on $RUNSC_CONTAINERD_ADDRESS"
        return 0
    fi
    if containerd_pid >/dev/null; then
        stop # alive but not answering: start over
    fi
    write_config
    rm -f "$RUNSC_CONTAINERD_ADDRESS"
    log "starting containerd on $RUNSC_CONTAINERD_ADDRESS (log: $RUNSC_CONTAINERD_LOG)"
    # The shims are found in PATH: ours in $RUNSC_PREFIX/bin, runc's next to this containerd.
    # setsid: containerd (and the shims it starts) must outlive the calling shell and its job control.
    PATH="$RUNSC_PREFIX/bin:$RUNSC_CONTAINERD_BIN:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
        nohup setsid "$RUNSC_CONTAINERD_BIN/containerd" --config "$RUNSC_CONTAINERD_CONFIG" \
        </dev/null >>"$RUNSC_CONTAINERD_LOG" 2>&1 &
    echo $! >"$RUNSC_CONTAINERD_PIDFILE"
    local i
    for i in $(seq 1 60); do
        containerd_up && break
        kill -0 "$(cat "$RUNSC_CONTAINERD_PIDFILE")" 2>/dev/null ||
            die_with_log "$RUNSC_CONTAINERD_LOG" "containerd exited during start-up"
        [ "$i" -lt 60 ] || die_with_log "$RUNSC_CONTAINERD_LOG" "containerd did not answer within 30 s"
        sleep 0.5
    done
    log "containerd $("$RUNSC_CTR" --address "$RUNSC_CONTAINERD_ADDRESS" version | awk '/Version/ {print $2; exit}') up (pid $(cat "$RUNSC_CONTAINERD_PIDFILE"))"
    import_images
}

# remove_tasks: kill and delete every task and container of this (private) containerd, so that stopping it
# leaves no shim, sandbox or mount behind (containerd itself leaves shims running on purpose).
remove_tasks() {
    local ns id
    for ns in $(CTR namespaces ls -q 2>/dev/null); do
        for id in $(CTR -n "$ns" tasks ls -q 2>/dev/null); do
            CTR -n "$ns" tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true
            timeout 20 "$RUNSC_CTR" --address "$RUNSC_CONTAINERD_ADDRESS" -n "$ns" tasks delete -f "$id" >/dev/null 2>&1 ||
                log "could not delete task $ns/$id"
        done
        for id in $(CTR -n "$ns" containers ls -q 2>/dev/null); do
            CTR -n "$ns" containers delete "$id" >/dev/null 2>&1 || log "could not delete container $ns/$id"
        done
    done
}

stop() {
    require_root
    containerd_up && remove_tasks
    stop_daemon
}

# stop_daemon: SIGTERM containerd and wait for it; its shims live on.
stop_daemon() {
    local pid i
    if pid=$(containerd_pid); then
        kill "$pid"
        for i in $(seq 1 40); do
            kill -0 "$pid" 2>/dev/null || break
            [ "$i" -lt 40 ] || { log "containerd (pid $pid) ignored SIGTERM for 20 s; sending SIGKILL"; kill -9 "$pid"; }
            sleep 0.5
        done
        log "containerd (pid $pid) stopped"
    else
        log "containerd is not running"
    fi
    rm -f "$RUNSC_CONTAINERD_PIDFILE" "$RUNSC_CONTAINERD_ADDRESS" "$RUNSC_CONTAINERD_ADDRESS.ttrpc"
}

status() {
    if containerd_up; then
        echo "containerd answers on $RUNSC_CONTAINERD_ADDRESS (pid $(containerd_pid || echo '?'))"
    else
        echo "containerd is not running (socket $RUNSC_CONTAINERD_ADDRESS)"
        return 3
    fi
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    restart) require_root; stop_daemon; start ;;
    status) status ;;
    config) require_root; write_config; echo "$RUNSC_CONTAINERD_CONFIG" ;;
    *) die "usage: $0 start|stop|restart|status|config" ;;
esac
