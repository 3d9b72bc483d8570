//! The Task calls on a container's cgroup — Stats, Pause, Resume, Update —
//! and TaskOOM, published by the container's OOM watcher or, at the
//! latest, just before a TaskExit of the container.
//!
//! A container whose spec names no cgroup of its own falls back on the
//! sandbox: its process counts for Stats, SIGSTOP and SIGCONT for Pause and
//! Resume; Update then fails.

use containerd_shim::api::{
    PauseRequest, ResumeRequest, StatsRequest, StatsResponse, UpdateTaskRequest,
};
use containerd_shim::protos::events::task::{TaskOOM, TaskPaused, TaskResumed};
use nix::sys::signal::Signal;
use sandbox::manager::cgroup::Placement;
use sandbox::manager::Sandbox;

use super::{Shared, TaskService};
use crate::errors::TaskError;
use crate::events::TaskEvent;
use crate::pod::Pod;
use crate::resources::freezer::{self, FREEZE_TIMEOUT};
use crate::resources::{metrics, oom, update, Cgroup};
use crate::state::State;

/// Publishes TaskOOM for container `cid` when its cgroup counts an OOM kill
/// not reported yet; returns whether it did. Called with the state lock
/// held, so that a TaskExit queued after it cannot overtake it.
pub(super) fn report_oom(shared: &Shared, st: &mut State<Pod>, cid: &str) -> bool {
    let Ok(c) = st.container_mut(cid) else {
        return false;
    };
    let count = c.cgroup.as_ref().and_then(Cgroup::oom_kills);
    let Some(n) = c.note_oom_kills(count) else {
        return false;
    };
    log::warn!("container {cid}: the OOM killer killed one of its processes ({n} so far)");
    shared.events.send(TaskEvent::Oom(TaskOOM {
        container_id: cid.to_string(),
        ..Default::default()
    }));
    true
}

/// Whether freezing `cg` stops the sandbox process too: its cgroup is the
/// container's or below it (the pause container of a CRI pod; a sandbox
/// created before pods of one got a cgroup of their own). The sandbox then
/// cannot answer until the container is thawed.
pub(super) fn freezes_sandbox(sandbox: &Sandbox, cg: &Cgroup) -> bool {
    sandbox
        .cgroup
        .as_ref()
        .is_some_and(|own| within(own, cg.placement()))
}

/// Whether cgroup `inner` is `outer` or one of its descendants.
fn within(inner: &Placement, outer: &Placement) -> bool {
    let top = outer.path.trim_end_matches('/');
    inner.root == outer.root
        && inner.v2 == outer.v2
        && (inner.path.trim_end_matches('/') == top || inner.path.starts_with(&format!("{top}/")))
}

impl TaskService {
    /// Starts the OOM watcher of container `cid`, whose cgroup is `cg`.
    /// Called once the container is in the state.
    pub(super) fn start_oom_watch(&self, cid: &str, cg: &Cgroup) {
        let shared = self.shared.clone();
        let id = cid.to_string();
        let on_oom: oom::OnOom = Box::new(move || {
            let mut st = shared.lock();
            report_oom(&shared, &mut st, &id)
        });
        let watch = match oom::watch(cg, cid, on_oom) {
            Ok(w) => w,
            Err(e) => {
                log::warn!(
                    "container {cid}: {}; OOM kills are reported at exit only",
                    crate::errors::chain(&e)
                );
                return;
            }
        };
        let mut st = self.shared.lock();
        if let Ok(c) = st.container_mut(cid) {
            log::debug!(
                "container {cid}: cgroup {} ({}), {} OOM kills before it started",
                cg.placement().path,
                if cg.is_v2() { "v2" } else { "v1" },
                c.oom_reported
            );
            c.oom_watch = Some(watch);
        }
        // Else it was deleted meanwhile: the watch stops as it is dropped.
    }

    pub(super) fn do_stats(&self, req: StatsRequest) -> Result<StatsResponse, TaskError> {
        let cid = req.id.as_str();
        let (cg, sandbox) = {
            let st = self.shared.lock();
            let c = st.container(cid)?;
            (c.cgroup.clone(), self.sandbox_of(&st, cid))
        };
        let any = match cg {
            Some(cg) => metrics::collect_any(&cg).map_err(TaskError::resource(format!(
                "container {cid}: reading the statistics of its cgroup"
            )))?,
            None => {
                let s = sandbox?.stats(cid).map_err(TaskError::manager(format!(
                    "container {cid}: reading its statistics from the sandbox"
                )))?;
                let v2 =
                    sandbox::manager::cgroup::host_is_v2(std::path::Path::new("/sys/fs/cgroup"));
                metrics::from_sandbox(&s, v2)
            }
        };
        Ok(StatsResponse {
            stats: Some(any).into(),
            ..Default::default()
        })
    }

