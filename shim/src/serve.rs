//! Serving the Task API under both of its names, and the `start` reply
//! containerd 1.x understands.
//!
//! containerd 2.x speaks `containerd.task.v3.Task`; containerd 1.6 and 1.7
//! speak `containerd.task.v2.Task`, the same service under its older name
//! (v3 is a renamed copy). containerd-shim's `run()` registers only v3 and
//! answers `start` with version 3, which 1.x refuses. So this module serves
//! the shim itself, registering each method under both names, and answers a
//! 1.x `start` with the plain address. `delete`, `-info` and a 2.x `start`
//! still go through `run()`.
//!
//! Which containerd runs us is not in the `start` command line or its
//! environment (even 2.x sets `MAX_SHIM_VERSION=2`), so [`containerd_task_api`]
//! asks the `-publish-binary` (containerd itself) for its version, once per
//! binary: the answer is kept under /run/runsc-rs, keyed by the binary's
//! path, size and modification time.

use std::collections::HashMap;
use std::io::Write;
use std::os::fd::IntoRawFd;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::sync::Arc;

use containerd_shim::protos::shim_sync::create_task;
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::{Config, Flags, Shim, StartOpts};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};

use crate::service::{remove_socket_file, shim_alive, socket_path, Service, RUNTIME_ID};

