//! The Task API (containerd's task v3 service) on top of the sandbox
//! manager, and the per-pod exit watcher.
//!
//! Calls never hold the state lock while they talk to the sandbox. Events
//! are queued under the lock, so their order is the order of the state
//! changes. Exits come from one watcher thread per pod that long-polls
//! the sandbox's events; each exit is finished (output drained, state
//! `Stopped`, waiters woken, TaskExit queued) on a thread of its own.
//!
//! The calls on a container's cgroup (Stats, Pause, Resume, Update) and
//! TaskOOM live in [`resources`].

mod resources;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use containerd_shim::api::{
    CloseIORequest, ConnectRequest, ConnectResponse, CreateTaskRequest, CreateTaskResponse,
    DeleteRequest, DeleteResponse, ExecProcessRequest, KillRequest, PidsRequest, PidsResponse,
    ResizePtyRequest, ShutdownRequest, StartRequest, StartResponse, StateRequest, StateResponse,
    StatsRequest, StatsResponse, WaitRequest, WaitResponse,
};
use containerd_shim::protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskIO, TaskStart,
};
use containerd_shim::protos::shim::oci::ProcessDetails;
use containerd_shim::protos::types::task::ProcessInfo;
use containerd_shim::{ExitSignal, TtrpcContext, TtrpcResult};
use oci_spec::runtime::Spec;
use protobuf::well_known_types::empty::Empty;
use runtime_control::control::EventKind;
use sandbox::manager::{ContainerStdio, RootfsMount, Sandbox, SignalTarget};

use crate::errors::TaskError;
use crate::events::{now_ns, timestamp_ns, EventQueue, TaskEvent};
use crate::io::{IoOwner, StdioConfig};
use crate::options::{self, RuntimeOptions};
use crate::pod::{self, BundleRecord, Pod};
use crate::resources::Cgroup;
use crate::state::{Container, Exit, Proc, ProcKey, State, Status};

/// How long an exit waits for the process's output to drain before it is
/// reported anyway (a background child may hold the output open).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one events long poll waits.
const EVENTS_POLL: Duration = Duration::from_secs(10);
/// How long Shutdown waits for queued events to reach containerd.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(3);

/// State shared by the Task service, the exit watchers and the finishers.
pub struct Shared {
    namespace: String,
    state: Mutex<State<Pod>>,
    /// Signalled on every process state change.
    cond: Condvar,
    events: EventQueue,
    exit: Arc<ExitSignal>,
    /// Serialises Create (sandbox creation and container staging).
    create_lock: Mutex<()>,
    /// Serialises Pause and Resume (and the thaw before a SIGKILL).
    pause_lock: Mutex<()>,
    /// The binary serving the sandbox (this shim).
    sandbox_binary: PathBuf,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State<Pod>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wait<'a>(&self, g: MutexGuard<'a, State<Pod>>) -> MutexGuard<'a, State<Pod>> {
        self.cond.wait(g).unwrap_or_else(|e| e.into_inner())
    }
}

/// containerd's Task service for the pods of this shim.
#[derive(Clone)]
pub struct TaskService {
    shared: Arc<Shared>,
}

fn unimplemented(what: &str) -> ttrpc::Error {
    ttrpc::Error::RpcStatus(ttrpc::get_status(
        ttrpc::Code::UNIMPLEMENTED,
        format!("{what} is not implemented by runsc-rs yet"),
    ))
}

fn label(cid: &str, exec_id: &str) -> String {
    if exec_id.is_empty() {
        format!("container {cid}")
    } else {
        format!("container {cid} exec {exec_id}")
    }
}

fn load_spec(cid: &str, bundle: &Path) -> Result<Spec, TaskError> {
    let path = bundle.join("config.json");
    let mut spec = Spec::load(&path).map_err(|e| {
        TaskError::InvalidArgument(format!("container {cid}: reading {}: {e}", path.display()))
    })?;
    if let Some(mut root) = spec.root().clone() {
        if root.path().is_relative() {
            root.set_path(bundle.join(root.path()));
            spec.set_root(Some(root));
        }
    }
    Ok(spec)
}

/// Exit status for a start that failed: 127 for a missing executable, as
/// shells report it; 126 otherwise.
fn start_failure_status(e: &TaskError) -> u32 {
    if e.code() == ttrpc::Code::NOT_FOUND {
        127
    } else {
        126
    }
}

