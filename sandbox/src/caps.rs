//! Capabilities: applies the five OCI capability sets (bounding, effective,
//! permitted, inheritable, ambient) to the calling process.

use std::io::{self, Read};

use oci_spec::runtime::{Capabilities, Capability, LinuxCapabilities};

/// Errors from changing the capabilities of the calling process.
#[derive(Debug, thiserror::Error)]
pub enum CapsError {
    /// Reading whether a capability is in the bounding set failed.
    #[error("reading capability {cap} of the bounding set")]
    ReadBounding {
        /// Capability number.
        cap: u32,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
    /// Dropping a capability from the bounding set failed.
    #[error("dropping capability {cap} from the bounding set")]
    DropBounding {
        /// Capability number.
        cap: u32,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
    /// Reading the capability sets failed.
    #[error("reading the capability sets")]
    Get(#[source] io::Error),
    /// Setting the effective, permitted and inheritable sets failed.
    #[error("setting the effective, permitted and inheritable capability sets")]
    Set(#[source] io::Error),
    /// Clearing the ambient set failed.
    #[error("clearing the ambient capability set")]
    ClearAmbient(#[source] io::Error),
    /// Raising an ambient capability failed.
    #[error("raising ambient capability {cap}")]
    RaiseAmbient {
        /// Capability number.
        cap: u32,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
    /// The sets ask for capabilities the process does not have.
    #[error("capabilities {missing:#x} (bit mask) are not in the permitted set of this process")]
    NotPermitted {
        /// Mask of the missing capabilities.
        missing: u64,
    },
    /// Setting PR_SET_KEEPCAPS failed.
    #[error("keeping capabilities across setuid")]
    KeepCaps(#[source] io::Error),
}

/// Highest capability this file knows, `CAP_CHECKPOINT_RESTORE`.
const HIGHEST_KNOWN_CAP: u32 = 40;
/// `_LINUX_CAPABILITY_VERSION_3` from linux/capability.h (64-bit sets).
const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// `struct __user_cap_header_struct` from linux/capability.h.
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

/// `struct __user_cap_data_struct` from linux/capability.h; version 3 uses
/// two of them, for capabilities 0-31 and 32-63.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Returns the Linux number of `cap` (linux/capability.h).
pub fn cap_number(cap: &Capability) -> u32 {
    match cap {
        Capability::Chown => 0,
        Capability::DacOverride => 1,
        Capability::DacReadSearch => 2,
        Capability::Fowner => 3,
        Capability::Fsetid => 4,
        Capability::Kill => 5,
        Capability::Setgid => 6,
        Capability::Setuid => 7,
        Capability::Setpcap => 8,
        Capability::LinuxImmutable => 9,
        Capability::NetBindService => 10,
        Capability::NetBroadcast => 11,
        Capability::NetAdmin => 12,
        Capability::NetRaw => 13,
        Capability::IpcLock => 14,
        Capability::IpcOwner => 15,
        Capability::SysModule => 16,
        Capability::SysRawio => 17,
        Capability::SysChroot => 18,
        Capability::SysPtrace => 19,
        Capability::SysPacct => 20,
        Capability::SysAdmin => 21,
        Capability::SysBoot => 22,
        Capability::SysNice => 23,
        Capability::SysResource => 24,
        Capability::SysTime => 25,
        Capability::SysTtyConfig => 26,
        Capability::Mknod => 27,
        Capability::Lease => 28,
        Capability::AuditWrite => 29,
        Capability::AuditControl => 30,
        Capability::Setfcap => 31,
        Capability::MacOverride => 32,
        Capability::MacAdmin => 33,
        Capability::Syslog => 34,
        Capability::WakeAlarm => 35,
        Capability::BlockSuspend => 36,
        Capability::AuditRead => 37,
        Capability::Perfmon => 38,
        Capability::Bpf => 39,
        Capability::CheckpointRestore => 40,
    }
}

/// Returns the highest capability the running kernel knows, from
/// `/proc/sys/kernel/cap_last_cap` (40 when it cannot be read). Does not
/// allocate.
pub fn last_cap() -> u32 {
    let mut buf = [0u8; 16];
    let read = std::fs::File::open("/proc/sys/kernel/cap_last_cap")
        .and_then(|mut file| file.read(&mut buf));
    let parsed = read.ok().and_then(|len| {
        let text = std::str::from_utf8(buf.get(..len)?).ok()?;
        text.trim().parse::<u32>().ok()
    });
    match parsed {
        // Sets are 64 bits wide: a larger number would be a kernel bug.
        Some(last) if last < 64 => last,
        _ => {
            log::debug!("cannot read cap_last_cap, assuming {HIGHEST_KNOWN_CAP}");
            HIGHEST_KNOWN_CAP
        }
    }
}

/// Sets `PR_SET_KEEPCAPS`, so that the permitted set survives the caller's
/// change from uid 0 to another uid; call it before `setresuid`, then
/// [`apply`] afterwards.
pub fn keep_caps_across_setuid() -> Result<(), CapsError> {
    // SAFETY: PR_SET_KEEPCAPS only sets a flag of the calling thread; the
    // other arguments are integers.
    let rc = unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1 as libc::c_ulong, 0, 0, 0) };
    if rc != 0 {
        return Err(CapsError::KeepCaps(io::Error::last_os_error()));
    }
    Ok(())
}

/// Applies the OCI capability sets to the calling process, which must be
/// single-threaded (capabilities are per thread). `None` drops everything.
///
/// In order: drops from the bounding set every capability not in `bounding`
/// (up to [`last_cap`]), sets effective, permitted and inheritable with
/// `capset`, then clears the ambient set and raises each `ambient`
/// capability; one that is not both permitted and inheritable is logged and
/// skipped. Capabilities cannot be gained: asking for one outside the
/// permitted set is an error. Dropping from the bounding set needs
/// CAP_SETPCAP: when the
/// caller changed to a non-zero uid after [`keep_caps_across_setuid`], the
/// effective set is empty and this function first raises it to the permitted
/// set. Does not allocate, so it may be called in a child between fork and
/// exec.
pub fn apply(caps: Option<&LinuxCapabilities>) -> Result<(), CapsError> {
    let last = last_cap();
    let known = if last >= 63 {
        u64::MAX
    } else {
        (1u64 << (last + 1)) - 1
    };
    let set = |select: fn(&LinuxCapabilities) -> &Option<Capabilities>| {
        caps.and_then(|caps| select(caps).as_ref())
            .map_or(0, |set| {
                set.iter()
                    .fold(0u64, |mask, cap| mask | 1u64 << cap_number(cap))
            })
            & known
    };
    let bounding = set(LinuxCapabilities::bounding);
    let effective = set(LinuxCapabilities::effective);
    let permitted = set(LinuxCapabilities::permitted);
    let inheritable = set(LinuxCapabilities::inheritable);
    let ambient = set(LinuxCapabilities::ambient);

    let current = capget()?;
    let missing = (effective | permitted) & !current.permitted;
    if missing != 0 {
        return Err(CapsError::NotPermitted { missing });
    }
    if current.effective != current.permitted {
        capset(current.permitted, current.permitted, current.inheritable)?;
    }
    for cap in 0..=last {
        if bounding & (1u64 << cap) == 0 {
            drop_bounding(cap)?;
        }
    }
    capset(effective, permitted, inheritable)?;
    set_ambient(ambient, last)
}

/// The effective, permitted and inheritable sets as 64-bit masks.
struct Sets {
    effective: u64,
    permitted: u64,
    inheritable: u64,
}

fn capget() -> Result<Sets, CapsError> {
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: `header` and `data` are live, writable and laid out as the
    // kernel's version 3 header and two data structs, which is all capget
    // reads or writes.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_capget,
            std::ptr::addr_of_mut!(header),
            data.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return Err(CapsError::Get(io::Error::last_os_error()));
    }
    let join = |low: u32, high: u32| u64::from(low) | u64::from(high) << 32;
    Ok(Sets {
        effective: join(data[0].effective, data[1].effective),
        permitted: join(data[0].permitted, data[1].permitted),
        inheritable: join(data[0].inheritable, data[1].inheritable),
    })
}

fn capset(effective: u64, permitted: u64, inheritable: u64) -> Result<(), CapsError> {
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    // Truncation is the point: each struct holds 32 of the 64 bits.
    let split = |mask: u64| [mask as u32, (mask >> 32) as u32];
    let (e, p, i) = (split(effective), split(permitted), split(inheritable));
    let data = [
        CapData {
            effective: e[0],
            permitted: p[0],
            inheritable: i[0],
        },
        CapData {
            effective: e[1],
            permitted: p[1],
            inheritable: i[1],
        },
    ];
    // SAFETY: `header` and `data` are live and laid out as the kernel's
    // version 3 header and two data structs; capset only reads `data` and
    // may write the header's version field, which `header` owns.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_capset,
            std::ptr::addr_of_mut!(header),
            data.as_ptr(),
        )
    };
    if rc != 0 {
        return Err(CapsError::Set(io::Error::last_os_error()));
    }
    Ok(())
}

fn drop_bounding(cap: u32) -> Result<(), CapsError> {
    // SAFETY: PR_CAPBSET_READ only reads a flag of the calling thread; the
    // arguments are integers.
    let present = unsafe { libc::prctl(libc::PR_CAPBSET_READ, libc::c_ulong::from(cap), 0, 0, 0) };
    match present {
        0 => return Ok(()),
        1 => {}
        _ => {
            return Err(CapsError::ReadBounding {
                cap,
                source: io::Error::last_os_error(),
            })
        }
    }
    // SAFETY: PR_CAPBSET_DROP only changes the calling thread's bounding set;
    // the arguments are integers.
    let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(cap), 0, 0, 0) };
    if rc != 0 {
        return Err(CapsError::DropBounding {
            cap,
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

fn set_ambient(ambient: u64, last: u32) -> Result<(), CapsError> {
    let clear = libc::c_ulong::try_from(libc::PR_CAP_AMBIENT_CLEAR_ALL).unwrap_or(0);
    let raise = libc::c_ulong::try_from(libc::PR_CAP_AMBIENT_RAISE).unwrap_or(0);
    // SAFETY: PR_CAP_AMBIENT_CLEAR_ALL only changes the calling thread's
    // ambient set; the arguments are integers.
    let rc = unsafe { libc::prctl(libc::PR_CAP_AMBIENT, clear, 0 as libc::c_ulong, 0, 0) };
    if rc != 0 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EINVAL) && ambient == 0 {
            // Kernels before 4.3 have no ambient set, so it is already empty.
            log::debug!("ambient capabilities are not supported by this kernel");
            return Ok(());
        }
        return Err(CapsError::ClearAmbient(err));
    }
    for cap in (0..=last).filter(|cap| ambient & (1u64 << cap) != 0) {
        // SAFETY: PR_CAP_AMBIENT_RAISE only changes the calling thread's
        // ambient set; the arguments are integers.
        let rc = unsafe {
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                raise,
                libc::c_ulong::from(cap),
                0 as libc::c_ulong,
                0 as libc::c_ulong,
            )
        };
        if rc != 0 {
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EINVAL) | Some(libc::EPERM) => {
                    log::warn!("skipping ambient capability {cap}: not permitted and inheritable")
                }
                _ => return Err(CapsError::RaiseAmbient { cap, source: err }),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::wait::{waitpid, WaitStatus};
    use nix::unistd::{fork, ForkResult};
    use oci_spec::runtime::LinuxCapabilitiesBuilder;
    use std::os::unix::ffi::OsStrExt;

    /// Runs `child` in a forked child and returns its exit code. `child` must
    /// not allocate, lock or panic: the child of a multi-threaded test
    /// process may only make raw syscalls.
    fn exit_code_of(child: impl FnOnce() -> i32) -> i32 {
        // SAFETY: the child only runs `child`, which by contract makes raw
        // syscalls without allocating or taking locks, then calls `_exit`.
        match unsafe { fork() }.expect("fork") {
            ForkResult::Child => {
                let code = child();
                // SAFETY: `_exit` ends the child without running destructors or
                // atexit handlers that would touch the parent's state.
                unsafe { libc::_exit(code) }
            }
            ForkResult::Parent { child } => match waitpid(child, None).expect("waitpid") {
                WaitStatus::Exited(_, code) => code,
                other => panic!("child did not exit: {other:?}"),
            },
        }
    }

    /// Every capability oci-spec knows.
    const ALL: [Capability; 41] = [
        Capability::Chown,
        Capability::DacOverride,
        Capability::DacReadSearch,
        Capability::Fowner,
        Capability::Fsetid,
        Capability::Kill,
        Capability::Setgid,
        Capability::Setuid,
        Capability::Setpcap,
        Capability::LinuxImmutable,
        Capability::NetBindService,
        Capability::NetBroadcast,
        Capability::NetAdmin,
        Capability::NetRaw,
        Capability::IpcLock,
        Capability::IpcOwner,
        Capability::SysModule,
        Capability::SysRawio,
        Capability::SysChroot,
        Capability::SysPtrace,
        Capability::SysPacct,
        Capability::SysAdmin,
        Capability::SysBoot,
        Capability::SysNice,
        Capability::SysResource,
        Capability::SysTime,
        Capability::SysTtyConfig,
        Capability::Mknod,
        Capability::Lease,
        Capability::AuditWrite,
        Capability::AuditControl,
        Capability::Setfcap,
        Capability::MacOverride,
        Capability::MacAdmin,
        Capability::Syslog,
        Capability::WakeAlarm,
        Capability::BlockSuspend,
        Capability::AuditRead,
        Capability::Perfmon,
        Capability::Bpf,
        Capability::CheckpointRestore,
    ];

    const CAP_CHOWN: u32 = 0;
    const CAP_KILL: u32 = 5;
    const CAP_SETGID: u32 = 6;
    const CAP_SETUID: u32 = 7;
    const CAP_SETPCAP: u32 = 8;

    #[test]
    fn cap_numbers() {
        assert_eq!(cap_number(&Capability::Chown), 0);
        assert_eq!(cap_number(&Capability::Kill), 5);
        assert_eq!(cap_number(&Capability::NetBindService), 10);
        assert_eq!(cap_number(&Capability::SysAdmin), 21);
        assert_eq!(cap_number(&Capability::Setfcap), 31);
        assert_eq!(cap_number(&Capability::MacOverride), 32);
        assert_eq!(cap_number(&Capability::CheckpointRestore), 40);
        let mut seen: Vec<u32> = ALL.iter().map(cap_number).collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..=40).collect::<Vec<_>>());
    }

