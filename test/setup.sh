#!/usr/bin/env bash
# Prepares this machine for the tests (Debian 12 bookworm, root):
#   - bookworm packages: runc (baseline runtime), CNI plugins, busybox-static, tools;
#   - containerd 2.x (task API v3) from Debian sid, unpacked into a private prefix, never installed;
#   - containerd 1.6 (task API v2), bookworm's own package, unpacked the same way;
#   - local images built without a registry: localhost/busybox:latest and localhost/pause:latest,
#     plus the plain busybox rootfs directory the sandbox tests use ($RUNSC_TEST_ROOTFS).
# Idempotent: each step is skipped when its result is already there, so a repeat run takes seconds.
# The private containerd's config is written by test/containerd.sh, which owns that instance.
set -euo pipefail
# shellcheck source=test/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_root

BOOKWORM_PACKAGES=(runc containernetworking-plugins busybox-static iproute2 iptables jq gcc libc6-dev)

install_bookworm_packages() {
    local missing=() p
    for p in "${BOOKWORM_PACKAGES[@]}"; do
        [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" = "install ok installed" ] || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    log "installing from bookworm: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # The package lists may be stale or absent (fresh container): update once and retry.
    apt-get install -y --no-install-recommends "${missing[@]}" ||
        { apt-get update && apt-get install -y --no-install-recommends "${missing[@]}"; } ||
        die "apt-get install ${missing[*]} failed"
}

# debian_mirror: the URI of this machine's own Debian mirror, read from its apt sources (the stanza or line
# whose suite is bookworm and whose components include main). No mirror host name is written anywhere.
debian_mirror() {
    local uri="" f
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        uri=$(awk '
            function has(list, word) { return (" " list " ") ~ (" " word " ") }
            function flush() {
                if (!found && uri != "" && enabled != "no" && has(types, "deb") && has(suites, "bookworm") && has(comps, "main")) {
                    print uri; found = 1
                }
                types = suites = comps = uri = enabled = ""
            }
            /^[ \t]*$/ { flush(); next }
            /^[ \t]*#/ { next }
            {
                key = tolower($1); $1 = ""; sub(/^ +/, "")
                if (key == "types:") types = $0
                else if (key == "suites:") suites = $0
                else if (key == "components:") comps = $0
                else if (key == "enabled:") enabled = tolower($0)
                else if (key == "uris:") { split($0, u, " "); uri = u[1] }
            }
            END { flush() }' "$f")
        [ -n "$uri" ] && break
    done
    if [ -z "$uri" ]; then
        # One-line format: deb [options] URI suite component...
        uri=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | awk '
            /^[ \t]*deb[ \t]/ {
                gsub(/\[[^]]*\]/, "")
                ok = 0; for (i = 4; i <= NF; i++) if ($i == "main") ok = 1
                if ($3 == "bookworm" && ok) { print $2; exit }
            }')
    fi
    [ -n "$uri" ] || return 1
    printf '%s\n' "${uri%/}"
}

# apt_sid ARGS...: apt-get with a private configuration that knows only sid, so the system's apt state
# (sources, lists, dpkg status) is neither read nor changed. Used for `update` and `download` only.
apt_sid() {
    local d=$RUNSC_APT_SID_DIR
    apt-get \
        -o Dir::Etc::SourceList="$d/etc/sources.list" -o Dir::Etc::SourceParts=/dev/null \
        -o Dir::State="$d/state" -o Dir::State::status="$d/state/status" \
        -o Dir::Cache="$d/cache" -o Acquire::Languages=none "$@"
}

containerd_unpacked() {
    local v
    for v in containerd ctr containerd-shim-runc-v2; do
        [ -x "$RUNSC_CONTAINERD_BIN/$v" ] || return 1
    done
    # Task API v3 needs containerd 2.x; bookworm's own 1.6 would not do.
    "$RUNSC_CONTAINERD_BIN/containerd" --version 2>/dev/null | grep -Eq '[[:space:]]v?[2-9]\.[0-9]+'
}

# To take a newer sid containerd: rm -rf /opt/runsc-rs/containerd and run setup.sh again.
fetch_containerd() {
    containerd_unpacked && return 0
    local d=$RUNSC_APT_SID_DIR mirror deb
    mirror=$(debian_mirror) || die "no 'bookworm main' source found in /etc/apt/sources.list{,.d/*}"
    mkdir -p "$d/etc" "$d/state/lists/partial" "$d/cache/archives/partial" "$d/debs"
    touch "$d/state/status"
    # apt fetches as the unprivileged _apt user: let it write the download directory.
    if id _apt >/dev/null 2>&1; then chown _apt "$d/debs"; fi
    # Only the Packages index is needed (no translations, no DEP-11 metadata).
    # Signatures are checked: sid's InRelease is signed with the bookworm (12) and trixie (13) automatic
    # archive keys, both in bookworm's own debian-archive-keyring (checked with 2023.3+deb12u2).
    printf 'deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg target=Packages] %s sid main\n' \
        "$mirror" >"$d/etc/sources.list"
    log "fetching containerd from sid via $mirror (private apt state in $d)"
    if ! apt_sid -q update; then
        # Likely sid moved to keys newer than this keyring: take bookworm's newest keyring and retry.
        log "sid index failed to verify or download; upgrading debian-archive-keyring from bookworm"
        apt-get install -y --only-upgrade debian-archive-keyring >/dev/null 2>&1 || true
        if ! apt_sid -q update; then
            # Last resort, for this private list only: no signature check. The .deb is still only
            # unpacked into a private prefix, never installed with dpkg.
            log "WARNING: sid's signature cannot be verified with this keyring; using [trusted=yes] for the private sid list"
            printf 'deb [trusted=yes target=Packages] %s sid main\n' "$mirror" >"$d/etc/sources.list"
            apt_sid -q update || die "apt-get update of the private sid list failed"
        fi
    fi
    rm -f "$d/debs"/containerd_*.deb
    (cd "$d/debs" && apt_sid -q download containerd) || die "apt-get download containerd (sid) failed"
    deb=$(ls "$d/debs"/containerd_*.deb)
    # Unpack next to the prefix, then swap, so a failed unpack leaves the old one intact.
    rm -rf "$RUNSC_CONTAINERD_PREFIX.new"
    mkdir -p "$RUNSC_CONTAINERD_PREFIX.new"
    dpkg-deb -x "$deb" "$RUNSC_CONTAINERD_PREFIX.new"
    basename "$deb" >"$RUNSC_CONTAINERD_PREFIX.new/.source-deb"
    rm -rf "$RUNSC_CONTAINERD_PREFIX"
    mv "$RUNSC_CONTAINERD_PREFIX.new" "$RUNSC_CONTAINERD_PREFIX"
    containerd_unpacked || die "unpacked $deb but $RUNSC_CONTAINERD_BIN/containerd is not a working 2.x"
    log "containerd: $("$RUNSC_CONTAINERD_BIN/containerd" --version)"
}

# containerd 1.6, bookworm's own package, for the task API v2 tests: downloaded with the system's apt (bookworm)
# and unpacked into a private prefix, never installed.
fetch_containerd16() {
    local prefix=$RUNSC_CONTAINERD16_PREFIX d=/var/cache/runsc-rs/apt-bookworm-debs deb
    "$prefix/usr/bin/containerd" --version 2>/dev/null | grep -Eq '[[:space:]]v?1\.[67]\.' && return 0
    mkdir -p "$d"
    if id _apt >/dev/null 2>&1; then chown _apt "$d"; fi
    rm -f "$d"/containerd_*.deb
    log "fetching containerd 1.6 (bookworm) for the task API v2 tests"
    (cd "$d" && apt-get -q download containerd) ||
        { apt-get -q update && (cd "$d" && apt-get -q download containerd); } ||
        die "apt-get download containerd (bookworm) failed"
    deb=$(ls "$d"/containerd_*.deb)
    rm -rf "$prefix.new"
    mkdir -p "$prefix.new"
    dpkg-deb -x "$deb" "$prefix.new"
    rm -rf "$prefix"
    mv "$prefix.new" "$prefix"
    "$prefix/usr/bin/containerd" --version | grep -Eq '[[:space:]]v?1\.[67]\.' ||
        die "unpacked $deb but $prefix/usr/bin/containerd is not 1.6 or 1.7"
    log "containerd for task API v2: $("$prefix/usr/bin/containerd" --version)"
}

# The plain busybox rootfs: /bin/busybox with a symlink per applet, users root, user (1000) and nobody.
build_busybox_rootfs() {
    local dst=$RUNSC_TEST_ROOTFS tmp=$RUNSC_TEST_ROOTFS.new applet
    rm -rf "$tmp"
    mkdir -p "$tmp"/{bin,sbin,usr/bin,usr/sbin,etc,root,home/user,dev,proc,sys,run,var/tmp,tmp}
    install -m 0755 /bin/busybox "$tmp/bin/busybox"
    for applet in $(/bin/busybox --list-full); do
        if [ -e "$tmp/$applet" ] || [ -L "$tmp/$applet" ]; then continue; fi
        mkdir -p "$tmp/$(dirname "$applet")"
        ln -s /bin/busybox "$tmp/$applet"
    done
    cat >"$tmp/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
user:x:1000:1000:user:/home/user:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
    cat >"$tmp/etc/group" <<'EOF'
root:x:0:
user:x:1000:
nobody:x:65534:
EOF
    printf '127.0.0.1\tlocalhost\n::1\tlocalhost\n' >"$tmp/etc/hosts"
    chmod 0700 "$tmp/root"
    chmod 1777 "$tmp/tmp" "$tmp/var/tmp"
    chown 1000:1000 "$tmp/home/user"
    rm -rf "$dst"
    mv "$tmp" "$dst"
}

# oci_image NAME ROOTFS CONFIG_JSON OUT_TAR: write a one-layer OCI image archive by hand (layout: oci-layout,
# index.json, blobs/sha256/*). CONFIG_JSON is merged into the image config (Entrypoint/Cmd/User...).
# The index carries io.containerd.image.name and org.opencontainers.image.ref.name, so that
# `ctr images import` names the image NAME with no --base-name/--index-name flags.
oci_image() {
    local name=$1 rootfs=$2 exec_json=$3 out=$4 work arch diff_id layer config manifest
    work=$(mktemp -d)
    arch=$(dpkg --print-architecture)
    mkdir -p "$work/blobs/sha256"
    # Reproducible layer: sorted entries, fixed mtimes, numeric owners.
    tar -C "$rootfs" --sort=name --numeric-owner --mtime=@0 -cf "$work/layer.tar" .
    diff_id=sha256:$(sha256sum <"$work/layer.tar" | cut -d' ' -f1)
    gzip -n -9 "$work/layer.tar"
    layer=$(blob "$work" "$work/layer.tar.gz")
    jq -nc --arg arch "$arch" --arg diff "$diff_id" --argjson exec "$exec_json" '{
        architecture: $arch, os: "linux",
        config: ({Env: ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], WorkingDir: "/"} + $exec),
        rootfs: {type: "layers", diff_ids: [$diff]},
        history: [{created_by: "runsc-rs test/setup.sh"}]}' >"$work/config.json"
    config=$(blob "$work" "$work/config.json")
    jq -nc --argjson config "$config" --argjson layer "$layer" '{
        schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json",
        config: ($config + {mediaType: "application/vnd.oci.image.config.v1+json"}),
        layers: [($layer + {mediaType: "application/vnd.oci.image.layer.v1.tar+gzip"})]}' >"$work/manifest.json"
    manifest=$(blob "$work" "$work/manifest.json")
    jq -nc --argjson m "$manifest" --arg name "$name" --arg arch "$arch" '{
        schemaVersion: 2, mediaType: "application/vnd.oci.image.index.v1+json",
        manifests: [($m + {mediaType: "application/vnd.oci.image.manifest.v1+json",
            platform: {architecture: $arch, os: "linux"},
            annotations: {"io.containerd.image.name": $name, "org.opencontainers.image.ref.name": $name}})]}' \
        >"$work/index.json"
    printf '{"imageLayoutVersion":"1.0.0"}\n' >"$work/oci-layout"
    tar -C "$work" --sort=name --mtime=@0 --owner=0 --group=0 -cf "$out.new" oci-layout index.json blobs
    mv "$out.new" "$out"
    # containerd.sh compares this with the imported image's digest to know when to re-import.
    jq -r '.digest' <<<"$manifest" >"${out%.tar}.digest"
    rm -rf "$work"
}

