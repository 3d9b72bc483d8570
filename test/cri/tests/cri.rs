//! End-to-end tests of pods through containerd's CRI (RuntimeService v1 on
//! the private containerd's socket), each pod run with the runtime handler
//! RUNSC_CRI_HANDLER (default `runsc`, i.e. io.containerd.runsc.v2; `runc`
//! checks the same assertions against the baseline, except those that
//! look at our sandbox process and state directory).
//!
//! Run with RUNSC_E2E=1 and `--test-threads=1` (test/run.sh); without
//! RUNSC_E2E every test prints a skip line and passes. Failures print the
//! CRI's error, the container's status and the end of its log.

use std::fs;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use runsc_cri_tests::api::{
    Capability, ContainerState, ContainerStatsFilter, ContainerStatsRequest, Int64Value,
    LinuxContainerResources, ListContainerStatsRequest, Mount, MountPropagation, NamespaceMode,
    PodSandboxStatsRequest, UpdateContainerResourcesRequest,
};
use runsc_cri_tests::pod::{remove_cgroup_parent, CRI_NAMESPACE};
use runsc_cri_tests::{error_chain, wait_until, CriTest, Pod, CALL_TIMEOUT};
use runsc_tests::host::{self, Process, SHIM_PREFIX};

/// How long a clean-up (processes, mounts, directories) may take to show.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a short-lived container may take to exit.
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);
/// The pod network of test/containerd.sh's CNI config (10.88.0.0/16).
const POD_SUBNET: (Ipv4Addr, u32) = (Ipv4Addr::new(10, 88, 0, 0), 16);

// ---------------------------------------------------------------- helpers

/// The value of `r`, or a panic that names `what` and the CRI's error.
#[track_caller]
fn must<T>(r: Result<T, runsc_cri_tests::CriError>, what: &str) -> T {
    r.unwrap_or_else(|e| panic!("{what}: {}", error_chain(&e)))
}

/// Runs a pod for test `test`, failing with the CRI's error.
#[track_caller]
fn run_pod<'a>(t: &'a CriTest, name: &str) -> Pod<'a> {
    must(
        t.run_pod(t.pod_config(name)),
        &format!("RunPodSandbox {name} (handler {})", t.handler),
    )
}

/// Every runsc-sandbox process on the host whose `--id` names the pod's
/// sandbox (`k8s.io--<pod id>`).
fn pod_sandbox_processes(pod: &Pod) -> Vec<Process> {
    let sandbox_id = pod.sandbox_id();
    host::processes()
        .into_iter()
        .filter(|p| p.is_sandbox() && host::flag_value(&p.argv, "id") == Some(sandbox_id.as_str()))
        .collect()
}

/// The shim processes serving the pod or any of `containers` (whatever
/// containerd shim it is).
fn pod_shims(pod: &Pod, containers: &[&str]) -> Vec<Process> {
    host::processes()
        .into_iter()
        .filter(|p| {
            p.argv0_name().starts_with(SHIM_PREFIX)
                && (p.is_shim_for(&pod.id) || containers.iter().any(|c| p.is_shim_for(c)))
        })
        .collect()
}

/// The top of the pod's sandbox: the one sandbox process whose parent is
/// not itself a sandbox process of the pod. Fails unless there is exactly one.
#[track_caller]
fn sandbox_root(pod: &Pod) -> Process {
    let sandboxes = pod_sandbox_processes(pod);
    let roots: Vec<&Process> = sandboxes
        .iter()
        .filter(|p| !sandboxes.iter().any(|q| q.pid == p.ppid))
        .collect();
    assert_eq!(
        roots.len(),
        1,
        "expected one runsc-sandbox process tree for pod {} (--id={}), found roots {:#?}\nall of the \
         pod's sandbox processes: {:#?}",
        pod.id,
        pod.sandbox_id(),
        roots,
        sandboxes
    );
    roots[0].clone()
}

/// Host processes whose command line is exactly `argv`.
fn processes_with_argv(all: &[Process], argv: &[&str]) -> Vec<Process> {
    all.iter()
        .filter(|p| p.argv.iter().map(String::as_str).eq(argv.iter().copied()))
        .cloned()
        .collect()
}

/// Is `ip` in the test CNI network?
fn in_pod_subnet(ip: &IpAddr) -> bool {
    let IpAddr::V4(v4) = ip else {
        return false;
    };
    let mask = u32::MAX << (32 - POD_SUBNET.1);
    u32::from(*v4) & mask == u32::from(POD_SUBNET.0) & mask
}

/// One HTTP/1.0 GET of `/` from `addr`: the whole response, or why not.
fn http_get(addr: SocketAddr) -> Result<String, String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("connect {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .and_then(|()| stream.set_write_timeout(Some(Duration::from_secs(5))))
        .map_err(|e| format!("socket timeouts: {e}"))?;
    stream
        .write_all(b"GET / HTTP/1.0\r\nHost: pod\r\n\r\n")
        .map_err(|e| format!("send to {addr}: {e}"))?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| format!("read from {addr}: {e}"))?;
    Ok(response)
}

/// A directory of the test's own under the scratch directory, made
/// (mode 0755, owned by host root, as kubelet's DirectoryOrCreate makes a
/// hostPath) and removed when dropped.
struct ScratchDir(PathBuf);

impl ScratchDir {
    #[track_caller]
    fn new(t: &CriTest, name: &str) -> ScratchDir {
        let path = t.scratch.join(runsc_cri_tests::unique_name(name));
        fs::create_dir_all(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
        ScratchDir(path)
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// The hostPath mount of `host_path` at `container_path`.
fn host_path_mount(host_path: &Path, container_path: &str, readonly: bool) -> Mount {
    Mount {
        container_path: container_path.to_string(),
        host_path: host_path.display().to_string(),
        readonly,
        propagation: MountPropagation::PropagationPrivate as i32,
        ..Default::default()
    }
}

/// The cgroup v1 hierarchies (or the v2 root) under /sys/fs/cgroup.
fn cgroup_hierarchies() -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    if root.join("cgroup.controllers").exists() {
        return vec![root.to_path_buf()];
    }
    let Ok(entries) = fs::read_dir(root) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect();
    found.sort();
    found
}

/// Every cgroup directory below `parent` (a cgroup path such as
/// `/runsc-cri-test/<uid>`) in any hierarchy, the parent itself excluded.
fn cgroups_below(parent: &str) -> Vec<PathBuf> {
    fn walk(dir: &Path, found: &mut Vec<PathBuf>) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for e in entries.filter_map(Result::ok) {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                found.push(e.path());
                walk(&e.path(), found);
            }
        }
    }
    let mut found = Vec::new();
    for h in cgroup_hierarchies() {
        walk(&h.join(parent.trim_start_matches('/')), &mut found);
    }
    found
}

/// The hierarchies in which the cgroup directory `path` exists.
fn cgroup_dirs(path: &str) -> Vec<PathBuf> {
    cgroup_hierarchies()
        .into_iter()
        .map(|h| h.join(path.trim_start_matches('/')))
        .filter(|p| p.is_dir())
        .collect()
}

/// The network namespace path of the pod, from PodSandboxStatus's verbose
/// info (runtimeSpec.linux.namespaces).
fn pod_netns_path(pod: &Pod) -> Option<PathBuf> {
    let status = pod.status(true).ok()?;
    let info: serde_json::Value = serde_json::from_str(status.info.get("info")?).ok()?;
    info.pointer("/runtimeSpec/linux/namespaces")?
        .as_array()?
        .iter()
        .find(|ns| ns.get("type").and_then(|t| t.as_str()) == Some("network"))?
        .get("path")?
        .as_str()
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
}

/// The host pid containerd shows for container `id` (ContainerStatus
/// verbose info's `pid`).
fn container_pid(pod: &Pod, id: &str) -> Option<i32> {
    let (_, info) = pod.container_status(id, true).ok()?;
    let info: serde_json::Value = serde_json::from_str(info.get("info")?).ok()?;
    info.get("pid")?
        .as_i64()
        .and_then(|p| i32::try_from(p).ok())
}