impl TaskService {
    /// A Task service publishing through `events`; `exit` ends the shim.
    pub fn new(namespace: &str, exit: Arc<ExitSignal>, events: EventQueue) -> TaskService {
        // This very binary serves the sandbox. /proc/self/exe rather than
        // current_exe(): it still works after an upgrade replaced the file
        // (current_exe() then names a "(deleted)" path).
        let sandbox_binary = PathBuf::from("/proc/self/exe");
        TaskService {
            shared: Arc::new(Shared {
                namespace: namespace.to_string(),
                state: Mutex::new(State::default()),
                cond: Condvar::new(),
                events,
                exit,
                create_lock: Mutex::new(()),
                pause_lock: Mutex::new(()),
                sandbox_binary,
            }),
        }
    }

    fn do_create(&self, req: CreateTaskRequest) -> Result<CreateTaskResponse, TaskError> {
        let cid = req.id.clone();
        if !req.checkpoint.is_empty() {
            return Err(TaskError::Unimplemented(format!(
                "container {cid}: restoring from a checkpoint is not implemented yet"
            )));
        }
        let bundle = PathBuf::from(&req.bundle);
        let spec = load_spec(&cid, &bundle)?;
        let source = options::source_from_any(req.options.as_ref())?;
        let _creating = self
            .shared
            .create_lock
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let pod_id = pod::pod_id_of(&spec, &cid);
        let sandbox_id = pod::sandbox_id(&self.shared.namespace, &pod_id);
        let existing = {
            let st = self.shared.lock();
            if st.containers.contains_key(&cid) {
                return Err(TaskError::AlreadyExists(format!(
                    "container {cid} already exists"
                )));
            }
            st.pods
                .get(&pod_id)
                .map(|p| (p.sandbox.clone(), p.options.clone()))
        };
        let opts = match &existing {
            Some((_, o)) => o.clone(),
            None => RuntimeOptions::load(&source)?,
        };
        if opts.debug && log::max_level() < log::LevelFilter::Debug {
            log::set_max_level(log::LevelFilter::Debug);
        }
        if pod::is_privileged(&spec) && !opts.allow_privileged {
            return Err(TaskError::InvalidArgument(format!(
                "container {cid}: privileged containers are refused (set allow_privileged = true \
                 in the runtime options to accept them)"
            )));
        }
        log::info!(
            "container {cid}: create in pod {pod_id} (bundle {}, {} rootfs mounts{})",
            bundle.display(),
            req.rootfs.len(),
            if existing.is_some() {
                ""
            } else {
                ", new sandbox"
            }
        );
        let rootfs: Vec<RootfsMount> = req
            .rootfs
            .iter()
            .map(|m| RootfsMount {
                typ: m.type_.clone(),
                source: m.source.clone(),
                options: m.options.clone(),
            })
            .collect();
        let stdio_cfg = StdioConfig {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
        };
        let owner = IoOwner {
            container_id: cid.clone(),
            exec_id: String::new(),
            namespace: self.shared.namespace.clone(),
        };
        let (stdio, pio) = crate::io::setup(&owner, &stdio_cfg)
            .map_err(TaskError::io(format!("container {cid}: setting up stdio")))?;

        let (sandbox, new_pod) = match existing {
            Some((sb, _)) => (sb, false),
            None => {
                let cfg = opts.manager_config(
                    &sandbox_id,
                    self.shared.sandbox_binary.clone(),
                    pod::wants_host_network(&spec),
                );
                if let Some(dir) = cfg.log_path.as_deref().and_then(Path::parent) {
                    std::fs::create_dir_all(dir).map_err(|source| TaskError::Manager {
                        what: format!("container {cid}: creating the log directory"),
                        source: sandbox::manager::ManagerError::Io {
                            what: format!("creating {}", dir.display()),
                            source,
                        },
                    })?;
                }
                let what = format!("container {cid}: creating the sandbox of pod {pod_id}");
                let sb = match Sandbox::create(&cfg, &sandbox_id, &spec, None) {
                    // Left by a shim of this pod that died uncleaned: this
                    // shim is the pod's now (containerd found no live one at
                    // the pod's address), so that sandbox is an orphan.
                    Err(sandbox::manager::ManagerError::AlreadyExists(_)) => {
                        log::warn!(
                            "container {cid}: removing the orphaned sandbox {sandbox_id} of an \
                             earlier shim"
                        );
                        pod::destroy_sandbox(&opts.state_dir, &sandbox_id)
                            .map_err(TaskError::manager(what.clone()))?;
                        Sandbox::create(&cfg, &sandbox_id, &spec, None)
                    }
                    other => other,
                }
                .map_err(TaskError::manager(what))?;
                (Arc::new(sb), true)
            }
        };
        let created = sandbox.create_container(&cid, &spec, &rootfs, ContainerStdio::Fds(stdio));
        let sandbox_pid = match created {
            Ok(spawned) => {
                if let Some(master) = spawned.console {
                    pio.attach_console(master).map_err(TaskError::io(format!(
                        "container {cid}: attaching the terminal"
                    )))?;
                }
                spawned.pid
            }
            Err(e) => {
                if new_pod {
                    if let Err(d) = pod::destroy_sandbox(&opts.state_dir, &sandbox_id) {
                        log::warn!("container {cid}: removing the new sandbox {sandbox_id}: {d}");
                    }
                }
                return Err(TaskError::manager(format!("container {cid}: creating"))(e));
            }
        };
        let pid = sandbox
            .host_pid(sandbox_pid)
            .and_then(|p| u32::try_from(p).ok())
            .unwrap_or(sandbox_pid);
        let record = BundleRecord {
            pod_id: pod_id.clone(),
            sandbox_id: sandbox_id.clone(),
            state_dir: opts.state_dir.clone(),
            pid,
        };
        if let Err(e) = record.write(&bundle) {
            log::warn!("container {cid}: writing {}: {e}", pod::BUNDLE_RECORD);
        }

        let mut init = Proc::new("", stdio_cfg.clone());
        init.sandbox_pid = sandbox_pid;
        init.pid = pid;
        init.io = Some(Arc::new(pio));
        let mut container = Container::new(&cid, &pod_id, bundle.clone(), init);
        container.cgroup = sandbox.container_cgroup(&cid).map(Cgroup::new);
        container.oom_reported = container
            .cgroup
            .as_ref()
            .and_then(Cgroup::oom_kills)
            .unwrap_or(0);
        let cgroup = container.cgroup.clone();
        let mut st = self.shared.lock();
        st.add_container(container);
        if new_pod {
            let stop = Arc::new(AtomicBool::new(false));
            st.pods.insert(
                pod_id.clone(),
                Pod {
                    id: pod_id.clone(),
                    sandbox_id,
                    sandbox: sandbox.clone(),
                    options: opts,
                    stop: stop.clone(),
                },
            );
            spawn_watcher(self.shared.clone(), pod_id, sandbox, stop);
        }
        self.shared.events.send(TaskEvent::Create(TaskCreate {
            container_id: cid.clone(),
            bundle: req.bundle.clone(),
            rootfs: req.rootfs.clone(),
            io: Some(TaskIO {
                stdin: req.stdin,
                stdout: req.stdout,
                stderr: req.stderr,
                terminal: req.terminal,
                ..Default::default()
            })
            .into(),
            checkpoint: req.checkpoint,
            pid,
            ..Default::default()
        }));
        drop(st);
        match &cgroup {
            Some(cg) => self.start_oom_watch(&cid, cg),
            None => {
                log::info!("container {cid}: no cgroup of its own; its stats come from the sandbox")
            }
        }
        log::info!("container {cid}: created, pid {pid} (sandbox pid {sandbox_pid})");
        Ok(CreateTaskResponse {
            pid,
            ..Default::default()
        })
    }

