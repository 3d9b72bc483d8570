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
pub mod logging;
pub mod manager;
mod server;

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
