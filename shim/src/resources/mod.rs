//! A container's own cgroup on the host, as the Task API uses it: its
//! statistics ([`metrics`]), its OOM kills ([`oom`]), its freezer
//! ([`freezer`]) and updates of its limits ([`update`]).
//!
//! The sandbox manager creates the cgroup from the spec's cgroupsPath and
//! keeps it until Task.Delete; the shim only reads and writes its files, by
//! path, so it answers after the container's processes are gone. cgroup v1
//! (a directory per controller) and v2 (one directory) are told apart by
//! [`Placement::v2`], which the manager detects from /sys/fs/cgroup.

pub mod freezer;
pub mod metrics;
pub mod oom;
pub mod update;

use std::collections::HashMap;
use std::io::ErrorKind;
use std::path::PathBuf;
use std::time::Duration;

use sandbox::manager::cgroup::{CgroupError, Placement};

/// Errors of cgroup reads and writes.
#[derive(Debug, thiserror::Error)]
pub enum ResourceError {
    /// A cgroup file could not be read.
    #[error("reading {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A cgroup file could not be written.
    #[error("writing {path}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The cgroup did not reach a state in time.
    #[error("{path} did not become {state} within {timeout:?}")]
    Timeout {
        /// The file watched.
        path: PathBuf,
        /// The state waited for.
        state: &'static str,
        /// How long it was waited for.
        timeout: Duration,
    },
    /// An OOM watch could not be set up.
    #[error("watching {path} for OOM kills")]
    Watch {
        /// The file watched.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl ResourceError {
    /// The ttrpc code for this error: NotFound for a cgroup that is gone,
    /// InvalidArgument for a value the kernel refuses (EINVAL, ERANGE),
    /// FailedPrecondition for one it cannot apply now (EBUSY: a memory
    /// limit below the usage), DeadlineExceeded for a freezer that did not
    /// settle, Internal otherwise.
    pub fn code(&self) -> ttrpc::Code {
        use ttrpc::Code;
        match self {
            ResourceError::Read { source, .. } | ResourceError::Write { source, .. }
                if source.kind() == ErrorKind::NotFound =>
            {
                Code::NOT_FOUND
            }
            ResourceError::Write { source, .. } => match source.raw_os_error() {
                Some(libc::EINVAL) | Some(libc::ERANGE) => Code::INVALID_ARGUMENT,
                Some(libc::EBUSY) => Code::FAILED_PRECONDITION,
                _ => Code::INTERNAL,
            },
            ResourceError::Timeout { .. } => Code::DEADLINE_EXCEEDED,
            ResourceError::Read { .. } | ResourceError::Watch { .. } => Code::INTERNAL,
        }
    }
}

impl From<CgroupError> for ResourceError {
    fn from(e: CgroupError) -> Self {
        match e {
            CgroupError::Io { path, source, .. } => ResourceError::Write { path, source },
        }
    }
}

/// Where a container's cgroup files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroup {
    /// The manager's record of the cgroup.
    placement: Placement,
}

impl Cgroup {
    /// The cgroup the manager recorded.
    pub fn new(placement: Placement) -> Cgroup {
        Cgroup { placement }
    }

    /// Whether it lives in the unified (v2) hierarchy.
    pub fn is_v2(&self) -> bool {
        self.placement.v2
    }

    /// The manager's record.
    pub fn placement(&self) -> &Placement {
        &self.placement
    }

    /// Its directory in `controller`'s hierarchy (the one directory on v2).
    pub fn dir(&self, controller: &str) -> PathBuf {
        let rel = self.placement.path.trim_start_matches('/');
        if self.placement.v2 {
            self.placement.root.join(rel)
        } else {
            self.placement.root.join(controller).join(rel)
        }
    }

    /// The file `name` of `controller`.
    pub fn file(&self, controller: &str, name: &str) -> PathBuf {
        self.dir(controller).join(name)
    }

    /// The contents of `controller`'s file `name`.
    pub fn read(&self, controller: &str, name: &str) -> Result<String, ResourceError> {
        let path = self.file(controller, name);
        std::fs::read_to_string(&path).map_err(|source| ResourceError::Read { path, source })
    }

    /// The file's contents, or None when it cannot be read (a controller
    /// or a feature the host lacks).
    pub fn read_opt(&self, controller: &str, name: &str) -> Option<String> {
        self.read(controller, name).ok()
    }

    /// The file as one number (`max` is [`u64::MAX`]), or None.
    pub fn read_u64(&self, controller: &str, name: &str) -> Option<u64> {
        parse_u64(&self.read_opt(controller, name)?)
    }

    /// Writes `value` into `controller`'s file `name`.
    pub fn write(&self, controller: &str, name: &str, value: &str) -> Result<(), ResourceError> {
        let path = self.file(controller, name);
        std::fs::write(&path, value).map_err(|source| ResourceError::Write { path, source })
    }

    /// Whether the cgroup still exists (its memory directory on v1).
    pub fn exists(&self) -> bool {
        self.dir("memory").is_dir()
    }

    /// The file counting its OOM kills: v1 `memory.oom_control`, v2
    /// `memory.events`.
    pub fn oom_file(&self) -> PathBuf {
        if self.is_v2() {
            self.file("memory", "memory.events")
        } else {
            self.file("memory", "memory.oom_control")
        }
    }

