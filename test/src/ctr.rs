//! `ctr` against the private containerd: every call carries `--address` and
//! the test namespace (through `CONTAINERD_NAMESPACE`, since ctr rejects the
//! flag given twice), a deadline, and captured output.

use std::path::PathBuf;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use crate::command::{command_line, run_command, Input, Output, Running};

/// Deadline of a plain ctr call (list, kill, delete, exec of a quick command).
pub const CTR_TIMEOUT: Duration = Duration::from_secs(30);

/// The ctr client of the test containerd.
#[derive(Debug, Clone)]
pub struct Ctr {
    /// Path of the ctr binary.
    pub binary: PathBuf,
    /// containerd's gRPC socket.
    pub address: String,
    /// containerd namespace of every call.
    pub namespace: String,
}

/// One line of `ctr task ls`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRow {
    /// Task (container) id.
    pub id: String,
    /// Host pid of its init process.
    pub pid: u32,
    /// RUNNING, STOPPED, CREATED, PAUSED, …
    pub status: String,
}

impl Ctr {
    /// The client described by the environment test/lib.sh exports
    /// (RUNSC_CTR, RUNSC_CONTAINERD_ADDRESS, RUNSC_TEST_NAMESPACE), with
    /// test/lib.sh's paths as defaults.
    pub fn from_env() -> Ctr {
        let var =
            |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.to_string());
        Ctr {
            binary: PathBuf::from(var("RUNSC_CTR", "/opt/runsc-rs/containerd/usr/bin/ctr")),
            address: var(
                "RUNSC_CONTAINERD_ADDRESS",
                "/run/runsc-rs-test/containerd.sock",
            ),
            namespace: var("RUNSC_TEST_NAMESPACE", "runsc-test"),
        }
    }

    /// `ctr --address … ARGS` in the test namespace, not yet started.
    pub fn command<S: AsRef<str>>(&self, args: &[S]) -> Command {
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--address").arg(&self.address);
        cmd.args(args.iter().map(AsRef::as_ref));
        cmd.env("CONTAINERD_NAMESPACE", &self.namespace);
        cmd
    }

    /// Starts ctr in the background (killed at `timeout` when finished with
    /// [`Running::finish`], or when dropped).
    #[track_caller]
    pub fn spawn<S: AsRef<str>>(&self, args: &[S], input: Input, timeout: Duration) -> Running {
        let cmd = self.command(args);
        let line = command_line(&cmd);
        Running::spawn(cmd, input, timeout).unwrap_or_else(|e| panic!("cannot start `{line}`: {e}"))
    }

    /// Starts ctr with a new pty as its terminal (for `-t`), `input` typed into it.
    #[track_caller]
    pub fn spawn_with_pty<S: AsRef<str>>(
        &self,
        args: &[S],
        input: Input,
        timeout: Duration,
    ) -> Running {
        let cmd = self.command(args);
        let line = command_line(&cmd);
        Running::spawn_with_pty(cmd, input, timeout)
            .unwrap_or_else(|e| panic!("cannot start `{line}`: {e}"))
    }

    /// Runs ctr to completion; a call still running after `timeout` is killed
    /// and fails the test with what it printed.
    #[track_caller]
    pub fn run<S: AsRef<str>>(&self, args: &[S], timeout: Duration) -> Output {
        self.try_run(args, Input::Null, timeout).expect_finished()
    }

    /// Runs ctr with `input` on its stdin; a timeout is reported in the
    /// output, never a panic.
    #[track_caller]
    pub fn try_run<S: AsRef<str>>(&self, args: &[S], input: Input, timeout: Duration) -> Output {
        run_command(self.command(args), input, timeout)
    }

    /// Runs ctr and fails the test unless it exits with 0.
    #[track_caller]
    pub fn ok<S: AsRef<str>>(&self, args: &[S]) -> Output {
        self.run(args, CTR_TIMEOUT).expect_success()
    }

    /// The tasks of the namespace (`ctr task ls`).
    #[track_caller]
    pub fn tasks(&self) -> Vec<TaskRow> {
        let out = self.ok(&["task", "ls"]);
        parse_task_list(&out.stdout_str())
    }

    /// The task `id`, if it exists.
    #[track_caller]
    pub fn task(&self, id: &str) -> Option<TaskRow> {
        self.tasks().into_iter().find(|t| t.id == id)
    }

    /// Waits until task `id` has `status`; false after `timeout`.
    #[track_caller]
    pub fn wait_task_status(&self, id: &str, status: &str, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        loop {
            if self.task(id).is_some_and(|t| t.status == status) {
                return true;
            }
            if Instant::now() >= end {
                return false;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Host pids of the task's processes (`ctr task ps`).
    #[track_caller]
    pub fn task_pids(&self, id: &str) -> Output {
        self.run(&["task", "ps", id], CTR_TIMEOUT)
    }

    /// Is container `id` listed (`ctr container ls -q`)?
    #[track_caller]
    pub fn container_exists(&self, id: &str) -> bool {
        self.ok(&["container", "ls", "-q"])
            .stdout_str()
            .lines()
            .any(|l| l.trim() == id)
    }

    /// A guard that kills and deletes container `id` (task and container)
    /// when dropped, whatever the test's outcome.
    pub fn guard(&self, id: &str) -> ContainerGuard {
        ContainerGuard {
            ctr: self.clone(),
            id: id.to_string(),
        }
    }

    /// Kills and deletes the task and the container `id`, ignoring what is
    /// already gone; returns what went wrong, if anything. Never panics (it
    /// runs in [`ContainerGuard`]'s drop, possibly while a test unwinds).
    pub fn remove_container(&self, id: &str) -> Result<(), String> {
        let quiet = |args: &[&str]| -> Result<Output, String> {
            let cmd = self.command(args);
            let line = command_line(&cmd);
            Running::spawn(cmd, Input::Null, Duration::from_secs(20))
                .map(Running::try_finish)
                .map_err(|e| format!("cannot start `{line}`: {e}"))
        };
        let _ = quiet(&["task", "kill", "-s", "SIGKILL", id]);
        let del = quiet(&["task", "delete", "-f", id])?;
        let rm = quiet(&["container", "delete", id])?;
        if rm.success() || rm.stderr_str().contains("not found") {
            return Ok(());
        }
        Err(format!("{}\n{}", del.describe(), rm.describe()))
    }
}

/// What `ctr task metrics --format json` reports, cgroup v1 or v2 alike.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// The metrics as ctr prints them (containerd's v1 or v2 Metrics).
    pub json: serde_json::Value,
}

impl Metrics {
    /// Parses ctr's JSON; None when it is not metrics.
    pub fn parse(text: &str) -> Option<Metrics> {
        let json: serde_json::Value = serde_json::from_str(text.trim()).ok()?;
        json.is_object().then_some(Metrics { json })
    }

    fn u64_at(&self, pointer: &str) -> Option<u64> {
        self.json
            .pointer(pointer)
            .and_then(serde_json::Value::as_u64)
    }

    /// Is it cgroup v2's type (it has v2's memory fields or events)?
    pub fn is_v2(&self) -> bool {
        self.json.get("memory_events").is_some()
            || self
                .json
                .pointer("/memory/usage")
                .is_some_and(|v| v.is_u64())
            || self.json.pointer("/cpu/usage_usec").is_some()
    }

    /// Memory in use, in bytes (v1 memory.usage.usage, v2 memory.usage).
    pub fn memory_usage(&self) -> u64 {
        if self.is_v2() {
            self.u64_at("/memory/usage")
        } else {
            self.u64_at("/memory/usage/usage")
        }
        .unwrap_or(0)
    }

    /// The memory limit, in bytes (v1 memory.usage.limit, v2 memory.usage_limit).
    pub fn memory_limit(&self) -> u64 {
        if self.is_v2() {
            self.u64_at("/memory/usage_limit")
        } else {
            self.u64_at("/memory/usage/limit")
        }
        .unwrap_or(0)
    }

    /// CPU time used, in nanoseconds (v1 cpu.usage.total, v2 cpu.usage_usec × 1000).
    pub fn cpu_ns(&self) -> u64 {
        if self.is_v2() {
            self.u64_at("/cpu/usage_usec").unwrap_or(0) * 1000
        } else {
            self.u64_at("/cpu/usage/total").unwrap_or(0)
        }
    }

    /// Tasks in the cgroup (pids.current).
    pub fn pids(&self) -> u64 {
        self.u64_at("/pids/current").unwrap_or(0)
    }

    /// OOM kills in the cgroup (v1 memory_oom_control.oom_kill, v2 memory_events.oom_kill).
    pub fn oom_kills(&self) -> u64 {
        self.u64_at("/memory_oom_control/oom_kill")
            .or_else(|| self.u64_at("/memory_events/oom_kill"))
            .unwrap_or(0)
    }
}

impl Ctr {
    /// `ctr task metrics --format json ID`: the task's metrics, or what
    /// ctr printed instead.
    #[track_caller]
    pub fn task_metrics(&self, id: &str) -> Result<Metrics, String> {
        let out = self.run(&["task", "metrics", "--format", "json", id], CTR_TIMEOUT);
        if !out.success() {
            return Err(out.describe());
        }
        Metrics::parse(&out.stdout_str()).ok_or_else(|| out.describe())
    }
}

/// The exit status `ctr task delete` reports: it logs "exit with non-zero
/// exit code N" for non-zero statuses and nothing for 0.
pub fn exit_status_from_delete(out: &Output) -> Option<u32> {
    if !out.success() {
        return None;
    }
    let text = out.all_output();
    match text.find("exit code ") {
        Some(at) => {
            let digits: String = text[at + "exit code ".len()..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            digits.parse().ok()
        }
        None => Some(0),
    }
}

/// Parses `ctr task ls` (a header, then `ID PID STATUS` rows).
pub fn parse_task_list(text: &str) -> Vec<TaskRow> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let mut cols = line.split_whitespace();
            let id = cols.next()?.to_string();
            let pid = cols.next()?.parse().ok()?;
            let status = cols.next()?.to_string();
            Some(TaskRow { id, pid, status })
        })
        .collect()
}

