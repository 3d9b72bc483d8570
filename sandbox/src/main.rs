//! `runsc-sandbox`: the sandbox process (`boot`), the container helpers
//! (`init`, `exec-init`), and a debug command (`run`) that runs one bundle
//! in a sandbox without containerd.

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(code) = sandbox::run_internal_command(&args) {
        std::process::exit(code);
    }
    match args.get(1).map(String::as_str) {
        Some("run") => std::process::exit(sandbox::debug_run::main(&args[2..])),
        Some("-v") | Some("--version") => {
            println!("runsc-sandbox {}", env!("CARGO_PKG_VERSION"));
        }
        _ => {
            eprintln!(
                "usage: runsc-sandbox run [--id ID] [--state-root DIR] BUNDLE\n\
                 \n\
                 Runs the container in BUNDLE (config.json + rootfs) in a new sandbox,\n\
                 with this terminal's stdio, and exits with its status.\n\
                 `boot`, `init` and `exec-init` are internal."
            );
            std::process::exit(2);
        }
    }
}
