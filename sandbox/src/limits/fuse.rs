//! A read-only FUSE filesystem, served by the sandbox, with one directory
//! per container holding the files of [`super::FILES`].
//!
//! Only what binding and reading files needs is implemented (INIT, LOOKUP,
//! GETATTR, OPEN, READ, RELEASE, FORGET, DESTROY); everything else is
//! ENOSYS. A file's text is made when it is opened, like procfs's, and
//! read with direct I/O, so every open sees the figures of that moment.
//!
//! `sendfile` and `splice` (busybox `cat`, Python's `shutil.copyfile`) go
//! through the page cache, which the file size bounds, so sizes are real:
//! an attribute carries the length of the text made at that moment, and
//! each open stores its own text in the page cache (FUSE_NOTIFY_STORE),
//! which sets the size to that text's. (procfs says 0 and does not need
//! the page cache.)
//!
//! Inodes: 1 is the root; container `i` has directory `i << 4` and its
//! files `(i << 4) | (1 + position in FILES)`.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Arc;

use nix::mount::{mount, MsFlags};

use super::{Registry, FILES};

/// Errors of mounting the view.
#[derive(Debug, thiserror::Error)]
pub enum FuseError {
    /// /dev/fuse could not be opened.
    #[error("opening /dev/fuse")]
    Open(#[source] std::io::Error),
    /// The mount was refused (EBADF: the host could not open /dev/fuse).
    #[error("mounting the limits view on {0}")]
    Mount(String, #[source] nix::Error),
}

const ROOT: u64 = 1;
const OP_LOOKUP: u32 = 1;
const OP_FORGET: u32 = 2;
const OP_GETATTR: u32 = 3;
const OP_OPEN: u32 = 14;
const OP_READ: u32 = 15;
const OP_RELEASE: u32 = 18;
const OP_INIT: u32 = 26;
const OP_INTERRUPT: u32 = 36;
const OP_DESTROY: u32 = 38;
const OP_BATCH_FORGET: u32 = 42;
/// fuse_notify_code FUSE_NOTIFY_STORE.
const NOTIFY_STORE: u32 = 4;
/// `FOPEN_DIRECT_IO`: bypass the page cache.
const FOPEN_DIRECT_IO: u32 = 1;
const IN_HEADER: usize = 40;
/// Seconds the kernel may cache names and attributes.
const TTL: u64 = 1;

/// Mounts the view at `target` over `dev`, or over /dev/fuse opened now
/// (the kernel wants it opened in the sandbox's user namespace; the host's
/// is usually 0600 root, so the manager opens it for us).
pub fn mount_view(target: &Path, dev: Option<File>) -> Result<File, FuseError> {
    let dev = match dev {
        Some(dev) => dev,
        None => std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/fuse")
            .map_err(FuseError::Open)?,
    };
    let data = format!(
        "fd={},rootmode=40555,user_id=0,group_id=0,allow_other,default_permissions",
        dev.as_raw_fd()
    );
    mount(
        Some("runsc-limits"),
        target,
        Some("fuse"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC | MsFlags::MS_RDONLY,
        Some(data.as_str()),
    )
    .map_err(|e| FuseError::Mount(target.display().to_string(), e))?;
    Ok(dev)
}

/// Serves the view on `dev` until the mount goes away.
pub fn serve(dev: File, registry: Arc<Registry>) {
    let mut server = Server {
        dev,
        registry,
        open: HashMap::new(),
        next_fh: 1,
    };
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match server.dev.read(&mut buf) {
            Ok(n) => n,
            Err(e) => match e.raw_os_error() {
                Some(libc::EINTR | libc::EAGAIN | libc::ENOENT) => continue,
                _ => {
                    log::info!("limits view: stopped serving: {e}");
                    return;
                }
            },
        };
        if n < IN_HEADER {
            continue;
        }
        let req = &buf[..n];
        let opcode = u32_at(req, 4);
        let unique = u64_at(req, 8);
        let node = u64_at(req, 16);
        let body = &req[IN_HEADER..];
        let reply = match opcode {
            OP_FORGET | OP_BATCH_FORGET | OP_INTERRUPT => continue,
            OP_DESTROY => return,
            OP_INIT => Ok(init_reply(body)),
            OP_LOOKUP => server.lookup(node, body),
            OP_GETATTR => server.attr(node).map(|a| {
                let mut out = Vec::with_capacity(104);
                put64(&mut out, TTL);
                put32(&mut out, 0);
                put32(&mut out, 0);
                out.extend_from_slice(&a);
                out
            }),
            OP_OPEN => server.open(node),
            OP_READ => Ok(server.read(body)),
            OP_RELEASE => {
                server.open.remove(&u64_at(body, 0));
                Ok(Vec::new())
            }
            _ => Err(libc::ENOSYS),
        };
        server.reply(unique, reply);
    }
}

struct Server {
    dev: File,
    registry: Arc<Registry>,
    open: HashMap<u64, Vec<u8>>,
    next_fh: u64,
}

impl Server {
    fn reply(&mut self, unique: u64, reply: Result<Vec<u8>, i32>) {
        let (error, body) = match reply {
            Ok(body) => (0, body),
            Err(errno) => (-errno, Vec::new()),
        };
        let mut out = Vec::with_capacity(16 + body.len());
        put32(&mut out, (16 + body.len()) as u32);
        put32(&mut out, error as u32);
        put64(&mut out, unique);
        out.extend_from_slice(&body);
        // ENOENT: the request was interrupted meanwhile; nothing to do.
        if let Err(e) = self.dev.write_all(&out) {
            if e.raw_os_error() != Some(libc::ENOENT) {
                log::warn!("limits view: replying: {e}");
            }
        }
    }

    /// Puts `text` in the page cache of `node` (see the module docs).
    fn store(&mut self, node: u64, text: &[u8]) {
        if text.is_empty() {
            return;
        }
        let mut out = Vec::with_capacity(40 + text.len());
        put32(&mut out, (40 + text.len()) as u32);
        put32(&mut out, NOTIFY_STORE);
        put64(&mut out, 0); // unique 0: a notification
        put64(&mut out, node);
        put64(&mut out, 0); // offset
        put32(&mut out, text.len() as u32);
        put32(&mut out, 0);
        out.extend_from_slice(text);
        if let Err(e) = self.dev.write_all(&out) {
            log::debug!("limits view: storing the text of node {node}: {e}");
        }
    }

    /// fuse_attr of `node`, or ENOENT.
    fn attr(&self, node: u64) -> Result<Vec<u8>, i32> {
        let (mode, nlink, size) = if node == ROOT {
            (libc::S_IFDIR | 0o555, 2, 0)
        } else {
            let index = node >> 4;
            let limits = self.registry.by_index(index).ok_or(libc::ENOENT)?;
            match (node & 0xf) as usize {
                0 => (libc::S_IFDIR | 0o555, 2, 0),
                f if f <= FILES.len() => {
                    let size = limits
                        .render(FILES[f - 1].0, self.registry.pod_boot)
                        .map_or(0, |t| t.len() as u64);
                    (libc::S_IFREG | 0o444, 1, size)
                }
                _ => return Err(libc::ENOENT),
            }
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut a = Vec::with_capacity(88);
        put64(&mut a, node); // ino
        put64(&mut a, size); // the length of the text if read now
        put64(&mut a, 0); // blocks
        for _ in 0..3 {
            put64(&mut a, now); // atime, mtime, ctime
        }
        for _ in 0..3 {
            put32(&mut a, 0); // their nanoseconds
        }
        put32(&mut a, mode);
        put32(&mut a, nlink);
        put32(&mut a, 0); // uid
        put32(&mut a, 0); // gid
        put32(&mut a, 0); // rdev
        put32(&mut a, 4096); // blksize
        put32(&mut a, 0); // flags
        Ok(a)
    }

    fn lookup(&self, parent: u64, body: &[u8]) -> Result<Vec<u8>, i32> {
        let name = body.split(|b| *b == 0).next().unwrap_or_default();
        let name = std::str::from_utf8(name).map_err(|_| libc::ENOENT)?;
        let node = if parent == ROOT {
            let (index, _) = self.registry.by_name(name).ok_or(libc::ENOENT)?;
            index << 4
        } else if parent & 0xf == 0 {
            let position = FILES
                .iter()
                .position(|(f, _)| *f == name)
                .ok_or(libc::ENOENT)?;
            parent | (position as u64 + 1)
        } else {
            return Err(libc::ENOTDIR);
        };
        let attr = self.attr(node)?;
        let mut out = Vec::with_capacity(128);
        put64(&mut out, node);
        put64(&mut out, 0); // generation
        put64(&mut out, TTL); // entry_valid
        put64(&mut out, TTL); // attr_valid
        put32(&mut out, 0);
        put32(&mut out, 0);
        out.extend_from_slice(&attr);
        Ok(out)
    }

    fn open(&mut self, node: u64) -> Result<Vec<u8>, i32> {
        let file = (node & 0xf) as usize;
        if node == ROOT || file == 0 {
            return Err(libc::EISDIR);
        }
        let limits = self.registry.by_index(node >> 4).ok_or(libc::ENOENT)?;
        let (name, _) = FILES.get(file - 1).ok_or(libc::ENOENT)?;
        let text = limits
            .render(name, self.registry.pod_boot)
            .ok_or(libc::ENOENT)?;
        let text = text.into_bytes();
        self.store(node, &text);
        let fh = self.next_fh;
        self.next_fh += 1;
        self.open.insert(fh, text);
        let mut out = Vec::with_capacity(16);
        put64(&mut out, fh);
        put32(&mut out, FOPEN_DIRECT_IO);
        put32(&mut out, 0);
        Ok(out)
    }

    fn read(&self, body: &[u8]) -> Vec<u8> {
        let (fh, offset, size) = (u64_at(body, 0), u64_at(body, 8), u32_at(body, 16));
        let Some(text) = self.open.get(&fh) else {
            return Vec::new();
        };
        let start = (offset as usize).min(text.len());
        let end = start.saturating_add(size as usize).min(text.len());
        text[start..end].to_vec()
    }
}

/// fuse_init_out for the kernel's fuse_init_in.
fn init_reply(body: &[u8]) -> Vec<u8> {
    let max_readahead = if body.len() >= 12 { u32_at(body, 8) } else { 0 };
    let mut out = Vec::with_capacity(64);
    put32(&mut out, 7); // major
    put32(&mut out, 31); // minor
    put32(&mut out, max_readahead);
    put32(&mut out, 0); // flags: none of the optional features
    out.extend_from_slice(&16u16.to_le_bytes()); // max_background
    out.extend_from_slice(&12u16.to_le_bytes()); // congestion_threshold
    put32(&mut out, 4096); // max_write
    put32(&mut out, 1); // time_gran
    out.resize(64, 0);
    out
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u32::from_le_bytes)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

fn put32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::OwnedFd;

    #[test]
    fn init_reply_is_a_fuse_init_out() {
        let mut body = Vec::new();
        for v in [7u32, 44, 131072, 0] {
            put32(&mut body, v);
        }
        let out = init_reply(&body);
        assert_eq!(out.len(), 64);
        assert_eq!((u32_at(&out, 0), u32_at(&out, 8)), (7, 131072));
        assert_eq!(u32_at(&out, 20), 4096);
    }

    #[test]
    fn names_resolve_to_inodes_and_attributes() {
        let registry = Arc::new(Registry::new(std::time::Duration::ZERO));
        let (limits, dir) = registry.add("c1", super::super::CgroupView::new(Vec::new()));
        assert_eq!(dir, Path::new("/limits/c1"));
        let (null_r, _) = std::os::unix::net::UnixStream::pair().unwrap();
        let server = Server {
            dev: File::from(OwnedFd::from(null_r)),
            registry: registry.clone(),
            open: HashMap::new(),
            next_fh: 1,
        };
        let entry = server.lookup(ROOT, b"c1\0").unwrap();
        let dir_node = u64_at(&entry, 0);
        assert_eq!(dir_node & 0xf, 0);
        let entry = server.lookup(dir_node, b"meminfo\0").unwrap();
        let file_node = u64_at(&entry, 0);
        assert_eq!(file_node, dir_node | 1);
        // mode is at offset 40 + 60 of fuse_entry_out.
        assert_eq!(u32_at(&entry, 100), libc::S_IFREG | 0o444);
        assert_eq!(server.lookup(dir_node, b"nope\0"), Err(libc::ENOENT));
        assert_eq!(server.lookup(ROOT, b"c2\0"), Err(libc::ENOENT));
        drop(limits);
        registry.remove("c1");
        assert_eq!(server.attr(file_node), Err(libc::ENOENT));
    }
}
