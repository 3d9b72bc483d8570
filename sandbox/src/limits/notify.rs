//! Syscalls about the machine's size, answered by the sandbox: a
//! container's helper installs [`crate::seccomp::notify_filter`] for
//! [`NOTIFIED`] before it becomes the workload and hands the listener to the
//! sandbox, whose [`Watcher`] thread answers:
//! - `sched_getaffinity`: the caller's real mask cut down to the
//!   container's CPU count. `nproc`, glibc's `get_nprocs`, Go's and Rust's
//!   runtimes and most thread pools size themselves from it. Only questions
//!   about the caller itself (pid 0 or its own pid) are answered here; the
//!   kernel answers the rest as usual.
//! - `sysinfo`: memory and swap from the container's cgroup, the pod's
//!   uptime; the load averages stay the host's. `free`, glibc's
//!   `sysconf(_SC_PHYS_PAGES)` and the runtimes that size heaps from it read
//!   this. A container without a memory limit gets the kernel's answer.
//!
//! Answers are written into the caller's memory through `/proc/PID/mem`,
//! after checking that the notification is still valid.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use super::{render, Limits};

/// Largest mask copied (the kernel's own is 1 KiB at most).
const MAX_MASK: usize = 8192;

/// The syscalls the helpers send to the sandbox.
pub const NOTIFIED: &[i64] = &[libc::SYS_sched_getaffinity, libc::SYS_sysinfo];

/// The thread answering every container's listener.
pub struct Watcher {
    new: Mutex<Vec<(OwnedFd, Arc<Limits>)>>,
    /// Written to when `new` has entries; the thread polls `woken`.
    wake: UnixStream,
    woken: UnixStream,
    /// The host's CLOCK_BOOTTIME when the pod started.
    pod_boot: Duration,
}

impl Watcher {
    /// Starts the watcher thread for a pod started at `pod_boot` (host
    /// CLOCK_BOOTTIME).
    pub fn start(pod_boot: Duration) -> io::Result<Arc<Self>> {
        let (wake, woken) = UnixStream::pair()?;
        wake.set_nonblocking(true)?;
        woken.set_nonblocking(true)?;
        let watcher = Arc::new(Watcher {
            new: Mutex::new(Vec::new()),
            wake,
            woken,
            pod_boot,
        });
        let w = watcher.clone();
        std::thread::Builder::new()
            .name("limits-notify".into())
            .spawn(move || w.run())?;
        Ok(watcher)
    }

    /// Answers the notifications of `listener` with `limits`.
    pub fn watch(&self, listener: OwnedFd, limits: Arc<Limits>) {
        self.new
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((listener, limits));
        // A full buffer already means "look".
        let _ = (&self.wake).write(&[1]);
    }

    fn run(&self) {
        let mut listeners: HashMap<RawFd, (OwnedFd, Arc<Limits>)> = HashMap::new();
        loop {
            for (fd, limits) in self.new.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
                listeners.insert(fd.as_raw_fd(), (fd, limits));
            }
            let order: Vec<RawFd> = listeners.keys().copied().collect();
            let mut fds = vec![PollFd::new(self.woken.as_fd(), PollFlags::POLLIN)];
            fds.extend(
                order
                    .iter()
                    .map(|fd| PollFd::new(listeners[fd].0.as_fd(), PollFlags::POLLIN)),
            );
            if let Err(e) = poll(&mut fds, PollTimeout::NONE) {
                if e != nix::errno::Errno::EINTR {
                    log::error!("affinity: poll: {e}; answering no more");
                    return;
                }
                continue;
            }
            let ready: Vec<(usize, PollFlags)> = fds
                .iter()
                .enumerate()
                .filter_map(|(i, f)| f.revents().filter(|r| !r.is_empty()).map(|r| (i, r)))
                .collect();
            drop(fds);
            for (i, revents) in ready {
                if i == 0 {
                    let _ = (&self.woken).read(&mut [0u8; 64]);
                    continue;
                }
                let fd = order[i - 1];
                if revents.contains(PollFlags::POLLIN) {
                    if let Some((listener, limits)) = listeners.get(&fd) {
                        answer_one(listener, limits, self.pod_boot);
                    }
                } else {
                    // Every process of the filter is gone.
                    listeners.remove(&fd);
                }
            }
        }
    }
}

