//! Process stdio: containerd's FIFOs (or log URIs) on one side, pipes or a
//! pty slave handed to the sandbox on the other, and the copy threads
//! between them.
//!
//! - stdin: a thread copies the FIFO into a pipe (or the pty master); EOF on
//!   the FIFO (its writer closed) or Task.CloseIO closes the pipe, so the
//!   process sees EOF.
//! - stdout/stderr: threads copy pipes (or the pty master) into the FIFOs,
//!   a `file://` log, or nowhere; `binary://` loggers read the pipes
//!   themselves (fd 3 and 4, readiness on fd 5, as containerd's shims do).
//! - [`ProcessIo::wait_output`] lets the caller drain output before
//!   reporting an exit; [`ProcessIo::shutdown`] stops every thread.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use sandbox::manager::Stdio;

/// How long a `binary://` logger may take to say it is ready.
const LOGGER_READY_TIMEOUT: Duration = Duration::from_secs(10);
const BUF_SIZE: usize = 32 * 1024;

/// Errors setting up stdio.
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    /// A stdio URI we cannot serve.
    #[error("unsupported stdio URI `{0}` (use a FIFO path, fifo://, file:// or binary://)")]
    UnsupportedUri(String),
    /// A malformed URI.
    #[error("invalid stdio URI `{uri}`: {reason}")]
    InvalidUri {
        /// The URI.
        uri: String,
        /// What is wrong.
        reason: String,
    },
    /// A host call failed.
    #[error("{what}")]
    Os {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The logging binary did not start.
    #[error("logging binary {path}: {reason}")]
    Logger {
        /// The binary.
        path: PathBuf,
        /// What happened.
        reason: String,
    },
}

fn os(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> IoError {
    let what = what.into();
    move |source| IoError::Os { what, source }
}

fn nix_os(what: impl Into<String>) -> impl FnOnce(Errno) -> IoError {
    let what = what.into();
    move |e| IoError::Os {
        what,
        source: e.into(),
    }
}

/// The stdio containerd asks for (Create or Exec request fields).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StdioConfig {
    /// stdin FIFO path, or empty.
    pub stdin: String,
    /// stdout FIFO path or log URI, or empty.
    pub stdout: String,
    /// stderr FIFO path or log URI, or empty.
    pub stderr: String,
    /// One terminal for all three.
    pub terminal: bool,
}

/// Where an output stream goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Nowhere.
    Null,
    /// A FIFO that containerd (or its client) reads.
    Fifo(PathBuf),
    /// A file, appended to.
    File(PathBuf),
    /// A logging binary fed stdout and stderr on fd 3 and 4.
    Binary {
        /// The binary.
        path: PathBuf,
        /// Its arguments, from the URI's query.
        args: Vec<String>,
    },
}

fn percent_decode(s: &str, plus_is_space: bool) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = b
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("bad escape at byte {i}"))?;
                out.push(hex);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| "not UTF-8 once decoded".to_string())
}

/// Parses a stdout/stderr value of a Create or Exec request.
pub fn parse_output(uri: &str) -> Result<Output, IoError> {
    if uri.is_empty() {
        return Ok(Output::Null);
    }
    let Some((scheme, rest)) = uri.split_once("://") else {
        return Ok(Output::Fifo(PathBuf::from(uri)));
    };
    let invalid = |reason: String| IoError::InvalidUri {
        uri: uri.to_string(),
        reason,
    };
    if !matches!(scheme, "fifo" | "file" | "binary") {
        return Err(IoError::UnsupportedUri(uri.to_string()));
    }
    let (path, query) = match rest.split_once('?') {
        Some((p, q)) => (p, q),
        None => (rest, ""),
    };
    let path = percent_decode(path, false).map_err(invalid)?;
    if !path.starts_with('/') {
        return Err(invalid("the path must be absolute (scheme:///path)".into()));
    }
    match scheme {
        "fifo" => Ok(Output::Fifo(PathBuf::from(path))),
        "file" => Ok(Output::File(PathBuf::from(path))),
        "binary" => {
            let mut args = Vec::new();
            for pair in query.split('&').filter(|p| !p.is_empty()) {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                args.push(percent_decode(k, true).map_err(invalid)?);
                let v = percent_decode(v, true).map_err(invalid)?;
                if !v.is_empty() {
                    args.push(v);
                }
            }
            Ok(Output::Binary {
                path: PathBuf::from(path),
                args,
            })
        }
        _ => Err(IoError::UnsupportedUri(uri.to_string())),
    }
}

/// A count of running output copiers, waited on to drain.
#[derive(Default)]
struct Running {
    n: Mutex<usize>,
    cond: Condvar,
}

impl Running {
    fn add(&self) {
        *self.n.lock().unwrap_or_else(|e| e.into_inner()) += 1;
    }

    fn done(&self) {
        let mut n = self.n.lock().unwrap_or_else(|e| e.into_inner());
        *n = n.saturating_sub(1);
        if *n == 0 {
            self.cond.notify_all();
        }
    }