/// The parsed lines of a CRI log file: (timestamp, stream, tag, message).
fn cri_log_lines(text: &str) -> Vec<(String, String, String, String)> {
    text.lines()
        .map(|line| {
            let mut parts = line.splitn(4, ' ');
            let mut next = || parts.next().unwrap_or_default().to_string();
            (next(), next(), next(), next())
        })
        .collect()
}

/// Is `ts` an RFC 3339 timestamp with nanoseconds (`2006-01-02T15:04:05.999999999Z07:00`)?
fn is_rfc3339_nano(ts: &str) -> bool {
    let b = ts.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|s| s.iter().all(u8::is_ascii_digit));
    let date_time = b.len() >= 20
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19);
    if !date_time {
        return false;
    }
    // Optional fraction (Go's RFC3339Nano drops trailing zeros), then the zone.
    let mut i = 19;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start || i - start > 9 {
            return false;
        }
    }
    match &ts[i..] {
        "Z" => true,
        zone => {
            let z = zone.as_bytes();
            z.len() == 6
                && (z[0] == b'+' || z[0] == b'-')
                && z[1..3].iter().all(u8::is_ascii_digit)
                && z[3] == b':'
                && z[4..6].iter().all(u8::is_ascii_digit)
        }
    }
}

// ------------------------------------------------------ one pod, one sandbox

#[test]
fn pod_of_two_containers_runs_in_one_sandbox() {
    let Some(t) = CriTest::setup("pod_of_two_containers_runs_in_one_sandbox") else {
        return;
    };
    let mut pod = run_pod(&t, "two");
    let a = pod.run_container(t.container_config("a", &["sleep", "3601"]));
    let b = pod.run_container(t.container_config("b", &["sleep", "3602"]));

    let shims = pod_shims(&pod, &[&a, &b]);
    assert_eq!(
        shims.len(),
        1,
        "expected one shim process for pod {} and its containers {a}, {b}, found {shims:#?}",
        pod.id
    );
    if !t.is_runsc() {
        return;
    }
    assert_eq!(
        shims[0].argv0_name(),
        "containerd-shim-runsc-v2",
        "{:?}",
        shims[0]
    );

    let root = sandbox_root(&pod);
    assert_eq!(
        root.argv.get(1).map(String::as_str),
        Some("boot"),
        "the pod's sandbox is not a `runsc-sandbox boot`: {}",
        root.describe()
    );
    for c in [&a, &b] {
        let own = host::sandbox_processes(c);
        let own: Vec<_> = own
            .iter()
            .filter(|p| host::flag_value(&p.argv, "id") != Some(pod.sandbox_id().as_str()))
            .collect();
        assert!(
            own.is_empty(),
            "container {c} has a sandbox of its own: {own:#?}"
        );
    }
    // Every runsc-sandbox process of the pod is under that one root.
    let all = host::processes();
    let tree = host::descendants(&all, root.pid);
    let strays: Vec<_> = pod_sandbox_processes(&pod)
        .into_iter()
        .filter(|p| p.pid != root.pid && !tree.iter().any(|d| d.pid == p.pid))
        .collect();
    assert!(
        strays.is_empty(),
        "sandbox processes outside the pod's tree: {strays:#?}"
    );
    // Both containers' processes run in the sandbox's process tree.
    for (c, argv) in [(&a, ["sleep", "3601"]), (&b, ["sleep", "3602"])] {
        let found = processes_with_argv(&tree, &argv);
        assert_eq!(
            found.len(),
            1,
            "container {c}'s `{}` is not (once) in the sandbox's tree (root {}); its tree:\n  {}\n{}",
            argv.join(" "),
            root.describe(),
            tree.iter().map(Process::describe).collect::<Vec<_>>().join("\n  "),
            pod.describe_container(c)
        );
        if let Some(pid) = container_pid(&pod, c) {
            assert!(
                tree.iter().any(|p| p.pid == pid),
                "containerd's pid {pid} of container {c} is not in the sandbox's tree (found \
                 the workload as {})",
                found[0].describe()
            );
        }
    }
    // The sandbox is a child of the pod's shim.
    let shim_tree = host::descendants(&all, shims[0].pid);
    assert!(
        shim_tree.iter().any(|p| p.pid == root.pid),
        "the sandbox {} is not below the pod's shim {}",
        root.describe(),
        shims[0].describe()
    );
}

#[test]
fn containers_reach_each_other_over_localhost_and_host_reaches_pod_ip() {
    let Some(t) =
        CriTest::setup("containers_reach_each_other_over_localhost_and_host_reaches_pod_ip")
    else {
        return;
    };
    let mut pod = run_pod(&t, "net");
    let server = pod.run_container(t.container_config(
        "server",
        &[
            "sh",
            "-c",
            "mkdir -p /www && echo hello-from-pod > /www/index.html && exec httpd -f -p 8080 -h /www",
        ],
    ));
    let client = pod.run_container(t.container_config("client", &["sleep", "3600"]));

    // The client container reaches the server on the pod's loopback.
    let mut last = String::new();
    let reached = wait_until(Duration::from_secs(20), || {
        // (busybox's `wget -T` crashes: containerd's ExecSync timeout bounds it instead)
        match pod.exec_with_timeout(
            &client,
            &["wget", "-q", "-O", "-", "http://127.0.0.1:8080/"],
            10,
        ) {
            Ok(r) if r.exit_code == 0 => {
                last = String::from_utf8_lossy(&r.stdout).into_owned();
                true
            }
            Ok(r) => {
                last = format!(
                    "exit {}: {}{}",
                    r.exit_code,
                    String::from_utf8_lossy(&r.stdout),
                    String::from_utf8_lossy(&r.stderr)
                );
                false
            }
            Err(e) => {
                last = error_chain(&e);
                false
            }
        }
    });
    assert!(
        reached && last == "hello-from-pod\n",
        "container {client} could not fetch http://127.0.0.1:8080/ from container {server} in \
         20 s; last try: {last:?}\n{}\n{}",
        pod.describe_container(&server),
        pod.describe_container(&client)
    );

    // Both containers see the pod's IP on their interface.
    let ip_text = pod.ip();
    let ip: IpAddr = ip_text
        .parse()
        .unwrap_or_else(|e| panic!("PodSandboxStatus network ip {ip_text:?}: {e}"));
    assert!(
        in_pod_subnet(&ip),
        "pod IP {ip} is not in the test CNI network {:?}/{}",
        POD_SUBNET.0,
        POD_SUBNET.1
    );
    for c in [&server, &client] {
        let addrs = pod.exec_ok(c, &["ip", "-4", "addr"]);
        assert!(
            addrs.contains(&format!("inet {ip}/")),
            "container {c} does not see the pod IP {ip}: {addrs}"
        );
    }

    // The host reaches the server at the pod IP.
    let addr = SocketAddr::new(ip, 8080);
    let response = http_get(addr);
    assert!(
        response
            .as_ref()
            .is_ok_and(|r| r.starts_with("HTTP/1.") && r.ends_with("hello-from-pod\n")),
        "GET http://{addr}/ from the host: {response:?}\n{}",
        pod.describe_container(&server)
    );
}

// ------------------------------------------------------------ ExecSync

