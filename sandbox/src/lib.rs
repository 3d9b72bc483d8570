//! The sandbox: the host-side manager and the per-pod sandbox process.
//!
//! - [`manager`] runs on the host (inside the shim): it forks the sandbox
//!   process with its donated descriptors, maps its users, and drives it over
//!   runtime-control.
//! - [`boot`] is the sandbox process itself (`runsc-sandbox boot`): pod init,
//!   the runtime-control server, container creation and reaping.
//! - [`init`] is the short-lived helper that becomes a container's process.

pub mod boot;
pub mod debug_run;
pub mod fdpass;
pub mod init;
pub mod limits;
pub mod logging;
pub mod manager;
mod server;

/// Resets every signal to its default action and unblocks all signals.
/// For a child between fork and exec: raw system calls only. Dispositions
/// set to "ignore" survive exec, and the shim and the sandbox ignore or
/// block some; workloads must start clean.
pub(crate) fn reset_signals() -> std::io::Result<()> {
    #[repr(C)]
    struct KernelSigaction {
        handler: usize,
        flags: u64,
        restorer: usize,
        mask: u64,
    }
    let default = KernelSigaction {
        handler: 0, // SIG_DFL
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    for sig in 1..=64 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: rt_sigaction reads `default` (kernel layout, 8-byte mask)
        // and writes nothing back (null old action).
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                &default as *const KernelSigaction,
                std::ptr::null_mut::<KernelSigaction>(),
                8usize,
            )
        };
    }
    let empty: u64 = 0;
    // SAFETY: rt_sigprocmask reads the 8-byte mask and writes nothing back.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &empty as *const u64,
            std::ptr::null_mut::<u64>(),
            8usize,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Runs `boot`, `init` or `exec-init` when `args[1]` names one, and returns
/// the exit code; `None` for any other command. Any binary that can be the
/// sandbox binary (runsc-sandbox, the shim) calls this first.
pub fn run_internal_command(args: &[String]) -> Option<i32> {
    match args.get(1).map(String::as_str) {
        Some("boot") => {
            let parsed = match boot::BootArgs::parse(&args[2..]) {
                Ok(a) => a,
                Err(e) => {
                    eprintln!("runsc-sandbox boot: {e}");
                    return Some(2);
                }
            };
            match boot::main(parsed) {
                Ok(never) => match never {},
                Err(e) => {
                    let mut msg = e.to_string();
                    let mut cur = std::error::Error::source(&e);
                    while let Some(c) = cur {
                        msg.push_str(&format!(": {c}"));
                        cur = c.source();
                    }
                    log::error!("{msg}");
                    eprintln!("runsc-sandbox boot: {msg}");
                    Some(1)
                }
            }
        }
        Some("init") => init::main(init::Role::Container),
        Some("exec-init") => init::main(init::Role::Exec),
        _ => None,
    }
}
pub mod caps;
pub mod container;
pub mod seccomp;
mod syscalls;