    fn sandbox_of(&self, st: &State<Pod>, cid: &str) -> Result<Arc<Sandbox>, TaskError> {
        let c = st.container(cid)?;
        st.pods
            .get(&c.pod_id)
            .map(|p| p.sandbox.clone())
            .ok_or_else(|| {
                TaskError::NotFound(format!("container {cid}: its pod {} is gone", c.pod_id))
            })
    }

    fn do_start(&self, req: StartRequest) -> Result<StartResponse, TaskError> {
        let (cid, eid) = (req.id.as_str(), req.exec_id.as_str());
        let (sandbox, exec, exec_io) = {
            let mut st = self.shared.lock();
            let sandbox = self.sandbox_of(&st, cid)?;
            let p = st.container_mut(cid)?.process_mut(eid)?;
            p.begin_start(cid)?;
            let exec_io = p.io.clone();
            let exec = if eid.is_empty() {
                None
            } else {
                Some((p.spec.clone(), p.pending_stdio.take()))
            };
            (sandbox, exec, exec_io)
        };
        let result = match exec {
            None => sandbox
                .start_container(cid)
                .map(|_| None)
                .map_err(TaskError::manager(format!("starting container {cid}"))),
            Some((spec, stdio)) => match spec {
                Some(spec) => sandbox
                    .exec(cid, &spec, stdio)
                    .map(|spawned| {
                        if let (Some(master), Some(io)) = (spawned.console, &exec_io) {
                            if let Err(e) = io.attach_console(master) {
                                log::warn!("container {cid}: exec {eid}: terminal: {e}");
                            }
                        }
                        let spid = spawned.pid;
                        let pid = sandbox
                            .host_pid(spid)
                            .and_then(|p| u32::try_from(p).ok())
                            .unwrap_or(spid);
                        Some((spid, pid))
                    })
                    .map_err(TaskError::manager(format!("starting exec {eid}"))),
                None => Err(TaskError::InvalidArgument(format!(
                    "container {cid}: exec {eid} has no process spec"
                ))),
            },
        };
        let mut st = self.shared.lock();
        let proc = st.container_mut(cid).and_then(|c| c.process_mut(eid));
        let pid = match (proc, result) {
            (Ok(p), Ok(pids)) => {
                let (spid, pid) = pids.unwrap_or((p.sandbox_pid, p.pid));
                p.started(spid, pid);
                pid
            }
            (proc, Err(e)) => {
                if let Ok(p) = proc {
                    p.start_failed(start_failure_status(&e), now_ns());
                }
                self.shared.cond.notify_all();
                log::warn!(
                    "{}: start failed: {}",
                    label(cid, eid),
                    crate::errors::chain(&e)
                );
                return Err(e);
            }
            // Deleted while starting: nothing to report.
            (Err(gone), Ok(_)) => {
                self.shared.cond.notify_all();
                return Err(gone);
            }
        };
        self.shared.cond.notify_all();
        if eid.is_empty() {
            self.shared.events.send(TaskEvent::Start(TaskStart {
                container_id: cid.to_string(),
                pid,
                ..Default::default()
            }));
        } else {
            self.shared
                .events
                .send(TaskEvent::ExecStarted(TaskExecStarted {
                    container_id: cid.to_string(),
                    exec_id: eid.to_string(),
                    pid,
                    ..Default::default()
                }));
            let spid = st
                .container(cid)
                .and_then(|c| c.process(eid))
                .map(|p| p.sandbox_pid)
                .unwrap_or(0);
            if let Some(exit) = st.take_early_exit(cid, spid) {
                let recorded = st
                    .container_mut(cid)
                    .and_then(|c| c.process_mut(eid))
                    .map(|p| p.record_exit(exit))
                    .unwrap_or(false);
                if recorded {
                    spawn_finisher(self.shared.clone(), (cid.to_string(), eid.to_string()));
                }
            }
        }
        log::info!("{}: started, pid {pid}", label(cid, eid));
        Ok(StartResponse {
            pid,
            ..Default::default()
        })
    }

