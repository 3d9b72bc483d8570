//! The fd channel: how the host hands file descriptors (stdio, pty slaves) to
//! the sandbox, since ttrpc cannot carry them.
//!
//! The host connects to the sandbox's donated SOCK_SEQPACKET listener and
//! sends one message: an operation byte and a 64-bit token.
//! - `p` (put) carries descriptors (SCM_RIGHTS); the sandbox stores them and
//!   acknowledges with `k`. A later runtime-control call names the token.
//! - `g` (get) asks for descriptors the sandbox stored under the token (a
//!   pty master it made); the answer `k` carries them, `e` means none.

use std::collections::HashMap;
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use nix::sys::socket::{
    accept4, connect, recv, recvmsg, send, sendmsg, socket, AddressFamily, ControlMessage,
    ControlMessageOwned, MsgFlags, SockFlag, SockType, UnixAddr,
};

/// Most descriptors one message may carry.
pub const MAX_FDS: usize = 16;

/// Errors of the fd channel.
#[derive(Debug, thiserror::Error)]
pub enum FdPassError {
    /// Creating or connecting the socket failed.
    #[error("connecting to the fd channel {path}")]
    Connect {
        /// The socket path.
        path: String,
        /// The cause.
        #[source]
        source: nix::Error,
    },
    /// Sending or receiving a message failed.
    #[error("{what} on the fd channel")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The cause.
        #[source]
        source: nix::Error,
    },
    /// The peer closed the channel or answered something unexpected.
    #[error("fd channel: {0}")]
    Protocol(&'static str),
}

/// A fresh token, unique within this process and unlikely to collide across
/// processes (pid and time in the high bits).
pub fn new_token() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(1);
    let pid = u64::from(std::process::id());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    (pid << 44) ^ (u64::from(now) << 16) ^ COUNTER.fetch_add(1, Ordering::Relaxed) | 1
}

fn message(op: u8, token: u64) -> [u8; 9] {
    let mut m = [0u8; 9];
    m[0] = op;
    m[1..].copy_from_slice(&token.to_le_bytes());
    m
}

fn connect_to(path: &Path) -> nix::Result<OwnedFd> {
    let sock = socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    let addr = UnixAddr::new(path)?;
    connect(sock.as_raw_fd(), &addr)?;
    Ok(sock)
}

/// Receives one message into `bytes`, with up to [`MAX_FDS`] descriptors.
fn receive(sock: &OwnedFd, bytes: &mut [u8]) -> nix::Result<(usize, Vec<OwnedFd>)> {
    let mut cmsg_buf = nix::cmsg_space!([RawFd; MAX_FDS]);
    let mut iov = [IoSliceMut::new(bytes)];
    let msg = recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg_buf),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let mut fds = Vec::new();
    if let Ok(cmsgs) = msg.cmsgs() {
        for c in cmsgs {
            if let ControlMessageOwned::ScmRights(raw) = c {
                for fd in raw {
                    // SAFETY: the kernel installed these descriptors for us
                    // with this message; nothing else owns them.
                    fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
                }
            }
        }
    }
    Ok((msg.bytes, fds))
}

/// Takes the descriptors the sandbox listening at `path` stored under
/// `token` (e.g. the master of a pty it made).
pub fn fetch_fds(path: &Path, token: u64) -> Result<Vec<OwnedFd>, FdPassError> {
    let sock = connect_to(path).map_err(|source| FdPassError::Connect {
        path: path.display().to_string(),
        source,
    })?;
    send(sock.as_raw_fd(), &message(b'g', token), MsgFlags::empty()).map_err(|source| {
        FdPassError::Io {
            what: "asking for descriptors",
            source,
        }
    })?;
    let mut reply = [0u8; 1];
    let (n, fds) = receive(&sock, &mut reply).map_err(|source| FdPassError::Io {
        what: "receiving descriptors",
        source,
    })?;
    if n == 1 && reply[0] == b'k' {
        Ok(fds)
    } else {
        Err(FdPassError::Protocol(
            "the sandbox holds no descriptors under that token",
        ))
    }
}

