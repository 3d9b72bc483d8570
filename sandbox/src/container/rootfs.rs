//! The container's root filesystem: its mounts, its `/dev`, the switch into
//! it with `pivot_root`, and what is hidden or made read-only afterwards.
//!
//! Mount destinations are resolved inside the rootfs without ever leaving
//! it: symlinks are followed as if the rootfs were `/`, missing components
//! are created one at a time under descriptors opened with
//! `RESOLVE_NO_SYMLINKS`, and the mount itself targets the resulting `O_PATH`
//! descriptor through `/proc/self/fd`, so a symlink swapped in by another
//! container sharing a volume cannot redirect it.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fs::OpenOptions;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{open, openat, openat2, readlink, OFlag, OpenHow, ResolveFlag};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::{lstat, mkdirat, stat, Mode, SFlag};
use nix::sys::statvfs::{statvfs, FsFlags};
use nix::unistd::{chdir, pivot_root, sethostname, symlinkat};
use oci_spec::runtime::{Mount, Spec};

use super::ContainerError;

/// Device nodes every container with a tmpfs `/dev` gets, bound from the
/// sandbox's own `/dev` (a user namespace cannot mknod).
const DEFAULT_DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

/// Symlinks every container with a tmpfs `/dev` gets: (name, target).
const DEFAULT_DEV_SYMLINKS: [(&str, &str); 5] = [
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
    ("ptmx", "pts/ptmx"),
];

/// Where the sandbox keeps a mqueue mount to bind when a new one is refused.
const SANDBOX_MQUEUE: &str = "/dev/mqueue";

/// How many symlinks a mount destination may traverse (as the kernel's
/// MAXSYMLINKS for a whole lookup).
const MAX_SYMLINKS: u32 = 40;

/// Per-mount flags the kernel locks when a mount crosses into a less
/// privileged user namespace.
const LOCKABLE_FLAGS: MsFlags = MsFlags::MS_RDONLY
    .union(MsFlags::MS_NOSUID)
    .union(MsFlags::MS_NODEV)
    .union(MsFlags::MS_NOEXEC);

/// The access-time flags, locked as a group.
const ATIME_FLAGS: MsFlags = MsFlags::MS_NOATIME
    .union(MsFlags::MS_NODIRATIME)
    .union(MsFlags::MS_RELATIME)
    .union(MsFlags::MS_STRICTATIME);

/// Builds the container's root filesystem from `spec` and makes it the root.
///
/// Must run in the container init helper, in its own mount namespace, with
/// the sandbox's minimal root as `/` (see the module docs of
/// [`crate::container`]). Order: `/` becomes a recursive slave, the rootfs
/// is bound onto itself, spec mounts are made in order, `/dev` is populated,
/// `pivot_root`, rootfs propagation, hostname, sysctls (before the masked and
/// read-only paths, which usually make `/proc/sys` read-only), masked paths,
/// read-only paths, and finally a read-only `/` if `root.readonly`.
///
/// With `view` (a directory of [`crate::limits`] files), its files are
/// bound read-only over their /proc and /sys paths once the spec's mounts
/// are made; a path the container lacks is skipped.
pub fn setup_rootfs(spec: &Spec, view: Option<&Path>) -> Result<(), ContainerError> {
    let root = spec
        .root()
        .as_ref()
        .ok_or_else(|| ContainerError::InvalidSpec("root is missing".into()))?
        .path();
    if !root.is_absolute() {
        return Err(ContainerError::InvalidSpec(format!(
            "root.path {} is not absolute",
            root.display()
        )));
    }
    let linux = spec.linux().as_ref();
    let mounts = spec.mounts().as_deref().unwrap_or_default();

    // Slave, not private: /shared must keep receiving what the host
    // propagates later, while nothing mounted here leaks back.
    do_mount(
        None,
        Path::new("/"),
        None,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None,
    )
    .map_err(|source| mount_error("slave propagation", Path::new("/"), source))?;
    do_mount(
        Some(root),
        root,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None,
    )
    .map_err(|source| mount_error(&format!("the rootfs {}", root.display()), root, source))?;

    let rootfs = Rootfs::open(root)?;
    for entry in mounts {
        mount_entry(&rootfs, entry)?;
    }
    let dev_is_tmpfs = mounts.iter().any(|m| {
        m.typ().as_deref() == Some("tmpfs")
            && clean_destination(m.destination()).is_ok_and(|rel| rel == Path::new("dev"))
    });
    if dev_is_tmpfs {
        populate_dev(&rootfs)?;
    }
    if let Some(devices) = linux.and_then(|l| l.devices().as_deref()) {
        for device in devices {
            bind_spec_device(&rootfs, device.path(), dev_is_tmpfs)?;
        }
    }
    if let Some(view) = view {
        for (name, dest) in crate::limits::FILES {
            rootfs.bind_over_existing(&view.join(name), Path::new(dest))?;
        }
    }
    drop(rootfs);

    enter_rootfs(root)?;
    if let Some(propagation) = linux.and_then(|l| l.rootfs_propagation().as_deref()) {
        set_root_propagation(propagation)?;
    }
    if let Some(hostname) = spec.hostname() {
        sethostname(hostname).map_err(|source| ContainerError::Hostname {
            hostname: hostname.clone(),
            source,
        })?;
    }
    if let Some(sysctls) = linux.and_then(|l| l.sysctl().as_ref()) {
        // Sorted, so that failures are reproducible.
        let sorted: BTreeMap<&String, &String> = sysctls.iter().collect();
        for (key, value) in sorted {
            write_sysctl(key, value)?;
        }
    }
    for path in linux
        .and_then(|l| l.masked_paths().as_deref())
        .unwrap_or_default()
    {
        mask_path(Path::new(path))?;
    }
    for path in linux
        .and_then(|l| l.readonly_paths().as_deref())
        .unwrap_or_default()
    {
        make_path_readonly(Path::new(path))?;
    }
    if spec.root().as_ref().and_then(|r| r.readonly()) == Some(true) {
        remount(
            Path::new("/"),
            MsFlags::MS_RDONLY,
            MsFlags::empty(),
            "the read-only rootfs",
            Path::new("/"),
        )?;
    }
    Ok(())
}

