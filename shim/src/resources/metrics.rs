//! Task.Stats: a container's cgroup statistics as containerd's metrics
//! types, `io.containerd.cgroups.v1.Metrics` on cgroup v1 hosts and
//! `io.containerd.cgroups.v2.Metrics` (with its memory events) on v2 hosts.
//!
//! Everything is read from the cgroup's files by path, never through a
//! pid, so the answer stands after the container's processes are gone
//! (containerd's CRI reads `oom_kill` after an exit 137). A file the host
//! does not have (a controller not mounted, swap accounting off) leaves its
//! fields at 0; a cgroup that is gone altogether is an error.

use containerd_shim::protos::cgroups::metrics as v1;
use containerd_shim::protos::cgroups_v2::metrics as v2;
use protobuf::well_known_types::any::Any;
use protobuf::MessageDyn;

use super::{flat_keyed, parse_u64, Cgroup, ResourceError};

/// The cgroup's metrics, v1 or v2 after the cgroup's hierarchy, packed as
/// containerd expects them in a StatsResponse.
pub fn collect_any(cg: &Cgroup) -> Result<Any, ResourceError> {
    let message: Box<dyn MessageDyn> = if cg.is_v2() {
        Box::new(collect_v2(cg)?)
    } else {
        Box::new(collect_v1(cg)?)
    };
    containerd_shim::util::convert_to_any(message).map_err(|e| ResourceError::Read {
        path: cg.dir("memory"),
        source: std::io::Error::other(e.to_string()),
    })
}

/// Metrics for a container without a cgroup of its own, from what the
/// sandbox counts over its processes (resident memory, CPU time, process
/// count), in the type of the host's hierarchy.
pub fn from_sandbox(s: &runtime_control::control::StatsResponse, v2_host: bool) -> Any {
    let message: Box<dyn MessageDyn> = if v2_host {
        let mut m = v2::Metrics::new();
        m.memory = Some(v2::MemoryStat {
            usage: s.memory_usage_bytes,
            usage_limit: s.memory_limit_bytes,
            ..Default::default()
        })
        .into();
        m.cpu = Some(v2::CPUStat {
            usage_usec: s.cpu_usage_ns / 1000,
            ..Default::default()
        })
        .into();
        m.pids = Some(v2::PidsStat {
            current: s.pids_current,
            limit: s.pids_limit,
            ..Default::default()
        })
        .into();
        Box::new(m)
    } else {
        let mut m = v1::Metrics::new();
        m.memory = Some(v1::MemoryStat {
            usage: Some(v1::MemoryEntry {
                usage: s.memory_usage_bytes,
                limit: s.memory_limit_bytes,
                ..Default::default()
            })
            .into(),
            ..Default::default()
        })
        .into();
        m.cpu = Some(v1::CPUStat {
            usage: Some(v1::CPUUsage {
                total: s.cpu_usage_ns,
                ..Default::default()
            })
            .into(),
            ..Default::default()
        })
        .into();
        m.pids = Some(v1::PidsStat {
            current: s.pids_current,
            limit: s.pids_limit,
            ..Default::default()
        })
        .into();
        Box::new(m)
    };
    // Encoding a message built here cannot fail; an empty Any if it did.
    containerd_shim::util::convert_to_any(message).unwrap_or_default()
}

/// Fails with NotFound when the cgroup is gone.
fn check_exists(cg: &Cgroup) -> Result<(), ResourceError> {
    let dir = cg.dir("memory");
    match std::fs::metadata(&dir) {
        Ok(_) => Ok(()),
        Err(source) => Err(ResourceError::Read { path: dir, source }),
    }
}

/// Nanoseconds per USER_HZ tick (cpuacct.stat counts in USER_HZ).
fn ns_per_tick() -> u64 {
    // SAFETY: sysconf takes no pointers; it only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    match u64::try_from(hz) {
        Ok(hz) if hz > 0 => 1_000_000_000 / hz,
        _ => 10_000_000,
    }
}