    pub(super) fn do_pause(&self, req: PauseRequest) -> Result<(), TaskError> {
        let cid = req.id.as_str();
        let _serial = self
            .shared
            .pause_lock
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let (sandbox, cg) = {
            let st = self.shared.lock();
            let c = st.container(cid)?;
            c.check_pausable()?;
            (self.sandbox_of(&st, cid)?, c.cgroup.clone())
        };
        match &cg {
            Some(cg) => freezer::freeze(cg, FREEZE_TIMEOUT).map_err(TaskError::resource(
                format!("container {cid}: freezing its cgroup"),
            ))?,
            None => sandbox.pause(cid).map_err(TaskError::manager(format!(
                "container {cid}: pausing through the sandbox"
            )))?,
        }
        let mut st = self.shared.lock();
        st.container_mut(cid)?.paused = true;
        self.shared.events.send(TaskEvent::Paused(TaskPaused {
            container_id: cid.to_string(),
            ..Default::default()
        }));
        drop(st);
        self.shared.cond.notify_all();
        log::info!("container {cid}: paused");
        Ok(())
    }

    pub(super) fn do_resume(&self, req: ResumeRequest) -> Result<(), TaskError> {
        let cid = req.id.as_str();
        self.shared.lock().container(cid)?.check_resumable()?;
        self.unpause(cid, "resumed")
    }

    /// Thaws container `cid` if it is paused, and publishes TaskResumed;
    /// `why` goes into the log line.
    pub(super) fn unpause(&self, cid: &str, why: &str) -> Result<(), TaskError> {
        let _serial = self
            .shared
            .pause_lock
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let (sandbox, cg) = {
            let st = self.shared.lock();
            let c = st.container(cid)?;
            if !c.paused {
                return Ok(());
            }
            (self.sandbox_of(&st, cid)?, c.cgroup.clone())
        };
        match &cg {
            Some(cg) => freezer::thaw(cg, FREEZE_TIMEOUT).map_err(TaskError::resource(format!(
                "container {cid}: thawing its cgroup"
            )))?,
            None => sandbox.resume(cid).map_err(TaskError::manager(format!(
                "container {cid}: resuming through the sandbox"
            )))?,
        }
        let mut st = self.shared.lock();
        st.container_mut(cid)?.paused = false;
        self.shared.events.send(TaskEvent::Resumed(TaskResumed {
            container_id: cid.to_string(),
            ..Default::default()
        }));
        drop(st);
        self.shared.cond.notify_all();
        log::info!("container {cid}: {why}");
        Ok(())
    }

    /// What Kill does with a paused container before it signals: SIGKILL
    /// thaws it first (a frozen process cannot die, and a frozen sandbox
    /// cannot deliver); another signal is refused when the sandbox is
    /// frozen with the container, and queued otherwise.
    pub(super) fn prepare_kill_while_paused(&self, cid: &str, signo: i32) -> Result<(), TaskError> {
        let (sandbox, cg, paused) = {
            let st = self.shared.lock();
            let c = st.container(cid)?;
            (self.sandbox_of(&st, cid)?, c.cgroup.clone(), c.paused)
        };
        if !paused {
            return Ok(());
        }
        if signo == Signal::SIGKILL as i32 {
            return self.unpause(cid, "thawed to be killed");
        }
        match cg {
            Some(cg) if freezes_sandbox(&sandbox, &cg) => {
                Err(TaskError::FailedPrecondition(format!(
                    "container {cid} is paused, and its sandbox with it: resume it before \
                     sending signal {signo} (SIGKILL is accepted)"
                )))
            }
            _ => Ok(()),
        }
    }

    /// Refuses calls that need the sandbox's answer while the sandbox is
    /// frozen with container `cid`.
    pub(super) fn check_sandbox_answers(&self, cid: &str, what: &str) -> Result<(), TaskError> {
        let st = self.shared.lock();
        let c = st.container(cid)?;
        if !c.paused {
            return Ok(());
        }
        let frozen = match &c.cgroup {
            Some(cg) => freezes_sandbox(&*self.sandbox_of(&st, cid)?, cg),
            None => false,
        };
        if frozen {
            return Err(TaskError::FailedPrecondition(format!(
                "container {cid} is paused, and its sandbox with it: resume it before {what}"
            )));
        }
        Ok(())
    }

