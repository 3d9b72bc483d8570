//! Turning the container init helper into the container's process.
//!
//! The helper starts as uid 0 of the pod's user namespace, already in its own
//! mount and PID namespaces, with the sandbox's minimal root as `/`. The
//! caller drives it in this order:
//!
//! 1. [`setup_rootfs`]: mounts, `/dev`, `pivot_root`, masked and read-only
//!    paths, hostname, sysctls.
//! 2. [`prepare`]: finds the executable inside the new root and compiles the
//!    seccomp filter, so that every error surfaces before the point of no
//!    return.
//! 3. [`apply`]: rlimits, oom score, user and groups, cwd, capabilities,
//!    umask (and the seccomp filter when `noNewPrivileges` is false).
//! 4. [`exec`]: no_new_privs, the seccomp filter, `execve`.
//!
//! Stdio, the terminal and closing inherited descriptors are the caller's
//! job.

mod process;
mod rootfs;

use std::path::PathBuf;

use thiserror::Error;

pub use process::{apply, exec, prepare, Exec};
pub use rootfs::setup_rootfs;

/// What went wrong while turning the helper into the container's process.
#[derive(Debug, Error)]
pub enum ContainerError {
    /// The spec lacks something required or holds something unusable.
    #[error("invalid spec: {0}")]
    InvalidSpec(String),

    /// A mount(2) call failed.
    #[error("mounting {what} on {target}")]
    Mount {
        what: String,
        target: PathBuf,
        #[source]
        source: nix::Error,
    },

    /// A mount option asks to clear a flag the kernel keeps locked in this
    /// user namespace.
    #[error(
        "mounting {what} on {target}: option {option} clears a flag locked on the source mount"
    )]
    LockedFlag {
        what: String,
        target: PathBuf,
        option: &'static str,
    },

    /// A mount destination climbs out of the container root with `..`.
    #[error("mount destination {destination} escapes the container root")]
    DestinationEscapes { destination: PathBuf },

    /// A path could not be resolved inside the container root.
    #[error("resolving {path} inside the container root {root}")]
    Resolve {
        root: PathBuf,
        path: PathBuf,
        #[source]
        source: nix::Error,
    },

    /// A missing mount point (directory, file or symlink) could not be made.
    #[error("creating {path} inside the container root")]
    CreateTarget {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },

    /// A path could not be inspected.
    #[error("inspecting {path}")]
    Stat {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },

    /// Switching the root to the container rootfs failed.
    #[error("pivoting root to {rootfs}")]
    PivotRoot {
        rootfs: PathBuf,
        #[source]
        source: nix::Error,
    },

    /// Setting the container hostname failed.
    #[error("setting hostname {hostname}")]
    Hostname {
        hostname: String,
        #[source]
        source: nix::Error,
    },

    /// The sysctl is global to the host, so a container may not set it.
    #[error("sysctl {key} is not namespaced")]
    SysctlNotNamespaced { key: String },

    /// Writing a namespaced sysctl failed.
    #[error("setting sysctl {key} to {value}")]
    Sysctl {
        key: String,
        value: String,
        #[source]
        source: std::io::Error,
    },

    /// No executable named `args[0]` was found in `$PATH`.
    #[error("executable file not found in $PATH: {program}")]
    NotFound { program: String },

    /// `args[0]` names a path that does not exist.
    #[error("no such file: {path}")]
    NoSuchFile { path: PathBuf },

    /// `args[0]` exists but is not a regular file the user may execute.
    #[error("{path} is not a regular file executable by uid {uid}")]
    NotExecutable { path: PathBuf, uid: u32 },

    /// Setting a resource limit failed.
    #[error("setting rlimit {resource} to soft {soft}, hard {hard}")]
    Rlimit {
        resource: String,
        soft: u64,
        hard: u64,
        #[source]
        source: nix::Error,
    },

    /// Writing `/proc/self/oom_score_adj` failed.
    #[error("setting oom_score_adj to {value}")]
    OomScoreAdj {
        value: i32,
        #[source]
        source: std::io::Error,
    },

    /// Setting the supplementary groups failed (EPERM: setgroups is denied in
    /// this user namespace).
    #[error("setting supplementary groups {gids:?}")]
    Setgroups {
        gids: Vec<u32>,
        #[source]
        source: nix::Error,
    },

    /// Changing to the process gid failed.
    #[error("setting gid {gid}")]
    Setgid {
        gid: u32,
        #[source]
        source: nix::Error,
    },

    /// Changing to the process uid failed.
    #[error("setting uid {uid}")]
    Setuid {
        uid: u32,
        #[source]
        source: nix::Error,
    },

    /// The process cwd does not exist in the container.
    #[error("cwd {cwd} does not exist")]
    CwdNotFound { cwd: PathBuf },

    /// Changing to the process cwd failed for another reason.
    #[error("changing directory to {cwd}")]
    Chdir {
        cwd: PathBuf,
        #[source]
        source: nix::Error,
    },

    /// Setting the process capabilities failed.
    #[error("applying the process capabilities")]
    Caps(#[source] crate::caps::CapsError),

    /// The spec's seccomp profile could not be compiled.
    #[error("compiling the seccomp profile")]
    SeccompCompile(#[source] crate::seccomp::SeccompError),

    /// The compiled seccomp filter could not be installed.
    #[error("installing the seccomp filter")]
    SeccompInstall(#[source] crate::seccomp::SeccompError),

    /// prctl(PR_SET_NO_NEW_PRIVS) failed.
    #[error("setting no_new_privs")]
    NoNewPrivs(#[source] nix::Error),

    /// execve(2) of the container program failed.
    #[error("executing {program}")]
    Exec {
        program: PathBuf,
        #[source]
        source: nix::Error,
    },
}
