//! The runtime-control server inside the sandbox: containers, their
//! processes, exit statuses and events.
//!
//! One mutex guards [`State`]; a condition variable wakes waiters when the
//! reaper records an exit. Each container has its own PID namespace, so when
//! its init exits the kernel kills the rest of the container.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sched::CloneFlags;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use runtime_control::control as pb;
use ttrpc::{Code, TtrpcContext};

use crate::fdpass::FdStore;
use crate::init::{self, FailureKind, InitReply, InitRequest};

/// Token under which the stdio donated at boot is stored.
pub const BOOT_STDIO_TOKEN: u64 = u64::MAX;

/// Errors of the control server, each mapped to one ttrpc code.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// No container or process by that name.
    #[error("{0}")]
    NotFound(String),
    /// The request is malformed.
    #[error("{0}")]
    InvalidArgument(String),
    /// The container is not in a state that allows the call.
    #[error("{0}")]
    FailedPrecondition(String),
    /// A container with that id exists.
    #[error("{0}")]
    AlreadyExists(String),
    /// The call is not implemented.
    #[error("{0}")]
    Unimplemented(String),
    /// Something failed inside the sandbox.
    #[error("{0}")]
    Internal(String),
}

impl From<ServerError> for ttrpc::Error {
    fn from(e: ServerError) -> Self {
        let code = match &e {
            ServerError::NotFound(_) => Code::NOT_FOUND,
            ServerError::InvalidArgument(_) => Code::INVALID_ARGUMENT,
            ServerError::FailedPrecondition(_) => Code::FAILED_PRECONDITION,
            ServerError::AlreadyExists(_) => Code::ALREADY_EXISTS,
            ServerError::Unimplemented(_) => Code::UNIMPLEMENTED,
            ServerError::Internal(_) => Code::INTERNAL,
        };
        ttrpc::Error::RpcStatus(ttrpc::get_status(code, e.to_string()))
    }
}

type Result<T> = std::result::Result<T, ServerError>;

#[derive(Debug, Clone, Copy)]
struct Exit {
    status: u32,
    at_ns: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Created,
    Running,
    Paused,
    Stopped,
}

struct Container {
    init_pid: i32,
    status: Status,
    /// Socket to the init helper until the container has started.
    init_sock: Option<File>,
    /// The container's PID and mount namespaces, for execs.
    pidns: OwnedFd,
    mntns: Option<OwnedFd>,
    pidns_ino: u64,
    /// The PID namespace is another container's: the init is not its PID 1.
    shared_pidns: bool,
    /// The container cgroup's `cgroup.procs` files, joined by every helper.
    cgroup_procs: Arc<Vec<OwnedFd>>,
    /// Terminal of the init (a pty slave), for foreground-group signals.
    tty: Option<OwnedFd>,
    /// Pids of execs still tracked, with their terminals.
    execs: HashMap<i32, Option<OwnedFd>>,
    spec: oci_spec::runtime::Spec,
    /// The limits its processes are shown, when it has a cgroup.
    limits: Option<Arc<crate::limits::Limits>>,
}

#[derive(Default)]
struct State {
    containers: HashMap<String, Container>,
    /// Exit statuses by pid, for inits and execs.
    exits: HashMap<i32, Exit>,
    /// Which container a tracked pid belongs to.
    owner: HashMap<i32, String>,
    /// Pids whose creation is not yet confirmed: their exit is kept but
    /// not announced (a failed exec is an error, not an exit).
    pending: std::collections::HashSet<i32>,
    events: VecDeque<pb::Event>,
    seq: u64,
}

/// A pty master the sandbox made: its fd-channel token, and a copy kept
/// for foreground-group signals.
type Console = (u64, OwnedFd);

/// Most events kept for late readers.
const MAX_EVENTS: usize = 4096;

/// The control service.
#[derive(Clone)]
pub struct Server {
    state: Arc<(Mutex<State>, Condvar)>,
    fds: FdStore,
    /// Serialises spawning, which changes the spawning thread's namespaces.
    spawn_lock: Arc<Mutex<()>>,
    /// The limits view, when the sandbox could mount it.
    limits: Option<crate::limits::Service>,
}

/// What a helper answered when ready.
struct Ready {
    reply: Option<InitReply>,
    console: Option<Console>,
    /// Its limits listener (sched_getaffinity, sysinfo).
    listener: Option<OwnedFd>,
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

fn ns_inode(path: &str) -> std::io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    Ok(std::fs::metadata(path)?.ino())
}

fn open_ns(pid: i32, ns: &str) -> std::io::Result<OwnedFd> {
    Ok(File::open(format!("/proc/{pid}/ns/{ns}"))?.into())
}

fn internal(what: &str, e: impl std::fmt::Display) -> ServerError {
    ServerError::Internal(format!("{what}: {e}"))
}

impl Server {
    /// A server taking its descriptors from `fds`, showing containers
    /// their limits through `limits`.
    pub fn new(fds: FdStore, limits: Option<crate::limits::Service>) -> Self {
        Server {
            state: Arc::new((Mutex::new(State::default()), Condvar::new())),
            fds,
            spawn_lock: Arc::new(Mutex::new(())),
            limits,
        }
    }