    /// How many of its processes the OOM killer has killed (the `oom_kill`
    /// key of [`Cgroup::oom_file`]); None when it cannot be read.
    pub fn oom_kills(&self) -> Option<u64> {
        let text = std::fs::read_to_string(self.oom_file()).ok()?;
        flat_keyed(&text).get("oom_kill").copied()
    }
}

/// Parses a cgroup number; `max` is [`u64::MAX`].
pub fn parse_u64(text: &str) -> Option<u64> {
    let t = text.trim();
    if t == "max" {
        return Some(u64::MAX);
    }
    t.parse().ok()
}

/// The `key value` lines of a flat-keyed cgroup file (memory.stat,
/// cpu.stat, memory.events, memory.oom_control, …); lines that are not a
/// key and a number are left out.
pub fn flat_keyed(text: &str) -> HashMap<&str, u64> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let key = words.next()?;
            let value = parse_u64(words.next()?)?;
            words.next().is_none().then_some((key, value))
        })
        .collect()
}

/// A cgroup tree for unit tests: a temporary root with the files they
/// write, removed when dropped.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use std::path::Path;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A fake /sys/fs/cgroup.
    pub struct FakeRoot {
        pub root: PathBuf,
        pub cgroup: Cgroup,
    }

    impl FakeRoot {
        /// A fake root holding cgroup `/ns/c1` (v1 or v2 layout).
        pub fn new(v2: bool) -> FakeRoot {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let root = std::env::temp_dir().join(format!(
                "shim-cgroup-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            let cgroup = Cgroup::new(Placement {
                path: "/ns/c1".into(),
                v2,
                root: root.clone(),
            });
            FakeRoot { root, cgroup }
        }

        /// Writes `controller`'s file `name` (creating its directory).
        pub fn put(&self, controller: &str, name: &str, body: &str) {
            let dir = self.cgroup.dir(controller);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(name), body).unwrap();
        }

        /// The file's current contents.
        pub fn get(&self, controller: &str, name: &str) -> String {
            std::fs::read_to_string(self.cgroup.file(controller, name)).unwrap()
        }

        /// The root directory.
        pub fn path(&self) -> &Path {
            &self.root
        }
    }

    impl Drop for FakeRoot {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::FakeRoot;
    use super::*;

    #[test]
    fn directories_follow_the_hierarchy() {
        let v1 = FakeRoot::new(false);
        assert_eq!(
            v1.cgroup.dir("memory"),
            v1.path().join("memory").join("ns/c1")
        );
        assert_eq!(
            v1.cgroup.oom_file(),
            v1.path().join("memory/ns/c1/memory.oom_control")
        );
        let v2 = FakeRoot::new(true);
        assert_eq!(v2.cgroup.dir("memory"), v2.path().join("ns/c1"));
        assert_eq!(v2.cgroup.dir("cpu"), v2.path().join("ns/c1"));
        assert_eq!(v2.cgroup.oom_file(), v2.path().join("ns/c1/memory.events"));
    }

    #[test]
    fn oom_kills_are_read_from_either_file() {
        let v1 = FakeRoot::new(false);
        assert_eq!(v1.cgroup.oom_kills(), None);
        assert!(!v1.cgroup.exists());
        v1.put(
            "memory",
            "memory.oom_control",
            "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n",
        );
        assert!(v1.cgroup.exists());
        assert_eq!(v1.cgroup.oom_kills(), Some(3));
        let v2 = FakeRoot::new(true);
        v2.put(
            "memory",
            "memory.events",
            "low 0\nhigh 0\nmax 12\noom 2\noom_kill 1\noom_group_kill 0\n",
        );
        assert_eq!(v2.cgroup.oom_kills(), Some(1));
    }

    #[test]
    fn flat_keyed_files_parse() {
        let m = flat_keyed("a 1\nb max\nbad\nc x\nd 4 5\n\ne 7\n");
        assert_eq!(m.get("a"), Some(&1));
        assert_eq!(m.get("b"), Some(&u64::MAX));
        assert_eq!(m.get("e"), Some(&7));
        assert_eq!(m.len(), 3);
        assert_eq!(parse_u64(" 42\n"), Some(42));
        assert_eq!(parse_u64("max\n"), Some(u64::MAX));
        assert_eq!(parse_u64("-1"), None);
    }

    #[test]
    fn error_codes() {
        let w = |errno| ResourceError::Write {
            path: "/x".into(),
            source: std::io::Error::from_raw_os_error(errno),
        };
        assert_eq!(w(libc::EINVAL).code(), ttrpc::Code::INVALID_ARGUMENT);
        assert_eq!(w(libc::EBUSY).code(), ttrpc::Code::FAILED_PRECONDITION);
        assert_eq!(w(libc::ENOENT).code(), ttrpc::Code::NOT_FOUND);
        assert_eq!(w(libc::EIO).code(), ttrpc::Code::INTERNAL);
        let r = ResourceError::Read {
            path: "/x".into(),
            source: std::io::Error::from_raw_os_error(libc::ENOENT),
        };
        assert_eq!(r.code(), ttrpc::Code::NOT_FOUND);
    }
}