/// Receives one notification on `listener` and answers it.
fn answer_one(listener: &OwnedFd, limits: &Limits, pod_boot: Duration) {
    // SAFETY: seccomp_notif is plain integers; all zeroes is valid and is
    // what the kernel requires before NOTIF_RECV.
    let mut req: libc::seccomp_notif = unsafe { std::mem::zeroed() };
    // SAFETY: NOTIF_RECV writes one seccomp_notif into `req`, which is
    // exactly that type and lives across the call.
    let rc = unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_RECV,
            &mut req,
        )
    };
    if rc < 0 {
        // ENOENT: the caller went away (a signal) before we looked.
        return;
    }
    let (val, error, flags) = match answer(listener, &req, limits, pod_boot) {
        Answer::Value(v) => (v, 0, 0),
        Answer::Errno(e) => (0, -e, 0),
        Answer::Continue => (0, 0, libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32),
    };
    let resp = libc::seccomp_notif_resp {
        id: req.id,
        val,
        error,
        flags,
    };
    // SAFETY: NOTIF_SEND reads one seccomp_notif_resp from `resp`, which is
    // exactly that type and lives across the call.
    unsafe { libc::ioctl(listener.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_SEND, &resp) };
}

enum Answer {
    Value(i64),
    Errno(i32),
    Continue,
}

fn answer(
    listener: &OwnedFd,
    req: &libc::seccomp_notif,
    limits: &Limits,
    pod_boot: Duration,
) -> Answer {
    match i64::from(req.data.nr) {
        libc::SYS_sched_getaffinity => affinity(listener, req, limits),
        libc::SYS_sysinfo => sysinfo(listener, req, limits, pod_boot),
        _ => Answer::Continue,
    }
}

/// sched_getaffinity(pid, len, mask): the caller's own mask, cut to the
/// container's CPU count.
fn affinity(listener: &OwnedFd, req: &libc::seccomp_notif, limits: &Limits) -> Answer {
    let pid = req.pid as libc::pid_t;
    let [target, len, addr, ..] = req.data.args;
    if target as libc::pid_t != 0 && Some(target as libc::pid_t) != own_pid_of(pid) {
        return Answer::Continue;
    }
    let mut mask = vec![0u8; (len as usize).min(MAX_MASK)];
    // SAFETY: the kernel writes at most `mask.len()` bytes into `mask`,
    // which we own and which lives across the call.
    let copied = unsafe {
        libc::syscall(
            libc::SYS_sched_getaffinity,
            pid,
            mask.len(),
            mask.as_mut_ptr(),
        )
    };
    if copied < 0 {
        return Answer::Errno(
            io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EINVAL),
        );
    }
    let copied = copied as usize;
    render::keep_first_cpus(&mut mask[..copied], limits.visible_cpus().len());
    match write_back(listener, req, &mask[..copied], addr, limits) {
        Ok(()) => Answer::Value(copied as i64),
        Err(a) => a,
    }
}

