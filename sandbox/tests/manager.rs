//! Integration tests of the sandbox core through the manager API: real
//! namespaces, a real busybox rootfs (RUNSC_TEST_ROOTFS, built by
//! test/setup.sh), real cgroups. They need root; without root or a rootfs
//! they print why and pass vacuously (the README's test command provides
//! both).

use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use oci_spec::runtime::{ProcessBuilder, Spec, UserBuilder};
use sandbox::manager::{Config, ContainerStdio, ManagerError, Sandbox, SignalTarget, Stdio};

const STATE_ROOT: &str = "/run/runsc-rs-itest";

fn enabled() -> Option<PathBuf> {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root");
        return None;
    }
    match std::env::var_os("RUNSC_TEST_ROOTFS") {
        Some(p) if Path::new(&p).join("bin/busybox").exists() => Some(PathBuf::from(p)),
        _ => {
            eprintln!("skipped: RUNSC_TEST_ROOTFS is not a busybox rootfs (run test/setup.sh)");
            None
        }
    }
}

/// A sandbox under test, with its own copy of the rootfs; destroyed on drop.
struct Fixture {
    dir: PathBuf,
    id: String,
    sb: Option<Sandbox>,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn config() -> Config {
    Config {
        state_root: PathBuf::from(STATE_ROOT),
        sandbox_binary: PathBuf::from(env!("CARGO_BIN_EXE_runsc-sandbox")),
        uid_pool: sandbox::manager::UidPool {
            start: 1 << 29,
            slots: 512,
        },
        debug: true,
        log_path: Some(PathBuf::from("/var/log/runsc-rs-itest.log")),
        ..Config::default()
    }
}

impl Fixture {
    fn new(name: &str, rootfs: &Path) -> Fixture {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let id = format!("{name}-{}-{n}", std::process::id());
        let dir = PathBuf::from("/var/tmp/runsc-itest").join(&id);
        std::fs::create_dir_all(&dir).unwrap();
        let st = std::process::Command::new("cp")
            .arg("-a")
            .arg(rootfs)
            .arg(dir.join("rootfs"))
            .status()
            .unwrap();
        assert!(st.success(), "copying the rootfs");
        Fixture { dir, id, sb: None }
    }

    fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs")
    }

    /// A runc-like default spec running `args`.
    fn spec(&self, args: &[&str]) -> Spec {
        let mut spec = Spec::default();
        let mut root = spec.root().clone().unwrap();
        root.set_path(self.rootfs());
        root.set_readonly(Some(false));
        spec.set_root(Some(root));
        let mut process = spec.process().clone().unwrap();
        process.set_args(Some(args.iter().map(|s| s.to_string()).collect()));
        process.set_terminal(Some(false));
        spec.set_process(Some(process));
        let mut linux = spec.linux().clone().unwrap();
        linux.set_cgroups_path(Some(PathBuf::from(format!("/runsc-itest/{}", self.id))));
        spec.set_linux(Some(linux));
        spec.set_hostname(Some("sbx".into()));
        spec
    }

