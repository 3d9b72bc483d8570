//! The sandbox process: `runsc-sandbox boot …`.
//!
//! The manager starts it already inside the sandbox's user, mount, IPC, UTS
//! and network namespaces, with a new PID namespace for its children. Boot
//! forks once: the child is PID 1 of the pod's PID namespace and does the
//! work; the parent (the pid the manager knows) only waits and relays the
//! child's exit. Killing the parent kills the child (parent-death signal),
//! and PID 1's death kills every container.
//!
//! PID 1 then builds a minimal root (tmpfs with /proc, a few device nodes,
//! /sys and /shared), pivots into it, closes every descriptor it was not
//! given, confines itself with seccomp, reports ready on the boot-sync pipe
//! and serves runtime-control until it is killed.

use std::collections::HashSet;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::CloneFlags;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult};

use crate::fdpass::FdStore;
use crate::server::{Server, BOOT_STDIO_TOKEN};

/// Errors of the sandbox's boot.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// The command line is wrong.
    #[error("bad arguments: {0}")]
    Args(String),
    /// A system call failed while booting.
    #[error("{what}")]
    Sys {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: nix::Error,
    },
    /// An I/O operation failed while booting.
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Serving runtime-control failed.
    #[error("serving runtime-control")]
    Serve(#[source] ttrpc::Error),
}

fn sys(what: impl Into<String>) -> impl FnOnce(nix::Error) -> BootError {
    let what = what.into();
    move |source| BootError::Sys { what, source }
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BootError {
    let what = what.into();
    move |source| BootError::Io { what, source }
}

/// The boot command line, as the manager writes it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BootArgs {
    /// Sandbox id.
    pub id: String,
    /// Listening socket serving runtime-control.
    pub control_fd: RawFd,
    /// Listening socket of the fd channel.
    pub fd_channel_fd: RawFd,
    /// The pod's spec (config.json of the first container).
    pub spec_fd: RawFd,
    /// Write end of the boot-sync pipe.
    pub sync_fd: RawFd,
    /// Log destination.
    pub log_fd: Option<RawFd>,
    /// stdin, stdout, stderr of the first container.
    pub stdio_fds: Vec<RawFd>,
    /// The stdio is a console (pty slave).
    pub console: bool,
    /// Platform device (e.g. /dev/kvm) for platforms that need one.
    pub device_fd: Option<RawFd>,
    /// /dev/fuse, opened in the sandbox's user namespace by the host's
    /// root, for the limits view (see [`crate::limits`]).
    pub fuse_fd: Option<RawFd>,
    /// The directory to build the minimal root in (host path, empty).
    pub root_dir: PathBuf,
    /// The host directory the manager stages container files in.
    pub shared_dir: PathBuf,
    /// CPUs the pod may use.
    pub cpu_num: Option<u32>,
    /// Memory the pod may use, in bytes.
    pub total_memory: Option<u64>,
    /// Platform name.
    pub platform: String,
    /// Verbose logging.
    pub debug: bool,
}

impl BootArgs {
    /// Renders the arguments after `boot`.
    pub fn to_args(&self) -> Vec<String> {
        let mut a = vec![
            format!("--id={}", self.id),
            format!("--control-fd={}", self.control_fd),
            format!("--fd-channel-fd={}", self.fd_channel_fd),
            format!("--spec-fd={}", self.spec_fd),
            format!("--sync-fd={}", self.sync_fd),
            format!("--root-dir={}", self.root_dir.display()),
            format!("--shared-dir={}", self.shared_dir.display()),
            format!("--platform={}", self.platform),
        ];
        if let Some(fd) = self.log_fd {
            a.push(format!("--log-fd={fd}"));
        }
        if !self.stdio_fds.is_empty() {
            let fds: Vec<String> = self.stdio_fds.iter().map(|f| f.to_string()).collect();
            a.push(format!("--stdio-fds={}", fds.join(",")));
        }
        if self.console {
            a.push("--console".into());
        }
        if let Some(fd) = self.device_fd {
            a.push(format!("--device-fd={fd}"));
        }
        if let Some(fd) = self.fuse_fd {
            a.push(format!("--fuse-fd={fd}"));
        }
        if let Some(n) = self.cpu_num {
            a.push(format!("--cpu-num={n}"));
        }
        if let Some(m) = self.total_memory {
            a.push(format!("--total-memory={m}"));
        }
        if self.debug {
            a.push("--debug".into());
        }
        a
    }