#[test]
fn exec_sync_output_and_exit_codes() {
    let Some(t) = CriTest::setup("exec_sync_output_and_exit_codes") else {
        return;
    };
    let mut pod = run_pod(&t, "exec");
    let c = pod.run_container(t.container_config("c", &["sleep", "3600"]));

    let r = must(
        pod.exec(&c, &["sh", "-c", "printf out; printf 'err\\n' >&2; exit 3"]),
        "ExecSync exit 3",
    );
    assert_eq!(
        (r.exit_code, r.stdout.as_slice(), r.stderr.as_slice()),
        (3, &b"out"[..], &b"err\n"[..]),
        "ExecSync `printf out; printf err >&2; exit 3`: stdout {:?}, stderr {:?}",
        String::from_utf8_lossy(&r.stdout),
        String::from_utf8_lossy(&r.stderr)
    );

    let r = must(pod.exec(&c, &["true"]), "ExecSync true");
    assert_eq!(
        (r.exit_code, r.stdout.len(), r.stderr.len()),
        (0, 0, 0),
        "ExecSync true: {r:?}"
    );

    // Every byte value, then 256 KiB: nothing translated, nothing lost.
    let script = "i=0; while [ $i -lt 256 ]; do printf \"\\\\$(printf %o $i)\"; i=$((i+1)); done; \
                  head -c 262144 /dev/zero | tr '\\0' 'z'";
    let r = must(
        pod.exec(&c, &["sh", "-c", script]),
        "ExecSync of binary output",
    );
    let mut want: Vec<u8> = (0..=255u8).collect();
    want.extend(std::iter::repeat_n(b'z', 262_144));
    assert_eq!(
        r.exit_code,
        0,
        "stderr {:?}",
        String::from_utf8_lossy(&r.stderr)
    );
    assert!(
        r.stdout == want,
        "ExecSync stdout: {} bytes, expected {}; first difference at {:?}",
        r.stdout.len(),
        want.len(),
        r.stdout.iter().zip(&want).position(|(a, b)| a != b)
    );

    // The exec runs in the container: same hostname as the pod, its rootfs.
    let hostname = pod.exec_ok(&c, &["hostname"]);
    assert_eq!(hostname, "exec\n", "hostname seen by an exec");

    // A binary that does not exist fails at once, with an error or 126/127.
    let start = Instant::now();
    let missing = pod.exec(&c, &["/no/such/binary"]);
    let took = start.elapsed();
    match &missing {
        Ok(r) => assert!(
            r.exit_code == 126 || r.exit_code == 127,
            "ExecSync of a missing binary: exit code {} (expected an error or 126/127), stderr {:?}",
            r.exit_code,
            String::from_utf8_lossy(&r.stderr)
        ),
        Err(e) => println!("ExecSync of a missing binary: {}", error_chain(e)),
    }
    assert!(
        took < Duration::from_secs(10),
        "ExecSync of a missing binary took {took:?}: {missing:?}"
    );

    // ExecSync's own timeout ends an exec that outlives it.
    let start = Instant::now();
    let slow = pod.exec_with_timeout(&c, &["sleep", "60"], 2);
    let took = start.elapsed();
    assert!(
        took < Duration::from_secs(20),
        "ExecSync with timeout 2 s of `sleep 60` returned after {took:?}: {slow:?}"
    );
    assert!(
        slow.as_ref().map_or(true, |r| r.exit_code != 0),
        "ExecSync with timeout 2 s of `sleep 60` succeeded: {slow:?}"
    );
    // The container is still there and answers.
    assert_eq!(pod.exec_ok(&c, &["echo", "still"]), "still\n");
    assert_eq!(
        must(pod.container_state(&c), "ContainerStatus"),
        ContainerState::ContainerRunning
    );
}

// ----------------------------------------------------------------- logs

#[test]
fn logs_are_written_in_cri_format() {
    let Some(t) = CriTest::setup("logs_are_written_in_cri_format") else {
        return;
    };
    let mut pod = run_pod(&t, "logs");
    let c = pod.run_container(t.container_config(
        "talker",
        &["sh", "-c", "echo hello; echo oops >&2; sleep 0.5; echo bye"],
    ));
    let status = pod.wait_exited(&c, EXIT_TIMEOUT);
    assert_eq!(status.exit_code, 0, "{}", pod.describe_container(&c));
    let path = pod.log_directory().join("talker.log");
    assert_eq!(
        PathBuf::from(&status.log_path),
        path,
        "ContainerStatus log_path"
    );
    // containerd may still be flushing the last line when the exit is seen.
    let mut text = String::new();
    wait_until(Duration::from_secs(5), || {
        text = fs::read_to_string(&path).unwrap_or_default();
        text.lines().count() >= 3
    });
    let lines = cri_log_lines(&text);
    for (ts, stream, tag, _) in &lines {
        assert!(
            is_rfc3339_nano(ts),
            "log line timestamp {ts:?} is not RFC 3339 with nanoseconds; log:\n{text}"
        );
        assert!(
            matches!(stream.as_str(), "stdout" | "stderr") && matches!(tag.as_str(), "F" | "P"),
            "log line stream {stream:?} tag {tag:?}; log:\n{text}"
        );
    }
    let entries: Vec<(&str, &str, &str)> = lines
        .iter()
        .map(|(_, s, tag, m)| (s.as_str(), tag.as_str(), m.as_str()))
        .collect();
    let hello = entries.iter().position(|e| *e == ("stdout", "F", "hello"));
    let oops = entries.iter().position(|e| *e == ("stderr", "F", "oops"));
    let bye = entries.iter().position(|e| *e == ("stdout", "F", "bye"));
    assert!(
        hello.is_some() && oops.is_some() && bye.is_some() && hello < bye && entries.len() == 3,
        "expected `stdout F hello`, `stderr F oops`, `stdout F bye` (hello before bye) in {}:\n{text}",
        path.display()
    );
}

#[test]
fn reopen_container_log_starts_a_new_file() {
    let Some(t) = CriTest::setup("reopen_container_log_starts_a_new_file") else {
        return;
    };
    let mut pod = run_pod(&t, "reopen");
    let c = pod.run_container(t.container_config(
        "ticker",
        &[
            "sh",
            "-c",
            "i=0; while true; do echo tick$i; i=$((i+1)); sleep 0.2; done",
        ],
    ));
    let path = pod.log_directory().join("ticker.log");
    assert!(
        wait_until(Duration::from_secs(10), || fs::read_to_string(&path)
            .is_ok_and(|s| s.contains("tick1"))),
        "no tick in {} after 10 s\n{}",
        path.display(),
        pod.describe_container(&c)
    );
    let rotated = path.with_extension("log.1");
    fs::rename(&path, &rotated).unwrap_or_else(|e| panic!("rename {}: {e}", path.display()));
    must(pod.reopen_log(&c), "ReopenContainerLog");
    assert!(
        wait_until(Duration::from_secs(10), || fs::read_to_string(&path)
            .is_ok_and(|s| s.lines().any(|l| l.contains(" stdout F tick")))),
        "after ReopenContainerLog, no new line in {}\n{}",
        path.display(),
        pod.describe_container(&c)
    );
    // The rotated file no longer grows.
    let before = fs::metadata(&rotated).map(|m| m.len()).unwrap_or(0);
    std::thread::sleep(Duration::from_secs(1));
    let after = fs::metadata(&rotated).map(|m| m.len()).unwrap_or(0);
    assert_eq!(
        before,
        after,
        "the rotated log {} still grows",
        rotated.display()
    );
}

// -------------------------------------------------------------- volumes

#[test]
fn host_path_volumes_readonly_and_readwrite() {
    let Some(t) = CriTest::setup("host_path_volumes_readonly_and_readwrite") else {
        return;
    };
    let rw = ScratchDir::new(&t, "vol-rw");
    let ro = ScratchDir::new(&t, "vol-ro");
    fs::write(ro.0.join("in.txt"), "from-host\n").expect("write the read-only volume's file");
    let mut pod = run_pod(&t, "volumes");
    let mut config = t.container_config("c", &["sleep", "3600"]);
    config.mounts = vec![
        host_path_mount(&rw.0, "/mnt/rw", false),
        host_path_mount(&ro.0, "/mnt/ro", true),
    ];
    let c = pod.run_container(config);

    assert_eq!(pod.exec_ok(&c, &["cat", "/mnt/ro/in.txt"]), "from-host\n");

    // Read-write: the container's file shows on the host, and the host's in the container.
    pod.exec_ok(&c, &["sh", "-c", "echo from-pod > /mnt/rw/out.txt"]);
    let written = rw.0.join("out.txt");
    let content = fs::read_to_string(&written);
    assert_eq!(
        content.as_deref().ok(),
        Some("from-pod\n"),
        "{} on the host: {content:?}",
        written.display()
    );
    let owner = fs::metadata(&written).map(|m| (m.uid(), m.gid()));
    println!("file written by container root in the rw volume is owned on the host by {owner:?}");
    fs::write(rw.0.join("late.txt"), "late\n").expect("write into the rw volume");
    assert_eq!(pod.exec_ok(&c, &["cat", "/mnt/rw/late.txt"]), "late\n");

    // Read-only: writing fails, nothing reaches the host.
    let r = must(
        pod.exec(&c, &["sh", "-c", "echo x > /mnt/ro/new.txt"]),
        "ExecSync write to the read-only volume",
    );
    assert_ne!(
        r.exit_code,
        0,
        "writing into the read-only volume succeeded (stderr {:?})",
        String::from_utf8_lossy(&r.stderr)
    );
    assert!(
        String::from_utf8_lossy(&r.stderr).contains("Read-only file system"),
        "writing into the read-only volume failed, but not with EROFS: {:?}",
        String::from_utf8_lossy(&r.stderr)
    );
    assert!(
        !ro.0.join("new.txt").exists(),
        "the read-only volume was written on the host"
    );
    let r = must(
        pod.exec(&c, &["rm", "/mnt/ro/in.txt"]),
        "ExecSync rm in the read-only volume",
    );
    assert_ne!(r.exit_code, 0, "rm in the read-only volume succeeded");
    assert!(
        ro.0.join("in.txt").exists(),
        "the read-only volume's file was removed"
    );
}