    fn wait(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut n = self.n.lock().unwrap_or_else(|e| e.into_inner());
        while *n > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            n = self
                .cond
                .wait_timeout(n, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }
}

/// The write side towards the process's stdin, closable from any thread.
type StdinSlot = Arc<Mutex<Option<Arc<OwnedFd>>>>;

/// The shim's side of one process's stdio.
pub struct ProcessIo {
    /// "container X" or "container X exec Y", for logs.
    label: String,
    stdin: StdinSlot,
    /// The pty master, once the sandbox has handed it over.
    pty_master: std::sync::OnceLock<OwnedFd>,
    /// A terminal's copiers, waiting for the master (the sandbox makes the
    /// pty in the container's devpts, so `tty` names it there).
    pending_console: Mutex<Option<PendingConsole>>,
    terminal: bool,
    outputs: Arc<Running>,
    stop_w: Mutex<Option<OwnedFd>>,
    exited_w: Mutex<Option<OwnedFd>>,
    /// Dropped by CloseIO to tell the stdin copier to drain and close.
    close_w: Mutex<Option<OwnedFd>>,
    input_copier: Arc<std::sync::atomic::AtomicBool>,
    /// Output FIFOs, to release a copier blocked opening one.
    fifos: Vec<PathBuf>,
}

impl std::fmt::Debug for ProcessIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessIo")
            .field("label", &self.label)
            .field("terminal", &self.terminal)
            .finish_non_exhaustive()
    }
}

fn set_cloexec(fd: BorrowedFd<'_>) -> Result<(), IoError> {
    fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))
        .map(|_| ())
        .map_err(nix_os("setting FD_CLOEXEC"))
}

fn set_nonblocking(fd: BorrowedFd<'_>, on: bool) -> Result<(), IoError> {
    let flags = fcntl(fd, FcntlArg::F_GETFL).map_err(nix_os("reading file status flags"))?;
    let mut flags = OFlag::from_bits_retain(flags);
    flags.set(OFlag::O_NONBLOCK, on);
    fcntl(fd, FcntlArg::F_SETFL(flags))
        .map(|_| ())
        .map_err(nix_os("setting O_NONBLOCK"))
}

fn pipe() -> Result<(OwnedFd, OwnedFd), IoError> {
    nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(nix_os("creating a pipe"))
}

fn dev_null() -> Result<OwnedFd, IoError> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open("/dev/null")
        .map(OwnedFd::from)
        .map_err(os("opening /dev/null"))
}

fn dup(fd: BorrowedFd<'_>) -> Result<OwnedFd, IoError> {
    fd.try_clone_to_owned()
        .map_err(os("duplicating a descriptor"))
}

