//! The helper that becomes a container's process.
//!
//! The sandbox re-executes itself as `runsc-init` inside the container's new
//! PID namespace, with a stream socket on fd 3 to talk to the sandbox:
//!
//! 1. the sandbox sends an [`InitRequest`] (the spec, as the sandbox sees it);
//! 2. the helper builds the container (mount namespace, rootfs, user,
//!    capabilities) and answers with an [`InitReply`];
//! 3. for a container's init it then waits for `start`; an exec goes on;
//! 4. it execs the program. The socket is close-on-exec, so the sandbox reads
//!    end-of-file on success, or an [`InitReply`] carrying the error.
//!
//! For an exec, fd 4 is the container's mount namespace, joined first.

use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};

use nix::sched::CloneFlags;
use serde::{Deserialize, Serialize};

use crate::container::{self, ContainerError};

/// Descriptor of the socket to the sandbox in a helper.
pub const INIT_SOCK_FD: i32 = 3;
/// Descriptor of the container's mount namespace in an exec helper.
pub const EXEC_MNTNS_FD: i32 = 4;

/// What the sandbox asks a helper to run.
#[derive(Debug, Serialize, Deserialize)]
pub struct InitRequest {
    /// The container's spec; for an exec, `process` is the exec's process.
    pub spec: oci_spec::runtime::Spec,
    /// Stdio is a terminal: become session leader and take it as ctty.
    pub terminal: bool,
    /// Make the terminal: a new pty of the container's devpts, whose
    /// master goes back to the sandbox with the ready reply.
    #[serde(default)]
    pub console: bool,
    /// The directory of the container's limits view, whose files the init
    /// binds over /proc and /sys (see [`crate::limits`]).
    #[serde(default)]
    pub view: Option<std::path::PathBuf>,
    /// Hand the sandbox a listener for the syscalls it answers
    /// ([`crate::limits::notify::NOTIFIED`]) with the reply.
    #[serde(default)]
    pub affinity: bool,
}

/// Kinds of failure a helper reports, so the host can pick a ttrpc code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FailureKind {
    /// The program does not exist or cannot be executed.
    NotFound,
    /// The spec asks for something invalid.
    InvalidSpec,
    /// Setting up failed.
    Internal,
}

/// A helper's answer.
#[derive(Debug, Serialize, Deserialize)]
pub struct InitReply {
    /// None when the step succeeded.
    pub error: Option<String>,
    /// What kind of failure `error` is.
    pub kind: Option<FailureKind>,
    /// A limits listener comes with the reply (after the pty
    /// master, if any).
    #[serde(default)]
    pub listener: bool,
}

/// Writes one length-prefixed message.
pub(crate) fn write_msg(w: &mut impl Write, body: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(body.len())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "message too long"))?;
    w.write_all(&len.to_le_bytes())?;
    w.write_all(body)?;
    w.flush()
}

/// Writes one length-prefixed message carrying descriptors `fds`.
pub(crate) fn write_msg_with_fds(
    sock: &std::fs::File,
    body: &[u8],
    fds: &[std::os::fd::RawFd],
) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let len = u32::try_from(body.len())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "message too long"))?;
    let mut buf = len.to_le_bytes().to_vec();
    buf.extend_from_slice(body);
    let iov = [std::io::IoSlice::new(&buf)];
    let cmsg = [nix::sys::socket::ControlMessage::ScmRights(fds)];
    let sent = nix::sys::socket::sendmsg::<()>(
        sock.as_raw_fd(),
        &iov,
        &cmsg,
        nix::sys::socket::MsgFlags::empty(),
        None,
    )?;
    if sent != buf.len() {
        // The descriptor went with the first bytes; send the rest plainly.
        let mut w = sock;
        w.write_all(&buf[sent..])?;
    }
    Ok(())
}

