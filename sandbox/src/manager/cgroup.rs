//! The sandbox's cgroup on the host: created from the spec's cgroupsPath,
//! limits written from linux.resources, read back as the CPU count and
//! memory size the sandbox reports to its workloads, removed on destroy.
//!
//! cgroup v1 (one directory per controller) and v2 (one unified directory)
//! are told apart by the filesystem mounted at /sys/fs/cgroup.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::limits::render;

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
/// "slice:prefix:name" becomes the slice's directory (nested the way
/// systemd nests slices: "a-b.slice" is "/a.slice/a-b.slice") and
/// "prefix-name.scope" below it. The scope is not registered with systemd;
/// its directory is made directly, as runc's cgroupfs driver does.
pub fn normalize_path(spec_path: &str) -> String {
    let parts: Vec<&str> = spec_path.split(':').collect();
    if parts.len() == 3 && !spec_path.starts_with('/') {
        let slice = if parts[0].is_empty() {
            "system.slice"
        } else {
            parts[0]
        };
        let dir = expand_slice(slice).unwrap_or_else(|| format!("/{slice}"));
        let dir = dir.trim_end_matches('/');
        return format!("{dir}/{}-{}.scope", parts[1], parts[2]);
    }
    if spec_path.starts_with('/') {
        spec_path.to_string()
    } else {
        format!("/{spec_path}")
    }
}

