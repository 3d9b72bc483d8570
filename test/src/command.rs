//! Running a host command with captured output and a hard deadline, so that
//! no end-to-end test can hang CI: a command still running at its deadline is
//! killed (its whole process group, with SIGKILL) and reported with whatever
//! it printed until then.

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use nix::pty::{openpty, Winsize};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

/// Rows of the terminals given to commands run with a pty.
pub const PTY_ROWS: u16 = 33;
/// Columns of the terminals given to commands run with a pty.
pub const PTY_COLS: u16 = 101;

/// How long the output readers may lag behind the command's exit.
const READER_GRACE: Duration = Duration::from_secs(2);
/// How often a running command is polled.
const POLL: Duration = Duration::from_millis(10);

/// What a command reads on its standard input.
#[derive(Debug, Clone, Default)]
pub enum Input {
    /// /dev/null: end of file at once.
    #[default]
    Null,
    /// These bytes, then end of file (the pipe's writer closes).
    Bytes(Vec<u8>),
    /// These bytes written after a delay, then end of file.
    Delayed(Duration, Vec<u8>),
}

/// What a finished (or killed) command left behind.
#[derive(Debug, Clone)]
pub struct Output {
    /// The command line, for messages.
    pub command: String,
    /// Everything read from its standard output (or from the pty).
    pub stdout: Vec<u8>,
    /// Everything read from its standard error (empty with a pty).
    pub stderr: Vec<u8>,
    /// Exit code, when it exited.
    pub code: Option<i32>,
    /// Terminating signal, when a signal ended it.
    pub signal: Option<i32>,
    /// It was still running at its deadline and was killed.
    pub timed_out: bool,
    /// From spawn to exit (or to the kill).
    pub elapsed: Duration,
}

impl Output {
    /// Standard output as text (lossy).
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Standard error as text (lossy).
    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// Standard output and standard error together, as text.
    pub fn all_output(&self) -> String {
        format!("{}{}", self.stdout_str(), self.stderr_str())
    }

    /// Exited on its own with code 0.
    pub fn success(&self) -> bool {
        !self.timed_out && self.code == Some(0)
    }

    /// A multi-line account of the command and what it printed.
    pub fn describe(&self) -> String {
        let end = if self.timed_out {
            format!("killed after its deadline ({:.1?})", self.elapsed)
        } else if let Some(code) = self.code {
            format!("exit code {code} after {:.1?}", self.elapsed)
        } else {
            format!("signal {:?} after {:.1?}", self.signal, self.elapsed)
        };
        format!(
            "`{}`: {end}\n  stdout: {:?}\n  stderr: {:?}",
            self.command,
            self.stdout_str(),
            self.stderr_str()
        )
    }

    /// Panics (failing the test) unless the command exited with code 0.
    #[track_caller]
    pub fn expect_success(self) -> Self {
        assert!(self.success(), "command failed: {}", self.describe());
        self
    }

    /// Panics (failing the test) if the command had to be killed at its deadline.
    #[track_caller]
    pub fn expect_finished(self) -> Self {
        assert!(!self.timed_out, "command hung: {}", self.describe());
        self
    }
}

/// A command running in its own process group, its output being collected.
pub struct Running {
    command: String,
    child: Option<Child>,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    readers_done: Receiver<()>,
    readers: usize,
    started: Instant,
    deadline: Instant,
}

/// The printable command line of `cmd`.
pub fn command_line(cmd: &Command) -> String {
    let mut parts = vec![cmd.get_program().to_string_lossy().into_owned()];
    parts.extend(cmd.get_args().map(|a| {
        let a = a.to_string_lossy();
        if a.is_empty() || a.contains([' ', '\'', '"', '$', '&', ';', '|', '>', '<']) {
            format!("'{}'", a.replace('\'', "'\\''"))
        } else {
            a.into_owned()
        }
    }));
    parts.join(" ")
}

fn spawn_reader(
    mut source: impl Read + Send + 'static,
    sink: Arc<Mutex<Vec<u8>>>,
    done: Sender<()>,
) {
    thread::spawn(move || {
        let mut buf = [0u8; 8192];
        loop {
            match source.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => lock(&sink).extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                // EIO on a pty master once every slave is closed; anything else ends it too.
                Err(_) => break,
            }
        }
        let _ = done.send(());
    });
}