    fn do_state(&self, req: StateRequest) -> Result<StateResponse, TaskError> {
        let st = self.shared.lock();
        let c = st.container(&req.id)?;
        let p = c.process(&req.exec_id)?;
        let mut r = StateResponse {
            id: req.id.clone(),
            bundle: c.bundle.display().to_string(),
            pid: p.pid,
            status: c.api_status(p).into(),
            stdin: p.stdio.stdin.clone(),
            stdout: p.stdio.stdout.clone(),
            stderr: p.stdio.stderr.clone(),
            terminal: p.stdio.terminal,
            exec_id: req.exec_id.clone(),
            ..Default::default()
        };
        if let (Status::Stopped, Some(e)) = (p.status, p.exit) {
            r.exit_status = e.status;
            r.exited_at = Some(timestamp_ns(e.at_ns)).into();
        }
        Ok(r)
    }

    fn do_wait(&self, req: WaitRequest) -> Result<WaitResponse, TaskError> {
        let mut st = self.shared.lock();
        loop {
            let p = st.container(&req.id)?.process(&req.exec_id)?;
            if p.status == Status::Stopped {
                let e = p.exit_or(now_ns());
                return Ok(WaitResponse {
                    exit_status: e.status,
                    exited_at: Some(timestamp_ns(e.at_ns)).into(),
                    ..Default::default()
                });
            }
            st = self.shared.wait(st);
        }
    }

    fn do_kill(&self, req: KillRequest) -> Result<(), TaskError> {
        let (cid, eid) = (req.id.as_str(), req.exec_id.as_str());
        let signo = i32::try_from(req.signal)
            .map_err(|_| TaskError::InvalidArgument(format!("invalid signal {}", req.signal)))?;
        self.prepare_kill_while_paused(cid, signo)?;
        let (sandbox, target) = {
            let st = self.shared.lock();
            let sandbox = self.sandbox_of(&st, cid)?;
            let p = st.container(cid)?.process(eid)?;
            if p.status == Status::Stopped || p.exit.is_some() {
                if eid.is_empty() && req.all {
                    // The sandbox killed the rest of the container with its init.
                    return Ok(());
                }
                return Err(TaskError::NotFound(format!(
                    "{}: process already finished",
                    label(cid, eid)
                )));
            }
            let target = if eid.is_empty() {
                if req.all {
                    SignalTarget::All
                } else {
                    SignalTarget::Process(p.sandbox_pid)
                }
            } else {
                if p.status != Status::Running {
                    return Err(TaskError::FailedPrecondition(format!(
                        "{}: not started",
                        label(cid, eid)
                    )));
                }
                SignalTarget::Process(p.sandbox_pid)
            };
            (sandbox, target)
        };
        log::info!("{}: signal {signo} to {target:?}", label(cid, eid));
        sandbox
            .signal(cid, target, signo)
            .map_err(TaskError::manager(format!("{}: kill", label(cid, eid))))
    }