/// Sends `fds` under `token` to the sandbox listening at `path`, and waits
/// until the sandbox has stored them.
pub fn send_fds(path: &Path, token: u64, fds: &[BorrowedFd<'_>]) -> Result<(), FdPassError> {
    if fds.len() > MAX_FDS {
        return Err(FdPassError::Protocol("too many descriptors in one message"));
    }
    let connect_err = |source| FdPassError::Connect {
        path: path.display().to_string(),
        source,
    };
    let sock = connect_to(path).map_err(connect_err)?;
    let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let bytes = message(b'p', token);
    let iov = [IoSlice::new(&bytes)];
    let cmsg = [ControlMessage::ScmRights(&raw)];
    let cmsgs: &[ControlMessage<'_>] = if raw.is_empty() { &[] } else { &cmsg };
    sendmsg::<()>(sock.as_raw_fd(), &iov, cmsgs, MsgFlags::empty(), None).map_err(|source| {
        FdPassError::Io {
            what: "sending descriptors",
            source,
        }
    })?;
    let mut ack = [0u8; 1];
    match recv(sock.as_raw_fd(), &mut ack, MsgFlags::empty()) {
        Ok(1) if ack[0] == b'k' => Ok(()),
        Ok(_) => Err(FdPassError::Protocol("the sandbox refused the descriptors")),
        Err(source) => Err(FdPassError::Io {
            what: "waiting for the acknowledgement",
            source,
        }),
    }
}

/// The sandbox's side: descriptors received, by token.
#[derive(Default, Clone)]
pub struct FdStore {
    inner: Arc<Mutex<HashMap<u64, Vec<OwnedFd>>>>,
}

impl FdStore {
    /// Takes the descriptors stored under `token`.
    pub fn take(&self, token: u64) -> Option<Vec<OwnedFd>> {
        self.lock().remove(&token)
    }

    /// Stores `fds` under `token` (the boot stdio, donated at start).
    pub fn insert(&self, token: u64, fds: Vec<OwnedFd>) {
        self.lock().insert(token, fds);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Vec<OwnedFd>>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Serves the listening socket `listener` forever on a new thread.
    pub fn serve(&self, listener: OwnedFd) -> std::io::Result<()> {
        let store = self.clone();
        std::thread::Builder::new()
            .name("fd-channel".into())
            .spawn(move || loop {
                match accept4(listener.as_raw_fd(), SockFlag::SOCK_CLOEXEC) {
                    // SAFETY: accept4 returned a new descriptor that nothing else owns.
                    Ok(fd) => store.receive_one(unsafe { OwnedFd::from_raw_fd(fd) }),
                    Err(nix::Error::EINTR) | Err(nix::Error::ECONNABORTED) => {}
                    Err(e) => {
                        log::error!("fd channel: accept failed: {e}");
                        std::thread::sleep(std::time::Duration::from_millis(100));
                    }
                }
            })
            .map(|_| ())
    }

    fn receive_one(&self, conn: OwnedFd) {
        let mut bytes = [0u8; 9];
        let (n, fds) = match receive(&conn, &mut bytes) {
            Ok(v) => v,
            Err(e) => {
                log::warn!("fd channel: receive failed: {e}");
                return;
            }
        };
        let mut token = [0u8; 8];
        token.copy_from_slice(&bytes[1..]);
        let token = u64::from_le_bytes(token);
        let result = match (n, bytes[0]) {
            (9, b'p') => {
                self.lock().insert(token, fds);
                send(conn.as_raw_fd(), b"k", MsgFlags::empty()).map(|_| ())
            }
            (9, b'g') => match self.take(token) {
                Some(out) => {
                    let raw: Vec<RawFd> = out.iter().map(|f| f.as_raw_fd()).collect();
                    let iov = [IoSlice::new(b"k")];
                    let cmsg = [ControlMessage::ScmRights(&raw)];
                    sendmsg::<()>(conn.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None)
                        .map(|_| ())
                }
                None => send(conn.as_raw_fd(), b"e", MsgFlags::empty()).map(|_| ()),
            },
            _ => send(conn.as_raw_fd(), b"e", MsgFlags::empty()).map(|_| ()),
        };
        if let Err(e) = result {
            log::warn!("fd channel: answering failed: {e}");
        }
    }
}

/// Creates a listening SOCK_SEQPACKET socket bound to `path`.
pub fn listen_at(path: &Path) -> Result<OwnedFd, FdPassError> {
    let err = |source| FdPassError::Connect {
        path: path.display().to_string(),
        source,
    };
    let sock = socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(err)?;
    let _ = std::fs::remove_file(path);
    let addr = UnixAddr::new(path).map_err(err)?;
    nix::sys::socket::bind(sock.as_raw_fd(), &addr).map_err(err)?;
    nix::sys::socket::listen(&sock, nix::sys::socket::Backlog::new(64).map_err(err)?)
        .map_err(err)?;
    Ok(sock)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::AsFd;

    #[test]
    fn descriptors_arrive_under_their_token() {
        let dir = std::env::temp_dir().join(format!("fdpass-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("fd.sock");
        let store = FdStore::default();
        store.serve(listen_at(&path).unwrap()).unwrap();

        let (r, w) = nix::unistd::pipe().unwrap();
        let token = new_token();
        send_fds(&path, token, &[w.as_fd()]).unwrap();
        drop(w);
        let mut got = store.take(token).expect("stored");
        // And back: what the sandbox stores, the host can fetch.
        let (r2, w2) = nix::unistd::pipe().unwrap();
        store.insert(7, vec![w2]);
        let mut back = fetch_fds(&path, 7).unwrap();
        assert_eq!(back.len(), 1);
        assert!(fetch_fds(&path, 7).is_err(), "fetched once");
        std::fs::File::from(back.remove(0))
            .write_all(b"back")
            .unwrap();
        let mut b = String::new();
        std::fs::File::from(r2).read_to_string(&mut b).unwrap();
        assert_eq!(b, "back");
        assert!(store.take(token).is_none(), "taken once");
        let mut wfile = std::fs::File::from(got.remove(0));
        wfile.write_all(b"through the channel").unwrap();
        drop(wfile);
        let mut s = String::new();
        std::fs::File::from(r).read_to_string(&mut s).unwrap();
        assert_eq!(s, "through the channel");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
