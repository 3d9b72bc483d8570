#!/usr/bin/env bash
# Installs runsc-rs on a Kubernetes node from prebuilt binaries, the way the
# DaemonSet in contrib/k8s/runsc-rs-installer.yaml runs it:
#   node-install.sh SRC_DIR HOST_ROOT
# copies SRC_DIR/{containerd-shim-runsc-v2,runsc-sandbox} to HOST_ROOT/usr/local/bin,
# installs HOST_ROOT/etc/runsc-rs/runsc.toml if absent, and appends the
# runtime handler `runsc` to HOST_ROOT/etc/containerd/config.toml unless it is
# there. containerd must then be restarted (the script says so; it does not
# restart it, since how depends on the node's init system).
set -euo pipefail
src=${1:?usage: node-install.sh SRC_DIR HOST_ROOT}
root=${2:-/}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

install -d "$root/usr/local/bin" "$root/etc/runsc-rs"
for bin in containerd-shim-runsc-v2 runsc-sandbox; do
    # Replace atomically: running shims keep the old file.
    install -m 0755 "$src/$bin" "$root/usr/local/bin/.$bin.new"
    mv -f "$root/usr/local/bin/.$bin.new" "$root/usr/local/bin/$bin"
done
[ -e "$root/etc/runsc-rs/runsc.toml" ] || install -m 0644 "$here/runsc.toml" "$root/etc/runsc-rs/runsc.toml"

config=$root/etc/containerd/config.toml
if [ -f "$config" ] && ! grep -q "io.containerd.runsc.v2" "$config"; then
    if grep -q '^version *= *3' "$config"; then
        sed -n '/^\[plugins/,$p' "$here/containerd-config.toml" >>"$config"
    else
        # containerd 1.6/1.7 (config version 2).
        cat >>"$config" <<'TOML'

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runsc]
  runtime_type = "io.containerd.runsc.v2"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runsc.options]
    ConfigPath = "/etc/runsc-rs/runsc.toml"
TOML
    fi
    echo "node-install: added the runsc handler to $config; restart containerd to use it"
else
    echo "node-install: $config already names io.containerd.runsc.v2 (or is missing); left as is"
fi
