//! The text of the files the sandbox serves in place of the host's: each
//! function takes the host's own file (for the lines that stay) and the
//! container's figures, and returns what the container reads.

use std::collections::BTreeMap;
use std::fmt::Write;

/// USER_HZ: the unit of /proc/stat and cpuacct.stat.
pub const USER_HZ: u64 = 100;

/// A container's memory as its cgroup accounts it, in bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Memory {
    /// The limit, never above the host's MemTotal.
    pub limit: u64,
    /// Charged to the cgroup (memory.usage_in_bytes / memory.current).
    pub usage: u64,
    /// memory.stat under neutral names (see [`STAT_NAMES`]).
    pub stat: BTreeMap<&'static str, u64>,
    /// Swap the cgroup may use and uses, when swap is accounted.
    pub swap: Option<(u64, u64)>,
}

/// memory.stat names: (neutral name, cgroup v1 name, cgroup v2 name).
pub const STAT_NAMES: &[(&str, &str, &str)] = &[
    ("anon", "total_rss", "anon"),
    ("file", "total_cache", "file"),
    ("shmem", "total_shmem", "shmem"),
    ("mapped", "total_mapped_file", "file_mapped"),
    ("dirty", "total_dirty", "file_dirty"),
    ("writeback", "total_writeback", "file_writeback"),
    ("active_anon", "total_active_anon", "active_anon"),
    ("inactive_anon", "total_inactive_anon", "inactive_anon"),
    ("active_file", "total_active_file", "active_file"),
    ("inactive_file", "total_inactive_file", "inactive_file"),
    ("unevictable", "total_unevictable", "unevictable"),
    ("swapcached", "", "swapcached"),
    ("slab_reclaimable", "", "slab_reclaimable"),
    ("slab_unreclaimable", "", "slab_unreclaimable"),
];

/// Picks the [`STAT_NAMES`] values out of a memory.stat file.
pub fn memory_stat(text: &str, v2: bool) -> BTreeMap<&'static str, u64> {
    let raw: BTreeMap<&str, u64> = text
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k, v.trim().parse().ok()?))
        })
        .collect();
    STAT_NAMES
        .iter()
        .filter_map(|(name, v1, v2name)| {
            let key = if v2 { v2name } else { v1 };
            raw.get(key).map(|v| (*name, *v))
        })
        .collect()
}

