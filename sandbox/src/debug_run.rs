//! `runsc-sandbox run BUNDLE`: runs one OCI bundle in a new sandbox with
//! this terminal's stdio, without containerd, and exits with the container's
//! status. For debugging and for tests.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use crate::manager::{Config, ContainerStdio, Sandbox, Stdio};

fn usage() -> i32 {
    eprintln!("usage: runsc-sandbox run [--id ID] [--state-root DIR] [--debug] BUNDLE");
    2
}

/// Entry point; returns the exit code.
pub fn main(args: &[String]) -> i32 {
    let mut id = format!("run-{}", std::process::id());
    let mut cfg = Config::default();
    let mut bundle: Option<PathBuf> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--id" => match it.next() {
                Some(v) => id = v.clone(),
                None => return usage(),
            },
            "--state-root" => match it.next() {
                Some(v) => cfg.state_root = PathBuf::from(v),
                None => return usage(),
            },
            "--debug" => cfg.debug = true,
            s if !s.starts_with('-') && bundle.is_none() => bundle = Some(PathBuf::from(s)),
            _ => return usage(),
        }
    }
    let Some(bundle) = bundle else {
        return usage();
    };
    match run(&cfg, &id, &bundle) {
        Ok(status) => status as i32,
        Err(e) => {
            let mut msg = e.to_string();
            let mut cur = std::error::Error::source(&*e);
            while let Some(c) = cur {
                msg.push_str(&format!(": {c}"));
                cur = c.source();
            }
            eprintln!("runsc-sandbox run: {msg}");
            125
        }
    }
}

/// Loads `bundle/config.json` with root.path made absolute.
pub fn load_bundle(bundle: &Path) -> Result<oci_spec::runtime::Spec, Box<dyn std::error::Error>> {
    let bundle = std::fs::canonicalize(bundle)?;
    let config = bundle.join("config.json");
    let mut spec = oci_spec::runtime::Spec::load(&config)
        .map_err(|e| format!("loading {}: {e}", config.display()))?;
    if let Some(mut root) = spec.root().clone() {
        if root.path().is_relative() {
            root.set_path(bundle.join(root.path()));
            spec.set_root(Some(root));
        }
    }
    Ok(spec)
}

fn run(cfg: &Config, id: &str, bundle: &Path) -> Result<u32, Box<dyn std::error::Error>> {
    let mut cfg = cfg.clone();
    cfg.sandbox_binary = std::env::current_exe()?;
    let spec = load_bundle(bundle)?;
    let terminal = spec
        .process()
        .as_ref()
        .and_then(|p| p.terminal())
        .unwrap_or(false);
    let stdio = Stdio {
        stdin: Some(std::io::stdin().as_fd().try_clone_to_owned()?),
        stdout: Some(std::io::stdout().as_fd().try_clone_to_owned()?),
        stderr: Some(std::io::stderr().as_fd().try_clone_to_owned()?),
        terminal,
    };
    let mut sb = Sandbox::create(&cfg, id, &spec, Some(stdio))?;
    let result = (|| -> Result<u32, Box<dyn std::error::Error>> {
        sb.create_container(id, &spec, &[], ContainerStdio::Donated)?;
        sb.start_container(id)?;
        Ok(sb.wait(id)?.status)
    })();
    sb.destroy()?;
    result
}
