//! End-to-end tests of a container's resources through `ctr` against the
//! private containerd of test/containerd.sh: OOM kills (TaskOOM before
//! TaskExit 137, the count still readable after the exit), Stats that
//! follow memory, CPU and processes, Pause and Resume (the freezer, with
//! their events), and Update of a running container's memory limit.
//!
//! ctr has no command for Task.Update (only the CRI sends it), so that test
//! calls the shim's Task service over its socket as containerd would.
//!
//! The runtime under test is RUNSC_TEST_RUNTIME (default
//! io.containerd.runsc.v2); the same assertions hold for
//! io.containerd.runc.v2 except where a test says so. Run with RUNSC_E2E=1
//! and `--test-threads=1` (test/run.sh); without RUNSC_E2E every test
//! prints a skip line and passes.
//!
//! Files the containers write go to /dev/shm: a tmpfs, so what is written
//! there is memory charged to the container's cgroup.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use runsc_tests::ctr::{exit_status_from_delete, Metrics};
use runsc_tests::events::events_of;
use runsc_tests::host;
use runsc_tests::shim::{shim_socket, update_task, update_task_with_type};
use runsc_tests::{unique_id, wait_until, E2e, Event, EventsRecorder, CTR_TIMEOUT};

/// Deadline of a `ctr run` (cold start included).
const RUN_TIMEOUT: Duration = Duration::from_secs(60);
/// How long an event may take to arrive.
const EVENT_TIMEOUT: Duration = Duration::from_secs(15);
const MIB: u64 = 1024 * 1024;

// ---------------------------------------------------------------- helpers

/// Starts `cmd` detached in container `id` with `flags` (e.g. a memory
/// limit); the guard removes it when dropped. Unlike
/// [`E2e::start_detached`] it does not wait for RUNNING: a command may end
/// at once.
#[track_caller]
fn run_detached(t: &E2e, id: &str, flags: &[&str], cmd: &[&str]) -> runsc_tests::ContainerGuard {
    let guard = t.ctr.guard(id);
    let mut all = vec!["-d"];
    all.extend_from_slice(flags);
    let out = t.ctr.run(&t.run_args(&all, id, cmd), RUN_TIMEOUT);
    assert!(
        out.success(),
        "starting container {id} failed: {}",
        out.describe()
    );
    guard
}

/// `ctr task exec` of `cmd` in `id`, which must succeed; its stdout.
#[track_caller]
fn exec_ok(t: &E2e, id: &str, cmd: &[&str]) -> String {
    let eid = unique_id("x");
    let mut args = vec!["task", "exec", "--exec-id", &eid, id];
    args.extend_from_slice(cmd);
    t.ctr.ok(&args).stdout_str()
}

#[track_caller]
fn metrics(t: &E2e, id: &str) -> Metrics {
    t.ctr
        .task_metrics(id)
        .unwrap_or_else(|e| panic!("ctr task metrics {id} failed: {e}"))
}

/// Index of the first event about `id` matching `pred`.
fn position(events: &[Event], pred: impl Fn(&Event) -> bool) -> Option<usize> {
    events.iter().position(pred)
}

/// Topics of `events`, for messages.
fn topics(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .map(|e| match e.str_field("id").or(e.str_field("exec_id")) {
            Some(id) if e.topic == "/tasks/exit" => format!("{} ({id})", e.topic),
            _ => e.topic.clone(),
        })
        .collect()
}

/// Checks that `id`'s events hold a TaskOOM and, after it, the init's
/// TaskExit with status 137.
#[track_caller]
fn assert_oom_then_exit_137(all: &[Event], id: &str) {
    let evs = events_of(all, id);
    let oom = position(&evs, |e| e.topic == "/tasks/oom");
    let exit = position(&evs, |e| {
        e.topic == "/tasks/exit" && e.str_field("id") == Some(id)
    });
    let (Some(oom), Some(exit)) = (oom, exit) else {
        panic!(
            "{id}: no /tasks/oom and init /tasks/exit in {:?}",
            topics(&evs)
        );
    };
    assert!(
        oom < exit,
        "{id}: /tasks/oom must come before /tasks/exit: {:?}",
        topics(&evs)
    );
    assert_eq!(
        evs[exit].u64_field("exit_status"),
        137,
        "{id}: exit status of an OOM-killed init: {:?}",
        evs[exit].fields
    );
}