    fn do_delete(&self, req: DeleteRequest) -> Result<DeleteResponse, TaskError> {
        let (cid, eid) = (req.id.as_str(), req.exec_id.as_str());
        if !eid.is_empty() {
            let mut st = self.shared.lock();
            let c = st.container_mut(cid)?;
            c.process(eid)?.check_deletable(cid)?;
            let p = c.execs.remove(eid).ok_or_else(|| {
                TaskError::NotFound(format!("exec {eid} not found in container {cid}"))
            })?;
            self.shared.cond.notify_all();
            drop(st);
            if let Some(io) = &p.io {
                io.shutdown();
            }
            let e = p.exit_or(now_ns());
            log::info!("{}: deleted", label(cid, eid));
            return Ok(DeleteResponse {
                pid: p.pid,
                exit_status: e.status,
                exited_at: Some(timestamp_ns(e.at_ns)).into(),
                ..Default::default()
            });
        }

        let paused = {
            let st = self.shared.lock();
            let c = st.container(cid)?;
            c.init.check_deletable(cid)?;
            c.paused
        };
        if paused {
            // What is left of it must be able to die.
            if let Err(e) = self.unpause(cid, "thawed to be deleted") {
                log::warn!("{}", crate::errors::chain(&e));
            }
        }
        let (sandbox, last, teardown, pod_id) = {
            let st = self.shared.lock();
            let c = st.container(cid)?;
            c.init.check_deletable(cid)?;
            let pod = st.pods.get(&c.pod_id);
            (
                pod.map(|p| p.sandbox.clone()),
                st.is_last_of_pod(cid),
                pod.map(|p| (p.options.state_dir.clone(), p.sandbox_id.clone())),
                c.pod_id.clone(),
            )
        };
        if let Some(sb) = &sandbox {
            if let Err(e) = sb.destroy_container(cid) {
                let e = TaskError::manager(format!("container {cid}: destroying"))(e);
                if !last {
                    return Err(e);
                }
                // The whole sandbox goes next, and takes the container along.
                log::warn!("{}", crate::errors::chain(&e));
            }
        }
        if last {
            if let Some(p) = self.shared.lock().pods.get(&pod_id) {
                p.stop.store(true, Ordering::SeqCst);
            }
            if let Some((dir, sandbox_id)) = &teardown {
                log::info!("container {cid}: last of pod {pod_id}, destroying its sandbox");
                pod::destroy_sandbox(dir, sandbox_id).map_err(TaskError::manager(format!(
                    "container {cid}: destroying the sandbox of pod {pod_id}"
                )))?;
            }
        }
        let mut st = self.shared.lock();
        let (c, _pod) = st
            .remove_container(cid)
            .ok_or_else(|| TaskError::NotFound(format!("container {cid} not found")))?;
        let e = c.init.exit_or(now_ns());
        self.shared.events.send(TaskEvent::Delete(TaskDelete {
            container_id: cid.to_string(),
            pid: c.init.pid,
            exit_status: e.status,
            exited_at: Some(timestamp_ns(e.at_ns)).into(),
            id: cid.to_string(),
            ..Default::default()
        }));
        self.shared.cond.notify_all();
        drop(st);
        for p in std::iter::once(&c.init).chain(c.execs.values()) {
            if let Some(io) = &p.io {
                io.shutdown();
            }
        }
        log::info!("container {cid}: deleted");
        Ok(DeleteResponse {
            pid: c.init.pid,
            exit_status: e.status,
            exited_at: Some(timestamp_ns(e.at_ns)).into(),
            ..Default::default()
        })
    }

