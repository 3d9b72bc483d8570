//! What the shim knows about its containers and their processes, and the
//! rules for how a process's state may change.
//!
//! A process (a container's init or an exec) goes
//! `Created → Starting → Running → Stopped`; `Starting` covers the start
//! call to the sandbox, during which its exit may already be reported. An
//! exit is first *recorded* (status and time), then *finished* once the
//! process's output is drained: only then is it `Stopped`, Wait returns and
//! TaskExit goes out. Exits reported before the shim knows the process's
//! pid (an exec that ends before its start call returns) wait in
//! [`State::early_exits`].

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use containerd_shim::protos::types::task::Status as ApiStatus;
use sandbox::manager::Stdio;

use crate::errors::TaskError;
use crate::io::{ProcessIo, StdioConfig};
use crate::resources::oom::OomWatch;
use crate::resources::Cgroup;

/// Lifecycle of one process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Created, not started.
    Created,
    /// The start call is in flight.
    Starting,
    /// Started; it may have exited, its output still draining.
    Running,
    /// Exited, output drained.
    Stopped,
}

impl Status {
    /// containerd's view.
    pub fn api(self) -> ApiStatus {
        match self {
            Status::Created | Status::Starting => ApiStatus::CREATED,
            Status::Running => ApiStatus::RUNNING,
            Status::Stopped => ApiStatus::STOPPED,
        }
    }
}

/// An exit status and when it happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    /// Exit code, or 128 + signal.
    pub status: u32,
    /// Unix time in nanoseconds.
    pub at_ns: i64,
}

/// One process: a container's init (`exec_id` empty) or an exec.
#[derive(Debug)]
pub struct Proc {
    /// Exec id; empty for the init.
    pub exec_id: String,
    /// Pid in the sandbox's PID namespace; 0 until known.
    pub sandbox_pid: u32,
    /// Pid shown to containerd (the host pid when found, else the sandbox pid).
    pub pid: u32,
    /// Where it is in its lifecycle.
    pub status: Status,
    /// Its exit, once recorded.
    pub exit: Option<Exit>,
    /// The stdio containerd asked for.
    pub stdio: StdioConfig,
    /// The shim's side of its stdio.
    pub io: Option<Arc<ProcessIo>>,
    /// The sandbox's side of an exec's stdio, until it is started.
    pub pending_stdio: Option<Stdio>,
    /// An exec's process spec.
    pub spec: Option<oci_spec::runtime::Process>,
}

impl Proc {
    /// A created process.
    pub fn new(exec_id: &str, stdio: StdioConfig) -> Proc {
        Proc {
            exec_id: exec_id.to_string(),
            sandbox_pid: 0,
            pid: 0,
            status: Status::Created,
            exit: None,
            stdio,
            io: None,
            pending_stdio: None,
            spec: None,
        }
    }

    fn what(&self, cid: &str) -> String {
        if self.exec_id.is_empty() {
            format!("container {cid}")
        } else {
            format!("exec {} in container {cid}", self.exec_id)
        }
    }

    /// Created → Starting.
    pub fn begin_start(&mut self, cid: &str) -> Result<(), TaskError> {
        match self.status {
            Status::Created => {
                self.status = Status::Starting;
                Ok(())
            }
            Status::Starting => Err(TaskError::FailedPrecondition(format!(
                "{} is already starting",
                self.what(cid)
            ))),
            Status::Running => Err(TaskError::FailedPrecondition(format!(
                "{} is already started",
                self.what(cid)
            ))),
            Status::Stopped => Err(TaskError::FailedPrecondition(format!(
                "{} has already exited",
                self.what(cid)
            ))),
        }
    }

    /// Starting → Running, now with its pids.
    pub fn started(&mut self, sandbox_pid: u32, pid: u32) {
        if self.status == Status::Starting {
            self.status = Status::Running;
        }
        self.sandbox_pid = sandbox_pid;
        self.pid = pid;
    }

    /// Starting → Stopped: the start failed, so the process never ran;
    /// `status` is the exit status Wait reports (126, or 127 for a missing
    /// executable, as shells do).
    pub fn start_failed(&mut self, status: u32, at_ns: i64) {
        if self.status == Status::Starting {
            self.status = Status::Stopped;
            self.exit.get_or_insert(Exit { status, at_ns });
        }
    }

    /// Records an exit; false when one was recorded already.
    pub fn record_exit(&mut self, exit: Exit) -> bool {
        if self.exit.is_some() || self.status == Status::Stopped {
            return false;
        }
        self.exit = Some(exit);
        true
    }

