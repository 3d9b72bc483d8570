//! Pods and containers through the CRI, for the tests: the context read
//! from the environment ([`CriTest`]), the configs a test starts from
//! ([`pod_config`], [`container_config`]), and a pod that stops and
//! removes itself when dropped ([`Pod`]).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::api::{
    ContainerConfig, ContainerMetadata, ContainerState, ContainerStatus, ContainerStatusRequest,
    CreateContainerRequest, ExecSyncRequest, ExecSyncResponse, ImageSpec, LinuxContainerConfig,
    LinuxContainerSecurityContext, LinuxPodSandboxConfig, LinuxSandboxSecurityContext,
    NamespaceMode, NamespaceOption, PodSandboxConfig, PodSandboxMetadata, PodSandboxStatusRequest,
    PodSandboxStatusResponse, RemoveContainerRequest, RemovePodSandboxRequest,
    ReopenContainerLogRequest, RunPodSandboxRequest, StartContainerRequest, StopContainerRequest,
    StopPodSandboxRequest, VersionRequest,
};
use crate::client::{CriClient, CriError, CALL_TIMEOUT};

/// Deadline of RunPodSandbox, CreateContainer and StartContainer (cold start included).
pub const START_TIMEOUT: Duration = Duration::from_secs(90);
/// The CRI handler of our runtime.
pub const RUNSC_HANDLER: &str = "runsc";
/// The containerd namespace of the CRI.
pub const CRI_NAMESPACE: &str = "k8s.io";

// The run-wide helpers are the ctr suite's: one definition of "asked for",
// of a unique name and of polling.
pub use runsc_tests::{e2e_enabled, unique_id as unique_name, wait_until};

/// The namespaces kubelet asks for by default: the pod's network and IPC,
/// a PID namespace per container.
pub fn kubelet_namespaces() -> NamespaceOption {
    NamespaceOption {
        network: NamespaceMode::Pod as i32,
        pid: NamespaceMode::Container as i32,
        ipc: NamespaceMode::Pod as i32,
        ..Default::default()
    }
}

/// What a CRI test works with: the client, the handler and the image.
pub struct CriTest {
    /// The client of containerd's CRI socket.
    pub cri: CriClient,
    /// The runtime handler pods ask for (RUNSC_CRI_HANDLER, default `runsc`).
    pub handler: String,
    /// The image containers run (RUNSC_TEST_IMAGE, default localhost/busybox:latest).
    pub image: String,
    /// Where pods' log directories and host paths are made.
    pub scratch: PathBuf,
}

impl CriTest {
    /// The context from the environment, or None (after printing a skip
    /// line) when the end-to-end tests are not asked for. Panics when the
    /// CRI socket does not answer.
    #[track_caller]
    pub fn setup(test: &str) -> Option<CriTest> {
        if !e2e_enabled() {
            println!("SKIP {test}: RUNSC_E2E is not set to 1");
            return None;
        }
        let socket = std::env::var("RUNSC_CONTAINERD_ADDRESS")
            .unwrap_or_else(|_| "/run/runsc-rs-test/containerd.sock".to_string());
        let cri = CriClient::connect(Path::new(&socket))
            .unwrap_or_else(|e| panic!("{test}: {}", error_chain(&e)));
        let t = CriTest {
            cri,
            handler: std::env::var("RUNSC_CRI_HANDLER")
                .unwrap_or_else(|_| RUNSC_HANDLER.to_string()),
            image: std::env::var("RUNSC_TEST_IMAGE")
                .unwrap_or_else(|_| "localhost/busybox:latest".to_string()),
            scratch: PathBuf::from(
                std::env::var("RUNSC_CRI_SCRATCH")
                    .unwrap_or_else(|_| "/var/lib/runsc-rs-test/cri".to_string()),
            ),
        };
        if let Err(e) = t
            .cri
            .runtime_call("Version", CALL_TIMEOUT, |mut c| async move {
                c.version(VersionRequest {
                    version: "v1".into(),
                })
                .await
            })
        {
            panic!("{test}: the CRI does not answer: {}", error_chain(&e));
        }
        Some(t)
    }