/// OCI mount options split into what mount(2) takes.
#[derive(Debug, PartialEq, Eq)]
struct MountOptions {
    /// Flags to set.
    flags: MsFlags,
    /// Flags an option explicitly clears (`rw`, `suid`, ...): an error if the
    /// source mount has them locked.
    cleared: MsFlags,
    /// Propagation to apply once mounted (`MS_SHARED`, ... maybe `MS_REC`).
    propagation: MsFlags,
    /// Filesystem-specific options, in order.
    data: Vec<String>,
}

/// What one OCI mount option does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MountOption {
    Set(MsFlags),
    Clear(MsFlags),
    Propagation(MsFlags),
    Ignore,
}

/// The runc table of mount options; `None` for filesystem data.
fn mount_option(name: &str) -> Option<MountOption> {
    use MountOption::{Clear, Ignore, Propagation, Set};
    let option = match name {
        "defaults" => Ignore,
        "ro" => Set(MsFlags::MS_RDONLY),
        "rw" => Clear(MsFlags::MS_RDONLY),
        "suid" => Clear(MsFlags::MS_NOSUID),
        "nosuid" => Set(MsFlags::MS_NOSUID),
        "dev" => Clear(MsFlags::MS_NODEV),
        "nodev" => Set(MsFlags::MS_NODEV),
        "exec" => Clear(MsFlags::MS_NOEXEC),
        "noexec" => Set(MsFlags::MS_NOEXEC),
        "sync" => Set(MsFlags::MS_SYNCHRONOUS),
        "async" => Clear(MsFlags::MS_SYNCHRONOUS),
        "dirsync" => Set(MsFlags::MS_DIRSYNC),
        "remount" => Set(MsFlags::MS_REMOUNT),
        "mand" => Set(MsFlags::MS_MANDLOCK),
        "nomand" => Clear(MsFlags::MS_MANDLOCK),
        "atime" => Clear(MsFlags::MS_NOATIME),
        "noatime" => Set(MsFlags::MS_NOATIME),
        "diratime" => Clear(MsFlags::MS_NODIRATIME),
        "nodiratime" => Set(MsFlags::MS_NODIRATIME),
        "bind" => Set(MsFlags::MS_BIND),
        "rbind" => Set(MsFlags::MS_BIND | MsFlags::MS_REC),
        "relatime" => Set(MsFlags::MS_RELATIME),
        "norelatime" => Clear(MsFlags::MS_RELATIME),
        "strictatime" => Set(MsFlags::MS_STRICTATIME),
        "nostrictatime" => Clear(MsFlags::MS_STRICTATIME),
        "private" => Propagation(MsFlags::MS_PRIVATE),
        "rprivate" => Propagation(MsFlags::MS_PRIVATE | MsFlags::MS_REC),
        "shared" => Propagation(MsFlags::MS_SHARED),
        "rshared" => Propagation(MsFlags::MS_SHARED | MsFlags::MS_REC),
        "slave" => Propagation(MsFlags::MS_SLAVE),
        "rslave" => Propagation(MsFlags::MS_SLAVE | MsFlags::MS_REC),
        "unbindable" => Propagation(MsFlags::MS_UNBINDABLE),
        "runbindable" => Propagation(MsFlags::MS_UNBINDABLE | MsFlags::MS_REC),
        _ => return None,
    };
    Some(option)
}

/// Splits OCI mount options into flags, cleared flags, propagation and data.
/// A later option overrides an earlier one.
fn parse_options(options: &[String]) -> MountOptions {
    let mut parsed = MountOptions {
        flags: MsFlags::empty(),
        cleared: MsFlags::empty(),
        propagation: MsFlags::empty(),
        data: Vec::new(),
    };
    for option in options {
        match mount_option(option) {
            Some(MountOption::Set(flags)) => {
                parsed.flags |= flags;
                parsed.cleared &= !flags;
            }
            Some(MountOption::Clear(flags)) => {
                parsed.flags &= !flags;
                parsed.cleared |= flags;
            }
            Some(MountOption::Propagation(flags)) => parsed.propagation = flags,
            Some(MountOption::Ignore) => {}
            None => parsed.data.push(option.clone()),
        }
    }
    parsed
}

/// The option that clears `flag`, for messages.
fn clearing_option_name(flag: MsFlags) -> &'static str {
    if flag.contains(MsFlags::MS_RDONLY) {
        "rw"
    } else if flag.contains(MsFlags::MS_NOSUID) {
        "suid"
    } else if flag.contains(MsFlags::MS_NODEV) {
        "dev"
    } else {
        "exec"
    }
}

