//! Task events to containerd: a bounded queue drained by one thread that
//! publishes each event with a timeout and a few retries.
//!
//! [`EventQueue::send`] never blocks and never panics: when the queue is full
//! (containerd not answering for a long while) the event is dropped with a
//! warning. Events leave in the order they were queued.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use containerd_shim::event::Event;
use containerd_shim::protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskOOM, TaskPaused,
    TaskResumed, TaskStart,
};
use containerd_shim::publisher::RemotePublisher;
use protobuf::well_known_types::timestamp::Timestamp;
use protobuf::MessageDyn;

/// Events waiting to be published, at most.
pub const QUEUE_CAPACITY: usize = 1024;
/// Time allowed for one publish call.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);
/// Publish attempts per event.
const ATTEMPTS: u32 = 3;

/// One task event.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskEvent {
    /// Task.Create succeeded.
    Create(TaskCreate),
    /// A container's init started.
    Start(TaskStart),
    /// A process (init or exec) exited.
    Exit(TaskExit),
    /// An exec was added (Task.Exec).
    ExecAdded(TaskExecAdded),
    /// An exec started.
    ExecStarted(TaskExecStarted),
    /// A task was deleted.
    Delete(TaskDelete),
    /// The OOM killer killed a process of the container.
    Oom(TaskOOM),
    /// The container was frozen (Task.Pause).
    Paused(TaskPaused),
    /// The container was thawed (Task.Resume).
    Resumed(TaskResumed),
}

impl TaskEvent {
    /// containerd's topic for the event.
    pub fn topic(&self) -> String {
        match self {
            TaskEvent::Create(e) => e.topic(),
            TaskEvent::Start(e) => e.topic(),
            TaskEvent::Exit(e) => e.topic(),
            TaskEvent::ExecAdded(e) => e.topic(),
            TaskEvent::ExecStarted(e) => e.topic(),
            TaskEvent::Delete(e) => e.topic(),
            TaskEvent::Oom(e) => e.topic(),
            TaskEvent::Paused(e) => e.topic(),
            TaskEvent::Resumed(e) => e.topic(),
        }
    }

    /// The container the event is about.
    pub fn container_id(&self) -> &str {
        match self {
            TaskEvent::Create(e) => &e.container_id,
            TaskEvent::Start(e) => &e.container_id,
            TaskEvent::Exit(e) => &e.container_id,
            TaskEvent::ExecAdded(e) => &e.container_id,
            TaskEvent::ExecStarted(e) => &e.container_id,
            TaskEvent::Delete(e) => &e.container_id,
            TaskEvent::Oom(e) => &e.container_id,
            TaskEvent::Paused(e) => &e.container_id,
            TaskEvent::Resumed(e) => &e.container_id,
        }
    }

    fn message(&self) -> Box<dyn MessageDyn> {
        match self.clone() {
            TaskEvent::Create(e) => Box::new(e),
            TaskEvent::Start(e) => Box::new(e),
            TaskEvent::Exit(e) => Box::new(e),
            TaskEvent::ExecAdded(e) => Box::new(e),
            TaskEvent::ExecStarted(e) => Box::new(e),
            TaskEvent::Delete(e) => Box::new(e),
            TaskEvent::Oom(e) => Box::new(e),
            TaskEvent::Paused(e) => Box::new(e),
            TaskEvent::Resumed(e) => Box::new(e),
        }
    }
}

/// A protobuf timestamp from Unix nanoseconds (now when 0 or negative).
pub fn timestamp_ns(ns: i64) -> Timestamp {
    let ns = if ns > 0 { ns } else { now_ns() };
    Timestamp {
        seconds: ns.div_euclid(1_000_000_000),
        nanos: ns.rem_euclid(1_000_000_000) as i32,
        ..Default::default()
    }
}

/// Unix time in nanoseconds.
pub fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Where queued events go.
pub trait Sink: Send + 'static {
    /// Publishes one event, giving up after `timeout`.
    fn publish(&mut self, event: &TaskEvent, timeout: Duration) -> Result<(), String>;
}

/// containerd's event service, reconnected after repeated failures.
pub struct ContainerdSink {
    publisher: Option<RemotePublisher>,
    namespace: String,
    ttrpc_address: String,
}