    /// Is the handler under test ours (sandbox process, state directory)?
    pub fn is_runsc(&self) -> bool {
        self.handler == RUNSC_HANDLER
    }

    /// A pod config named `name` (unique uid, namespace `runsc-cri-test`),
    /// its log directory under the scratch directory, its cgroup parent
    /// `/runsc-cri-test/<uid>`.
    pub fn pod_config(&self, name: &str) -> PodSandboxConfig {
        let uid = unique_name(name);
        PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.to_string(),
                uid: uid.clone(),
                namespace: "runsc-cri-test".to_string(),
                attempt: 0,
            }),
            hostname: name.to_string(),
            log_directory: self.scratch.join(&uid).join("logs").display().to_string(),
            linux: Some(LinuxPodSandboxConfig {
                cgroup_parent: format!("/runsc-cri-test/{uid}"),
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(kubelet_namespaces()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// A container config `name` running `command` in the test image, its
    /// log at `<name>.log` in the pod's log directory.
    pub fn container_config(&self, name: &str, command: &[&str]) -> ContainerConfig {
        ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: name.to_string(),
                attempt: 0,
            }),
            image: Some(ImageSpec {
                image: self.image.clone(),
                ..Default::default()
            }),
            command: command.iter().map(|s| s.to_string()).collect(),
            log_path: format!("{name}.log"),
            linux: Some(LinuxContainerConfig {
                security_context: Some(LinuxContainerSecurityContext {
                    namespace_options: Some(kubelet_namespaces()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// RunPodSandbox with `config` and the handler under test; the pod is
    /// stopped and removed when the returned guard is dropped.
    pub fn run_pod(&self, config: PodSandboxConfig) -> Result<Pod<'_>, CriError> {
        self.run_pod_with(config, &self.handler.clone())
    }

    /// RunPodSandbox with `config` and runtime handler `handler`.
    pub fn run_pod_with(
        &self,
        config: PodSandboxConfig,
        handler: &str,
    ) -> Result<Pod<'_>, CriError> {
        if !config.log_directory.is_empty() {
            // kubelet makes the log directory before the pod.
            let _ = fs::create_dir_all(&config.log_directory);
        }
        let request = RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: handler.to_string(),
        };
        let cgroup_parent = config
            .linux
            .as_ref()
            .map(|l| l.cgroup_parent.clone())
            .unwrap_or_default();
        let id = match self
            .cri
            .runtime_call("RunPodSandbox", START_TIMEOUT, |mut c| async move {
                c.run_pod_sandbox(request).await
            }) {
            Ok(response) => response.pod_sandbox_id,
            Err(e) => {
                // What kubelet would remove of a pod that never ran.
                remove_cgroup_parent(&cgroup_parent);
                remove_pod_scratch(&config);
                return Err(e);
            }
        };
        Ok(Pod {
            t: self,
            id,
            config,
            containers: Vec::new(),
            removed: false,
        })
    }
}

/// A running pod; stopped and removed (with its containers) when dropped.
pub struct Pod<'a> {
    t: &'a CriTest,
    /// The pod sandbox id containerd gave it.
    pub id: String,
    /// The config it was started with.
    pub config: PodSandboxConfig,
    /// The containers created in it: (name, id).
    pub containers: Vec<(String, String)>,
    removed: bool,
}

impl Pod<'_> {
    /// The client.
    pub fn cri(&self) -> &CriClient {
        &self.t.cri
    }

    /// The pod's log directory.
    pub fn log_directory(&self) -> PathBuf {
        PathBuf::from(&self.config.log_directory)
    }

    /// The pod's cgroup parent (as given in its config).
    pub fn cgroup_parent(&self) -> String {
        self.config
            .linux
            .as_ref()
            .map(|l| l.cgroup_parent.clone())
            .unwrap_or_default()
    }

    /// The pod's uid (its metadata).
    pub fn uid(&self) -> String {
        self.config
            .metadata
            .as_ref()
            .map(|m| m.uid.clone())
            .unwrap_or_default()
    }

    /// The runsc-rs sandbox id of this pod (`k8s.io--<pod id>`).
    pub fn sandbox_id(&self) -> String {
        format!("{CRI_NAMESPACE}--{}", self.id)
    }

    /// CreateContainer with `config` in this pod.
    pub fn create(&mut self, config: ContainerConfig) -> Result<String, CriError> {
        let name = config
            .metadata
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or_default();
        let request = CreateContainerRequest {
            pod_sandbox_id: self.id.clone(),
            config: Some(config),
            sandbox_config: Some(self.config.clone()),
        };
        let id = self
            .t
            .cri
            .runtime_call("CreateContainer", START_TIMEOUT, |mut c| async move {
                c.create_container(request).await
            })?
            .container_id;
        self.containers.push((name, id.clone()));
        Ok(id)
    }

    /// StartContainer `id`.
    pub fn start(&self, id: &str) -> Result<(), CriError> {
        let request = StartContainerRequest {
            container_id: id.to_string(),
        };
        self.t
            .cri
            .runtime_call("StartContainer", START_TIMEOUT, |mut c| async move {
                c.start_container(request).await
            })?;
        Ok(())
    }

    /// Creates and starts a container; panics with the CRI's error (and the
    /// container's status and log, when it got that far) on failure.
    #[track_caller]
    pub fn run_container(&mut self, config: ContainerConfig) -> String {
        let name = config
            .metadata
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or_default();
        let id = self.create(config).unwrap_or_else(|e| {
            panic!(
                "CreateContainer {name} in pod {}: {}",
                self.id,
                error_chain(&e)
            )
        });
        if let Err(e) = self.start(&id) {
            panic!(
                "StartContainer {name} ({id}) in pod {}: {}\n{}",
                self.id,
                error_chain(&e),
                self.describe_container(&id)
            );
        }
        id
    }

    /// ContainerStatus of `id` (verbose: with containerd's `info` JSON).
    pub fn container_status(
        &self,
        id: &str,
        verbose: bool,
    ) -> Result<(ContainerStatus, HashMap<String, String>), CriError> {
        let request = ContainerStatusRequest {
            container_id: id.to_string(),
            verbose,
        };
        let response =
            self.t
                .cri
                .runtime_call("ContainerStatus", CALL_TIMEOUT, |mut c| async move {
                    c.container_status(request).await
                })?;
        Ok((response.status.unwrap_or_default(), response.info))
    }

    /// The state of container `id`, or the error that kept it from being read.
    pub fn container_state(&self, id: &str) -> Result<ContainerState, CriError> {
        let (status, _) = self.container_status(id, false)?;
        Ok(ContainerState::try_from(status.state).unwrap_or(ContainerState::ContainerUnknown))
    }

    /// Waits until container `id` has exited; its status then.
    #[track_caller]
    pub fn wait_exited(&self, id: &str, timeout: Duration) -> ContainerStatus {
        let mut last = None;
        let exited = wait_until(timeout, || {
            last = self.container_status(id, false).ok().map(|(s, _)| s);
            last.as_ref()
                .is_some_and(|s| s.state == ContainerState::ContainerExited as i32)
        });
        assert!(
            exited,
            "container {id} has not exited after {timeout:?}\n{}",
            self.describe_container(id)
        );
        last.unwrap_or_default()
    }

    /// ExecSync of `cmd` in container `id` (containerd's own timeout 30 s).
    pub fn exec(&self, id: &str, cmd: &[&str]) -> Result<ExecSyncResponse, CriError> {
        self.exec_with_timeout(id, cmd, 30)
    }

    /// ExecSync with containerd's timeout `timeout_secs` (0: none).
    pub fn exec_with_timeout(
        &self,
        id: &str,
        cmd: &[&str],
        timeout_secs: i64,
    ) -> Result<ExecSyncResponse, CriError> {
        let request = ExecSyncRequest {
            container_id: id.to_string(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout: timeout_secs,
        };
        let deadline = CALL_TIMEOUT + Duration::from_secs(timeout_secs.max(0).unsigned_abs());
        self.t
            .cri
            .runtime_call("ExecSync", deadline, |mut c| async move {
                c.exec_sync(request).await
            })
    }

    /// ExecSync of `cmd` that must succeed with exit code 0; its stdout.
    #[track_caller]
    pub fn exec_ok(&self, id: &str, cmd: &[&str]) -> String {
        match self.exec(id, cmd) {
            Ok(r) if r.exit_code == 0 => String::from_utf8_lossy(&r.stdout).into_owned(),
            Ok(r) => panic!(
                "ExecSync {cmd:?} in {id}: exit code {}, stdout {:?}, stderr {:?}\n{}",
                r.exit_code,
                String::from_utf8_lossy(&r.stdout),
                String::from_utf8_lossy(&r.stderr),
                self.describe_container(id)
            ),
            Err(e) => panic!(
                "ExecSync {cmd:?} in {id}: {}\n{}",
                error_chain(&e),
                self.describe_container(id)
            ),
        }
    }

    /// StopContainer `id` with `timeout_secs` of grace.
    pub fn stop_container(&self, id: &str, timeout_secs: i64) -> Result<(), CriError> {
        let request = StopContainerRequest {
            container_id: id.to_string(),
            timeout: timeout_secs,
        };
        let deadline = CALL_TIMEOUT + Duration::from_secs(timeout_secs.max(0).unsigned_abs());
        self.t
            .cri
            .runtime_call("StopContainer", deadline, |mut c| async move {
                c.stop_container(request).await
            })?;
        Ok(())
    }

    /// RemoveContainer `id`.
    pub fn remove_container(&self, id: &str) -> Result<(), CriError> {
        let request = RemoveContainerRequest {
            container_id: id.to_string(),
        };
        self.t
            .cri
            .runtime_call("RemoveContainer", CALL_TIMEOUT, |mut c| async move {
                c.remove_container(request).await
            })?;
        Ok(())
    }

    /// ReopenContainerLog `id`.
    pub fn reopen_log(&self, id: &str) -> Result<(), CriError> {
        let request = ReopenContainerLogRequest {
            container_id: id.to_string(),
        };
        self.t
            .cri
            .runtime_call("ReopenContainerLog", CALL_TIMEOUT, |mut c| async move {
                c.reopen_container_log(request).await
            })?;
        Ok(())
    }

    /// PodSandboxStatus (verbose: with containerd's `info` JSON).
    pub fn status(&self, verbose: bool) -> Result<PodSandboxStatusResponse, CriError> {
        let request = PodSandboxStatusRequest {
            pod_sandbox_id: self.id.clone(),
            verbose,
        };
        self.t
            .cri
            .runtime_call("PodSandboxStatus", CALL_TIMEOUT, |mut c| async move {
                c.pod_sandbox_status(request).await
            })
    }

    /// The pod's IP (PodSandboxStatus network ip).
    #[track_caller]
    pub fn ip(&self) -> String {
        let status = self
            .status(false)
            .unwrap_or_else(|e| panic!("PodSandboxStatus {}: {}", self.id, error_chain(&e)));
        status
            .status
            .and_then(|s| s.network)
            .map(|n| n.ip)
            .unwrap_or_default()
    }

    /// StopPodSandbox.
    pub fn stop(&self) -> Result<(), CriError> {
        let request = StopPodSandboxRequest {
            pod_sandbox_id: self.id.clone(),
        };
        self.t
            .cri
            .runtime_call("StopPodSandbox", START_TIMEOUT, |mut c| async move {
                c.stop_pod_sandbox(request).await
            })?;
        Ok(())
    }

    /// RemovePodSandbox.
    pub fn remove(&mut self) -> Result<(), CriError> {
        let request = RemovePodSandboxRequest {
            pod_sandbox_id: self.id.clone(),
        };
        self.t
            .cri
            .runtime_call("RemovePodSandbox", START_TIMEOUT, |mut c| async move {
                c.remove_pod_sandbox(request).await
            })?;
        self.removed = true;
        Ok(())
    }

    /// The log file of container `id` (its config's log_path in the pod's
    /// log directory), when it was created by this guard.
    pub fn log_path(&self, id: &str) -> Option<PathBuf> {
        let name = &self.containers.iter().find(|(_, c)| c == id)?.0;
        Some(self.log_directory().join(format!("{name}.log")))
    }

    /// Container `id`'s status and the end of its log, for failure messages.
    pub fn describe_container(&self, id: &str) -> String {
        let mut out = String::new();
        match self.container_status(id, false) {
            Ok((s, _)) => {
                let state = ContainerState::try_from(s.state)
                    .map(|s| s.as_str_name())
                    .unwrap_or("?");
                let _ = writeln!(
                    out,
                    "  container {id}: state {state}, exit code {}, reason {:?}, message {:?}",
                    s.exit_code, s.reason, s.message
                );
            }
            Err(e) => {
                let _ = writeln!(out, "  container {id}: {}", error_chain(&e));
            }
        }
        if let Some(path) = self.log_path(id) {
            match fs::read_to_string(&path) {
                Ok(log) => {
                    let lines: Vec<&str> = log.lines().collect();
                    let tail = &lines[lines.len().saturating_sub(20)..];
                    let _ = writeln!(out, "  its log {} (last lines):", path.display());
                    for line in tail {
                        let _ = writeln!(out, "    {line}");
                    }
                }
                Err(e) => {
                    let _ = writeln!(out, "  its log {}: {e}", path.display());
                }
            }
        }
        let sandbox_log = Path::new("/run/runsc-rs")
            .join(self.sandbox_id())
            .join("sandbox.log");
        if let Ok(log) = fs::read_to_string(&sandbox_log) {
            let lines: Vec<&str> = log.lines().collect();
            let _ = writeln!(out, "  {} (last lines):", sandbox_log.display());
            for line in &lines[lines.len().saturating_sub(15)..] {
                let _ = writeln!(out, "    {line}");
            }
        }
        let _ = write!(
            out,
            "  the shim logs into containerd's log (/var/log/runsc-rs-test/containerd.log)"
        );
        out
    }

    /// Stops and removes the pod (and its containers); the first error.
    pub fn stop_and_remove(&mut self) -> Result<(), CriError> {
        self.stop()?;
        self.remove()
    }
}

impl Drop for Pod<'_> {
    fn drop(&mut self) {
        if !self.removed {
            if let Err(e) = self.stop_and_remove() {
                eprintln!("cleaning up pod {}: {}", self.id, error_chain(&e));
                return;
            }
            remove_cgroup_parent(&self.cgroup_parent());
        }
        // A failed test keeps the logs for a look after the run.
        if !std::thread::panicking() {
            remove_pod_scratch(&self.config);
        }
    }
}

/// Removes the pod's scratch directory (the parent of its log directory,
/// named by its uid) made by [`CriTest::pod_config`].
fn remove_pod_scratch(config: &PodSandboxConfig) {
    let logs = Path::new(&config.log_directory);
    let uid = config.metadata.as_ref().map(|m| m.uid.as_str());
    if let Some(dir) = logs.parent() {
        if uid.is_some_and(|u| dir.file_name().is_some_and(|n| n == u)) {
            let _ = fs::remove_dir_all(dir);
        }
    }
}

/// Removes the pod cgroup `path` (e.g. `/runsc-cri-test/<uid>`) from every
/// hierarchy where it is left empty, then its parent where empty: what
/// kubelet does with a pod's cgroup once the pod is gone.
pub fn remove_cgroup_parent(path: &str) {
    let relative = path.trim_start_matches('/');
    if relative.is_empty() {
        return;
    }
    let Ok(hierarchies) = fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    let mut roots: Vec<PathBuf> = hierarchies
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    roots.push(PathBuf::from("/sys/fs/cgroup"));
    for root in roots {
        let dir = root.join(relative);
        if !dir.is_dir() {
            continue;
        }
        if let Err(e) = fs::remove_dir(&dir) {
            eprintln!("cannot remove the pod cgroup {}: {e}", dir.display());
        }
        // The shared parent goes too once no pod is left in it.
        if let Some(up) = dir.parent().filter(|up| *up != root) {
            let _ = fs::remove_dir(up);
        }
    }
}

/// `error: cause: cause…`, the chain of `e`'s sources on one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let _ = write!(text, ": {s}");
        source = s.source();
    }
    text
}