/// The counter file a container's loop writes, read from the host through
/// the init's root (works while the container is frozen, unlike an exec).
fn read_counter_from_host(pid: u32) -> Option<u64> {
    let path = PathBuf::from(format!("/proc/{pid}/root/dev/shm/counter"));
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The shim socket serving task `id` (from its bundle's bootstrap.json).
#[track_caller]
fn socket_of(t: &E2e, id: &str) -> PathBuf {
    let bundle = host::bundle_dir(&t.ctr.namespace, id);
    shim_socket(&bundle)
        .unwrap_or_else(|| panic!("no shim socket in {}/bootstrap.json", bundle.display()))
}

// ---------------------------------------------------------------- OOM

/// An init that allocates beyond its 32 MiB limit is OOM-killed: TaskOOM,
/// then TaskExit 137; `ctr run` exits with 137.
#[test]
fn oom_kill_of_the_init_is_reported_before_its_exit() {
    let Some(t) = E2e::setup("oom_kill_of_the_init_is_reported_before_its_exit") else {
        return;
    };
    let id = unique_id("e2e-oom");
    let _guard = t.ctr.guard(&id);
    let rec = EventsRecorder::start(&t.ctr);
    // tail keeps every line it reads; /dev/zero is one endless line.
    let out = t.ctr.run(
        &t.run_args(
            &["--rm", "--memory-limit", "33554432"],
            &id,
            &["tail", "/dev/zero"],
        ),
        RUN_TIMEOUT,
    );
    assert_eq!(
        out.code,
        Some(137),
        "ctr run of an OOM-killed init: {}",
        out.describe()
    );
    rec.wait_for_topic(&id, "/tasks/delete", EVENT_TIMEOUT);
    assert_oom_then_exit_137(&rec.stop(), &id);
}

/// After an OOM kill the task stays until deleted, and its Stats still
/// answer with the kill counted (containerd's CRI reads them after an exit
/// 137); the delete reports 137.
#[test]
fn oom_kills_are_counted_in_stats_after_the_exit() {
    let Some(t) = E2e::setup("oom_kills_are_counted_in_stats_after_the_exit") else {
        return;
    };
    let id = unique_id("e2e-oomstat");
    let rec = EventsRecorder::start(&t.ctr);
    let _guard = run_detached(
        &t,
        &id,
        &["--memory-limit", "33554432"],
        &["tail", "/dev/zero"],
    );
    assert!(
        rec.wait_for(EVENT_TIMEOUT, |e| e.topic == "/tasks/exit"
            && e.container_id.as_deref() == Some(&id))
            .is_some(),
        "{id}: no /tasks/exit within {EVENT_TIMEOUT:?}"
    );
    let m = metrics(&t, &id);
    assert!(
        m.oom_kills() >= 1,
        "{id}: oom_kill after the exit: {:#}",
        m.json
    );
    assert_eq!(m.memory_limit(), 32 * MIB, "{id}: limit: {:#}", m.json);
    if !m.is_v2() {
        let failcnt = m
            .json
            .pointer("/memory/usage/failcnt")
            .and_then(|v| v.as_u64());
        assert!(
            failcnt.unwrap_or(0) > 0,
            "{id}: memory failcnt: {:#}",
            m.json
        );
    }
    let del = t.ctr.ok(&["task", "delete", &id]);
    assert_eq!(
        exit_status_from_delete(&del),
        Some(137),
        "{}",
        del.describe()
    );
    assert_oom_then_exit_137(&rec.stop(), &id);
}

/// A process other than the init that is OOM-killed yields TaskOOM while
/// the container goes on running.
#[test]
fn oom_kill_of_a_child_is_reported_while_the_container_runs() {
    let Some(t) = E2e::setup("oom_kill_of_a_child_is_reported_while_the_container_runs") else {
        return;
    };
    let id = unique_id("e2e-oomchild");
    let rec = EventsRecorder::start(&t.ctr);
    let _guard = run_detached(
        &t,
        &id,
        &["--memory-limit", "33554432"],
        &["sh", "-c", "tail /dev/zero; exec tail -f /dev/null"],
    );
    assert!(
        rec.wait_for_topic(&id, "/tasks/oom", EVENT_TIMEOUT)
            .is_some(),
        "{id}: no /tasks/oom within {EVENT_TIMEOUT:?}: {:?}",
        topics(&events_of(&rec.events(), &id))
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        t.ctr.task(&id).map(|r| r.status),
        Some("RUNNING".to_string()),
        "{id}: the init survives its child's OOM kill"
    );
    let evs = events_of(&rec.stop(), &id);
    assert!(
        !evs.iter().any(|e| e.topic == "/tasks/exit"),
        "{id}: no exit yet: {:?}",
        topics(&evs)
    );
    assert_eq!(metrics(&t, &id).oom_kills(), 1);
}

// ---------------------------------------------------------------- Stats

/// Stats follow the container: memory usage rises by what it writes into
/// a tmpfs, CPU time by a busy second, the pids count by the processes it
/// starts and stops.
#[test]
fn stats_follow_memory_cpu_and_pids() {
    let Some(t) = E2e::setup("stats_follow_memory_cpu_and_pids") else {
        return;
    };
    let id = unique_id("e2e-stats");
    // A shell as the init: it reaps the orphans the test leaves it (the
    // killed background sleeps), as a container's pid 1 must.
    let _guard = run_detached(
        &t,
        &id,
        &["--memory-limit", "268435456"],
        &["sh", "-c", "while true; do sleep 1; done"],
    );
    assert!(t
        .ctr
        .wait_task_status(&id, "RUNNING", Duration::from_secs(10)));
    let m0 = metrics(&t, &id);
    assert_eq!(m0.memory_limit(), 256 * MIB, "{id}: limit: {:#}", m0.json);
    assert!(m0.pids() >= 1, "{id}: pids: {:#}", m0.json);

    // Memory: 50 MiB into /dev/shm.
    exec_ok(
        &t,
        &id,
        &[
            "dd",
            "if=/dev/zero",
            "of=/dev/shm/fill",
            "bs=1M",
            "count=50",
        ],
    );
    let m1 = metrics(&t, &id);
    let rise = m1.memory_usage().saturating_sub(m0.memory_usage());
    println!(
        "{id}: memory {} -> {} bytes (+{} MiB)",
        m0.memory_usage(),
        m1.memory_usage(),
        rise / MIB
    );
    assert!(
        rise >= 45 * MIB,
        "{id}: memory rose by {rise} bytes only: {:#}",
        m1.json
    );
    exec_ok(&t, &id, &["rm", "/dev/shm/fill"]);

    // CPU: a busy second.
    exec_ok(&t, &id, &["sh", "-c", "timeout 1 yes >/dev/null; true"]);
    let m2 = metrics(&t, &id);
    let cpu = m2.cpu_ns().saturating_sub(m1.cpu_ns());
    println!("{id}: cpu +{} ms", cpu / 1_000_000);
    assert!(
        cpu >= 250_000_000,
        "{id}: cpu rose by {cpu} ns only: {:#}",
        m2.json
    );

    // Pids: five background sleeps, then none (give or take the init's
    // own `sleep 1`).
    exec_ok(
        &t,
        &id,
        &[
            "sh",
            "-c",
            "for i in 1 2 3 4 5; do sleep 600 </dev/null >/dev/null 2>&1 & done",
        ],
    );
    let mut p1 = 0;
    let up = wait_until(Duration::from_secs(10), || {
        p1 = metrics(&t, &id).pids();
        p1 >= m2.pids() + 5
    });
    assert!(
        up,
        "{id}: pids {} -> {p1} after starting 5 sleeps",
        m2.pids()
    );
    exec_ok(&t, &id, &["killall", "sleep"]);
    let mut p2 = p1;
    let down = wait_until(Duration::from_secs(10), || {
        p2 = metrics(&t, &id).pids();
        p2 + 5 <= p1
    });
    assert!(down, "{id}: pids {p1} -> {p2} after killing the sleeps");
    println!("{id}: pids {} -> {p1} -> {p2}", m2.pids());
}

/// A Stats call of an unknown task fails; it does not hang.
#[test]
fn stats_of_an_unknown_task_fail() {
    let Some(t) = E2e::setup("stats_of_an_unknown_task_fail") else {
        return;
    };
    let out = t
        .ctr
        .run(&["task", "metrics", &unique_id("e2e-nosuch")], CTR_TIMEOUT);
    assert!(!out.success(), "{}", out.describe());
}

// ---------------------------------------------------------------- Pause

/// Pause freezes a counter loop (no progress while paused, State PAUSED,
/// TaskPaused), Resume lets it go on (TaskResumed); pausing twice, resuming
/// a running task and pausing a stopped one fail.
#[test]
fn pause_freezes_and_resume_continues() {
    let Some(t) = E2e::setup("pause_freezes_and_resume_continues") else {
        return;
    };
    let id = unique_id("e2e-pause");
    let rec = EventsRecorder::start(&t.ctr);
    let _guard = run_detached(
        &t,
        &id,
        &[],
        &[
            "sh",
            "-c",
            "i=0; while true; do i=$((i+1)); echo $i >/dev/shm/next; mv /dev/shm/next /dev/shm/counter; usleep 20000; done",
        ],
    );
    assert!(t
        .ctr
        .wait_task_status(&id, "RUNNING", Duration::from_secs(10)));
    let pid = t.ctr.task(&id).map(|r| r.pid).unwrap_or(0);
    // The loop rewrites the file: a read may fall between its truncation
    // and its write, so an empty read is read again.
    let read_exec = |t: &E2e| -> u64 {
        let mut text = String::new();
        for _ in 0..20 {
            text = exec_ok(t, &id, &["cat", "/dev/shm/counter"]);
            if let Ok(n) = text.trim().parse() {
                return n;
            }
        }
        panic!("{id}: counter {text:?}")
    };
    assert!(wait_until(Duration::from_secs(10), || {
        read_counter_from_host(pid).is_some()
    }));
    let a = read_exec(&t);
    std::thread::sleep(Duration::from_millis(300));
    let b = read_exec(&t);
    assert!(b > a, "{id}: the loop runs: {a} then {b}");

    let resume_fails = t.ctr.run(&["task", "resume", &id], CTR_TIMEOUT);
    assert!(
        !resume_fails.success(),
        "resume of a running task: {}",
        resume_fails.describe()
    );

    t.ctr.ok(&["task", "pause", &id]);
    assert!(
        rec.wait_for_topic(&id, "/tasks/paused", EVENT_TIMEOUT)
            .is_some(),
        "{id}: no /tasks/paused"
    );
    assert_eq!(t.ctr.task(&id).map(|r| r.status), Some("PAUSED".into()));
    let frozen_at = read_counter_from_host(pid).expect("counter readable while paused");
    std::thread::sleep(Duration::from_millis(1000));
    let still = read_counter_from_host(pid).expect("counter readable while paused");
    assert_eq!(frozen_at, still, "{id}: the loop went on while paused");
    let twice = t.ctr.run(&["task", "pause", &id], CTR_TIMEOUT);
    assert!(
        !twice.success(),
        "pausing a paused task: {}",
        twice.describe()
    );
    if t.is_runsc() {
        // runsc refuses an exec into a frozen container, as runc does
        // (its sandbox may be frozen with it).
        let eid = unique_id("x");
        let exec = t.ctr.run(
            &["task", "exec", "--exec-id", &eid, &id, "true"],
            CTR_TIMEOUT,
        );
        assert!(!exec.success(), "exec while paused: {}", exec.describe());
        assert!(
            exec.all_output().contains("paused"),
            "exec while paused: {}",
            exec.describe()
        );
    }

    let t0 = Instant::now();
    t.ctr.ok(&["task", "resume", &id]);
    println!("{id}: resume took {:?}", t0.elapsed());
    assert!(
        rec.wait_for_topic(&id, "/tasks/resumed", EVENT_TIMEOUT)
            .is_some(),
        "{id}: no /tasks/resumed"
    );
    assert_eq!(t.ctr.task(&id).map(|r| r.status), Some("RUNNING".into()));
    let c = read_exec(&t);
    assert!(c >= still, "{id}: counter went back: {still} then {c}");
    std::thread::sleep(Duration::from_millis(300));
    let d = read_exec(&t);
    assert!(d > c, "{id}: the loop goes on after resume: {c} then {d}");
    println!("{id}: counter {a} {b} | paused {frozen_at} {still} | resumed {c} {d}");

    // A paused task dies of SIGKILL (ctr task kill, or delete -f).
    t.ctr.ok(&["task", "pause", &id]);
    t.ctr.ok(&["task", "kill", "-s", "SIGKILL", &id]);
    assert!(
        t.ctr
            .wait_task_status(&id, "STOPPED", Duration::from_secs(10)),
        "{id}: a paused task killed with SIGKILL does not stop: {:?}",
        t.ctr.task(&id)
    );
    let stopped = t.ctr.run(&["task", "pause", &id], CTR_TIMEOUT);
    assert!(
        !stopped.success(),
        "pausing a stopped task: {}",
        stopped.describe()
    );

    let evs = events_of(&rec.stop(), &id);
    let order: Vec<&str> = evs
        .iter()
        .map(|e| e.topic.as_str())
        .filter(|t| matches!(*t, "/tasks/paused" | "/tasks/resumed" | "/tasks/exit"))
        .collect();
    let first_pause = order.iter().position(|t| *t == "/tasks/paused");
    let first_resume = order.iter().position(|t| *t == "/tasks/resumed");
    assert!(
        first_pause.is_some() && first_pause < first_resume,
        "{id}: events {order:?}"
    );
}

// ---------------------------------------------------------------- Update

/// Task.Update (as containerd's CRI sends it) raises the memory limit of a
/// running container: the limit reads back, and it may now hold 50 MiB of
/// tmpfs that its old 32 MiB limit could not. A payload that is not
/// LinuxResources is refused with InvalidArgument.
#[test]
fn update_raises_the_memory_limit() {
    let Some(t) = E2e::setup("update_raises_the_memory_limit") else {
        return;
    };
    let id = unique_id("e2e-update");
    let rec = EventsRecorder::start(&t.ctr);
    let _guard = run_detached(
        &t,
        &id,
        &["--memory-limit", "33554432"],
        &["tail", "-f", "/dev/null"],
    );
    assert!(t
        .ctr
        .wait_task_status(&id, "RUNNING", Duration::from_secs(10)));
    assert_eq!(metrics(&t, &id).memory_limit(), 32 * MIB);
    let socket = socket_of(&t, &id);
    let ns = t.ctr.namespace.clone();

    let raised = 128 * MIB;
    update_task(
        &socket,
        &ns,
        &id,
        &format!(r#"{{"memory":{{"limit":{raised}}}}}"#),
        CTR_TIMEOUT,
    )
    .unwrap_or_else(|e| panic!("{id}: Task.Update failed: {e}"));
    let m = metrics(&t, &id);
    assert_eq!(
        m.memory_limit(),
        raised,
        "{id}: limit after the update: {:#}",
        m.json
    );
    let v1_file = PathBuf::from(format!(
        "/sys/fs/cgroup/memory/{ns}/{id}/memory.limit_in_bytes"
    ));
    if let Ok(text) = std::fs::read_to_string(&v1_file) {
        assert_eq!(text.trim(), raised.to_string(), "{}", v1_file.display());
    }
    exec_ok(
        &t,
        &id,
        &[
            "dd",
            "if=/dev/zero",
            "of=/dev/shm/fill",
            "bs=1M",
            "count=50",
        ],
    );
    let m = metrics(&t, &id);
    assert!(m.memory_usage() >= 50 * MIB, "{id}: usage {:#}", m.json);
    assert_eq!(m.oom_kills(), 0, "{id}: no OOM kill under the raised limit");
    assert_eq!(t.ctr.task(&id).map(|r| r.status), Some("RUNNING".into()));

    if t.is_runsc() {
        let bad = update_task(&socket, &ns, &id, "not json", CTR_TIMEOUT).unwrap_err();
        assert_eq!(bad.code, Some(3), "{id}: bad JSON: {bad}");
        let windows = update_task_with_type(
            &socket,
            &ns,
            &id,
            "types.containerd.io/opencontainers/runtime-spec/1/WindowsResources",
            b"{}",
            CTR_TIMEOUT,
        )
        .unwrap_err();
        assert_eq!(windows.code, Some(3), "{id}: WindowsResources: {windows}");
    }
    let evs = events_of(&rec.stop(), &id);
    assert!(
        !evs.iter().any(|e| e.topic == "/tasks/oom"),
        "{id}: {:?}",
        topics(&evs)
    );
}

// ---------------------------------------------------------------- limits seen inside

/// What a container reads about its CPUs and memory.
#[derive(Debug)]
struct SeenLimits {
    nproc: u32,
    online: String,
    cpuinfo_processors: usize,
    /// MemTotal, MemFree, MemAvailable in kB.
    mem: (u64, u64, u64),
    /// Lines of /proc/stat naming a CPU ("cpu " and "cpuN").
    stat_cpu_lines: usize,
    btime: u64,
    uptime_secs: f64,
    /// `free`'s total and used memory in kB (busybox `free` asks
    /// sysinfo(2), and /proc/meminfo for the cache).
    free_total: u64,
    free_used: u64,
}

/// Parses the output of [`SHOW_LIMITS`].
fn seen_limits(text: &str) -> SeenLimits {
    let section = |name: &str| -> Vec<&str> {
        text.split(&format!("=={name}==\n"))
            .nth(1)
            .map(|rest| rest.split("==").next().unwrap_or_default())
            .unwrap_or_default()
            .lines()
            .collect()
    };
    let meminfo = section("meminfo");
    let kb = |key: &str| -> u64 {
        meminfo
            .iter()
            .find(|l| l.starts_with(&format!("{key}:")))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {key} in /proc/meminfo: {text}"))
    };
    let stat = section("stat");
    let free = section("free");
    let free_column = |i: usize| -> u64 {
        free.iter()
            .find_map(|l| l.strip_prefix("Mem:"))
            .and_then(|l| l.split_whitespace().nth(i))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no Mem: column {i} from free: {text}"))
    };
    SeenLimits {
        nproc: section("nproc")
            .first()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("nproc printed no number: {text}")),
        online: section("online").first().unwrap_or(&"").trim().to_string(),
        cpuinfo_processors: section("cpuinfo")
            .iter()
            .filter(|l| l.starts_with("processor"))
            .count(),
        mem: (kb("MemTotal"), kb("MemFree"), kb("MemAvailable")),
        stat_cpu_lines: stat.iter().filter(|l| l.starts_with("cpu")).count(),
        btime: stat
            .iter()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no btime in /proc/stat: {text}")),
        free_total: free_column(0),
        free_used: free_column(1),
        uptime_secs: section("uptime")
            .first()
            .and_then(|l| l.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no uptime in /proc/uptime: {text}")),
    }
}

/// The shell script printing what [`seen_limits`] parses. `cat` is
/// busybox's, which copies with sendfile; the `ls -l` before one makes it
/// copy right after a stat.
const SHOW_LIMITS: &str = "echo ==nproc==; nproc; echo ==online==; \
cat /sys/devices/system/cpu/online; echo ==cpuinfo==; cat /proc/cpuinfo; \
echo ==meminfo==; ls -l /proc/meminfo >/dev/null; cat /proc/meminfo; echo ==stat==; cat /proc/stat; \
echo ==uptime==; cat /proc/uptime; echo ==free==; free; echo ==end==";

fn host_cpus() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
}

fn host_mem_total_kb() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Inside a container limited to 1 CPU and 256 MiB, nproc, /proc/cpuinfo,
/// /sys/devices/system/cpu/online, /proc/meminfo, `free` (sysinfo(2)),
/// /proc/stat and /proc/uptime tell the limits (and the pod's age), for the init and for
/// execs; MemFree falls as the container fills memory; after Task.Update
/// to 2 CPUs and 512 MiB they tell the new limits. A container without
/// limits sees the host. (runc shows the host's values in every case: with
/// it, only that last part is checked.)
#[test]
fn workloads_see_their_limits_and_follow_updates() {
    let Some(t) = E2e::setup("workloads_see_their_limits_and_follow_updates") else {
        return;
    };
    let host_kb = host_mem_total_kb();
    let limits = ["--memory-limit", "268435456", "--cpus", "1"];

    // Unlimited: the host's figures.
    let id = unique_id("e2e-nolimits");
    let _guard = t.ctr.guard(&id);
    let out = t.ctr.run(
        &t.run_args(&["--rm"], &id, &["sh", "-c", SHOW_LIMITS]),
        RUN_TIMEOUT,
    );
    assert!(out.success(), "{id}: {}", out.describe());
    let seen = seen_limits(&out.stdout_str());
    assert_eq!(
        (seen.nproc, seen.mem.0, seen.free_total),
        (host_cpus(), host_kb, host_kb),
        "{id}: a container without limits sees the host: {seen:?}"
    );
    if !t.is_runsc() {
        return;
    }

    // The init of a limited container.
    let before = unix_now();
    let id = unique_id("e2e-limits");
    let _guard = t.ctr.guard(&id);
    let mut args = vec!["--rm"];
    args.extend_from_slice(&limits);
    let out = t.ctr.run(
        &t.run_args(&args, &id, &["sh", "-c", SHOW_LIMITS]),
        RUN_TIMEOUT,
    );
    assert!(out.success(), "{id}: {}", out.describe());
    let seen = seen_limits(&out.stdout_str());
    assert_eq!(seen.nproc, 1, "{id}: nproc: {seen:?}");
    assert_eq!(seen.online, "0", "{id}: online CPUs: {seen:?}");
    assert_eq!(seen.cpuinfo_processors, 1, "{id}: /proc/cpuinfo: {seen:?}");
    assert_eq!(
        seen.stat_cpu_lines, 2,
        "{id}: cpu and cpu0 in /proc/stat: {seen:?}"
    );
    assert_eq!(seen.mem.0, 256 * 1024, "{id}: MemTotal: {seen:?}");
    assert_eq!(
        seen.free_total,
        256 * 1024,
        "{id}: free (sysinfo): {seen:?}"
    );
    assert!(
        seen.free_used <= seen.free_total,
        "{id}: free's used column: {seen:?}"
    );
    let (total, free, available) = seen.mem;
    assert!(
        free > 0 && free <= available && available <= total,
        "{id}: MemFree {free} <= MemAvailable {available} <= MemTotal {total}"
    );
    // The pod's time namespace: it booted with the pod.
    assert!(
        seen.uptime_secs < (unix_now() - before + 5) as f64,
        "{id}: uptime {} s counts from the pod's start",
        seen.uptime_secs
    );
    assert!(
        seen.btime + 5 >= before && seen.btime <= unix_now() + 1,
        "{id}: btime {} is the pod's start (test began at {before})",
        seen.btime
    );

    // Execs of a running one, which fills memory, then is updated.
    let id = unique_id("e2e-limits-exec");
    let _guard = run_detached(&t, &id, &limits, &["tail", "-f", "/dev/null"]);
    assert!(t
        .ctr
        .wait_task_status(&id, "RUNNING", Duration::from_secs(10)));
    let seen = seen_limits(&exec_ok(&t, &id, &["sh", "-c", SHOW_LIMITS]));
    assert_eq!((seen.nproc, seen.mem.0), (1, 256 * 1024), "{id}: {seen:?}");
    let free_before = seen.mem.1;
    exec_ok(
        &t,
        &id,
        &[
            "dd",
            "if=/dev/zero",
            "of=/dev/shm/fill",
            "bs=1M",
            "count=64",
        ],
    );
    let seen = seen_limits(&exec_ok(&t, &id, &["sh", "-c", SHOW_LIMITS]));
    assert!(
        seen.mem.1 + 60 * 1024 <= free_before,
        "{id}: MemFree {} kB after writing 64 MiB to tmpfs (was {free_before} kB)",
        seen.mem.1
    );

    let socket = socket_of(&t, &id);
    update_task(
        &socket,
        &t.ctr.namespace,
        &id,
        r#"{"memory":{"limit":536870912},"cpu":{"quota":200000,"period":100000}}"#,
        CTR_TIMEOUT,
    )
    .unwrap_or_else(|e| panic!("{id}: Task.Update failed: {e}"));
    let seen = seen_limits(&exec_ok(&t, &id, &["sh", "-c", SHOW_LIMITS]));
    let cpus = host_cpus().min(2);
    assert_eq!(
        (
            seen.nproc,
            seen.cpuinfo_processors,
            seen.mem.0,
            seen.free_total
        ),
        (cpus, cpus as usize, 512 * 1024, 512 * 1024),
        "{id}: after the update to 2 CPUs and 512 MiB: {seen:?}"
    );
    let online = if cpus == 1 { "0" } else { "0-1" };
    assert_eq!(seen.online, online, "{id}: {seen:?}");
}

/// Pause and Resume of a container that keeps reading the /proc files the
/// sandbox serves: each pause completes (the sandbox, which answers those
/// reads, is not frozen with the container), and the container runs on
/// after each resume. The sandbox has a cgroup of its own, next to the
/// container's, which the container's limits do not cover.
#[test]
fn pause_completes_while_the_container_reads_its_limits() {
    let Some(t) = E2e::setup("pause_completes_while_the_container_reads_its_limits") else {
        return;
    };
    let id = unique_id("e2e-pause-read");
    let _guard = run_detached(
        &t,
        &id,
        &["--memory-limit", "268435456"],
        &[
            "sh",
            "-c",
            "i=0; while true; do cat /proc/meminfo /proc/stat /proc/uptime >/dev/null; \
             i=$((i+1)); echo $i >/dev/shm/next; mv /dev/shm/next /dev/shm/counter; done",
        ],
    );
    assert!(t
        .ctr
        .wait_task_status(&id, "RUNNING", Duration::from_secs(10)));
    let pid = t.ctr.task(&id).expect("task listed").pid;
    for round in 0..20 {
        let out = t.ctr.run(&["task", "pause", &id], CTR_TIMEOUT);
        assert!(out.success(), "{id}: pause {round}: {}", out.describe());
        assert_eq!(
            t.ctr.task(&id).map(|r| r.status),
            Some("PAUSED".to_string()),
            "{id}: after pause {round}"
        );
        t.ctr.ok(&["task", "resume", &id]);
        let before = read_counter_from_host(pid).unwrap_or(0);
        assert!(
            wait_until(Duration::from_secs(10), || {
                read_counter_from_host(pid).is_some_and(|n| n > before)
            }),
            "{id}: the reader did not go on after resume {round}"
        );
    }
    if t.is_runsc() {
        let ns = &t.ctr.namespace;
        let own = PathBuf::from(format!("/sys/fs/cgroup/memory/{ns}/{id}-sandbox"));
        if own.parent().is_some_and(|p| p.is_dir()) {
            assert!(own.is_dir(), "{id}: no sandbox cgroup {}", own.display());
            let limit =
                std::fs::read_to_string(own.join("memory.limit_in_bytes")).unwrap_or_default();
            assert_ne!(
                limit.trim(),
                "268435456",
                "{id}: the sandbox's cgroup has the container's limit"
            );
        }
    }
}