    fn do_exec(&self, req: ExecProcessRequest) -> Result<(), TaskError> {
        let (cid, eid) = (req.id.as_str(), req.exec_id.as_str());
        if eid.is_empty() {
            return Err(TaskError::InvalidArgument(format!(
                "container {cid}: exec id must not be empty"
            )));
        }
        let check = |st: &State<Pod>| -> Result<(), TaskError> {
            let c = st.container(cid)?;
            if c.execs.contains_key(eid) {
                return Err(TaskError::AlreadyExists(format!(
                    "exec {eid} already exists in container {cid}"
                )));
            }
            if c.init.status != Status::Running || c.init.exit.is_some() {
                return Err(TaskError::FailedPrecondition(format!(
                    "container {cid} is not running"
                )));
            }
            if c.paused {
                return Err(TaskError::FailedPrecondition(format!(
                    "container {cid} is paused: resume it first"
                )));
            }
            Ok(())
        };
        check(&self.shared.lock())?;
        let any = req.spec.as_ref().ok_or_else(|| {
            TaskError::InvalidArgument(format!("container {cid}: exec {eid} has no process spec"))
        })?;
        let mut spec: oci_spec::runtime::Process =
            serde_json::from_slice(&any.value).map_err(|e| {
                TaskError::InvalidArgument(format!(
                    "container {cid}: exec {eid}: bad process spec: {e}"
                ))
            })?;
        spec.set_terminal(Some(req.terminal));
        let stdio_cfg = StdioConfig {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
        };
        let owner = IoOwner {
            container_id: cid.to_string(),
            exec_id: eid.to_string(),
            namespace: self.shared.namespace.clone(),
        };
        let (stdio, pio) = crate::io::setup(&owner, &stdio_cfg).map_err(TaskError::io(format!(
            "{}: setting up stdio",
            label(cid, eid)
        )))?;
        let mut p = Proc::new(eid, stdio_cfg);
        p.spec = Some(spec);
        p.pending_stdio = Some(stdio);
        p.io = Some(Arc::new(pio));
        let mut st = self.shared.lock();
        check(&st)?;
        st.container_mut(cid)?.execs.insert(eid.to_string(), p);
        self.shared.events.send(TaskEvent::ExecAdded(TaskExecAdded {
            container_id: cid.to_string(),
            exec_id: eid.to_string(),
            ..Default::default()
        }));
        log::info!("{}: added", label(cid, eid));
        Ok(())
    }

    fn do_pids(&self, req: PidsRequest) -> Result<PidsResponse, TaskError> {
        let cid = req.id.as_str();
        self.check_sandbox_answers(cid, "listing its processes")?;
        let (sandbox, execs) = {
            let st = self.shared.lock();
            let sandbox = self.sandbox_of(&st, cid)?;
            let execs: HashMap<u32, String> = st
                .container(cid)?
                .execs
                .iter()
                .filter(|(_, p)| p.sandbox_pid != 0)
                .map(|(id, p)| (p.sandbox_pid, id.clone()))
                .collect();
            (sandbox, execs)
        };
        let procs = sandbox.processes(cid).map_err(TaskError::manager(format!(
            "container {cid}: listing processes"
        )))?;
        let mut out = Vec::with_capacity(procs.len());
        for p in procs {
            // Host pids, as Create and Start report them.
            let host = match p.host_pid {
                0 => sandbox
                    .host_pid(p.pid)
                    .and_then(|h| u32::try_from(h).ok())
                    .unwrap_or(p.pid),
                h => h,
            };
            let mut info = ProcessInfo {
                pid: host,
                ..Default::default()
            };
            if let Some(eid) = execs.get(&p.pid) {
                let details = ProcessDetails {
                    exec_id: eid.clone(),
                    ..Default::default()
                };
                match containerd_shim::util::convert_to_any(Box::new(details)) {
                    Ok(any) => info.info = Some(any).into(),
                    Err(e) => log::warn!("container {cid}: encoding process details: {e}"),
                }
            }
            out.push(info);
        }
        Ok(PidsResponse {
            processes: out,
            ..Default::default()
        })
    }

    fn with_io(
        &self,
        cid: &str,
        eid: &str,
        f: impl FnOnce(&crate::io::ProcessIo) -> Result<(), TaskError>,
    ) -> Result<(), TaskError> {
        let io = {
            let st = self.shared.lock();
            st.container(cid)?.process(eid)?.io.clone()
        };
        match io {
            Some(io) => f(&io),
            None => Err(TaskError::FailedPrecondition(format!(
                "{}: has no stdio",
                label(cid, eid)
            ))),
        }
    }
}

/// Starts the thread that turns pod `pod_id`'s sandbox events into exits.
fn spawn_watcher(
    shared: Arc<Shared>,
    pod_id: String,
    sandbox: Arc<Sandbox>,
    stop: Arc<AtomicBool>,
) {
    let name = format!("watch-{pod_id}");
    let spawned = std::thread::Builder::new()
        .name(name)
        .spawn(move || watch(&shared, &pod_id, &sandbox, &stop));
    if let Err(e) = spawned {
        log::error!("starting the exit watcher: {e}; exits will not be reported");
    }
}