    /// Whether `finish_exit` may run now (the start call has returned).
    pub fn can_finish(&self) -> bool {
        self.status != Status::Starting
    }

    /// Running (or Created) → Stopped once the exit is recorded and the
    /// output drained; returns whether the state changed.
    pub fn finish_exit(&mut self) -> bool {
        if self.exit.is_none() || self.status == Status::Stopped || !self.can_finish() {
            return false;
        }
        self.status = Status::Stopped;
        true
    }

    /// Whether it may be deleted now.
    pub fn check_deletable(&self, cid: &str) -> Result<(), TaskError> {
        match self.status {
            Status::Created | Status::Stopped => Ok(()),
            Status::Starting | Status::Running => Err(TaskError::FailedPrecondition(format!(
                "{} is running: kill it and wait for its exit first",
                self.what(cid)
            ))),
        }
    }

    /// The exit to report (status 0 and time `now_ns` if it never ran).
    pub fn exit_or(&self, now_ns: i64) -> Exit {
        self.exit.unwrap_or(Exit {
            status: 0,
            at_ns: now_ns,
        })
    }
}

/// One container of a pod.
#[derive(Debug)]
pub struct Container {
    /// Container id.
    pub id: String,
    /// The pod (sandbox) it belongs to.
    pub pod_id: String,
    /// Its bundle directory.
    pub bundle: PathBuf,
    /// Its init process.
    pub init: Proc,
    /// Its execs, by exec id.
    pub execs: HashMap<String, Proc>,
    /// Its own cgroup on the host, when its spec names one.
    pub cgroup: Option<Cgroup>,
    /// Frozen by Task.Pause and not resumed since.
    pub paused: bool,
    /// The cgroup's OOM kill count already reported with TaskOOM (its
    /// count at create, at first).
    pub oom_reported: u64,
    /// The thread watching its cgroup for OOM kills.
    pub oom_watch: Option<OomWatch>,
}

impl Container {
    /// A container with its init and no execs, cgroup or OOM watch yet.
    pub fn new(id: &str, pod_id: &str, bundle: PathBuf, init: Proc) -> Container {
        Container {
            id: id.to_string(),
            pod_id: pod_id.to_string(),
            bundle,
            init,
            execs: HashMap::new(),
            cgroup: None,
            paused: false,
            oom_reported: 0,
            oom_watch: None,
        }
    }

    /// The status containerd sees for `p`, one of this container's
    /// processes: PAUSED for a running init while the container is frozen.
    pub fn api_status(&self, p: &Proc) -> ApiStatus {
        if self.paused && p.exec_id.is_empty() && p.status == Status::Running {
            ApiStatus::PAUSED
        } else {
            p.status.api()
        }
    }

    /// Whether Task.Pause may freeze it: its init runs and it is not
    /// paused already.
    pub fn check_pausable(&self) -> Result<(), TaskError> {
        if self.paused {
            return Err(TaskError::FailedPrecondition(format!(
                "container {} is already paused",
                self.id
            )));
        }
        if self.init.status != Status::Running || self.init.exit.is_some() {
            return Err(TaskError::FailedPrecondition(format!(
                "container {} is not running",
                self.id
            )));
        }
        Ok(())
    }

    /// Whether Task.Resume may thaw it: it is paused.
    pub fn check_resumable(&self) -> Result<(), TaskError> {
        if self.paused {
            Ok(())
        } else {
            Err(TaskError::FailedPrecondition(format!(
                "container {} is not paused",
                self.id
            )))
        }
    }

    /// Takes the cgroup's OOM kill count `count`: returns it when it is
    /// above what was reported (a TaskOOM is due), and remembers it.
    pub fn note_oom_kills(&mut self, count: Option<u64>) -> Option<u64> {
        let n = count.filter(|n| *n > self.oom_reported)?;
        self.oom_reported = n;
        Some(n)
    }

    /// The process `exec_id` (the init when empty).
    pub fn process(&self, exec_id: &str) -> Result<&Proc, TaskError> {
        if exec_id.is_empty() {
            Ok(&self.init)
        } else {
            self.execs.get(exec_id).ok_or_else(|| {
                TaskError::NotFound(format!("exec {exec_id} not found in container {}", self.id))
            })
        }
    }

    /// The process `exec_id`, mutable.
    pub fn process_mut(&mut self, exec_id: &str) -> Result<&mut Proc, TaskError> {
        if exec_id.is_empty() {
            Ok(&mut self.init)
        } else {
            let id = self.id.clone();
            self.execs.get_mut(exec_id).ok_or_else(|| {
                TaskError::NotFound(format!("exec {exec_id} not found in container {id}"))
            })
        }
    }
}

