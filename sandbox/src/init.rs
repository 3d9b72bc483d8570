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
}

/// Writes one length-prefixed message.
pub(crate) fn write_msg(w: &mut impl Write, body: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(body.len())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "message too long"))?;
    w.write_all(&len.to_le_bytes())?;
    w.write_all(body)?;
    w.flush()
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
    let body = serde_json::to_vec(&InitReply { error, kind }).unwrap_or_default();
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
    if req.terminal {
        nix::unistd::setsid().map_err(|e| internal("setsid", &e))?;
        // SAFETY: TIOCSCTTY on fd 0 with argument 0 only changes this
        // process's controlling terminal; fd 0 is the pty slave we were given.
        let rc = unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) };
        if rc < 0 {
            return Err(internal(
                "making the terminal the controlling terminal",
                &std::io::Error::last_os_error(),
            ));
        }
    }
    if role == Role::Container {
        container::setup_rootfs(spec).map_err(fail)?;
    }
    let exec = container::prepare(process, spec.linux().as_ref()).map_err(fail)?;
    container::apply(process, spec.linux().as_ref()).map_err(fail)?;
    reply(sock, None);
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