fn spawn_writer(mut sink: impl Write + Send + 'static, delay: Duration, data: Vec<u8>) {
    thread::spawn(move || {
        if !delay.is_zero() {
            thread::sleep(delay);
        }
        // The command may exit without reading: EPIPE is no failure here.
        let _ = sink.write_all(&data);
        let _ = sink.flush();
    });
}

fn lock(buf: &Mutex<Vec<u8>>) -> std::sync::MutexGuard<'_, Vec<u8>> {
    buf.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Running {
    /// Starts `cmd` with `input` on its standard input and pipes on its
    /// standard output and error; it is killed if still running after `timeout`.
    pub fn spawn(mut cmd: Command, input: Input, timeout: Duration) -> std::io::Result<Running> {
        let command = command_line(&cmd);
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(match input {
                Input::Null => Stdio::null(),
                _ => Stdio::piped(),
            })
            .process_group(0);
        let started = Instant::now();
        let mut child = cmd.spawn()?;
        let (tx, rx) = mpsc::channel();
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let mut readers = 0;
        if let Some(out) = child.stdout.take() {
            spawn_reader(out, stdout.clone(), tx.clone());
            readers += 1;
        }
        if let Some(err) = child.stderr.take() {
            spawn_reader(err, stderr.clone(), tx);
            readers += 1;
        }
        if let Some(stdin) = child.stdin.take() {
            match input {
                Input::Null => {}
                Input::Bytes(data) => spawn_writer(stdin, Duration::ZERO, data),
                Input::Delayed(delay, data) => spawn_writer(stdin, delay, data),
            }
        }
        Ok(Running {
            command,
            child: Some(child),
            stdout,
            stderr,
            readers_done: rx,
            readers,
            started,
            deadline: started + timeout,
        })
    }

    /// Starts `cmd` with a new pty (PTY_ROWS x PTY_COLS) as its standard
    /// input, output and error; `input` is typed into the terminal (its end
    /// closes nothing: a terminal has no end of file).
    /// Everything the command writes ends up in the output's `stdout`.
    pub fn spawn_with_pty(
        mut cmd: Command,
        input: Input,
        timeout: Duration,
    ) -> std::io::Result<Running> {
        let command = command_line(&cmd);
        let size = Winsize {
            ws_row: PTY_ROWS,
            ws_col: PTY_COLS,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = openpty(&size, None).map_err(std::io::Error::from)?;
        cmd.stdin(Stdio::from(pty.slave.try_clone()?))
            .stdout(Stdio::from(pty.slave.try_clone()?))
            .stderr(Stdio::from(pty.slave))
            .process_group(0);
        let started = Instant::now();
        let spawned = cmd.spawn();
        // The command keeps the only copies of the slave: once it (and its
        // children) close them, reading the master ends.
        drop(cmd);
        let child = spawned?;
        let master = File::from(pty.master);
        let (tx, rx) = mpsc::channel();
        let stdout = Arc::new(Mutex::new(Vec::new()));
        match input {
            Input::Null => {}
            Input::Bytes(data) => spawn_writer(master.try_clone()?, Duration::ZERO, data),
            Input::Delayed(delay, data) => spawn_writer(master.try_clone()?, delay, data),
        }
        spawn_reader(master, stdout.clone(), tx);
        Ok(Running {
            command,
            child: Some(child),
            stdout,
            stderr: Arc::new(Mutex::new(Vec::new())),
            readers_done: rx,
            readers: 1,
            started,
            deadline: started + timeout,
        })
    }

    /// The command line.
    pub fn command(&self) -> &str {
        &self.command
    }

    /// The host pid of the command.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// What it has written to its standard output so far.
    pub fn stdout_so_far(&self) -> Vec<u8> {
        lock(&self.stdout).clone()
    }

    /// Waits until its standard output contains `needle`; false after `timeout`.
    pub fn wait_for_stdout(&self, needle: &[u8], timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        loop {
            if lock(&self.stdout)
                .windows(needle.len())
                .any(|w| w == needle)
            {
                return true;
            }
            if Instant::now() >= end {
                return false;
            }
            thread::sleep(POLL);
        }
    }

    /// Has it exited?
    pub fn exited(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => !matches!(child.try_wait(), Ok(None)),
            None => true,
        }
    }

    fn kill_group(child: &Child) {
        if let Ok(pid) = i32::try_from(child.id()) {
            // The group may already be gone: nothing to report then.
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }

    fn collect(&mut self, status: Option<ExitStatus>, timed_out: bool) -> Output {
        let elapsed = self.started.elapsed();
        let grace_end = Instant::now() + READER_GRACE;
        for _ in 0..self.readers {
            let left = grace_end.saturating_duration_since(Instant::now());
            if self.readers_done.recv_timeout(left).is_err() {
                break;
            }
        }
        Output {
            command: self.command.clone(),
            stdout: lock(&self.stdout).clone(),
            stderr: lock(&self.stderr).clone(),
            code: status.and_then(|s| s.code()),
            signal: status.and_then(|s| s.signal()),
            timed_out,
            elapsed,
        }
    }

    /// Waits for it to exit, killing it at its deadline; never panics on a
    /// timeout (see `Output::timed_out`).
    pub fn try_finish(mut self) -> Output {
        let Some(mut child) = self.child.take() else {
            return self.collect(None, false);
        };
        let (status, timed_out) = loop {
            match child.try_wait() {
                Ok(Some(status)) => break (Some(status), false),
                Ok(None) if Instant::now() >= self.deadline => {
                    Self::kill_group(&child);
                    break (child.wait().ok(), true);
                }
                Ok(None) => thread::sleep(POLL),
                Err(_) => break (child.wait().ok(), false),
            }
        };
        self.collect(status, timed_out)
    }

    /// Waits for it to exit; a command still running at its deadline is
    /// killed and the test fails with what it printed.
    #[track_caller]
    pub fn finish(self) -> Output {
        self.try_finish().expect_finished()
    }

    /// Like [`Running::finish`], with the deadline brought forward to
    /// `timeout` from now (e.g. once the command has been told to end).
    #[track_caller]
    pub fn finish_within(mut self, timeout: Duration) -> Output {
        self.deadline = self.deadline.min(Instant::now() + timeout);
        self.finish()
    }

    /// Kills it now (the whole process group) and returns what it printed.
    pub fn stop(mut self) -> Output {
        let Some(mut child) = self.child.take() else {
            return self.collect(None, false);
        };
        Self::kill_group(&child);
        let status = child.wait().ok();
        self.collect(status, false)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            Self::kill_group(&child);
            let _ = child.wait();
        }
    }
}