/// Errors of serving.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The shim library failed (logger, publisher, start).
    #[error("{0}")]
    Shim(#[from] containerd_shim::Error),
    /// The socket could not be set up.
    #[error("listening on {path}")]
    Listen {
        /// The socket path.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The ttrpc server failed.
    #[error("serving ttrpc")]
    Ttrpc(#[source] ttrpc::Error),
    /// Signal setup or the start reply failed.
    #[error("{what}")]
    Os {
        /// What was being done.
        what: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// Prefix of the method paths containerd-shim-protos generates.
const V3_PREFIX: &str = "/containerd.task.v3.Task/";
/// The same methods as containerd 1.x calls them.
const V2_PREFIX: &str = "/containerd.task.v2.Task/";

/// Where the task API version of each containerd binary is kept.
const API_CACHE_DIR: &str = "/run/runsc-rs/containerd-api";

/// The task API version of the containerd at `containerd` (its
/// `-publish-binary`): 3 for 2.x, 2 for 1.x. 3 when it cannot be told.
pub fn containerd_task_api(containerd: &str) -> u32 {
    use std::hash::{Hash, Hasher};
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(containerd) else {
        return 3;
    };
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (containerd, meta.size(), meta.mtime(), meta.mtime_nsec()).hash(&mut h);
    let cache = Path::new(API_CACHE_DIR).join(format!("{:016x}", h.finish()));
    if let Some(v) = std::fs::read_to_string(&cache)
        .ok()
        .and_then(|v| v.trim().parse().ok())
    {
        return v;
    }
    let Ok(out) = std::process::Command::new(containerd)
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
    else {
        return 3;
    };
    let Some(api) = task_api_of_version(&String::from_utf8_lossy(&out.stdout)) else {
        return 3;
    };
    let _ = std::fs::create_dir_all(API_CACHE_DIR);
    let _ = std::fs::write(&cache, api.to_string());
    api
}

/// The task API of a `containerd --version` line ("containerd
/// github.com/containerd/containerd/v2 2.1.9 …" or "… v1.6.20 …").
fn task_api_of_version(text: &str) -> Option<u32> {
    let version = text.split_whitespace().nth(2)?;
    let major: u32 = version
        .trim_start_matches('v')
        .split('.')
        .next()?
        .parse()
        .ok()?;
    Some(if major >= 2 { 3 } else { 2 })
}

/// What `main` should do with the command line.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Serve the Task API (both names).
    Serve,
    /// Answer a containerd 1.x `start` with the plain address.
    LegacyStart,
    /// Leave it to containerd-shim's `run()`.
    Library,
}

/// Decides from `flags` and, for `start` only, the task API version
/// containerd speaks.
pub fn action(flags: &Flags, task_api: impl FnOnce() -> u32) -> Action {
    match flags.action.as_str() {
        "" if !flags.socket.is_empty() && !flags.info && !flags.version => Action::Serve,
        "start" if task_api() < 3 => Action::LegacyStart,
        _ => Action::Library,
    }
}

/// `start` for containerd 1.x: the same pod grouping as for 2.x, but the
/// reply is the bare address (what 1.6 reads; 1.7 takes it for a v2 shim).
pub fn legacy_start(flags: &Flags) -> Result<(), ServeError> {
    set_subreaper()?;
    let mut shim = Service::new(RUNTIME_ID, flags, &mut Config::default());
    let opts = StartOpts {
        id: flags.id.clone(),
        publish_binary: flags.publish_binary.clone(),
        address: flags.address.clone(),
        ttrpc_address: std::env::var("TTRPC_ADDRESS").unwrap_or_default(),
        namespace: flags.namespace.clone(),
        debug: flags.debug,
        ..Default::default()
    };
    let address = shim.start_shim(opts)?;
    let mut out = std::io::stdout().lock();
    out.write_all(address.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|source| ServeError::Os {
            what: "writing the start reply",
            source,
        })
}

/// The Task service's methods under the v3 and the v2 names.
fn task_methods(
    task: Arc<dyn containerd_shim::Task + Send + Sync>,
) -> HashMap<String, Box<dyn ttrpc::MethodHandler + Send + Sync>> {
    let mut methods = create_task(task.clone());
    for (name, handler) in create_task(task) {
        if let Some(method) = name.strip_prefix(V3_PREFIX) {
            methods.insert(format!("{V2_PREFIX}{method}"), handler);
        }
    }
    methods
}

fn set_subreaper() -> Result<(), ServeError> {
    nix::sys::prctl::set_child_subreaper(true).map_err(|e| ServeError::Os {
        what: "becoming a child subreaper",
        source: e.into(),
    })
}

/// Binds the shim socket; None when a live shim already serves it.
fn listen(socket: &str) -> Result<Option<UnixListener>, ServeError> {
    let path = socket_path(socket);
    let err = |source| ServeError::Listen {
        path: path.to_string(),
        source,
    };
    if let Some(parent) = Path::new(path).parent() {
        std::fs::create_dir_all(parent).map_err(err)?;
    }
    match UnixListener::bind(path) {
        Ok(l) => Ok(Some(l)),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            if shim_alive(socket) {
                return Ok(None);
            }
            remove_socket_file(Path::new(path)).map_err(err)?;
            UnixListener::bind(path).map(Some).map_err(err)
        }
        Err(e) => Err(err(e)),
    }
}

/// Serves the shim until its last container is gone: what `run()` does for
/// the serve action, with the Task API under both names.
pub fn serve(flags: &Flags) -> Result<(), ServeError> {
    // Before any thread exists, so that every thread inherits the mask and
    // the reaper below is the only one to see these signals.
    let mut signals = SigSet::empty();
    for s in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGPIPE,
    ] {
        signals.add(s);
    }
    signals.thread_block().map_err(|e| ServeError::Os {
        what: "blocking signals",
        source: e.into(),
    })?;
    set_subreaper()?;
    containerd_shim::logger::init(flags.debug, "info", &flags.namespace, &flags.id)?;
    let mut shim = Service::new(RUNTIME_ID, flags, &mut Config::default());
    let ttrpc_address = std::env::var("TTRPC_ADDRESS").unwrap_or_default();
    let publisher = RemotePublisher::new(&ttrpc_address)?;
    let task: Arc<dyn containerd_shim::Task + Send + Sync> =
        Arc::new(shim.create_task_service(publisher));
    let Some(listener) = listen(&flags.socket)? else {
        log::info!("a shim already serves {}", flags.socket);
        return Ok(());
    };
    let mut server = ttrpc::Server::new()
        .add_listener(listener.into_raw_fd())
        .map_err(ServeError::Ttrpc)?
        .register_service(task_methods(task));
    server.start().map_err(ServeError::Ttrpc)?;
    // The `start` action waits on our stdout: closing it says "serving".
    // SAFETY: dup2 onto stdout replaces this process's own descriptor 1,
    // which no Rust object owns.
    if unsafe { libc::dup2(libc::STDERR_FILENO, libc::STDOUT_FILENO) } < 0 {
        return Err(ServeError::Os {
            what: "releasing the start action",
            source: std::io::Error::last_os_error(),
        });
    }
    std::thread::Builder::new()
        .name("reaper".into())
        .spawn(move || reap(signals))
        .map_err(|source| ServeError::Os {
            what: "starting the reaper",
            source,
        })?;
    log::info!("shim serving {} (task API v2 and v3)", flags.socket);
    shim.wait();
    server.shutdown();
    let _ = std::fs::remove_file(socket_path(&flags.socket));
    Ok(())
}

/// Collects every child (the shim is a subreaper) and tells the library's
/// monitor; other signals are logged.
fn reap(signals: SigSet) {
    loop {
        match signals.wait() {
            Ok(Signal::SIGCHLD) => loop {
                match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::Exited(pid, code)) => {
                        let _ = containerd_shim::monitor::monitor_notify_by_pid(pid.as_raw(), code);
                    }
                    Ok(WaitStatus::Signaled(pid, sig, _)) => {
                        let _ = containerd_shim::monitor::monitor_notify_by_pid(
                            pid.as_raw(),
                            128 + sig as i32,
                        );
                    }
                    Ok(WaitStatus::StillAlive) | Err(nix::errno::Errno::ECHILD) => break,
                    Ok(_) => {}
                    Err(e) => log::warn!("reaping: {e}"),
                }
            },
            Ok(sig) => log::debug!("shim got {sig}"),
            Err(e) => log::warn!("waiting for signals: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(action: &str, socket: &str) -> Flags {
        Flags {
            action: action.into(),
            socket: socket.into(),
            ..Default::default()
        }
    }

    #[test]
    fn actions_follow_the_command_and_the_containerd_version() {
        let never = || -> u32 { panic!("the version is asked for start only") };
        assert_eq!(action(&flags("", "unix:///s"), never), Action::Serve);
        assert_eq!(action(&flags("start", ""), || 2), Action::LegacyStart);
        assert_eq!(action(&flags("start", ""), || 3), Action::Library);
        assert_eq!(action(&flags("delete", ""), never), Action::Library);
        assert_eq!(action(&flags("", ""), never), Action::Library);
    }

    #[test]
    fn containerd_versions_map_to_task_apis() {
        let v2 = "containerd github.com/containerd/containerd/v2 2.1.9+unknown \n";
        assert_eq!(task_api_of_version(v2), Some(3));
        let v16 = "containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+b1\n";
        assert_eq!(task_api_of_version(v16), Some(2));
        let v17 = "containerd github.com/containerd/containerd v1.7.24 61f9fd88\n";
        assert_eq!(task_api_of_version(v17), Some(2));
        assert_eq!(task_api_of_version("garbage"), None);
        assert_eq!(containerd_task_api("/nonexistent/containerd"), 3);
    }

    #[test]
    fn every_method_has_a_v2_twin() {
        struct Nothing;
        impl containerd_shim::Task for Nothing {}
        let methods = task_methods(Arc::new(Nothing));
        let v3: Vec<&String> = methods
            .keys()
            .filter(|k| k.starts_with(V3_PREFIX))
            .collect();
        assert!(v3.len() >= 17, "{v3:?}");
        for name in v3 {
            let twin = name.replace(V3_PREFIX, V2_PREFIX);
            assert!(methods.contains_key(&twin), "no {twin}");
        }
        assert_eq!(methods.len() % 2, 0);
    }
}