/// Reads one length-prefixed message and any descriptors sent with it;
/// `None` at end-of-file.
pub(crate) fn read_msg_with_fds(
    sock: &mut std::fs::File,
) -> std::io::Result<(Option<Vec<u8>>, Vec<OwnedFd>)> {
    use std::os::fd::AsRawFd;
    let mut len = [0u8; 4];
    let mut cmsg_buf = nix::cmsg_space!([std::os::fd::RawFd; 2]);
    let (n, fds) = {
        let mut iov = [std::io::IoSliceMut::new(&mut len)];
        let msg = nix::sys::socket::recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg_buf),
            nix::sys::socket::MsgFlags::MSG_CMSG_CLOEXEC,
        )?;
        let mut fds = Vec::new();
        if let Ok(cmsgs) = msg.cmsgs() {
            for c in cmsgs {
                if let nix::sys::socket::ControlMessageOwned::ScmRights(raw) = c {
                    for fd in raw {
                        // SAFETY: the kernel installed this descriptor for
                        // us with the message; nothing else owns it.
                        fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
                    }
                }
            }
        }
        (msg.bytes, fds)
    };
    if n == 0 {
        return Ok((None, fds));
    }
    if n < 4 {
        sock.read_exact(&mut len[n..])?;
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > 16 << 20 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "message too long",
        ));
    }
    let mut body = vec![0u8; len];
    sock.read_exact(&mut body)?;
    Ok((Some(body), fds))
}

/// Makes a pty of the devpts at /dev/pts (the container's), takes its
/// slave as stdin, stdout, stderr and controlling terminal, and returns
/// the master.
fn make_console() -> Result<OwnedFd, (String, FailureKind)> {
    use nix::fcntl::OFlag;
    let err = |what: &str, e: &dyn std::error::Error| {
        (format!("{what}: {}", error_chain(e)), FailureKind::Internal)
    };
    let master = nix::fcntl::open(
        "/dev/ptmx",
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| {
        err(
            "opening /dev/ptmx for the terminal (does the spec mount devpts?)",
            &e,
        )
    })?;
    use std::os::fd::AsRawFd;
    // SAFETY: unlockpt only issues TIOCSPTLCK on the master we own.
    if unsafe { libc::unlockpt(master.as_raw_fd()) } < 0 {
        return Err(err("unlocking the pty", &std::io::Error::last_os_error()));
    }
    // SAFETY: TIOCGPTPEER on a pty master we own returns a new descriptor
    // for its slave (or -1); no memory is passed.
    let slave = unsafe {
        libc::ioctl(
            master.as_raw_fd(),
            libc::TIOCGPTPEER,
            libc::O_RDWR | libc::O_NOCTTY,
        )
    };
    if slave < 0 {
        return Err(err(
            "opening the pty's slave",
            &std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: the ioctl returned a new descriptor nobody else owns.
    let slave = unsafe { OwnedFd::from_raw_fd(slave) };
    for target in 0..3 {
        // SAFETY: dup2 onto 0-2 replaces this process's standard
        // descriptors, which no Rust object owns.
        if unsafe { libc::dup2(slave.as_raw_fd(), target) } < 0 {
            return Err(err(
                "placing the pty slave",
                &std::io::Error::last_os_error(),
            ));
        }
    }
    drop(slave);
    take_terminal().map_err(|e| err("making the pty the controlling terminal", &e))?;
    Ok(master)
}

/// Becomes a session leader with fd 0 as controlling terminal.
fn take_terminal() -> std::io::Result<()> {
    nix::unistd::setsid()?;
    // SAFETY: TIOCSCTTY on fd 0 with argument 0 only changes this
    // process's controlling terminal; fd 0 is the pty slave.
    if unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Reads one length-prefixed message; `None` at end-of-file.
pub(crate) fn read_msg(r: &mut impl Read) -> std::io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > 16 << 20 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "message too long",
        ));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    Ok(Some(body))
}

fn kind_of(e: &ContainerError) -> FailureKind {
    match e {
        ContainerError::NotFound { .. }
        | ContainerError::NoSuchFile { .. }
        | ContainerError::NotExecutable { .. } => FailureKind::NotFound,
        ContainerError::InvalidSpec { .. } => FailureKind::InvalidSpec,
        _ => FailureKind::Internal,
    }
}

fn reply(sock: &mut std::fs::File, error: Option<(String, FailureKind)>) {
    let (error, kind) = match error {
        Some((e, k)) => (Some(e), Some(k)),
        None => (None, None),
    };
    let body = serde_json::to_vec(&InitReply {
        error,
        kind,
        listener: false,
    })
    .unwrap_or_default();
    let _ = write_msg(sock, &body);
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Which helper this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A container's first process: builds the container, waits for start.
    Container,
    /// A process joining a running container.
    Exec,
}

/// Entry point of `runsc-init`; never returns.
pub fn main(role: Role) -> ! {
    // Rust's runtime ignores SIGPIPE at start-up, and an ignored signal
    // survives exec: give the program the default dispositions.
    let _ = crate::reset_signals();
    // SAFETY: fd 3 was placed by the sandbox for this helper alone; we take
    // ownership once, here.
    let mut sock = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(INIT_SOCK_FD) });
    // dup2 cleared close-on-exec; the program must not inherit the socket
    // (its closing is how the sandbox learns the exec succeeded).
    let _ = nix::fcntl::fcntl(
        &sock,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    );
    let code = match run(role, &mut sock) {
        Ok(never) => match never {},
        Err((msg, kind)) => {
            reply(&mut sock, Some((msg, kind)));
            127
        }
    };
    std::process::exit(code)
}

