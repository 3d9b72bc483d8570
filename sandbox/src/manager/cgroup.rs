//! The sandbox's cgroup on the host: created from the spec's cgroupsPath,
//! limits written from linux.resources, read back as the CPU count and
//! memory size the sandbox reports to its workloads, removed on destroy.
//!
//! cgroup v1 (one directory per controller) and v2 (one unified directory)
//! are told apart by the filesystem mounted at /sys/fs/cgroup.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Errors of cgroup handling.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// Creating, writing or removing a cgroup file failed.
    #[error("{what} {path}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

const V1_CONTROLLERS: &[&str] = &[
    "cpu", "cpuacct", "cpuset", "memory", "pids", "freezer", "devices", "blkio", "hugetlb",
];

/// Where a sandbox's cgroup lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    /// Path below each hierarchy's root, starting with '/'.
    pub path: String,
    /// The host uses the unified hierarchy.
    pub v2: bool,
    /// Root of the hierarchies (/sys/fs/cgroup; tests may point elsewhere).
    pub root: PathBuf,
}

/// True when /sys/fs/cgroup is a cgroup2 mount.
pub fn host_is_v2(root: &Path) -> bool {
    nix::sys::statfs::statfs(root)
        .map(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
        .unwrap_or(false)
}

/// Turns an OCI cgroupsPath into a path: "/a/b" stays, systemd's
/// "slice:prefix:name" becomes "/slice/prefix-name.scope".
pub fn normalize_path(spec_path: &str) -> String {
    let parts: Vec<&str> = spec_path.split(':').collect();
    if parts.len() == 3 && !spec_path.starts_with('/') {
        let slice = if parts[0].is_empty() {
            "system.slice"
        } else {
            parts[0]
        };
        return format!("/{slice}/{}-{}.scope", parts[1], parts[2]);
    }
    if spec_path.starts_with('/') {
        spec_path.to_string()
    } else {
        format!("/{spec_path}")
    }
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> CgroupError {
    let path = path.to_path_buf();
    move |source| CgroupError::Io { what, path, source }
}

impl Placement {
    /// The placement for `spec_path` on this host.
    pub fn new(spec_path: &str) -> Self {
        let root = PathBuf::from("/sys/fs/cgroup");
        Placement {
            path: normalize_path(spec_path),
            v2: host_is_v2(&root),
            root,
        }
    }

    /// Every directory of this cgroup (one per v1 controller, or one).
    pub fn dirs(&self) -> Vec<PathBuf> {
        let rel = self.path.trim_start_matches('/');
        if self.v2 {
            return vec![self.root.join(rel)];
        }
        V1_CONTROLLERS
            .iter()
            .map(|c| self.root.join(c))
            .filter(|p| p.is_dir())
            .map(|p| p.join(rel))
            .collect()
    }

    fn dir_of(&self, controller: &str) -> PathBuf {
        let rel = self.path.trim_start_matches('/');
        if self.v2 {
            self.root.join(rel)
        } else {
            self.root.join(controller).join(rel)
        }
    }

    /// Creates the directories (cpuset v1 inherits cpus and mems).
    pub fn create(&self) -> Result<(), CgroupError> {
        for d in self.dirs() {
            fs::create_dir_all(&d).map_err(io_err("creating", &d))?;
        }
        if !self.v2 {
            let cpuset = self.dir_of("cpuset");
            if cpuset.is_dir() {
                for f in ["cpuset.cpus", "cpuset.mems"] {
                    inherit_cpuset(&cpuset, f)?;
                }
            }
        }
        Ok(())
    }

    /// Writes the spec's limits.
    pub fn apply(&self, r: &oci_spec::runtime::LinuxResources) -> Result<(), CgroupError> {
        if let Some(mem) = r.memory() {
            if let Some(limit) = mem.limit().filter(|l| *l > 0) {
                if self.v2 {
                    self.write("memory", "memory.max", &limit.to_string())?;
                } else {
                    self.write("memory", "memory.limit_in_bytes", &limit.to_string())?;
                }
            }
        }
        if let Some(cpu) = r.cpu() {
            let period = cpu.period().unwrap_or(100_000);
            if let Some(quota) = cpu.quota().filter(|q| *q > 0) {
                if self.v2 {
                    self.write("cpu", "cpu.max", &format!("{quota} {period}"))?;
                } else {
                    self.write("cpu", "cpu.cfs_period_us", &period.to_string())?;
                    self.write("cpu", "cpu.cfs_quota_us", &quota.to_string())?;
                }
            }
            if let Some(shares) = cpu.shares().filter(|s| *s > 0) {
                if self.v2 {
                    // The usual conversion from shares to weight.
                    let weight = 1 + ((shares.clamp(2, 262_144) - 2) * 9999) / 262_142;
                    self.write("cpu", "cpu.weight", &weight.to_string())?;
                } else {
                    self.write("cpu", "cpu.shares", &shares.to_string())?;
                }
            }
            if let Some(cpus) = cpu.cpus().as_deref().filter(|c| !c.is_empty()) {
                self.write("cpuset", "cpuset.cpus", cpus)?;
            }
        }
        if let Some(pids) = r.pids() {
            if pids.limit() > 0 {
                self.write("pids", "pids.max", &pids.limit().to_string())?;
            }
        }
        Ok(())
    }

    fn write(&self, controller: &str, file: &str, value: &str) -> Result<(), CgroupError> {
        let path = self.dir_of(controller).join(file);
        fs::write(&path, value).map_err(io_err("writing", &path))
    }

    fn read(&self, controller: &str, file: &str) -> Option<String> {
        fs::read_to_string(self.dir_of(controller).join(file))
            .ok()
            .map(|s| s.trim().to_string())
    }

    /// The directories the sandbox reads a container's limits and usage
    /// from, by controller (see [`crate::limits::CgroupView`]).
    pub fn limit_dirs(&self) -> Vec<(String, PathBuf)> {
        if self.v2 {
            return vec![(crate::limits::UNIFIED.to_string(), self.dir_of(""))];
        }
        ["memory", "cpu", "cpuacct", "cpuset"]
            .iter()
            .map(|c| (c.to_string(), self.dir_of(c)))
            .filter(|(_, d)| d.is_dir())
            .collect()
    }

    /// The `cgroup.procs` files to write a pid into, one per directory.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs()
            .into_iter()
            .map(|d| d.join("cgroup.procs"))
            .collect()
    }

    /// CPUs the cgroup may use: its quota rounded up, or its cpuset, or
    /// the host's.
    pub fn cpu_count(&self) -> u32 {
        let host = std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1);
        let cpuset = self
            .read("cpuset", "cpuset.cpus.effective")
            .or_else(|| self.read("cpuset", "cpuset.cpus"))
            .map(|s| count_cpu_list(&s))
            .filter(|n| *n > 0)
            .unwrap_or(host);
        let quota = if self.v2 {
            self.read("cpu", "cpu.max").and_then(|s| {
                let mut it = s.split_whitespace();
                let q: i64 = it.next()?.parse().ok()?;
                let p: i64 = it.next()?.parse().ok()?;
                Some((q, p))
            })
        } else {
            let q = self
                .read("cpu", "cpu.cfs_quota_us")
                .and_then(|s| s.parse().ok());
            let p = self
                .read("cpu", "cpu.cfs_period_us")
                .and_then(|s| s.parse().ok());
            q.zip(p)
        };
        let by_quota = quota
            .filter(|(q, p)| *q > 0 && *p > 0)
            .map(|(q, p)| ((q + p - 1) / p) as u32);
        by_quota.map_or(cpuset, |n| n.min(cpuset)).max(1)
    }

    /// The memory limit in bytes, or None when unlimited.
    pub fn memory_limit(&self) -> Option<u64> {
        let file = if self.v2 {
            "memory.max"
        } else {
            "memory.limit_in_bytes"
        };
        self.read("memory", file)
            .and_then(|s| s.parse::<u64>().ok())
            .filter(|m| *m < 0x7fff_ffff_ffff_f000)
    }

    /// Removes the directories (they must be empty of processes). Missing
    /// directories are fine.
    pub fn remove(&self) -> Result<(), CgroupError> {
        for d in self.dirs() {
            match fs::remove_dir(&d) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("removing", &d)(e)),
            }
        }
        Ok(())
    }
}

