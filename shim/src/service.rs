//! The shim's lifecycle actions, as containerd-shim's `Shim` trait names
//! them: `start` (find or spawn the pod's shim and answer with its
//! address), creating the Task service, `delete` (clean up after a dead
//! shim) and `-info`. Serving itself is in [`crate::serve`].

use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::sync::Arc;

use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::types::introspection::{RuntimeInfo, RuntimeVersion};
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::{Config, DeleteResponse, ExitSignal, Flags, StartOpts};
use oci_spec::runtime::Spec;

use crate::events::{timestamp_ns, ContainerdSink, EventQueue, QUEUE_CAPACITY};
use crate::options::{OptionsSource, RuntimeOptions};
use crate::pod::{self, BundleRecord};
use crate::task::TaskService;

/// containerd's name for this runtime.
pub const RUNTIME_ID: &str = "io.containerd.runsc.v2";

/// The shim, as containerd-shim's `run()` drives it.
pub struct Service {
    exit: Arc<ExitSignal>,
    id: String,
    namespace: String,
}

/// Strips `unix://` from a shim address.
pub(crate) fn socket_path(address: &str) -> &str {
    address.strip_prefix("unix://").unwrap_or(address)
}

/// Removes the socket file at `path` if there is one (a dead shim's);
/// anything else at that path is left alone.
pub(crate) fn remove_socket_file(path: &Path) -> std::io::Result<()> {
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
        std::fs::remove_file(path)?;
    }
    Ok(())
}

/// Whether a shim answers at `address` (its socket accepts connections).
pub fn shim_alive(address: &str) -> bool {
    std::os::unix::net::UnixStream::connect(socket_path(address)).is_ok()
}

fn other(msg: String) -> containerd_shim::Error {
    containerd_shim::Error::Other(msg)
}

impl containerd_shim::Shim for Service {
    type T = TaskService;

    fn new(_runtime_id: &str, args: &Flags, _config: &mut Config) -> Self {
        Service {
            exit: Arc::new(ExitSignal::default()),
            id: args.id.clone(),
            namespace: args.namespace.clone(),
        }
    }

    /// Runs in the bundle directory: the pod's shim socket is derived from
    /// the pod id, so the containers of one pod share one shim. A shim
    /// already serving that address is reused.
    fn start_shim(&mut self, opts: StartOpts) -> containerd_shim::Result<String> {
        let spec = Spec::load("config.json")
            .map_err(|e| other(format!("container {}: reading config.json: {e}", opts.id)))?;
        let pod_id = pod::pod_id_of(&spec, &opts.id);
        let address = opts.socket_address(&pod_id);
        if shim_alive(&address) {
            containerd_shim::util::write_address(&address)?;
            return Ok(address);
        }
        let (_pid, address) = containerd_shim::spawn(opts, &pod_id, Vec::new())?;
        containerd_shim::util::write_address(&address)?;
        Ok(address)
    }

    /// Runs in the bundle directory after the shim died: destroys the pod's
    /// sandbox unless a live shim still serves it, removes the dead shim's
    /// socket, unmounts the bundle's rootfs, and reports the container
    /// killed (137).
    fn delete_shim(&mut self) -> containerd_shim::Result<DeleteResponse> {
        let bundle = std::env::current_dir()
            .map_err(|e| other(format!("container {}: finding the bundle: {e}", self.id)))?;
        let record = BundleRecord::read(&bundle).ok().or_else(|| {
            // No record: the container's Create never finished. Derive the
            // same values from the spec and the default options.
            let spec = Spec::load(bundle.join("config.json")).ok()?;
            let opts = RuntimeOptions::load(&OptionsSource::Default).unwrap_or_default();
            let pod_id = pod::pod_id_of(&spec, &self.id);
            Some(BundleRecord {
                sandbox_id: pod::sandbox_id(&self.namespace, &pod_id),
                pod_id,
                state_dir: opts.state_dir,
                pid: 0,
            })
        });
        let address = std::fs::read_to_string(bundle.join("address")).ok();
        let alive = address.as_deref().is_some_and(shim_alive);
        if let Some(r) = &record {
            if alive {
                eprintln!(
                    "container {}: a shim still serves pod {}; leaving its sandbox alone",
                    self.id, r.pod_id
                );
            } else if let Err(e) = pod::destroy_sandbox(&r.state_dir, &r.sandbox_id) {
                eprintln!(
                    "container {}: destroying the sandbox of pod {}: {}",
                    self.id,
                    r.pod_id,
                    crate::errors::chain(&e)
                );
            }
        }
        if let (Some(addr), false) = (&address, alive) {
            let _ = remove_socket_file(Path::new(socket_path(addr.trim())));
        }
        let rootfs = bundle.join("rootfs");
        if sandbox::manager::stage::is_mount_point(&rootfs) {
            if let Err(e) = nix::mount::umount2(&rootfs, nix::mount::MntFlags::MNT_DETACH) {
                eprintln!(
                    "container {}: unmounting {}: {e}",
                    self.id,
                    rootfs.display()
                );
            }
        }
        Ok(DeleteResponse {
            pid: record.map(|r| r.pid).unwrap_or(0),
            exit_status: 137,
            exited_at: Some(timestamp_ns(0)).into(),
            ..Default::default()
        })
    }

    fn wait(&mut self) {
        self.exit.wait();
    }

    fn create_task_service(&self, publisher: RemotePublisher) -> TaskService {
        let ttrpc_address = std::env::var("TTRPC_ADDRESS").unwrap_or_default();
        let sink = ContainerdSink::new(publisher, &self.namespace, ttrpc_address);
        let events = EventQueue::start(sink, QUEUE_CAPACITY);
        log::info!(
            "shim {} serving namespace {}",
            std::process::id(),
            self.namespace
        );
        TaskService::new(&self.namespace, self.exit.clone(), events)
    }

    fn runtime_info(
        runtime_id: &str,
        options: Option<&Any>,
    ) -> containerd_shim::Result<RuntimeInfo> {
        Ok(runtime_info(runtime_id, options))
    }
}

/// What `-info` reports: the runtime's name and version, and the options
/// it was asked about.
pub fn runtime_info(runtime_id: &str, options: Option<&Any>) -> RuntimeInfo {
    RuntimeInfo {
        name: runtime_id.to_string(),
        version: Some(RuntimeVersion {
            version: env!("CARGO_PKG_VERSION").to_string(),
            revision: option_env!("RUNSC_RS_REVISION")
                .unwrap_or_default()
                .to_string(),
            ..Default::default()
        })
        .into(),
        options: options.cloned().into(),
        ..Default::default()
    }
}

/// The text `-v` prints.
pub fn version_text() -> String {
    format!(
        "containerd-shim-runsc-v2:\n  Runtime: {RUNTIME_ID}\n  Version: {}\n  Task API: v{}\n",
        env!("CARGO_PKG_VERSION"),
        containerd_shim::protos::TASK_API_VERSION
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_names_the_runtime() {
        let i = runtime_info(RUNTIME_ID, None);
        assert_eq!(i.name, "io.containerd.runsc.v2");
        assert_eq!(i.version.version, env!("CARGO_PKG_VERSION"));
        assert!(version_text().contains("Version:"));
    }

    #[test]
    fn dead_socket_is_not_alive() {
        let dir = std::env::temp_dir().join(format!("shim-alive-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("s");
        let l = std::os::unix::net::UnixListener::bind(&p).unwrap();
        let addr = format!("unix://{}", p.display());
        assert!(shim_alive(&addr));
        drop(l);
        assert!(!shim_alive(&addr));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
