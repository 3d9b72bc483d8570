#!/bin/sh
# Regenerates sandbox/src/syscalls.rs, the x86_64 syscall name -> number table
# used to compile OCI seccomp profiles.
#
# Usage: sandbox/gen-syscalls.sh [path/to/asm/unistd_64.h]
#
# Source: the kernel UAPI header installed by linux-libc-dev (default
# /usr/include/x86_64-linux-gnu/asm/unistd_64.h), plus the EXTRA list below for
# syscalls newer than that header. EXTRA numbers come from the kernel's
# arch/x86/entry/syscalls/syscall_64.tbl (Linux 6.13); the header wins when it
# already defines a name. Only x86_64 is covered.
set -eu

header=${1:-/usr/include/x86_64-linux-gnu/asm/unistd_64.h}
out=$(dirname "$0")/src/syscalls.rs

EXTRA='cachestat 451
fchmodat2 452
map_shadow_stack 453
futex_wake 454
futex_wait 455
futex_requeue 456
statmount 457
listmount 458
lsm_get_self_attr 459
lsm_set_self_attr 460
lsm_list_modules 461
mseal 462
setxattrat 463
getxattrat 464
listxattrat 465
removexattrat 466'

version=$(dpkg-query -W -f '${Version}' linux-libc-dev 2>/dev/null || echo unknown)

entries=$(
    {
        sed -n 's/^#define __NR_\([a-z0-9_]*\)[[:space:]]\{1,\}\([0-9]\{1,\}\)$/\1 \2 header/p' "$header"
        printf '%s\n' "$EXTRA" | sed 's/$/ extra/'
    } | LC_ALL=C sort -k1,1 -k3,3 | awk '$1 != prev { print $1, $2; prev = $1 }'
)
count=$(printf '%s\n' "$entries" | wc -l)

{
    cat <<HDR
//! x86_64 system call numbers by name, for compiling OCI seccomp profiles.
//!
//! GENERATED FILE, do not edit: run \`sandbox/gen-syscalls.sh\` to regenerate.
//! Source: \`$header\`
//! (linux-libc-dev $version), plus the syscalls numbered 451-466 (up to
//! Linux 6.13) from the kernel's \`arch/x86/entry/syscalls/syscall_64.tbl\`.
//! Only the x86_64 ABI is covered; x32 and i386 numbers are not.

/// \`(name, number)\` pairs sorted by name (byte order) for binary search.
static SYSCALLS: [(&str, i64); $count] = [
HDR
    printf '%s\n' "$entries" | awk '{ printf "    (\"%s\", %s),\n", $1, $2 }'
    cat <<'FTR'
];

/// Returns the x86_64 number of the syscall called `name`, or `None` when the
/// table does not know it (callers skip such names, as runc does).
pub(crate) fn syscall_number(name: &str) -> Option<i64> {
    SYSCALLS
        .binary_search_by(|(candidate, _)| candidate.cmp(&name))
        .ok()
        .and_then(|index| SYSCALLS.get(index))
        .map(|(_, number)| *number)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_and_unique() {
        assert!(SYSCALLS.windows(2).all(|pair| pair[0].0 < pair[1].0));
    }

    #[test]
    fn known_numbers() {
        assert_eq!(syscall_number("read"), Some(0));
        assert_eq!(syscall_number("getpid"), Some(39));
        assert_eq!(syscall_number("getppid"), Some(110));
        assert_eq!(syscall_number("mkdirat"), Some(258));
        assert_eq!(syscall_number("clone3"), Some(435));
        assert_eq!(syscall_number("fchmodat2"), Some(452));
        assert_eq!(syscall_number("no_such_syscall"), None);
    }

    #[test]
    fn matches_libc_constants() {
        assert_eq!(syscall_number("getpid"), Some(libc::SYS_getpid));
        assert_eq!(syscall_number("seccomp"), Some(libc::SYS_seccomp));
        assert_eq!(syscall_number("mseal"), Some(libc::SYS_mseal));
    }
}
FTR
} >"$out"

rustfmt --edition 2021 "$out"
echo "wrote $count syscalls to $out"