/// Identifies a process: container id and exec id (empty for the init).
pub type ProcKey = (String, String);

/// Everything the shim tracks; `P` is what it keeps per pod.
#[derive(Debug)]
pub struct State<P> {
    /// Containers by id.
    pub containers: HashMap<String, Container>,
    /// Pods by id.
    pub pods: HashMap<String, P>,
    /// Members of each pod.
    pub members: HashMap<String, BTreeSet<String>>,
    /// Exits of (container, sandbox pid) not matched to a process yet, with
    /// when they came.
    pub early_exits: HashMap<(String, u32), (Exit, Instant)>,
}

impl<P> Default for State<P> {
    fn default() -> Self {
        State {
            containers: HashMap::new(),
            pods: HashMap::new(),
            members: HashMap::new(),
            early_exits: HashMap::new(),
        }
    }
}

/// Most unmatched exits kept per container (they are only ever execs whose
/// start call has not returned yet).
const MAX_EARLY_EXITS: usize = 256;
/// How long an unmatched exit may wait for its process. Its start call
/// returns within moments; an older one belongs to a process that never
/// became known (an exec whose start failed), and could otherwise be
/// matched to a later process that reuses the pid.
const EARLY_EXIT_TTL: Duration = Duration::from_secs(60);

impl<P> State<P> {
    /// Container `cid`.
    pub fn container(&self, cid: &str) -> Result<&Container, TaskError> {
        self.containers
            .get(cid)
            .ok_or_else(|| TaskError::NotFound(format!("container {cid} not found")))
    }

    /// Container `cid`, mutable.
    pub fn container_mut(&mut self, cid: &str) -> Result<&mut Container, TaskError> {
        self.containers
            .get_mut(cid)
            .ok_or_else(|| TaskError::NotFound(format!("container {cid} not found")))
    }

    /// Adds a container to its pod.
    pub fn add_container(&mut self, c: Container) {
        self.members
            .entry(c.pod_id.clone())
            .or_default()
            .insert(c.id.clone());
        self.containers.insert(c.id.clone(), c);
    }

    /// Removes a container; returns it and whether its pod is now empty
    /// (the pod's entry is then removed too and returned).
    pub fn remove_container(&mut self, cid: &str) -> Option<(Container, Option<P>)> {
        let c = self.containers.remove(cid)?;
        self.early_exits.retain(|(id, _), _| id != cid);
        let empty = match self.members.get_mut(&c.pod_id) {
            Some(m) => {
                m.remove(cid);
                m.is_empty()
            }
            None => true,
        };
        let pod = if empty {
            self.members.remove(&c.pod_id);
            self.pods.remove(&c.pod_id)
        } else {
            None
        };
        Some((c, pod))
    }

    /// Whether container `cid` is the last of its pod.
    pub fn is_last_of_pod(&self, cid: &str) -> bool {
        match self.containers.get(cid) {
            Some(c) => self.members.get(&c.pod_id).is_none_or(|m| m.len() <= 1),
            None => false,
        }
    }

    /// Records an exit reported by the sandbox: returns the process to
    /// finish, or None when no process matches (kept as an early exit when
    /// the container is known).
    pub fn on_exit(
        &mut self,
        cid: &str,
        sandbox_pid: u32,
        init: bool,
        exit: Exit,
    ) -> Option<ProcKey> {
        let c = self.containers.get_mut(cid)?;
        if init {
            return c
                .init
                .record_exit(exit)
                .then(|| (cid.to_string(), String::new()));
        }
        let found = c
            .execs
            .iter_mut()
            .find(|(_, p)| p.sandbox_pid == sandbox_pid && p.sandbox_pid != 0);
        match found {
            Some((eid, p)) => p.record_exit(exit).then(|| (cid.to_string(), eid.clone())),
            None => {
                let now = Instant::now();
                self.early_exits
                    .retain(|_, (_, at)| now.duration_since(*at) < EARLY_EXIT_TTL);
                if self.early_exits.len() < MAX_EARLY_EXITS * self.containers.len().max(1) {
                    self.early_exits
                        .insert((cid.to_string(), sandbox_pid), (exit, now));
                }
                None
            }
        }
    }

    /// The exit of (cid, sandbox pid) if it came before the pid was known.
    pub fn take_early_exit(&mut self, cid: &str, sandbox_pid: u32) -> Option<Exit> {
        self.early_exits
            .remove(&(cid.to_string(), sandbox_pid))
            .filter(|(_, at)| at.elapsed() < EARLY_EXIT_TTL)
            .map(|(e, _)| e)
    }