/// cgroup v1: memory, cpu and cpuacct, pids, hugetlb and the OOM control.
pub fn collect_v1(cg: &Cgroup) -> Result<v1::Metrics, ResourceError> {
    check_exists(cg)?;
    let mut m = v1::Metrics::new();
    m.memory = Some(memory_v1(cg)).into();
    m.memory_oom_control = Some(oom_control_v1(cg)).into();
    m.cpu = Some(cpu_v1(cg)).into();
    m.pids = Some(v1::PidsStat {
        current: cg.read_u64("pids", "pids.current").unwrap_or(0),
        limit: pids_limit(cg),
        ..Default::default()
    })
    .into();
    m.hugetlb = hugetlb_v1(cg);
    Ok(m)
}

/// pids.max, 0 when unlimited (as containerd reports it).
fn pids_limit(cg: &Cgroup) -> u64 {
    match cg.read_u64("pids", "pids.max") {
        Some(u64::MAX) | None => 0,
        Some(n) => n,
    }
}

fn memory_entry_v1(cg: &Cgroup, prefix: &str) -> v1::MemoryEntry {
    let get = |name: &str| {
        cg.read_u64("memory", &format!("{prefix}{name}"))
            .unwrap_or(0)
    };
    v1::MemoryEntry {
        limit: get("limit_in_bytes"),
        usage: get("usage_in_bytes"),
        max: get("max_usage_in_bytes"),
        failcnt: get("failcnt"),
        ..Default::default()
    }
}

fn memory_v1(cg: &Cgroup) -> v1::MemoryStat {
    let text = cg.read_opt("memory", "memory.stat").unwrap_or_default();
    let stat = flat_keyed(&text);
    let s = |key: &str| stat.get(key).copied().unwrap_or(0);
    v1::MemoryStat {
        cache: s("cache"),
        rss: s("rss"),
        rss_huge: s("rss_huge"),
        mapped_file: s("mapped_file"),
        dirty: s("dirty"),
        writeback: s("writeback"),
        pg_pg_in: s("pgpgin"),
        pg_pg_out: s("pgpgout"),
        pg_fault: s("pgfault"),
        pg_maj_fault: s("pgmajfault"),
        inactive_anon: s("inactive_anon"),
        active_anon: s("active_anon"),
        inactive_file: s("inactive_file"),
        active_file: s("active_file"),
        unevictable: s("unevictable"),
        hierarchical_memory_limit: s("hierarchical_memory_limit"),
        hierarchical_swap_limit: s("hierarchical_memsw_limit"),
        total_cache: s("total_cache"),
        total_rss: s("total_rss"),
        total_rss_huge: s("total_rss_huge"),
        total_mapped_file: s("total_mapped_file"),
        total_dirty: s("total_dirty"),
        total_writeback: s("total_writeback"),
        total_pg_pg_in: s("total_pgpgin"),
        total_pg_pg_out: s("total_pgpgout"),
        total_pg_fault: s("total_pgfault"),
        total_pg_maj_fault: s("total_pgmajfault"),
        total_inactive_anon: s("total_inactive_anon"),
        total_active_anon: s("total_active_anon"),
        total_inactive_file: s("total_inactive_file"),
        total_active_file: s("total_active_file"),
        total_unevictable: s("total_unevictable"),
        usage: Some(memory_entry_v1(cg, "memory.")).into(),
        // v1's memsw counter: memory and swap together.
        swap: Some(memory_entry_v1(cg, "memory.memsw.")).into(),
        kernel: Some(memory_entry_v1(cg, "memory.kmem.")).into(),
        kernel_tcp: Some(memory_entry_v1(cg, "memory.kmem.tcp.")).into(),
        ..Default::default()
    }
}

fn oom_control_v1(cg: &Cgroup) -> v1::MemoryOomControl {
    let text = cg
        .read_opt("memory", "memory.oom_control")
        .unwrap_or_default();
    let oc = flat_keyed(&text);
    let s = |key: &str| oc.get(key).copied().unwrap_or(0);
    v1::MemoryOomControl {
        oom_kill_disable: s("oom_kill_disable"),
        under_oom: s("under_oom"),
        oom_kill: s("oom_kill"),
        ..Default::default()
    }
}