    fn boot(&mut self, spec: &Spec) -> &Sandbox {
        let sb = Sandbox::create(&config(), &self.id, spec, None).expect("sandbox boots");
        self.sb = Some(sb);
        self.sb.as_ref().unwrap()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Some(sb) = self.sb.as_mut() {
            let _ = sb.destroy();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Pipes for stdout and stderr; the read ends are returned.
fn pipes() -> (Stdio, OwnedFd, OwnedFd) {
    let (out_r, out_w) = nix::unistd::pipe().unwrap();
    let (err_r, err_w) = nix::unistd::pipe().unwrap();
    let null: OwnedFd = std::fs::File::open("/dev/null").unwrap().into();
    (
        Stdio {
            stdin: Some(null),
            stdout: Some(out_w),
            stderr: Some(err_w),
            terminal: false,
        },
        out_r,
        err_r,
    )
}

fn read_all(fd: OwnedFd) -> String {
    let mut s = String::new();
    std::fs::File::from(fd).read_to_string(&mut s).unwrap();
    s
}

/// Runs `args` as the sandbox's container; returns (status, stdout, stderr).
fn run(fx: &mut Fixture, spec: &Spec) -> (u32, String, String) {
    let id = fx.id.clone();
    let sb = fx.boot(spec);
    let (stdio, out, err) = pipes();
    sb.create_container(&id, spec, &[], ContainerStdio::Fds(stdio))
        .expect("container created");
    sb.start_container(&id).expect("container started");
    let status = sb.wait(&id).expect("wait").status;
    (status, read_all(out), read_all(err))
}

#[test]
fn exit_status_and_exact_output() {
    let Some(rootfs) = enabled() else { return };
    let mut fx = Fixture::new("out", &rootfs);
    let spec = fx.spec(&["sh", "-c", "echo hi; printf 'to stderr' >&2; exit 3"]);
    let (status, out, err) = run(&mut fx, &spec);
    assert_eq!(status, 3);
    assert_eq!(out, "hi\n");
    assert_eq!(err, "to stderr");
}

#[test]
fn env_cwd_user_and_hostname_are_applied() {
    let Some(rootfs) = enabled() else { return };
    let mut fx = Fixture::new("env", &rootfs);
    let mut spec = fx.spec(&[
        "sh",
        "-c",
        "echo $GREETING; pwd; id -u; id -g; id -G; hostname",
    ]);
    let mut p = spec.process().clone().unwrap();
    let mut env = p.env().clone().unwrap_or_default();
    env.push("GREETING=hello-env".into());
    p.set_env(Some(env));
    p.set_cwd(PathBuf::from("/tmp"));
    p.set_user(
        UserBuilder::default()
            .uid(1000u32)
            .gid(1000u32)
            .additional_gids(vec![1000u32, 65534u32])
            .build()
            .unwrap(),
    );
    spec.set_process(Some(p));
    let (status, out, err) = run(&mut fx, &spec);
    assert_eq!(err, "");
    assert_eq!(status, 0);
    assert_eq!(out, "hello-env\n/tmp\n1000\n1000\n1000 65534\nsbx\n");
}

#[test]
fn exec_runs_in_the_container_with_its_own_status() {
    let Some(rootfs) = enabled() else { return };
    let mut fx = Fixture::new("exec", &rootfs);
    let spec = fx.spec(&["sh", "-c", "echo marker > /tmp/inside; sleep 100"]);
    let id = fx.id.clone();
    let sb = fx.boot(&spec);
    sb.create_container(&id, &spec, &[], ContainerStdio::Null)
        .unwrap();
    sb.start_container(&id).unwrap();
    // The exec sees the container's filesystem and exits with its own code.
    let deadline = Instant::now() + Duration::from_secs(10);
    let out = loop {
        let (stdio, out, _err) = pipes();
        let process = ProcessBuilder::default()
            .args(vec![
                "sh".into(),
                "-c".into(),
                "cat /tmp/inside && exit 7".into(),
            ])
            .env(vec!["PATH=/bin".into()])
            .cwd("/")
            .build()
            .unwrap();
        let pid = sb.exec(&id, &process, Some(stdio)).expect("exec").pid;
        let st = sb.wait_pid(&id, pid, true).unwrap();
        let text = read_all(out);
        if st.status == 7 || Instant::now() > deadline {
            assert_eq!(st.status, 7, "exec status (output {text:?})");
            break text;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(out, "marker\n");
    // A missing binary fails at once, with NotFound, and leaves the
    // container running.
    let started = Instant::now();
    let process = ProcessBuilder::default()
        .args(vec!["/no/such/binary".into()])
        .cwd("/")
        .build()
        .unwrap();
    match sb.exec(&id, &process, None) {
        Err(ManagerError::Rpc { code, message }) => {
            assert_eq!(code, ttrpc::Code::NOT_FOUND, "{message}");
            assert!(message.contains("/no/such/binary"), "{message}");
        }
        other => panic!("exec of a missing binary: {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    // A signal to an unknown pid is NotFound.
    match sb.signal(&id, SignalTarget::Process(4242), 15) {
        Err(ManagerError::Rpc { code, .. }) => assert_eq!(code, ttrpc::Code::NOT_FOUND),
        other => panic!("signal to an unknown pid: {other:?}"),
    }
    let procs = sb.processes(&id).unwrap();
    assert!(
        procs.iter().any(|p| p.cmd.starts_with("sleep 100")),
        "{procs:?}"
    );
}

#[test]
fn terminals_come_from_the_container_devpts() {
    let Some(rootfs) = enabled() else { return };
    let mut fx = Fixture::new("tty", &rootfs);
    let mut spec = fx.spec(&["sh", "-c", "tty; test -t 0 && echo is-a-tty; exit 5"]);
    let mut p = spec.process().clone().unwrap();
    p.set_terminal(Some(true));
    spec.set_process(Some(p));
    let id = fx.id.clone();
    let sb = fx.boot(&spec);
    let spawned = sb
        .create_container(&id, &spec, &[], ContainerStdio::Fds(Stdio::console()))
        .unwrap();
    let master = spawned.console.expect("the sandbox made a pty");
    sb.start_container(&id).unwrap();
    assert_eq!(sb.wait(&id).unwrap().status, 5);
    // The slave is closed: read what is buffered, then EIO.
    let mut out = Vec::new();
    let mut f = std::fs::File::from(master);
    let mut buf = [0u8; 256];
    while let Ok(n) = f.read(&mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    assert_eq!(String::from_utf8_lossy(&out), "/dev/pts/0\r\nis-a-tty\r\n");
}

#[test]
fn sigterm_trap_and_sigkill() {
    let Some(rootfs) = enabled() else { return };
    let mut fx = Fixture::new("sig", &rootfs);
    let spec = fx.spec(&[
        "sh",
        "-c",
        "trap 'echo got-term; exit 42' TERM; echo ready; while :; do sleep 0.1; done",
    ]);
    let id = fx.id.clone();
    let sb = fx.boot(&spec);
    let (stdio, out, _err) = pipes();
    sb.create_container(&id, &spec, &[], ContainerStdio::Fds(stdio))
        .unwrap();
    sb.start_container(&id).unwrap();
    let mut out = std::fs::File::from(out);
    let mut buf = [0u8; 6];
    out.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ready\n");
    sb.signal(&id, SignalTarget::Process(0), 15).unwrap();
    assert_eq!(sb.wait(&id).unwrap().status, 42);
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    assert_eq!(rest, "got-term\n");
    sb.destroy_container(&id).unwrap();

    // A second container in the same sandbox, killed.
    let cid = format!("{id}-k");
    let spec2 = fx.spec(&["sleep", "100"]);
    let sb = fx.sb.as_ref().unwrap();
    sb.create_container(&cid, &spec2, &[], ContainerStdio::Null)
        .unwrap();
    sb.start_container(&cid).unwrap();
    sb.signal(&cid, SignalTarget::All, 9).unwrap();
    assert_eq!(sb.wait(&cid).unwrap().status, 137);
}

#[test]
fn process_listing() {
    let Some(rootfs) = enabled() else { return };
    let mut fx = Fixture::new("ps", &rootfs);
    let spec = fx.spec(&["sh", "-c", "sleep 101 & sleep 102"]);
    let id = fx.id.clone();
    let sb = fx.boot(&spec);
    sb.create_container(&id, &spec, &[], ContainerStdio::Null)
        .unwrap();
    let init = sb.start_container(&id).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let procs = sb.processes(&id).unwrap();
        let cmds: Vec<&str> = procs.iter().map(|p| p.cmd.as_str()).collect();
        if cmds.contains(&"sleep 101") && cmds.contains(&"sleep 102") {
            let bg = procs.iter().find(|p| p.cmd == "sleep 101").unwrap();
            let fg = procs.iter().find(|p| p.cmd == "sleep 102").unwrap();
            assert_eq!(bg.ppid, init, "the background sleep is the shell's child");
            assert_eq!(fg.pid, init, "the shell exec'd the last command");
            assert!(procs.iter().all(|p| p.uid == 0));
            break;
        }
        assert!(Instant::now() < deadline, "processes: {cmds:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn isolation_from_the_host() {
    let Some(rootfs) = enabled() else { return };
    let mut fx = Fixture::new("iso", &rootfs);
    let marker = fx.dir.join("host-only-marker");
    std::fs::write(&marker, "secret").unwrap();
    let script = format!(
        "ls /proc | grep -c '^[0-9]'; \
         test -e {} && echo host-file-visible; \
         echo owned > /written-by-container && echo wrote-rootfs; \
         echo x > /sys/kernel/uevent_helper 2>/dev/null && echo wrote-sys; \
         mount -t tmpfs none /mnt 2>/dev/null && echo mounted; \
         sleep 100",
        marker.display()
    );
    let spec = fx.spec(&["sh", "-c", &script]);
    let id = fx.id.clone();
    let sb = fx.boot(&spec);
    let (stdio, out, _err) = pipes();
    sb.create_container(&id, &spec, &[], ContainerStdio::Fds(stdio))
        .unwrap();
    let pid = sb.start_container(&id).unwrap();
    // Container root is an unprivileged uid on the host.
    let host_pid = sb.host_pid(pid).expect("host pid of the container init");
    let status = std::fs::read_to_string(format!("/proc/{host_pid}/status")).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    let uids: Vec<u32> = uid_line
        .split_whitespace()
        .skip(1)
        .map(|s| s.parse().unwrap())
        .collect();
    assert!(uids.iter().all(|u| *u == sb.uid_base), "{uid_line}");
    assert!(sb.uid_base >= 1 << 29);
    let sandbox_status = std::fs::read_to_string(format!("/proc/{}/status", sb.pid)).unwrap();
    assert!(
        sandbox_status.contains(&format!("Uid:\t{}", sb.uid_base)),
        "the sandbox itself runs as the unprivileged uid"
    );
    // Read what the container printed before its sleep.
    let mut out = std::fs::File::from(out);
    let mut text = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 256];
    while !text.contains("wrote-rootfs") && !text.contains("\n\n") {
        let n = out.read(&mut buf).unwrap();
        text.push_str(std::str::from_utf8(&buf[..n]).unwrap());
        assert!(
            Instant::now() < deadline && n > 0,
            "output so far: {text:?}"
        );
    }
    let nprocs: u32 = text.lines().next().unwrap().trim().parse().unwrap();
    assert!(nprocs <= 3, "the container sees {nprocs} processes");
    assert!(!text.contains("host-file-visible"), "{text}");
    assert!(text.contains("wrote-rootfs"), "{text}");
    sb.signal(&id, SignalTarget::All, 9).unwrap();
    sb.wait(&id).unwrap();
    let rest = {
        let mut s = String::new();
        out.read_to_string(&mut s).unwrap();
        s
    };
    assert!(!rest.contains("wrote-sys"), "{rest}");
    assert!(!rest.contains("mounted"), "{rest}");
    // What container root wrote belongs to host root (idmapped rootfs).
    let written = fx.rootfs().join("written-by-container");
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(&written).expect("the container's write reached its rootfs");
    assert_eq!((meta.uid(), meta.gid()), (0, 0));
}

#[test]
fn destroy_leaves_nothing_and_a_killed_sandbox_is_reported() {
    let Some(rootfs) = enabled() else { return };
    let mut fx = Fixture::new("gone", &rootfs);
    let spec = fx.spec(&["sleep", "100"]);
    let id = fx.id.clone();
    let sb = fx.boot(&spec);
    sb.create_container(&id, &spec, &[], ContainerStdio::Null)
        .unwrap();
    let pid = sb.start_container(&id).unwrap();
    let host_pid = sb.host_pid(pid).unwrap();
    let sandbox_pid = sb.pid;
    let state_dir = sb.state_dir.clone();
    let cgroup_dirs = sb.cgroup.as_ref().unwrap().dirs();
    assert!(cgroup_dirs.iter().all(|d| d.is_dir()));
    // SIGKILL of the sandbox process: the container is reported exited.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(sandbox_pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    assert_eq!(sb.wait(&id).unwrap().status, 137);
    let mut sb = fx.sb.take().unwrap();
    sb.destroy().unwrap();
    sb.destroy().expect("destroy is idempotent");
    let deadline = Instant::now() + Duration::from_secs(5);
    while Path::new(&format!("/proc/{host_pid}")).exists() {
        assert!(
            Instant::now() < deadline,
            "container process {host_pid} survived"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(!Path::new(&format!("/proc/{sandbox_pid}")).exists());
    assert!(
        !state_dir.exists(),
        "state dir left: {}",
        state_dir.display()
    );
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mountinfo.contains(&id), "mounts left:\n{mountinfo}");
    assert!(cgroup_dirs.iter().all(|d| !d.exists()), "cgroups left");
    let slots = std::fs::read_dir(Path::new(STATE_ROOT).join("uidpool")).unwrap();
    for s in slots.flatten() {
        assert_ne!(
            std::fs::read_to_string(s.path()).unwrap(),
            id,
            "uid slot left"
        );
    }
}

#[test]
fn bad_input_fails_cleanly() {
    let Some(rootfs) = enabled() else { return };
    let mut fx = Fixture::new("bad", &rootfs);
    let spec = fx.spec(&["true"]);
    let nobin = fx.spec(&["/bin/not-here"]);
    let id = fx.id.clone();
    let sb = fx.boot(&spec);
    // A missing rootfs.
    let mut missing = spec.clone();
    let mut root = missing.root().clone().unwrap();
    root.set_path(PathBuf::from("/nonexistent/rootfs"));
    missing.set_root(Some(root));
    match sb.create_container("c-missing", &missing, &[], ContainerStdio::Null) {
        Err(e) => assert_eq!(e.code(), ttrpc::Code::INVALID_ARGUMENT, "{e}"),
        Ok(_) => panic!("a missing rootfs was accepted"),
    }
    assert!(!sb.shared_dir().join("c-missing").exists());
    // A container whose program does not exist fails at create.
    match sb.create_container("c-nobin", &nobin, &[], ContainerStdio::Null) {
        Err(e) => {
            assert_eq!(e.code(), ttrpc::Code::NOT_FOUND, "{e}");
            assert!(e.to_string().contains("/bin/not-here"), "{e}");
        }
        Ok(_) => panic!("a missing program was accepted"),
    }
    assert!(!sb.shared_dir().join("c-nobin").exists());
    // Unknown containers.
    match sb.start_container("nope") {
        Err(e) => assert_eq!(e.code(), ttrpc::Code::NOT_FOUND, "{e}"),
        Ok(_) => panic!("started an unknown container"),
    }
    // The sandbox still works.
    sb.create_container(&id, &spec, &[], ContainerStdio::Null)
        .unwrap();
    sb.start_container(&id).unwrap();
    assert_eq!(sb.wait(&id).unwrap().status, 0);
    // A second sandbox with the same id is refused.
    match Sandbox::create(&config(), &id, &spec, None) {
        Err(ManagerError::AlreadyExists(_)) => {}
        other => panic!("duplicate sandbox: {other:?}"),
    }
}

#[test]
fn debug_run_command_runs_a_bundle() {
    let Some(rootfs) = enabled() else { return };
    let fx = Fixture::new("cli", &rootfs);
    let spec = fx.spec(&["sh", "-c", "echo hi; exit 3"]);
    spec.save(fx.dir.join("config.json")).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_runsc-sandbox"))
        .args(["run", "--state-root", STATE_ROOT, "--id", &fx.id])
        .arg(&fx.dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert_eq!(out.stdout, b"hi\n");
    // A spec that does not parse: a clear error, exit 125, nothing left.
    std::fs::write(fx.dir.join("config.json"), "{ not json").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_runsc-sandbox"))
        .args(["run", "--state-root", STATE_ROOT, "--id", &fx.id])
        .arg(&fx.dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("config.json"),
        "{out:?}"
    );
    assert!(!Path::new(STATE_ROOT).join(&fx.id).exists());
}

#[test]
fn containers_can_share_a_process_namespace_and_host_pid_is_refused() {
    let Some(rootfs) = enabled() else { return };
    let mut fx = Fixture::new("pidns", &rootfs);
    let first = fx.spec(&["sleep", "103"]);
    let mut second = fx.spec(&["sh", "-c", "cat /proc/*/cmdline | tr '\\0' ' '"]);
    let mut hostpid = fx.spec(&["true"]);
    let id = fx.id.clone();
    let sb = fx.boot(&first);
    sb.create_container(&id, &first, &[], ContainerStdio::Null)
        .unwrap();
    let pid = sb.start_container(&id).unwrap();
    let host = sb.host_pid(pid).unwrap();
    // As containerd's CRI writes it for shareProcessNamespace: the host
    // path of the first container's PID namespace.
    let mut linux = second.linux().clone().unwrap();
    let mut nss = linux.namespaces().clone().unwrap();
    for ns in nss.iter_mut() {
        if ns.typ() == oci_spec::runtime::LinuxNamespaceType::Pid {
            ns.set_path(Some(PathBuf::from(format!("/proc/{host}/ns/pid"))));
        }
    }
    linux.set_namespaces(Some(nss.clone()));
    second.set_linux(Some(linux.clone()));
    let cid = format!("{id}-2");
    let (stdio, out, _err) = pipes();
    sb.create_container(&cid, &second, &[], ContainerStdio::Fds(stdio))
        .unwrap();
    sb.start_container(&cid).unwrap();
    assert_eq!(sb.wait(&cid).unwrap().status, 0);
    let text = read_all(out);
    assert!(
        text.contains("sleep 103"),
        "the second container sees: {text:?}"
    );
    // Its exit did not take the first container with it.
    let procs = sb.processes(&id).unwrap();
    assert!(procs.iter().any(|p| p.cmd == "sleep 103"), "{procs:?}");
    // No PID namespace at all means the host's: refused.
    nss.retain(|n| n.typ() != oci_spec::runtime::LinuxNamespaceType::Pid);
    linux.set_namespaces(Some(nss));
    hostpid.set_linux(Some(linux));
    match sb.create_container(&format!("{id}-3"), &hostpid, &[], ContainerStdio::Null) {
        Err(e) => {
            assert_eq!(e.code(), ttrpc::Code::INVALID_ARGUMENT, "{e}");
            assert!(e.to_string().contains("hostPID"), "{e}");
        }
        Ok(_) => panic!("a host PID namespace was accepted"),
    }
}

#[test]
fn each_container_gets_its_own_cgroup_with_its_limits() {
    let Some(rootfs) = enabled() else { return };
    let mut fx = Fixture::new("cg", &rootfs);
    let first = fx.spec(&["sleep", "104"]);
    let mut second = fx.spec(&["sleep", "105"]);
    let id = fx.id.clone();
    let cid = format!("{id}-2");
    let mut linux = second.linux().clone().unwrap();
    linux.set_cgroups_path(Some(PathBuf::from(format!("/runsc-itest/{cid}"))));
    let resources = oci_spec::runtime::LinuxResourcesBuilder::default()
        .memory(
            oci_spec::runtime::LinuxMemoryBuilder::default()
                .limit(64i64 << 20)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    linux.set_resources(Some(resources));
    second.set_linux(Some(linux));
    let sb = fx.boot(&first);
    sb.create_container(&id, &first, &[], ContainerStdio::Null)
        .unwrap();
    sb.start_container(&id).unwrap();
    sb.create_container(&cid, &second, &[], ContainerStdio::Null)
        .unwrap();
    let pid = sb.start_container(&cid).unwrap();
    let host = sb.host_pid(pid).unwrap();
    let cgroups = std::fs::read_to_string(format!("/proc/{host}/cgroup")).unwrap();
    assert!(
        cgroups.contains(&format!("memory:/runsc-itest/{cid}")),
        "{cgroups}"
    );
    let placement = sb.container_cgroup(&cid).expect("recorded");
    let dir = placement
        .dirs()
        .into_iter()
        .find(|d| d.starts_with("/sys/fs/cgroup/memory"))
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.join("memory.limit_in_bytes"))
            .unwrap()
            .trim(),
        (64u64 << 20).to_string()
    );
    // An exec joins the container's cgroup too.
    let process = ProcessBuilder::default()
        .args(vec!["sleep".into(), "106".into()])
        .cwd("/")
        .build()
        .unwrap();
    let epid = sb.exec(&cid, &process, None).unwrap().pid;
    let ehost = sb.host_pid(epid).unwrap();
    let ecg = std::fs::read_to_string(format!("/proc/{ehost}/cgroup")).unwrap();
    assert!(ecg.contains(&format!("memory:/runsc-itest/{cid}")), "{ecg}");
    sb.destroy_container(&cid).unwrap();
    assert!(!dir.exists(), "the container's cgroup is removed with it");
}

#[test]
fn platform_kvm_gets_the_device_and_is_refused_cleanly() {
    let Some(rootfs) = enabled() else { return };
    if !Path::new("/dev/kvm").exists() {
        eprintln!("skipped: no /dev/kvm");
        return;
    }
    let fx = Fixture::new("kvm", &rootfs);
    let spec = fx.spec(&["true"]);
    let mut cfg = config();
    cfg.platform = sandbox::manager::Platform::Kvm;
    match Sandbox::create(&cfg, &fx.id, &spec, None) {
        Err(ManagerError::Boot { reason, .. }) => {
            assert!(reason.contains("platform kvm"), "{reason}");
            assert!(
                reason.contains("device fd Some("),
                "the device was donated: {reason}"
            );
        }
        other => panic!("platform kvm: {other:?}"),
    }
    assert!(!Path::new(STATE_ROOT).join(&fx.id).exists());
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mountinfo.contains(&fx.id));
}

#[test]
fn overlay_rootfs_from_snapshot_mounts_is_writable_by_container_root() {
    let Some(rootfs) = enabled() else { return };
    let mut fx = Fixture::new("ovl", &rootfs);
    // As containerd's overlay snapshotter gives it: a lower layer, and an
    // upper and work directory (owned by host root) in one snapshot dir.
    let snap = fx.dir.join("snapshot");
    std::fs::create_dir_all(snap.join("fs")).unwrap();
    std::fs::create_dir_all(snap.join("work")).unwrap();
    let mounts = vec![sandbox::manager::RootfsMount {
        typ: "overlay".into(),
        source: "overlay".into(),
        options: vec![
            "index=off".into(),
            format!("lowerdir={}", fx.rootfs().display()),
            format!("upperdir={}", snap.join("fs").display()),
            format!("workdir={}", snap.join("work").display()),
        ],
    }];
    let spec = fx.spec(&[
        "sh",
        "-c",
        "echo new > /newfile && mkdir /newdir && echo more >> /etc/passwd && \
         stat -c '%u %n' / /newfile /etc/passwd && touch /bin/busybox && echo done",
    ]);
    let id = fx.id.clone();
    let sb = fx.boot(&spec);
    let (stdio, out, err) = pipes();
    sb.create_container(&id, &spec, &mounts, ContainerStdio::Fds(stdio))
        .unwrap();
    sb.start_container(&id).unwrap();
    let status = sb.wait(&id).unwrap().status;
    let (out, err) = (read_all(out), read_all(err));
    assert_eq!(status, 0, "stdout {out:?} stderr {err:?}");
    assert_eq!(out, "0 /\n0 /newfile\n0 /etc/passwd\ndone\n");
    // On the host the writes are in the upper layer, as container root's
    // host uid; the lower layer is untouched.
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(snap.join("fs/newfile")).unwrap();
    assert_eq!(meta.uid(), sb.uid_base);
    assert!(std::fs::read_to_string(snap.join("fs/etc/passwd"))
        .unwrap()
        .ends_with("more\n"));
    assert!(!std::fs::read_to_string(fx.rootfs().join("etc/passwd"))
        .unwrap()
        .contains("more"));
}

#[test]
fn sysctls_reach_a_pod_network_namespace_owned_by_the_host() {
    let Some(rootfs) = enabled() else { return };
    let mut fx = Fixture::new("sysctl", &rootfs);
    // A network namespace made by the host, as CNI makes a pod's.
    let mut holder = std::process::Command::new("unshare")
        .args(["--net", "sleep", "60"])
        .spawn()
        .unwrap();
    let netns = format!("/proc/{}/ns/net", holder.id());
    let deadline = Instant::now() + Duration::from_secs(5);
    let host_ino = std::fs::metadata("/proc/self/ns/net").unwrap();
    use std::os::unix::fs::MetadataExt;
    while std::fs::metadata(&netns).map(|m| m.ino()).ok() == Some(host_ino.ino()) {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut spec = fx.spec(&[
        "sh",
        "-c",
        "cat /proc/sys/net/ipv4/ip_unprivileged_port_start /proc/sys/kernel/shm_rmid_forced",
    ]);
    let mut linux = spec.linux().clone().unwrap();
    let mut nss = linux.namespaces().clone().unwrap();
    for ns in nss.iter_mut() {
        if ns.typ() == oci_spec::runtime::LinuxNamespaceType::Network {
            ns.set_path(Some(PathBuf::from(&netns)));
        }
    }
    linux.set_namespaces(Some(nss));
    linux.set_sysctl(Some(
        [
            (
                "net.ipv4.ip_unprivileged_port_start".to_string(),
                "0".to_string(),
            ),
            ("kernel.shm_rmid_forced".to_string(), "1".to_string()),
        ]
        .into_iter()
        .collect(),
    ));
    spec.set_linux(Some(linux));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&mut fx, &spec)));
    let _ = holder.kill();
    let _ = holder.wait();
    let (status, out, err) = result.unwrap();
    assert_eq!((status, out.as_str()), (0, "0\n1\n"), "stderr {err:?}");
    // The host's own value is untouched.
    let host = std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start").unwrap();
    assert_ne!(host.trim(), "0");
}

#[test]
fn a_fast_exec_exit_wakes_the_events_poll_at_once() {
    let Some(rootfs) = enabled() else { return };
    let mut fx = Fixture::new("evt", &rootfs);
    let spec = fx.spec(&["sleep", "107"]);
    let id = fx.id.clone();
    let sb = fx.boot(&spec);
    sb.create_container(&id, &spec, &[], ContainerStdio::Null)
        .unwrap();
    sb.start_container(&id).unwrap();
    let last = sb
        .events(0, Duration::from_millis(0))
        .unwrap()
        .last()
        .map_or(0, |e| e.seq);
    let process = ProcessBuilder::default()
        .args(vec!["true".into()])
        .cwd("/")
        .build()
        .unwrap();
    let mut slowest = Duration::ZERO;
    let mut after = last;
    for _ in 0..10 {
        let pid = sb.exec(&id, &process, None).unwrap().pid;
        let started = Instant::now();
        let events = sb.events(after, Duration::from_secs(5)).unwrap();
        let ev = events
            .iter()
            .find(|e| e.pid == pid)
            .unwrap_or_else(|| panic!("no exit event for exec {pid}: {events:?}"));
        assert_eq!(ev.exit_status, 0);
        after = events.last().unwrap().seq;
        slowest = slowest.max(started.elapsed());
    }
    assert!(
        slowest < Duration::from_secs(2),
        "an exec's exit reached the events poll after {slowest:?}"
    );
}
