//! What the sandbox tells its workloads about their limits.
//!
//! A container limited to one CPU and 256 MiB should see one CPU and
//! 256 MiB, as it would in a VM or under gVisor, not the host. The sandbox
//! holds each container's cgroup directories (opened by the host, sent over
//! the fd channel) and answers from them at the moment of asking, so the
//! answers follow Update:
//! - [`fuse`] serves `meminfo`, `cpuinfo`, `stat`, `uptime` and `online`
//!   per container from a FUSE mount at [`MOUNT_POINT`] in the sandbox;
//!   the container's init binds them over `/proc/…` and
//!   `/sys/devices/system/cpu/online`;
//! - [`affinity`] answers `sched_getaffinity` (what `nproc` and most thread
//!   pools ask) through a seccomp user-notification listener, with the
//!   container's CPUs only;
//! - the pod runs in its own time namespace, whose boot is the pod's start,
//!   so `/proc/uptime`, `/proc/stat`'s btime and process start times agree.

pub mod fuse;
pub mod notify;
pub mod render;

use std::collections::HashMap;
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::fcntl::{openat, OFlag};
use nix::sys::stat::Mode;

/// Where the sandbox mounts its FUSE view, in its minimal root.
pub const MOUNT_POINT: &str = "/limits";

/// The files of a container's view, and where its init binds them.
pub const FILES: &[(&str, &str)] = &[
    ("meminfo", "/proc/meminfo"),
    ("cpuinfo", "/proc/cpuinfo"),
    ("stat", "/proc/stat"),
    ("uptime", "/proc/uptime"),
    ("online", "/sys/devices/system/cpu/online"),
];

/// The controller name of the one directory of a cgroup v2 container.
pub const UNIFIED: &str = "unified";

/// A container's cgroup directories, as descriptors the host opened.
#[derive(Debug)]
pub struct CgroupView {
    dirs: HashMap<String, OwnedFd>,
    v2: bool,
}

impl CgroupView {
    /// The view over `dirs`, named by controller ([`UNIFIED`] on v2 hosts).
    pub fn new(dirs: Vec<(String, OwnedFd)>) -> Self {
        let v2 = dirs.iter().any(|(name, _)| name == UNIFIED);
        CgroupView {
            dirs: dirs.into_iter().collect(),
            v2,
        }
    }

    fn read(&self, controller: &str, file: &str) -> Option<String> {
        let dir = if self.v2 {
            self.dirs.get(UNIFIED)?
        } else {
            self.dirs.get(controller)?
        };
        let fd = openat(
            dir.as_fd(),
            file,
            OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .ok()?;
        let mut text = String::new();
        std::fs::File::from(fd).read_to_string(&mut text).ok()?;
        Some(text)
    }

    fn read_u64(&self, controller: &str, file: &str) -> Option<u64> {
        self.read(controller, file)?.trim().parse().ok()
    }

    /// The CPU count the quota amounts to; None when unlimited.
    pub fn quota_cpus(&self) -> Option<u32> {
        let (quota, period) = if self.v2 {
            render::parse_cpu_max(&self.read("cpu", "cpu.max")?)?
        } else {
            (
                self.read("cpu", "cpu.cfs_quota_us")?.trim().parse().ok()?,
                self.read("cpu", "cpu.cfs_period_us")?.trim().parse().ok()?,
            )
        };
        render::quota_cpus(quota, period)
    }

    /// The CPUs the cgroup may run on, or None when it does not say.
    pub fn cpuset(&self) -> Option<Vec<u32>> {
        let effective = if self.v2 {
            "cpuset.cpus.effective"
        } else {
            "cpuset.effective_cpus"
        };
        [effective, "cpuset.cpus"]
            .iter()
            .filter_map(|f| self.read("cpuset", f))
            .map(|s| render::parse_cpu_list(&s))
            .find(|cpus| !cpus.is_empty())
    }

    /// The memory figures, or None when memory is not limited.
    pub fn memory(&self, host_total: u64) -> Option<render::Memory> {
        let (limit, usage, stat) = if self.v2 {
            (
                self.read_u64("memory", "memory.max")?,
                self.read_u64("memory", "memory.current").unwrap_or(0),
                self.read("memory", "memory.stat").unwrap_or_default(),
            )
        } else {
            let own = self.read_u64("memory", "memory.limit_in_bytes")?;
            let stat = self.read("memory", "memory.stat").unwrap_or_default();
            // The limits of the ancestors (the pod's) count too.
            let hierarchical = stat
                .lines()
                .find_map(|l| l.strip_prefix("hierarchical_memory_limit "))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(u64::MAX);
            (
                own.min(hierarchical),
                self.read_u64("memory", "memory.usage_in_bytes")
                    .unwrap_or(0),
                stat,
            )
        };
        if limit >= host_total {
            return None;
        }
        let swap = if self.v2 {
            self.read_u64("memory", "memory.swap.max")
                .zip(self.read_u64("memory", "memory.swap.current"))
        } else {
            self.read_u64("memory", "memory.memsw.limit_in_bytes")
                .zip(self.read_u64("memory", "memory.memsw.usage_in_bytes"))
                .map(|(l, u)| (l.saturating_sub(limit), u.saturating_sub(usage)))
        };
        Some(render::Memory {
            limit,
            usage,
            stat: render::memory_stat(&stat, self.v2),
            swap,
        })
    }

    /// The CPU time the cgroup used.
    pub fn cpu_ticks(&self) -> render::CpuTicks {
        let field = |text: &str, key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(0)
        };
        if self.v2 {
            let text = self.read("cpu", "cpu.stat").unwrap_or_default();
            let per_tick = 1_000_000 / render::USER_HZ;
            render::CpuTicks {
                user: field(&text, "user_usec ") / per_tick,
                system: field(&text, "system_usec ") / per_tick,
            }
        } else {
            let text = self.read("cpuacct", "cpuacct.stat").unwrap_or_default();
            render::CpuTicks {
                user: field(&text, "user "),
                system: field(&text, "system "),
            }
        }
    }
}