    /// The sandbox of `pod_id` died: records exit status 137 for every
    /// process of the pod that ran (or whose init was created); returns
    /// the processes to finish, execs before inits.
    pub fn pod_died(&mut self, pod_id: &str, at_ns: i64) -> Vec<ProcKey> {
        let killed = Exit { status: 137, at_ns };
        let mut execs = Vec::new();
        let mut inits = Vec::new();
        let ids: Vec<String> = self
            .members
            .get(pod_id)
            .map(|m| m.iter().cloned().collect())
            .unwrap_or_default();
        for cid in ids {
            let Some(c) = self.containers.get_mut(&cid) else {
                continue;
            };
            for (eid, p) in c.execs.iter_mut() {
                if matches!(p.status, Status::Starting | Status::Running) && p.record_exit(killed) {
                    execs.push((cid.clone(), eid.clone()));
                }
            }
            if c.init.status != Status::Stopped && c.init.record_exit(killed) {
                inits.push((cid.clone(), String::new()));
            }
        }
        execs.extend(inits);
        execs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(id: &str, pod: &str) -> Container {
        Container::new(
            id,
            pod,
            PathBuf::from("/b"),
            Proc::new("", StdioConfig::default()),
        )
    }

    fn exit(status: u32) -> Exit {
        Exit { status, at_ns: 1 }
    }

    #[test]
    fn init_lifecycle() {
        let mut p = Proc::new("", StdioConfig::default());
        assert_eq!(p.status.api(), ApiStatus::CREATED);
        assert!(p.check_deletable("c").is_ok());
        p.begin_start("c").unwrap();
        assert!(matches!(
            p.begin_start("c"),
            Err(TaskError::FailedPrecondition(_))
        ));
        p.started(5, 1005);
        assert_eq!((p.status, p.pid, p.sandbox_pid), (Status::Running, 1005, 5));
        assert!(matches!(
            p.begin_start("c"),
            Err(TaskError::FailedPrecondition(_))
        ));
        assert!(matches!(
            p.check_deletable("c"),
            Err(TaskError::FailedPrecondition(_))
        ));
        assert!(p.record_exit(exit(3)));
        assert!(!p.record_exit(exit(4)), "only the first exit counts");
        // Recorded but not drained: still running for containerd.
        assert_eq!(p.status.api(), ApiStatus::RUNNING);
        assert!(p.finish_exit());
        assert!(!p.finish_exit());
        assert_eq!(p.status, Status::Stopped);
        assert_eq!(p.exit.unwrap().status, 3);
        assert!(p.check_deletable("c").is_ok());
        assert!(matches!(
            p.begin_start("c"),
            Err(TaskError::FailedPrecondition(_))
        ));
    }

    #[test]
    fn exit_during_start_waits_for_start() {
        let mut p = Proc::new("", StdioConfig::default());
        p.begin_start("c").unwrap();
        assert!(p.record_exit(exit(0)));
        assert!(!p.can_finish());
        assert!(!p.finish_exit(), "no Stopped before the start returns");
        p.started(7, 7);
        assert_eq!(p.status, Status::Running);
        assert!(p.finish_exit());
    }

    #[test]
    fn failed_start_stops_with_status() {
        let mut p = Proc::new("e1", StdioConfig::default());
        p.begin_start("c").unwrap();
        p.start_failed(127, 9);
        assert_eq!(p.status, Status::Stopped);
        assert_eq!(
            p.exit,
            Some(Exit {
                status: 127,
                at_ns: 9
            })
        );
        assert!(p.check_deletable("c").is_ok());
    }

    #[test]
    fn exits_are_matched_or_kept_early() {
        let mut st: State<()> = State::default();
        let mut c = container("c1", "pod");
        let mut e = Proc::new("e1", StdioConfig::default());
        e.begin_start("c1").unwrap();
        c.execs.insert("e1".into(), e);
        st.add_container(c);

        // The exec's exit comes before its start call returned.
        assert_eq!(st.on_exit("c1", 42, false, exit(7)), None);
        assert_eq!(st.take_early_exit("c1", 42), Some(exit(7)));
        assert_eq!(st.take_early_exit("c1", 42), None);

        let e = st.container_mut("c1").unwrap().process_mut("e1").unwrap();
        e.started(43, 1043);
        assert_eq!(
            st.on_exit("c1", 43, false, exit(1)),
            Some(("c1".into(), "e1".into()))
        );
        assert_eq!(st.on_exit("c1", 43, false, exit(1)), None, "duplicate");
        assert_eq!(
            st.on_exit("c1", 1, true, exit(0)),
            Some(("c1".into(), String::new()))
        );
        assert_eq!(st.on_exit("nope", 1, true, exit(0)), None);
        assert!(!st.early_exits.contains_key(&("nope".into(), 1)));

        // A stale unmatched exit is never given to a later process.
        st.on_exit("c1", 50, false, exit(9));
        let entry = st.early_exits.get_mut(&("c1".into(), 50)).unwrap();
        if let Some(old) = entry.1.checked_sub(EARLY_EXIT_TTL) {
            entry.1 = old;
            assert_eq!(st.take_early_exit("c1", 50), None);
        }
    }

    #[test]
    fn pods_track_members() {
        let mut st: State<&'static str> = State::default();
        st.pods.insert("pod".into(), "sandbox");
        st.add_container(container("pause", "pod"));
        st.add_container(container("app", "pod"));
        assert!(!st.is_last_of_pod("app"));
        assert!(matches!(st.container("x"), Err(TaskError::NotFound(_))));
        let (c, pod) = st.remove_container("app").unwrap();
        assert_eq!(c.id, "app");
        assert_eq!(pod, None);
        assert!(st.is_last_of_pod("pause"));
        let (_, pod) = st.remove_container("pause").unwrap();
        assert_eq!(pod, Some("sandbox"));
        assert!(st.members.is_empty() && st.pods.is_empty());
        assert!(st.remove_container("pause").is_none());
    }

    #[test]
    fn pod_death_kills_everything_that_ran() {
        let mut st: State<()> = State::default();
        let mut a = container("a", "pod");
        a.init.begin_start("a").unwrap();
        a.init.started(1, 1);
        let mut running = Proc::new("run", StdioConfig::default());
        running.begin_start("a").unwrap();
        running.started(2, 2);
        a.execs.insert("run".into(), running);
        a.execs
            .insert("new".into(), Proc::new("new", StdioConfig::default()));
        st.add_container(a);
        let mut b = container("b", "pod");
        b.init.begin_start("b").unwrap();
        b.init.started(3, 3);
        b.init.record_exit(exit(0));
        b.init.finish_exit();
        st.add_container(b);
        st.add_container(container("other", "pod2"));

        let keys = st.pod_died("pod", 99);
        assert_eq!(
            keys,
            vec![("a".into(), "run".into()), ("a".into(), String::new())]
        );
        let a = st.container("a").unwrap();
        assert_eq!(
            a.init.exit,
            Some(Exit {
                status: 137,
                at_ns: 99
            })
        );
        assert_eq!(a.execs["new"].exit, None);
        assert_eq!(st.container("b").unwrap().init.exit.unwrap().status, 0);
        assert_eq!(st.container("other").unwrap().init.exit, None);
    }

    #[test]
    fn pause_and_resume_follow_the_init() {
        let mut c = container("c", "pod");
        assert!(matches!(
            c.check_pausable(),
            Err(TaskError::FailedPrecondition(_))
        ));
        c.init.begin_start("c").unwrap();
        c.init.started(1, 100);
        c.check_pausable().unwrap();
        assert!(matches!(
            c.check_resumable(),
            Err(TaskError::FailedPrecondition(_))
        ));
        assert_eq!(c.api_status(&c.init), ApiStatus::RUNNING);
        c.paused = true;
        assert_eq!(c.api_status(&c.init), ApiStatus::PAUSED);
        let exec = Proc::new("e", StdioConfig::default());
        assert_eq!(c.api_status(&exec), ApiStatus::CREATED);
        assert!(c.check_pausable().is_err(), "already paused");
        c.check_resumable().unwrap();
        // An init that exited is stopped, paused or not.
        c.init.record_exit(exit(137));
        c.init.finish_exit();
        assert_eq!(c.api_status(&c.init), ApiStatus::STOPPED);
        c.paused = false;
        assert!(c.check_pausable().is_err());
    }

    #[test]
    fn oom_kills_are_reported_once_each() {
        let mut c = container("c", "pod");
        c.oom_reported = 2;
        assert_eq!(c.note_oom_kills(None), None);
        assert_eq!(c.note_oom_kills(Some(2)), None, "seen at create");
        assert_eq!(c.note_oom_kills(Some(3)), Some(3));
        assert_eq!(c.note_oom_kills(Some(3)), None, "reported already");
        assert_eq!(c.note_oom_kills(Some(1)), None);
        assert_eq!(c.note_oom_kills(Some(5)), Some(5));
    }
}
