//! Task.Pause and Task.Resume: the cgroup freezer. v1 writes
//! `freezer.state` (FROZEN / THAWED) and waits until it reads FROZEN
//! rather than FREEZING; v2 writes `cgroup.freeze` (1 / 0) and waits for
//! `frozen 1` / `frozen 0` in `cgroup.events`.

use std::time::{Duration, Instant};

use super::{flat_keyed, Cgroup, ResourceError};

/// How long a freeze may take before it is undone and reported.
pub const FREEZE_TIMEOUT: Duration = Duration::from_secs(5);

/// The state asked of the freezer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FreezerState {
    /// Every process of the cgroup stopped.
    Frozen,
    /// Running again.
    Thawed,
}

impl FreezerState {
    fn v1_word(self) -> &'static str {
        match self {
            FreezerState::Frozen => "FROZEN",
            FreezerState::Thawed => "THAWED",
        }
    }

    fn v2_value(self) -> &'static str {
        match self {
            FreezerState::Frozen => "1",
            FreezerState::Thawed => "0",
        }
    }
}

/// What the freezer of `cg` reports now.
pub fn current(cg: &Cgroup) -> Result<FreezerState, ResourceError> {
    if cg.is_v2() {
        let text = cg.read("freezer", "cgroup.events")?;
        Ok(match flat_keyed(&text).get("frozen") {
            Some(1) => FreezerState::Frozen,
            _ => FreezerState::Thawed,
        })
    } else {
        // FREEZING counts as thawed: not every process is stopped yet.
        Ok(match cg.read("freezer", "freezer.state")?.trim() {
            "FROZEN" => FreezerState::Frozen,
            _ => FreezerState::Thawed,
        })
    }
}

fn request(cg: &Cgroup, want: FreezerState) -> Result<(), ResourceError> {
    if cg.is_v2() {
        cg.write("freezer", "cgroup.freeze", want.v2_value())
    } else {
        cg.write("freezer", "freezer.state", want.v1_word())
    }
}

/// Freezes every process of `cg` and waits until all of them are stopped;
/// after `timeout` the cgroup is thawed again and the freeze fails.
pub fn freeze(cg: &Cgroup, timeout: Duration) -> Result<(), ResourceError> {
    set(cg, FreezerState::Frozen, timeout).inspect_err(|_| {
        let _ = request(cg, FreezerState::Thawed);
    })
}

/// Thaws `cg` and waits until the freezer says so.
pub fn thaw(cg: &Cgroup, timeout: Duration) -> Result<(), ResourceError> {
    set(cg, FreezerState::Thawed, timeout)
}

fn set(cg: &Cgroup, want: FreezerState, timeout: Duration) -> Result<(), ResourceError> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_micros(100);
    let mut round = 0u32;
    loop {
        // v1 freezing may stall on a task that keeps forking or sleeps
        // uninterruptibly: ask again every round, with a brief thaw now
        // and then (as runc does). v2 needs asking once.
        if !cg.is_v2() && want == FreezerState::Frozen && round % 50 == 49 {
            request(cg, FreezerState::Thawed)?;
        }
        if round == 0 || !cg.is_v2() {
            request(cg, want)?;
        }
        if current(cg)? == want {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(ResourceError::Timeout {
                path: if cg.is_v2() {
                    cg.file("freezer", "cgroup.events")
                } else {
                    cg.file("freezer", "freezer.state")
                },
                state: if want == FreezerState::Frozen {
                    "frozen"
                } else {
                    "thawed"
                },
                timeout,
            });
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(10));
        round += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::FakeRoot;
    use super::*;

    #[test]
    fn v1_freeze_and_thaw_write_the_state_file() {
        // A plain file reads back what was written: FROZEN at once.
        let r = FakeRoot::new(false);
        r.put("freezer", "freezer.state", "THAWED\n");
        assert_eq!(current(&r.cgroup).unwrap(), FreezerState::Thawed);
        freeze(&r.cgroup, Duration::from_secs(1)).unwrap();
        assert_eq!(r.get("freezer", "freezer.state"), "FROZEN");
        assert_eq!(current(&r.cgroup).unwrap(), FreezerState::Frozen);
        thaw(&r.cgroup, Duration::from_secs(1)).unwrap();
        assert_eq!(r.get("freezer", "freezer.state"), "THAWED");
    }

    #[test]
    fn v2_freeze_waits_for_the_event_and_undoes_a_timeout() {
        let r = FakeRoot::new(true);
        r.put("freezer", "cgroup.freeze", "0\n");
        r.put("freezer", "cgroup.events", "populated 1\nfrozen 0\n");
        // The kernel never reports frozen here: the freeze times out and
        // is undone.
        let e = freeze(&r.cgroup, Duration::from_millis(50)).unwrap_err();
        assert!(matches!(e, ResourceError::Timeout { .. }), "{e:?}");
        assert_eq!(e.code(), ttrpc::Code::DEADLINE_EXCEEDED);
        assert_eq!(r.get("freezer", "cgroup.freeze"), "0");
        // Once the kernel reports it, the freeze succeeds.
        r.put("freezer", "cgroup.events", "populated 1\nfrozen 1\n");
        freeze(&r.cgroup, Duration::from_secs(1)).unwrap();
        assert_eq!(r.get("freezer", "cgroup.freeze"), "1");
        assert_eq!(current(&r.cgroup).unwrap(), FreezerState::Frozen);
        r.put("freezer", "cgroup.events", "populated 1\nfrozen 0\n");
        thaw(&r.cgroup, Duration::from_secs(1)).unwrap();
        assert_eq!(r.get("freezer", "cgroup.freeze"), "0");
    }

    /// The v2 freezer of the running kernel, on a host that mounts a
    /// unified hierarchy beside its v1 ones (/sys/fs/cgroup/unified, where
    /// the freezer is built in); skipped elsewhere and when not root.
    #[test]
    fn v2_freezer_of_the_kernel() {
        let root = std::path::Path::new("/sys/fs/cgroup/unified");
        if !nix::unistd::geteuid().is_root() || !sandbox::manager::cgroup::host_is_v2(root) {
            println!("SKIP v2_freezer_of_the_kernel: no unified hierarchy at {root:?} or not root");
            return;
        }
        let cg = Cgroup::new(sandbox::manager::cgroup::Placement {
            path: format!("/runsc-shim-freezer-test-{}", std::process::id()),
            v2: true,
            root: root.to_path_buf(),
        });
        let dir = cg.dir("freezer");
        std::fs::create_dir_all(&dir).unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        cg.write("freezer", "cgroup.procs", &child.id().to_string())
            .unwrap();
        let outcome = (|| -> Result<(FreezerState, FreezerState), ResourceError> {
            freeze(&cg, Duration::from_secs(5))?;
            let frozen = current(&cg)?;
            thaw(&cg, Duration::from_secs(5))?;
            Ok((frozen, current(&cg)?))
        })();
        let _ = child.kill();
        let _ = child.wait();
        let _ = std::fs::remove_dir(&dir);
        assert_eq!(
            outcome.unwrap(),
            (FreezerState::Frozen, FreezerState::Thawed)
        );
    }

    #[test]
    fn a_missing_freezer_fails() {
        let r = FakeRoot::new(false);
        let e = freeze(&r.cgroup, Duration::from_millis(10)).unwrap_err();
        assert_eq!(e.code(), ttrpc::Code::NOT_FOUND);
    }
}
