//! OOM kills in a container's cgroup: one watcher thread per container
//! wakes when the kernel reports an OOM and calls back, so that TaskOOM
//! goes out while the container still runs (when the killed process was
//! not its init).
//!
//! - cgroup v1: an eventfd registered for `memory.oom_control` through
//!   `cgroup.event_control`. The kernel signals it when the cgroup runs out
//!   of memory, slightly before the victim is chosen and counted, so the
//!   callback is retried for a moment until the `oom_kill` counter moves.
//!   It is also signalled when the cgroup is removed.
//! - cgroup v2: inotify on `memory.events`, which the kernel marks
//!   modified at every counter change (the `oom_kill` count included).
//!
//! The callback compares the counter with what was already reported
//! ([`crate::resources::Cgroup::oom_kills`]); the exit path makes the same
//! comparison before it publishes TaskExit, which is what guarantees
//! TaskOOM before TaskExit whatever this thread's timing.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

use super::{Cgroup, ResourceError};

/// How long after a v1 OOM notification the kill counter is watched for
/// the kill.
const COUNT_WINDOW: Duration = Duration::from_secs(1);
/// Interval of that watch.
const COUNT_INTERVAL: Duration = Duration::from_millis(10);

/// Called on each OOM notification; returns whether it found (and
/// reported) a new kill.
pub type OnOom = Box<dyn Fn() -> bool + Send + 'static>;

/// A running watcher; [`OomWatch::stop`] (or dropping it) ends its thread.
pub struct OomWatch {
    stop: Arc<EventFd>,
}

impl std::fmt::Debug for OomWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OomWatch").finish_non_exhaustive()
    }
}

impl OomWatch {
    /// Tells the thread to end; it does so without waiting for anything.
    pub fn stop(&self) {
        if let Err(e) = self.stop.write(1) {
            log::warn!("stopping an OOM watcher: {e}");
        }
    }
}

impl Drop for OomWatch {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What wakes the watcher.
enum Trigger {
    /// v1: the eventfd registered with cgroup.event_control, and the
    /// memory.oom_control file it watches (kept open while registered).
    V1 { event: EventFd, _control: File },
    /// v2: inotify on memory.events.
    V2(Inotify),
}

impl Trigger {
    fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Trigger::V1 { event, .. } => event.as_fd(),
            Trigger::V2(inotify) => inotify.as_fd(),
        }
    }
}

fn watch_err(path: std::path::PathBuf) -> impl FnOnce(std::io::Error) -> ResourceError {
    move |source| ResourceError::Watch { path, source }
}

fn arm(cg: &Cgroup) -> Result<Trigger, ResourceError> {
    let path = cg.oom_file();
    if cg.is_v2() {
        let inotify = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK)
            .map_err(|e| watch_err(path.clone())(e.into()))?;
        inotify
            .add_watch(&path, AddWatchFlags::IN_MODIFY)
            .map_err(|e| watch_err(path.clone())(e.into()))?;
        return Ok(Trigger::V2(inotify));
    }
    let control = File::open(&path).map_err(watch_err(path.clone()))?;
    let event = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
        .map_err(|e| watch_err(path.clone())(e.into()))?;
    let line = format!("{} {}", event.as_raw_fd(), control.as_raw_fd());
    cg.write("memory", "cgroup.event_control", &line)?;
    Ok(Trigger::V1 {
        event,
        _control: control,
    })
}

/// Starts watching `cg` for OOMs on behalf of container `cid`, calling
/// `on_oom` at each notification.
pub fn watch(cg: &Cgroup, cid: &str, on_oom: OnOom) -> Result<OomWatch, ResourceError> {
    let trigger = arm(cg)?;
    let stop = Arc::new(
        EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
            .map_err(|e| watch_err(cg.oom_file())(e.into()))?,
    );
    let (cg2, cid2, stop2) = (cg.clone(), cid.to_string(), stop.clone());
    std::thread::Builder::new()
        .name(format!("oom-{cid}"))
        .spawn(move || run(&cg2, &cid2, &trigger, &stop2, &on_oom))
        .map_err(watch_err(cg.oom_file()))?;
    Ok(OomWatch { stop })
}