fn cpu_v1(cg: &Cgroup) -> v1::CPUStat {
    let per_cpu: Vec<u64> = cg
        .read_opt("cpuacct", "cpuacct.usage_percpu")
        .map(|t| t.split_whitespace().filter_map(parse_u64).collect())
        .unwrap_or_default();
    // cpuacct.usage_user and _sys count nanoseconds; older kernels only
    // have cpuacct.stat, in USER_HZ ticks.
    let (user, kernel) = match (
        cg.read_u64("cpuacct", "cpuacct.usage_user"),
        cg.read_u64("cpuacct", "cpuacct.usage_sys"),
    ) {
        (Some(u), Some(s)) => (u, s),
        _ => {
            let text = cg.read_opt("cpuacct", "cpuacct.stat").unwrap_or_default();
            let st = flat_keyed(&text);
            let tick = ns_per_tick();
            let ns = |key: &str| st.get(key).copied().unwrap_or(0).saturating_mul(tick);
            (ns("user"), ns("system"))
        }
    };
    let usage = v1::CPUUsage {
        total: cg.read_u64("cpuacct", "cpuacct.usage").unwrap_or(0),
        kernel,
        user,
        per_cpu,
        ..Default::default()
    };
    let text = cg.read_opt("cpu", "cpu.stat").unwrap_or_default();
    let st = flat_keyed(&text);
    let s = |key: &str| st.get(key).copied().unwrap_or(0);
    v1::CPUStat {
        usage: Some(usage).into(),
        throttling: Some(v1::Throttle {
            periods: s("nr_periods"),
            throttled_periods: s("nr_throttled"),
            throttled_time: s("throttled_time"),
            ..Default::default()
        })
        .into(),
        ..Default::default()
    }
}

/// One entry per huge page size (files `hugetlb.<size>.usage_in_bytes`).
fn hugetlb_v1(cg: &Cgroup) -> Vec<v1::HugetlbStat> {
    let Ok(dir) = std::fs::read_dir(cg.dir("hugetlb")) else {
        return Vec::new();
    };
    let mut sizes: Vec<String> = dir
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let size = name
                .strip_prefix("hugetlb.")?
                .strip_suffix(".usage_in_bytes")?;
            (!size.contains('.')).then(|| size.to_string())
        })
        .collect();
    sizes.sort();
    sizes
        .into_iter()
        .map(|size| {
            let get = |what: &str| {
                cg.read_u64("hugetlb", &format!("hugetlb.{size}.{what}"))
                    .unwrap_or(0)
            };
            v1::HugetlbStat {
                usage: get("usage_in_bytes"),
                max: get("max_usage_in_bytes"),
                failcnt: get("failcnt"),
                pagesize: size.clone(),
                ..Default::default()
            }
        })
        .collect()
}

/// cgroup v2: memory (with its events), cpu, pids and io.
pub fn collect_v2(cg: &Cgroup) -> Result<v2::Metrics, ResourceError> {
    check_exists(cg)?;
    let mut m = v2::Metrics::new();
    m.pids = Some(v2::PidsStat {
        current: cg.read_u64("pids", "pids.current").unwrap_or(0),
        limit: pids_limit(cg),
        ..Default::default()
    })
    .into();
    m.cpu = Some(cpu_v2(cg)).into();
    m.memory = Some(memory_v2(cg)).into();
    m.memory_events = Some(memory_events_v2(cg)).into();
    m.io = Some(io_v2(cg)).into();
    Ok(m)
}

fn cpu_v2(cg: &Cgroup) -> v2::CPUStat {
    let text = cg.read_opt("cpu", "cpu.stat").unwrap_or_default();
    let st = flat_keyed(&text);
    let s = |key: &str| st.get(key).copied().unwrap_or(0);
    v2::CPUStat {
        usage_usec: s("usage_usec"),
        user_usec: s("user_usec"),
        system_usec: s("system_usec"),
        nr_periods: s("nr_periods"),
        nr_throttled: s("nr_throttled"),
        throttled_usec: s("throttled_usec"),
        nr_bursts: s("nr_bursts"),
        burst_usec: s("burst_usec"),
        ..Default::default()
    }
}