/// The directory of systemd slice `slice`: "a-b-c.slice" is
/// "/a.slice/a-b.slice/a-b-c.slice", "-.slice" is the root. None for a
/// name systemd would refuse.
fn expand_slice(slice: &str) -> Option<String> {
    let name = slice.strip_suffix(".slice")?;
    if name == "-" {
        return Some("/".into());
    }
    if name.is_empty()
        || name.starts_with('-')
        || name.ends_with('-')
        || name.contains("--")
        || name.contains('/')
    {
        return None;
    }
    let mut path = String::new();
    let mut prefix = String::new();
    for part in name.split('-') {
        if !prefix.is_empty() {
            prefix.push('-');
        }
        prefix.push_str(part);
        path.push('/');
        path.push_str(&prefix);
        path.push_str(".slice");
    }
    Some(path)
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

    /// The cgroup next to this one named `<name>-<suffix>` (same parent).
    pub fn sibling(&self, suffix: &str) -> Self {
        Placement {
            path: format!("{}-{suffix}", self.path.trim_end_matches('/')),
            v2: self.v2,
            root: self.root.clone(),
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

    /// Writes the spec's limits: memory (limit, swap, reservation,
    /// swappiness, OOM killer), CPU (shares, quota and period, cpuset),
    /// pids, block I/O and hugetlb where the host has those controllers,
    /// and on v2 the spec's `unified` files. -1 means unlimited.
    pub fn apply(&self, r: &oci_spec::runtime::LinuxResources) -> Result<(), CgroupError> {
        if let Some(mem) = r.memory() {
            self.apply_memory(mem)?;
        }
        if let Some(cpu) = r.cpu() {
            self.apply_cpu(cpu)?;
        }
        if let Some(pids) = r.pids() {
            match pids.limit() {
                l if l > 0 => self.write("pids", "pids.max", &l.to_string())?,
                -1 => self.write("pids", "pids.max", "max")?,
                _ => {}
            }
        }
        if let Some(io) = r.block_io() {
            self.apply_block_io(io)?;
        }
        for page in r.hugepage_limits().as_deref().unwrap_or_default() {
            let file = if self.v2 {
                format!("hugetlb.{}.max", page.page_size())
            } else {
                format!("hugetlb.{}.limit_in_bytes", page.page_size())
            };
            self.write_if_present("hugetlb", &file, &page.limit().to_string())?;
        }
        if let Some(unified) = r.unified() {
            if self.v2 {
                let mut keys: Vec<&String> = unified.keys().collect();
                keys.sort();
                for key in keys {
                    if key.contains('/') || key.starts_with("cgroup.") || key == ".." {
                        return Err(CgroupError::Io {
                            what: "writing the unified key",
                            path: PathBuf::from(key),
                            source: std::io::Error::from_raw_os_error(libc::EINVAL),
                        });
                    }
                    self.write("", key, &unified[key])?;
                }
            } else if !unified.is_empty() {
                log::warn!(
                    "cgroup {}: ignoring linux.resources.unified on a v1 host",
                    self.path
                );
            }
        }
        Ok(())
    }

    fn apply_memory(&self, mem: &oci_spec::runtime::LinuxMemory) -> Result<(), CgroupError> {
        let limit = mem.limit().filter(|l| *l != 0);
        let swap = mem.swap().filter(|s| *s != 0);
        if self.v2 {
            if let Some(limit) = limit {
                self.write("memory", "memory.max", &v2_value(limit))?;
            }
            // OCI's swap is memory + swap; v2's swap.max is swap alone.
            if let Some(swap) = swap {
                let value = match (swap, limit) {
                    (-1, _) => "max".to_string(),
                    (s, Some(l)) if l > 0 => s.saturating_sub(l).max(0).to_string(),
                    (s, _) => s.to_string(),
                };
                self.write_if_present("memory", "memory.swap.max", &value)?;
            }
            if let Some(low) = mem.reservation().filter(|r| *r != 0) {
                self.write("memory", "memory.low", &v2_value(low))?;
            }
            return Ok(());
        }
        // v1 wants limit <= memsw.limit at every step: when the new limit
        // cannot be written first (EINVAL), the swap limit goes first.
        let memsw_present = self
            .dir_of("memory")
            .join("memory.memsw.limit_in_bytes")
            .exists();
        let write_limit = |l: i64| self.write("memory", "memory.limit_in_bytes", &l.to_string());
        let write_swap =
            |s: i64| self.write("memory", "memory.memsw.limit_in_bytes", &s.to_string());
        match (limit, swap.filter(|_| memsw_present)) {
            (Some(l), Some(s)) => {
                if write_limit(l).is_err() {
                    write_swap(s)?;
                    write_limit(l)?;
                } else {
                    write_swap(s)?;
                }
            }
            (Some(l), None) => write_limit(l)?,
            (None, Some(s)) => write_swap(s)?,
            (None, None) => {}
        }
        if let Some(soft) = mem.reservation().filter(|r| *r != 0) {
            self.write("memory", "memory.soft_limit_in_bytes", &soft.to_string())?;
        }
        if let Some(swappiness) = mem.swappiness().filter(|s| *s <= 100) {
            self.write("memory", "memory.swappiness", &swappiness.to_string())?;
        }
        if mem.disable_oom_killer() == Some(true) {
            self.write("memory", "memory.oom_control", "1")?;
        }
        Ok(())
    }

    fn apply_cpu(&self, cpu: &oci_spec::runtime::LinuxCpu) -> Result<(), CgroupError> {
        let period = cpu.period().unwrap_or(100_000);
        if let Some(quota) = cpu.quota().filter(|q| *q != 0) {
            if self.v2 {
                self.write("cpu", "cpu.max", &format!("{} {period}", v2_value(quota)))?;
            } else {
                self.write("cpu", "cpu.cfs_period_us", &period.to_string())?;
                self.write("cpu", "cpu.cfs_quota_us", &quota.max(-1).to_string())?;
            }
        } else if cpu.period().is_some() {
            if self.v2 {
                let quota = self
                    .read("cpu", "cpu.max")
                    .and_then(|s| s.split_whitespace().next().map(str::to_string))
                    .unwrap_or_else(|| "max".into());
                self.write("cpu", "cpu.max", &format!("{quota} {period}"))?;
            } else {
                self.write("cpu", "cpu.cfs_period_us", &period.to_string())?;
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
        if let Some(mems) = cpu.mems().as_deref().filter(|m| !m.is_empty()) {
            self.write("cpuset", "cpuset.mems", mems)?;
        }
        Ok(())
    }

    fn apply_block_io(&self, io: &oci_spec::runtime::LinuxBlockIo) -> Result<(), CgroupError> {
        let (weight_file, weight_prefix) = if self.v2 {
            ("io.weight", "default ")
        } else {
            ("blkio.weight", "")
        };
        if let Some(w) = io.weight() {
            let done =
                self.write_if_present("blkio", weight_file, &format!("{weight_prefix}{w}"))?;
            if !done {
                let bfq = if self.v2 {
                    "io.bfq.weight"
                } else {
                    "blkio.bfq.weight"
                };
                self.write_if_present("blkio", bfq, &w.to_string())?;
            }
        }
        for d in io.weight_device().as_deref().unwrap_or_default() {
            if let Some(w) = d.weight() {
                let file = if self.v2 {
                    "io.weight"
                } else {
                    "blkio.weight_device"
                };
                self.write_if_present("blkio", file, &format!("{}:{} {w}", d.major(), d.minor()))?;
            }
        }
        let throttles = [
            (
                io.throttle_read_bps_device(),
                "blkio.throttle.read_bps_device",
                "rbps",
            ),
            (
                io.throttle_write_bps_device(),
                "blkio.throttle.write_bps_device",
                "wbps",
            ),
            (
                io.throttle_read_iops_device(),
                "blkio.throttle.read_iops_device",
                "riops",
            ),
            (
                io.throttle_write_iops_device(),
                "blkio.throttle.write_iops_device",
                "wiops",
            ),
        ];
        for (devices, v1_file, v2_key) in throttles {
            for d in devices.as_deref().unwrap_or_default() {
                let (file, value) = if self.v2 {
                    (
                        "io.max",
                        format!("{}:{} {v2_key}={}", d.major(), d.minor(), d.rate()),
                    )
                } else {
                    (v1_file, format!("{}:{} {}", d.major(), d.minor(), d.rate()))
                };
                self.write_if_present("blkio", file, &value)?;
            }
        }
        Ok(())
    }

    /// Writes `file` when the host has it (an optional controller such as
    /// hugetlb or blkio); returns whether it did.
    fn write_if_present(
        &self,
        controller: &str,
        file: &str,
        value: &str,
    ) -> Result<bool, CgroupError> {
        let v1_root = self.root.join(controller);
        let path = self.dir_of(controller).join(file);
        if (!self.v2 && !v1_root.is_dir()) || (self.v2 && !path.exists()) {
            log::warn!("cgroup {}: no {file} on this host; not limited", self.path);
            return Ok(false);
        }
        self.write(controller, file, value)?;
        Ok(true)
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
            .map(|s| render::parse_cpu_list(&s).len() as u32)
            .filter(|n| *n > 0)
            .unwrap_or(host);
        let quota = if self.v2 {
            self.read("cpu", "cpu.max")
                .and_then(|s| render::parse_cpu_max(&s))
        } else {
            let q = self
                .read("cpu", "cpu.cfs_quota_us")
                .and_then(|s| s.parse().ok());
            let p = self
                .read("cpu", "cpu.cfs_period_us")
                .and_then(|s| s.parse().ok());
            q.zip(p)
        };
        let by_quota = quota.and_then(|(q, p)| render::quota_cpus(q, p));
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

/// A v2 limit: a number, or "max" for -1 (unlimited).
fn v2_value(v: i64) -> String {
    if v < 0 {
        "max".to_string()
    } else {
        v.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_are_counted() {
        let count = |s: &str| render::parse_cpu_list(s).len();
        assert_eq!(count("0-3,8,10-11"), 7);
        assert_eq!(count("0"), 1);
        assert_eq!(count(""), 0);
        assert_eq!(count("0-1\n"), 2);
    }

    #[test]
    fn siblings_share_the_parent() {
        let p = Placement {
            path: "/runsc-test/c1".into(),
            v2: false,
            root: "/sys/fs/cgroup".into(),
        };
        assert_eq!(p.sibling("sandbox").path, "/runsc-test/c1-sandbox");
    }

    #[test]
    fn cgroup_paths_are_normalized() {
        assert_eq!(normalize_path("/kubepods/pod1/c1"), "/kubepods/pod1/c1");
        assert_eq!(normalize_path("runsc/c1"), "/runsc/c1");
        assert_eq!(
            normalize_path("kubepods.slice:cri-containerd:abc"),
            "/kubepods.slice/cri-containerd-abc.scope"
        );
        // The kubelet's systemd driver: nested slices.
        assert_eq!(
            normalize_path("kubepods-burstable-pod12.slice:cri-containerd:abc"),
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod12.slice/\
             cri-containerd-abc.scope"
        );
        assert_eq!(
            normalize_path(":cri-containerd:abc"),
            "/system.slice/cri-containerd-abc.scope"
        );
        assert_eq!(normalize_path("-.slice:p:n"), "/p-n.scope");
        assert_eq!(expand_slice("a--b.slice"), None);
        assert_eq!(expand_slice("nodot"), None);
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

    fn resources(json: &str) -> oci_spec::runtime::LinuxResources {
        serde_json::from_str(json).expect("resources parse")
    }

    fn fake(name: &str, v2: bool) -> (Placement, PathBuf) {
        let root = std::env::temp_dir().join(format!("cg-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let p = Placement {
            path: "/pod/c1".into(),
            v2,
            root: root.clone(),
        };
        if v2 {
            fs::create_dir_all(root.join("pod/c1")).unwrap();
        } else {
            for c in ["memory", "cpu", "cpuset", "pids", "blkio"] {
                fs::create_dir_all(root.join(c).join("pod/c1")).unwrap();
            }
            fs::write(root.join("memory/pod/c1/memory.memsw.limit_in_bytes"), "").unwrap();
        }
        (p, root)
    }

    fn read(root: &Path, rel: &str) -> String {
        fs::read_to_string(root.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
    }

    #[test]
    fn v1_limits_land_in_each_controller() {
        let (p, root) = fake("v1", false);
        p.apply(&resources(
            r#"{"memory":{"limit":268435456,"swap":536870912,"reservation":134217728,
                "swappiness":10},
               "cpu":{"quota":150000,"period":100000,"shares":512,"cpus":"0","mems":"0"},
               "pids":{"limit":64},
               "blockIO":{"weight":300,"throttleReadBpsDevice":[{"major":8,"minor":0,"rate":1048576}]},
               "hugepageLimits":[{"pageSize":"2MB","limit":4194304}]}"#,
        ))
        .unwrap();
        let m = "memory/pod/c1/";
        assert_eq!(
            read(&root, &format!("{m}memory.limit_in_bytes")),
            "268435456"
        );
        assert_eq!(
            read(&root, &format!("{m}memory.memsw.limit_in_bytes")),
            "536870912"
        );
        assert_eq!(
            read(&root, &format!("{m}memory.soft_limit_in_bytes")),
            "134217728"
        );
        assert_eq!(read(&root, &format!("{m}memory.swappiness")), "10");
        assert_eq!(read(&root, "cpu/pod/c1/cpu.cfs_quota_us"), "150000");
        assert_eq!(read(&root, "cpu/pod/c1/cpu.cfs_period_us"), "100000");
        assert_eq!(read(&root, "cpu/pod/c1/cpu.shares"), "512");
        assert_eq!(read(&root, "cpuset/pod/c1/cpuset.mems"), "0");
        assert_eq!(read(&root, "pids/pod/c1/pids.max"), "64");
        assert_eq!(read(&root, "blkio/pod/c1/blkio.weight"), "300");
        assert_eq!(
            read(&root, "blkio/pod/c1/blkio.throttle.read_bps_device"),
            "8:0 1048576"
        );
        // No hugetlb controller on this fake host: skipped, not an error.
        assert!(!root.join("hugetlb").exists());
        // -1 lifts limits.
        p.apply(&resources(
            r#"{"memory":{"limit":-1},"cpu":{"quota":-1},"pids":{"limit":-1}}"#,
        ))
        .unwrap();
        assert_eq!(read(&root, &format!("{m}memory.limit_in_bytes")), "-1");
        assert_eq!(read(&root, "cpu/pod/c1/cpu.cfs_quota_us"), "-1");
        assert_eq!(read(&root, "pids/pod/c1/pids.max"), "max");
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn v2_limits_use_the_unified_files() {
        let (p, root) = fake("v2", true);
        let d = "pod/c1/";
        for f in ["memory.swap.max", "io.weight", "io.max", "hugetlb.2MB.max"] {
            fs::write(root.join(d).join(f), "").unwrap();
        }
        p.apply(&resources(
            r#"{"memory":{"limit":268435456,"swap":536870912,"reservation":1048576},
               "cpu":{"quota":50000,"period":100000,"shares":1024},
               "pids":{"limit":32},
               "blockIO":{"weight":200,"throttleWriteIOPSDevice":[{"major":8,"minor":0,"rate":100}]},
               "hugepageLimits":[{"pageSize":"2MB","limit":2097152}],
               "unified":{"memory.high":"200000000"}}"#,
        ))
        .unwrap();
        assert_eq!(read(&root, &format!("{d}memory.max")), "268435456");
        assert_eq!(read(&root, &format!("{d}memory.swap.max")), "268435456");
        assert_eq!(read(&root, &format!("{d}memory.low")), "1048576");
        assert_eq!(read(&root, &format!("{d}cpu.max")), "50000 100000");
        assert_eq!(read(&root, &format!("{d}cpu.weight")), "39");
        assert_eq!(read(&root, &format!("{d}pids.max")), "32");
        assert_eq!(read(&root, &format!("{d}io.weight")), "default 200");
        assert_eq!(read(&root, &format!("{d}io.max")), "8:0 wiops=100");
        assert_eq!(read(&root, &format!("{d}hugetlb.2MB.max")), "2097152");
        assert_eq!(read(&root, &format!("{d}memory.high")), "200000000");
        p.apply(&resources(r#"{"memory":{"limit":-1},"cpu":{"quota":-1}}"#))
            .unwrap();
        assert_eq!(read(&root, &format!("{d}memory.max")), "max");
        assert_eq!(read(&root, &format!("{d}cpu.max")), "max 100000");
        assert!(p
            .apply(&resources(r#"{"unified":{"../escape":"1"}}"#))
            .is_err());
        fs::remove_dir_all(&root).unwrap();
    }
}
