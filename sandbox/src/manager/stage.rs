//! Staging a container's files where its sandbox can see them.
//!
//! The sandbox lives in its own mount namespace, pivoted into a minimal
//! root; it sees the host only through `<state>/shared`, a shared mount the
//! sandbox holds a slave copy of. For each container the host mounts the
//! rootfs at `shared/<cid>/rootfs` and each bind-mount source at
//! `shared/<cid>/mounts/<n>`, idmapped to the sandbox's user namespace so
//! that container root owns what host root owns.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

/// Errors of staging.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    /// A mount operation failed.
    #[error("{what} {path}")]
    Mount {
        /// What was being done.
        what: &'static str,
        /// The path concerned.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The spec names something that cannot be staged.
    #[error("{0}")]
    Invalid(String),
}

fn err(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StageError {
    let path = path.to_path_buf();
    move |source| StageError::Mount { what, path, source }
}

fn cpath(p: &Path) -> Result<CString, StageError> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| StageError::Invalid(format!("path {} holds a NUL byte", p.display())))
}

const OPEN_TREE_CLONE: libc::c_uint = 1;
const AT_RECURSIVE: libc::c_uint = 0x8000;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// Clones the tree at `source` (recursively), idmapped with `userns`.
fn idmapped_clone(source: &Path, userns: RawFd) -> Result<OwnedFd, StageError> {
    let src = cpath(source)?;
    // SAFETY: open_tree reads the NUL-terminated path and returns a new
    // descriptor or -1; no memory is shared.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            src.as_ptr(),
            OPEN_TREE_CLONE | AT_RECURSIVE | libc::O_CLOEXEC as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(err("cloning the mount tree of", source)(
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: fd was just returned by open_tree and is owned by nobody else.
    let tree = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns as u64,
    };
    let empty = c"";
    // SAFETY: mount_setattr reads `attr` (size passed) and the empty path;
    // both outlive the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_EMPTY_PATH as libc::c_uint | AT_RECURSIVE,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc < 0 {
        return Err(err("idmapping", source)(std::io::Error::last_os_error()));
    }
    Ok(tree)
}