# blob DIR FILE: move FILE into DIR/blobs/sha256/<digest>, print {"digest":..,"size":..}.
blob() {
    local sum size
    sum=$(sha256sum <"$2" | cut -d' ' -f1)
    size=$(stat -c %s "$2")
    mv "$2" "$1/blobs/sha256/$sum"
    printf '{"digest":"sha256:%s","size":%s}\n' "$sum" "$size"
}

build_images() {
    local self stamp
    # Rebuild only when an input changed: busybox, pause.c or this script.
    self=$(cat /bin/busybox "$RUNSC_REPO_ROOT/test/images/pause.c" "${BASH_SOURCE[0]}" | sha256sum | cut -d' ' -f1)
    stamp=$RUNSC_IMAGE_DIR/.inputs
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$self" ] && [ -x "$RUNSC_TEST_ROOTFS/bin/busybox" ] &&
        [ -f "$RUNSC_IMAGE_DIR/busybox.tar" ] && [ -f "$RUNSC_IMAGE_DIR/pause.tar" ]; then
        return 0
    fi
    log "building images in $RUNSC_IMAGE_DIR"
    mkdir -p "$RUNSC_IMAGE_DIR"
    build_busybox_rootfs
    oci_image "$RUNSC_BUSYBOX_IMAGE" "$RUNSC_TEST_ROOTFS" '{"Cmd":["sh"]}' "$RUNSC_IMAGE_DIR/busybox.tar"

    local pause=$RUNSC_TEST_ROOT/rootfs/pause
    rm -rf "$pause"
    mkdir -p "$pause"
    gcc -static -Os -s -Wall -Werror -o "$pause/pause" "$RUNSC_REPO_ROOT/test/images/pause.c"
    oci_image "$RUNSC_PAUSE_IMAGE" "$pause" '{"Entrypoint":["/pause"]}' "$RUNSC_IMAGE_DIR/pause.tar"
    echo "$self" >"$stamp"
}

mkdir -p "$RUNSC_TEST_ROOT" "$RUNSC_TEST_LOG_DIR"
install_bookworm_packages
fetch_containerd
fetch_containerd16
build_images
log "ready: containerd $("$RUNSC_CONTAINERD_BIN/containerd" --version | awk '{print $3}'), rootfs $RUNSC_TEST_ROOTFS, images in $RUNSC_IMAGE_DIR"