fn inherit_cpuset(dir: &Path, file: &str) -> Result<(), CgroupError> {
    let own = dir.join(file);
    let current = fs::read_to_string(&own).unwrap_or_default();
    if !current.trim().is_empty() {
        return Ok(());
    }
    // Walk up to the first ancestor with a value, then fill downwards.
    let mut chain = vec![dir.to_path_buf()];
    let mut cur = dir.parent();
    let mut value = String::new();
    while let Some(p) = cur {
        let v = fs::read_to_string(p.join(file)).unwrap_or_default();
        if !v.trim().is_empty() {
            value = v.trim().to_string();
            break;
        }
        chain.push(p.to_path_buf());
        cur = p.parent();
    }
    for d in chain.iter().rev() {
        let f = d.join(file);
        fs::write(&f, &value).map_err(io_err("writing", &f))?;
    }
    Ok(())
}

/// Counts the CPUs in a list such as "0-3,8,10-11".
pub fn count_cpu_list(s: &str) -> u32 {
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| match p.trim().split_once('-') {
            Some((a, b)) => match (a.parse::<u32>(), b.parse::<u32>()) {
                (Ok(a), Ok(b)) if b >= a => b - a + 1,
                _ => 0,
            },
            None => u32::from(p.trim().parse::<u32>().is_ok()),
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_are_counted() {
        assert_eq!(count_cpu_list("0-3,8,10-11"), 7);
        assert_eq!(count_cpu_list("0"), 1);
        assert_eq!(count_cpu_list(""), 0);
        assert_eq!(count_cpu_list("0-1\n"), 2);
    }

    #[test]
    fn cgroup_paths_are_normalized() {
        assert_eq!(normalize_path("/kubepods/pod1/c1"), "/kubepods/pod1/c1");
        assert_eq!(normalize_path("runsc/c1"), "/runsc/c1");
        assert_eq!(
            normalize_path("kubepods.slice:cri-containerd:abc"),
            "/kubepods.slice/cri-containerd-abc.scope"
        );
    }

    #[test]
    fn limits_are_read_back_from_v2_files() {
        let root = std::env::temp_dir().join(format!("cg-test-{}", std::process::id()));
        let dir = root.join("pod");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("cpu.max"), "150000 100000\n").unwrap();
        fs::write(dir.join("memory.max"), "268435456\n").unwrap();
        let p = Placement {
            path: "/pod".into(),
            v2: true,
            root: root.clone(),
        };
        assert_eq!(p.cpu_count().min(2), 2.min(p.cpu_count()));
        assert!(p.cpu_count() <= 2);
        assert_eq!(p.memory_limit(), Some(268_435_456));
        fs::write(dir.join("memory.max"), "max\n").unwrap();
        assert_eq!(p.memory_limit(), None);
        fs::remove_dir_all(&root).unwrap();
    }
}