    /// Parses the arguments after `boot`.
    pub fn parse(args: &[String]) -> Result<Self, BootError> {
        let mut b = BootArgs::default();
        let fd = |v: &str| -> Result<RawFd, BootError> {
            v.parse()
                .map_err(|_| BootError::Args(format!("not a descriptor: {v}")))
        };
        for arg in args {
            let (k, v) = arg.split_once('=').unwrap_or((arg.as_str(), ""));
            match k {
                "--id" => b.id = v.to_string(),
                "--control-fd" => b.control_fd = fd(v)?,
                "--fd-channel-fd" => b.fd_channel_fd = fd(v)?,
                "--spec-fd" => b.spec_fd = fd(v)?,
                "--sync-fd" => b.sync_fd = fd(v)?,
                "--log-fd" => b.log_fd = Some(fd(v)?),
                "--stdio-fds" => {
                    b.stdio_fds = v.split(',').map(fd).collect::<Result<_, _>>()?;
                }
                "--console" => b.console = true,
                "--device-fd" => b.device_fd = Some(fd(v)?),
                "--fuse-fd" => b.fuse_fd = Some(fd(v)?),
                "--root-dir" => b.root_dir = PathBuf::from(v),
                "--shared-dir" => b.shared_dir = PathBuf::from(v),
                "--cpu-num" => {
                    b.cpu_num = Some(v.parse().map_err(|_| BootError::Args(arg.clone()))?)
                }
                "--total-memory" => {
                    b.total_memory = Some(v.parse().map_err(|_| BootError::Args(arg.clone()))?)
                }
                "--platform" => b.platform = v.to_string(),
                "--debug" => b.debug = true,
                _ => return Err(BootError::Args(format!("unknown argument {arg}"))),
            }
        }
        if b.id.is_empty() || b.root_dir.as_os_str().is_empty() {
            return Err(BootError::Args("--id and --root-dir are required".into()));
        }
        if b.platform.is_empty() {
            b.platform = "native".into();
        }
        if !matches!(b.platform.as_str(), "native" | "kvm") {
            return Err(BootError::Args(format!("unknown platform {}", b.platform)));
        }
        Ok(b)
    }
}

/// Runs the sandbox. Returns only on failure before serving.
pub fn main(args: BootArgs) -> Result<std::convert::Infallible, BootError> {
    if let Some(fd) = args.log_fd {
        // SAFETY: the manager donated this descriptor for our log; we own it.
        let file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        let level = if args.debug {
            log::LevelFilter::Debug
        } else {
            log::LevelFilter::Info
        };
        crate::logging::init(file, &format!("sandbox {}", args.id), level);
    }
    std::panic::set_hook(Box::new(|info| log::error!("panic: {info}")));
    if args.platform != "native" {
        // The kvm platform (a micro-VM monitor on the donated /dev/kvm) is
        // not built yet; say so where the manager looks.
        let e = BootError::Args(format!(
            "platform {} is not available in this build (device fd {:?}); use platform native",
            args.platform, args.device_fd
        ));
        log::error!("{e}");
        return Err(e);
    }
    // Block the signals the reaper waits for, before any thread exists, so
    // every thread inherits the mask.
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGCHLD);
    mask.add(Signal::SIGTERM);
    mask.add(Signal::SIGINT);
    mask.thread_block().map_err(sys("blocking signals"))?;

    // SAFETY: the process is single-threaded here (freshly exec'd, no
    // threads started), so fork cannot leave locks held in the child.
    match unsafe { fork() }.map_err(sys("forking the pod init"))? {
        ForkResult::Parent { child } => relay_exit(child),
        ForkResult::Child => pod_init(args),
    }
}

/// The outer process: waits for PID 1 and exits the same way.
fn relay_exit(child: nix::unistd::Pid) -> ! {
    let mask = SigSet::all();
    loop {
        match mask.wait() {
            Ok(Signal::SIGCHLD) => match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(_, code)) => std::process::exit(code),
                Ok(WaitStatus::Signaled(_, sig, _)) => {
                    log::warn!("pod init killed by {sig}");
                    // Re-raise so our parent sees the same signal.
                    // SAFETY: restoring the default disposition installs no
                    // handler code.
                    let _ = unsafe {
                        nix::sys::signal::signal(sig, nix::sys::signal::SigHandler::SigDfl)
                    };
                    let mut m = SigSet::empty();
                    m.add(sig);
                    let _ = m.thread_unblock();
                    let _ = nix::sys::signal::raise(sig);
                    std::process::exit(128 + sig as i32);
                }
                _ => {}
            },
            Ok(sig @ (Signal::SIGTERM | Signal::SIGINT)) => {
                let _ = nix::sys::signal::kill(child, sig);
            }
            _ => {}
        }
    }
}

