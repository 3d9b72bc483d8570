//! Shared infrastructure of the end-to-end tests (test/tests/*.rs): `ctr`
//! against the private containerd of test/containerd.sh, with deadlines and
//! captured output ([`ctr`], [`command`]); containerd's events ([`events`]);
//! what containers leave on the host ([`host`]); a shim's `delete` action
//! ([`shim`]).
//!
//! The end-to-end tests run only with RUNSC_E2E=1 (test/run.sh sets it, with
//! the environment test/lib.sh exports); otherwise they print a skip line and
//! pass.

pub mod command;
pub mod ctr;
pub mod events;
pub mod host;
pub mod shim;

use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub use command::{Input, Output, Running};
pub use ctr::{ContainerGuard, Ctr, CTR_TIMEOUT};
pub use events::{Event, EventsRecorder};

/// Our runtime, the default of RUNSC_TEST_RUNTIME.
pub const RUNSC_RUNTIME: &str = "io.containerd.runsc.v2";
/// The baseline the same assertions can be checked against.
pub const RUNC_RUNTIME: &str = "io.containerd.runc.v2";

/// Are the end-to-end tests asked for (RUNSC_E2E=1)?
pub fn e2e_enabled() -> bool {
    std::env::var("RUNSC_E2E").is_ok_and(|v| v == "1")
}

/// Prints the line a skipped test leaves in the output.
pub fn skip(test: &str, why: &str) {
    println!("SKIP {test}: {why}");
}

/// A container id unique to this test run: `PREFIX-PID-N-T`.
pub fn unique_id(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() % 100_000)
        .unwrap_or(0);
    format!("{prefix}-{}-{n}-{t}", std::process::id())
}

/// Polls `check` every 50 ms until it holds; false after `timeout`.
pub fn wait_until(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// What an end-to-end test works with: ctr, the image and the runtime under test.
#[derive(Debug, Clone)]
pub struct E2e {
    /// ctr against the test containerd.
    pub ctr: Ctr,
    /// The image containers run (RUNSC_TEST_IMAGE, default localhost/busybox:latest).
    pub image: String,
    /// The runtime under test (RUNSC_TEST_RUNTIME, default io.containerd.runsc.v2).
    pub runtime: String,
}

impl E2e {
    /// The context from the environment, or None (after printing the skip
    /// line) when the end-to-end tests are not asked for.
    pub fn setup(test: &str) -> Option<E2e> {
        if !e2e_enabled() {
            skip(test, "RUNSC_E2E is not set to 1");
            return None;
        }
        Some(E2e {
            ctr: Ctr::from_env(),
            image: std::env::var("RUNSC_TEST_IMAGE")
                .unwrap_or_else(|_| "localhost/busybox:latest".to_string()),
            runtime: std::env::var("RUNSC_TEST_RUNTIME")
                .unwrap_or_else(|_| RUNSC_RUNTIME.to_string()),
        })
    }

    /// Is the runtime under test ours (sandbox process, state directory)?
    pub fn is_runsc(&self) -> bool {
        self.runtime.contains("runsc")
    }

    /// `run --runtime R FLAGS… IMAGE ID CMD…`.
    pub fn run_args(&self, flags: &[&str], id: &str, cmd: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = vec!["run".into(), "--runtime".into(), self.runtime.clone()];
        args.extend(flags.iter().map(|s| s.to_string()));
        args.push(self.image.clone());
        args.push(id.to_string());
        args.extend(cmd.iter().map(|s| s.to_string()));
        args
    }

    /// Starts `cmd` detached (`ctr run -d`) in container `id` and waits
    /// until its task runs; the guard removes it when dropped.
    #[track_caller]
    pub fn start_detached(&self, id: &str, cmd: &[&str]) -> ContainerGuard {
        let guard = self.ctr.guard(id);
        let out = self
            .ctr
            .run(&self.run_args(&["-d"], id, cmd), Duration::from_secs(60));
        assert!(
            out.success(),
            "starting container {id} failed: {}",
            out.describe()
        );
        assert!(
            self.ctr
                .wait_task_status(id, "RUNNING", Duration::from_secs(10)),
            "task {id} is not RUNNING 10 s after `ctr run -d`: {:?}",
            self.ctr.task(id)
        );
        guard
    }
}