fn run(cg: &Cgroup, cid: &str, trigger: &Trigger, stop: &EventFd, on_oom: &OnOom) {
    log::debug!(
        "container {cid}: watching {} for OOM kills",
        cg.oom_file().display()
    );
    loop {
        let mut fds = [
            PollFd::new(trigger.fd(), PollFlags::POLLIN),
            PollFd::new(stop.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                log::warn!(
                    "container {cid}: OOM watch failed: {e}; OOM kills are reported at exit only"
                );
                return;
            }
        }
        let ready = |fd: &PollFd| fd.revents().is_some_and(|r| !r.is_empty());
        if ready(&fds[1]) {
            return;
        }
        if !ready(&fds[0]) {
            continue;
        }
        match trigger {
            Trigger::V1 { event, .. } => {
                let _ = event.read();
                if !cg.exists() {
                    log::debug!("container {cid}: cgroup removed, OOM watch ends");
                    return;
                }
                // The notification precedes the kill: give the counter a
                // moment to move.
                let end = Instant::now() + COUNT_WINDOW;
                while !on_oom() && Instant::now() < end && !stopped(stop) {
                    std::thread::sleep(COUNT_INTERVAL);
                }
            }
            Trigger::V2(inotify) => {
                let events = inotify.read_events().unwrap_or_default();
                if events
                    .iter()
                    .any(|e| e.mask.contains(AddWatchFlags::IN_IGNORED))
                {
                    log::debug!("container {cid}: cgroup removed, OOM watch ends");
                    return;
                }
                on_oom();
            }
        }
    }
}

fn stopped(stop: &EventFd) -> bool {
    let mut fds = [PollFd::new(stop.as_fd(), PollFlags::POLLIN)];
    matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
}

#[cfg(test)]
mod tests {
    use super::super::testing::FakeRoot;
    use super::*;
    use std::sync::mpsc::channel;

    #[test]
    fn v2_wakes_on_memory_events_and_stops() {
        let r = FakeRoot::new(true);
        r.put("memory", "memory.events", "oom 0\noom_kill 0\n");
        let (tx, rx) = channel();
        let cg = r.cgroup.clone();
        let w = watch(
            &r.cgroup,
            "c1",
            Box::new(move || {
                let _ = tx.send(cg.oom_kills());
                true
            }),
        )
        .unwrap();
        r.put("memory", "memory.events", "oom 1\noom_kill 1\n");
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), Some(1));
        w.stop();
        drop(w);
        // The thread is gone: no more callbacks (its sender is dropped).
        let end = Instant::now() + Duration::from_secs(5);
        loop {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
                _ if Instant::now() > end => panic!("the watcher did not stop"),
                _ => {}
            }
        }
    }

    #[test]
    fn v2_ends_when_the_cgroup_goes() {
        let r = FakeRoot::new(true);
        r.put("memory", "memory.events", "oom_kill 0\n");
        let (tx, rx) = channel::<()>();
        let w = watch(
            &r.cgroup,
            "c1",
            Box::new(move || {
                let _ = tx.send(());
                false
            }),
        )
        .unwrap();
        std::fs::remove_file(r.cgroup.oom_file()).unwrap();
        let end = Instant::now() + Duration::from_secs(5);
        loop {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
                _ if Instant::now() > end => panic!("the watcher did not end"),
                _ => {}
            }
        }
        drop(w);
    }

    #[test]
    fn v1_registration_names_both_descriptors() {
        // On a fake tree cgroup.event_control is a plain file: the line
        // the kernel would parse is there to read.
        let r = FakeRoot::new(false);
        r.put("memory", "memory.oom_control", "oom_kill 0\n");
        r.put("memory", "cgroup.event_control", "");
        let w = watch(&r.cgroup, "c1", Box::new(|| false)).unwrap();
        let line = r.get("memory", "cgroup.event_control");
        let fds: Vec<i32> = line
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        assert_eq!(fds.len(), 2, "{line:?}");
        drop(w);
    }

    #[test]
    fn a_missing_cgroup_cannot_be_watched() {
        let r = FakeRoot::new(false);
        let e = watch(&r.cgroup, "c1", Box::new(|| false)).unwrap_err();
        assert!(matches!(e, ResourceError::Watch { .. }), "{e:?}");
    }
}