fn pod_init(args: BootArgs) -> Result<std::convert::Infallible, BootError> {
    // If the outer process dies, so does the pod.
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(sys("setting the death signal"))?;
    // SAFETY: the descriptors were donated by the manager for these roles
    // and nothing else in this process owns them.
    let (control, fd_channel, spec_file, sync) = unsafe {
        (
            OwnedFd::from_raw_fd(args.control_fd),
            OwnedFd::from_raw_fd(args.fd_channel_fd),
            File::from_raw_fd(args.spec_fd),
            File::from_raw_fd(args.sync_fd),
        )
    };
    let spec: oci_spec::runtime::Spec = serde_json::from_reader(&spec_file)
        .map_err(|e| BootError::Args(format!("the spec given on --spec-fd does not parse: {e}")))?;
    drop(spec_file);
    log::info!(
        "booting sandbox {} (cpus {:?}, memory {:?})",
        args.id,
        args.cpu_num,
        args.total_memory
    );
    if let Some(h) = spec.hostname() {
        nix::unistd::sethostname(h).map_err(sys("setting the hostname"))?;
    }
    // SAFETY: the manager placed /dev/fuse at this descriptor for us alone
    // (it may be closed if the open failed: then the view is skipped).
    let fuse = args
        .fuse_fd
        .map(|fd| File::from(unsafe { OwnedFd::from_raw_fd(fd) }));
    let view = setup_minimal_root(&args.root_dir, &args.shared_dir, fuse)?;
    let pod_boot = enter_pod_time_namespace();

    let fds = FdStore::default();
    let mut keep: HashSet<RawFd> = [
        control.as_raw_fd(),
        fd_channel.as_raw_fd(),
        sync.as_raw_fd(),
    ]
    .into_iter()
    .collect();
    if let Some(fd) = args.log_fd {
        keep.insert(fd);
    }
    keep.extend(args.device_fd);
    keep.extend(view.as_ref().map(|v| v.as_raw_fd()));
    if !args.stdio_fds.is_empty() {
        let mut stdio = Vec::new();
        for fd in &args.stdio_fds {
            // SAFETY: donated by the manager as the first container's stdio;
            // a fd may repeat (a console is all three), so duplicate rather
            // than take ownership twice.
            let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(*fd) };
            stdio.push(
                borrowed
                    .try_clone_to_owned()
                    .map_err(io("duplicating the donated stdio"))?,
            );
        }
        for fd in &args.stdio_fds {
            let _ = nix::unistd::close(*fd);
        }
        keep.extend(stdio.iter().map(|f| f.as_raw_fd()));
        fds.insert(BOOT_STDIO_TOKEN, stdio);
    }
    close_other_fds(&keep)?;
    install_own_seccomp()?;

    let limits = view.and_then(|dev| start_limits_view(dev, pod_boot));
    let server = Server::new(fds.clone(), limits);
    fds.serve(fd_channel)
        .map_err(io("starting the fd channel"))?;
    let service =
        runtime_control::control_ttrpc::create_control(std::sync::Arc::new(server.clone()));
    let mut ttrpc_server = ttrpc::Server::new()
        .add_listener(control.as_raw_fd())
        .map_err(BootError::Serve)?
        .register_service(service);
    std::mem::forget(control);
    ttrpc_server.start().map_err(BootError::Serve)?;

    let mut sync = sync;
    sync.write_all(b"1")
        .map_err(io("writing the boot-sync byte"))?;
    drop(sync);
    log::info!("sandbox {} ready", args.id);
    reap_forever(&server)
}