fn watch(shared: &Arc<Shared>, pod_id: &str, sandbox: &Sandbox, stop: &AtomicBool) {
    let mut seq = 0u64;
    let mut failures = 0u32;
    loop {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        match sandbox.events(seq, EVENTS_POLL) {
            Ok(events) => {
                failures = 0;
                for ev in events {
                    seq = seq.max(ev.seq);
                    if ev.kind.enum_value_or_default() != EventKind::EVENT_EXIT {
                        continue;
                    }
                    log::info!(
                        "container {}: pid {} exited with status {}{}",
                        ev.container_id,
                        ev.pid,
                        ev.exit_status,
                        if ev.init { " (init)" } else { "" }
                    );
                    let exit = Exit {
                        status: ev.exit_status,
                        at_ns: ev.at_ns,
                    };
                    let key = shared
                        .lock()
                        .on_exit(&ev.container_id, ev.pid, ev.init, exit);
                    if let Some(key) = key {
                        spawn_finisher(shared.clone(), key);
                    }
                }
            }
            Err(e) => {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                if !sandbox.is_running() {
                    log::warn!(
                        "sandbox {pod_id}: the sandbox process is gone ({e}); \
                         every process of the pod is reported killed"
                    );
                    let keys = shared.lock().pod_died(pod_id, now_ns());
                    for key in keys {
                        spawn_finisher(shared.clone(), key);
                    }
                    return;
                }
                failures += 1;
                if failures == 1 || failures.is_multiple_of(50) {
                    log::warn!("sandbox {pod_id}: reading events (attempt {failures}): {e}");
                }
                std::thread::sleep(Duration::from_millis(u64::from(failures.min(10)) * 100));
            }
        }
    }
}

fn spawn_finisher(shared: Arc<Shared>, key: ProcKey) {
    let s2 = shared.clone();
    let k2 = key.clone();
    if let Err(e) = std::thread::Builder::new()
        .name("exit".into())
        .spawn(move || finish_exit(&s2, &k2))
    {
        log::warn!(
            "{}: no thread to finish the exit ({e}); finishing inline",
            label(&key.0, &key.1)
        );
        finish_exit(&shared, &key);
    }
}

/// Drains the process's output, then marks it Stopped, wakes waiters and
/// queues TaskExit.
fn finish_exit(shared: &Shared, (cid, eid): &ProcKey) {
    let io = {
        let st = shared.lock();
        match st.container(cid).and_then(|c| c.process(eid)) {
            Ok(p) => p.io.clone(),
            Err(_) => return,
        }
    };
    if let Some(io) = io {
        io.process_exited();
        if !io.wait_output(DRAIN_TIMEOUT) {
            log::warn!(
                "{}: output still open {DRAIN_TIMEOUT:?} after the exit (a child holds it?); \
                 reporting the exit anyway",
                label(cid, eid)
            );
        }
    }
    let mut st = shared.lock();
    loop {
        let p = match st.container_mut(cid).and_then(|c| c.process_mut(eid)) {
            Ok(p) => p,
            Err(_) => return,
        };
        if p.can_finish() {
            if p.finish_exit() {
                let (pid, e) = (p.pid, p.exit_or(now_ns()));
                // An OOM kill the watcher has not reported yet goes out
                // first: containerd reads TaskOOM before TaskExit as the
                // reason for the exit.
                resources::report_oom(shared, &mut st, cid);
                shared.events.send(TaskEvent::Exit(TaskExit {
                    container_id: cid.clone(),
                    id: if eid.is_empty() {
                        cid.clone()
                    } else {
                        eid.clone()
                    },
                    pid,
                    exit_status: e.status,
                    exited_at: Some(timestamp_ns(e.at_ns)).into(),
                    ..Default::default()
                }));
                log::info!("{}: exited with status {}", label(cid, eid), e.status);
            }
            break;
        }
        st = shared.wait(st);
    }
    shared.cond.notify_all();
}

impl containerd_shim::Task for TaskService {
    fn create(
        &self,
        _ctx: &TtrpcContext,
        req: CreateTaskRequest,
    ) -> TtrpcResult<CreateTaskResponse> {
        let cid = req.id.clone();
        self.do_create(req).map_err(|e| {
            log::warn!(
                "container {cid}: create failed: {}",
                crate::errors::chain(&e)
            );
            e.into()
        })
    }

    fn start(&self, _ctx: &TtrpcContext, req: StartRequest) -> TtrpcResult<StartResponse> {
        Ok(self.do_start(req)?)
    }

    fn state(&self, _ctx: &TtrpcContext, req: StateRequest) -> TtrpcResult<StateResponse> {
        Ok(self.do_state(req)?)
    }