/// sysinfo(info): memory and swap from the cgroup, the pod's uptime.
fn sysinfo(
    listener: &OwnedFd,
    req: &libc::seccomp_notif,
    limits: &Limits,
    pod_boot: Duration,
) -> Answer {
    // SAFETY: libc::sysinfo is plain integers; all zeroes is valid.
    let mut info: libc::sysinfo = unsafe { std::mem::zeroed() };
    // SAFETY: sysinfo writes one struct sysinfo into `info`, which is that
    // type and lives across the call.
    if unsafe { libc::sysinfo(&mut info) } != 0 {
        return Answer::Continue;
    }
    let unit = u64::from(info.mem_unit.max(1));
    let Some(m) = limits.cgroup.memory(info.totalram.saturating_mul(unit)) else {
        return Answer::Continue;
    };
    info.totalram = m.limit;
    info.freeram = m.limit.saturating_sub(m.usage);
    info.sharedram = m.stat.get("shmem").copied().unwrap_or(0);
    info.bufferram = 0;
    let (host_swap, host_swap_free) = (
        info.totalswap.saturating_mul(unit),
        info.freeswap.saturating_mul(unit),
    );
    (info.totalswap, info.freeswap) = match m.swap {
        Some((total, used)) => {
            let total = total.min(host_swap);
            (total, total.saturating_sub(used))
        }
        None => (host_swap, host_swap_free),
    };
    info.totalhigh = 0;
    info.freehigh = 0;
    info.mem_unit = 1;
    if !pod_boot.is_zero() {
        info.uptime = super::boottime().saturating_sub(pod_boot).as_secs() as i64;
    }
    // SAFETY: `info` is a fully initialised plain-data struct; the slice
    // covers exactly its bytes and lives no longer than it.
    let bytes = unsafe {
        std::slice::from_raw_parts(
            std::ptr::addr_of!(info).cast::<u8>(),
            std::mem::size_of::<libc::sysinfo>(),
        )
    };
    match write_back(listener, req, bytes, req.data.args[0], limits) {
        Ok(()) => Answer::Value(0),
        Err(a) => a,
    }
}

/// Writes `bytes` at `addr` in the caller of `req`, once the notification
/// is known to be still valid (the caller may have been killed, and its pid
/// reused, since it asked).
fn write_back(
    listener: &OwnedFd,
    req: &libc::seccomp_notif,
    bytes: &[u8],
    addr: u64,
    limits: &Limits,
) -> Result<(), Answer> {
    let id = req.id;
    // SAFETY: NOTIF_ID_VALID reads one u64 from `id`, which lives across
    // the call.
    if unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_ID_VALID,
            &id,
        )
    } != 0
    {
        return Err(Answer::Errno(libc::ESRCH));
    }
    let pid = req.pid;
    OpenOptions::new()
        .write(true)
        .open(format!("/proc/{pid}/mem"))
        .and_then(|mem| mem.write_all_at(bytes, addr))
        .map_err(|e| {
            log::debug!(
                "container {}: syscall {} of pid {pid}: writing the answer: {e}",
                limits.cid,
                req.data.nr
            );
            Answer::Errno(libc::EFAULT)
        })
}