impl ContainerdSink {
    /// A sink publishing in `namespace` through `publisher`; `ttrpc_address`
    /// is where to reconnect when the connection breaks.
    pub fn new(publisher: RemotePublisher, namespace: &str, ttrpc_address: String) -> Self {
        ContainerdSink {
            publisher: Some(publisher),
            namespace: namespace.to_string(),
            ttrpc_address,
        }
    }
}

impl Sink for ContainerdSink {
    fn publish(&mut self, event: &TaskEvent, timeout: Duration) -> Result<(), String> {
        if self.publisher.is_none() && !self.ttrpc_address.is_empty() {
            self.publisher = Some(
                RemotePublisher::new(&self.ttrpc_address)
                    .map_err(|e| format!("reconnecting to {}: {e}", self.ttrpc_address))?,
            );
        }
        let Some(p) = &self.publisher else {
            return Err("no connection to containerd".into());
        };
        let ctx =
            ttrpc::context::with_timeout(i64::try_from(timeout.as_nanos()).unwrap_or(i64::MAX));
        match p.publish(ctx, &event.topic(), &self.namespace, event.message()) {
            Ok(()) => Ok(()),
            Err(e) => {
                // A broken connection stays broken: reconnect next time.
                self.publisher = None;
                Err(e.to_string())
            }
        }
    }
}

/// The sending side of the queue; cheap to clone.
#[derive(Clone)]
pub struct EventQueue {
    tx: SyncSender<TaskEvent>,
    /// Events queued and not yet handled (published or given up).
    pending: Arc<(Mutex<usize>, Condvar)>,
}

impl EventQueue {
    /// Starts the publishing thread with `sink` and a queue of `capacity`.
    pub fn start(sink: impl Sink, capacity: usize) -> EventQueue {
        let (tx, rx) = sync_channel(capacity);
        let pending = Arc::new((Mutex::new(0usize), Condvar::new()));
        let q = EventQueue {
            tx,
            pending: pending.clone(),
        };
        let spawned = std::thread::Builder::new()
            .name("events".into())
            .spawn(move || drain(rx, sink, pending));
        if let Err(e) = spawned {
            log::error!("starting the event publisher thread: {e}; events will be dropped");
        }
        q
    }

    /// Queues `event` without blocking; returns false (and logs) when it
    /// had to be dropped.
    pub fn send(&self, event: TaskEvent) -> bool {
        let (lock, _) = &*self.pending;
        *lock.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        let failed = match self.tx.try_send(event) {
            Ok(()) => return true,
            Err(TrySendError::Full(e)) => {
                log::warn!(
                    "container {}: event queue full ({} events), dropping {}",
                    e.container_id(),
                    QUEUE_CAPACITY,
                    e.topic()
                );
                e
            }
            Err(TrySendError::Disconnected(e)) => {
                log::warn!(
                    "container {}: event publisher is gone, dropping {}",
                    e.container_id(),
                    e.topic()
                );
                e
            }
        };
        drop(failed);
        self.done(1);
        false
    }

    fn done(&self, n: usize) {
        mark_done(&self.pending, n);
    }