/// Writes all of `buf`, waiting for room when `fd` is non-blocking; gives
/// up with `Interrupted` once `stop` is readable.
fn write_all(fd: BorrowedFd<'_>, mut buf: &[u8], stop: BorrowedFd<'_>) -> std::io::Result<()> {
    while !buf.is_empty() {
        match nix::unistd::write(fd, buf) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) => {
                let mut fds = [
                    PollFd::new(fd, PollFlags::POLLOUT),
                    PollFd::new(stop, PollFlags::POLLIN),
                ];
                match poll(&mut fds, PollTimeout::NONE) {
                    Ok(_) | Err(Errno::EINTR) => {}
                    Err(e) => return Err(e.into()),
                }
                if fds[1].any().unwrap_or(false) {
                    return Err(std::io::ErrorKind::Interrupted.into());
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// The destination of an output copier, opened lazily (a FIFO open waits
/// for its reader).
enum Sink {
    Null,
    Fifo { path: PathBuf, file: Option<File> },
    File(Arc<File>),
}

impl Sink {
    fn open_fifo(path: &Path) -> std::io::Result<File> {
        // Non-blocking first: the reader (containerd's client) is usually
        // there already. ENXIO means not yet: wait for it in a blocking open.
        match std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(path)
        {
            Ok(f) => {
                set_nonblocking(f.as_fd(), false).map_err(std::io::Error::other)?;
                Ok(f)
            }
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_CLOEXEC)
                .open(path),
            Err(e) => Err(e),
        }
    }

    /// Ends the output. A FIFO opened lazily was never opened if the
    /// process wrote nothing; its reader (containerd's, already waiting in
    /// its open) would then never see EOF, and a CRI ExecSync never end.
    /// Open and close it now, without blocking: with no reader there is
    /// nobody to tell.
    fn finish(self, label: &str) {
        if let Sink::Fifo { path, file: None } = &self {
            match std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
                .open(path)
            {
                Ok(f) => drop(f),
                Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {}
                Err(e) => log::debug!("{label}: closing {}: {e}", path.display()),
            }
        }
    }

    /// Writes `buf`; on failure the sink becomes Null (output is then
    /// drained and dropped, so the process never blocks on it).
    fn write(&mut self, buf: &[u8], stop: BorrowedFd<'_>, label: &str) {
        let result = match self {
            Sink::Null => return,
            Sink::Fifo { path, file } => {
                if file.is_none() {
                    match Self::open_fifo(path) {
                        Ok(f) => *file = Some(f),
                        Err(e) => {
                            log::warn!("{label}: opening {}: {e}; output dropped", path.display());
                            *self = Sink::Null;
                            return;
                        }
                    }
                }
                match file {
                    Some(f) => write_all(f.as_fd(), buf, stop),
                    None => Ok(()),
                }
            }
            Sink::File(f) => write_all(f.as_fd(), buf, stop),
        };
        if let Err(e) = result {
            log::debug!("{label}: output write failed ({e}); dropping further output");
            *self = Sink::Null;
        }
    }
}

/// How long a terminal's output must stay quiet, once its process exited,
/// before the copier stops. A pty only reads EIO once every slave copy is
/// closed, and the sandbox may keep one; its data also reaches the master
/// asynchronously, so "nothing readable right now" is not the end.
const PTY_QUIET: Duration = Duration::from_millis(100);

/// What an output copier waits on besides its source.
struct CopyCtl {
    /// Readable once the copier must finish what is readable and stop.
    stop: Arc<OwnedFd>,
    /// For a terminal: readable once the process exited.
    exited: Option<Arc<OwnedFd>>,
}

/// Copies `src` into `sink` until EOF (EIO for a pty master), `stop`, or,
/// for a terminal, a quiet spell after the process exited.
fn copy_out(src: OwnedFd, mut sink: Sink, ctl: CopyCtl, running: Arc<Running>, label: String) {
    let mut buf = vec![0u8; BUF_SIZE];
    let mut stopping = false;
    let mut quiet = false;
    loop {
        if !stopping {
            let mut fds = vec![
                PollFd::new(src.as_fd(), PollFlags::POLLIN),
                PollFd::new(ctl.stop.as_fd(), PollFlags::POLLIN),
            ];
            if let (Some(e), false) = (&ctl.exited, quiet) {
                fds.push(PollFd::new(e.as_fd(), PollFlags::POLLIN));
            }
            let timeout = if quiet {
                PollTimeout::from(u16::try_from(PTY_QUIET.as_millis()).unwrap_or(u16::MAX))
            } else {
                PollTimeout::NONE
            };
            match poll(&mut fds, timeout) {
                // Quiet since the exit: done.
                Ok(0) => break,
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => {
                    log::warn!("{label}: waiting for output: {e}");
                    break;
                }
            }
            let ready = |i: usize| fds.get(i).is_some_and(|f| f.any().unwrap_or(false));
            let src_ready = ready(0);
            if ready(1) && !src_ready {
                stopping = true;
            }
            if ready(2) {
                quiet = true;
            }
            if !src_ready && !stopping {
                continue;
            }
        }
        match nix::unistd::read(&src, &mut buf) {
            Ok(0) => break,
            Ok(n) => sink.write(&buf[..n], ctl.stop.as_fd(), &label),
            Err(Errno::EINTR) => {}
            // Nothing more right now: done if stopping, else wait again.
            Err(Errno::EAGAIN) if stopping => break,
            Err(Errno::EAGAIN) => {}
            // A pty master reads EIO once every slave is closed.
            Err(Errno::EIO) => break,
            Err(e) => {
                log::warn!("{label}: reading output: {e}");
                break;
            }
        }
    }
    // Closing the sink (the FIFO) tells the reader EOF.
    sink.finish(&label);
    running.done();
}

/// Copies the stdin FIFO into the process until the FIFO's writer closes
/// it (then closes the process's stdin, unless it is a terminal) or `stop`.
/// What ends a stdin copier's wait.
enum InputWake {
    /// The FIFO has data, or its last writer closed it.
    Readable,
    /// CloseIO: copy what the FIFO holds, then close.
    CloseRequested,
    /// The shim stops the process's IO.
    Stopped,
}

fn wait_input(
    src: BorrowedFd<'_>,
    close: BorrowedFd<'_>,
    stop: BorrowedFd<'_>,
) -> std::io::Result<InputWake> {
    loop {
        let mut fds = [
            PollFd::new(src, PollFlags::POLLIN),
            PollFd::new(close, PollFlags::POLLIN),
            PollFd::new(stop, PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {
                let ready = |i: usize| fds[i].any().unwrap_or(false);
                if ready(0) {
                    return Ok(InputWake::Readable);
                }
                if ready(1) {
                    return Ok(InputWake::CloseRequested);
                }
                if ready(2) {
                    return Ok(InputWake::Stopped);
                }
            }
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

fn copy_in(fifo: File, target: StdinSlot, input: InputCtl, label: String) {
    let mut buf = vec![0u8; BUF_SIZE];
    // Once CloseIO came, copy what the FIFO holds now, then close: the
    // client wrote everything before it asked, and the FIFO may still hold
    // the last of it.
    let mut draining = false;
    let eof = loop {
        if !draining {
            match wait_input(fifo.as_fd(), input.close.as_fd(), input.stop.as_fd()) {
                Ok(InputWake::Readable) => {}
                Ok(InputWake::CloseRequested) => draining = true,
                Ok(InputWake::Stopped) => break false,
                Err(e) => {
                    log::warn!("{label}: waiting for stdin: {e}");
                    break false;
                }
            }
        }
        match nix::unistd::read(&fifo, &mut buf) {
            // The FIFO's last writer closed it.
            Ok(0) => break true,
            Ok(n) => {
                let fd = target.lock().unwrap_or_else(|e| e.into_inner()).clone();
                let Some(fd) = fd else {
                    break false;
                };
                if let Err(e) = write_all(fd.as_fd(), &buf[..n], input.stop.as_fd()) {
                    log::debug!("{label}: writing stdin: {e}");
                    break false;
                }
            }
            Err(Errno::EAGAIN) if draining => break true,
            Err(Errno::EINTR) | Err(Errno::EAGAIN) => {}
            Err(e) => {
                log::warn!("{label}: reading stdin: {e}");
                break false;
            }
        }
    };
    if (eof && input.close_on_eof) || draining {
        log::debug!("{label}: stdin EOF, closing the process's stdin");
        target.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}

/// How a stdin copier is told to finish.
struct InputCtl {
    close_on_eof: bool,
    /// Readable (closed) once CloseIO asked to close stdin.
    close: Arc<OwnedFd>,
    stop: Arc<OwnedFd>,
}

fn spawn_thread(name: &str, f: impl FnOnce() + Send + 'static) -> Result<(), IoError> {
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(f)
        .map(|_| ())
        .map_err(os("starting a stdio thread"))
}

/// Identity of the process whose stdio this is (for logs and loggers).
#[derive(Debug, Clone)]
pub struct IoOwner {
    /// Container id.
    pub container_id: String,
    /// Exec id, empty for the init.
    pub exec_id: String,
    /// containerd namespace.
    pub namespace: String,
}

impl IoOwner {
    fn label(&self) -> String {
        if self.exec_id.is_empty() {
            format!("container {}", self.container_id)
        } else {
            format!("container {} exec {}", self.container_id, self.exec_id)
        }
    }
}

/// What a terminal's copiers need once the master arrives.
struct PendingConsole {
    builder: Builder,
    sink: Sink,
    stdin: String,
}

struct Builder {
    owner: IoOwner,
    label: String,
    /// Closed by CloseIO: the stdin copier drains, then closes stdin.
    close_r: Arc<OwnedFd>,
    /// Whether a stdin copier runs (else CloseIO closes stdin itself).
    input_copier: Arc<std::sync::atomic::AtomicBool>,
    stop_r: Arc<OwnedFd>,
    exited_r: Arc<OwnedFd>,
    outputs: Arc<Running>,
    fifos: Vec<PathBuf>,
}

impl Builder {
    fn sink(&mut self, out: &Output, shared_file: &mut Option<Arc<File>>) -> Result<Sink, IoError> {
        Ok(match out {
            Output::Null => Sink::Null,
            Output::Fifo(p) => {
                self.fifos.push(p.clone());
                Sink::Fifo {
                    path: p.clone(),
                    file: None,
                }
            }
            Output::File(p) => {
                if shared_file.is_none() {
                    if let Some(dir) = p.parent() {
                        std::fs::create_dir_all(dir)
                            .map_err(os(format!("creating {}", dir.display())))?;
                    }
                    let f = std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .custom_flags(libc::O_CLOEXEC)
                        .open(p)
                        .map_err(os(format!("opening the log file {}", p.display())))?;
                    *shared_file = Some(Arc::new(f));
                }
                match shared_file {
                    Some(f) => Sink::File(f.clone()),
                    None => Sink::Null,
                }
            }
            Output::Binary { .. } => Sink::Null,
        })
    }

    fn start_output(
        &mut self,
        src: OwnedFd,
        sink: Sink,
        stream: &str,
        terminal: bool,
    ) -> Result<(), IoError> {
        set_nonblocking(src.as_fd(), true)?;
        self.outputs.add();
        let ctl = CopyCtl {
            stop: self.stop_r.clone(),
            exited: terminal.then(|| self.exited_r.clone()),
        };
        let (running, label) = (self.outputs.clone(), format!("{} {stream}", self.label));
        let running2 = self.outputs.clone();
        spawn_thread(&format!("io-{stream}"), move || {
            copy_out(src, sink, ctl, running, label)
        })
        .inspect_err(|_| running2.done())
    }

    fn start_input(
        &self,
        path: &str,
        target: StdinSlot,
        close_on_eof: bool,
    ) -> Result<(), IoError> {
        // Non-blocking open: it succeeds before containerd's client opens
        // the write side, and poll then reports data or the writer's close.
        let fifo = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(path)
            .map_err(os(format!("opening the stdin FIFO {path}")))?;
        let input = InputCtl {
            close_on_eof,
            close: self.close_r.clone(),
            stop: self.stop_r.clone(),
        };
        let label = format!("{} stdin", self.label);
        self.input_copier
            .store(true, std::sync::atomic::Ordering::SeqCst);
        spawn_thread("io-stdin", move || copy_in(fifo, target, input, label))
    }
}

/// Sets up the stdio of one process: returns what to hand to the sandbox
/// and the shim's side, whose threads are already copying.
pub fn setup(owner: &IoOwner, cfg: &StdioConfig) -> Result<(Stdio, ProcessIo), IoError> {
    let (stop_r, stop_w) = pipe()?;
    let (exited_r, exited_w) = pipe()?;
    let (close_r, close_w) = pipe()?;
    let input_copier = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut b = Builder {
        owner: owner.clone(),
        label: owner.label(),
        close_r: Arc::new(close_r),
        input_copier: input_copier.clone(),
        stop_r: Arc::new(stop_r),
        exited_r: Arc::new(exited_r),
        outputs: Arc::new(Running::default()),
        fifos: Vec::new(),
    };
    let stdin_slot: StdinSlot = Arc::new(Mutex::new(None));
    let mut io = ProcessIo {
        label: b.label.clone(),
        stdin: stdin_slot.clone(),
        pty_master: std::sync::OnceLock::new(),
        pending_console: Mutex::new(None),
        terminal: cfg.terminal,
        outputs: b.outputs.clone(),
        stop_w: Mutex::new(Some(stop_w)),
        exited_w: Mutex::new(Some(exited_w)),
        close_w: Mutex::new(Some(close_w)),
        input_copier,
        fifos: Vec::new(),
    };
    // From here on, dropping `io` on an error stops whatever was started.
    let stdio = if cfg.terminal {
        setup_terminal(&mut b, &mut io, cfg, &stdin_slot)?
    } else {
        setup_pipes(&mut b, cfg, &stdin_slot)?
    };
    io.fifos = std::mem::take(&mut b.fifos);
    Ok((stdio, io))
}

fn setup_terminal(
    b: &mut Builder,
    io: &mut ProcessIo,
    cfg: &StdioConfig,
    _stdin_slot: &StdinSlot,
) -> Result<Stdio, IoError> {
    let out = parse_output(&cfg.stdout)?;
    if matches!(out, Output::Binary { .. }) {
        return Err(IoError::InvalidUri {
            uri: cfg.stdout.clone(),
            reason: "a binary:// logger cannot serve a terminal".into(),
        });
    }
    let mut shared = None;
    let sink = b.sink(&out, &mut shared)?;
    let builder = Builder {
        owner: b.owner.clone(),
        label: b.label.clone(),
        close_r: b.close_r.clone(),
        input_copier: b.input_copier.clone(),
        stop_r: b.stop_r.clone(),
        exited_r: b.exited_r.clone(),
        outputs: b.outputs.clone(),
        fifos: Vec::new(),
    };
    *io.pending_console.lock().unwrap_or_else(|e| e.into_inner()) = Some(PendingConsole {
        builder,
        sink,
        stdin: cfg.stdin.clone(),
    });
    // The sandbox makes the pty; its master comes back from create/exec.
    Ok(Stdio::console())
}

fn setup_pipes(
    b: &mut Builder,
    cfg: &StdioConfig,
    stdin_slot: &StdinSlot,
) -> Result<Stdio, IoError> {
    let stdin = if cfg.stdin.is_empty() {
        dev_null()?
    } else {
        let (r, w) = pipe()?;
        set_nonblocking(w.as_fd(), true)?;
        *stdin_slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(w));
        b.start_input(&cfg.stdin, stdin_slot.clone(), true)?;
        r
    };
    let out = parse_output(&cfg.stdout)?;
    let err = match &out {
        // Log URIs take both streams (containerd sets both to the URI).
        Output::Binary { .. } | Output::File(_) => out.clone(),
        _ => parse_output(&cfg.stderr)?,
    };
    if let Output::Binary { path, args } = &out {
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        start_logger(&b.owner, path, args, out_r, err_r)?;
        return Ok(Stdio {
            stdin: Some(stdin),
            stdout: Some(out_w),
            stderr: Some(err_w),
            terminal: false,
        });
    }
    let mut shared = None;
    let mut stream = |b: &mut Builder, o: &Output, name: &str| -> Result<OwnedFd, IoError> {
        if *o == Output::Null {
            return dev_null();
        }
        let sink = b.sink(o, &mut shared)?;
        let (r, w) = pipe()?;
        b.start_output(r, sink, name, false)?;
        Ok(w)
    };
    let stdout = stream(b, &out, "stdout")?;
    let stderr = stream(b, &err, "stderr")?;
    Ok(Stdio {
        stdin: Some(stdin),
        stdout: Some(stdout),
        stderr: Some(stderr),
        terminal: false,
    })
}

/// Starts a `binary://` logger reading `stdout` on fd 3 and `stderr` on fd
/// 4, and waits until it closes (or writes to) fd 5.
fn start_logger(
    owner: &IoOwner,
    path: &Path,
    args: &[String],
    stdout: OwnedFd,
    stderr: OwnedFd,
) -> Result<(), IoError> {
    let (ready_r, ready_w) = pipe()?;
    let srcs = [stdout.as_raw_fd(), stderr.as_raw_fd(), ready_w.as_raw_fd()];
    let mut cmd = std::process::Command::new(path);
    cmd.args(args)
        .env("CONTAINER_ID", &owner.container_id)
        .env("CONTAINER_NAMESPACE", &owner.namespace)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    // SAFETY: the closure runs in the forked child before exec and only calls
    // fcntl and dup2 (async-signal-safe) on descriptors that `stdout`,
    // `stderr` and `ready_w` keep open in the parent until spawn returns.
    unsafe {
        cmd.pre_exec(move || {
            // Move the sources out of the way first: one of them may be 3-5.
            let mut tmp = [0; 3];
            for (t, src) in tmp.iter_mut().zip(srcs) {
                *t = libc::fcntl(src, libc::F_DUPFD_CLOEXEC, 10);
                if *t < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            for (target, t) in (3..).zip(tmp) {
                // dup2 leaves the target without FD_CLOEXEC: it survives exec.
                if libc::dup2(t, target) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let logger_err = |reason: String| IoError::Logger {
        path: path.to_path_buf(),
        reason,
    };
    // The child is reaped by containerd-shim's reaper; never wait for it here.
    let child = cmd
        .spawn()
        .map_err(|e| logger_err(format!("starting: {e}")))?;
    drop((stdout, stderr, ready_w));
    let mut fds = [PollFd::new(ready_r.as_fd(), PollFlags::POLLIN)];
    let ms = u16::try_from(LOGGER_READY_TIMEOUT.as_millis()).unwrap_or(u16::MAX);
    match poll(&mut fds, PollTimeout::from(ms)) {
        Ok(0) => {
            return Err(logger_err(format!(
                "pid {} not ready within {LOGGER_READY_TIMEOUT:?}",
                child.id()
            )))
        }
        Ok(_) => {}
        Err(e) => return Err(logger_err(format!("waiting for readiness: {e}"))),
    }
    log::debug!(
        "container {}: logging binary {} started (pid {})",
        owner.container_id,
        path.display(),
        child.id()
    );
    Ok(())
}

impl ProcessIo {
    /// Closes the process's stdin (Task.CloseIO), after the stdin copier
    /// has passed on what the FIFO still holds.
    pub fn close_stdin(&self) {
        if self.input_copier.load(std::sync::atomic::Ordering::SeqCst) {
            if self
                .close_w
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take()
                .is_some()
            {
                log::debug!("{}: stdin closing once drained", self.label);
            }
            return;
        }
        if self
            .stdin
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .is_some()
        {
            log::debug!("{}: stdin closed", self.label);
        }
    }

    /// Whether the process has a terminal.
    pub fn is_terminal(&self) -> bool {
        self.terminal
    }

    /// Starts copying between the pty `master` the sandbox made and the
    /// FIFOs. Called once, after create or exec returned the master.
    pub fn attach_console(&self, master: OwnedFd) -> Result<(), IoError> {
        let Some(pending) = self
            .pending_console
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        else {
            return Ok(());
        };
        let PendingConsole {
            mut builder,
            sink,
            stdin,
        } = pending;
        set_cloexec(master.as_fd())?;
        builder.start_output(dup(master.as_fd())?, sink, "stdout", true)?;
        if !stdin.is_empty() {
            *self.stdin.lock().unwrap_or_else(|e| e.into_inner()) =
                Some(Arc::new(dup(master.as_fd())?));
            // A terminal has no EOF of its own: the shell keeps it.
            builder.start_input(&stdin, self.stdin.clone(), false)?;
        }
        let _ = self.pty_master.set(master);
        Ok(())
    }

    /// Sets the terminal's window size.
    pub fn resize(&self, width: u32, height: u32) -> Result<(), IoError> {
        let Some(master) = self.pty_master.get() else {
            return Err(IoError::Os {
                what: format!("{}: resizing", self.label),
                source: std::io::Error::other("the process has no terminal"),
            });
        };
        let ws = libc::winsize {
            ws_row: u16::try_from(height).unwrap_or(u16::MAX),
            ws_col: u16::try_from(width).unwrap_or(u16::MAX),
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads one `winsize` from the pointer, which is a
        // live local; the descriptor is our open pty master.
        let rc = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
        if rc < 0 {
            return Err(IoError::Os {
                what: format!("{}: setting the window size", self.label),
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(())
    }

    /// Tells the copiers the process exited: a terminal's copier then stops
    /// once its output has been quiet for a moment.
    pub fn process_exited(&self) {
        self.exited_w
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
    }

    /// Waits up to `timeout` for the output copiers to reach EOF; returns
    /// whether they all did.
    pub fn wait_output(&self, timeout: Duration) -> bool {
        self.outputs.wait(timeout)
    }

    /// Stops every copier (after copying what is readable now) and closes
    /// the process's stdin. Idempotent.
    pub fn shutdown(&self) {
        let w = self.stop_w.lock().unwrap_or_else(|e| e.into_inner()).take();
        if w.is_none() {
            return;
        }
        drop(w);
        self.close_stdin();
        // A copier may be blocked opening an output FIFO whose reader never
        // came: opening it for reading ourselves releases that open.
        for p in &self.fifos {
            let _ = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
                .open(p);
        }
    }
}

impl Drop for ProcessIo {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn output_uris() {
        assert_eq!(parse_output("").unwrap(), Output::Null);
        assert_eq!(
            parse_output("/run/x/stdout").unwrap(),
            Output::Fifo("/run/x/stdout".into())
        );
        assert_eq!(
            parse_output("fifo:///run/a%20b").unwrap(),
            Output::Fifo("/run/a b".into())
        );
        assert_eq!(
            parse_output("file:///var/log/c.log").unwrap(),
            Output::File("/var/log/c.log".into())
        );
        assert_eq!(
            parse_output("binary:///usr/bin/logger?id=abc&flag&x=a+b%2Fc").unwrap(),
            Output::Binary {
                path: "/usr/bin/logger".into(),
                args: vec![
                    "id".into(),
                    "abc".into(),
                    "flag".into(),
                    "x".into(),
                    "a b/c".into()
                ]
            }
        );
        assert!(matches!(
            parse_output("http://x/y"),
            Err(IoError::UnsupportedUri(_))
        ));
        assert!(matches!(
            parse_output("file://relative/x"),
            Err(IoError::InvalidUri { .. })
        ));
        assert!(matches!(
            parse_output("file:///bad%zz"),
            Err(IoError::InvalidUri { .. })
        ));
    }

    fn owner() -> IoOwner {
        IoOwner {
            container_id: "c1".into(),
            exec_id: String::new(),
            namespace: "ns".into(),
        }
    }

    fn mkfifo(dir: &Path, name: &str) -> PathBuf {
        let p = dir.join(name);
        nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        p
    }

    fn tempdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("shim-io-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// stdin data and the writer's close reach the process as data + EOF;
    /// stdout reaches its FIFO, then EOF once the process side closes.
    #[test]
    fn fifo_round_trip_with_stdin_eof() {
        let dir = tempdir("fifo");
        let (si, so) = (mkfifo(&dir, "in"), mkfifo(&dir, "out"));
        let cfg = StdioConfig {
            stdin: si.display().to_string(),
            stdout: so.display().to_string(),
            stderr: String::new(),
            terminal: false,
        };
        // The client opens its ends (as ctr does) around the Create call.
        let so2 = so.clone();
        let reader = std::thread::spawn(move || {
            let mut s = String::new();
            File::open(so2).unwrap().read_to_string(&mut s).unwrap();
            s
        });
        let (stdio, io) = setup(&owner(), &cfg).unwrap();
        let mut w = std::fs::OpenOptions::new().write(true).open(&si).unwrap();
        w.write_all(b"hello\n").unwrap();
        drop(w); // EOF, possibly before the "process" ever reads.

        // The "process": read stdin to EOF, echo it to stdout.
        let mut input = String::new();
        File::from(stdio.stdin.unwrap())
            .read_to_string(&mut input)
            .unwrap();
        assert_eq!(input, "hello\n");
        let mut out = File::from(stdio.stdout.unwrap());
        out.write_all(b"out:").unwrap();
        out.write_all(input.as_bytes()).unwrap();
        drop(out);
        drop(stdio.stderr);
        assert!(io.wait_output(Duration::from_secs(5)));
        assert_eq!(reader.join().unwrap(), "out:hello\n");
        drop(io);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A process that writes nothing still ends its FIFOs: a reader that
    /// waits in its open sees EOF (CRI's ExecSync waits for that).
    #[test]
    fn silent_output_still_ends_the_fifos() {
        let dir = tempdir("silent");
        let (so, se) = (mkfifo(&dir, "out"), mkfifo(&dir, "err"));
        let cfg = StdioConfig {
            stdout: so.display().to_string(),
            stderr: se.display().to_string(),
            ..Default::default()
        };
        let readers: Vec<_> = [so.clone(), se.clone()]
            .into_iter()
            .map(|p| {
                std::thread::spawn(move || {
                    let mut s = Vec::new();
                    File::open(p).unwrap().read_to_end(&mut s).unwrap();
                    s
                })
            })
            .collect();
        // Let the readers block in their open.
        std::thread::sleep(Duration::from_millis(100));
        let (stdio, io) = setup(&owner(), &cfg).unwrap();
        // The "process" exits without a byte of output.
        drop(stdio);
        assert!(io.wait_output(Duration::from_secs(5)));
        for r in readers {
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let _ = tx.send(r.join().unwrap());
            });
            let got = rx
                .recv_timeout(Duration::from_secs(5))
                .expect("the FIFO reader never saw EOF");
            assert!(got.is_empty());
        }
        drop(io);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn close_io_gives_eof_while_writer_stays() {
        let dir = tempdir("closeio");
        let si = mkfifo(&dir, "in");
        let cfg = StdioConfig {
            stdin: si.display().to_string(),
            ..Default::default()
        };
        let (stdio, io) = setup(&owner(), &cfg).unwrap();
        let _w = std::fs::OpenOptions::new().write(true).open(&si).unwrap();
        io.close_stdin();
        let mut input = Vec::new();
        File::from(stdio.stdin.unwrap())
            .read_to_end(&mut input)
            .unwrap();
        assert!(input.is_empty());
        io.shutdown();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn file_log_gets_both_streams() {
        let dir = tempdir("file");
        let log = dir.join("sub/c.log");
        let uri = format!("file://{}", log.display());
        let cfg = StdioConfig {
            stdout: uri.clone(),
            stderr: uri,
            ..Default::default()
        };
        let (stdio, io) = setup(&owner(), &cfg).unwrap();
        File::from(stdio.stdout.unwrap()).write_all(b"a\n").unwrap();
        File::from(stdio.stderr.unwrap()).write_all(b"b\n").unwrap();
        assert!(io.wait_output(Duration::from_secs(5)));
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(text.contains("a\n") && text.contains("b\n"), "{text:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn terminal_output_and_resize() {
        let dir = tempdir("tty");
        let so = mkfifo(&dir, "out");
        let so2 = so.clone();
        let reader = std::thread::spawn(move || {
            let mut s = Vec::new();
            File::open(so2).unwrap().read_to_end(&mut s).unwrap();
            s
        });
        let cfg = StdioConfig {
            stdout: so.display().to_string(),
            terminal: true,
            ..Default::default()
        };
        let (stdio, io) = setup(&owner(), &cfg).unwrap();
        assert!(stdio.terminal && io.is_terminal());
        assert!(stdio.stdin.is_none(), "the sandbox makes the pty");
        assert!(io.resize(100, 40).is_err(), "no master yet");
        // Stand in for the sandbox: a pty whose master is handed over.
        let pty = nix::pty::openpty(None, None).unwrap();
        io.attach_console(pty.master).unwrap();
        let stdio = Stdio {
            stdin: Some(pty.slave.try_clone().unwrap()),
            stdout: Some(pty.slave.try_clone().unwrap()),
            stderr: Some(pty.slave),
            terminal: true,
        };
        io.resize(100, 40).unwrap();
        let mut ws: libc::winsize = libc::winsize {
            ws_row: 0,
            ws_col: 0,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let slave = stdio.stdout.unwrap();
        // SAFETY: TIOCGWINSZ writes one winsize into the live local `ws`;
        // `slave` is an open pty slave.
        let rc = unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) };
        assert_eq!(rc, 0);
        assert_eq!((ws.ws_col, ws.ws_row), (100, 40));
        File::from(slave).write_all(b"tty\n").unwrap();
        drop(stdio.stdin);
        // Someone (the sandbox) keeps a slave open: no EIO ever comes, yet
        // the exit ends the copy once the output has gone quiet.
        let _held = stdio.stderr;
        assert!(!io.wait_output(Duration::from_millis(200)));
        io.process_exited();
        assert!(io.wait_output(Duration::from_secs(5)));
        drop(io);
        let out = reader.join().unwrap();
        // The line discipline turns \n into \r\n.
        assert_eq!(out, b"tty\r\n");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn shutdown_releases_a_copier_waiting_for_its_reader() {
        let dir = tempdir("noreader");
        let so = mkfifo(&dir, "out");
        let cfg = StdioConfig {
            stdout: so.display().to_string(),
            ..Default::default()
        };
        let (stdio, io) = setup(&owner(), &cfg).unwrap();
        let mut out = File::from(stdio.stdout.unwrap());
        out.write_all(b"x").unwrap();
        // The copier is now blocked opening the FIFO (no reader).
        assert!(!io.wait_output(Duration::from_millis(100)));
        io.shutdown();
        drop(out);
        assert!(io.wait_output(Duration::from_secs(5)));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn binary_logger_gets_fd_3_and_4() {
        let dir = tempdir("binary");
        let script = dir.join("logger.sh");
        let outf = dir.join("log");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\nexec 5>&-\ncat <&3 > {o}.out & cat <&4 > {o}.err; wait\necho \"$CONTAINER_ID $CONTAINER_NAMESPACE $1\" > {o}.env\n",
                o = outf.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let cfg = StdioConfig {
            stdout: format!("binary://{}?arg1", script.display()),
            stderr: format!("binary://{}?arg1", script.display()),
            ..Default::default()
        };
        let (stdio, _io) = setup(&owner(), &cfg).unwrap();
        File::from(stdio.stdout.unwrap()).write_all(b"O").unwrap();
        File::from(stdio.stderr.unwrap()).write_all(b"E").unwrap();
        let env = dir.join("log.env");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !env.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        // Reap the logger ourselves: no containerd-shim reaper in tests.
        let _ = nix::sys::wait::waitpid(None, None);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(std::fs::read_to_string(dir.join("log.out")).unwrap(), "O");
        assert_eq!(std::fs::read_to_string(dir.join("log.err")).unwrap(), "E");
        assert_eq!(std::fs::read_to_string(&env).unwrap().trim(), "c1 ns arg1");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