/// A mount(2) on paths, with absent arguments as NULL.
fn do_mount(
    source: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> nix::Result<()> {
    mount(source, target, fstype, flags, data)
}

fn mount_error(what: &str, target: &Path, source: Errno) -> ContainerError {
    ContainerError::Mount {
        what: what.to_owned(),
        target: target.to_path_buf(),
        source,
    }
}

/// The path through which the kernel reaches what `fd` refers to.
fn fd_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// The mount flags `path`'s mount currently has.
fn current_mount_flags(path: &Path) -> nix::Result<MsFlags> {
    let flags = statvfs(path)?.flags();
    let table = [
        (FsFlags::ST_RDONLY, MsFlags::MS_RDONLY),
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ];
    let mut current = MsFlags::empty();
    for (st, ms) in table {
        if flags.contains(st) {
            current |= ms;
        }
    }
    if !current.intersects(MsFlags::MS_NOATIME | MsFlags::MS_RELATIME) {
        current |= MsFlags::MS_STRICTATIME;
    }
    Ok(current)
}

/// Changes the per-mount flags of the bind mount at `target` to `flags`.
///
/// In a user namespace the kernel refuses (EPERM) to clear flags locked on
/// the source mount, so on EPERM this retries with the locked flags (and,
/// unless `flags` picks an access-time mode, the current one) added, unless
/// an option explicitly cleared a locked flag. `dest` names the target in
/// errors.
fn remount(
    target: &Path,
    flags: MsFlags,
    cleared: MsFlags,
    what: &str,
    dest: &Path,
) -> Result<(), ContainerError> {
    let base = MsFlags::MS_REMOUNT | MsFlags::MS_BIND;
    let first = match do_mount(None, target, None, base | flags, None) {
        Ok(()) => return Ok(()),
        Err(e) => e,
    };
    if first != Errno::EPERM {
        return Err(mount_error(what, dest, first));
    }
    let current = current_mount_flags(target).map_err(|source| ContainerError::Stat {
        path: dest.to_path_buf(),
        source,
    })?;
    let locked = current & LOCKABLE_FLAGS;
    let conflict = locked & cleared;
    if !conflict.is_empty() {
        return Err(ContainerError::LockedFlag {
            what: what.to_owned(),
            target: dest.to_path_buf(),
            option: clearing_option_name(conflict),
        });
    }
    let mut retry = flags | locked;
    if !flags.intersects(ATIME_FLAGS) {
        retry |= current & ATIME_FLAGS;
    }
    if retry == flags {
        return Err(mount_error(what, dest, first));
    }
    log::debug!(
        "remounting {what} on {}: retrying with the locked flags {:?}",
        dest.display(),
        retry
    );
    do_mount(None, target, None, base | retry, None)
        .map_err(|source| mount_error(what, dest, source))
}

/// Turns a container path into a clean path relative to the container root,
/// refusing `..` that would climb above it.
fn clean_destination(dest: &Path) -> Result<PathBuf, ContainerError> {
    let mut clean = PathBuf::new();
    for component in dest.components() {
        match component {
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            Component::ParentDir => {
                if !clean.pop() {
                    return Err(ContainerError::DestinationEscapes {
                        destination: dest.to_path_buf(),
                    });
                }
            }
            Component::Normal(name) => clean.push(name),
        }
    }
    Ok(clean)
}

/// Resolves the clean relative path `rel` inside `root` as if `root` were
/// `/`: symlinks are followed (absolute ones from `root`, `..` stops at
/// `root`), and from the first missing component on, the rest is appended as
/// is. The result is relative to `root` and its existing part has no
/// symlinks.
fn resolve_in_root(root: &Path, rel: &Path) -> Result<PathBuf, ContainerError> {
    let resolve_error = |source| ContainerError::Resolve {
        root: root.to_path_buf(),
        path: rel.to_path_buf(),
        source,
    };
    // A stack: the next component is on top.
    let mut pending: Vec<OsString> = Vec::new();
    push_components(&mut pending, rel);
    let mut resolved = PathBuf::new();
    let mut missing = false;
    let mut links = 0;
    while let Some(name) = pending.pop() {
        if name == ".." {
            resolved.pop();
            continue;
        }
        if missing {
            resolved.push(&name);
            continue;
        }
        let full = root.join(&resolved).join(&name);
        match lstat(&full) {
            Err(Errno::ENOENT) => {
                missing = true;
                resolved.push(&name);
            }
            Err(e) => return Err(resolve_error(e)),
            Ok(st) if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFLNK => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(resolve_error(Errno::ELOOP));
                }
                let target = readlink(&full).map_err(resolve_error)?;
                let target = Path::new(&target);
                if target.is_absolute() {
                    resolved = PathBuf::new();
                }
                push_components(&mut pending, target);
            }
            Ok(_) => resolved.push(&name),
        }
    }
    Ok(resolved)
}

/// Pushes the components of `path` on the `pending` stack, first on top;
/// `..` is kept, `.` and `/` are dropped.
fn push_components(pending: &mut Vec<OsString>, path: &Path) {
    for component in path.components().rev() {
        match component {
            Component::ParentDir => pending.push(OsString::from("..")),
            Component::Normal(name) => pending.push(name.to_os_string()),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
}

/// What a mount target must be when it has to be created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TargetKind {
    Directory,
    File,
}

/// The container rootfs while it is being built, before `pivot_root`.
struct Rootfs<'a> {
    path: &'a Path,
    fd: OwnedFd,
}

impl<'a> Rootfs<'a> {
    fn open(path: &'a Path) -> Result<Self, ContainerError> {
        let fd = open(
            path,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|source| ContainerError::Resolve {
            root: path.to_path_buf(),
            path: PathBuf::from("/"),
            source,
        })?;
        Ok(Self { path, fd })
    }

    /// Resolves the container path `dest` inside the rootfs, creating what is
    /// missing (directories, and the last component as `kind`), and returns
    /// an `O_PATH` descriptor on it.
    fn prepare_target(&self, dest: &Path, kind: TargetKind) -> Result<OwnedFd, ContainerError> {
        let clean = clean_destination(dest)?;
        if clean.as_os_str().is_empty() {
            return Err(ContainerError::InvalidSpec(format!(
                "cannot mount over the container root ({})",
                dest.display()
            )));
        }
        let rel = resolve_in_root(self.path, &clean)?;
        let resolve_error = |source| ContainerError::Resolve {
            root: self.path.to_path_buf(),
            path: dest.to_path_buf(),
            source,
        };
        let create_error = |source| ContainerError::CreateTarget {
            path: dest.to_path_buf(),
            source,
        };
        let names: Vec<&OsStr> = rel
            .components()
            .filter_map(|c| match c {
                Component::Normal(name) => Some(name),
                _ => None,
            })
            .collect();
        // Each step opens one name, never following a symlink: `rel` has none
        // left, so one appearing now is a race and fails with ELOOP.
        let how = OpenHow::new()
            .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS);
        let mut current = openat(
            &self.fd,
            ".",
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(resolve_error)?;
        for (index, name) in names.iter().enumerate() {
            let last = index + 1 == names.len();
            let next = match openat2(&current, *name, how) {
                Ok(fd) => fd,
                Err(Errno::ENOENT) => {
                    if last && kind == TargetKind::File {
                        match openat(
                            &current,
                            *name,
                            OFlag::O_CREAT
                                | OFlag::O_EXCL
                                | OFlag::O_WRONLY
                                | OFlag::O_NOFOLLOW
                                | OFlag::O_CLOEXEC,
                            Mode::from_bits_truncate(0o644),
                        ) {
                            Ok(_) | Err(Errno::EEXIST) => {}
                            Err(e) => return Err(create_error(e)),
                        }
                    } else {
                        match mkdirat(&current, *name, Mode::from_bits_truncate(0o755)) {
                            Ok(()) | Err(Errno::EEXIST) => {}
                            Err(e) => return Err(create_error(e)),
                        }
                    }
                    openat2(&current, *name, how).map_err(resolve_error)?
                }
                Err(e) => return Err(resolve_error(e)),
            };
            current = next;
        }
        Ok(current)
    }

