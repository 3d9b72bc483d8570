//! What a container leaves on the host: processes (found in /proc), mounts
//! (in /proc/self/mountinfo), state and bundle directories, memory (PSS).

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// argv[0] of the sandbox process.
pub const SANDBOX_ARGV0: &str = "runsc-sandbox";
/// Prefix of every containerd shim binary's name.
pub const SHIM_PREFIX: &str = "containerd-shim-";

/// A host process, as /proc shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Process {
    /// Host pid.
    pub pid: i32,
    /// Parent's host pid.
    pub ppid: i32,
    /// State letter (R, S, Z, …).
    pub state: char,
    /// Start time in clock ticks since boot: with the pid, names the process uniquely.
    pub start_time: u64,
    /// `comm` (truncated to 15 bytes by the kernel).
    pub comm: String,
    /// Command line.
    pub argv: Vec<String>,
}

impl Process {
    /// Reads /proc/PID; None once the process is gone (or for a kernel
    /// thread's empty command line, which is kept as an empty argv).
    pub fn read(pid: i32) -> Option<Process> {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let open = stat.find('(')?;
        let close = stat.rfind(')')?;
        let comm = stat.get(open + 1..close)?.to_string();
        // Fields after the comm, starting with field 3 (state).
        let rest: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
        let state = rest.first()?.chars().next()?;
        let ppid = rest.get(1)?.parse().ok()?;
        let start_time = rest.get(19)?.parse().ok()?;
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let argv = cmdline
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        Some(Process {
            pid,
            ppid,
            state,
            start_time,
            comm,
            argv,
        })
    }

    /// The base name of argv[0].
    pub fn argv0_name(&self) -> &str {
        self.argv
            .first()
            .map(|a| a.rsplit('/').next().unwrap_or(a))
            .unwrap_or("")
    }

    /// Is this very process (same pid, same start time) still there, zombie or not?
    pub fn is_present(&self) -> bool {
        Process::read(self.pid).is_some_and(|p| p.start_time == self.start_time)
    }

    /// Is this very process still there and not a zombie?
    pub fn is_running(&self) -> bool {
        Process::read(self.pid)
            .is_some_and(|p| p.start_time == self.start_time && !matches!(p.state, 'Z' | 'X'))
    }

    /// Is it a containerd shim serving `id` (`-id ID`, `--id ID` or `-id=ID`)?
    pub fn is_shim_for(&self, id: &str) -> bool {
        self.argv0_name().starts_with(SHIM_PREFIX) && flag_value(&self.argv, "id") == Some(id)
    }

    /// Is it a sandbox process?
    pub fn is_sandbox(&self) -> bool {
        self.argv0_name() == SANDBOX_ARGV0
    }

    /// Sends `signal` to it (if it is still this process).
    pub fn signal(&self, signal: Signal) -> nix::Result<()> {
        if !self.is_present() {
            return Err(nix::errno::Errno::ESRCH);
        }
        kill(Pid::from_raw(self.pid), signal)
    }

    /// Its proportional set size in KiB (smaps_rollup's Pss).
    pub fn pss_kib(&self) -> Option<u64> {
        let rollup = fs::read_to_string(format!("/proc/{}/smaps_rollup", self.pid)).ok()?;
        rollup
            .lines()
            .find_map(|l| l.strip_prefix("Pss:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
    }

    /// One line for messages: pid, state and command line.
    pub fn describe(&self) -> String {
        format!(
            "pid {} ({}) ppid {}: {}",
            self.pid,
            self.state,
            self.ppid,
            self.argv.join(" ")
        )
    }
}

/// The value of Go-style flag `name` in `argv`: `-name V`, `--name V`,
/// `-name=V` or `--name=V`.
pub fn flag_value<'a>(argv: &'a [String], name: &str) -> Option<&'a str> {
    let mut args = argv.iter().skip(1);
    while let Some(arg) = args.next() {
        let Some(flag) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) else {
            continue;
        };
        if flag == name {
            return args.next().map(String::as_str);
        }
        if let Some(value) = flag.strip_prefix(name).and_then(|v| v.strip_prefix('=')) {
            return Some(value);
        }
    }
    None
}