/// /proc/meminfo: the memory lines the cgroup accounts are the container's,
/// the others stay the host's.
pub fn meminfo(host: &str, m: &Memory) -> String {
    let kb = |bytes: u64| bytes / 1024;
    let stat = |name: &str| m.stat.get(name).copied().unwrap_or(0);
    let total = m.limit;
    let free = total.saturating_sub(m.usage);
    let slab = (stat("slab_reclaimable"), stat("slab_unreclaimable"));
    let reclaimable = stat("active_file") + stat("inactive_file") + slab.0;
    let mut ours: BTreeMap<&str, u64> = BTreeMap::from([
        ("MemTotal", total),
        ("MemFree", free),
        ("MemAvailable", (free + reclaimable).min(total)),
        ("Buffers", 0),
        ("Cached", stat("file").saturating_sub(stat("shmem"))),
        ("SwapCached", stat("swapcached")),
        ("Active", stat("active_anon") + stat("active_file")),
        ("Inactive", stat("inactive_anon") + stat("inactive_file")),
        ("Active(anon)", stat("active_anon")),
        ("Inactive(anon)", stat("inactive_anon")),
        ("Active(file)", stat("active_file")),
        ("Inactive(file)", stat("inactive_file")),
        ("Unevictable", stat("unevictable")),
        ("Dirty", stat("dirty")),
        ("Writeback", stat("writeback")),
        ("AnonPages", stat("anon")),
        ("Mapped", stat("mapped")),
        ("Shmem", stat("shmem")),
        // Kernel memory the cgroup accounts (v2); 0 on v1, which does not
        // say. The host's figures would dwarf the limit: `free` subtracts
        // SReclaimable from the used memory.
        ("Slab", slab.0 + slab.1),
        ("SReclaimable", slab.0),
        ("SUnreclaim", slab.1),
        ("KReclaimable", slab.0),
    ]);
    if let Some((swap_total, swap_used)) = m.swap {
        ours.insert("SwapTotal", swap_total);
        ours.insert("SwapFree", swap_total.saturating_sub(swap_used));
    }
    let mut out = String::with_capacity(host.len());
    for line in host.lines() {
        let key = line.split(':').next().unwrap_or_default();
        match ours.get(key) {
            Some(bytes) => {
                let _ = writeln!(out, "{:<16}{:>8} kB", format!("{key}:"), kb(*bytes));
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

/// /proc/cpuinfo: the host's entries of the visible CPUs only.
pub fn cpuinfo(host: &str, cpus: &[u32]) -> String {
    let mut out = String::with_capacity(host.len());
    for block in host.split("\n\n").filter(|b| !b.trim().is_empty()) {
        let number = block
            .lines()
            .find(|l| l.starts_with("processor"))
            .and_then(|l| l.split(':').nth(1))
            .and_then(|n| n.trim().parse::<u32>().ok());
        if number.is_some_and(|n| cpus.contains(&n)) {
            out.push_str(block.trim_matches('\n'));
            out.push_str("\n\n");
        }
    }
    if out.is_empty() {
        // A format we do not know: better the host's than nothing.
        return host.to_string();
    }
    out
}

/// CPU time in USER_HZ ticks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTicks {
    /// User time.
    pub user: u64,
    /// System time.
    pub system: u64,
}

/// /proc/stat: cpu lines from the container's CPU time over the visible
/// CPUs (idle is what is left of their uptime), btime moved to the pod's
/// start, the other lines the host's.
pub fn stat(host: &str, cpus: &[u32], used: CpuTicks, uptime_ticks: u64, btime: u64) -> String {
    let n = cpus.len().max(1) as u64;
    let idle = (uptime_ticks * n).saturating_sub(used.user + used.system);
    let line = |name: &str, user: u64, system: u64, idle: u64| {
        format!("{name} {user} 0 {system} {idle} 0 0 0 0 0 0\n")
    };
    let mut out = line("cpu ", used.user, used.system, idle);
    for (i, cpu) in cpus.iter().enumerate() {
        // An even share each; the first CPUs take the remainders.
        let share = |total: u64| total / n + u64::from((i as u64) < total % n);
        out.push_str(&line(
            &format!("cpu{cpu}"),
            share(used.user),
            share(used.system),
            share(idle),
        ));
    }
    for l in host.lines().filter(|l| !l.starts_with("cpu")) {
        if l.starts_with("btime ") {
            let _ = writeln!(out, "btime {btime}");
        } else {
            out.push_str(l);
            out.push('\n');
        }
    }
    out
}

/// /proc/uptime: seconds since the pod started, and the idle seconds of
/// its visible CPUs.
pub fn uptime(uptime_secs: f64, idle_secs: f64) -> String {
    format!("{uptime_secs:.2} {idle_secs:.2}\n")
}

/// A CPU list as the kernel writes it ("0-3,8").
pub fn cpu_list(cpus: &[u32]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < cpus.len() {
        let start = cpus[i];
        let mut end = start;
        while i + 1 < cpus.len() && cpus[i + 1] == end + 1 {
            i += 1;
            end = cpus[i];
        }
        if !out.is_empty() {
            out.push(',');
        }
        if start == end {
            let _ = write!(out, "{start}");
        } else {
            let _ = write!(out, "{start}-{end}");
        }
        i += 1;
    }
    out.push('\n');
    out
}

/// Parses a CPU list such as "0-3,8,10-11" (sorted, without duplicates).
pub fn parse_cpu_list(s: &str) -> Vec<u32> {
    let mut cpus = Vec::new();
    for part in s.trim().split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<u32>(), b.parse::<u32>()) {
                    if b >= a && b - a < 1 << 16 {
                        cpus.extend(a..=b);
                    }
                }
            }
            None => cpus.extend(part.parse::<u32>().ok()),
        }
    }
    cpus.sort_unstable();
    cpus.dedup();
    cpus
}

