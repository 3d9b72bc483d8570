//! The sandbox manager: the host side of a sandbox (the port of gVisor's
//! `runsc/sandbox`).
//!
//! [`Sandbox::create`] forks `runsc-sandbox boot` with its descriptors
//! donated (control socket, fd channel, spec, boot-sync pipe, log, the first
//! container's stdio, the platform device), in new namespaces with its own
//! host uid range, placed in its cgroup; it returns once the sandbox reports
//! ready, and tears a half-made sandbox down on any error. The other methods
//! drive the sandbox over runtime-control. A `Sandbox` serialises to
//! `<state>/sandbox.json`, so a restarted shim finds it with [`Sandbox::load`].

pub mod cgroup;
pub mod spawn;
pub mod stage;
pub mod uidpool;

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use oci_spec::runtime::{LinuxNamespaceType, Process, Spec};
use runtime_control::control as pb;
use runtime_control::control_ttrpc::ControlClient;
use serde::{Deserialize, Serialize};

use crate::boot::BootArgs;
pub use uidpool::UidPool;

/// Errors of the manager.
#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    /// The caller asked for something malformed.
    #[error("{0}")]
    InvalidArgument(String),
    /// A sandbox with that id exists already.
    #[error("sandbox {0} already exists")]
    AlreadyExists(String),
    /// No such sandbox, container or process.
    #[error("{0}")]
    NotFound(String),
    /// The sandbox is not running.
    #[error("sandbox {0} is not running")]
    NotRunning(String),
    /// The sandbox failed to boot.
    #[error("sandbox {id} failed to boot: {reason}")]
    Boot {
        /// Sandbox id.
        id: String,
        /// What the sandbox's log says, or what was seen.
        reason: String,
    },
    /// The sandbox answered a call with an error.
    #[error("{message}")]
    Rpc {
        /// The ttrpc code.
        code: ttrpc::Code,
        /// The sandbox's message.
        message: String,
    },
    /// The connection to the sandbox failed.
    #[error("talking to sandbox {id}")]
    Transport {
        /// Sandbox id.
        id: String,
        /// The cause.
        #[source]
        source: ttrpc::Error,
    },
    /// Host I/O failed.
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Starting the process failed.
    #[error(transparent)]
    Spawn(#[from] spawn::SpawnError),
    /// Staging mounts failed.
    #[error(transparent)]
    Stage(#[from] stage::StageError),
    /// The cgroup could not be set up.
    #[error(transparent)]
    Cgroup(#[from] cgroup::CgroupError),
    /// No uid range is free.
    #[error(transparent)]
    UidPool(#[from] uidpool::UidPoolError),
    /// Passing descriptors failed.
    #[error(transparent)]
    FdPass(#[from] crate::fdpass::FdPassError),
}

impl ManagerError {
    /// The ttrpc code this error should travel with.
    pub fn code(&self) -> ttrpc::Code {
        use ttrpc::Code;
        match self {
            ManagerError::InvalidArgument(_) => Code::INVALID_ARGUMENT,
            ManagerError::AlreadyExists(_) => Code::ALREADY_EXISTS,
            ManagerError::NotFound(_) => Code::NOT_FOUND,
            ManagerError::NotRunning(_) => Code::FAILED_PRECONDITION,
            ManagerError::Rpc { code, .. } => *code,
            ManagerError::Transport { .. } => Code::UNAVAILABLE,
            _ => Code::INTERNAL,
        }
    }
}

type Result<T> = std::result::Result<T, ManagerError>;

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ManagerError {
    let what = what.into();
    move |source| ManagerError::Io { what, source }
}

/// The platform that runs workloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    /// Host processes confined by namespaces, seccomp and capabilities.
    #[default]
    Native,
    /// A micro-VM monitor holding /dev/kvm (not built yet).
    Kvm,
}

impl Platform {
    /// The name used in configuration.
    pub fn name(self) -> &'static str {
        match self {
            Platform::Native => "native",
            Platform::Kvm => "kvm",
        }
    }
}

/// Which network namespace the sandbox uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Network {
    /// The spec's network namespace when it names a path, else a new one.
    #[default]
    Sandbox,
    /// The host's network namespace.
    Host,
}

/// How a sandbox is made.
#[derive(Debug, Clone)]
pub struct Config {
    /// Directory holding one state directory per sandbox.
    pub state_root: PathBuf,
    /// The binary serving `boot` (runsc-sandbox, or the shim itself).
    pub sandbox_binary: PathBuf,
    /// Workload platform.
    pub platform: Platform,
    /// Host uid ranges.
    pub uid_pool: UidPool,
    /// Network namespace choice.
    pub network: Network,
    /// Where the sandbox logs; `<state>/sandbox.log` when None.
    pub log_path: Option<PathBuf>,
    /// Verbose sandbox logs.
    pub debug: bool,
    /// How long to wait for the sandbox to boot.
    pub boot_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            state_root: PathBuf::from("/run/runsc-rs"),
            sandbox_binary: PathBuf::from("/usr/local/bin/runsc-sandbox"),
            platform: Platform::Native,
            uid_pool: UidPool::default(),
            network: Network::Sandbox,
            log_path: None,
            debug: false,
            boot_timeout: Duration::from_secs(10),
        }
    }
}

/// The annotation containerd's CRI puts on every container of a pod.
const CRI_SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";

/// Fd-channel tokens of a container's cgroup, as sent to the sandbox.
#[derive(Debug, Default)]
struct CgroupTokens {
    /// Its `cgroup.procs` files.
    procs: u64,
    /// Its directories, named by `controllers`.
    limits: u64,
    controllers: Vec<String>,
}

/// A process started in the sandbox.
#[derive(Debug)]
pub struct Spawned {
    /// Its pid, as the sandbox sees it.
    pub pid: u32,
    /// The master of the pty the sandbox made for it, when it asked for a
    /// terminal without sending one ([`Stdio::console`]).
    pub console: Option<OwnedFd>,
}