/// Every process on the host.
pub fn processes() -> Vec<Process> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter_map(Process::read)
        .collect()
}

/// The descendants of `pid` among `all` (children, their children, …).
pub fn descendants(all: &[Process], pid: i32) -> Vec<Process> {
    let mut found = Vec::new();
    let mut parents = vec![pid];
    while let Some(parent) = parents.pop() {
        for p in all.iter().filter(|p| p.ppid == parent && p.pid != pid) {
            if !found.iter().any(|f: &Process| f.pid == p.pid) {
                parents.push(p.pid);
                found.push(p.clone());
            }
        }
    }
    found
}

/// The shim processes serving container (or sandbox) `id`.
pub fn shim_processes(id: &str) -> Vec<Process> {
    processes()
        .into_iter()
        .filter(|p| p.is_shim_for(id))
        .collect()
}

/// The sandbox processes of `id`: `runsc-sandbox` processes that descend
/// from a shim serving `id`, or whose `--id` flag names `id` (see
/// [`names_container`]).
pub fn sandbox_processes(id: &str) -> Vec<Process> {
    let all = processes();
    let mut found: Vec<Process> = all
        .iter()
        .filter(|p| p.is_shim_for(id))
        .flat_map(|shim| descendants(&all, shim.pid))
        .filter(Process::is_sandbox)
        .collect();
    for p in all
        .iter()
        .filter(|p| p.is_sandbox() && flag_value(&p.argv, "id") == Some(id))
    {
        if !found.iter().any(|f| f.pid == p.pid) {
            found.push(p.clone());
        }
    }
    found
}

/// A process whose executable is `binary`.
pub fn process_of_executable(binary: &Path) -> Option<Process> {
    processes()
        .into_iter()
        .find(|p| fs::read_link(format!("/proc/{}/exe", p.pid)).is_ok_and(|exe| exe == binary))
}

/// Keeps a process stopped (SIGSTOP) until dropped (SIGCONT), so that a test
/// can act before it reacts.
pub struct Stopped {
    process: Process,
}

/// A stopped process is resumed after this long even if the test dies first.
const STOP_WATCHDOG_SECS: u32 = 30;

impl Stopped {
    /// Stops `process`; a detached watchdog resumes it after
    /// STOP_WATCHDOG_SECS should this test process be killed meanwhile.
    pub fn new(process: Process) -> nix::Result<Stopped> {
        let watchdog = format!("sleep {STOP_WATCHDOG_SECS}; kill -CONT {}", process.pid);
        std::process::Command::new("sh")
            .args(["-c", &watchdog])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|e| nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))?;
        process.signal(Signal::SIGSTOP)?;
        Ok(Stopped { process })
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        if let Err(e) = self.process.signal(Signal::SIGCONT) {
            eprintln!("cannot resume {}: {e}", self.process.describe());
        }
    }
}

/// The lines of /proc/self/mountinfo that contain `needle`.
pub fn mounts_containing(needle: &str) -> Vec<String> {
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_string)
        .collect()
}

/// Cgroup directories (under /sys/fs/cgroup, 6 levels deep at most) whose
/// name contains `id`.
pub fn cgroups_containing(id: &str) -> Vec<PathBuf> {
    fn walk(dir: &Path, depth: usize, id: &str, found: &mut Vec<PathBuf>) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for entry in entries.filter_map(Result::ok) {
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let path = entry.path();
            if entry.file_name().to_string_lossy().contains(id) {
                found.push(path);
            } else if depth > 1 {
                walk(&path, depth - 1, id, found);
            }
        }
    }
    let mut found = Vec::new();
    walk(Path::new("/sys/fs/cgroup"), 6, id, &mut found);
    found
}

/// Does a sandbox name `name` belong to container `id`? The shim may qualify
/// the id (e.g. `NAMESPACE--ID`), so `ID` and `…-ID` both match.
pub fn names_container(name: &str, id: &str) -> bool {
    name == id || name.ends_with(&format!("-{id}"))
}