    /// Opens the existing container path `dest` again: after a mount, this
    /// reaches the new mount rather than the directory underneath.
    fn reopen_target(&self, dest: &Path) -> Result<OwnedFd, ContainerError> {
        let clean = clean_destination(dest)?;
        let how = OpenHow::new()
            .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        openat2(&self.fd, &clean, how).map_err(|source| ContainerError::Resolve {
            root: self.path.to_path_buf(),
            path: dest.to_path_buf(),
            source,
        })
    }

    /// Binds the sandbox file `source` read-only over the existing
    /// container file `dest`; does nothing when `dest` does not exist.
    fn bind_over_existing(&self, source: &Path, dest: &Path) -> Result<(), ContainerError> {
        let target = match self.reopen_target(dest) {
            Ok(fd) => fd,
            Err(ContainerError::Resolve {
                source: Errno::ENOENT,
                ..
            }) => return Ok(()),
            Err(e) => return Err(e),
        };
        let what = format!("bind of {}", source.display());
        do_mount(
            Some(source),
            &fd_path(&target),
            None,
            MsFlags::MS_BIND,
            None,
        )
        .map_err(|e| mount_error(&what, dest, e))?;
        let target = self.reopen_target(dest)?;
        remount(
            &fd_path(&target),
            MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            MsFlags::empty(),
            &what,
            dest,
        )
    }

    /// Binds the sandbox path `source` onto the container path `dest`.
    fn bind(&self, source: &Path, dest: &Path, kind: TargetKind) -> Result<(), ContainerError> {
        let target = self.prepare_target(dest, kind)?;
        do_mount(
            Some(source),
            &fd_path(&target),
            None,
            MsFlags::MS_BIND,
            None,
        )
        .map_err(|e| mount_error(&format!("bind of {}", source.display()), dest, e))
    }
}

/// Makes one spec mount inside the rootfs.
fn mount_entry(rootfs: &Rootfs<'_>, entry: &Mount) -> Result<(), ContainerError> {
    let dest = entry.destination();
    let typ = entry.typ().as_deref().unwrap_or_default();
    let options = parse_options(entry.options().as_deref().unwrap_or_default());
    let is_bind = options.flags.contains(MsFlags::MS_BIND) || typ == "bind" || typ == "rbind";
    if is_bind {
        return mount_bind(rootfs, entry, &options);
    }
    let what = if typ.is_empty() { "mount" } else { typ };
    let data = options.data.join(",");
    let data = (!data.is_empty()).then_some(data.as_str());
    // A new filesystem is never a remount.
    let target_flags = options.flags & !MsFlags::MS_REMOUNT;
    match typ {
        "cgroup" | "cgroup2" => {
            log::warn!(
                "skipping the {typ} mount on {}: cgroup mounts are not supported yet",
                dest.display()
            );
            return Ok(());
        }
        "proc" => {
            let target = rootfs.prepare_target(dest, TargetKind::Directory)?;
            let flags = target_flags | MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV;
            do_mount(
                Some(Path::new("proc")),
                &fd_path(&target),
                Some("proc"),
                flags,
                data,
            )
            .map_err(|e| mount_error(what, dest, e))?;
        }
        "sysfs" => {
            let target = rootfs.prepare_target(dest, TargetKind::Directory)?;
            match do_mount(
                Some(Path::new("sysfs")),
                &fd_path(&target),
                Some("sysfs"),
                target_flags,
                data,
            ) {
                Ok(()) => {}
                Err(Errno::EPERM) => {
                    log::debug!(
                        "a new sysfs on {} was refused, binding the sandbox's /sys read-only",
                        dest.display()
                    );
                    let sys = Path::new("/sys");
                    do_mount(
                        Some(sys),
                        &fd_path(&target),
                        None,
                        MsFlags::MS_BIND | MsFlags::MS_REC,
                        None,
                    )
                    .map_err(|e| mount_error("bind of /sys", dest, e))?;
                    let mounted = rootfs.reopen_target(dest)?;
                    remount(
                        &fd_path(&mounted),
                        target_flags | MsFlags::MS_RDONLY,
                        options.cleared & !MsFlags::MS_RDONLY,
                        "bind of /sys",
                        dest,
                    )?;
                }
                Err(e) => return Err(mount_error(what, dest, e)),
            }
        }
        "devpts" => {
            let target = rootfs.prepare_target(dest, TargetKind::Directory)?;
            let source = Some(Path::new("devpts"));
            match do_mount(
                source,
                &fd_path(&target),
                Some("devpts"),
                target_flags,
                data,
            ) {
                Ok(()) => {}
                Err(Errno::EINVAL) if options.data.iter().any(|o| o.starts_with("gid=")) => {
                    // The tty group may be unmapped in this user namespace.
                    log::warn!(
                        "devpts on {} refused its gid option, mounting it without",
                        dest.display()
                    );
                    let data: Vec<&str> = options
                        .data
                        .iter()
                        .map(String::as_str)
                        .filter(|o| !o.starts_with("gid="))
                        .collect();
                    let data = data.join(",");
                    let data = (!data.is_empty()).then_some(data.as_str());
                    do_mount(
                        source,
                        &fd_path(&target),
                        Some("devpts"),
                        target_flags,
                        data,
                    )
                    .map_err(|e| mount_error(what, dest, e))?;
                }
                Err(e) => return Err(mount_error(what, dest, e)),
            }
        }
        "mqueue" => {
            let target = rootfs.prepare_target(dest, TargetKind::Directory)?;
            match do_mount(
                Some(Path::new("mqueue")),
                &fd_path(&target),
                Some("mqueue"),
                target_flags,
                data,
            ) {
                Ok(()) => {}
                Err(Errno::EPERM) => {
                    let sandbox_mqueue = Path::new(SANDBOX_MQUEUE);
                    if !sandbox_mqueue.is_dir() {
                        log::warn!(
                            "skipping the mqueue mount on {}: a new mqueue was refused and \
                             the sandbox has no {SANDBOX_MQUEUE} to bind",
                            dest.display()
                        );
                        return Ok(());
                    }
                    do_mount(
                        Some(sandbox_mqueue),
                        &fd_path(&target),
                        None,
                        MsFlags::MS_BIND,
                        None,
                    )
                    .map_err(|e| mount_error("bind of /dev/mqueue", dest, e))?;
                    if !(target_flags & !ATIME_FLAGS).is_empty() {
                        let mounted = rootfs.reopen_target(dest)?;
                        remount(
                            &fd_path(&mounted),
                            target_flags,
                            options.cleared,
                            "bind of /dev/mqueue",
                            dest,
                        )?;
                    }
                }
                Err(e) => return Err(mount_error(what, dest, e)),
            }
        }
        _ => {
            // tmpfs and anything else the kernel may know.
            let target = rootfs.prepare_target(dest, TargetKind::Directory)?;
            let source = entry.source().as_deref().unwrap_or_else(|| Path::new(typ));
            let fstype = (!typ.is_empty()).then_some(typ);
            do_mount(Some(source), &fd_path(&target), fstype, target_flags, data)
                .map_err(|e| mount_error(&format!("{what} from {}", source.display()), dest, e))?;
        }
    }
    apply_propagation(rootfs, dest, what, options.propagation)
}