fn memory_v2(cg: &Cgroup) -> v2::MemoryStat {
    let text = cg.read_opt("memory", "memory.stat").unwrap_or_default();
    let st = flat_keyed(&text);
    let s = |key: &str| st.get(key).copied().unwrap_or(0);
    let file = |name: &str| cg.read_u64("memory", name).unwrap_or(0);
    v2::MemoryStat {
        anon: s("anon"),
        file: s("file"),
        kernel_stack: s("kernel_stack"),
        slab: s("slab"),
        sock: s("sock"),
        shmem: s("shmem"),
        file_mapped: s("file_mapped"),
        file_dirty: s("file_dirty"),
        file_writeback: s("file_writeback"),
        anon_thp: s("anon_thp"),
        inactive_anon: s("inactive_anon"),
        active_anon: s("active_anon"),
        inactive_file: s("inactive_file"),
        active_file: s("active_file"),
        unevictable: s("unevictable"),
        slab_reclaimable: s("slab_reclaimable"),
        slab_unreclaimable: s("slab_unreclaimable"),
        pgfault: s("pgfault"),
        pgmajfault: s("pgmajfault"),
        workingset_refault: s("workingset_refault_anon")
            + s("workingset_refault_file")
            + s("workingset_refault"),
        workingset_activate: s("workingset_activate_anon")
            + s("workingset_activate_file")
            + s("workingset_activate"),
        workingset_nodereclaim: s("workingset_nodereclaim"),
        pgrefill: s("pgrefill"),
        pgscan: s("pgscan"),
        pgsteal: s("pgsteal"),
        pgactivate: s("pgactivate"),
        pgdeactivate: s("pgdeactivate"),
        pglazyfree: s("pglazyfree"),
        pglazyfreed: s("pglazyfreed"),
        thp_fault_alloc: s("thp_fault_alloc"),
        thp_collapse_alloc: s("thp_collapse_alloc"),
        usage: file("memory.current"),
        usage_limit: file("memory.max"),
        max_usage: file("memory.peak"),
        swap_usage: file("memory.swap.current"),
        swap_limit: file("memory.swap.max"),
        swap_max_usage: file("memory.swap.peak"),
        ..Default::default()
    }
}

fn memory_events_v2(cg: &Cgroup) -> v2::MemoryEvents {
    let text = cg.read_opt("memory", "memory.events").unwrap_or_default();
    let ev = flat_keyed(&text);
    let s = |key: &str| ev.get(key).copied().unwrap_or(0);
    v2::MemoryEvents {
        low: s("low"),
        high: s("high"),
        max: s("max"),
        oom: s("oom"),
        oom_kill: s("oom_kill"),
        oom_group_kill: s("oom_group_kill"),
        ..Default::default()
    }
}