fn attach(tree: &OwnedFd, target: &Path) -> Result<(), StageError> {
    let dst = cpath(target)?;
    let empty = c"";
    // SAFETY: move_mount reads two NUL-terminated paths that outlive the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_FDCWD,
            dst.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if rc < 0 {
        return Err(err("attaching a mount on", target)(
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// Creates `target` as a directory or an empty file, like `source`.
fn make_target(source: &Path, target: &Path) -> Result<(), StageError> {
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent).map_err(err("creating", parent))?;
    }
    let meta = std::fs::metadata(source).map_err(err("reading", source))?;
    if meta.is_dir() {
        std::fs::create_dir_all(target).map_err(err("creating", target))?;
    } else if !target.exists() {
        std::fs::File::create(target).map_err(err("creating", target))?;
    }
    Ok(())
}

/// Mounts `source` at `target`, idmapped to `userns` when the filesystem
/// allows it, else as a plain recursive bind (ownership then shows as
/// nobody inside). Returns whether the mount is idmapped.
pub fn bind_idmapped(source: &Path, target: &Path, userns: RawFd) -> Result<bool, StageError> {
    make_target(source, target)?;
    match idmapped_clone(source, userns) {
        Ok(tree) => {
            attach(&tree, target)?;
            Ok(true)
        }
        Err(e) => {
            log::warn!(
                "{}: {}; falling back to a plain bind mount",
                e,
                std::error::Error::source(&e)
                    .map(|s| s.to_string())
                    .unwrap_or_default()
            );
            mount(
                Some(source),
                target,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .map_err(|e| err("binding", target)(e.into()))?;
            Ok(false)
        }
    }
}

/// Mounts a container's rootfs from the snapshotter's mounts at
/// `host_dir/rootfs`. An overlay cannot be idmapped once mounted, so each
/// lower layer is idmapped first and the overlay is mounted over those.
///
/// The upper and work directories stay as they are: overlayfs does its own
/// work there with the mounter's credentials (host root), which an idmapped
/// mount could not represent (EOVERFLOW, and the overlay falls back to
/// read-only). What container root creates lands in the upper directory
/// owned by its host uid `root_uid`, which maps back to 0 inside; the upper
/// directory's own root is given to `root_uid` so the container's `/` is
/// its root's.
pub fn mount_rootfs(
    mounts: &[super::RootfsMount],
    host_dir: &Path,
    userns: RawFd,
    root_uid: u32,
) -> Result<(), StageError> {
    let target = host_dir.join("rootfs");
    std::fs::create_dir_all(&target).map_err(err("creating", &target))?;
    for (i, m) in mounts.iter().enumerate() {
        let is_bind = m.typ == "bind" || m.options.iter().any(|o| o == "bind" || o == "rbind");
        if m.typ == "overlay" {
            mount_overlay(m, host_dir, i, &target, userns, root_uid)?;
        } else if is_bind {
            let ro = m.options.iter().any(|o| o == "ro");
            bind_idmapped(Path::new(&m.source), &target, userns)?;
            if ro {
                mount(
                    None::<&str>,
                    &target,
                    None::<&str>,
                    MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                    None::<&str>,
                )
                .map_err(|e| err("making read-only", &target)(e.into()))?;
            }
        } else {
            let data = m.options.join(",");
            mount(
                Some(m.source.as_str()),
                &target,
                Some(m.typ.as_str()),
                MsFlags::empty(),
                Some(data.as_str()),
            )
            .map_err(|e| err("mounting the rootfs at", &target)(e.into()))?;
        }
    }
    Ok(())
}

fn mount_overlay(
    m: &super::RootfsMount,
    host_dir: &Path,
    index: usize,
    target: &Path,
    userns: RawFd,
    root_uid: u32,
) -> Result<(), StageError> {
    let layers = host_dir.join(format!("layers{index}"));
    let mut data: Vec<String> = Vec::new();
    for o in &m.options {
        if let Some(l) = o.strip_prefix("lowerdir=") {
            let mut staged = Vec::new();
            for (n, dir) in l.split(':').enumerate() {
                let t = layers.join(n.to_string());
                bind_idmapped(Path::new(dir), &t, userns)?;
                staged.push(t.display().to_string());
            }
            data.push(format!("lowerdir={}", staged.join(":")));
        } else {
            if let Some(upper) = o.strip_prefix("upperdir=") {
                give_root_to(Path::new(upper), root_uid)?;
            }
            data.push(o.clone());
        }
    }
    let data = data.join(",");
    mount(
        Some("overlay"),
        target,
        Some("overlay"),
        MsFlags::empty(),
        Some(data.as_str()),
    )
    .map_err(|e| err("mounting the overlay at", target)(e.into()))
}

/// Makes `dir` (the root of an upper layer) owned by `uid`, the host id of
/// container root, if host root owns it.
fn give_root_to(dir: &Path, uid: u32) -> Result<(), StageError> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(dir).map_err(err("reading", dir))?;
    if meta.uid() == 0 {
        std::os::unix::fs::chown(dir, Some(uid), Some(uid)).map_err(err("chowning", dir))?;
    }
    Ok(())
}

/// Makes `dir` a mount point with shared propagation, the host end of the
/// sandbox's /shared.
pub fn make_shared_dir(dir: &Path) -> Result<(), StageError> {
    std::fs::create_dir_all(dir).map_err(err("creating", dir))?;
    mount(Some(dir), dir, None::<&str>, MsFlags::MS_BIND, None::<&str>)
        .map_err(|e| err("bind-mounting", dir)(e.into()))?;
    mount(
        None::<&str>,
        dir,
        None::<&str>,
        MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| err("making private", dir)(e.into()))?;
    mount(
        None::<&str>,
        dir,
        None::<&str>,
        MsFlags::MS_SHARED,
        None::<&str>,
    )
    .map_err(|e| err("making shared", dir)(e.into()))?;
    Ok(())
}

/// Unmounts everything at and below `dir` (lazily) and removes the tree.
/// Missing paths are fine.
pub fn unmount_and_remove(dir: &Path) -> Result<(), StageError> {
    if !dir.exists() {
        return Ok(());
    }
    // Deepest mounts first, from the mount table.
    let prefix = dir.to_path_buf();
    let mut points: Vec<PathBuf> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_mountinfo(p)))
        .filter(|p| p.starts_with(&prefix))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    points.dedup();
    for p in points {
        match umount2(&p, MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => {}
            Err(e) => return Err(err("unmounting", &p)(e.into())),
        }
    }
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(err("removing", dir)(e)),
    }
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// True when `path` appears as a mount point in this mount namespace.
pub fn is_mount_point(path: &Path) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|p| Path::new(&unescape_mountinfo(p)) == path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape_mountinfo("/a\\040b"), "/a b");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
        assert_eq!(unescape_mountinfo("/x\\011"), "/x\t");
    }
}