/// Root of the runsc-rs state directories (RUNSC_STATE_ROOT, default /run/runsc-rs).
pub fn runsc_state_root() -> PathBuf {
    PathBuf::from(std::env::var("RUNSC_STATE_ROOT").unwrap_or_else(|_| "/run/runsc-rs".to_string()))
}

/// The runsc-rs state directories of container `id`: entries of the state
/// root named `ID` or `…-ID`.
pub fn runsc_state_dirs(id: &str) -> Vec<PathBuf> {
    let Ok(dir) = fs::read_dir(runsc_state_root()) else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| names_container(n, id))
        })
        .map(|e| e.path())
        .collect()
}

/// containerd's bundle directory of task `id` in `namespace` (under
/// RUNSC_CONTAINERD_STATE, default /run/runsc-rs-test/containerd as test/lib.sh sets).
pub fn bundle_dir(namespace: &str, id: &str) -> PathBuf {
    let state = std::env::var("RUNSC_CONTAINERD_STATE")
        .unwrap_or_else(|_| "/run/runsc-rs-test/containerd".to_string());
    PathBuf::from(state)
        .join("io.containerd.runtime.v2.task")
        .join(namespace)
        .join(id)
}

/// What of container or pod `id` is still on the host, one line each:
/// its shim and sandbox processes (not already in `left`), mounts and
/// cgroups naming it. Appended to `left`.
pub fn traces_of(id: &str, left: &mut Vec<String>) {
    for p in shim_processes(id).into_iter().chain(sandbox_processes(id)) {
        let line = format!("process {}", p.describe());
        if !left.contains(&line) {
            left.push(line);
        }
    }
    left.extend(
        mounts_containing(id)
            .into_iter()
            .map(|m| format!("mount {m}")),
    );
    left.extend(
        cgroups_containing(id)
            .into_iter()
            .map(|c| format!("cgroup {}", c.display())),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<String> {
        s.split(' ').map(str::to_string).collect()
    }

    #[test]
    fn reads_flags_go_style() {
        let shim =
            argv("/usr/local/bin/containerd-shim-runsc-v2 -namespace ns -id e1 -address /a.sock");
        assert_eq!(flag_value(&shim, "id"), Some("e1"));
        assert_eq!(flag_value(&shim, "namespace"), Some("ns"));
        let sandbox = argv("runsc-sandbox boot --id=e1 --control-fd=4");
        assert_eq!(flag_value(&sandbox, "id"), Some("e1"));
        assert_eq!(flag_value(&sandbox, "i"), None);
    }

    #[test]
    fn matches_qualified_sandbox_names() {
        assert!(names_container("e2e-a-1", "e2e-a-1"));
        assert!(names_container("runsc-test--e2e-a-1", "e2e-a-1"));
        assert!(!names_container("e2e-a-12", "e2e-a-1"));
        assert!(!names_container("e2e-a-1x", "e2e-a-1"));
    }

    #[test]
    fn recognises_shims_and_sandboxes() {
        let shim = Process {
            pid: 2,
            ppid: 1,
            state: 'S',
            start_time: 1,
            comm: "containerd-shim".into(),
            argv: argv("/opt/bin/containerd-shim-runc-v2 -namespace n -id x3 -address /s"),
        };
        assert!(shim.is_shim_for("x3"));
        assert!(!shim.is_shim_for("x"));
        assert!(!shim.is_sandbox());
    }

    #[test]
    fn reads_itself_and_finds_children() {
        let me = Process::read(std::process::id() as i32).expect("own /proc entry");
        assert!(me.is_present());
        assert!(me.pss_kib().is_some_and(|k| k > 0));
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .expect("sleep");
        let kids = descendants(&processes(), me.pid);
        assert!(kids.iter().any(|k| k.pid == child.id() as i32), "{kids:?}");
        let _ = child.kill();
        let _ = child.wait();
    }
}