    /// Waits up to `timeout` for every queued event to be handled; returns
    /// whether the queue emptied.
    pub fn flush(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let (lock, cond) = &*self.pending;
        let mut n = lock.lock().unwrap_or_else(|e| e.into_inner());
        while *n > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            n = cond
                .wait_timeout(n, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }
}

fn mark_done(pending: &(Mutex<usize>, Condvar), n: usize) {
    let (lock, cond) = pending;
    let mut p = lock.lock().unwrap_or_else(|e| e.into_inner());
    *p = p.saturating_sub(n);
    if *p == 0 {
        cond.notify_all();
    }
}

fn drain(rx: Receiver<TaskEvent>, mut sink: impl Sink, pending: Arc<(Mutex<usize>, Condvar)>) {
    for event in rx {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match sink.publish(&event, PUBLISH_TIMEOUT) {
                Ok(()) => {
                    log::debug!(
                        "container {}: published {}",
                        event.container_id(),
                        event.topic()
                    );
                    break;
                }
                Err(e) if attempt < ATTEMPTS => {
                    log::debug!(
                        "container {}: publishing {} (attempt {attempt}): {e}",
                        event.container_id(),
                        event.topic()
                    );
                    std::thread::sleep(Duration::from_millis(100 << attempt));
                }
                Err(e) => {
                    log::warn!(
                        "container {}: giving up publishing {} after {attempt} attempts: {e}",
                        event.container_id(),
                        event.topic()
                    );
                    break;
                }
            }
        }
        mark_done(&pending, 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::{channel, Sender};

    /// A sink that records topics, and blocks while `gate` holds `true`.
    struct TestSink {
        seen: Sender<String>,
        gate: Arc<(Mutex<bool>, Condvar)>,
        fail_first: u32,
    }

    impl Sink for TestSink {
        fn publish(&mut self, event: &TaskEvent, _timeout: Duration) -> Result<(), String> {
            let (lock, cond) = &*self.gate;
            let mut closed = lock.lock().unwrap();
            while *closed {
                closed = cond.wait(closed).unwrap();
            }
            if self.fail_first > 0 {
                self.fail_first -= 1;
                return Err("transient".into());
            }
            let _ = self
                .seen
                .send(format!("{}:{}", event.topic(), event.container_id()));
            Ok(())
        }
    }

    type Gate = Arc<(Mutex<bool>, Condvar)>;

    fn start(
        cap: usize,
        closed: bool,
        fail_first: u32,
    ) -> (EventQueue, std::sync::mpsc::Receiver<String>, Gate) {
        let (tx, rx) = channel();
        let gate = Arc::new((Mutex::new(closed), Condvar::new()));
        let q = EventQueue::start(
            TestSink {
                seen: tx,
                gate: gate.clone(),
                fail_first,
            },
            cap,
        );
        (q, rx, gate)
    }

    fn open(gate: &(Mutex<bool>, Condvar)) {
        *gate.0.lock().unwrap() = false;
        gate.1.notify_all();
    }

    fn start_event(id: &str) -> TaskEvent {
        TaskEvent::Start(TaskStart {
            container_id: id.into(),
            pid: 1,
            ..Default::default()
        })
    }

    #[test]
    fn events_arrive_in_order() {
        let (q, rx, _) = start(16, false, 0);
        q.send(TaskEvent::Create(TaskCreate {
            container_id: "a".into(),
            ..Default::default()
        }));
        q.send(start_event("a"));
        q.send(TaskEvent::Exit(TaskExit {
            container_id: "a".into(),
            ..Default::default()
        }));
        q.send(TaskEvent::Delete(TaskDelete {
            container_id: "a".into(),
            ..Default::default()
        }));
        assert!(q.flush(Duration::from_secs(5)));
        let got: Vec<String> = rx.try_iter().collect();
        assert_eq!(
            got,
            [
                "/tasks/create:a",
                "/tasks/start:a",
                "/tasks/exit:a",
                "/tasks/delete:a"
            ]
        );
    }

    #[test]
    fn full_queue_drops_without_blocking() {
        // The sink is stuck: one event is in its hands, `cap` wait in the queue.
        let cap = 4;
        let (q, rx, gate) = start(cap, true, 0);
        let t0 = Instant::now();
        let mut accepted = 0;
        for i in 0..100 {
            if q.send(start_event(&format!("c{i}"))) {
                accepted += 1;
            }
        }
        assert!(t0.elapsed() < Duration::from_secs(1), "send blocked");
        assert!(accepted <= cap + 1, "accepted {accepted}");
        assert!(accepted >= cap, "accepted {accepted}");
        assert!(!q.flush(Duration::from_millis(50)));
        open(&gate);
        assert!(q.flush(Duration::from_secs(5)));
        let got: Vec<String> = rx.try_iter().collect();
        assert_eq!(got.len(), accepted);
        assert_eq!(got[0], "/tasks/start:c0");
    }

    #[test]
    fn transient_failures_are_retried() {
        let (q, rx, _) = start(4, false, 2);
        q.send(start_event("x"));
        assert!(q.flush(Duration::from_secs(5)));
        assert_eq!(rx.try_iter().collect::<Vec<_>>(), ["/tasks/start:x"]);
    }

    #[test]
    fn persistent_failure_gives_up() {
        let (q, rx, _) = start(4, false, 100);
        q.send(start_event("x"));
        q.send(start_event("y"));
        assert!(q.flush(Duration::from_secs(10)));
        assert!(rx.try_iter().next().is_none());
    }

    #[test]
    fn timestamps() {
        let t = timestamp_ns(1_500_000_000_250);
        assert_eq!((t.seconds, t.nanos), (1500, 250));
        assert!(timestamp_ns(0).seconds > 1_600_000_000);
    }
}