    pub(super) fn do_update(&self, req: UpdateTaskRequest) -> Result<(), TaskError> {
        let cid = req.id.as_str();
        let resources = update::decode(req.resources.as_ref())
            .map_err(|e| TaskError::InvalidArgument(format!("container {cid}: update: {e}")))?;
        let cg = {
            let st = self.shared.lock();
            let c = st.container(cid)?;
            if c.init.status == crate::state::Status::Stopped {
                return Err(TaskError::FailedPrecondition(format!(
                    "container {cid} has exited"
                )));
            }
            c.cgroup.clone().ok_or_else(|| {
                TaskError::FailedPrecondition(format!(
                    "container {cid} has no cgroup of its own (its spec names no cgroupsPath)"
                ))
            })?
        };
        update::apply(&cg, &resources).map_err(TaskError::resource(format!(
            "container {cid}: updating its resources"
        )))?;
        log::info!(
            "container {cid}: resources updated (memory limit {:?}, cpu quota {:?}, pids limit {:?})",
            resources.memory().as_ref().and_then(|m| m.limit()),
            resources.cpu().as_ref().and_then(|c| c.quota()),
            resources.pids().as_ref().map(|p| p.limit()),
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::sync::{Arc, Condvar, Mutex};
    use std::time::Duration;

    use crate::events::{EventQueue, Sink};
    use crate::resources::testing::FakeRoot;
    use crate::state::{Container, Exit, Proc};

    /// Records the topics it publishes.
    struct Recorder(Arc<Mutex<Vec<String>>>);

    impl Sink for Recorder {
        fn publish(&mut self, event: &TaskEvent, _timeout: Duration) -> Result<(), String> {
            self.0
                .lock()
                .unwrap()
                .push(format!("{}:{}", event.topic(), event.container_id()));
            Ok(())
        }
    }

    fn shared(seen: &Arc<Mutex<Vec<String>>>) -> Arc<Shared> {
        Arc::new(Shared {
            namespace: "ns".into(),
            state: Mutex::new(State::default()),
            cond: Condvar::new(),
            events: EventQueue::start(Recorder(seen.clone()), 16),
            exit: Arc::new(containerd_shim::ExitSignal::default()),
            create_lock: Mutex::new(()),
            pause_lock: Mutex::new(()),
            sandbox_binary: PathBuf::from("/proc/self/exe"),
        })
    }

    /// A running container `c1` in cgroup `root`, whose init has exited
    /// with `status` (its output drained: it has none).
    fn exited(root: &FakeRoot, status: u32, reported: u64) -> Container {
        let mut init = Proc::new("", crate::io::StdioConfig::default());
        init.begin_start("c1").unwrap();
        init.started(1, 100);
        init.record_exit(Exit { status, at_ns: 1 });
        let mut c = Container::new("c1", "c1", PathBuf::from("/b"), init);
        c.cgroup = Some(root.cgroup.clone());
        c.oom_reported = reported;
        c
    }

    #[test]
    fn an_unreported_oom_kill_goes_out_before_the_exit() {
        let root = FakeRoot::new(false);
        root.put(
            "memory",
            "memory.oom_control",
            "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n",
        );
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sh = shared(&seen);
        sh.lock().add_container(exited(&root, 137, 0));
        super::super::finish_exit(&sh, &("c1".into(), String::new()));
        assert!(sh.events.flush(Duration::from_secs(5)));
        assert_eq!(*seen.lock().unwrap(), ["/tasks/oom:c1", "/tasks/exit:c1"]);
        assert_eq!(sh.lock().container("c1").unwrap().oom_reported, 1);
    }

    #[test]
    fn a_reported_oom_kill_is_not_repeated() {
        let root = FakeRoot::new(true);
        root.put("memory", "memory.events", "oom 1\noom_kill 1\n");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sh = shared(&seen);
        sh.lock().add_container(exited(&root, 137, 0));
        // The watcher got there first.
        assert!(report_oom(&sh, &mut sh.lock(), "c1"));
        assert!(!report_oom(&sh, &mut sh.lock(), "c1"));
        super::super::finish_exit(&sh, &("c1".into(), String::new()));
        assert!(sh.events.flush(Duration::from_secs(5)));
        assert_eq!(*seen.lock().unwrap(), ["/tasks/oom:c1", "/tasks/exit:c1"]);
    }

    #[test]
    fn an_exit_without_oom_kill_is_plain() {
        let root = FakeRoot::new(false);
        root.put("memory", "memory.oom_control", "oom_kill 0\n");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sh = shared(&seen);
        sh.lock().add_container(exited(&root, 0, 0));
        super::super::finish_exit(&sh, &("c1".into(), String::new()));
        assert!(sh.events.flush(Duration::from_secs(5)));
        assert_eq!(*seen.lock().unwrap(), ["/tasks/exit:c1"]);
    }

    fn placement(path: &str) -> Placement {
        Placement {
            path: path.into(),
            v2: false,
            root: "/sys/fs/cgroup".into(),
        }
    }

    #[test]
    fn a_sandbox_freezes_with_its_own_cgroup_only() {
        assert!(within(&placement("/ns/c1"), &placement("/ns/c1")));
        assert!(within(&placement("/ns/c1/sandbox"), &placement("/ns/c1/")));
        assert!(!within(
            &placement("/kubepods/pod1/pause"),
            &placement("/kubepods/pod1/app")
        ));
        assert!(!within(&placement("/ns/c10"), &placement("/ns/c1")));
        let mut other_root = placement("/ns/c1");
        other_root.root = "/tmp/cg".into();
        assert!(!within(&other_root, &placement("/ns/c1")));
    }
}
