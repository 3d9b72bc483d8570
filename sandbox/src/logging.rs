//! A small `log` backend writing one line per record to a file descriptor.
//!
//! The sandbox logs to the log FD the manager donated; the shim logs to its
//! own log. Each line: RFC 3339-ish UTC time, level, target, message.

use std::io::Write;
use std::sync::Mutex;

struct FdLogger {
    out: Mutex<std::fs::File>,
    prefix: String,
}

impl log::Log for FdLogger {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let line = format!(
            "{}.{:06} {:<5} {}[{}] {}\n",
            now.as_secs(),
            now.subsec_micros(),
            record.level(),
            self.prefix,
            std::process::id(),
            record.args()
        );
        if let Ok(mut out) = self.out.lock() {
            let _ = out.write_all(line.as_bytes());
        }
    }

    fn flush(&self) {}
}

/// Installs the logger writing to `out`, at `level`. A second call is ignored.
pub fn init(out: std::fs::File, prefix: &str, level: log::LevelFilter) {
    let logger = FdLogger {
        out: Mutex::new(out),
        prefix: prefix.to_string(),
    };
    if log::set_boxed_logger(Box::new(logger)).is_ok() {
        log::set_max_level(level);
    }
}