/// Parses `ctr task ps` (a header, then `PID INFO` rows) into pids.
pub fn parse_task_ps(text: &str) -> Vec<u32> {
    text.lines()
        .skip(1)
        .filter_map(|line| line.split_whitespace().next()?.parse().ok())
        .collect()
}

/// Deletes a container when dropped (kill the task, delete it, delete the
/// container), so that failing tests leave nothing behind either.
pub struct ContainerGuard {
    ctr: Ctr,
    id: String,
}

impl ContainerGuard {
    /// The container id.
    pub fn id(&self) -> &str {
        &self.id
    }
}

impl Drop for ContainerGuard {
    fn drop(&mut self) {
        if let Err(e) = self.ctr.remove_container(&self.id) {
            eprintln!("cleanup of container {} failed:\n{e}", self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn output(stdout: &str, stderr: &str, code: i32) -> Output {
        Output {
            command: "ctr".into(),
            stdout: stdout.as_bytes().to_vec(),
            stderr: stderr.as_bytes().to_vec(),
            code: Some(code),
            signal: None,
            timed_out: false,
            elapsed: Duration::ZERO,
        }
    }

    #[test]
    fn reads_metrics_of_both_hierarchies() {
        let v1 = Metrics::parse(
            r#"{"pids":{"current":3},"cpu":{"usage":{"total":9395365,"per_cpu":[1,2]}},
               "memory":{"usage":{"limit":33554432,"usage":536576}},"memory_oom_control":{"oom_kill":1}}"#,
        )
        .unwrap();
        assert!(!v1.is_v2());
        assert_eq!(
            (
                v1.memory_usage(),
                v1.memory_limit(),
                v1.cpu_ns(),
                v1.pids(),
                v1.oom_kills()
            ),
            (536576, 33554432, 9395365, 3, 1)
        );
        let v2 = Metrics::parse(
            r#"{"pids":{"current":2},"cpu":{"usage_usec":1500},
               "memory":{"usage":4096,"usage_limit":8192},"memory_events":{"oom_kill":2}}"#,
        )
        .unwrap();
        assert!(v2.is_v2());
        assert_eq!(
            (
                v2.memory_usage(),
                v2.memory_limit(),
                v2.cpu_ns(),
                v2.pids(),
                v2.oom_kills()
            ),
            (4096, 8192, 1_500_000, 2, 2)
        );
        assert!(Metrics::parse("ctr: no metrics received").is_none());
    }

    #[test]
    fn parses_task_list() {
        let rows = parse_task_list(
            "TASK    PID      STATUS    \nx4      25634    RUNNING\ne1      7403     STOPPED\n",
        );
        assert_eq!(rows.len(), 2);
        assert_eq!(
            rows[0],
            TaskRow {
                id: "x4".into(),
                pid: 25634,
                status: "RUNNING".into()
            }
        );
        assert_eq!(rows[1].status, "STOPPED");
    }

    #[test]
    fn parses_task_ps() {
        assert_eq!(
            parse_task_ps("PID      INFO\n23946    -\n23959    -\n"),
            vec![23946, 23959]
        );
    }

    #[test]
    fn reads_exit_status_of_delete() {
        let warn = "time=\"2026-11-29T07:48:07Z\" level=warning msg=\"task x4 exit with non-zero exit code 137\"\n";
        assert_eq!(exit_status_from_delete(&output("", warn, 0)), Some(137));
        assert_eq!(exit_status_from_delete(&output("", "", 0)), Some(0));
        assert_eq!(
            exit_status_from_delete(&output("", "ctr: not found", 1)),
            None
        );
    }
}