/// Standard streams for a process in the sandbox.
#[derive(Debug, Default)]
pub struct Stdio {
    /// Standard input.
    pub stdin: Option<OwnedFd>,
    /// Standard output.
    pub stdout: Option<OwnedFd>,
    /// Standard error.
    pub stderr: Option<OwnedFd>,
    /// The three are one terminal (a pty slave, given as stdin).
    pub terminal: bool,
}

impl Stdio {
    /// A terminal made by the sandbox in the container's own devpts (so
    /// `tty` names it there); its master comes back in [`Spawned`].
    pub fn console() -> Stdio {
        Stdio {
            terminal: true,
            ..Stdio::default()
        }
    }

    fn is_console(&self) -> bool {
        self.terminal && self.stdin.is_none() && self.stdout.is_none() && self.stderr.is_none()
    }
}

/// Where a container's stdio comes from.
#[derive(Debug)]
pub enum ContainerStdio {
    /// The stdio donated when the sandbox was created.
    Donated,
    /// These descriptors, sent on the fd channel.
    Fds(Stdio),
    /// /dev/null.
    Null,
}

/// Exit of a container or process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitStatus {
    /// Exit code, or 128 + signal.
    pub status: u32,
    /// Unix time of the exit, in nanoseconds (0 when unknown).
    pub exited_at_ns: i64,
}

/// Which processes a signal reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalTarget {
    /// One process (its sandbox pid), or the init when 0.
    Process(u32),
    /// Every process of the container.
    All,
    /// The foreground process group of the process's terminal.
    ForegroundGroup(u32),
}

/// One mount of a container's rootfs as containerd's snapshotter gives it
/// (Task.Create's `rootfs`): typically one overlay mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootfsMount {
    /// Filesystem type ("overlay", "bind", …).
    pub typ: String,
    /// Source.
    pub source: String,
    /// Options, as for mount(8).
    pub options: Vec<String>,
}

/// A process of a container, as listed by [`Sandbox::processes`].
pub type ProcessInfo = pb::Process;

/// A running (or dead) sandbox.
#[derive(Serialize, Deserialize)]
pub struct Sandbox {
    /// Sandbox id; by convention the id of its first container.
    pub id: String,
    /// Host pid of the sandbox process (0 once reaped).
    pub pid: i32,
    /// `<state_root>/<id>`.
    pub state_dir: PathBuf,
    /// Root of all sandboxes' state.
    pub state_root: PathBuf,
    /// Slot taken from the uid pool.
    pub uid_slot: u32,
    /// Host uid (and gid) of container root.
    pub uid_base: u32,
    /// The sandbox's cgroup, if the spec named one.
    pub cgroup: Option<cgroup::Placement>,
    /// Platform.
    pub platform: Platform,
    /// Whether the first container's stdio was donated at boot.
    #[serde(default)]
    pub donated_stdio: bool,
    /// The sandbox is a child of this process (so it can be waited for).
    #[serde(skip)]
    child: bool,
    /// Exit status of the sandbox process once collected.
    #[serde(skip)]
    exit: Arc<Mutex<Option<i32>>>,
    #[serde(skip)]
    client: OnceLock<ControlClient>,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("id", &self.id)
            .field("pid", &self.pid)
            .field("state_dir", &self.state_dir)
            .field("uid_base", &self.uid_base)
            .finish_non_exhaustive()
    }
}

/// Timeout for calls that do not block by design.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

fn validate_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && !id.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(ManagerError::InvalidArgument(format!(
            "invalid id {id:?}: use 1-128 characters of [A-Za-z0-9_.-]"
        )))
    }
}

impl Sandbox {
    /// The control socket's path.
    pub fn control_path(&self) -> PathBuf {
        self.state_dir.join("control.sock")
    }

    fn fd_channel_path(&self) -> PathBuf {
        self.state_dir.join("fd.sock")
    }

    /// The host directory shared with the sandbox.
    pub fn shared_dir(&self) -> PathBuf {
        self.state_dir.join("shared")
    }