/// PID 1's duty: collect every child and tell the server.
fn reap_forever(server: &Server) -> ! {
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGCHLD);
    mask.add(Signal::SIGTERM);
    mask.add(Signal::SIGINT);
    loop {
        match mask.wait() {
            Ok(Signal::SIGCHLD) => {
                let mut exits = Vec::new();
                {
                    let _guard = server.reap_guard();
                    loop {
                        match waitpid(None, Some(WaitPidFlag::WNOHANG | WaitPidFlag::__WALL)) {
                            Ok(WaitStatus::Exited(pid, code)) => {
                                exits.push((pid.as_raw(), code as u32))
                            }
                            Ok(WaitStatus::Signaled(pid, sig, _)) => {
                                exits.push((pid.as_raw(), 128 + sig as u32))
                            }
                            Ok(WaitStatus::StillAlive) | Err(_) => break,
                            Ok(_) => {}
                        }
                    }
                }
                for (pid, status) in exits {
                    server.record_exit(pid, status);
                }
            }
            Ok(sig) => {
                log::info!("sandbox got {sig}: exiting");
                std::process::exit(0);
            }
            Err(_) => {}
        }
    }
}

/// Puts the pod's processes (this one's children) in a time namespace whose
/// boot is now, so that their uptime, btime and process start times count
/// from the pod's start; returns the host's CLOCK_BOOTTIME of that moment.
fn enter_pod_time_namespace() -> std::time::Duration {
    let now = crate::limits::boottime();
    if let Err(e) = nix::sched::unshare(CloneFlags::from_bits_retain(libc::CLONE_NEWTIME)) {
        log::warn!("no time namespace for the pod ({e}): workloads see the host's uptime");
        return std::time::Duration::ZERO;
    }
    // Offsets are "seconds nanoseconds", nanoseconds in [0, 1e9).
    let (secs, nanos) = if now.subsec_nanos() == 0 {
        (-(now.as_secs() as i64), 0)
    } else {
        (
            -(now.as_secs() as i64) - 1,
            1_000_000_000 - now.subsec_nanos(),
        )
    };
    if let Err(e) = std::fs::write(
        "/proc/self/timens_offsets",
        format!("boottime {secs} {nanos}\n"),
    ) {
        log::warn!("setting the pod's boot time: {e}");
        return std::time::Duration::ZERO;
    }
    now
}

/// Starts serving the limits view mounted from `dev`, and the answerer
/// of sched_getaffinity and sysinfo.
fn start_limits_view(dev: File, pod_boot: std::time::Duration) -> Option<crate::limits::Service> {
    let registry = std::sync::Arc::new(crate::limits::Registry::new(pod_boot));
    let watcher = match crate::limits::notify::Watcher::start(pod_boot) {
        Ok(w) => w,
        Err(e) => {
            log::warn!("no sched_getaffinity and sysinfo answers: {e}");
            return None;
        }
    };
    let r = registry.clone();
    if let Err(e) = std::thread::Builder::new()
        .name("limits-view".into())
        .spawn(move || crate::limits::fuse::serve(dev, r))
    {
        log::warn!("not serving the limits view: {e}");
        return None;
    }
    Some(crate::limits::Service { registry, watcher })
}