    /// Starts showing container `cid` the limits of the cgroup whose
    /// directories were sent under `token`; returns them and the directory
    /// of its view files.
    fn add_limits(
        &self,
        cid: &str,
        token: u64,
        controllers: &[String],
    ) -> Result<Option<(Arc<crate::limits::Limits>, std::path::PathBuf)>> {
        let dirs = match token {
            0 => return Ok(None),
            t => self.fds.take(t).ok_or_else(|| {
                ServerError::InvalidArgument(format!(
                    "container {cid}: no descriptors were sent under limits token {t}"
                ))
            })?,
        };
        if dirs.len() != controllers.len() {
            return Err(ServerError::InvalidArgument(format!(
                "container {cid}: {} cgroup directories for {} controllers",
                dirs.len(),
                controllers.len()
            )));
        }
        let Some(service) = &self.limits else {
            return Ok(None);
        };
        let view = crate::limits::CgroupView::new(controllers.iter().cloned().zip(dirs).collect());
        Ok(Some(service.registry.add(cid, view)))
    }

    /// Answers the sched_getaffinity and sysinfo calls of a helper's
    /// processes.
    fn watch_affinity(
        &self,
        listener: Option<OwnedFd>,
        limits: Option<&Arc<crate::limits::Limits>>,
    ) {
        if let (Some(listener), Some(limits), Some(service)) = (listener, limits, &self.limits) {
            service.watcher.watch(listener, limits.clone());
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Held by the reaper while it collects children: std's spawn waits for
    /// a child whose exec failed, and must not find it already reaped.
    pub fn reap_guard(&self) -> MutexGuard<'_, ()> {
        self.spawn_lock.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records that `pid` exited with wait status `status`; called by the
    /// reaper for every child it collects.
    pub fn record_exit(&self, pid: i32, status: u32) {
        let mut st = self.lock();
        let Some(cid) = st.owner.get(&pid).cloned() else {
            log::debug!("reaped untracked pid {pid} (status {status})");
            return;
        };
        let exit = Exit {
            status,
            at_ns: now_ns(),
        };
        st.exits.insert(pid, exit);
        if !st.pending.contains(&pid) {
            Self::announce_exit(&mut st, &cid, pid, exit);
        }
        drop(st);
        self.state.1.notify_all();
    }

    /// Marks `pid` confirmed (`ok`) or forgets it; a confirmed pid that
    /// already exited is announced now.
    fn confirm(&self, pid: i32, cid: &str, ok: bool) {
        let mut st = self.lock();
        st.pending.remove(&pid);
        if ok {
            if let Some(exit) = st.exits.get(&pid).copied() {
                Self::announce_exit(&mut st, cid, pid, exit);
                // Wake the events long poll: the exit came before this.
                drop(st);
                self.state.1.notify_all();
            }
        } else {
            st.owner.remove(&pid);
            st.exits.remove(&pid);
        }
    }

    /// Updates the container for an exit and queues the event.
    fn announce_exit(st: &mut State, cid: &str, pid: i32, exit: Exit) {
        let status = exit.status;
        let mut is_init = false;
        if let Some(c) = st.containers.get_mut(cid) {
            if c.init_pid == pid {
                is_init = true;
                c.status = Status::Stopped;
                c.init_sock = None;
                c.mntns = None;
                c.tty = None;
                c.execs.clear();
                log::info!("container {cid}: init {pid} exited with status {status}");
            } else {
                c.execs.remove(&pid);
                log::info!("container {cid}: process {pid} exited with status {status}");
            }
        }
        st.seq += 1;
        let mut ev = pb::Event::new();
        ev.seq = st.seq;
        ev.kind = pb::EventKind::EVENT_EXIT.into();
        ev.container_id = cid.to_string();
        ev.pid = pid as u32;
        ev.init = is_init;
        ev.exit_status = status;
        ev.at_ns = exit.at_ns;
        st.events.push_back(ev);
        if st.events.len() > MAX_EVENTS {
            st.events.pop_front();
        }
    }

    fn take_stdio(&self, stdio: &pb::Stdio) -> Result<[OwnedFd; 3]> {
        let open_null = || -> Result<OwnedFd> {
            Ok(std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/null")
                .map_err(|e| internal("opening /dev/null", e))?
                .into())
        };
        if stdio.token == 0 {
            // /dev/null; with a terminal the helper replaces them by its pty.
            return Ok([open_null()?, open_null()?, open_null()?]);
        }
        let fds = self.fds.take(stdio.token).ok_or_else(|| {
            ServerError::InvalidArgument(format!(
                "no descriptors were sent under stdio token {}",
                stdio.token
            ))
        })?;
        let mut it = fds.into_iter();
        let mut next = || -> Result<OwnedFd> {
            match it.next() {
                Some(fd) => Ok(fd),
                None => open_null(),
            }
        };
        Ok([next()?, next()?, next()?])
    }

    /// The three descriptors for a helper's stdio; whether the helper is to
    /// make the terminal itself (a console); and, for a terminal sent by
    /// the host, a copy kept for foreground-group signals.
    fn open_stdio(&self, stdio: &pb::Stdio) -> Result<([OwnedFd; 3], bool, Option<OwnedFd>)> {
        let console = stdio.terminal && stdio.token == 0;
        let fds = self.take_stdio(stdio)?;
        let tty = if stdio.terminal && !console {
            Some(
                fds[0]
                    .try_clone()
                    .map_err(|e| internal("duplicating the terminal", e))?,
            )
        } else {
            None
        };
        Ok((fds, console, tty))
    }

    /// Spawns a helper (`runsc-init`) in `pidns` (a new one when `None`).
    fn spawn_helper(
        &self,
        role: init::Role,
        stdio: [OwnedFd; 3],
        pidns: Option<&OwnedFd>,
        mntns: Option<&OwnedFd>,
        cgroup_procs: &[OwnedFd],
    ) -> Result<(i32, File)> {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair()
            .map_err(|e| internal("creating the init socket", e))?;
        let theirs: OwnedFd = theirs.into();
        let theirs_raw = theirs.as_raw_fd();
        let mnt_raw = mntns.map(|f| f.as_raw_fd());
        let procs_raw: Vec<i32> = cgroup_procs.iter().map(|f| f.as_raw_fd()).collect();
        let [stdin, stdout, stderr] = stdio;
        let mut cmd = std::process::Command::new("/proc/self/exe");
        cmd.arg0("runsc-init")
            .arg(match role {
                init::Role::Container => "init",
                init::Role::Exec => "exec-init",
            })
            .env_clear()
            .stdin(stdin)
            .stdout(stdout)
            .stderr(stderr);
        // SAFETY: the closure only makes raw rt_sigaction, rt_sigprocmask,
        // write and dup2 calls, on descriptors that stay open in the parent
        // until spawn returns; it allocates nothing.
        unsafe {
            cmd.pre_exec(move || {
                // The sandbox blocks the signals its reaper waits for; the
                // container must start with none blocked or ignored.
                crate::reset_signals()?;
                // Join the container's cgroup before exec: every process
                // the helper becomes or starts is accounted there.
                for fd in &procs_raw {
                    if libc::write(*fd, b"0".as_ptr().cast(), 1) != 1 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                if libc::dup2(theirs_raw, init::INIT_SOCK_FD) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if let Some(m) = mnt_raw {
                    if libc::dup2(m, init::EXEC_MNTNS_FD) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let _guard = self.spawn_lock.lock().unwrap_or_else(|e| e.into_inner());
        // Namespaces for children are per thread: set them on a short-lived
        // thread so this one stays as it was.
        let child = std::thread::scope(|s| {
            s.spawn(|| -> Result<std::process::Child> {
                match pidns {
                    Some(ns) => nix::sched::setns(ns, CloneFlags::CLONE_NEWPID)
                        .map_err(|e| internal("joining the container's PID namespace", e))?,
                    None => nix::sched::unshare(CloneFlags::CLONE_NEWPID)
                        .map_err(|e| internal("creating a PID namespace", e))?,
                }
                cmd.spawn().map_err(|e| internal("starting runsc-init", e))
            })
            .join()
            .unwrap_or_else(|_| Err(ServerError::Internal("spawner thread panicked".into())))
        })?;
        drop(theirs);
        // The reaper collects the child; the handle is only dropped.
        Ok((child.id() as i32, File::from(OwnedFd::from(ours))))
    }

    /// Reads the helper's ready reply and, for a console, the pty master
    /// sent with it, stored on the fd channel under a new token.
    fn read_ready(&self, sock: &mut File, cid: &str, console: bool) -> Result<Ready> {
        let (body, fds) = init::read_msg_with_fds(sock)
            .map_err(|e| internal(&format!("container {cid}: reading init reply"), e))?;
        let reply = match body {
            None => None,
            Some(b) => Some(
                serde_json::from_slice::<InitReply>(&b)
                    .map_err(|e| internal(&format!("container {cid}: decoding init reply"), e))?,
            ),
        };
        let ok = reply.as_ref().is_some_and(|r| r.error.is_none());
        if !ok {
            return Ok(Ready {
                reply,
                console: None,
                listener: None,
            });
        }
        // In order: the pty master (for a console), the listener.
        let mut fds = fds.into_iter();
        let master = if console {
            Some(fds.next().ok_or_else(|| {
                ServerError::Internal(format!("container {cid}: the init sent no pty master"))
            })?)
        } else {
            None
        };
        let listener = if reply.as_ref().is_some_and(|r| r.listener) {
            fds.next()
        } else {
            None
        };
        let Some(master) = master else {
            return Ok(Ready {
                reply,
                console: None,
                listener,
            });
        };
        let keep = master
            .try_clone()
            .map_err(|e| internal("duplicating the pty master", e))?;
        let token = crate::fdpass::new_token();
        self.fds.insert(token, vec![master]);
        Ok(Ready {
            reply,
            console: Some((token, keep)),
            listener,
        })
    }

    fn read_reply(sock: &mut File, cid: &str) -> Result<Option<InitReply>> {
        match init::read_msg(sock) {
            Ok(None) => Ok(None),
            Ok(Some(body)) => serde_json::from_slice(&body)
                .map(Some)
                .map_err(|e| internal(&format!("container {cid}: decoding init reply"), e)),
            Err(e) => Err(internal(&format!("container {cid}: reading init reply"), e)),
        }
    }

    fn reply_error(cid: &str, what: &str, r: InitReply) -> ServerError {
        let msg = format!(
            "container {cid}: {what}: {}",
            r.error.unwrap_or_else(|| "unknown error".into())
        );
        match r.kind {
            Some(FailureKind::NotFound) => ServerError::NotFound(msg),
            Some(FailureKind::InvalidSpec) => ServerError::InvalidArgument(msg),
            _ => ServerError::Internal(msg),
        }
    }

    fn track(&self, pid: i32, cid: &str) {
        let mut st = self.lock();
        st.owner.insert(pid, cid.to_string());
        st.pending.insert(pid);
    }

    fn create(&self, req: pb::CreateContainerRequest) -> Result<(u32, u64)> {
        let cid = req.container_id.clone();
        if cid.is_empty() {
            return Err(ServerError::InvalidArgument("container id is empty".into()));
        }
        let spec: oci_spec::runtime::Spec = serde_json::from_slice(&req.spec_json)
            .map_err(|e| ServerError::InvalidArgument(format!("container {cid}: spec: {e}")))?;
        if spec.process().is_none() {
            return Err(ServerError::InvalidArgument(format!(
                "container {cid}: the spec has no process"
            )));
        }
        if self.lock().containers.contains_key(&cid) {
            return Err(ServerError::AlreadyExists(format!(
                "container {cid} already exists"
            )));
        }
        let stdio = req.stdio.clone().unwrap_or_default();
        let (fds, console, mut tty) = self.open_stdio(&stdio)?;
        // A PID namespace path (already in the sandbox's view) shares another
        // container's process namespace; otherwise the container gets its own.
        let shared_pidns = spec
            .linux()
            .as_ref()
            .and_then(|l| l.namespaces().as_ref())
            .and_then(|nss| {
                nss.iter()
                    .find(|n| n.typ() == oci_spec::runtime::LinuxNamespaceType::Pid)
                    .and_then(|n| n.path().clone())
            })
            .map(|p| {
                File::open(&p).map(OwnedFd::from).map_err(|e| {
                    ServerError::InvalidArgument(format!(
                        "container {cid}: PID namespace {}: {e}",
                        p.display()
                    ))
                })
            })
            .transpose()?;
        let cgroup_procs = Arc::new(match req.cgroup_token {
            0 => Vec::new(),
            t => self.fds.take(t).ok_or_else(|| {
                ServerError::InvalidArgument(format!(
                    "container {cid}: no descriptors were sent under cgroup token {t}"
                ))
            })?,
        });
        let limits = self.add_limits(&cid, req.limits_token, &req.limits_controllers)?;
        let forget_limits = || {
            if let Some(service) = &self.limits {
                service.registry.remove(&cid);
            }
        };
        let (pid, mut sock) = match self.spawn_helper(
            init::Role::Container,
            fds,
            shared_pidns.as_ref(),
            None,
            &cgroup_procs,
        ) {
            Ok(v) => v,
            Err(e) => {
                forget_limits();
                return Err(e);
            }
        };
        self.track(pid, &cid);
        let kill_helper = |pid: i32| {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
            self.confirm(pid, &cid, false);
            forget_limits();
        };
        let request = InitRequest {
            spec: spec.clone(),
            terminal: stdio.terminal,
            console,
            view: limits.as_ref().map(|(_, dir)| dir.clone()),
            affinity: limits.is_some(),
        };
        let limits = limits.map(|(l, _)| l);
        let body = serde_json::to_vec(&request).map_err(|e| internal("encoding the spec", e))?;
        if let Err(e) = init::write_msg(&mut sock, &body) {
            kill_helper(pid);
            return Err(internal(&format!("container {cid}: sending the spec"), e));
        }
        let mut console_token = 0;
        match self.read_ready(&mut sock, &cid, console) {
            Ok(Ready {
                reply: Some(r),
                console: master,
                listener,
            }) if r.error.is_none() => {
                if let Some((token, keep)) = master {
                    console_token = token;
                    tty = Some(keep);
                }
                self.watch_affinity(listener, limits.as_ref());
            }
            Ok(Ready { reply: Some(r), .. }) => {
                kill_helper(pid);
                return Err(Self::reply_error(&cid, "creating", r));
            }
            Ok(Ready { reply: None, .. }) => {
                kill_helper(pid);
                return Err(ServerError::Internal(format!(
                    "container {cid}: init exited while creating the container"
                )));
            }
            Err(e) => {
                kill_helper(pid);
                return Err(e);
            }
        }
        let ns = open_ns(pid, "pid").and_then(|p| {
            let m = open_ns(pid, "mnt")?;
            let ino = ns_inode(&format!("/proc/{pid}/ns/pid"))?;
            Ok((p, m, ino))
        });
        let (pidns, mntns, pidns_ino) = match ns {
            Ok(v) => v,
            Err(e) => {
                kill_helper(pid);
                return Err(internal(
                    &format!("container {cid}: opening its namespaces"),
                    e,
                ));
            }
        };
        let mut st = self.lock();
        st.containers.insert(
            cid.clone(),
            Container {
                init_pid: pid,
                status: Status::Created,
                init_sock: Some(sock),
                pidns,
                mntns: Some(mntns),
                pidns_ino,
                shared_pidns: shared_pidns.is_some(),
                cgroup_procs: cgroup_procs.clone(),
                tty,
                execs: HashMap::new(),
                spec,
                limits,
            },
        );
        drop(st);
        self.confirm(pid, &cid, true);
        log::info!("container {cid}: created, init pid {pid}");
        Ok((pid as u32, console_token))
    }

    fn start(&self, cid: &str) -> Result<u32> {
        let (pid, mut sock) = {
            let mut st = self.lock();
            let c = st
                .containers
                .get_mut(cid)
                .ok_or_else(|| ServerError::NotFound(format!("container {cid} not found")))?;
            if c.status != Status::Created {
                return Err(ServerError::FailedPrecondition(format!(
                    "container {cid} is not in the created state"
                )));
            }
            let sock = c.init_sock.take().ok_or_else(|| {
                ServerError::FailedPrecondition(format!("container {cid} is being started"))
            })?;
            (c.init_pid, sock)
        };
        init::write_msg(&mut sock, b"start")
            .map_err(|e| internal(&format!("container {cid}: sending start"), e))?;
        match Self::read_reply(&mut sock, cid)? {
            None => {
                let mut st = self.lock();
                if let Some(c) = st.containers.get_mut(cid) {
                    if c.status == Status::Created {
                        c.status = Status::Running;
                    }
                }
                log::info!("container {cid}: started, pid {pid}");
                Ok(pid as u32)
            }
            Some(r) => Err(Self::reply_error(cid, "starting", r)),
        }
    }

    fn exec(&self, req: pb::ExecRequest) -> Result<(u32, u64)> {
        let cid = req.container_id.as_str();
        let process: oci_spec::runtime::Process = serde_json::from_slice(&req.process_json)
            .map_err(|e| ServerError::InvalidArgument(format!("container {cid}: process: {e}")))?;
        let (pidns, mntns, mut spec, cgroup_procs, limits) = {
            let st = self.lock();
            let c = st
                .containers
                .get(cid)
                .ok_or_else(|| ServerError::NotFound(format!("container {cid} not found")))?;
            if !matches!(c.status, Status::Running | Status::Created) {
                return Err(ServerError::FailedPrecondition(format!(
                    "container {cid} is not running"
                )));
            }
            let mntns = c.mntns.as_ref().ok_or_else(|| {
                ServerError::FailedPrecondition(format!("container {cid} is not running"))
            })?;
            (
                c.pidns
                    .try_clone()
                    .map_err(|e| internal("duplicating a namespace", e))?,
                mntns
                    .try_clone()
                    .map_err(|e| internal("duplicating a namespace", e))?,
                c.spec.clone(),
                c.cgroup_procs.clone(),
                c.limits.clone(),
            )
        };
        spec.set_process(Some(process));
        let stdio = req.stdio.clone().unwrap_or_default();
        let (fds, console, mut tty) = self.open_stdio(&stdio)?;
        let (pid, mut sock) = self.spawn_helper(
            init::Role::Exec,
            fds,
            Some(&pidns),
            Some(&mntns),
            &cgroup_procs,
        )?;
        self.track(pid, cid);
        let request = InitRequest {
            spec,
            terminal: stdio.terminal,
            console,
            view: None,
            affinity: limits.is_some(),
        };
        let body = serde_json::to_vec(&request).map_err(|e| internal("encoding the spec", e))?;
        let mut console_token = 0;
        let result = init::write_msg(&mut sock, &body)
            .map_err(|e| internal(&format!("container {cid}: sending the exec"), e))
            .and_then(|()| self.read_ready(&mut sock, cid, console))
            .and_then(|ready| match ready.reply {
                Some(r) if r.error.is_none() => {
                    if let Some((token, keep)) = ready.console {
                        console_token = token;
                        tty = Some(keep);
                    }
                    self.watch_affinity(ready.listener, limits.as_ref());
                    Self::read_reply(&mut sock, cid)
                }
                other => Ok(other),
            });
        match result {
            Ok(None) => {
                let mut st = self.lock();
                let exited = st.exits.contains_key(&pid);
                if let Some(c) = st.containers.get_mut(cid) {
                    if !exited {
                        c.execs.insert(pid, tty);
                    }
                }
                drop(st);
                self.confirm(pid, cid, true);
                log::info!("container {cid}: exec started, pid {pid}");
                Ok((pid as u32, console_token))
            }
            Ok(Some(r)) => {
                let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
                self.confirm(pid, cid, false);
                if console_token != 0 {
                    self.fds.take(console_token);
                }
                Err(Self::reply_error(cid, "exec", r))
            }
            Err(e) => {
                let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
                self.confirm(pid, cid, false);
                Err(e)
            }
        }
    }

    fn wait_for(&self, cid: &str, pid: Option<i32>, clear: bool) -> Result<Exit> {
        let mut st = self.lock();
        loop {
            let target = match pid {
                Some(p) => p,
                None => {
                    st.containers
                        .get(cid)
                        .ok_or_else(|| ServerError::NotFound(format!("container {cid} not found")))?
                        .init_pid
                }
            };
            if st.owner.get(&target).map(String::as_str) != Some(cid) {
                return Err(ServerError::NotFound(format!(
                    "container {cid}: no process {target}"
                )));
            }
            if let Some(exit) = st.exits.get(&target).copied() {
                if clear {
                    st.exits.remove(&target);
                    st.owner.remove(&target);
                }
                return Ok(exit);
            }
            st = self.state.1.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn container_pids(&self, cid: &str) -> Result<Vec<i32>> {
        let (ino, shared, roots) = {
            let st = self.lock();
            let c = st
                .containers
                .get(cid)
                .ok_or_else(|| ServerError::NotFound(format!("container {cid} not found")))?;
            let mut roots = vec![c.init_pid];
            roots.extend(c.execs.keys());
            (c.pidns_ino, c.shared_pidns, roots)
        };
        if shared {
            // Others live in this namespace too: the container is its
            // init, its execs and their descendants.
            return Ok(descendants(&roots));
        }
        let mut pids = Vec::new();
        let dir = std::fs::read_dir("/proc").map_err(|e| internal("listing /proc", e))?;
        for entry in dir.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<i32>().ok())
            else {
                continue;
            };
            if ns_inode(&format!("/proc/{pid}/ns/pid")).ok() == Some(ino) {
                pids.push(pid);
            }
        }
        pids.sort_unstable();
        Ok(pids)
    }

    fn signal(&self, req: &pb::SignalRequest) -> Result<()> {
        let cid = req.container_id.as_str();
        let sig = Signal::try_from(req.signal).map_err(|_| {
            ServerError::InvalidArgument(format!("container {cid}: bad signal {}", req.signal))
        })?;
        let mode = req.mode.enum_value_or_default();
        if mode == pb::SignalMode::SIGNAL_ALL {
            for pid in self.container_pids(cid)? {
                let _ = nix::sys::signal::kill(Pid::from_raw(pid), sig);
            }
            log::info!("container {cid}: signal {sig} to all processes");
            return Ok(());
        }
        let st = self.lock();
        let c = st
            .containers
            .get(cid)
            .ok_or_else(|| ServerError::NotFound(format!("container {cid} not found")))?;
        let pid = if req.pid == 0 {
            c.init_pid
        } else {
            req.pid as i32
        };
        let alive = pid == c.init_pid && c.status != Status::Stopped || c.execs.contains_key(&pid);
        if !alive {
            return Err(ServerError::NotFound(format!(
                "container {cid}: no running process {pid}"
            )));
        }
        if mode == pb::SignalMode::SIGNAL_FOREGROUND_GROUP {
            let tty = if pid == c.init_pid {
                c.tty.as_ref()
            } else {
                c.execs.get(&pid).and_then(|t| t.as_ref())
            };
            if let Some(tty) = tty {
                if let Ok(pgrp) = nix::unistd::tcgetpgrp(tty.as_fd()) {
                    nix::sys::signal::killpg(pgrp, sig)
                        .map_err(|e| internal(&format!("container {cid}: killpg"), e))?;
                    return Ok(());
                }
            }
        }
        nix::sys::signal::kill(Pid::from_raw(pid), sig).map_err(|e| match e {
            nix::Error::ESRCH => {
                ServerError::NotFound(format!("container {cid}: no process {pid}"))
            }
            e => internal(&format!("container {cid}: kill {pid}"), e),
        })?;
        log::info!("container {cid}: signal {sig} to {pid}");
        Ok(())
    }

    fn processes(&self, cid: &str) -> Result<Vec<pb::Process>> {
        let mut out = Vec::new();
        for pid in self.container_pids(cid)? {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            // Fields after the command, which is in parentheses and may hold spaces.
            let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
                continue;
            };
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let mut p = pb::Process::new();
            p.pid = pid as u32;
            p.ppid = fields.get(1).and_then(|s| s.parse().ok()).unwrap_or(0);
            p.start_time = fields.get(19).and_then(|s| s.parse().ok()).unwrap_or(0);
            if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
                p.uid = status
                    .lines()
                    .find_map(|l| l.strip_prefix("Uid:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
            }
            p.cmd = std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|b| {
                    b.split(|c| *c == 0)
                        .filter(|s| !s.is_empty())
                        .map(|s| String::from_utf8_lossy(s).into_owned())
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_default();
            out.push(p);
        }
        Ok(out)
    }

    fn stats(&self, cid: &str) -> Result<pb::StatsResponse> {
        let pids = self.container_pids(cid)?;
        let mut r = pb::StatsResponse::new();
        // SAFETY: sysconf only reads a configuration value.
        let ticks = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).unwrap_or(100);
        for pid in &pids {
            if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
                r.memory_usage_bytes += status
                    .lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|l| l.split_whitespace().next())
                    .and_then(|s| s.parse::<u64>().ok())
                    .unwrap_or(0)
                    * 1024;
            }
            if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
                if let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) {
                    let f: Vec<&str> = rest.split_whitespace().collect();
                    let t: u64 = [11, 12]
                        .iter()
                        .filter_map(|i| f.get(*i).and_then(|s| s.parse::<u64>().ok()))
                        .sum();
                    r.cpu_usage_ns += t * 1_000_000_000 / ticks.max(1);
                }
            }
        }
        r.pids_current = pids.len() as u64;
        Ok(r)
    }

    fn pause_resume(&self, cid: &str, pause: bool) -> Result<()> {
        {
            let st = self.lock();
            let c = st
                .containers
                .get(cid)
                .ok_or_else(|| ServerError::NotFound(format!("container {cid} not found")))?;
            let ok = if pause {
                c.status == Status::Running
            } else {
                c.status == Status::Paused
            };
            if !ok {
                return Err(ServerError::FailedPrecondition(format!(
                    "container {cid} is not {}",
                    if pause { "running" } else { "paused" }
                )));
            }
        }
        let sig = if pause {
            Signal::SIGSTOP
        } else {
            Signal::SIGCONT
        };
        for pid in self.container_pids(cid)? {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), sig);
        }
        if let Some(c) = self.lock().containers.get_mut(cid) {
            if c.status != Status::Stopped {
                c.status = if pause {
                    Status::Paused
                } else {
                    Status::Running
                };
            }
        }
        log::info!(
            "container {cid}: {}",
            if pause { "paused" } else { "resumed" }
        );
        Ok(())
    }

    fn destroy(&self, cid: &str) -> Result<()> {
        let pid = {
            let st = self.lock();
            let c = st
                .containers
                .get(cid)
                .ok_or_else(|| ServerError::NotFound(format!("container {cid} not found")))?;
            (c.status != Status::Stopped).then_some(c.init_pid)
        };
        if let Some(pid) = pid {
            // The init is PID 1 of the container's own namespace: killing it
            // makes the kernel kill every other process there. In a shared
            // namespace the container's processes are killed one by one.
            for p in self.container_pids(cid).unwrap_or_default() {
                let _ = nix::sys::signal::kill(Pid::from_raw(p), Signal::SIGKILL);
            }
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
            let deadline = Instant::now() + Duration::from_secs(5);
            let mut st = self.lock();
            while !st.exits.contains_key(&pid) {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(ServerError::Internal(format!(
                        "container {cid}: init {pid} did not exit after SIGKILL"
                    )));
                }
                st = self
                    .state
                    .1
                    .wait_timeout(st, left)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
        }
        if let Some(service) = &self.limits {
            service.registry.remove(cid);
        }
        let mut st = self.lock();
        st.containers.remove(cid);
        let pids: Vec<i32> = st
            .owner
            .iter()
            .filter(|(_, c)| c.as_str() == cid)
            .map(|(p, _)| *p)
            .collect();
        for p in pids {
            st.owner.remove(&p);
            st.exits.remove(&p);
        }
        log::info!("container {cid}: destroyed");
        Ok(())
    }

    fn events(&self, after: u64, timeout: Duration) -> Vec<pb::Event> {
        let deadline = Instant::now() + timeout;
        let mut st = self.lock();
        loop {
            let out: Vec<pb::Event> = st
                .events
                .iter()
                .filter(|e| e.seq > after)
                .cloned()
                .collect();
            let left = deadline.saturating_duration_since(Instant::now());
            if !out.is_empty() || left.is_zero() {
                return out;
            }
            st = self
                .state
                .1
                .wait_timeout(st, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    fn stacks(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let st = self.lock();
        let _ = writeln!(s, "sandbox pid {} (pod view)", std::process::id());
        let mut ids: Vec<&String> = st.containers.keys().collect();
        ids.sort();
        for id in ids {
            let c = &st.containers[id];
            let _ = writeln!(
                s,
                "container {id}: {:?}, init {}, execs {:?}",
                c.status,
                c.init_pid,
                c.execs.keys().collect::<Vec<_>>()
            );
        }
        drop(st);
        if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
            for t in tasks.flatten() {
                let tid = t.file_name();
                let tid = tid.to_string_lossy();
                let comm = std::fs::read_to_string(format!("/proc/self/task/{tid}/comm"))
                    .unwrap_or_default();
                let wchan = std::fs::read_to_string(format!("/proc/self/task/{tid}/wchan"))
                    .unwrap_or_default();
                let _ = writeln!(s, "thread {tid} {}: {wchan}", comm.trim());
            }
        }
        s
    }
}

/// `roots` and every process below them.
fn descendants(roots: &[i32]) -> Vec<i32> {
    let mut out = Vec::new();
    let mut todo = roots.to_vec();
    while let Some(p) = todo.pop() {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) else {
            continue;
        };
        out.push(p);
        for t in tasks.flatten() {
            let children = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
            todo.extend(
                children
                    .split_whitespace()
                    .filter_map(|c| c.parse::<i32>().ok()),
            );
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

fn to_wait(e: Exit) -> pb::WaitResponse {
    let mut r = pb::WaitResponse::new();
    r.exit_status = e.status;
    r.exited_at_ns = e.at_ns;
    r
}

impl runtime_control::control_ttrpc::Control for Server {
    fn version(&self, _: &TtrpcContext, _: pb::Empty) -> ttrpc::Result<pb::VersionResponse> {
        let mut r = pb::VersionResponse::new();
        r.protocol = runtime_control::PROTOCOL_VERSION;
        r.build = env!("CARGO_PKG_VERSION").to_string();
        Ok(r)
    }

    fn create_container(
        &self,
        _: &TtrpcContext,
        req: pb::CreateContainerRequest,
    ) -> ttrpc::Result<pb::CreateContainerResponse> {
        let mut r = pb::CreateContainerResponse::new();
        (r.pid, r.console_token) = self.create(req)?;
        Ok(r)
    }

    fn start_container(
        &self,
        _: &TtrpcContext,
        req: pb::ContainerRequest,
    ) -> ttrpc::Result<pb::StartContainerResponse> {
        let mut r = pb::StartContainerResponse::new();
        r.pid = self.start(&req.container_id)?;
        Ok(r)
    }

    fn exec(&self, _: &TtrpcContext, req: pb::ExecRequest) -> ttrpc::Result<pb::ExecResponse> {
        let mut r = pb::ExecResponse::new();
        (r.pid, r.console_token) = Server::exec(self, req)?;
        Ok(r)
    }

    fn wait(&self, _: &TtrpcContext, req: pb::ContainerRequest) -> ttrpc::Result<pb::WaitResponse> {
        Ok(to_wait(self.wait_for(&req.container_id, None, false)?))
    }

    fn wait_pid(
        &self,
        _: &TtrpcContext,
        req: pb::WaitPidRequest,
    ) -> ttrpc::Result<pb::WaitResponse> {
        Ok(to_wait(self.wait_for(
            &req.container_id,
            Some(req.pid as i32),
            req.clear_status,
        )?))
    }

    fn events(
        &self,
        _: &TtrpcContext,
        req: pb::EventsRequest,
    ) -> ttrpc::Result<pb::EventsResponse> {
        let mut r = pb::EventsResponse::new();
        r.events = Server::events(
            self,
            req.after_seq,
            Duration::from_millis(u64::from(req.timeout_ms.min(60_000))),
        );
        Ok(r)
    }

    fn signal(&self, _: &TtrpcContext, req: pb::SignalRequest) -> ttrpc::Result<pb::Empty> {
        Server::signal(self, &req)?;
        Ok(pb::Empty::new())
    }

    fn processes(
        &self,
        _: &TtrpcContext,
        req: pb::ContainerRequest,
    ) -> ttrpc::Result<pb::ProcessesResponse> {
        let mut r = pb::ProcessesResponse::new();
        r.processes = Server::processes(self, &req.container_id)?;
        Ok(r)
    }

    fn stats(
        &self,
        _: &TtrpcContext,
        req: pb::ContainerRequest,
    ) -> ttrpc::Result<pb::StatsResponse> {
        Ok(Server::stats(self, &req.container_id)?)
    }

    fn pause(&self, _: &TtrpcContext, req: pb::ContainerRequest) -> ttrpc::Result<pb::Empty> {
        self.pause_resume(&req.container_id, true)?;
        Ok(pb::Empty::new())
    }

    fn resume(&self, _: &TtrpcContext, req: pb::ContainerRequest) -> ttrpc::Result<pb::Empty> {
        self.pause_resume(&req.container_id, false)?;
        Ok(pb::Empty::new())
    }

    fn checkpoint(&self, _: &TtrpcContext, _: pb::ContainerRequest) -> ttrpc::Result<pb::Empty> {
        Err(ServerError::Unimplemented("checkpoint is not implemented".into()).into())
    }

    fn restore(&self, _: &TtrpcContext, _: pb::ContainerRequest) -> ttrpc::Result<pb::Empty> {
        Err(ServerError::Unimplemented("restore is not implemented".into()).into())
    }

    fn destroy_container(
        &self,
        _: &TtrpcContext,
        req: pb::ContainerRequest,
    ) -> ttrpc::Result<pb::Empty> {
        self.destroy(&req.container_id)?;
        Ok(pb::Empty::new())
    }

    fn stacks(&self, _: &TtrpcContext, _: pb::Empty) -> ttrpc::Result<pb::StacksResponse> {
        let mut r = pb::StacksResponse::new();
        r.text = Server::stacks(self);
        Ok(r)
    }
}