enum Never {}

fn run(role: Role, sock: &mut std::fs::File) -> Result<Never, (String, FailureKind)> {
    let internal = |what: &str, e: &dyn std::error::Error| {
        (format!("{what}: {}", error_chain(e)), FailureKind::Internal)
    };
    let body = read_msg(sock)
        .map_err(|e| internal("reading the request", &e))?
        .ok_or_else(|| {
            (
                "the sandbox closed the init socket".to_string(),
                FailureKind::Internal,
            )
        })?;
    let req: InitRequest = serde_json::from_slice(&body).map_err(|e| {
        (
            format!("decoding the request: {e}"),
            FailureKind::InvalidSpec,
        )
    })?;
    let spec = &req.spec;
    let process = spec.process().as_ref().ok_or_else(|| {
        (
            "the spec has no process".to_string(),
            FailureKind::InvalidSpec,
        )
    })?;
    let fail = |e: ContainerError| (error_chain(&e), kind_of(&e));

    match role {
        Role::Container => {
            nix::sched::unshare(CloneFlags::CLONE_NEWNS)
                .map_err(|e| internal("creating the mount namespace", &e))?;
        }
        Role::Exec => {
            // SAFETY: fd 4 was placed by the sandbox for this helper alone.
            let mntns = unsafe { OwnedFd::from_raw_fd(EXEC_MNTNS_FD) };
            nix::sched::setns(&mntns, CloneFlags::CLONE_NEWNS)
                .map_err(|e| internal("joining the container's mount namespace", &e))?;
            drop(mntns);
        }
    }
    if req.terminal && !req.console {
        take_terminal()
            .map_err(|e| internal("making the terminal the controlling terminal", &e))?;
    }
    if role == Role::Container {
        container::setup_rootfs(spec, req.view.as_deref()).map_err(fail)?;
    }
    // Before the user and capabilities change: installing a filter needs
    // CAP_SYS_ADMIN or no_new_privs.
    let listener = if req.affinity {
        let installed = crate::seccomp::notify_filter(crate::limits::notify::NOTIFIED)
            .and_then(|p| crate::seccomp::install_notifying(&p));
        match installed {
            Ok(fd) => Some(fd),
            Err(e) => {
                // Nested listeners are refused (EBUSY): the kernel answers.
                log::debug!("no limits listener: {e}");
                None
            }
        }
    } else {
        None
    };
    let console = if req.console {
        Some(make_console()?)
    } else {
        None
    };
    let exec = container::prepare(process, spec.linux().as_ref()).map_err(fail)?;
    container::apply(process, spec.linux().as_ref()).map_err(fail)?;
    {
        use std::os::fd::AsRawFd;
        let fds: Vec<i32> = console
            .iter()
            .chain(listener.iter())
            .map(|f| f.as_raw_fd())
            .collect();
        let body = serde_json::to_vec(&InitReply {
            error: None,
            kind: None,
            listener: listener.is_some(),
        })
        .unwrap_or_default();
        if fds.is_empty() {
            write_msg(sock, &body).map_err(|e| internal("sending the reply", &e))?;
        } else {
            write_msg_with_fds(sock, &body, &fds)
                .map_err(|e| internal("sending the pty master and listener", &e))?;
        }
    }
    drop(listener);
    drop(console);
    if role == Role::Container {
        match read_msg(sock) {
            Ok(Some(m)) if m == b"start" => {}
            // The sandbox gave up on this container: leave quietly.
            _ => std::process::exit(1),
        }
    }
    let e = container::exec(&exec);
    Err(fail(e))
}