    fn wait(&self, _ctx: &TtrpcContext, req: WaitRequest) -> TtrpcResult<WaitResponse> {
        Ok(self.do_wait(req)?)
    }

    fn kill(&self, _ctx: &TtrpcContext, req: KillRequest) -> TtrpcResult<Empty> {
        self.do_kill(req)?;
        Ok(Empty::new())
    }

    fn delete(&self, _ctx: &TtrpcContext, req: DeleteRequest) -> TtrpcResult<DeleteResponse> {
        let what = label(&req.id, &req.exec_id);
        self.do_delete(req).map_err(|e| {
            if e.code() != ttrpc::Code::NOT_FOUND {
                log::warn!("{what}: delete failed: {}", crate::errors::chain(&e));
            }
            e.into()
        })
    }

    fn exec(&self, _ctx: &TtrpcContext, req: ExecProcessRequest) -> TtrpcResult<Empty> {
        self.do_exec(req)?;
        Ok(Empty::new())
    }

    fn resize_pty(&self, _ctx: &TtrpcContext, req: ResizePtyRequest) -> TtrpcResult<Empty> {
        let what = label(&req.id, &req.exec_id);
        self.with_io(&req.id, &req.exec_id, |io| {
            io.resize(req.width, req.height)
                .map_err(TaskError::io(format!("{what}: resize")))
        })?;
        Ok(Empty::new())
    }

    fn close_io(&self, _ctx: &TtrpcContext, req: CloseIORequest) -> TtrpcResult<Empty> {
        if req.stdin {
            self.with_io(&req.id, &req.exec_id, |io| {
                io.close_stdin();
                Ok(())
            })?;
        }
        Ok(Empty::new())
    }

    fn pids(&self, _ctx: &TtrpcContext, req: PidsRequest) -> TtrpcResult<PidsResponse> {
        Ok(self.do_pids(req)?)
    }

    fn connect(&self, _ctx: &TtrpcContext, req: ConnectRequest) -> TtrpcResult<ConnectResponse> {
        let task_pid = {
            let st = self.shared.lock();
            st.containers.get(&req.id).map(|c| c.init.pid).unwrap_or(0)
        };
        Ok(ConnectResponse {
            shim_pid: std::process::id(),
            task_pid,
            version: env!("CARGO_PKG_VERSION").to_string(),
            ..Default::default()
        })
    }

    fn shutdown(&self, _ctx: &TtrpcContext, _req: ShutdownRequest) -> TtrpcResult<Empty> {
        let remaining = self.shared.lock().containers.len();
        if remaining > 0 {
            log::debug!("shutdown: {remaining} containers remain, staying up");
            return Ok(Empty::new());
        }
        if !self.shared.events.flush(FLUSH_TIMEOUT) {
            log::warn!("shutdown: events still queued after {FLUSH_TIMEOUT:?}; exiting anyway");
        }
        log::info!("shutdown: no containers left, exiting");
        self.shared.exit.signal();
        Ok(Empty::new())
    }

    fn pause(
        &self,
        _ctx: &TtrpcContext,
        req: containerd_shim::api::PauseRequest,
    ) -> TtrpcResult<Empty> {
        let cid = req.id.clone();
        self.do_pause(req).inspect_err(|e| {
            log::warn!("container {cid}: pause failed: {}", crate::errors::chain(e));
        })?;
        Ok(Empty::new())
    }

    fn resume(
        &self,
        _ctx: &TtrpcContext,
        req: containerd_shim::api::ResumeRequest,
    ) -> TtrpcResult<Empty> {
        let cid = req.id.clone();
        self.do_resume(req).inspect_err(|e| {
            log::warn!(
                "container {cid}: resume failed: {}",
                crate::errors::chain(e)
            );
        })?;
        Ok(Empty::new())
    }

    fn stats(&self, _ctx: &TtrpcContext, req: StatsRequest) -> TtrpcResult<StatsResponse> {
        Ok(self.do_stats(req)?)
    }

    fn update(
        &self,
        _ctx: &TtrpcContext,
        req: containerd_shim::api::UpdateTaskRequest,
    ) -> TtrpcResult<Empty> {
        let cid = req.id.clone();
        self.do_update(req).inspect_err(|e| {
            log::warn!(
                "container {cid}: update failed: {}",
                crate::errors::chain(e)
            );
        })?;
        Ok(Empty::new())
    }

    fn checkpoint(
        &self,
        _ctx: &TtrpcContext,
        _req: containerd_shim::api::CheckpointTaskRequest,
    ) -> TtrpcResult<Empty> {
        Err(unimplemented("Checkpoint"))
    }
}