/// Builds the minimal root in `root` and pivots into it; returns the
/// FUSE device of the limits view mounted there, when it could be.
fn setup_minimal_root(
    root: &Path,
    shared: &Path,
    fuse: Option<File>,
) -> Result<Option<File>, BootError> {
    // Nothing we mount may reach the host; /shared keeps receiving.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(sys("making / a slave mount"))?;
    mount(
        Some("tmpfs"),
        root,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=755,size=1m"),
    )
    .map_err(sys(format!(
        "mounting the minimal root on {}",
        root.display()
    )))?;
    for d in ["proc", "dev", "sys", "shared", "tmp", "limits"] {
        std::fs::create_dir(root.join(d)).map_err(io(format!("creating /{d}")))?;
    }
    for dev in ["null", "zero", "full", "random", "urandom", "tty"] {
        let target = root.join("dev").join(dev);
        File::create(&target).map_err(io(format!("creating /dev/{dev}")))?;
        let source = Path::new("/dev").join(dev);
        mount(
            Some(&source),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(sys(format!("binding {}", source.display())))?;
    }
    mount(
        Some("proc"),
        &root.join("proc"),
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(sys("mounting /proc"))?;
    let sys_target = root.join("sys");
    if mount(
        Some("sysfs"),
        &sys_target,
        Some("sysfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC | MsFlags::MS_RDONLY,
        None::<&str>,
    )
    .is_err()
    {
        // The network namespace belongs to the host's user namespace (a pod
        // netns from CNI): a new sysfs is not allowed, the host's is.
        mount(
            Some("/sys"),
            &sys_target,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(sys("binding /sys"))?;
    }
    expose_own_libraries(root)?;
    let view_dir = root.join(crate::limits::MOUNT_POINT.trim_start_matches('/'));
    let view = match crate::limits::fuse::mount_view(&view_dir, fuse) {
        Ok(dev) => Some(dev),
        Err(e) => {
            let cause = std::error::Error::source(&e)
                .map(|c| c.to_string())
                .unwrap_or_default();
            log::warn!("workloads will see the host's CPUs and memory: {e}: {cause}");
            None
        }
    };
    mount(
        Some(shared),
        &root.join("shared"),
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(sys(format!("binding {}", shared.display())))?;

    nix::unistd::chdir(root).map_err(sys("entering the minimal root"))?;
    nix::unistd::pivot_root(".", ".").map_err(sys("pivot_root into the minimal root"))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(sys("detaching the old root"))?;
    nix::unistd::chdir("/").map_err(sys("entering /"))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=755,size=1m"),
    )
    .map_err(sys("making the minimal root read-only"))?;
    Ok(view)
}

/// The sandbox re-executes itself (/proc/self/exe) to start container
/// helpers, so the few shared libraries it is linked against, and the
/// dynamic loader's path, must exist in the minimal root: bind each file
/// this process has mapped, read-only, at its own path.
fn expose_own_libraries(root: &Path) -> Result<(), BootError> {
    let exe = std::fs::read_link("/proc/self/exe").map_err(io("reading /proc/self/exe"))?;
    let maps = std::fs::read_to_string("/proc/self/maps").map_err(io("reading /proc/self/maps"))?;
    let mut files: Vec<PathBuf> = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .filter(|p| p.starts_with('/'))
        .map(PathBuf::from)
        .filter(|p| *p != exe && p.is_file())
        .collect();
    files.sort();
    files.dedup();
    for f in &files {
        let target = root.join(f.strip_prefix("/").unwrap_or(f));
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .map_err(io(format!("creating {}", parent.display())))?;
        }
        File::create(&target).map_err(io(format!("creating {}", target.display())))?;
        mount(
            Some(f),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(sys(format!("binding {}", f.display())))?;
        let ro = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
        if let Err(e) = mount(None::<&str>, &target, None::<&str>, ro, None::<&str>) {
            log::warn!("could not make {} read-only: {e}", target.display());
        }
    }
    // The loader's well-known path is usually a symlink to a mapped file.
    for interp in ["/lib64/ld-linux-x86-64.so.2", "/lib/ld-linux-aarch64.so.1"] {
        let Ok(real) = std::fs::canonicalize(interp) else {
            continue;
        };
        let link = root.join(interp.trim_start_matches('/'));
        if real.as_path() == Path::new(interp) || link.exists() {
            continue;
        }
        if let Some(parent) = link.parent() {
            std::fs::create_dir_all(parent)
                .map_err(io(format!("creating {}", parent.display())))?;
        }
        std::os::unix::fs::symlink(&real, &link)
            .map_err(io(format!("linking {}", link.display())))?;
    }
    Ok(())
}

/// Closes every descriptor not in `keep`.
fn close_other_fds(keep: &HashSet<RawFd>) -> Result<(), BootError> {
    let fds: Vec<RawFd> = std::fs::read_dir("/proc/self/fd")
        .map_err(io("listing descriptors"))?
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
        .collect();
    for fd in fds {
        if fd <= 2 {
            continue;
        }
        if keep.contains(&fd) {
            // Donated descriptors arrive without close-on-exec; container
            // helpers must not inherit them.
            // SAFETY: F_SETFD on a descriptor this process holds changes
            // only its flags.
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        } else {
            let _ = nix::unistd::close(fd);
        }
    }
    // stdin/out/err of the sandbox itself go nowhere.
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(io("opening /dev/null"))?;
    for fd in 0..3 {
        // SAFETY: dup2 onto 0-2 replaces this process's own standard
        // descriptors; no Rust object owns them.
        unsafe { libc::dup2(null.as_raw_fd(), fd) };
    }
    Ok(())
}

/// Confines the sandbox (and, by inheritance, its workloads).
fn install_own_seccomp() -> Result<(), BootError> {
    let prog = crate::seccomp::sandbox_filter()
        .map_err(|e| BootError::Args(format!("building the sandbox's seccomp filter: {e}")))?;
    crate::seccomp::install(&[prog])
        .map_err(|e| BootError::Args(format!("installing the sandbox's seccomp filter: {e}")))
}