/// One container's limits, as the sandbox serves them.
#[derive(Debug)]
pub struct Limits {
    /// The container.
    pub cid: String,
    /// Its cgroup.
    pub cgroup: CgroupView,
}

impl Limits {
    /// The CPUs the container is shown.
    pub fn visible_cpus(&self) -> Vec<u32> {
        let allowed = self.cgroup.cpuset().unwrap_or_else(host_cpus);
        render::visible_cpus(&allowed, self.cgroup.quota_cpus())
    }

    /// The text of view file `name` now; None for an unknown name.
    pub fn render(&self, name: &str, pod_boot: Duration) -> Option<String> {
        let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
        let uptime = boottime().saturating_sub(pod_boot);
        Some(match name {
            "meminfo" => {
                let host = read("/proc/meminfo");
                match self.cgroup.memory(host_mem_total(&host)) {
                    Some(m) => render::meminfo(&host, &m),
                    None => host,
                }
            }
            "cpuinfo" => render::cpuinfo(&read("/proc/cpuinfo"), &self.visible_cpus()),
            "stat" => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                let btime = now.saturating_sub(uptime).as_secs();
                let ticks = uptime.as_millis() as u64 * render::USER_HZ / 1000;
                render::stat(
                    &read("/proc/stat"),
                    &self.visible_cpus(),
                    self.cgroup.cpu_ticks(),
                    ticks,
                    btime,
                )
            }
            "uptime" => {
                let cpus = self.visible_cpus().len() as f64;
                let used = self.cgroup.cpu_ticks();
                let busy = (used.user + used.system) as f64 / render::USER_HZ as f64;
                let secs = uptime.as_secs_f64();
                render::uptime(secs, (secs * cpus - busy).max(0.0))
            }
            "online" => render::cpu_list(&self.visible_cpus()),
            _ => return None,
        })
    }
}

/// The host's online CPUs.
fn host_cpus() -> Vec<u32> {
    std::fs::read_to_string("/sys/devices/system/cpu/online")
        .map(|s| render::parse_cpu_list(&s))
        .unwrap_or_default()
}

fn host_mem_total(meminfo: &str) -> u64 {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(u64::MAX, |kb| kb * 1024)
}

/// CLOCK_BOOTTIME of the host.
pub fn boottime() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into `ts`, which lives
    // across the call.
    if unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) } != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// The containers whose limits the sandbox serves.
#[derive(Debug)]
pub struct Registry {
    /// The host's CLOCK_BOOTTIME when the pod started.
    pub pod_boot: Duration,
    containers: Mutex<HashMap<String, (u64, Arc<Limits>)>>,
    /// The last index handed out (the FUSE inodes of a container).
    last: AtomicU64,
}

impl Registry {
    /// An empty registry for a pod that starts now.
    pub fn new(pod_boot: Duration) -> Self {
        Registry {
            pod_boot,
            containers: Mutex::new(HashMap::new()),
            last: AtomicU64::new(1),
        }
    }

    /// Serves container `cid`'s limits from `cgroup`; returns them and the
    /// directory of its files.
    pub fn add(&self, cid: &str, cgroup: CgroupView) -> (Arc<Limits>, PathBuf) {
        let limits = Arc::new(Limits {
            cid: cid.to_string(),
            cgroup,
        });
        let index = self.last.fetch_add(1, Ordering::Relaxed) + 1;
        self.containers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(cid.to_string(), (index, limits.clone()));
        (limits, PathBuf::from(MOUNT_POINT).join(cid))
    }