/// The pid process `pid` (in our PID namespace) has in its own namespace.
fn own_pid_of(pid: libc::pid_t) -> Option<libc::pid_t> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))?
        .split_whitespace()
        .last()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::FromRawFd;

    /// Sends `fd` over `sock` with raw syscalls only (for a forked child).
    ///
    /// # Safety
    /// `sock` and `fd` must be open descriptors.
    unsafe fn send_fd_raw(sock: RawFd, fd: RawFd) -> bool {
        let mut space = [0u64; 8];
        let byte = [b'x'];
        let mut iov = libc::iovec {
            iov_base: byte.as_ptr() as *mut libc::c_void,
            iov_len: 1,
        };
        // SAFETY: msghdr is plain data; zero is a valid empty header.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = space.as_mut_ptr().cast();
        // SAFETY: CMSG_* compute sizes and pointers inside `space`, which is
        // 64 bytes, 8-aligned, and larger than CMSG_SPACE(4).
        unsafe {
            msg.msg_controllen = libc::CMSG_SPACE(4) as usize;
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(4) as usize;
            std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>(), fd);
            libc::sendmsg(sock, &msg, 0) == 1
        }
    }

    /// Counts the CPUs sched_getaffinity(pid) reports, with raw syscalls.
    fn affinity_count(pid: libc::pid_t) -> i32 {
        let mut mask = [0u8; 128];
        // SAFETY: the kernel (or the watcher, through /proc/pid/mem) writes
        // at most 128 bytes into `mask`, which lives across the call.
        let n = unsafe {
            libc::syscall(
                libc::SYS_sched_getaffinity,
                pid,
                mask.len(),
                mask.as_mut_ptr(),
            )
        };
        if n < 0 {
            return -1;
        }
        mask[..n as usize]
            .iter()
            .map(|b| b.count_ones() as i32)
            .sum()
    }

    #[test]
    fn sched_getaffinity_and_sysinfo_are_answered_from_the_cgroup() {
        let host = affinity_count(0);
        let cg = std::env::temp_dir().join(format!("affinity-{}", std::process::id()));
        std::fs::create_dir_all(&cg).unwrap();
        std::fs::write(cg.join("cpu.max"), "100000 100000\n").unwrap();
        std::fs::write(cg.join("memory.max"), "268435456\n").unwrap();
        std::fs::write(cg.join("memory.current"), "67108864\n").unwrap();
        let dir = nix::fcntl::open(
            &cg,
            nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY,
            nix::sys::stat::Mode::empty(),
        )
        .unwrap();
        let limits = Arc::new(Limits {
            cid: "c1".into(),
            cgroup: super::super::CgroupView::new(vec![(super::super::UNIFIED.into(), dir)]),
        });
        let watcher = Watcher::start(Duration::ZERO).unwrap();
        let program = crate::seccomp::notify_filter(NOTIFIED).unwrap();
        let (ours, theirs) = UnixStream::pair().unwrap();
        let theirs_raw = theirs.as_raw_fd();
        // SAFETY: the child makes raw syscalls only (prctl, seccomp,
        // sendmsg, sched_getaffinity, getpid) and leaves with _exit.
        let child = match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                // SAFETY: raw syscalls on this child's own state.
                let code = unsafe {
                    if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                        libc::_exit(100);
                    }
                    let Ok(listener) = crate::seccomp::install_notifying(&program) else {
                        libc::_exit(101);
                    };
                    if !send_fd_raw(theirs_raw, listener.as_raw_fd()) {
                        libc::_exit(102);
                    }
                    // SAFETY: zeroed plain data, then filled by sysinfo.
                    let mut info: libc::sysinfo = std::mem::zeroed();
                    let memory_ok = libc::sysinfo(&mut info) == 0
                        && u64::from(info.mem_unit) * info.totalram == 256 << 20
                        && u64::from(info.mem_unit) * info.freeram == 192 << 20;
                    i32::from(memory_ok) * 100
                        + affinity_count(0) * 10
                        + affinity_count(libc::getpid())
                };
                // SAFETY: ends the child without running the parent's destructors.
                unsafe { libc::_exit(code) }
            }
            nix::unistd::ForkResult::Parent { child } => child,
        };
        drop(theirs);
        let mut byte = [0u8; 1];
        let mut iov = [std::io::IoSliceMut::new(&mut byte)];
        let mut space = nix::cmsg_space!([RawFd; 1]);
        let msg = nix::sys::socket::recvmsg::<()>(
            ours.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            nix::sys::socket::MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .unwrap();
        let mut listener = None;
        for c in msg.cmsgs().unwrap() {
            if let nix::sys::socket::ControlMessageOwned::ScmRights(fds) = c {
                // SAFETY: the kernel gave us this descriptor with the message.
                listener = fds.first().map(|fd| unsafe { OwnedFd::from_raw_fd(*fd) });
            }
        }
        watcher.watch(listener.expect("the child sent its listener"), limits);
        let status = nix::sys::wait::waitpid(child, None).unwrap();
        std::fs::remove_dir_all(&cg).unwrap();
        assert_eq!(
            status,
            nix::sys::wait::WaitStatus::Exited(child, 111),
            "a 1-CPU, 256 MiB container on a {host}-CPU host sees 1 CPU for pid 0 and for its \
             own pid, and 256 MiB of which 192 MiB free in sysinfo"
        );
    }

    #[test]
    fn own_pid_is_the_innermost() {
        let me = std::process::id() as libc::pid_t;
        assert!(own_pid_of(me).is_some());
        assert_eq!(own_pid_of(-5), None);
    }
}