    #[test]
    fn last_cap_is_sane() {
        let last = last_cap();
        assert!((36..64).contains(&last), "cap_last_cap = {last}");
    }

    /// Whether this test process holds `caps` in its effective set, so that
    /// the behavioural tests can run; they are skipped otherwise.
    fn holds(caps: &[u32]) -> bool {
        let effective = capget().expect("capget").effective;
        caps.iter().all(|cap| effective & (1u64 << cap) != 0)
    }

    fn chown(path: &std::ffi::CStr, uid: u32) -> Result<(), i32> {
        // SAFETY: `path` is a valid NUL-terminated string that outlives the
        // call; chown only reads it.
        if unsafe { libc::chown(path.as_ptr(), uid, uid) } == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error().raw_os_error().unwrap_or(0))
        }
    }

    fn bounding_has(cap: u32) -> bool {
        // SAFETY: PR_CAPBSET_READ only reads a flag of the calling thread.
        unsafe { libc::prctl(libc::PR_CAPBSET_READ, libc::c_ulong::from(cap), 0, 0, 0) == 1 }
    }

    fn ambient_has(cap: u32) -> bool {
        let is_set = libc::c_ulong::try_from(libc::PR_CAP_AMBIENT_IS_SET).unwrap_or(0);
        // SAFETY: PR_CAP_AMBIENT_IS_SET only reads the calling thread's
        // ambient set.
        unsafe {
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                is_set,
                libc::c_ulong::from(cap),
                0 as libc::c_ulong,
                0 as libc::c_ulong,
            ) == 1
        }
    }

    #[test]
    fn dropping_cap_chown_forbids_chown() {
        if !holds(&[CAP_CHOWN, CAP_SETPCAP]) {
            eprintln!("skipped: needs CAP_CHOWN and CAP_SETPCAP");
            return;
        }
        let dir = std::env::temp_dir().join(format!("caps-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("owned");
        std::fs::write(&file, b"").expect("temp file");
        let path = std::ffi::CString::new(file.as_os_str().as_bytes()).expect("path");
        // With CAP_CHOWN, giving the file away works.
        assert_eq!(chown(&path, 1000), Ok(()));

        // Everything this process may hold (CAP_SYS_RESOURCE is often
        // missing in containers), except CAP_CHOWN.
        let permitted = capget().expect("capget").permitted;
        let all_but_chown: Capabilities = ALL
            .iter()
            .copied()
            .filter(|cap| *cap != Capability::Chown)
            .filter(|cap| permitted & (1u64 << cap_number(cap)) != 0)
            .collect();
        let ambient: Capabilities = [Capability::Kill, Capability::Chown].into();
        let caps = LinuxCapabilitiesBuilder::default()
            .bounding(all_but_chown.clone())
            .effective(all_but_chown.clone())
            .permitted(all_but_chown.clone())
            .inheritable(all_but_chown)
            .ambient(ambient)
            .build()
            .expect("capabilities");

        let code = exit_code_of(|| {
            if apply(Some(&caps)).is_err() {
                return 10;
            }
            // Taking the file back now needs CAP_CHOWN.
            if chown(&path, 1001) != Err(libc::EPERM) {
                return 11;
            }
            let Ok(sets) = capget() else { return 12 };
            let chown_bit = 1u64 << CAP_CHOWN;
            if sets.effective & chown_bit != 0 || sets.permitted & chown_bit != 0 {
                return 13;
            }
            if sets.inheritable & chown_bit != 0 || bounding_has(CAP_CHOWN) {
                return 14;
            }
            if !bounding_has(CAP_KILL) || sets.effective & (1u64 << CAP_KILL) == 0 {
                return 15;
            }
            // CAP_KILL is permitted and inheritable, CAP_CHOWN is skipped.
            if !ambient_has(CAP_KILL) || ambient_has(CAP_CHOWN) {
                return 16;
            }
            0
        });
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(code, 0, "see the child's exit codes above");
    }

    #[test]
    fn refuses_capabilities_not_permitted() {
        if !holds(&[CAP_SETPCAP]) {
            eprintln!("skipped: needs CAP_SETPCAP");
            return;
        }
        // The builder would fill the other sets with oci-spec's defaults.
        let caps: LinuxCapabilities =
            serde_json::from_str(r#"{"permitted": ["CAP_KILL"]}"#).expect("capabilities");
        let code = exit_code_of(|| {
            if apply(None).is_err() {
                return 10;
            }
            match apply(Some(&caps)) {
                Err(CapsError::NotPermitted { missing }) if missing == 1u64 << CAP_KILL => 0,
                _ => 11,
            }
        });
        assert_eq!(code, 0, "see the child's exit codes above");
    }

    #[test]
    fn none_drops_everything() {
        if !holds(&[CAP_SETPCAP]) {
            eprintln!("skipped: needs CAP_SETPCAP");
            return;
        }
        let code = exit_code_of(|| {
            if apply(None).is_err() {
                return 10;
            }
            let Ok(sets) = capget() else { return 11 };
            if sets.effective != 0 || sets.permitted != 0 || sets.inheritable != 0 {
                return 12;
            }
            if (0..=last_cap()).any(|cap| bounding_has(cap) || ambient_has(cap)) {
                return 13;
            }
            0
        });
        assert_eq!(code, 0, "see the child's exit codes above");
    }

    #[test]
    fn applies_after_setuid_with_keep_caps() {
        if !holds(&[CAP_SETPCAP, CAP_KILL, CAP_SETGID, CAP_SETUID]) {
            eprintln!("skipped: needs CAP_SETPCAP, CAP_KILL, CAP_SETGID and CAP_SETUID");
            return;
        }
        let kill_only: Capabilities = [Capability::Kill].into();
        let caps = LinuxCapabilitiesBuilder::default()
            .bounding(kill_only.clone())
            .effective(kill_only.clone())
            .permitted(kill_only.clone())
            .inheritable(kill_only.clone())
            .ambient(kill_only)
            .build()
            .expect("capabilities");
        let code = exit_code_of(|| {
            if keep_caps_across_setuid().is_err() {
                return 10;
            }
            // SAFETY: setresgid and setresuid only change the credentials of
            // the calling (forked, single-threaded) process.
            let changed = unsafe {
                libc::setresgid(1000, 1000, 1000) == 0 && libc::setresuid(1000, 1000, 1000) == 0
            };
            if !changed {
                return 11;
            }
            if apply(Some(&caps)).is_err() {
                return 12;
            }
            let Ok(sets) = capget() else { return 13 };
            let kill = 1u64 << CAP_KILL;
            if sets.effective != kill || sets.permitted != kill || sets.inheritable != kill {
                return 14;
            }
            if !ambient_has(CAP_KILL) || bounding_has(CAP_SETPCAP) {
                return 15;
            }
            0
        });
        assert_eq!(code, 0, "see the child's exit codes above");
    }
}