    /// Stops serving container `cid`.
    pub fn remove(&self, cid: &str) {
        self.containers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(cid);
    }

    /// The index (inode group) and limits of container `name`.
    pub fn by_name(&self, name: &str) -> Option<(u64, Arc<Limits>)> {
        self.containers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    /// The limits of the container with index `index`.
    pub fn by_index(&self, index: u64) -> Option<Arc<Limits>> {
        self.containers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .find(|(i, _)| *i == index)
            .map(|(_, l)| l.clone())
    }
}

/// What the control server needs to give containers their view.
#[derive(Clone)]
pub struct Service {
    /// The containers served by the FUSE view.
    pub registry: Arc<Registry>,
    /// The sched_getaffinity and sysinfo answerer.
    pub watcher: Arc<notify::Watcher>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake cgroup directory holding `files`, opened as the host would.
    fn dir(name: &str, files: &[(&str, &str)]) -> (OwnedFd, PathBuf) {
        let path = std::env::temp_dir().join(format!("limits-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        for (f, text) in files {
            std::fs::write(path.join(f), text).unwrap();
        }
        let fd = nix::fcntl::open(
            &path,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .unwrap();
        (fd, path)
    }

    #[test]
    fn v2_figures_are_read_from_the_unified_directory() {
        let (fd, path) = dir(
            "v2",
            &[
                ("cpu.max", "150000 100000\n"),
                (
                    "cpu.stat",
                    "usage_usec 300000\nuser_usec 200000\nsystem_usec 100000\n",
                ),
                ("cpuset.cpus.effective", "0-3\n"),
                ("memory.max", "268435456\n"),
                ("memory.current", "67108864\n"),
                ("memory.stat", "anon 1024\nfile 4096\n"),
                ("memory.swap.max", "0\n"),
                ("memory.swap.current", "0\n"),
            ],
        );
        let view = CgroupView::new(vec![(UNIFIED.to_string(), fd)]);
        assert_eq!(view.quota_cpus(), Some(2));
        assert_eq!(view.cpuset(), Some(vec![0, 1, 2, 3]));
        assert_eq!(
            view.cpu_ticks(),
            render::CpuTicks {
                user: 20,
                system: 10
            }
        );
        let m = view.memory(1 << 40).expect("limited");
        assert_eq!(
            (m.limit, m.usage, m.swap),
            (256 << 20, 64 << 20, Some((0, 0)))
        );
        assert_eq!(m.stat.get("file"), Some(&4096));
        // Unlimited, or above the host's memory: the host's figures.
        assert!(view.memory(128 << 20).is_none());
        let limits = Limits {
            cid: "c".into(),
            cgroup: view,
        };
        assert_eq!(limits.visible_cpus(), vec![0, 1]);
        assert_eq!(
            limits.render("online", Duration::ZERO).as_deref(),
            Some("0-1\n")
        );
        assert!(limits.render("nothing", Duration::ZERO).is_none());
        std::fs::remove_dir_all(path).unwrap();
    }

    #[test]
    fn v1_figures_take_the_hierarchical_limit() {
        let (mem, mem_path) = dir(
            "v1-memory",
            &[
                ("memory.limit_in_bytes", "1073741824\n"),
                ("memory.usage_in_bytes", "1048576\n"),
                (
                    "memory.stat",
                    "total_cache 0\nhierarchical_memory_limit 536870912\n",
                ),
            ],
        );
        let (cpu, cpu_path) = dir(
            "v1-cpu",
            &[
                ("cpu.cfs_quota_us", "-1\n"),
                ("cpu.cfs_period_us", "100000\n"),
            ],
        );
        let (acct, acct_path) = dir("v1-cpuacct", &[("cpuacct.stat", "user 7\nsystem 3\n")]);
        let view = CgroupView::new(vec![
            ("memory".into(), mem),
            ("cpu".into(), cpu),
            ("cpuacct".into(), acct),
        ]);
        assert_eq!(view.quota_cpus(), None);
        assert_eq!(view.cpuset(), None);
        assert_eq!(view.cpu_ticks(), render::CpuTicks { user: 7, system: 3 });
        let m = view.memory(1 << 40).expect("limited");
        assert_eq!((m.limit, m.usage, m.swap), (512 << 20, 1 << 20, None));
        for p in [mem_path, cpu_path, acct_path] {
            std::fs::remove_dir_all(p).unwrap();
        }
    }
}
