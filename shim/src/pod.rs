//! Pods: which sandbox a container belongs to, what the spec asks of the
//! sandbox, the record the shim leaves in each bundle for `shim delete`,
//! and tearing a pod's sandbox down.
//!
//! A pod is the set of containers with the same
//! `io.kubernetes.cri.sandbox-id` annotation (a container without it, as
//! with `ctr run`, is a pod of its own); one shim and one sandbox serve it.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use oci_spec::runtime::{Capability, LinuxNamespaceType, Spec};
use sandbox::manager::{ManagerError, Sandbox};
use serde::{Deserialize, Serialize};

use crate::options::RuntimeOptions;

/// The CRI annotation naming a container's pod sandbox.
pub const SANDBOX_ID_ANNOTATION: &str = "io.kubernetes.cri.sandbox-id";

/// The file the shim writes into each bundle for `shim delete`.
pub const BUNDLE_RECORD: &str = "runsc-rs.json";

/// One pod served by this shim.
pub struct Pod {
    /// Pod id (its sandbox container's id).
    pub id: String,
    /// Its sandbox's id, unique across containerd namespaces.
    pub sandbox_id: String,
    /// Its sandbox.
    pub sandbox: Arc<Sandbox>,
    /// The runtime options it was created with.
    pub options: RuntimeOptions,
    /// Tells the exit watcher to stop (the pod is being destroyed).
    pub stop: Arc<AtomicBool>,
}

impl std::fmt::Debug for Pod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pod")
            .field("id", &self.id)
            .field("sandbox", &self.sandbox)
            .finish_non_exhaustive()
    }
}

/// The pod a container belongs to: its sandbox-id annotation, else itself.
pub fn pod_id_of(spec: &Spec, container_id: &str) -> String {
    spec.annotations()
        .as_ref()
        .and_then(|a| a.get(SANDBOX_ID_ANNOTATION))
        .filter(|v| !v.is_empty())
        .cloned()
        .unwrap_or_else(|| container_id.to_string())
}

/// The id of the sandbox of pod `pod_id` in containerd namespace
/// `namespace`.
///
/// Container ids are unique only within a namespace, while sandboxes share
/// one state root (and uid pool), so the namespace is part of the id:
/// `<namespace>--<pod>`. Namespaces never contain `--`, so the split is
/// unambiguous. Ids too long for the manager (128 bytes) become a 64-bit
/// hash of both.
pub fn sandbox_id(namespace: &str, pod_id: &str) -> String {
    let id = format!("{namespace}--{pod_id}");
    if id.len() <= 128 {
        return id;
    }
    // FNV-1a, 64-bit: stable across processes and builds.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in namespace.bytes().chain([0u8]).chain(pod_id.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("h{h:016x}")
}

/// Whether the spec keeps the host's network namespace (it lists no
/// network namespace to create or join).
pub fn wants_host_network(spec: &Spec) -> bool {
    match spec.linux().as_ref().and_then(|l| l.namespaces().as_ref()) {
        Some(nss) => !nss.iter().any(|n| n.typ() == LinuxNamespaceType::Network),
        None => true,
    }
}

/// Whether the spec is a privileged container's: CAP_SYS_ADMIN in its
/// bounding set and no masked paths (what `ctr run --privileged` and CRI's
/// privileged mode produce).
pub fn is_privileged(spec: &Spec) -> bool {
    let sys_admin = spec
        .process()
        .as_ref()
        .and_then(|p| p.capabilities().as_ref())
        .and_then(|c| c.bounding().as_ref())
        .is_some_and(|b| b.contains(&Capability::SysAdmin));
    let masked = spec
        .linux()
        .as_ref()
        .and_then(|l| l.masked_paths().as_ref())
        .is_some_and(|m| !m.is_empty());
    sys_admin && !masked
}

/// What `shim delete` needs to find a dead shim's sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleRecord {
    /// The container's pod.
    pub pod_id: String,
    /// The pod's sandbox.
    pub sandbox_id: String,
    /// The sandbox state root.
    pub state_dir: PathBuf,
    /// The pid shown to containerd for the container's init.
    pub pid: u32,
}

impl BundleRecord {
    /// Writes the record into `bundle`.
    pub fn write(&self, bundle: &Path) -> std::io::Result<()> {
        let body = serde_json::to_vec(self).map_err(std::io::Error::other)?;
        let tmp = bundle.join(format!(".{BUNDLE_RECORD}.tmp"));
        std::fs::write(&tmp, body)?;
        std::fs::rename(&tmp, bundle.join(BUNDLE_RECORD))
    }

    /// Reads the record from `bundle`.
    pub fn read(bundle: &Path) -> std::io::Result<BundleRecord> {
        let body = std::fs::read(bundle.join(BUNDLE_RECORD))?;
        serde_json::from_slice(&body).map_err(std::io::Error::other)
    }
}

