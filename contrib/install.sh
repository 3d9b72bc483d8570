#!/usr/bin/env bash
# Builds runsc-rs and installs it:
#   ${PREFIX:-/usr/local}/bin/containerd-shim-runsc-v2   the containerd shim (runtime io.containerd.runsc.v2)
#   ${PREFIX:-/usr/local}/bin/runsc-sandbox              the per-pod sandbox process
#   /etc/runsc-rs/runsc.toml                             runtime options (only if absent: it is the operator's)
# containerd finds the shim through its PATH; see contrib/containerd-config.toml for the CRI runtime handler.
# RUNSC_BUILD_PROFILE=dev installs a debug build (faster to build, for development); default: release.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
prefix=${PREFIX:-/usr/local}
profile=${RUNSC_BUILD_PROFILE:-release}
config_dir=/etc/runsc-rs

die() {
    printf '[install.sh] ERROR: %s\n' "$*" >&2
    exit 1
}
log() { printf '[install.sh] %s\n' "$*" >&2; }

# cargo is often only in root's ~/.cargo/bin, which non-login shells lack.
if ! command -v cargo >/dev/null 2>&1 && [ -x "${HOME:-/root}/.cargo/bin/cargo" ]; then
    PATH=${HOME:-/root}/.cargo/bin:$PATH
fi
command -v cargo >/dev/null 2>&1 || die "cargo not found: install a Rust toolchain (https://rustup.rs) first"

case "$profile" in
    release) out=release ;;
    dev | debug) profile=dev out=debug ;;
    *) die "RUNSC_BUILD_PROFILE must be release or dev, not '$profile'" ;;
esac

log "building ($profile profile) in $repo"
(cd "$repo" && cargo build --profile "$profile" -p shim -p sandbox) || die "cargo build failed; nothing was installed"

target_dir=${CARGO_TARGET_DIR:-$repo/target}
case "$target_dir" in /*) ;; *) target_dir=$repo/$target_dir ;; esac
for bin in containerd-shim-runsc-v2 runsc-sandbox; do
    [ -x "$target_dir/$out/$bin" ] || die "cargo build succeeded but $target_dir/$out/$bin was not built"
done

[ -w "$prefix/bin" ] || [ ! -e "$prefix/bin" ] || die "$prefix/bin is not writable: run as root or set PREFIX"
mkdir -p "$prefix/bin"
for bin in containerd-shim-runsc-v2 runsc-sandbox; do
    # Copy then rename: replacing a binary that a running shim or sandbox executes in place fails (ETXTBSY).
    install -m 0755 "$target_dir/$out/$bin" "$prefix/bin/.$bin.new"
    mv -f "$prefix/bin/.$bin.new" "$prefix/bin/$bin"
    log "installed $prefix/bin/$bin"
done

if [ -e "$config_dir/runsc.toml" ]; then
    log "kept existing $config_dir/runsc.toml"
else
    install -D -m 0644 "$repo/contrib/runsc.toml" "$config_dir/runsc.toml"
    log "installed $config_dir/runsc.toml"
fi

case ":$PATH:" in
    *":$prefix/bin:"*) ;;
    *) log "note: $prefix/bin is not in this PATH; containerd's PATH must contain it to find the shim" ;;
esac
log "done. containerd 2.x (or 1.6/1.7): add contrib/containerd-config.toml to its config for the CRI handler 'runsc';"
log "ctr: ctr run --runtime io.containerd.runsc.v2 IMAGE ID CMD..."
