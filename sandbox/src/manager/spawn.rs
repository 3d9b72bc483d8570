//! Forking the sandbox process into its namespaces.
//!
//! The child, between fork and exec (so only async-signal-safe calls):
//! places the donated descriptors at 3, 4, …; becomes a session leader;
//! joins the sandbox's cgroup; joins the pod's network namespace when one is
//! named; unshares user, mount, IPC, UTS, PID (and network, when new)
//! namespaces; tells the parent its pid and waits while a helper thread of
//! the parent writes its uid and gid maps; then becomes root of the new user
//! namespace and execs `runsc-sandbox boot`.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use super::uidpool::IDS_PER_SANDBOX;

/// What to spawn.
pub struct SpawnSpec {
    /// The binary that serves `boot`.
    pub binary: PathBuf,
    /// Arguments after `boot`, already naming the descriptor numbers that
    /// `donate` will occupy (3, 4, … in order).
    pub boot_args: Vec<String>,
    /// Descriptors to donate, in order from fd 3.
    pub donate: Vec<RawFd>,
    /// Open `cgroup.procs` files to join.
    pub cgroup_procs: Vec<File>,
    /// Network namespace to join, if any.
    pub netns: Option<File>,
    /// Create a new network namespace (when none is joined and the host's
    /// is not asked for).
    pub new_netns: bool,
    /// First host id of the sandbox's range.
    pub uid_base: u32,
    /// Open /dev/fuse at this descriptor once in the new user namespace,
    /// still as the host's root (the device is usually 0600 root, and the
    /// kernel mounts FUSE only over a device opened in the mounter's user
    /// namespace). Left closed when the open fails.
    pub fuse_fd: Option<RawFd>,
}

/// Errors of spawning.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// The fork, the namespaces or the exec failed.
    #[error("starting the sandbox process")]
    Spawn(#[source] std::io::Error),
    /// Writing the user namespace maps failed.
    #[error("writing the uid/gid maps of the sandbox")]
    Maps(#[source] std::io::Error),
}

fn write_maps(pid: u32, base: u32) -> std::io::Result<()> {
    let map = format!("0 {base} {IDS_PER_SANDBOX}\n");
    std::fs::write(format!("/proc/{pid}/uid_map"), &map)?;
    std::fs::write(format!("/proc/{pid}/gid_map"), &map)?;
    Ok(())
}

/// Spawns the sandbox process and returns its pid.
pub fn spawn(spec: SpawnSpec) -> Result<u32, SpawnError> {
    let (mut hs_parent, hs_child) =
        std::os::unix::net::UnixStream::pair().map_err(SpawnError::Spawn)?;
    let hs_child: OwnedFd = hs_child.into();
    let hs_raw = hs_child.as_raw_fd();
    let base = spec.uid_base;
    // The parent is inside Command::spawn while the child waits for its
    // maps, so a helper thread answers it.
    let helper = std::thread::spawn(move || -> std::io::Result<()> {
        let mut pid = [0u8; 4];
        hs_parent.read_exact(&mut pid)?;
        write_maps(u32::from_le_bytes(pid), base)?;
        hs_parent.write_all(b"g")
    });

    let donate = spec.donate.clone();
    let procs: Vec<RawFd> = spec.cgroup_procs.iter().map(|f| f.as_raw_fd()).collect();
    let netns = spec.netns.as_ref().map(|f| f.as_raw_fd());
    let mut flags = libc::CLONE_NEWUSER
        | libc::CLONE_NEWNS
        | libc::CLONE_NEWIPC
        | libc::CLONE_NEWUTS
        | libc::CLONE_NEWPID;
    if spec.new_netns {
        flags |= libc::CLONE_NEWNET;
    }
    let mut cmd = Command::new(&spec.binary);
    cmd.arg0("runsc-sandbox")
        .arg("boot")
        .args(&spec.boot_args)
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: the closure runs in the forked child before exec and only
    // makes raw system calls (fcntl, dup2, setsid, write, read, setns,
    // unshare, open, close, set*id, getpid) on descriptors the parent keeps open until
    // spawn returns; it allocates nothing.
    unsafe {
        let fuse_fd = spec.fuse_fd;
        cmd.pre_exec(move || child_setup(&donate, &procs, netns, flags, hs_raw, fuse_fd));
    }
    let result = cmd.spawn();
    drop(hs_child);
    let helped = helper.join();
    let child = result.map_err(SpawnError::Spawn)?;
    match helped {
        Ok(Ok(())) => Ok(child.id()),
        Ok(Err(e)) => Err(SpawnError::Maps(e)),
        Err(_) => Err(SpawnError::Maps(std::io::Error::other("helper panicked"))),
    }
}

fn check(rc: libc::c_int) -> std::io::Result<libc::c_int> {
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Runs in the child between fork and exec: async-signal-safe calls only.
fn child_setup(
    donate: &[RawFd],
    procs: &[RawFd],
    netns: Option<RawFd>,
    flags: libc::c_int,
    hs: RawFd,
    fuse_fd: Option<RawFd>,
) -> std::io::Result<()> {
    // SAFETY: raw system calls on descriptors owned by this
    // forked child; no memory is shared with other threads.
    unsafe {
        // Move every descriptor we use out of the way first, so that
        // placing the donated ones at 3, 4, … cannot clobber any of them.
        let high = |fd: RawFd| check(libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 100));
        let mut donated = [0 as RawFd; 32];
        let mut cgroups = [0 as RawFd; 16];
        if donate.len() > donated.len() || procs.len() > cgroups.len() {
            return Err(std::io::Error::from_raw_os_error(libc::E2BIG));
        }
        for (i, fd) in donate.iter().enumerate() {
            donated[i] = high(*fd)?;
        }
        for (i, fd) in procs.iter().enumerate() {
            cgroups[i] = high(*fd)?;
        }
        let hs = high(hs)?;
        let netns = match netns {
            Some(fd) => Some(high(fd)?),
            None => None,
        };
        for (i, fd) in donated.iter().take(donate.len()).enumerate() {
            check(libc::dup2(*fd, 3 + i as RawFd))?;
        }
        check(libc::setsid())?;
        crate::reset_signals()?;
        for fd in cgroups.iter().take(procs.len()) {
            let zero = b"0";
            check(libc::write(*fd, zero.as_ptr().cast(), 1) as libc::c_int)?;
        }
        if let Some(ns) = netns {
            check(libc::setns(ns, libc::CLONE_NEWNET))?;
        }
        check(libc::unshare(flags))?;
        if let Some(target) = fuse_fd {
            let fd = libc::open(c"/dev/fuse".as_ptr(), libc::O_RDWR);
            if fd >= 0 {
                check(libc::dup2(fd, target))?;
                libc::close(fd);
            }
        }
        let pid = (libc::getpid() as u32).to_le_bytes();
        if libc::write(hs, pid.as_ptr().cast(), 4) != 4 {
            return Err(std::io::Error::last_os_error());
        }
        let mut go = [0u8; 1];
        if libc::read(hs, go.as_mut_ptr().cast(), 1) != 1 {
            return Err(std::io::Error::from_raw_os_error(libc::EPERM));
        }
        check(libc::setresgid(0, 0, 0))?;
        check(libc::setgroups(0, std::ptr::null()))?;
        check(libc::setresuid(0, 0, 0))?;
    }
    Ok(())
}
