//! containerd-shim-runsc-v2: the containerd shim of runsc-rs. The same
//! binary also serves as the sandbox process (`boot`) and its container
//! helpers (`init`, `exec-init`).

use shim::serve;
use shim::service::{version_text, Service, RUNTIME_ID};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // The sandbox and its helpers are this binary re-executed by the
    // sandbox manager.
    if let Some(code) = sandbox::run_internal_command(&args) {
        std::process::exit(code);
    }
    // containerd-shim parses -v but does not act on it.
    if args
        .iter()
        .skip(1)
        .any(|a| matches!(a.as_str(), "-v" | "--v" | "-version" | "--version"))
    {
        print!("{}", version_text());
        return;
    }
    // Serving, and a containerd 1.x `start`, are ours (see shim::serve);
    // the rest is containerd-shim's.
    if let Ok(flags) = containerd_shim::parse(&args[1..]) {
        let result =
            match serve::action(&flags, || serve::containerd_task_api(&flags.publish_binary)) {
                serve::Action::Serve => serve::serve(&flags),
                serve::Action::LegacyStart => serve::legacy_start(&flags),
                serve::Action::Library => {
                    containerd_shim::run::<Service>(RUNTIME_ID, None);
                    return;
                }
            };
        if let Err(e) = result {
            eprintln!("{RUNTIME_ID}: {}", shim::errors::chain(&e));
            std::process::exit(1);
        }
        return;
    }
    containerd_shim::run::<Service>(RUNTIME_ID, None);
}