/// Makes a bind (or rbind) spec mount, then applies its flags and
/// propagation.
fn mount_bind(
    rootfs: &Rootfs<'_>,
    entry: &Mount,
    options: &MountOptions,
) -> Result<(), ContainerError> {
    let dest = entry.destination();
    let source = entry.source().as_deref().ok_or_else(|| {
        ContainerError::InvalidSpec(format!("bind mount on {} has no source", dest.display()))
    })?;
    let what = format!("bind of {}", source.display());
    let source_stat = stat(source).map_err(|e| ContainerError::Stat {
        path: source.to_path_buf(),
        source: e,
    })?;
    let kind = if SFlag::from_bits_truncate(source_stat.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR {
        TargetKind::Directory
    } else {
        TargetKind::File
    };
    let recursive =
        options.flags.contains(MsFlags::MS_REC) || entry.typ().as_deref() == Some("rbind");
    let mut bind_flags = MsFlags::MS_BIND;
    if recursive {
        bind_flags |= MsFlags::MS_REC;
    }
    let target = rootfs.prepare_target(dest, kind)?;
    do_mount(Some(source), &fd_path(&target), None, bind_flags, None)
        .map_err(|e| mount_error(&what, dest, e))?;
    // The first bind ignores every other flag: they need a remount.
    let extra = options.flags & !(MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_REMOUNT);
    if !extra.is_empty() {
        let mounted = rootfs.reopen_target(dest)?;
        remount(&fd_path(&mounted), extra, options.cleared, &what, dest)?;
    }
    apply_propagation(rootfs, dest, &what, options.propagation)
}

/// Sets the propagation of the mount at container path `dest`, if any.
fn apply_propagation(
    rootfs: &Rootfs<'_>,
    dest: &Path,
    what: &str,
    propagation: MsFlags,
) -> Result<(), ContainerError> {
    if propagation.is_empty() {
        return Ok(());
    }
    let mounted = rootfs.reopen_target(dest)?;
    do_mount(None, &fd_path(&mounted), None, propagation, None)
        .map_err(|e| mount_error(&format!("propagation {propagation:?} of {what}"), dest, e))
}

/// Fills a tmpfs `/dev` with the standard device nodes (bound from the
/// sandbox's `/dev`) and symlinks.
fn populate_dev(rootfs: &Rootfs<'_>) -> Result<(), ContainerError> {
    for name in DEFAULT_DEVICES {
        let source = Path::new("/dev").join(name);
        if lstat(&source).is_err() {
            log::warn!(
                "the sandbox has no {}: the container gets none",
                source.display()
            );
            continue;
        }
        rootfs.bind(&source, &source, TargetKind::File)?;
    }
    let dev = rootfs.prepare_target(Path::new("/dev"), TargetKind::Directory)?;
    for (name, target) in DEFAULT_DEV_SYMLINKS {
        match symlinkat(target, &dev, name) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(source) => {
                return Err(ContainerError::CreateTarget {
                    path: Path::new("/dev").join(name),
                    source,
                })
            }
        }
    }
    Ok(())
}