/// Runs `cmd` to completion with `input`, killing it after `timeout`; never
/// panics on a timeout (see `Output::timed_out`).
#[track_caller]
pub fn run_command(cmd: Command, input: Input, timeout: Duration) -> Output {
    let line = command_line(&cmd);
    match Running::spawn(cmd, input, timeout) {
        Ok(running) => running.try_finish(),
        Err(e) => panic!("cannot start `{line}`: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Command {
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(script);
        cmd
    }

    #[test]
    fn captures_bytes_and_exit_code() {
        let out = run_command(
            sh("printf 'a\\001\\377'; echo err >&2; exit 3"),
            Input::Null,
            Duration::from_secs(10),
        );
        assert_eq!(out.stdout, b"a\x01\xff");
        assert_eq!(out.stderr, b"err\n");
        assert_eq!(out.code, Some(3));
        assert!(!out.timed_out);
    }

    #[test]
    fn feeds_stdin_then_eof() {
        let out = run_command(
            Command::new("cat"),
            Input::Delayed(Duration::from_millis(50), b"hi\n".to_vec()),
            Duration::from_secs(10),
        );
        assert!(out.success(), "{}", out.describe());
        assert_eq!(out.stdout, b"hi\n");
    }

    #[test]
    fn kills_at_deadline_and_keeps_output() {
        let out = run_command(
            sh("echo before; exec sleep 30"),
            Input::Null,
            Duration::from_millis(300),
        );
        assert!(out.timed_out);
        assert_eq!(out.stdout, b"before\n");
        assert!(out.elapsed < Duration::from_secs(5));
    }

    #[test]
    fn pty_is_a_terminal_of_the_chosen_size() {
        let running = Running::spawn_with_pty(
            sh("stty size; test -t 0 && echo TTY"),
            Input::Null,
            Duration::from_secs(10),
        )
        .expect("spawn with pty");
        let out = running.finish();
        let text = out.stdout_str();
        assert!(
            text.contains(&format!("{PTY_ROWS} {PTY_COLS}")),
            "{}",
            out.describe()
        );
        assert!(text.contains("TTY"), "{}", out.describe());
    }

    #[test]
    fn quotes_command_lines() {
        assert_eq!(command_line(&sh("echo a b")), "sh -c 'echo a b'");
    }
}