/// io.stat: `MAJ:MIN rbytes=N wbytes=N rios=N wios=N …` per device.
fn io_v2(cg: &Cgroup) -> v2::IOStat {
    let text = cg.read_opt("io", "io.stat").unwrap_or_default();
    let usage = text
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let (major, minor) = words.next()?.split_once(':')?;
            let mut e = v2::IOEntry {
                major: major.parse().ok()?,
                minor: minor.parse().ok()?,
                ..Default::default()
            };
            for w in words {
                let Some((k, v)) = w.split_once('=') else {
                    continue;
                };
                let v = v.parse().unwrap_or(0);
                match k {
                    "rbytes" => e.rbytes = v,
                    "wbytes" => e.wbytes = v,
                    "rios" => e.rios = v,
                    "wios" => e.wios = v,
                    _ => {}
                }
            }
            Some(e)
        })
        .collect();
    v2::IOStat {
        usage,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::FakeRoot;
    use super::*;
    use protobuf::Message;

    fn v1_root() -> FakeRoot {
        let r = FakeRoot::new(false);
        r.put(
            "memory",
            "memory.stat",
            "cache 4096\nrss 819200\nrss_huge 0\nshmem 0\nmapped_file 12\npgpgin 338\n\
             pgfault 619\npgmajfault 2\ninactive_file 4096\nhierarchical_memory_limit 33554432\n\
             hierarchical_memsw_limit 9223372036854771712\ntotal_cache 8192\ntotal_rss 819200\n\
             total_inactive_file 4096\n",
        );
        r.put("memory", "memory.usage_in_bytes", "536576\n");
        r.put("memory", "memory.limit_in_bytes", "33554432\n");
        r.put("memory", "memory.max_usage_in_bytes", "1998848\n");
        r.put("memory", "memory.failcnt", "7\n");
        r.put("memory", "memory.memsw.usage_in_bytes", "540000\n");
        r.put("memory", "memory.kmem.usage_in_bytes", "249856\n");
        r.put(
            "memory",
            "memory.oom_control",
            "oom_kill_disable 0\nunder_oom 1\noom_kill 2\n",
        );
        r.put("cpuacct", "cpuacct.usage", "9395365\n");
        r.put("cpuacct", "cpuacct.usage_percpu", "2892418 6502947 \n");
        r.put(
            "cpu",
            "cpu.stat",
            "nr_periods 10\nnr_throttled 3\nthrottled_time 5000\nnr_bursts 0\nburst_time 0\n",
        );
        r.put("pids", "pids.current", "3\n");
        r.put("pids", "pids.max", "max\n");
        r
    }

    #[test]
    fn v1_metrics_come_from_the_files() {
        let r = v1_root();
        r.put("cpuacct", "cpuacct.stat", "user 2\nsystem 1\n");
        let m = collect_v1(&r.cgroup).unwrap();
        let mem = m.memory.as_ref().unwrap();
        assert_eq!((mem.cache, mem.rss, mem.mapped_file), (4096, 819200, 12));
        assert_eq!(
            (mem.pg_pg_in, mem.pg_fault, mem.pg_maj_fault),
            (338, 619, 2)
        );
        assert_eq!((mem.total_cache, mem.total_inactive_file), (8192, 4096));
        assert_eq!(mem.hierarchical_memory_limit, 33554432);
        assert_eq!(mem.hierarchical_swap_limit, 9223372036854771712);
        let usage = mem.usage.as_ref().unwrap();
        assert_eq!(
            (usage.usage, usage.limit, usage.max, usage.failcnt),
            (536576, 33554432, 1998848, 7)
        );
        assert_eq!(mem.swap.usage, 540000);
        assert_eq!(mem.kernel.usage, 249856);
        assert_eq!(mem.kernel_tcp.usage, 0, "absent file: 0");
        let oc = m.memory_oom_control.as_ref().unwrap();
        assert_eq!((oc.under_oom, oc.oom_kill), (1, 2));
        let cpu = m.cpu.as_ref().unwrap();
        assert_eq!(cpu.usage.total, 9395365);
        assert_eq!(cpu.usage.per_cpu, vec![2892418, 6502947]);
        let tick = ns_per_tick();
        assert_eq!((cpu.usage.user, cpu.usage.kernel), (2 * tick, tick));
        assert_eq!(
            (
                cpu.throttling.periods,
                cpu.throttling.throttled_periods,
                cpu.throttling.throttled_time
            ),
            (10, 3, 5000)
        );
        assert_eq!((m.pids.current, m.pids.limit), (3, 0), "max is 0");
        assert!(m.hugetlb.is_empty());
    }

    #[test]
    fn v1_prefers_nanosecond_user_and_system_times() {
        let r = v1_root();
        r.put("cpuacct", "cpuacct.stat", "user 2\nsystem 1\n");
        r.put("cpuacct", "cpuacct.usage_user", "1234\n");
        r.put("cpuacct", "cpuacct.usage_sys", "567\n");
        r.put("pids", "pids.max", "64\n");
        let m = collect_v1(&r.cgroup).unwrap();
        assert_eq!((m.cpu.usage.user, m.cpu.usage.kernel), (1234, 567));
        assert_eq!(m.pids.limit, 64);
    }

    #[test]
    fn v1_hugetlb_sizes_are_listed() {
        let r = v1_root();
        r.put("hugetlb", "hugetlb.2MB.usage_in_bytes", "2097152\n");
        r.put("hugetlb", "hugetlb.2MB.max_usage_in_bytes", "4194304\n");
        r.put("hugetlb", "hugetlb.2MB.failcnt", "1\n");
        r.put("hugetlb", "hugetlb.2MB.rsvd.usage_in_bytes", "0\n");
        r.put("hugetlb", "hugetlb.1GB.usage_in_bytes", "0\n");
        let m = collect_v1(&r.cgroup).unwrap();
        let sizes: Vec<&str> = m.hugetlb.iter().map(|h| h.pagesize.as_str()).collect();
        assert_eq!(sizes, ["1GB", "2MB"]);
        assert_eq!(
            (m.hugetlb[1].usage, m.hugetlb[1].max, m.hugetlb[1].failcnt),
            (2097152, 4194304, 1)
        );
    }

    #[test]
    fn v2_metrics_come_from_the_files() {
        let r = FakeRoot::new(true);
        r.put(
            "memory",
            "memory.stat",
            "anon 1000\nfile 2000\nshmem 52428800\ninactive_file 300\npgfault 9\n\
             pgmajfault 1\nworkingset_refault_anon 4\nworkingset_refault_file 5\n",
        );
        r.put("memory", "memory.current", "60000000\n");
        r.put("memory", "memory.max", "max\n");
        r.put("memory", "memory.peak", "70000000\n");
        r.put("memory", "memory.swap.current", "0\n");
        r.put("memory", "memory.swap.max", "max\n");
        r.put(
            "memory",
            "memory.events",
            "low 0\nhigh 0\nmax 12\noom 2\noom_kill 1\noom_group_kill 0\n",
        );
        r.put(
            "cpu",
            "cpu.stat",
            "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\nnr_periods 4\n\
             nr_throttled 1\nthrottled_usec 20\nnr_bursts 0\nburst_usec 0\n",
        );
        r.put("pids", "pids.current", "2\n");
        r.put("pids", "pids.max", "100\n");
        r.put(
            "io",
            "io.stat",
            "8:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n",
        );
        let m = collect_v2(&r.cgroup).unwrap();
        let mem = m.memory.as_ref().unwrap();
        assert_eq!((mem.anon, mem.file, mem.shmem), (1000, 2000, 52428800));
        assert_eq!(mem.workingset_refault, 9);
        assert_eq!(
            (mem.usage, mem.usage_limit, mem.max_usage),
            (60000000, u64::MAX, 70000000)
        );
        assert_eq!((mem.swap_usage, mem.swap_limit), (0, u64::MAX));
        let ev = m.memory_events.as_ref().unwrap();
        assert_eq!((ev.max, ev.oom, ev.oom_kill), (12, 2, 1));
        let cpu = m.cpu.as_ref().unwrap();
        assert_eq!(
            (
                cpu.usage_usec,
                cpu.user_usec,
                cpu.system_usec,
                cpu.nr_throttled
            ),
            (1500, 1000, 500, 1)
        );
        assert_eq!((m.pids.current, m.pids.limit), (2, 100));
        let io = &m.io.usage;
        assert_eq!(io.len(), 1);
        assert_eq!(
            (
                io[0].major,
                io[0].minor,
                io[0].rbytes,
                io[0].wbytes,
                io[0].wios
            ),
            (8, 0, 4096, 8192, 2)
        );
    }

    #[test]
    fn the_any_names_the_hierarchy() {
        let r = v1_root();
        let any = collect_any(&r.cgroup).unwrap();
        assert_eq!(any.type_url, "io.containerd.cgroups.v1.Metrics");
        let back = v1::Metrics::parse_from_bytes(&any.value).unwrap();
        assert_eq!(back.memory.usage.usage, 536576);
        let r2 = FakeRoot::new(true);
        r2.put("memory", "memory.events", "oom_kill 4\n");
        let any = collect_any(&r2.cgroup).unwrap();
        assert_eq!(any.type_url, "io.containerd.cgroups.v2.Metrics");
        let back = v2::Metrics::parse_from_bytes(&any.value).unwrap();
        assert_eq!(back.memory_events.oom_kill, 4);
    }

    #[test]
    fn sandbox_counts_fill_the_host_type() {
        let s = runtime_control::control::StatsResponse {
            memory_usage_bytes: 1 << 20,
            cpu_usage_ns: 5_000_000,
            pids_current: 2,
            ..Default::default()
        };
        let any = from_sandbox(&s, false);
        let m = v1::Metrics::parse_from_bytes(&any.value).unwrap();
        assert_eq!(any.type_url, "io.containerd.cgroups.v1.Metrics");
        assert_eq!(
            (m.memory.usage.usage, m.cpu.usage.total, m.pids.current),
            (1 << 20, 5_000_000, 2)
        );
        let any = from_sandbox(&s, true);
        let m = v2::Metrics::parse_from_bytes(&any.value).unwrap();
        assert_eq!((m.memory.usage, m.cpu.usage_usec), (1 << 20, 5000));
    }

    #[test]
    fn a_missing_cgroup_is_not_found() {
        let r = FakeRoot::new(false);
        let e = collect_v1(&r.cgroup).unwrap_err();
        assert_eq!(e.code(), ttrpc::Code::NOT_FOUND);
        let r = FakeRoot::new(true);
        assert_eq!(
            collect_any(&r.cgroup).unwrap_err().code(),
            ttrpc::Code::NOT_FOUND
        );
    }
}