/// A host directory bind-mounted onto itself as a shared mount (what
/// HostToContainer propagation needs of its source), with mounts made
/// below it later; all unmounted when dropped.
struct SharedMount {
    dir: ScratchDir,
    below: Vec<PathBuf>,
}

impl SharedMount {
    #[track_caller]
    fn new(t: &CriTest) -> SharedMount {
        use nix::mount::{mount, MsFlags};
        let dir = ScratchDir::new(t, "vol-shared");
        mount(
            Some(&dir.0),
            &dir.0,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .unwrap_or_else(|e| panic!("bind {} onto itself: {e}", dir.0.display()));
        let shared = SharedMount {
            dir,
            below: Vec::new(),
        };
        mount(
            None::<&str>,
            &shared.dir.0,
            None::<&str>,
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None::<&str>,
        )
        .unwrap_or_else(|e| panic!("make {} shared: {e}", shared.dir.0.display()));
        shared
    }

    /// Mounts a tmpfs at `name` below the shared directory.
    #[track_caller]
    fn mount_tmpfs(&mut self, name: &str) -> PathBuf {
        let path = self.dir.0.join(name);
        fs::create_dir_all(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        nix::mount::mount(
            Some("tmpfs"),
            &path,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some("size=1m"),
        )
        .unwrap_or_else(|e| panic!("mount a tmpfs at {}: {e}", path.display()));
        self.below.push(path.clone());
        path
    }
}

impl Drop for SharedMount {
    fn drop(&mut self) {
        use nix::mount::{umount2, MntFlags};
        for path in self.below.iter().rev() {
            let _ = umount2(path, MntFlags::MNT_DETACH);
        }
        let _ = umount2(&self.dir.0, MntFlags::MNT_DETACH);
    }
}

#[test]
fn host_to_container_mount_propagation() {
    let Some(t) = CriTest::setup("host_to_container_mount_propagation") else {
        return;
    };
    let mut shared = SharedMount::new(&t);
    let mut pod = run_pod(&t, "propagation");
    let mut config = t.container_config("c", &["sleep", "3600"]);
    config.mounts = vec![Mount {
        container_path: "/mnt/prop".to_string(),
        host_path: shared.dir.0.display().to_string(),
        propagation: MountPropagation::PropagationHostToContainer as i32,
        ..Default::default()
    }];
    let c = pod.run_container(config);
    // A mount made on the host after the container started reaches it.
    let late = shared.mount_tmpfs("late");
    fs::write(late.join("marker"), "propagated\n").expect("write into the new tmpfs");
    let mut seen = String::new();
    let reached = wait_until(Duration::from_secs(10), || {
        seen = match pod.exec(&c, &["cat", "/mnt/prop/late/marker"]) {
            Ok(r) => format!(
                "exit {}: {}{}",
                r.exit_code,
                String::from_utf8_lossy(&r.stdout),
                String::from_utf8_lossy(&r.stderr)
            ),
            Err(e) => error_chain(&e),
        };
        seen == "exit 0: propagated\n"
    });
    assert!(
        reached,
        "a tmpfs mounted on the host below a HostToContainer volume after the container \
         started is not visible in it after 10 s: `cat /mnt/prop/late/marker`: {seen:?}\n{}",
        pod.describe_container(&c)
    );
    // Nothing the container mounts goes back to the host (it may not mount at all).
    let _ = pod.exec(&c, &["mount", "-t", "tmpfs", "tmpfs", "/mnt/prop"]);
    let prefix = shared.dir.0.display().to_string();
    let host_view: Vec<String> = host::mounts_containing(&prefix)
        .into_iter()
        .filter(|line| {
            line.split(' ')
                .nth(4)
                .is_some_and(|at| at.starts_with(&prefix))
        })
        .collect();
    assert!(
        host_view.len() == 2,
        "the host's mounts at {prefix} are not its bind and the late tmpfs: {host_view:#?}"
    );
}

// ------------------------------------------------- security context, sysctls

#[test]
fn sysctls_are_applied_in_the_pod_only() {
    let Some(t) = CriTest::setup("sysctls_are_applied_in_the_pod_only") else {
        return;
    };
    let host_values = || {
        [
            "/proc/sys/kernel/shm_rmid_forced",
            "/proc/sys/net/ipv4/ip_unprivileged_port_start",
        ]
        .map(|p| fs::read_to_string(p).unwrap_or_default())
    };
    let before = host_values();
    let mut config = t.pod_config("sysctls");
    if let Some(linux) = config.linux.as_mut() {
        linux.sysctls = [
            ("kernel.shm_rmid_forced", "1"),
            ("net.ipv4.ip_unprivileged_port_start", "555"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    }
    let mut pod = must(t.run_pod(config), "RunPodSandbox with sysctls");
    let c = pod.run_container(t.container_config("c", &["sleep", "3600"]));
    let shm = pod.exec_ok(&c, &["cat", "/proc/sys/kernel/shm_rmid_forced"]);
    let port = pod.exec_ok(
        &c,
        &["cat", "/proc/sys/net/ipv4/ip_unprivileged_port_start"],
    );
    assert_eq!(
        (shm.trim(), port.trim()),
        ("1", "555"),
        "kernel.shm_rmid_forced and net.ipv4.ip_unprivileged_port_start in the container"
    );
    assert_eq!(
        host_values(),
        before,
        "the pod's sysctls changed the host's values"
    );
}

#[test]
fn run_as_user_group_and_supplemental_groups() {
    let Some(t) = CriTest::setup("run_as_user_group_and_supplemental_groups") else {
        return;
    };
    let mut pod = run_pod(&t, "users");
    let mut config = t.container_config("c", &["sleep", "3600"]);
    if let Some(sc) = config
        .linux
        .as_mut()
        .and_then(|l| l.security_context.as_mut())
    {
        sc.run_as_user = Some(Int64Value { value: 1000 });
        sc.run_as_group = Some(Int64Value { value: 3000 });
        sc.supplemental_groups = vec![4000];
    }
    let c = pod.run_container(config);
    assert_eq!(pod.exec_ok(&c, &["id", "-u"]).trim(), "1000", "id -u");
    assert_eq!(pod.exec_ok(&c, &["id", "-g"]).trim(), "3000", "id -g");
    let groups = pod.exec_ok(&c, &["id", "-G"]);
    assert!(
        groups.split_whitespace().any(|g| g == "4000"),
        "id -G {groups:?} lacks the supplemental group 4000"
    );
    // The container's own init, not only the exec, runs as 1000:3000.
    let status = pod.exec_ok(&c, &["cat", "/proc/1/status"]);
    let ids = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .map(|v| v.split_whitespace().next().unwrap_or("").to_string())
    };
    assert_eq!(
        (ids("Uid:"), ids("Gid:")),
        (Some("1000".to_string()), Some("3000".to_string())),
        "the container's pid 1:\n{status}"
    );
}

#[test]
fn readonly_rootfs_and_capabilities() {
    let Some(t) = CriTest::setup("readonly_rootfs_and_capabilities") else {
        return;
    };
    let mut pod = run_pod(&t, "caps");
    let mut config = t.container_config("c", &["sleep", "3600"]);
    if let Some(sc) = config
        .linux
        .as_mut()
        .and_then(|l| l.security_context.as_mut())
    {
        sc.readonly_rootfs = true;
        sc.capabilities = Some(Capability {
            drop_capabilities: vec!["ALL".into()],
            add_capabilities: vec!["CHOWN".into(), "NET_BIND_SERVICE".into()],
            ..Default::default()
        });
    }
    let c = pod.run_container(config);
    let r = must(
        pod.exec(&c, &["touch", "/new-file"]),
        "ExecSync touch /new-file",
    );
    assert!(
        r.exit_code != 0 && String::from_utf8_lossy(&r.stderr).contains("Read-only file system"),
        "touch on a read-only rootfs: exit {}, stderr {:?}",
        r.exit_code,
        String::from_utf8_lossy(&r.stderr)
    );
    let status = pod.exec_ok(&c, &["cat", "/proc/self/status"]);
    let cap = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .map(str::trim)
    };
    // CAP_CHOWN (0) and CAP_NET_BIND_SERVICE (10) only.
    assert_eq!(
        (cap("CapEff:"), cap("CapBnd:")),
        (Some("0000000000000401"), Some("0000000000000401")),
        "capabilities of an exec after drop ALL, add CHOWN and NET_BIND_SERVICE:\n{status}"
    );

    let mut config = t.container_config("d", &["sleep", "3600"]);
    if let Some(sc) = config
        .linux
        .as_mut()
        .and_then(|l| l.security_context.as_mut())
    {
        sc.capabilities = Some(Capability {
            drop_capabilities: vec!["NET_RAW".into()],
            ..Default::default()
        });
    }
    let d = pod.run_container(config);
    let status = pod.exec_ok(&d, &["cat", "/proc/self/status"]);
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok());
    assert!(
        eff.is_some_and(|e| e & (1 << 13) == 0 && e & 1 != 0),
        "after drop NET_RAW, CapEff {eff:x?} must lack bit 13 and keep CAP_CHOWN (containerd's \
         default set otherwise):\n{status}"
    );
    pod.exec_ok(&d, &["touch", "/writable-rootfs"]);
}

/// Does an error say it is about privileged containers (and not, say,
/// about the sysctl ip_unprivileged_port_start)?
fn says_privileged(text: &str) -> bool {
    text.to_lowercase()
        .replace("unprivileged", "")
        .contains("privileged")
}

#[test]
fn privileged_container_is_refused() {
    let Some(t) = CriTest::setup("privileged_container_is_refused") else {
        return;
    };
    let mut config = t.pod_config("privileged");
    if let Some(sc) = config
        .linux
        .as_mut()
        .and_then(|l| l.security_context.as_mut())
    {
        sc.privileged = true;
    }
    let mut pod = match t.run_pod(config) {
        Err(e) => {
            let text = error_chain(&e);
            assert!(
                t.is_runsc(),
                "handler {}: RunPodSandbox of a privileged pod failed: {text}",
                t.handler
            );
            assert!(
                says_privileged(&text),
                "a privileged pod was refused, but the error does not say why: {text}"
            );
            println!("privileged pod refused: {text}");
            return;
        }
        Ok(pod) => pod,
    };
    let mut config = t.container_config("c", &["sleep", "3600"]);
    if let Some(sc) = config
        .linux
        .as_mut()
        .and_then(|l| l.security_context.as_mut())
    {
        sc.privileged = true;
    }
    let result = pod
        .create(config)
        .and_then(|id| pod.start(&id).map(|()| id));
    match (result, t.is_runsc()) {
        (Err(e), true) => {
            let text = error_chain(&e);
            assert!(
                says_privileged(&text),
                "a privileged container was refused, but the error does not say why: {text}"
            );
            println!("privileged container refused: {text}");
        }
        (Ok(id), true) => panic!(
            "a privileged container {id} was started by handler {}, which must refuse it\n{}",
            t.handler,
            pod.describe_container(&id)
        ),
        (Err(e), false) => panic!(
            "handler {}: privileged container: {}",
            t.handler,
            error_chain(&e)
        ),
        (Ok(_), false) => {}
    }
}

#[test]
fn host_pid_and_host_ipc_are_refused() {
    let Some(t) = CriTest::setup("host_pid_and_host_ipc_are_refused") else {
        return;
    };
    if !t.is_runsc() {
        println!(
            "SKIP host_pid_and_host_ipc_are_refused: handler {} supports them",
            t.handler
        );
        return;
    }
    for what in ["hostPID", "hostIPC"] {
        let set = |ns: &mut runsc_cri_tests::api::NamespaceOption| {
            if what == "hostPID" {
                ns.pid = NamespaceMode::Node as i32;
            } else {
                ns.ipc = NamespaceMode::Node as i32;
            }
        };
        let mut config = t.pod_config("hostns");
        if let Some(ns) = config
            .linux
            .as_mut()
            .and_then(|l| l.security_context.as_mut())
            .and_then(|s| s.namespace_options.as_mut())
        {
            set(ns);
        }
        let mut container = t.container_config("c", &["sleep", "3600"]);
        if let Some(ns) = container
            .linux
            .as_mut()
            .and_then(|l| l.security_context.as_mut())
            .and_then(|s| s.namespace_options.as_mut())
        {
            set(ns);
        }
        let outcome = t.run_pod(config).and_then(|mut pod| {
            let id = pod.create(container)?;
            pod.start(&id)?;
            Ok(id)
        });
        match outcome {
            Ok(id) => panic!("a {what} pod ran its container {id}; the README says it is refused"),
            Err(e) => {
                let text = error_chain(&e);
                let lower = text.to_lowercase();
                let named = if what == "hostPID" { "pid" } else { "ipc" };
                assert!(
                    lower.contains(&format!("host {named}"))
                        || lower.contains(&format!("host{named}")),
                    "{what} was refused, but the error does not say why: {text}"
                );
                println!("{what} refused: {text}");
            }
        }
    }
}

// ------------------------------------------------------------ namespaces

#[test]
fn pid_namespace_per_container_unless_the_pod_shares_it() {
    let Some(t) = CriTest::setup("pid_namespace_per_container_unless_the_pod_shares_it") else {
        return;
    };
    let ps = |pod: &Pod, c: &str| pod.exec_ok(c, &["ps", "-o", "pid,args"]);
    {
        let mut pod = run_pod(&t, "pidns");
        let _a = pod.run_container(t.container_config("a", &["sleep", "3601"]));
        let b = pod.run_container(t.container_config("b", &["sleep", "3602"]));
        let seen = ps(&pod, &b);
        assert!(
            !seen.contains("sleep 3601") && seen.contains("sleep 3602"),
            "with a PID namespace per container, b must see its own process only:\n{seen}"
        );
        let first = seen.lines().nth(1).unwrap_or_default();
        assert!(
            first.split_whitespace().next() == Some("1") && first.contains("sleep 3602"),
            "b's pid 1 must be its own init:\n{seen}"
        );
    }
    let mut config = t.pod_config("sharedpid");
    let shared = |ns: Option<&mut runsc_cri_tests::api::NamespaceOption>| {
        if let Some(ns) = ns {
            ns.pid = NamespaceMode::Pod as i32;
        }
    };
    shared(
        config
            .linux
            .as_mut()
            .and_then(|l| l.security_context.as_mut())
            .and_then(|s| s.namespace_options.as_mut()),
    );
    let mut pod = must(
        t.run_pod(config),
        "RunPodSandbox with a shared PID namespace",
    );
    let mut containers = Vec::new();
    for (name, secs) in [("a", "3601"), ("b", "3602")] {
        let mut config = t.container_config(name, &["sleep", secs]);
        shared(
            config
                .linux
                .as_mut()
                .and_then(|l| l.security_context.as_mut())
                .and_then(|s| s.namespace_options.as_mut()),
        );
        containers.push(pod.run_container(config));
    }
    let seen = ps(&pod, &containers[1]);
    assert!(
        seen.contains("sleep 3601") && seen.contains("sleep 3602"),
        "with the pod's PID namespace shared, b must see a's process too:\n{seen}"
    );
}

#[test]
fn host_network_pod_uses_the_host_network_namespace() {
    let Some(t) = CriTest::setup("host_network_pod_uses_the_host_network_namespace") else {
        return;
    };
    let host_netns = fs::read_link("/proc/self/ns/net")
        .map(|p| p.display().to_string())
        .expect("readlink /proc/self/ns/net");
    let mut config = t.pod_config("hostnet");
    // kubelet sets no hostname of its own for a hostNetwork pod (no UTS namespace of its own).
    config.hostname.clear();
    if let Some(ns) = config
        .linux
        .as_mut()
        .and_then(|l| l.security_context.as_mut())
        .and_then(|s| s.namespace_options.as_mut())
    {
        ns.network = NamespaceMode::Node as i32;
    }
    let mut pod = must(t.run_pod(config), "RunPodSandbox with the host network");
    let mut container = t.container_config("c", &["sleep", "3600"]);
    if let Some(ns) = container
        .linux
        .as_mut()
        .and_then(|l| l.security_context.as_mut())
        .and_then(|s| s.namespace_options.as_mut())
    {
        ns.network = NamespaceMode::Node as i32;
    }
    let c = pod.run_container(container);
    let seen = pod.exec_ok(&c, &["readlink", "/proc/self/ns/net"]);
    assert_eq!(
        seen.trim(),
        host_netns,
        "a hostNetwork container's network namespace"
    );

    let mut other = run_pod(&t, "podnet");
    let d = other.run_container(t.container_config("d", &["sleep", "3600"]));
    let seen = other.exec_ok(&d, &["readlink", "/proc/self/ns/net"]);
    assert_ne!(
        seen.trim(),
        host_netns,
        "a pod without hostNetwork is in the host's network namespace"
    );
}

// ------------------------------------------------------------- lifecycle

#[test]
fn removing_one_container_keeps_the_other_running() {
    let Some(t) = CriTest::setup("removing_one_container_keeps_the_other_running") else {
        return;
    };
    let mut pod = run_pod(&t, "keep");
    let a = pod.run_container(t.container_config("a", &["sleep", "3601"]));
    let b = pod.run_container(t.container_config("b", &["sleep", "3602"]));
    let sandbox = t.is_runsc().then(|| sandbox_root(&pod));

    must(pod.stop_container(&a, 2), "StopContainer a");
    let stopped = pod.wait_exited(&a, EXIT_TIMEOUT);
    println!(
        "stopped container a: exit code {}, reason {:?}",
        stopped.exit_code, stopped.reason
    );
    must(pod.remove_container(&a), "RemoveContainer a");
    match pod.container_status(&a, false) {
        Err(e)
            if e.status()
                .is_some_and(|s| s.code() == tonic::Code::NotFound) => {}
        other => panic!("ContainerStatus of the removed container a: {other:?}"),
    }

    assert_eq!(
        must(pod.container_state(&b), "ContainerStatus b"),
        ContainerState::ContainerRunning,
        "container b after a was removed\n{}",
        pod.describe_container(&b)
    );
    assert_eq!(pod.exec_ok(&b, &["echo", "alive"]), "alive\n");
    let all = host::processes();
    assert!(
        processes_with_argv(&all, &["sleep", "3601"]).is_empty(),
        "a's process survived its removal"
    );
    if let Some(sandbox) = sandbox {
        assert!(
            sandbox.is_running(),
            "the pod's sandbox {} is gone after one container was removed",
            sandbox.describe()
        );
        assert_eq!(
            processes_with_argv(&host::descendants(&all, sandbox.pid), &["sleep", "3602"]).len(),
            1,
            "b's process is no longer in the sandbox"
        );
    }
    // The pod still takes new containers.
    let c = pod.run_container(t.container_config("c", &["sleep", "3603"]));
    assert_eq!(pod.exec_ok(&c, &["echo", "new"]), "new\n");
}

#[test]
fn exited_container_status_has_exit_code_and_reason() {
    let Some(t) = CriTest::setup("exited_container_status_has_exit_code_and_reason") else {
        return;
    };
    let mut pod = run_pod(&t, "exits");
    // "killed" is SIGKILLed from outside (StopContainer with no grace):
    // inside its PID namespace, its init would ignore the signal.
    let cases = [
        ("ok", vec!["true"], 0, "Completed"),
        ("three", vec!["sh", "-c", "exit 3"], 3, "Error"),
        ("killed", vec!["sleep", "3600"], 137, "Error"),
    ];
    let ids: Vec<String> = cases
        .iter()
        .map(|(name, cmd, _, _)| pod.run_container(t.container_config(name, cmd)))
        .collect();
    must(
        pod.stop_container(&ids[2], 0),
        "StopContainer killed (no grace)",
    );
    for ((name, cmd, code, reason), id) in cases.iter().zip(&ids) {
        let s = pod.wait_exited(id, EXIT_TIMEOUT);
        assert_eq!(
            (s.exit_code, s.reason.as_str()),
            (*code, *reason),
            "ContainerStatus of {name} ({cmd:?}): message {:?}\n{}",
            s.message,
            pod.describe_container(id)
        );
        // (containerd stamps started_at after the start returns: a quick
        // exit can finish "before" it, with runc too)
        assert!(
            s.started_at > 0 && s.finished_at >= s.created_at,
            "{name}: created_at {} started_at {} finished_at {}",
            s.created_at,
            s.started_at,
            s.finished_at
        );
    }
}

#[test]
fn container_stats_report_cpu_and_memory() {
    let Some(t) = CriTest::setup("container_stats_report_cpu_and_memory") else {
        return;
    };
    let mut pod = run_pod(&t, "stats");
    let c = pod.run_container(t.container_config(
        "busy",
        &[
            "sh",
            "-c",
            "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; exec sleep 3600",
        ],
    ));
    std::thread::sleep(Duration::from_secs(2));
    let request = ContainerStatsRequest {
        container_id: c.clone(),
    };
    let stats = must(
        t.cri
            .runtime_call("ContainerStats", CALL_TIMEOUT, |mut cl| async move {
                cl.container_stats(request).await
            }),
        "ContainerStats",
    )
    .stats
    .unwrap_or_default();
    let cpu = stats
        .cpu
        .as_ref()
        .and_then(|c| c.usage_core_nano_seconds.as_ref())
        .map(|v| v.value);
    let memory = stats
        .memory
        .as_ref()
        .and_then(|m| m.working_set_bytes.as_ref())
        .map(|v| v.value);
    assert!(
        cpu.is_some_and(|v| v > 0) && memory.is_some_and(|v| v > 0),
        "ContainerStats of a running container: cpu {cpu:?} ns, memory working set {memory:?}: \
         {stats:?}"
    );

    // ListContainerStats (what the kubelet polls) lists it for the pod.
    let request = ListContainerStatsRequest {
        filter: Some(ContainerStatsFilter {
            pod_sandbox_id: pod.id.clone(),
            ..Default::default()
        }),
    };
    let listed = must(
        t.cri
            .runtime_call("ListContainerStats", CALL_TIMEOUT, |mut cl| async move {
                cl.list_container_stats(request).await
            }),
        "ListContainerStats",
    )
    .stats;
    let ids: Vec<&str> = listed
        .iter()
        .filter_map(|s| s.attributes.as_ref().map(|a| a.id.as_str()))
        .collect();
    assert!(
        ids.contains(&c.as_str()),
        "ListContainerStats of the pod: {ids:?}"
    );

    // PodSandboxStats: the pod's CPU and memory, and its containers.
    let request = PodSandboxStatsRequest {
        pod_sandbox_id: pod.id.clone(),
    };
    let pod_stats = must(
        t.cri
            .runtime_call("PodSandboxStats", CALL_TIMEOUT, |mut cl| async move {
                cl.pod_sandbox_stats(request).await
            }),
        "PodSandboxStats",
    )
    .stats
    .and_then(|s| s.linux)
    .unwrap_or_default();
    let pod_cpu = pod_stats
        .cpu
        .as_ref()
        .and_then(|c| c.usage_core_nano_seconds.as_ref())
        .map(|v| v.value);
    let pod_memory = pod_stats
        .memory
        .as_ref()
        .and_then(|m| m.working_set_bytes.as_ref())
        .map(|v| v.value);
    assert!(
        pod_cpu.is_some_and(|v| v > 0) && pod_memory.is_some_and(|v| v > 0),
        "PodSandboxStats: cpu {pod_cpu:?} ns, memory working set {pod_memory:?}: {pod_stats:?}"
    );
    let in_pod: Vec<&str> = pod_stats
        .containers
        .iter()
        .filter_map(|s| s.attributes.as_ref().map(|a| a.id.as_str()))
        .collect();
    assert!(
        in_pod.contains(&c.as_str()),
        "PodSandboxStats containers: {in_pod:?}"
    );
}

/// The cgroup path of process `pid` in the memory hierarchy (v1) or the
/// unified one (v2), as /proc/PID/cgroup gives it.
fn memory_cgroup_of(pid: i32) -> Option<String> {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let line = text
        .lines()
        .find(|l| {
            l.split(':')
                .nth(1)
                .is_some_and(|c| c.split(',').any(|c| c == "memory"))
        })
        .or_else(|| text.lines().find(|l| l.starts_with("0::")))?;
    line.splitn(3, ':').nth(2).map(str::to_string)
}

/// A pod whose cgroup parent is a systemd slice (what the kubelet's systemd
/// cgroup driver passes) gets containerd's `slice:cri-containerd:id`
/// cgroupsPath: the container's cgroup is nested the way systemd nests
/// slices, and is gone once the pod is removed. (runc's shim is set up with
/// the cgroupfs driver here, which refuses that form: runsc only.)
#[test]
fn systemd_slice_parents_nest_like_systemd() {
    let Some(t) = CriTest::setup("systemd_slice_parents_nest_like_systemd") else {
        return;
    };
    if !t.is_runsc() {
        eprintln!("skipping systemd_slice_parents_nest_like_systemd: runc is set up for cgroupfs");
        return;
    }
    let mut config = t.pod_config("slice");
    let uid: String = config
        .metadata
        .as_ref()
        .map(|m| m.uid.replace('-', ""))
        .unwrap_or_default();
    let slice = format!("runsccritest-pod{uid}.slice");
    if let Some(linux) = config.linux.as_mut() {
        linux.cgroup_parent = slice.clone();
    }
    let mut pod = must(t.run_pod(config), "RunPodSandbox with a slice parent");
    let c = pod.run_container(t.container_config("app", &["sleep", "3600"]));
    let mut pid = None;
    assert!(
        wait_until(EXIT_TIMEOUT, || {
            pid = container_pid(&pod, &c);
            pid.is_some()
        }),
        "no pid for {c}"
    );
    let pid = pid.unwrap_or_default();
    let parent = format!("/runsccritest.slice/{slice}");
    let want = format!("{parent}/cri-containerd-{c}.scope");
    assert_eq!(
        memory_cgroup_of(pid).as_deref(),
        Some(want.as_str()),
        "the cgroup of {c} (pid {pid})"
    );
    must(pod.stop_and_remove(), "removing the pod");
    let left: Vec<PathBuf> = cgroup_hierarchies()
        .into_iter()
        .map(|h| h.join(want.trim_start_matches('/')))
        .filter(|d| d.exists())
        .collect();
    // What the kubelet removes: the pod's slice and, when empty, its parent.
    remove_cgroup_parent(&parent);
    assert!(left.is_empty(), "left after the pod's removal: {left:?}");
}

#[test]
fn removing_the_pod_leaves_nothing_behind() {
    let Some(t) = CriTest::setup("removing_the_pod_leaves_nothing_behind") else {
        return;
    };
    let mut pod = run_pod(&t, "teardown");
    let a = pod.run_container(t.container_config("a", &["sleep", "3601"]));
    let b =
        pod.run_container(t.container_config("b", &["sh", "-c", "trap '' TERM; exec sleep 3602"]));
    let ids = [pod.id.clone(), a.clone(), b.clone()];

    let shims = pod_shims(&pod, &[&a, &b]);
    assert_eq!(shims.len(), 1, "expected one shim for the pod: {shims:#?}");
    let all = host::processes();
    let recorded: Vec<Process> = std::iter::once(shims[0].clone())
        .chain(host::descendants(&all, shims[0].pid))
        .collect();
    let state_dir = host::runsc_state_root().join(pod.sandbox_id());
    if t.is_runsc() {
        assert!(
            state_dir.is_dir(),
            "the pod's sandbox state directory {} is missing while it runs",
            state_dir.display()
        );
    }
    let netns = pod_netns_path(&pod);
    println!("pod netns: {netns:?}");
    let cgroup_parent = pod.cgroup_parent();
    let cgroups_running = cgroups_below(&cgroup_parent);
    println!(
        "cgroups below the pod's parent {cgroup_parent} while it runs:\n  {}",
        cgroups_running
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join("\n  ")
    );
    let bundles: Vec<PathBuf> = ids
        .iter()
        .map(|id| host::bundle_dir(CRI_NAMESPACE, id))
        .collect();

    let start = Instant::now();
    must(pod.stop(), "StopPodSandbox");
    println!("StopPodSandbox took {:?}", start.elapsed());
    for c in [&a, &b] {
        let state = pod.container_state(c);
        assert!(
            matches!(state, Ok(ContainerState::ContainerExited)),
            "after StopPodSandbox, container {c} is {state:?}"
        );
    }
    must(pod.remove(), "RemovePodSandbox");

    let leftovers = || {
        let mut left: Vec<String> = recorded
            .iter()
            .filter(|p| p.is_present())
            .map(|p| format!("process {}", p.describe()))
            .collect();
        for id in &ids {
            host::traces_of(id, &mut left);
            left.extend(
                host::runsc_state_dirs(id)
                    .into_iter()
                    .map(|d| format!("state {}", d.display())),
            );
        }
        left.extend(
            cgroups_below(&cgroup_parent)
                .into_iter()
                .map(|c| format!("cgroup {}", c.display())),
        );
        left.extend(
            bundles
                .iter()
                .chain(std::iter::once(&state_dir))
                .chain(netns.iter())
                .filter(|p| p.exists())
                .map(|p| format!("path {}", p.display())),
        );
        left
    };
    let mut left = Vec::new();
    let clean = wait_until(CLEANUP_TIMEOUT, || {
        left = leftovers();
        left.is_empty()
    });
    let parents = cgroup_dirs(&cgroup_parent);
    if !parents.is_empty() {
        // kubelet makes and removes a pod's cgroup; containerd and the shim
        // create it on the way to the containers' cgroups but never remove it.
        println!(
            "NOTE: the pod's cgroup parent {cgroup_parent} is left (empty) in {} hierarchies \
             after RemovePodSandbox: {}",
            parents.len(),
            parents
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    remove_cgroup_parent(&cgroup_parent);
    assert!(
        clean,
        "after StopPodSandbox and RemovePodSandbox, pod {} left behind (after {CLEANUP_TIMEOUT:?}):\n  {}",
        pod.id,
        left.join("\n  ")
    );
    assert!(
        cgroup_dirs(&cgroup_parent).is_empty(),
        "the pod's cgroup parent {cgroup_parent} cannot be removed after the pod: {:?}",
        cgroup_dirs(&cgroup_parent)
    );
}

// ------------------------------------------------------------- resources

const MIB: i64 = 1024 * 1024;

/// The CRI resources of a container limited to `cpu_quota` µs of CPU per
/// `cpu_period` µs and `memory` bytes (0: unset).
fn resources(cpu_period: i64, cpu_quota: i64, memory: i64) -> LinuxContainerResources {
    LinuxContainerResources {
        cpu_period,
        cpu_quota,
        memory_limit_in_bytes: memory,
        ..Default::default()
    }
}

/// The `MemTotal` of a /proc/meminfo text, in kB.
fn meminfo_total_kib(meminfo: &str) -> Option<u64> {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// How many CPUs a kernel CPU list (`0-3,6`, as in
/// /sys/devices/system/cpu/online) names; None when it does not parse.
fn cpu_list_count(list: &str) -> Option<u32> {
    let mut n = 0;
    for part in list.trim().split(',') {
        n += match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (a.parse::<u32>().ok()?, b.parse::<u32>().ok()?);
                b.checked_sub(a)? + 1
            }
            None => {
                part.parse::<u32>().ok()?;
                1
            }
        };
    }
    Some(n)
}

/// A container that allocates beyond its 32 MiB memory limit is killed by
/// the kernel's OOM killer, and the CRI says so: ContainerStatus shows
/// exit code 137 with reason `OOMKilled` (which containerd sets only on
/// the runtime's TaskOOM event, not for any exit 137).
///
/// The allocation is the container's init itself (sh holding 128 MiB of
/// command-substitution output), so it is memory charged to the
/// container's cgroup, and bounded should the limit not hold (then sh
/// exits 0 and the test fails).
#[test]
fn oom_killed_container_reports_reason_oomkilled() {
    let Some(t) = CriTest::setup("oom_killed_container_reports_reason_oomkilled") else {
        return;
    };
    let mut pod = run_pod(&t, "oom");
    let mut config = t.container_config(
        "hog",
        &[
            "sh",
            "-c",
            "x=$(head -c 134217728 /dev/zero | tr '\\0' a); echo survived ${#x} bytes",
        ],
    );
    if let Some(linux) = config.linux.as_mut() {
        linux.resources = Some(resources(0, 0, 32 * MIB));
    }
    let c = pod.run_container(config);
    let s = pod.wait_exited(&c, EXIT_TIMEOUT);
    assert_eq!(
        (s.exit_code, s.reason.as_str()),
        (137, "OOMKilled"),
        "ContainerStatus of a container allocating 128 MiB under a 32 MiB limit (handler {}): \
         message {:?}\n{}",
        t.handler,
        s.message,
        pod.describe_container(&c)
    );
}

/// A container limited to one CPU (quota 100 ms per 100 ms period) and
/// 256 MiB sees one CPU and 256 MiB, as it would in a VM: `nproc` (its
/// CPU affinity), /sys/devices/system/cpu/online, /proc/cpuinfo and
/// /proc/meminfo's MemTotal. After UpdateContainerResources to two CPUs'
/// quota and 512 MiB, the same container sees min(2, host CPUs) and
/// 512 MiB.
///
/// That is the runsc handler's doing (its sandbox serves those files).
/// Under any other handler (runc) the container sees the host's MemTotal
/// whatever its limit, before and after the update; that is checked
/// instead.
#[test]
fn container_sees_its_cpu_and_memory_limits() {
    let Some(t) = CriTest::setup("container_sees_its_cpu_and_memory_limits") else {
        return;
    };
    let host_meminfo = fs::read_to_string("/proc/meminfo").expect("read the host's /proc/meminfo");
    let host_mem_kib = meminfo_total_kib(&host_meminfo)
        .unwrap_or_else(|| panic!("no MemTotal in the host's /proc/meminfo:\n{host_meminfo}"));
    let host_online = fs::read_to_string("/sys/devices/system/cpu/online")
        .expect("read the host's /sys/devices/system/cpu/online");
    let host_cpus = cpu_list_count(&host_online).unwrap_or_else(|| {
        panic!("the host's /sys/devices/system/cpu/online {host_online:?} is not a CPU list")
    });

    let mut pod = run_pod(&t, "limits");
    let mut config = t.container_config("c", &["sleep", "3600"]);
    if let Some(linux) = config.linux.as_mut() {
        linux.resources = Some(resources(100_000, 100_000, 256 * MIB));
    }
    let c = pod.run_container(config);
    let mem_total = |when: &str| {
        let meminfo = pod.exec_ok(&c, &["cat", "/proc/meminfo"]);
        let kib = meminfo_total_kib(&meminfo).unwrap_or_else(|| {
            panic!("no MemTotal in the container's /proc/meminfo {when}:\n{meminfo}")
        });
        (kib, meminfo)
    };
    let seen = |cmd: &[&str]| pod.exec_ok(&c, cmd).trim().to_string();

    let (kib, meminfo) = mem_total("with 1 CPU and 256 MiB");
    if t.is_runsc() {
        assert_eq!(
            kib, 262_144,
            "MemTotal (kB) in a container limited to 256 MiB:\n{meminfo}"
        );
        assert_eq!(
            seen(&["nproc"]),
            "1",
            "nproc in a container with a quota of one CPU (host: {host_cpus} CPUs)"
        );
        assert_eq!(
            seen(&["cat", "/sys/devices/system/cpu/online"]),
            "0",
            "/sys/devices/system/cpu/online in a container with a quota of one CPU (host: \
             {host_online:?})"
        );
        assert_eq!(
            seen(&["grep", "-c", "^processor", "/proc/cpuinfo"]),
            "1",
            "processors in /proc/cpuinfo of a container with a quota of one CPU (host: \
             {host_cpus})"
        );
    } else {
        assert_eq!(
            kib, host_mem_kib,
            "handler {}: MemTotal (kB) in a container limited to 256 MiB is not the host's:\n\
             {meminfo}",
            t.handler
        );
        println!(
            "handler {}: a container limited to 1 CPU and 256 MiB sees nproc {}, MemTotal {kib} kB",
            t.handler,
            seen(&["nproc"])
        );
    }

    let request = UpdateContainerResourcesRequest {
        container_id: c.clone(),
        linux: Some(resources(100_000, 200_000, 512 * MIB)),
        ..Default::default()
    };
    must(
        t.cri.runtime_call(
            "UpdateContainerResources",
            CALL_TIMEOUT,
            |mut cl| async move { cl.update_container_resources(request).await },
        ),
        "UpdateContainerResources to 2 CPUs' quota and 512 MiB",
    );
    let (kib, meminfo) = mem_total("after the update to 2 CPUs and 512 MiB");
    if t.is_runsc() {
        let cpus = host_cpus.min(2).to_string();
        assert_eq!(
            kib, 524_288,
            "MemTotal (kB) after UpdateContainerResources to 512 MiB:\n{meminfo}"
        );
        assert_eq!(
            seen(&["nproc"]),
            cpus,
            "nproc after UpdateContainerResources to a quota of two CPUs (host: {host_cpus} CPUs)"
        );
        assert_eq!(
            seen(&["grep", "-c", "^processor", "/proc/cpuinfo"]),
            cpus,
            "processors in /proc/cpuinfo after UpdateContainerResources to a quota of two CPUs \
             (host: {host_cpus})"
        );
    } else {
        assert_eq!(
            kib, host_mem_kib,
            "handler {}: MemTotal (kB) after UpdateContainerResources to 512 MiB is not the \
             host's:\n{meminfo}",
            t.handler
        );
    }
    assert_eq!(
        must(pod.container_state(&c), "ContainerStatus after the update"),
        ContainerState::ContainerRunning,
        "the container after UpdateContainerResources\n{}",
        pod.describe_container(&c)
    );
}

// ------------------------------------------------- the helpers themselves

#[test]
fn helpers_parse_cri_log_lines_and_subnets() {
    assert!(is_rfc3339_nano("2026-11-29T08:38:08.123456789Z"));
    assert!(is_rfc3339_nano("2026-11-29T08:38:08.1234Z"));
    assert!(is_rfc3339_nano("2026-11-29T08:38:08Z"));
    assert!(is_rfc3339_nano("2026-11-29T08:38:08.5+02:00"));
    assert!(!is_rfc3339_nano("2026-11-29 08:38:08Z"));
    assert!(!is_rfc3339_nano("2026-11-29T08:38:08.1234567890Z"));
    assert!(!is_rfc3339_nano("2026-11-29T08:38:08.Z"));
    let lines = cri_log_lines("2026-11-29T08:38:08.1Z stdout F hello world\nT stderr P \n");
    assert_eq!(
        lines[0],
        (
            "2026-11-29T08:38:08.1Z".to_string(),
            "stdout".to_string(),
            "F".to_string(),
            "hello world".to_string()
        )
    );
    assert_eq!(
        (
            lines[1].1.as_str(),
            lines[1].2.as_str(),
            lines[1].3.as_str()
        ),
        ("stderr", "P", "")
    );
    assert!(in_pod_subnet(&"10.88.3.4".parse().expect("address")));
    assert!(!in_pod_subnet(&"10.89.0.1".parse().expect("address")));
    assert_eq!(cpu_list_count("0"), Some(1));
    assert_eq!(cpu_list_count("0-3,6\n"), Some(5));
    assert_eq!(cpu_list_count("0-1,4-5"), Some(4));
    assert_eq!(cpu_list_count("3-1"), None);
    assert_eq!(cpu_list_count("x"), None);
    assert_eq!(
        meminfo_total_kib("MemTotal:         262144 kB\nMemFree:  1 kB\n"),
        Some(262_144)
    );
    assert_eq!(meminfo_total_kib("MemFree:  1 kB\n"), None);
    assert!(says_privileged("privileged containers are refused"));
    assert!(!says_privileged(
        "setting sysctl net.ipv4.ip_unprivileged_port_start"
    ));
}