    /// Creates a sandbox for the pod whose first container has `spec`, and
    /// donates `stdio` as that container's stdio. The caller must call
    /// [`Sandbox::destroy`].
    pub fn create(cfg: &Config, id: &str, spec: &Spec, stdio: Option<Stdio>) -> Result<Sandbox> {
        validate_id(id)?;
        std::fs::create_dir_all(&cfg.state_root)
            .map_err(io(format!("creating {}", cfg.state_root.display())))?;
        let state_dir = cfg.state_root.join(id);
        match std::fs::create_dir(&state_dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(ManagerError::AlreadyExists(id.to_string()))
            }
            Err(e) => return Err(io(format!("creating {}", state_dir.display()))(e)),
        }
        let mut sb = Sandbox {
            id: id.to_string(),
            pid: 0,
            state_dir,
            state_root: cfg.state_root.clone(),
            uid_slot: u32::MAX,
            uid_base: 0,
            cgroup: None,
            platform: cfg.platform,
            donated_stdio: stdio.is_some(),
            child: false,
            exit: Arc::default(),
            client: OnceLock::new(),
        };
        match sb.create_inner(cfg, spec, stdio) {
            Ok(()) => Ok(sb),
            Err(e) => {
                log::warn!("sandbox {id}: creation failed, tearing down: {e}");
                if let Err(d) = sb.destroy() {
                    log::warn!("sandbox {id}: teardown after failed creation: {d}");
                }
                Err(e)
            }
        }
    }

    fn create_inner(&mut self, cfg: &Config, spec: &Spec, stdio: Option<Stdio>) -> Result<()> {
        let id = self.id.clone();
        self.uid_slot = cfg.uid_pool.allocate(&self.state_root, &id)?;
        self.uid_base = cfg.uid_pool.base(self.uid_slot);
        stage::make_shared_dir(&self.shared_dir())?;
        let root_dir = self.state_dir.join("root");
        std::fs::create_dir(&root_dir).map_err(io("creating the sandbox root dir"))?;

        let control = std::os::unix::net::UnixListener::bind(self.control_path())
            .map_err(io("binding the control socket"))?;
        let fd_channel = crate::fdpass::listen_at(&self.fd_channel_path())?;
        let spec_path = self.state_dir.join("config.json");
        let spec_json = serde_json::to_vec(spec)
            .map_err(|e| ManagerError::InvalidArgument(format!("spec: {e}")))?;
        std::fs::write(&spec_path, spec_json).map_err(io("writing the pod spec"))?;
        let spec_file = File::open(&spec_path).map_err(io("opening the pod spec"))?;
        let (sync_r, sync_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| io("creating the boot-sync pipe")(e.into()))?;
        let log_path = cfg
            .log_path
            .clone()
            .unwrap_or_else(|| self.state_dir.join("sandbox.log"));
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(io(format!("opening the log {}", log_path.display())))?;

        // The network namespace: the spec's path, the host's, or a new one.
        let ns_path = spec
            .linux()
            .as_ref()
            .and_then(|l| l.namespaces().as_ref())
            .and_then(|nss| {
                nss.iter()
                    .find(|n| n.typ() == LinuxNamespaceType::Network)
                    .and_then(|n| n.path().clone())
            });
        let (netns, new_netns) = match (cfg.network, ns_path) {
            (Network::Host, _) => (None, false),
            (Network::Sandbox, Some(p)) => (
                Some(
                    File::open(&p)
                        .map_err(io(format!("opening the network namespace {}", p.display())))?,
                ),
                false,
            ),
            (Network::Sandbox, None) => (None, true),
        };

        // The cgroup: created, limited, joined by the child before exec.
        // A CRI pod's sandbox lives in its pause container's cgroup, inside
        // the pod's. A pod of one container (`ctr run`) names the
        // container's own cgroup, which the sandbox must not share: a pause
        // would freeze the sandbox, whose FUSE view the container may be
        // reading (the freeze then never completes), and the container's
        // limits, OOM kills and stats would count the sandbox. It takes the
        // sibling `<cgroup>-sandbox`, without the container's limits.
        let mut cgroup_procs = Vec::new();
        let (mut cpu_num, mut total_memory) = (None, None);
        if let Some(path) = spec.linux().as_ref().and_then(|l| l.cgroups_path().clone()) {
            let named = cgroup::Placement::new(&path.to_string_lossy());
            let in_cri_pod = spec
                .annotations()
                .as_ref()
                .and_then(|a| a.get(CRI_SANDBOX_ID))
                .is_some_and(|v| !v.is_empty());
            let placement = if in_cri_pod {
                named
            } else {
                named.sibling("sandbox")
            };
            self.cgroup = Some(placement.clone());
            placement.create()?;
            if let (true, Some(r)) = (
                in_cri_pod,
                spec.linux().as_ref().and_then(|l| l.resources().as_ref()),
            ) {
                placement.apply(r)?;
            }
            for f in placement.procs_files() {
                cgroup_procs.push(
                    std::fs::OpenOptions::new()
                        .write(true)
                        .open(&f)
                        .map_err(io(format!("opening {}", f.display())))?,
                );
            }
            cpu_num = Some(placement.cpu_count());
            total_memory = placement.memory_limit();
        }

        // Donated descriptors, in order from fd 3.
        let mut donate: Vec<RawFd> = Vec::new();
        let mut next = |fd: RawFd| {
            donate.push(fd);
            2 + donate.len() as RawFd
        };
        let mut args = BootArgs {
            id: id.clone(),
            log_fd: Some(next(log_file.as_raw_fd())),
            control_fd: next(control.as_raw_fd()),
            fd_channel_fd: next(fd_channel.as_raw_fd()),
            spec_fd: next(spec_file.as_raw_fd()),
            sync_fd: next(sync_w.as_raw_fd()),
            root_dir,
            shared_dir: self.shared_dir(),
            cpu_num,
            total_memory,
            platform: cfg.platform.name().to_string(),
            debug: cfg.debug,
            ..Default::default()
        };
        if let Some(s) = &stdio {
            args.console = s.terminal;
            for fd in [&s.stdin, &s.stdout, &s.stderr] {
                let raw = match fd {
                    Some(f) => f.as_raw_fd(),
                    None => -1,
                };
                if raw >= 0 {
                    args.stdio_fds.push(next(raw));
                }
            }
            if args.stdio_fds.len() != 3 {
                return Err(ManagerError::InvalidArgument(
                    "donated stdio needs stdin, stdout and stderr".into(),
                ));
            }
        }
        // The platform's device, opened here (the sandbox cannot open host
        // devices) and donated.
        let device = match cfg.platform {
            Platform::Native => None,
            Platform::Kvm => Some(
                std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open("/dev/kvm")
                    .map_err(|e| {
                        ManagerError::InvalidArgument(format!("platform kvm needs /dev/kvm: {e}"))
                    })?,
            ),
        };
        if let Some(d) = &device {
            args.device_fd = Some(next(d.as_raw_fd()));
        }
        // Not opened here: the child opens it at the next free slot.
        let fuse_fd = 3 + donate.len() as RawFd;
        args.fuse_fd = Some(fuse_fd);
        let pid = spawn::spawn(spawn::SpawnSpec {
            binary: cfg.sandbox_binary.clone(),
            boot_args: args.to_args(),
            donate,
            cgroup_procs,
            netns,
            new_netns,
            uid_base: self.uid_base,
            fuse_fd: Some(fuse_fd),
        })?;
        self.pid = pid as i32;
        self.child = true;
        drop(sync_w);
        drop(stdio);
        log::info!(
            "sandbox {id}: started pid {pid}, host uids {}..{}",
            self.uid_base,
            u64::from(self.uid_base) + u64::from(uidpool::IDS_PER_SANDBOX) - 1
        );
        self.save()?;
        self.wait_boot(sync_r, cfg.boot_timeout, &log_path)
    }

    fn wait_boot(&self, sync_r: OwnedFd, timeout: Duration, log_path: &Path) -> Result<()> {
        let mut pfd = [nix::poll::PollFd::new(
            sync_r.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
        let ready = nix::poll::poll(&mut pfd, nix::poll::PollTimeout::from(ms))
            .map_err(|e| io("waiting for the sandbox to boot")(e.into()))?;
        let mut byte = [0u8; 1];
        let got = if ready > 0 {
            File::from(sync_r)
                .read(&mut byte)
                .map_err(io("reading the boot-sync pipe"))?
        } else {
            0
        };
        if got == 1 {
            return Ok(());
        }
        let tail = std::fs::read_to_string(log_path)
            .unwrap_or_default()
            .lines()
            .rev()
            .find(|l| l.contains("ERROR") && l.contains(&format!("sandbox {}[", self.id)))
            .map(|l| l.to_string())
            .unwrap_or_else(|| {
                if ready == 0 {
                    format!("no answer within {timeout:?}")
                } else {
                    "it exited during boot".to_string()
                }
            });
        Err(ManagerError::Boot {
            id: self.id.clone(),
            reason: tail,
        })
    }

    /// Writes the state file.
    pub fn save(&self) -> Result<()> {
        let path = self.state_dir.join("sandbox.json");
        let tmp = self.state_dir.join("sandbox.json.tmp");
        let body = serde_json::to_vec_pretty(self)
            .map_err(|e| io("encoding the state")(std::io::Error::other(e)))?;
        std::fs::write(&tmp, body).map_err(io("writing the state file"))?;
        std::fs::rename(&tmp, &path).map_err(io("writing the state file"))
    }

    /// Finds sandbox `id` from its state file.
    pub fn load(state_root: &Path, id: &str) -> Result<Sandbox> {
        validate_id(id)?;
        let path = state_root.join(id).join("sandbox.json");
        let body = std::fs::read(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                ManagerError::NotFound(format!("sandbox {id} not found"))
            } else {
                io(format!("reading {}", path.display()))(e)
            }
        })?;
        serde_json::from_slice(&body).map_err(|e| {
            ManagerError::InvalidArgument(format!("state file {}: {e}", path.display()))
        })
    }

    /// A client connected to the sandbox's control socket.
    pub fn connect(&self) -> Result<ControlClient> {
        if let Some(c) = self.client.get() {
            return Ok(c.clone());
        }
        let addr = format!("unix://{}", self.control_path().display());
        let client = ttrpc::Client::connect(&addr).map_err(|source| ManagerError::Transport {
            id: self.id.clone(),
            source,
        })?;
        let c = ControlClient::new(client);
        Ok(self.client.get_or_init(|| c).clone())
    }

    fn rpc_err(&self, e: ttrpc::Error) -> ManagerError {
        match e {
            ttrpc::Error::RpcStatus(s) => {
                let code = s.code();
                let message = s.message().to_string();
                // ttrpc answers an unknown method with InvalidArgument
                // "... does not exist": that is Unimplemented.
                if code == ttrpc::Code::INVALID_ARGUMENT && message.ends_with("does not exist") {
                    return ManagerError::Rpc {
                        code: ttrpc::Code::UNIMPLEMENTED,
                        message,
                    };
                }
                ManagerError::Rpc { code, message }
            }
            other => {
                if !self.is_running() {
                    ManagerError::NotRunning(self.id.clone())
                } else {
                    ManagerError::Transport {
                        id: self.id.clone(),
                        source: other,
                    }
                }
            }
        }
    }

    fn ctx(timeout: Option<Duration>) -> ttrpc::context::Context {
        match timeout {
            Some(t) => ttrpc::context::with_timeout(t.as_nanos() as i64),
            None => ttrpc::context::Context::default(),
        }
    }

    fn send_stdio(&self, stdio: Stdio) -> Result<pb::Stdio> {
        let mut s = pb::Stdio::new();
        s.terminal = stdio.terminal;
        if stdio.is_console() {
            return Ok(s);
        }
        let fds: Vec<BorrowedFd<'_>> = [&stdio.stdin, &stdio.stdout, &stdio.stderr]
            .into_iter()
            .map(|f| f.as_ref().map(|f| f.as_fd()))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                ManagerError::InvalidArgument(
                    "stdio needs stdin, stdout and stderr (use /dev/null for unused ones)".into(),
                )
            })?;
        let token = crate::fdpass::new_token();
        crate::fdpass::send_fds(&self.fd_channel_path(), token, &fds)?;
        s.token = token;
        Ok(s)
    }

    /// Creates container `cid` from `spec`. Its rootfs is `rootfs` (the
    /// snapshotter's mounts) or, when that is empty, the directory at
    /// root.path; both and the bind sources are host paths, staged where the
    /// sandbox sees them and rewritten. Returns the init's pid as the
    /// sandbox sees it.
    pub fn create_container(
        &self,
        cid: &str,
        spec: &Spec,
        rootfs: &[RootfsMount],
        stdio: ContainerStdio,
    ) -> Result<Spawned> {
        validate_id(cid)?;
        let staged = self.stage(cid, spec, rootfs)?;
        let result = (|| {
            let pb_stdio = match stdio {
                ContainerStdio::Donated => {
                    let mut s = pb::Stdio::new();
                    s.token = crate::server::BOOT_STDIO_TOKEN;
                    s
                }
                ContainerStdio::Fds(s) => self.send_stdio(s)?,
                ContainerStdio::Null => pb::Stdio::new(),
            };
            let mut req = pb::CreateContainerRequest::new();
            req.container_id = cid.to_string();
            let tokens = self.container_cgroup_tokens(cid, spec)?;
            req.cgroup_token = tokens.procs;
            req.limits_token = tokens.limits;
            req.limits_controllers = tokens.controllers;
            req.spec_json = serde_json::to_vec(&staged)
                .map_err(|e| ManagerError::InvalidArgument(format!("spec: {e}")))?;
            req.stdio = Some(pb_stdio).into();
            let r = self
                .connect()?
                .create_container(Self::ctx(Some(CALL_TIMEOUT)), &req)
                .map_err(|e| self.rpc_err(e))?;
            Ok(Spawned {
                pid: r.pid,
                console: self.fetch_console(r.console_token)?,
            })
        })();
        if result.is_err() {
            let _ = stage::unmount_and_remove(&self.shared_dir().join(cid));
        }
        result
    }

    /// Stages `spec`'s rootfs and bind sources below shared/<cid> and
    /// returns the spec as the sandbox sees it.
    fn stage(&self, cid: &str, spec: &Spec, rootfs_mounts: &[RootfsMount]) -> Result<Spec> {
        let root = spec
            .root()
            .as_ref()
            .ok_or_else(|| ManagerError::InvalidArgument(format!("container {cid}: no root")))?;
        let rootfs = root.path();
        if rootfs_mounts.is_empty() && !rootfs.is_absolute() {
            return Err(ManagerError::InvalidArgument(format!(
                "container {cid}: root.path {} must be absolute",
                rootfs.display()
            )));
        }
        if rootfs_mounts.is_empty() && !rootfs.is_dir() {
            return Err(ManagerError::InvalidArgument(format!(
                "container {cid}: rootfs {} is not a directory",
                rootfs.display()
            )));
        }
        let host_dir = self.shared_dir().join(cid);
        if host_dir.exists() {
            return Err(ManagerError::AlreadyExists(format!("container {cid}")));
        }
        let userns = File::open(format!("/proc/{}/ns/user", self.pid))
            .map_err(|_| ManagerError::NotRunning(self.id.clone()))?;
        let result = (|| {
            let mut out = spec.clone();
            self.check_namespaces(cid, &mut out)?;
            self.apply_net_sysctls(cid, &mut out)?;
            if rootfs_mounts.is_empty() {
                stage::bind_idmapped(rootfs, &host_dir.join("rootfs"), userns.as_raw_fd())?;
            } else {
                stage::mount_rootfs(rootfs_mounts, &host_dir, userns.as_raw_fd(), self.uid_base)?;
            }
            let mut new_root = root.clone();
            new_root.set_path(Path::new("/shared").join(cid).join("rootfs"));
            out.set_root(Some(new_root));
            if let Some(mounts) = spec.mounts() {
                let mut new_mounts = Vec::with_capacity(mounts.len());
                for (n, m) in mounts.iter().enumerate() {
                    let mut m = m.clone();
                    let is_bind = m.typ().as_deref() == Some("bind")
                        || m.options()
                            .as_ref()
                            .is_some_and(|o| o.iter().any(|x| x == "bind" || x == "rbind"));
                    if let (true, Some(src)) = (is_bind, m.source().clone()) {
                        if !src.is_absolute() {
                            return Err(ManagerError::InvalidArgument(format!(
                                "container {cid}: bind source {} must be absolute",
                                src.display()
                            )));
                        }
                        if !src.exists() {
                            return Err(ManagerError::InvalidArgument(format!(
                                "container {cid}: bind source {} does not exist",
                                src.display()
                            )));
                        }
                        let target = host_dir.join("mounts").join(n.to_string());
                        stage::bind_idmapped(&src, &target, userns.as_raw_fd())?;
                        m.set_source(Some(
                            Path::new("/shared")
                                .join(cid)
                                .join("mounts")
                                .join(n.to_string()),
                        ));
                    }
                    new_mounts.push(m);
                }
                out.set_mounts(Some(new_mounts));
            }
            Ok(out)
        })();
        if result.is_err() {
            let _ = stage::unmount_and_remove(&host_dir);
        }
        result
    }

    /// Checks the namespaces `spec` asks for against what a sandbox gives,
    /// and rewrites a PID namespace path (a host path naming another
    /// container of this pod, for a shared process namespace) to the path
    /// the sandbox sees.
    fn check_namespaces(&self, cid: &str, spec: &mut Spec) -> Result<()> {
        let Some(mut linux) = spec.linux().clone() else {
            return Ok(());
        };
        let mut nss = linux.namespaces().clone().unwrap_or_default();
        let has = |t: LinuxNamespaceType| nss.iter().any(|n| n.typ() == t);
        if !has(LinuxNamespaceType::Pid) {
            return Err(ManagerError::InvalidArgument(format!(
                "container {cid}: the host PID namespace (hostPID) is not supported by runsc-rs"
            )));
        }
        if !has(LinuxNamespaceType::Ipc) {
            return Err(ManagerError::InvalidArgument(format!(
                "container {cid}: the host IPC namespace (hostIPC) is not supported by runsc-rs"
            )));
        }
        // The pod shares the sandbox's IPC and UTS namespaces: a path there
        // names the pod's own (the pause container's).
        for ns in nss.iter_mut() {
            let Some(path) = ns.path().clone() else {
                continue;
            };
            match ns.typ() {
                LinuxNamespaceType::Pid => {
                    let pod_pid = self.pod_pid_of_ns_path(&path).ok_or_else(|| {
                        ManagerError::InvalidArgument(format!(
                            "container {cid}: PID namespace {} is not one of sandbox {}",
                            path.display(),
                            self.id
                        ))
                    })?;
                    ns.set_path(Some(PathBuf::from(format!("/proc/{pod_pid}/ns/pid"))));
                }
                LinuxNamespaceType::Ipc | LinuxNamespaceType::Uts => {
                    ns.set_path(None);
                }
                _ => {}
            }
        }
        linux.set_namespaces(Some(nss));
        spec.set_linux(Some(linux));
        Ok(())
    }

    /// Writes the spec's `net.*` sysctls into the sandbox's network
    /// namespace from the host side, and takes them out of the spec: a pod's
    /// network namespace (from CNI) belongs to the host's user namespace, so
    /// the sandbox cannot write them itself.
    fn apply_net_sysctls(&self, cid: &str, spec: &mut Spec) -> Result<()> {
        let Some(mut linux) = spec.linux().clone() else {
            return Ok(());
        };
        let Some(mut sysctls) = linux.sysctl().clone() else {
            return Ok(());
        };
        let net: Vec<(String, String)> = sysctls
            .iter()
            .filter(|(k, _)| k.starts_with("net."))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if net.is_empty() {
            return Ok(());
        }
        let invalid = |m: String| ManagerError::InvalidArgument(format!("container {cid}: {m}"));
        for (k, _) in &net {
            let ok = k.split('.').all(|p| {
                !p.is_empty()
                    && p.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            });
            if !ok {
                return Err(invalid(format!("invalid sysctl name {k:?}")));
            }
        }
        let ns = format!("/proc/{}/ns/net", self.pid);
        let ino = |p: &str| std::fs::metadata(p).map(|m| std::os::unix::fs::MetadataExt::ino(&m));
        if ino(&ns).ok() == ino("/proc/1/ns/net").ok() {
            return Err(invalid(
                "net.* sysctls cannot be set in the host's network namespace".into(),
            ));
        }
        let netns = File::open(&ns).map_err(|_| ManagerError::NotRunning(self.id.clone()))?;
        // Network namespaces are per thread: write from a short-lived one.
        let written = std::thread::scope(|s| {
            s.spawn(|| -> std::result::Result<(), (String, std::io::Error)> {
                nix::sched::setns(&netns, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(|e| ("joining the pod's network namespace".into(), e.into()))?;
                for (k, v) in &net {
                    let path = format!("/proc/sys/{}", k.replace('.', "/"));
                    std::fs::write(&path, v)
                        .map_err(|e| (format!("setting sysctl {k} to {v}"), e))?;
                }
                Ok(())
            })
            .join()
            .unwrap_or_else(|_| Err(("sysctl thread".into(), std::io::Error::other("panicked"))))
        });
        if let Err((what, e)) = written {
            return Err(invalid(format!("{what}: {e}")));
        }
        for (k, _) in &net {
            sysctls.remove(k);
        }
        linux.set_sysctl(Some(sysctls));
        spec.set_linux(Some(linux));
        Ok(())
    }

    /// The pod-level pid of the process whose namespace `path` (a host
    /// /proc/PID/ns/pid path) is, if that process is in this sandbox.
    fn pod_pid_of_ns_path(&self, path: &Path) -> Option<u32> {
        let host_pid: i32 = path
            .strip_prefix("/proc")
            .ok()?
            .components()
            .next()?
            .as_os_str()
            .to_str()?
            .parse()
            .ok()?;
        let status = std::fs::read_to_string(format!("/proc/{host_pid}/status")).ok()?;
        let nspid: Vec<u32> = status
            .lines()
            .find_map(|l| l.strip_prefix("NSpid:"))?
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        let pod_pid = *nspid.get(1)?;
        (self.host_pid(pod_pid) == Some(host_pid)).then_some(pod_pid)
    }

    /// Lets container `cid` run; returns its init's pid.
    pub fn start_container(&self, cid: &str) -> Result<u32> {
        let mut req = pb::ContainerRequest::new();
        req.container_id = cid.to_string();
        let r = self
            .connect()?
            .start_container(Self::ctx(Some(CALL_TIMEOUT)), &req)
            .map_err(|e| self.rpc_err(e))?;
        Ok(r.pid)
    }

    /// Creates container `cid`'s cgroup from its spec (cgroupsPath, limits),
    /// records it for cleanup, and sends the sandbox its `cgroup.procs`
    /// files and its directories; all tokens are 0 when the spec names no
    /// cgroup.
    fn container_cgroup_tokens(&self, cid: &str, spec: &Spec) -> Result<CgroupTokens> {
        let Some(path) = spec.linux().as_ref().and_then(|l| l.cgroups_path().clone()) else {
            return Ok(CgroupTokens::default());
        };
        let placement = cgroup::Placement::new(&path.to_string_lossy());
        placement.create()?;
        let record = self.state_dir.join("cgroups");
        std::fs::create_dir_all(&record).map_err(io("recording the container cgroup"))?;
        let body = serde_json::to_vec(&placement)
            .map_err(|e| io("encoding the container cgroup")(std::io::Error::other(e)))?;
        std::fs::write(record.join(cid), body).map_err(io("recording the container cgroup"))?;
        if let Some(r) = spec.linux().as_ref().and_then(|l| l.resources().as_ref()) {
            placement.apply(r)?;
        }
        let mut files = Vec::new();
        for f in placement.procs_files() {
            files.push(OwnedFd::from(
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&f)
                    .map_err(io(format!("opening {}", f.display())))?,
            ));
        }
        let procs = crate::fdpass::new_token();
        let borrowed: Vec<BorrowedFd<'_>> = files.iter().map(|f| f.as_fd()).collect();
        crate::fdpass::send_fds(&self.fd_channel_path(), procs, &borrowed)?;

        let mut controllers = Vec::new();
        let mut dirs = Vec::new();
        for (controller, dir) in placement.limit_dirs() {
            let fd = nix::fcntl::open(
                &dir,
                nix::fcntl::OFlag::O_PATH
                    | nix::fcntl::OFlag::O_DIRECTORY
                    | nix::fcntl::OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            )
            .map_err(|e| io(format!("opening {}", dir.display()))(e.into()))?;
            controllers.push(controller);
            dirs.push(fd);
        }
        let limits = crate::fdpass::new_token();
        let borrowed: Vec<BorrowedFd<'_>> = dirs.iter().map(|f| f.as_fd()).collect();
        crate::fdpass::send_fds(&self.fd_channel_path(), limits, &borrowed)?;
        Ok(CgroupTokens {
            procs,
            limits,
            controllers,
        })
    }

    /// The cgroup of container `cid`, when it has one of its own.
    pub fn container_cgroup(&self, cid: &str) -> Option<cgroup::Placement> {
        let body = std::fs::read(self.state_dir.join("cgroups").join(cid)).ok()?;
        serde_json::from_slice(&body).ok()
    }

    /// Removes container `cid`'s cgroup (waiting for its processes to go)
    /// unless it is the sandbox's own.
    fn remove_container_cgroup(&self, cid: &str) -> Result<()> {
        let Some(placement) = self.container_cgroup(cid) else {
            return Ok(());
        };
        if self.cgroup.as_ref() != Some(&placement) {
            remove_cgroup(&placement)?;
        }
        let _ = std::fs::remove_file(self.state_dir.join("cgroups").join(cid));
        Ok(())
    }

    fn fetch_console(&self, token: u64) -> Result<Option<OwnedFd>> {
        if token == 0 {
            return Ok(None);
        }
        let mut fds = crate::fdpass::fetch_fds(&self.fd_channel_path(), token)?;
        Ok(fds.pop())
    }

    /// Runs `process` in container `cid`.
    pub fn exec(&self, cid: &str, process: &Process, stdio: Option<Stdio>) -> Result<Spawned> {
        let mut req = pb::ExecRequest::new();
        req.container_id = cid.to_string();
        req.process_json = serde_json::to_vec(process)
            .map_err(|e| ManagerError::InvalidArgument(format!("process: {e}")))?;
        if let Some(s) = stdio {
            req.stdio = Some(self.send_stdio(s)?).into();
        }
        let r = self
            .connect()?
            .exec(Self::ctx(Some(CALL_TIMEOUT)), &req)
            .map_err(|e| self.rpc_err(e))?;
        Ok(Spawned {
            pid: r.pid,
            console: self.fetch_console(r.console_token)?,
        })
    }

    /// Waits for container `cid` to exit. If the sandbox itself died, its
    /// own exit status stands for the container's.
    pub fn wait(&self, cid: &str) -> Result<ExitStatus> {
        let mut req = pb::ContainerRequest::new();
        req.container_id = cid.to_string();
        let rpc = self
            .connect()
            .and_then(|c| c.wait(Self::ctx(None), &req).map_err(|e| self.rpc_err(e)));
        match rpc {
            Ok(r) => Ok(ExitStatus {
                status: r.exit_status,
                exited_at_ns: r.exited_at_ns,
            }),
            Err(ManagerError::Rpc { code, message }) if code != ttrpc::Code::UNAVAILABLE => {
                Err(ManagerError::Rpc { code, message })
            }
            Err(e) => {
                log::warn!(
                    "sandbox {}: wait on container {cid} failed ({e}); waiting for the sandbox",
                    self.id
                );
                self.wait_sandbox(None)
            }
        }
    }

    /// Waits for process `pid` of container `cid`.
    pub fn wait_pid(&self, cid: &str, pid: u32, clear_status: bool) -> Result<ExitStatus> {
        let mut req = pb::WaitPidRequest::new();
        req.container_id = cid.to_string();
        req.pid = pid;
        req.clear_status = clear_status;
        let r = self
            .connect()?
            .wait_pid(Self::ctx(None), &req)
            .map_err(|e| self.rpc_err(e))?;
        Ok(ExitStatus {
            status: r.exit_status,
            exited_at_ns: r.exited_at_ns,
        })
    }

    /// Events after `after_seq`, waiting up to `timeout` for the first.
    pub fn events(&self, after_seq: u64, timeout: Duration) -> Result<Vec<pb::Event>> {
        let mut req = pb::EventsRequest::new();
        req.after_seq = after_seq;
        req.timeout_ms = timeout.as_millis().min(60_000) as u32;
        let r = self
            .connect()?
            .events(Self::ctx(Some(timeout + CALL_TIMEOUT)), &req)
            .map_err(|e| self.rpc_err(e))?;
        Ok(r.events)
    }

    /// Sends `signal` to processes of container `cid`.
    pub fn signal(&self, cid: &str, target: SignalTarget, signal: i32) -> Result<()> {
        let mut req = pb::SignalRequest::new();
        req.container_id = cid.to_string();
        req.signal = signal;
        let (mode, pid) = match target {
            SignalTarget::Process(p) => (pb::SignalMode::SIGNAL_PROCESS, p),
            SignalTarget::All => (pb::SignalMode::SIGNAL_ALL, 0),
            SignalTarget::ForegroundGroup(p) => (pb::SignalMode::SIGNAL_FOREGROUND_GROUP, p),
        };
        req.mode = mode.into();
        req.pid = pid;
        self.connect()?
            .signal(Self::ctx(Some(CALL_TIMEOUT)), &req)
            .map_err(|e| self.rpc_err(e))?;
        Ok(())
    }

    /// Lists the processes of container `cid`.
    pub fn processes(&self, cid: &str) -> Result<Vec<ProcessInfo>> {
        let mut req = pb::ContainerRequest::new();
        req.container_id = cid.to_string();
        let r = self
            .connect()?
            .processes(Self::ctx(Some(CALL_TIMEOUT)), &req)
            .map_err(|e| self.rpc_err(e))?;
        Ok(r.processes)
    }

    /// Resource usage of container `cid`.
    pub fn stats(&self, cid: &str) -> Result<pb::StatsResponse> {
        let mut req = pb::ContainerRequest::new();
        req.container_id = cid.to_string();
        self.connect()?
            .stats(Self::ctx(Some(CALL_TIMEOUT)), &req)
            .map_err(|e| self.rpc_err(e))
    }

    /// Pauses container `cid`.
    pub fn pause(&self, cid: &str) -> Result<()> {
        let mut req = pb::ContainerRequest::new();
        req.container_id = cid.to_string();
        self.connect()?
            .pause(Self::ctx(Some(CALL_TIMEOUT)), &req)
            .map_err(|e| self.rpc_err(e))?;
        Ok(())
    }

    /// Resumes container `cid`.
    pub fn resume(&self, cid: &str) -> Result<()> {
        let mut req = pb::ContainerRequest::new();
        req.container_id = cid.to_string();
        self.connect()?
            .resume(Self::ctx(Some(CALL_TIMEOUT)), &req)
            .map_err(|e| self.rpc_err(e))?;
        Ok(())
    }

    /// A text dump of the sandbox's state.
    pub fn stacks(&self) -> Result<String> {
        let r = self
            .connect()?
            .stacks(Self::ctx(Some(CALL_TIMEOUT)), &pb::Empty::new())
            .map_err(|e| self.rpc_err(e))?;
        Ok(r.text)
    }

    /// Destroys container `cid` (killing its processes) and unstages its
    /// files. Destroying the sandbox's only container does not destroy the
    /// sandbox; call [`Sandbox::destroy`] for that.
    pub fn destroy_container(&self, cid: &str) -> Result<()> {
        if self.is_running() {
            let mut req = pb::ContainerRequest::new();
            req.container_id = cid.to_string();
            match self.connect().and_then(|c| {
                c.destroy_container(Self::ctx(Some(CALL_TIMEOUT)), &req)
                    .map_err(|e| self.rpc_err(e))
            }) {
                Ok(_) => {}
                Err(ManagerError::Rpc {
                    code: ttrpc::Code::NOT_FOUND,
                    ..
                }) => {}
                Err(e) => return Err(e),
            }
        }
        stage::unmount_and_remove(&self.shared_dir().join(cid))?;
        self.remove_container_cgroup(cid)
    }

    /// True while the sandbox process exists and is not a zombie.
    pub fn is_running(&self) -> bool {
        if self.pid <= 0 || self.exit.lock().map(|e| e.is_some()).unwrap_or(false) {
            return false;
        }
        match std::fs::read_to_string(format!("/proc/{}/stat", self.pid)) {
            Ok(stat) => stat
                .rfind(')')
                .and_then(|i| stat[i + 1..].split_whitespace().next())
                .is_some_and(|state| state != "Z" && state != "X"),
            Err(_) => false,
        }
    }

    /// Waits (up to `timeout`, forever when None) for the sandbox process
    /// to exit and returns its status as a container status.
    pub fn wait_sandbox(&self, timeout: Option<Duration>) -> Result<ExitStatus> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            if let Some(status) = self.collect_exit() {
                return Ok(ExitStatus {
                    status: status as u32,
                    exited_at_ns: now_ns(),
                });
            }
            if !self.child && !self.is_running() {
                return Err(ManagerError::NotRunning(format!(
                    "{} (exit status unavailable: not our child)",
                    self.id
                )));
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(ManagerError::Io {
                    what: format!("sandbox {} did not exit in time", self.id),
                    source: std::io::Error::from(std::io::ErrorKind::TimedOut),
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Reaps the sandbox if it is our child and has exited; returns its
    /// status as a container status (code, or 128 + signal).
    fn collect_exit(&self) -> Option<i32> {
        let mut exit = self.exit.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = *exit {
            return Some(s);
        }
        if !self.child || self.pid <= 0 {
            return None;
        }
        use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
        let status = match waitpid(Pid::from_raw(self.pid), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => code,
            Ok(WaitStatus::Signaled(_, sig, _)) => 128 + sig as i32,
            // Someone else reaped it (a subreaper loop): it is gone.
            Err(nix::Error::ECHILD) => 128 + Signal::SIGKILL as i32,
            _ => return None,
        };
        *exit = Some(status);
        Some(status)
    }

    /// Kills the sandbox and everything in it, reaps it (bounded wait),
    /// and removes its mounts, cgroup, uid slot and state. Idempotent.
    pub fn destroy(&mut self) -> Result<()> {
        log::info!("sandbox {}: destroy", self.id);
        if self.pid > 0 {
            match nix::sys::signal::kill(Pid::from_raw(self.pid), Signal::SIGKILL) {
                Ok(()) | Err(nix::Error::ESRCH) => {}
                Err(e) => {
                    return Err(io(format!("killing sandbox {}", self.id))(e.into()));
                }
            }
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                let gone = if self.child {
                    self.collect_exit().is_some()
                } else {
                    !self.is_running()
                };
                if gone {
                    break;
                }
                if Instant::now() >= deadline {
                    return Err(ManagerError::Io {
                        what: format!("sandbox {} survived SIGKILL for 5s", self.id),
                        source: std::io::Error::from(std::io::ErrorKind::TimedOut),
                    });
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        stage::unmount_and_remove(&self.shared_dir())?;
        if let Ok(dir) = std::fs::read_dir(self.state_dir.join("cgroups")) {
            for e in dir.flatten() {
                self.remove_container_cgroup(&e.file_name().to_string_lossy())?;
            }
        }
        if let Some(cg) = &self.cgroup {
            remove_cgroup(cg)?;
        }
        if self.uid_slot != u32::MAX {
            UidPool::release(&self.state_root, self.uid_slot, &self.id);
        }
        match std::fs::remove_dir_all(&self.state_dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(format!("removing {}", self.state_dir.display()))(e)),
        }
        Ok(())
    }

    /// Host pid of the process the sandbox calls `sandbox_pid`, found among
    /// the sandbox's descendants.
    pub fn host_pid(&self, sandbox_pid: u32) -> Option<i32> {
        let mut todo = vec![self.pid];
        while let Some(p) = todo.pop() {
            let status = std::fs::read_to_string(format!("/proc/{p}/status")).ok()?;
            let nspid: Vec<u32> = status
                .lines()
                .find_map(|l| l.strip_prefix("NSpid:"))
                .map(|l| {
                    l.split_whitespace()
                        .filter_map(|x| x.parse().ok())
                        .collect()
                })
                .unwrap_or_default();
            if p != self.pid && nspid.get(1) == Some(&sandbox_pid) {
                return Some(p);
            }
            for t in std::fs::read_dir(format!("/proc/{p}/task")).ok()?.flatten() {
                let children =
                    std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
                todo.extend(
                    children
                        .split_whitespace()
                        .filter_map(|c| c.parse::<i32>().ok()),
                );
            }
        }
        None
    }
}

/// Removes a cgroup, waiting up to 5 s for its processes to die (they die
/// asynchronously after a SIGKILL).
fn remove_cgroup(cg: &cgroup::Placement) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match cg.remove() {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() >= deadline => return Err(e.into()),
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}