/// Kills and removes sandbox `sandbox_id` under `state_root` (its
/// processes, mounts, cgroup, uid range and state). A sandbox that is
/// already gone is fine.
///
/// It works from the state file rather than a live [`Sandbox`] value, so
/// that an exit watcher blocked in a long poll on the live value never
/// delays it.
pub fn destroy_sandbox(state_root: &Path, sandbox_id: &str) -> Result<(), ManagerError> {
    match Sandbox::load(state_root, sandbox_id) {
        Ok(mut sb) => sb.destroy(),
        Err(ManagerError::NotFound(_)) => {
            // No state file: a sandbox whose creation failed part-way may
            // still have left its directory.
            let dir = state_root.join(sandbox_id);
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(source) => Err(ManagerError::Io {
                    what: format!("removing {}", dir.display()),
                    source,
                }),
            }
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: &str) -> Spec {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn pod_id_comes_from_the_cri_annotation() {
        let s = spec(
            r#"{"ociVersion":"1.0.2","annotations":{"io.kubernetes.cri.sandbox-id":"pod1","io.kubernetes.cri.container-type":"container"}}"#,
        );
        assert_eq!(pod_id_of(&s, "app"), "pod1");
        let s = spec(r#"{"ociVersion":"1.0.2","annotations":{"other":"x"}}"#);
        assert_eq!(pod_id_of(&s, "c1"), "c1");
        let s = spec(r#"{"ociVersion":"1.0.2"}"#);
        assert_eq!(pod_id_of(&s, "c1"), "c1");
        let s = spec(r#"{"ociVersion":"1.0.2","annotations":{"io.kubernetes.cri.sandbox-id":""}}"#);
        assert_eq!(pod_id_of(&s, "c1"), "c1");
    }

    #[test]
    fn shim_address_follows_the_pod() {
        // The address containerd dials is derived from the pod id, so every
        // container of a pod reaches the same shim.
        let opts = containerd_shim::StartOpts {
            address: "/run/containerd/containerd.sock".into(),
            namespace: "k8s.io".into(),
            ..Default::default()
        };
        let pause =
            spec(r#"{"ociVersion":"1.0.2","annotations":{"io.kubernetes.cri.sandbox-id":"p1"}}"#);
        let app =
            spec(r#"{"ociVersion":"1.0.2","annotations":{"io.kubernetes.cri.sandbox-id":"p1"}}"#);
        let a = opts.socket_address(&pod_id_of(&pause, "p1"));
        let b = opts.socket_address(&pod_id_of(&app, "app1"));
        assert_eq!(a, b);
        assert!(a.starts_with("unix:///run/containerd/s/"), "{a}");
        let lone = opts.socket_address(&pod_id_of(&spec(r#"{"ociVersion":"1.0.2"}"#), "solo"));
        assert_ne!(a, lone);
    }

    #[test]
    fn sandbox_ids_are_namespaced() {
        assert_eq!(sandbox_id("k8s.io", "abc"), "k8s.io--abc");
        assert_ne!(sandbox_id("a_b", "c"), sandbox_id("a", "b_c"));
        assert_ne!(sandbox_id("default", "x"), sandbox_id("other", "x"));
        let long = "f".repeat(121);
        let h = sandbox_id("k8s.io", &long);
        assert!(h.starts_with('h') && h.len() == 17, "{h}");
        assert_eq!(h, sandbox_id("k8s.io", &long));
        assert_ne!(h, sandbox_id("k8s.io2", &long));
    }

    #[test]
    fn host_network_and_privilege() {
        let s = spec(
            r#"{"ociVersion":"1.0.2","linux":{"namespaces":[{"type":"pid"},{"type":"network"}]}}"#,
        );
        assert!(!wants_host_network(&s));
        let s = spec(r#"{"ociVersion":"1.0.2","linux":{"namespaces":[{"type":"pid"}]}}"#);
        assert!(wants_host_network(&s));
        let s = spec(
            r#"{"ociVersion":"1.0.2","process":{"cwd":"/","user":{"uid":0,"gid":0},"args":["sh"],"capabilities":{"bounding":["CAP_SYS_ADMIN"]}},"linux":{}}"#,
        );
        assert!(is_privileged(&s));
        let s = spec(
            r#"{"ociVersion":"1.0.2","process":{"cwd":"/","user":{"uid":0,"gid":0},"args":["sh"],"capabilities":{"bounding":["CAP_SYS_ADMIN"]}},"linux":{"maskedPaths":["/proc/kcore"]}}"#,
        );
        assert!(!is_privileged(&s));
        let s = spec(
            r#"{"ociVersion":"1.0.2","process":{"cwd":"/","user":{"uid":0,"gid":0},"args":["sh"],"capabilities":{"bounding":["CAP_CHOWN"]}}}"#,
        );
        assert!(!is_privileged(&s));
    }

    #[test]
    fn bundle_record_round_trips() {
        let dir = std::env::temp_dir().join(format!("shim-record-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let r = BundleRecord {
            pod_id: "p".into(),
            sandbox_id: "ns--p".into(),
            state_dir: "/run/runsc-rs".into(),
            pid: 42,
        };
        r.write(&dir).unwrap();
        assert_eq!(BundleRecord::read(&dir).unwrap(), r);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn destroying_a_missing_sandbox_is_fine() {
        let root = std::env::temp_dir().join(format!("shim-destroy-{}", std::process::id()));
        assert!(destroy_sandbox(&root, "nope").is_ok());
    }
}