/// Gives the container the spec device `path`, bound from the same node in
/// the sandbox: a user namespace cannot mknod.
fn bind_spec_device(
    rootfs: &Rootfs<'_>,
    path: &Path,
    dev_is_tmpfs: bool,
) -> Result<(), ContainerError> {
    let rel = clean_destination(path)?;
    let source = Path::new("/").join(&rel);
    let is_default = DEFAULT_DEVICES
        .iter()
        .any(|name| source == Path::new("/dev").join(name));
    if dev_is_tmpfs && is_default {
        return Ok(());
    }
    let is_device = rel.starts_with("dev")
        && lstat(&source).is_ok_and(|st| {
            let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
            kind == SFlag::S_IFCHR || kind == SFlag::S_IFBLK
        });
    if !is_device {
        log::warn!(
            "skipping device {}: the sandbox has no such device node to bind, \
             and a user namespace cannot create one",
            path.display()
        );
        return Ok(());
    }
    rootfs.bind(&source, &source, TargetKind::File)
}

/// Makes the prepared rootfs `/` and lets go of the sandbox root.
fn enter_rootfs(root: &Path) -> Result<(), ContainerError> {
    let pivot_error = |source| ContainerError::PivotRoot {
        rootfs: root.to_path_buf(),
        source,
    };
    chdir(root).map_err(pivot_error)?;
    pivot_root(".", ".").map_err(pivot_error)?;
    // The old root is now stacked on "."; a slave, its detach cannot
    // propagate anywhere.
    do_mount(
        None,
        Path::new("."),
        None,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None,
    )
    .map_err(pivot_error)?;
    umount2(".", MntFlags::MNT_DETACH).map_err(pivot_error)?;
    chdir("/").map_err(pivot_error)
}

/// Applies `linux.rootfsPropagation` to the new `/`.
fn set_root_propagation(propagation: &str) -> Result<(), ContainerError> {
    let flags = match mount_option(propagation) {
        Some(MountOption::Propagation(flags)) => flags,
        _ => {
            return Err(ContainerError::InvalidSpec(format!(
                "unknown rootfsPropagation {propagation}"
            )))
        }
    };
    do_mount(None, Path::new("/"), None, flags, None).map_err(|e| {
        mount_error(
            &format!("rootfs propagation {propagation}"),
            Path::new("/"),
            e,
        )
    })
}

/// Whether the sysctl `key` belongs to a namespace the container owns.
fn sysctl_is_namespaced(key: &str) -> bool {
    key.starts_with("kernel.shm")
        || key.starts_with("kernel.msg")
        || key == "kernel.sem"
        || key.starts_with("fs.mqueue.")
        || key.starts_with("net.")
}

/// The `/proc/sys` file of the namespaced sysctl `key`.
fn sysctl_path(key: &str) -> Result<PathBuf, ContainerError> {
    if !sysctl_is_namespaced(key) {
        return Err(ContainerError::SysctlNotNamespaced {
            key: key.to_owned(),
        });
    }
    let mut path = PathBuf::from("/proc/sys");
    for part in key.split('.') {
        if part.is_empty() || part.contains('/') {
            return Err(ContainerError::InvalidSpec(format!(
                "malformed sysctl name {key}"
            )));
        }
        path.push(part);
    }
    Ok(path)
}

fn write_sysctl(key: &str, value: &str) -> Result<(), ContainerError> {
    let path = sysctl_path(key)?;
    OpenOptions::new()
        .write(true)
        .open(&path)
        .and_then(|mut file| file.write_all(value.as_bytes()))
        .map_err(|source| ContainerError::Sysctl {
            key: key.to_owned(),
            value: value.to_owned(),
            source,
        })
}