/// The quota and period of a v2 `cpu.max` ("150000 100000"); None for
/// "max" (unlimited) or garbage.
pub fn parse_cpu_max(text: &str) -> Option<(i64, i64)> {
    let mut it = text.split_whitespace();
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

/// How many CPUs a CFS quota amounts to, rounded up; None when unlimited.
pub fn quota_cpus(quota: i64, period: i64) -> Option<u32> {
    (quota > 0 && period > 0)
        .then(|| u32::try_from((quota + period - 1) / period).unwrap_or(u32::MAX))
}

/// The CPUs a container is shown: the first of those it may run on, as
/// many as its quota amounts to (at least one).
pub fn visible_cpus(allowed: &[u32], quota_cpus: Option<u32>) -> Vec<u32> {
    if allowed.is_empty() {
        return vec![0];
    }
    let n = quota_cpus.map_or(allowed.len(), |q| (q as usize).clamp(1, allowed.len()));
    allowed[..n].to_vec()
}

/// Keeps the first `n` set bits of an affinity mask (bytes in the
/// kernel's order: CPU 0 is bit 0 of byte 0) and clears the rest.
pub fn keep_first_cpus(mask: &mut [u8], n: usize) {
    let mut kept = 0;
    for byte in mask.iter_mut() {
        for bit in 0..8 {
            if *byte & (1 << bit) != 0 {
                if kept < n {
                    kept += 1;
                } else {
                    *byte &= !(1 << bit);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST_MEMINFO: &str = "MemTotal:       24000000 kB\nMemFree:        20000000 kB\n\
MemAvailable:   22000000 kB\nBuffers:          100000 kB\nCached:          1000000 kB\n\
SwapTotal:             0 kB\nSwapFree:              0 kB\nSReclaimable:     360000 kB\n\
HugePages_Total:       0\nHugepagesize:       2048 kB\n";

    #[test]
    fn meminfo_shows_the_limit_and_keeps_other_host_lines() {
        let m = Memory {
            limit: 256 << 20,
            usage: 56 << 20,
            stat: BTreeMap::from([("file", 16 << 20), ("inactive_file", 8 << 20)]),
            swap: None,
        };
        let text = meminfo(HOST_MEMINFO, &m);
        let value = |key: &str| {
            text.lines()
                .find(|l| l.starts_with(&format!("{key}:")))
                .and_then(|l| l.split_whitespace().nth(1))
                .map(|v| v.to_string())
        };
        assert_eq!(value("MemTotal").as_deref(), Some("262144"));
        assert_eq!(value("MemFree").as_deref(), Some("204800"));
        assert_eq!(value("MemAvailable").as_deref(), Some("212992"));
        assert_eq!(value("Buffers").as_deref(), Some("0"));
        assert_eq!(value("Cached").as_deref(), Some("16384"));
        assert_eq!(value("SwapTotal").as_deref(), Some("0"));
        // The host's slab would exceed the limit; v1 does not account it.
        assert_eq!(value("SReclaimable").as_deref(), Some("0"));
        assert!(text.contains("HugePages_Total:       0\n"));
        assert_eq!(text.lines().count(), HOST_MEMINFO.lines().count());
    }

    #[test]
    fn meminfo_accounts_swap_when_the_cgroup_does() {
        let m = Memory {
            limit: 1 << 30,
            usage: 0,
            stat: BTreeMap::new(),
            swap: Some((512 << 20, 128 << 20)),
        };
        let text = meminfo(HOST_MEMINFO, &m);
        assert!(text.contains("SwapTotal:        524288 kB\n"), "{text}");
        assert!(text.contains("SwapFree:         393216 kB\n"), "{text}");
    }

    #[test]
    fn memory_stat_reads_v1_totals_and_v2_names() {
        let v1 = "cache 100\nrss 5\ntotal_cache 4096\ntotal_rss 8192\ntotal_inactive_file 10\n";
        let s = memory_stat(v1, false);
        assert_eq!(s.get("file"), Some(&4096));
        assert_eq!(s.get("anon"), Some(&8192));
        assert_eq!(s.get("inactive_file"), Some(&10));
        let v2 = "anon 1\nfile 2\nfile_mapped 3\nswapcached 4\n";
        let s = memory_stat(v2, true);
        assert_eq!(
            (s["anon"], s["file"], s["mapped"], s["swapcached"]),
            (1, 2, 3, 4)
        );
    }

    #[test]
    fn cpuinfo_keeps_the_visible_cpus() {
        let host = "processor\t: 0\nmodel name\t: X\n\nprocessor\t: 1\nmodel name\t: X\n\n\
processor\t: 2\nmodel name\t: X\n\n";
        let text = cpuinfo(host, &[1]);
        assert_eq!(text, "processor\t: 1\nmodel name\t: X\n\n");
        assert_eq!(cpuinfo("garbage", &[0]), "garbage");
    }

    #[test]
    fn stat_spreads_container_time_over_visible_cpus() {
        let host = "cpu  1 2 3 4 5 6 7 8 9 10\ncpu0 1 2 3 4 5 6 7 8 9 10\nintr 5 6\nbtime 1000\n\
processes 9\n";
        let used = CpuTicks {
            user: 301,
            system: 100,
        };
        let text = stat(host, &[0, 1], used, 1000, 5000);
        assert_eq!(
            text,
            "cpu  301 0 100 1599 0 0 0 0 0 0\ncpu0 151 0 50 800 0 0 0 0 0 0\n\
cpu1 150 0 50 799 0 0 0 0 0 0\nintr 5 6\nbtime 5000\nprocesses 9\n"
        );
    }

    #[test]
    fn cpu_lists_round_trip() {
        assert_eq!(parse_cpu_list("0-3,8,10-11\n"), vec![0, 1, 2, 3, 8, 10, 11]);
        assert_eq!(parse_cpu_list(""), Vec::<u32>::new());
        assert_eq!(cpu_list(&[0, 1, 2, 3, 8, 10, 11]), "0-3,8,10-11\n");
        assert_eq!(cpu_list(&[0]), "0\n");
    }

    #[test]
    fn visible_cpus_follow_quota_and_cpuset() {
        assert_eq!(quota_cpus(150_000, 100_000), Some(2));
        assert_eq!(quota_cpus(-1, 100_000), None);
        assert_eq!(parse_cpu_max("150000 100000\n"), Some((150_000, 100_000)));
        assert_eq!(parse_cpu_max("max 100000"), None);
        assert_eq!(visible_cpus(&[0, 1, 2, 3], Some(2)), vec![0, 1]);
        assert_eq!(visible_cpus(&[2, 3], None), vec![2, 3]);
        assert_eq!(visible_cpus(&[2, 3], Some(8)), vec![2, 3]);
        assert_eq!(visible_cpus(&[], Some(1)), vec![0]);
    }

    #[test]
    fn affinity_masks_keep_the_first_cpus() {
        let mut mask = [0b1010_1100u8, 0b0000_0001];
        keep_first_cpus(&mut mask, 2);
        assert_eq!(mask, [0b0000_1100, 0]);
        let mut mask = [0b11u8, 0];
        keep_first_cpus(&mut mask, 8);
        assert_eq!(mask, [0b11, 0]);
    }
}
