//! Times Task.Stats straight on a shim's ttrpc socket, without ctr or
//! containerd in the way: one unmeasured call, then N measured ones (200 by
//! default) on one connection, as containerd keeps one to each shim.
//! Prints one latency in microseconds a line, for test/bench.sh.
//!
//! Usage: shim-stats-latency SOCKET NAMESPACE ID [N]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use runsc_tests::shim::{stats_request, stats_type_url, TtrpcClient, TASK_SERVICE};

const TIMEOUT: Duration = Duration::from_secs(10);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 {
        eprintln!("usage: shim-stats-latency SOCKET NAMESPACE ID [N]");
        return ExitCode::from(2);
    }
    let socket = PathBuf::from(&args[0]);
    let (namespace, id) = (args[1].as_str(), args[2].as_str());
    let runs: usize = args.get(3).and_then(|n| n.parse().ok()).unwrap_or(200);
    let req = stats_request(id);
    let mut client = match TtrpcClient::connect(&socket, namespace, TIMEOUT) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    match client.call(TASK_SERVICE, "Stats", &req) {
        Ok(resp) => eprintln!(
            "Stats of {id}: {}",
            stats_type_url(&resp).unwrap_or_else(|| "no metrics".into())
        ),
        Err(e) => {
            eprintln!("Stats of {id} at {}: {e}", socket.display());
            return ExitCode::FAILURE;
        }
    }
    for _ in 0..runs {
        let t0 = Instant::now();
        if let Err(e) = client.call(TASK_SERVICE, "Stats", &req) {
            eprintln!("Stats of {id}: {e}");
            return ExitCode::FAILURE;
        }
        println!("{:.1}", t0.elapsed().as_secs_f64() * 1e6);
    }
    ExitCode::SUCCESS
}