/// Hides `path`: `/dev/null` over a file, an empty read-only tmpfs over a
/// directory. A missing path needs no hiding.
fn mask_path(path: &Path) -> Result<(), ContainerError> {
    let st = match stat(path) {
        Ok(st) => st,
        Err(Errno::ENOENT | Errno::ENOTDIR) => return Ok(()),
        Err(source) => {
            return Err(ContainerError::Stat {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR {
        do_mount(
            Some(Path::new("tmpfs")),
            path,
            Some("tmpfs"),
            MsFlags::MS_RDONLY,
            None,
        )
        .map_err(|e| mount_error("an empty tmpfs (masked path)", path, e))
    } else {
        do_mount(
            Some(Path::new("/dev/null")),
            path,
            None,
            MsFlags::MS_BIND,
            None,
        )
        .map_err(|e| mount_error("/dev/null (masked path)", path, e))
    }
}

/// Makes `path` read-only with a bind onto itself. A missing path is
/// skipped.
fn make_path_readonly(path: &Path) -> Result<(), ContainerError> {
    match do_mount(
        Some(path),
        path,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None,
    ) {
        Ok(()) => {}
        Err(Errno::ENOENT | Errno::ENOTDIR) => return Ok(()),
        Err(e) => return Err(mount_error("a read-only bind", path, e)),
    }
    remount(
        path,
        MsFlags::MS_RDONLY,
        MsFlags::empty(),
        "a read-only bind",
        path,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::fs;
    use std::os::unix::fs::symlink;

    /// A directory removed when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> Self {
            let path =
                std::env::temp_dir().join(format!("runsc-rs-rootfs-{name}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&path);
            fs::create_dir_all(&path).expect("creating a temp dir");
            Self(path)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn strings(options: &[&str]) -> Vec<String> {
        options.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn options_split_into_flags_propagation_and_data() {
        let parsed = parse_options(&strings(&[
            "nosuid",
            "strictatime",
            "mode=755",
            "size=65536k",
            "rslave",
        ]));
        assert_eq!(parsed.flags, MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME);
        assert_eq!(parsed.propagation, MsFlags::MS_SLAVE | MsFlags::MS_REC);
        assert_eq!(parsed.data, strings(&["mode=755", "size=65536k"]));
        assert!(parsed.cleared.is_empty());
    }

    #[test]
    fn later_options_override_earlier_ones() {
        let parsed = parse_options(&strings(&["ro", "rw", "nodev", "dev", "noexec"]));
        assert_eq!(parsed.flags, MsFlags::MS_NOEXEC);
        assert_eq!(parsed.cleared, MsFlags::MS_RDONLY | MsFlags::MS_NODEV);
        let parsed = parse_options(&strings(&["rw", "ro"]));
        assert_eq!(parsed.flags, MsFlags::MS_RDONLY);
        assert!(parsed.cleared.is_empty());
    }

    #[test]
    fn option_table_matches_runc() {
        let cases: [(&str, MountOption); 12] = [
            (
                "rbind",
                MountOption::Set(MsFlags::MS_BIND | MsFlags::MS_REC),
            ),
            ("bind", MountOption::Set(MsFlags::MS_BIND)),
            ("suid", MountOption::Clear(MsFlags::MS_NOSUID)),
            ("async", MountOption::Clear(MsFlags::MS_SYNCHRONOUS)),
            ("dirsync", MountOption::Set(MsFlags::MS_DIRSYNC)),
            ("mand", MountOption::Set(MsFlags::MS_MANDLOCK)),
            ("atime", MountOption::Clear(MsFlags::MS_NOATIME)),
            ("nodiratime", MountOption::Set(MsFlags::MS_NODIRATIME)),
            ("norelatime", MountOption::Clear(MsFlags::MS_RELATIME)),
            ("private", MountOption::Propagation(MsFlags::MS_PRIVATE)),
            (
                "runbindable",
                MountOption::Propagation(MsFlags::MS_UNBINDABLE | MsFlags::MS_REC),
            ),
            ("defaults", MountOption::Ignore),
        ];
        for (name, expected) in cases {
            assert_eq!(mount_option(name), Some(expected), "option {name}");
        }
        assert_eq!(mount_option("newinstance"), None);
        assert_eq!(mount_option("gid=5"), None);
    }

    #[test]
    fn destinations_are_cleaned_and_escapes_refused() {
        assert_eq!(
            clean_destination(Path::new("/dev/./pts/")).ok(),
            Some(PathBuf::from("dev/pts"))
        );
        assert_eq!(
            clean_destination(Path::new("/a/b/../c")).ok(),
            Some(PathBuf::from("a/c"))
        );
        assert_eq!(clean_destination(Path::new("/")).ok(), Some(PathBuf::new()));
        assert!(matches!(
            clean_destination(Path::new("/../etc")),
            Err(ContainerError::DestinationEscapes { .. })
        ));
        assert!(matches!(
            clean_destination(Path::new("/a/../../etc")),
            Err(ContainerError::DestinationEscapes { .. })
        ));
    }

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let dir = TempDir::new("resolve");
        let root = dir.0.join("root");
        fs::create_dir_all(root.join("real/sub")).expect("mkdir");
        // Absolute, relative and escaping links all stay inside `root`.
        symlink("/real", root.join("abs")).expect("symlink");
        symlink("real/sub", root.join("rel")).expect("symlink");
        symlink("../../../../..", root.join("up")).expect("symlink");
        symlink("/etc/passwd", root.join("passwd")).expect("symlink");
        symlink("loop", root.join("loop")).expect("symlink");

        let resolve = |p: &str| resolve_in_root(&root, Path::new(p));
        assert_eq!(resolve("abs/sub").ok(), Some(PathBuf::from("real/sub")));
        assert_eq!(resolve("rel/x/y").ok(), Some(PathBuf::from("real/sub/x/y")));
        assert_eq!(resolve("up/real").ok(), Some(PathBuf::from("real")));
        assert_eq!(resolve("up").ok(), Some(PathBuf::new()));
        assert_eq!(resolve("passwd").ok(), Some(PathBuf::from("etc/passwd")));
        assert_eq!(resolve("missing/a").ok(), Some(PathBuf::from("missing/a")));
        assert!(matches!(
            resolve("loop"),
            Err(ContainerError::Resolve {
                source: Errno::ELOOP,
                ..
            })
        ));
    }

    #[test]
    fn targets_are_created_inside_the_root() {
        let dir = TempDir::new("targets");
        let root = dir.0.join("root");
        fs::create_dir_all(root.join("real")).expect("mkdir");
        symlink("/real", root.join("link")).expect("symlink");
        symlink("/outside", root.join("dangling")).expect("symlink");
        let rootfs = Rootfs::open(&root).expect("opening the root");

        rootfs
            .prepare_target(Path::new("/link/a/b"), TargetKind::Directory)
            .expect("creating a directory target");
        assert!(root.join("real/a/b").is_dir());

        rootfs
            .prepare_target(Path::new("/link/etc/hosts"), TargetKind::File)
            .expect("creating a file target");
        assert!(root.join("real/etc/hosts").is_file());

        // A dangling absolute link is created inside the root, not at /outside.
        rootfs
            .prepare_target(Path::new("/dangling/x"), TargetKind::Directory)
            .expect("creating through a dangling link");
        assert!(root.join("outside/x").is_dir());

        assert!(matches!(
            rootfs.prepare_target(Path::new("/"), TargetKind::Directory),
            Err(ContainerError::InvalidSpec(_))
        ));
        assert!(matches!(
            rootfs.prepare_target(Path::new("/../x"), TargetKind::Directory),
            Err(ContainerError::DestinationEscapes { .. })
        ));
    }

    #[test]
    fn sysctls_must_be_namespaced() {
        assert_eq!(
            sysctl_path("net.ipv4.ip_forward").ok(),
            Some(PathBuf::from("/proc/sys/net/ipv4/ip_forward"))
        );
        assert_eq!(
            sysctl_path("kernel.shmmax").ok(),
            Some(PathBuf::from("/proc/sys/kernel/shmmax"))
        );
        assert!(sysctl_path("fs.mqueue.msg_max").is_ok());
        assert!(sysctl_path("kernel.sem").is_ok());
        assert!(sysctl_path("kernel.msgmax").is_ok());
        let err = sysctl_path("kernel.panic").err().map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("sysctl kernel.panic is not namespaced")
        );
        assert!(matches!(
            sysctl_path("net..x"),
            Err(ContainerError::InvalidSpec(_))
        ));
        assert!(matches!(
            sysctl_path("net.a/../../b"),
            Err(ContainerError::InvalidSpec(_))
        ));
    }

    /// Runs the checks of the container root built by `setup_rootfs`, from
    /// inside it.
    fn check_container_root(hosts: &str) -> Result<(), String> {
        use nix::sys::statfs::{statfs, TMPFS_MAGIC};
        use std::io::ErrorKind;

        let is_tmpfs = |p: &str| statfs(p).is_ok_and(|s| s.filesystem_type() == TMPFS_MAGIC);
        let read_only = |p: &str| {
            let written = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(p);
            matches!(written, Err(e) if e.raw_os_error() == Some(libc::EROFS))
        };
        let checks: [(&str, bool); 14] = [
            (
                "hostname",
                nix::unistd::gethostname().is_ok_and(|h| h == "testhost"),
            ),
            ("/dev is a tmpfs", is_tmpfs("/dev")),
            (
                "/dev/null is the device",
                stat("/dev/null").is_ok_and(|st| {
                    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFCHR
                }),
            ),
            (
                "/dev/fd links to /proc/self/fd",
                fs::read_link("/dev/fd").is_ok_and(|t| t == Path::new("/proc/self/fd")),
            ),
            ("/dev/pts is a devpts", Path::new("/dev/pts/ptmx").exists()),
            ("/data/tmp is a tmpfs", is_tmpfs("/data/tmp")),
            (
                "/etc/hosts is bound",
                fs::read_to_string("/etc/hosts").is_ok_and(|c| c == hosts),
            ),
            ("/etc/hosts is read-only", read_only("/etc/hosts")),
            (
                "/secret is masked",
                fs::read_to_string("/secret").is_ok_and(|c| c.is_empty()),
            ),
            (
                "/secretdir is masked",
                fs::read_dir("/secretdir").is_ok_and(|mut d| d.next().is_none()),
            ),
            ("/ro is read-only", read_only("/ro/x")),
            ("/ is read-only", read_only("/newfile")),
            (
                "sysctl kernel.shmmni",
                fs::read_to_string("/proc/sys/kernel/shmmni").is_ok_and(|v| v.trim() == "1234"),
            ),
            (
                "the sandbox root is gone",
                matches!(fs::metadata("/usr"), Err(e) if e.kind() == ErrorKind::NotFound),
            ),
        ];
        match checks.iter().find(|(_, ok)| !ok) {
            Some((name, _)) => Err(format!("check failed: {name}\n")),
            None => Ok(()),
        }
    }

    /// Root only: a forked child, in its own mount, UTS and IPC namespaces,
    /// builds a tiny container root and checks it from inside. The child
    /// exits 0 on success, 77 when namespaces are refused, 1 otherwise.
    #[test]
    fn setup_rootfs_builds_the_container_root() {
        use nix::sched::{unshare, CloneFlags};
        use nix::sys::wait::{waitpid, WaitStatus};
        use nix::unistd::{fork, ForkResult, Uid};

        if !Uid::effective().is_root() {
            eprintln!("skipping setup_rootfs_builds_the_container_root: needs root");
            return;
        }
        let dir = TempDir::new("setup");
        let root = dir.0.join("rootfs");
        for sub in ["etc", "ro", "secretdir/inner"] {
            fs::create_dir_all(root.join(sub)).expect("mkdir");
        }
        fs::write(root.join("secret"), "s3cret").expect("writing a file");
        let hosts = "127.0.0.1 testhost\n";
        let hosts_source = dir.0.join("hosts");
        fs::write(&hosts_source, hosts).expect("writing a file");
        let spec: Spec = serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2",
            "root": {"path": root, "readonly": true},
            "hostname": "testhost",
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
                 "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
                {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
                 "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666",
                             "mode=0620", "gid=5"]},
                {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup"},
                {"destination": "/data/tmp", "type": "tmpfs", "source": "tmpfs",
                 "options": ["nodev", "size=1m"]},
                {"destination": "/etc/hosts", "type": "bind", "source": hosts_source,
                 "options": ["rbind", "ro", "rprivate"]}
            ],
            "linux": {
                "maskedPaths": ["/secret", "/secretdir", "/missing"],
                "readonlyPaths": ["/ro", "/proc/sys", "/missing"],
                "sysctl": {"kernel.shmmni": "1234"}
            }
        }))
        .expect("parsing the test spec");

        // SAFETY: the child only builds and checks the container root, then
        // leaves with _exit; glibc keeps malloc usable in a forked child.
        match unsafe { fork() }.expect("fork") {
            ForkResult::Child => {
                let result = unshare(
                    CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWIPC,
                )
                .map_err(|e| (77, format!("unshare: {e}\n")))
                .and_then(|()| {
                    setup_rootfs(&spec, None).map_err(|e| {
                        let mut message = e.to_string();
                        let mut cause = std::error::Error::source(&e);
                        while let Some(c) = cause {
                            message.push_str(&format!(": {c}"));
                            cause = c.source();
                        }
                        (1, format!("setup_rootfs: {message}\n"))
                    })
                })
                .and_then(|()| check_container_root(hosts).map_err(|m| (1, m)));
                let code = match result {
                    Ok(()) => 0,
                    Err((code, message)) => {
                        let _ = nix::unistd::write(std::io::stderr(), message.as_bytes());
                        code
                    }
                };
                // SAFETY: _exit ends the forked child at once, without running
                // the test harness's atexit handlers or destructors.
                unsafe { libc::_exit(code) }
            }
            ForkResult::Parent { child } => match waitpid(child, None).expect("waitpid") {
                WaitStatus::Exited(_, 0) => {}
                WaitStatus::Exited(_, 77) => {
                    eprintln!("skipping setup_rootfs_builds_the_container_root: no namespaces");
                }
                status => panic!("the container root child failed: {status:?}"),
            },
        }
    }
}
