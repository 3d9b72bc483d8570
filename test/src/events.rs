//! containerd's events as `ctr events` prints them, recorded in the
//! background while a test drives a container.
//!
//! A line reads `2026-11-29 07:36:44.45 +0000 UTC runsc-test /tasks/start {"container_id":"x2","pid":23946}`:
//! timestamp, namespace, topic, and the event as JSON.

use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::command::{Input, Running};
use crate::ctr::{Ctr, CTR_TIMEOUT};
use crate::unique_id;

/// The namespace label a recorder sets to learn that its subscription is live.
const PROBE_LABEL: &str = "runsc-e2e-probe";
/// How long a recorder may take to see its own probe.
const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// Upper bound on a recording (the recorder is stopped long before).
const RECORDING_LIMIT: Duration = Duration::from_secs(3600);

/// One event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// containerd namespace it happened in.
    pub namespace: String,
    /// Topic, e.g. `/tasks/exit`.
    pub topic: String,
    /// The container it is about: `container_id`, or `id` for `/containers/*`.
    pub container_id: Option<String>,
    /// The event's fields.
    pub fields: Value,
}

impl Event {
    /// Parses one line of `ctr events`; None for anything else.
    pub fn parse(line: &str) -> Option<Event> {
        let json_at = line.find('{')?;
        let (head, json) = line.split_at(json_at);
        let fields: Value = serde_json::from_str(json.trim()).ok()?;
        let words: Vec<&str> = head.split_whitespace().collect();
        let topic_at = words.iter().position(|w| w.starts_with('/'))?;
        let topic = words[topic_at].to_string();
        let namespace = topic_at
            .checked_sub(1)
            .map(|i| words[i].to_string())
            .unwrap_or_default();
        let container_id = fields
            .get("container_id")
            .and_then(Value::as_str)
            .or_else(|| {
                topic
                    .starts_with("/containers/")
                    .then(|| fields.get("id").and_then(Value::as_str))
                    .flatten()
            })
            .map(str::to_string);
        Some(Event {
            namespace,
            topic,
            container_id,
            fields,
        })
    }

    /// A numeric field (e.g. `exit_status`), absent means 0 in protobuf's JSON.
    pub fn u64_field(&self, name: &str) -> u64 {
        self.fields.get(name).and_then(Value::as_u64).unwrap_or(0)
    }

    /// A text field (e.g. `exec_id`, `id`).
    pub fn str_field(&self, name: &str) -> Option<&str> {
        self.fields.get(name).and_then(Value::as_str)
    }
}

/// `ctr events` running in the background.
pub struct EventsRecorder {
    ctr: Ctr,
    running: Running,
}

impl EventsRecorder {
    /// Starts `ctr events` and returns once it is known to receive events
    /// (it has seen a namespace label update it made itself).
    #[track_caller]
    pub fn start(ctr: &Ctr) -> EventsRecorder {
        let running = ctr.spawn(&["events"], Input::Null, RECORDING_LIMIT);
        let recorder = EventsRecorder {
            ctr: ctr.clone(),
            running,
        };
        let probe = unique_id("probe");
        let label = format!("{PROBE_LABEL}={probe}");
        let end = Instant::now() + READY_TIMEOUT;
        while Instant::now() < end {
            ctr.ok(&["namespaces", "label", &ctr.namespace, &label]);
            let seen = recorder.wait_for(Duration::from_millis(500), |e| {
                e.topic == "/namespaces/update"
                    && e.fields
                        .pointer(&format!("/labels/{PROBE_LABEL}"))
                        .and_then(Value::as_str)
                        == Some(&probe)
            });
            if seen.is_some() {
                return recorder;
            }
        }
        let out = recorder.running.stop();
        panic!(
            "`ctr events` did not report a namespace update within {READY_TIMEOUT:?}: {}",
            out.describe()
        );
    }

    /// The events received so far.
    pub fn events(&self) -> Vec<Event> {
        String::from_utf8_lossy(&self.running.stdout_so_far())
            .lines()
            .filter_map(Event::parse)
            .collect()
    }

    /// Waits for an event matching `pred`; None after `timeout`.
    pub fn wait_for(&self, timeout: Duration, pred: impl Fn(&Event) -> bool) -> Option<Event> {
        let end = Instant::now() + timeout;
        loop {
            if let Some(e) = self.events().into_iter().find(&pred) {
                return Some(e);
            }
            if Instant::now() >= end {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for an event of `topic` about `container_id`.
    pub fn wait_for_topic(
        &self,
        container_id: &str,
        topic: &str,
        timeout: Duration,
    ) -> Option<Event> {
        self.wait_for(timeout, |e| {
            e.topic == topic && e.container_id.as_deref() == Some(container_id)
        })
    }

    /// Stops `ctr events` and returns every event it received.
    pub fn stop(self) -> Vec<Event> {
        let out = self.running.stop();
        // Remove the probe label (an empty value deletes it); failures do not matter.
        let label = format!("{PROBE_LABEL}=");
        let _ = self.ctr.try_run(
            &["namespaces", "label", &self.ctr.namespace, &label],
            Input::Null,
            CTR_TIMEOUT,
        );
        out.stdout_str().lines().filter_map(Event::parse).collect()
    }
}

/// The events about `container_id`, in order.
pub fn events_of(events: &[Event], container_id: &str) -> Vec<Event> {
    events
        .iter()
        .filter(|e| e.container_id.as_deref() == Some(container_id))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_task_event() {
        let e = Event::parse(
            "2026-11-29 07:36:44.540628795 +0000 UTC runsc-test /tasks/exit {\"container_id\":\"x2\",\"id\":\"e1\",\"pid\":23996,\"exit_status\":7}",
        )
        .expect("parses");
        assert_eq!(e.namespace, "runsc-test");
        assert_eq!(e.topic, "/tasks/exit");
        assert_eq!(e.container_id.as_deref(), Some("x2"));
        assert_eq!(e.u64_field("exit_status"), 7);
        assert_eq!(e.str_field("id"), Some("e1"));
    }

    #[test]
    fn parses_container_event_and_skips_noise() {
        let e = Event::parse(
            "2026-11-29 07:36:45.01 +0000 UTC runsc-test /containers/delete {\"id\":\"x2\"}",
        )
        .expect("parses");
        assert_eq!(e.container_id.as_deref(), Some("x2"));
        let n = Event::parse("2026-11-29 07:48:46.48 +0000 UTC runsc-test /namespaces/update {\"name\":\"runsc-test\"}")
            .expect("parses");
        assert_eq!(n.container_id, None);
        assert!(Event::parse("ctr: connection refused").is_none());
    }
}
