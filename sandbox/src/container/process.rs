//! The container's process: finding its executable, taking on its limits and
//! identity, and exec'ing it.
//!
//! Seccomp order: with `noNewPrivileges` the filter is installed in [`exec`],
//! right after `PR_SET_NO_NEW_PRIVS` and right before `execve`, so that it
//! sees as few syscalls of ours as possible. Without it, installing a filter
//! needs `CAP_SYS_ADMIN`, which `setresuid` to a non-root uid and the
//! capability drop take away, so [`apply`] installs it before changing user
//! (as runc does); the filter then also governs `setgroups`, `setresuid`,
//! `chdir`, `capset`, whatever the caller does between [`apply`] and
//! [`exec`], and `execve`.

use std::ffi::{CStr, CString, OsStr};
use std::fs::OpenOptions;
use std::io::{ErrorKind, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::prctl::set_no_new_privs;
use nix::sys::resource::{getrlimit, setrlimit, Resource};
use nix::sys::stat::{stat, umask, FileStat, Mode, SFlag};
use nix::unistd::{chdir, setgroups, setresgid, setresuid, Gid, Uid};
use oci_spec::runtime::{Linux, PosixRlimit, PosixRlimitType, Process};
use seccompiler::BpfProgram;

use super::ContainerError;

/// `$PATH` when the process environment has none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Everything `execve` needs, built in advance: once the seccomp filter is
/// on, nothing is allocated and no syscall but `execve` is made.
#[derive(Debug)]
pub struct Exec {
    /// The resolved executable.
    program: CString,
    /// Owns the strings `argv_ptrs` points into.
    argv: Vec<CString>,
    /// Owns the strings `envp_ptrs` points into.
    envp: Vec<CString>,
    /// NULL-terminated pointers into `argv`'s heap buffers, which stay put
    /// when `Exec` moves and are never modified.
    argv_ptrs: Vec<*const libc::c_char>,
    /// NULL-terminated pointers into `envp`'s heap buffers, likewise.
    envp_ptrs: Vec<*const libc::c_char>,
    /// The compiled seccomp filter, empty when the spec has none.
    seccomp: Vec<BpfProgram>,
    /// Whether to set `PR_SET_NO_NEW_PRIVS` before exec.
    no_new_privs: bool,
}

impl Exec {
    /// The resolved path of the executable.
    pub fn program(&self) -> &CStr {
        &self.program
    }

    /// The argument vector, `argv[0]` as the spec gives it.
    pub fn args(&self) -> &[CString] {
        &self.argv
    }

    /// The environment, as `NAME=value` strings.
    pub fn env(&self) -> &[CString] {
        &self.envp
    }

    /// Whether the process gets `no_new_privs`.
    pub fn no_new_privs(&self) -> bool {
        self.no_new_privs
    }

    /// Whether a seccomp filter will be installed.
    pub fn has_seccomp(&self) -> bool {
        !self.seccomp.is_empty()
    }
}

/// Who the process will run as, for the executable check.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Identity {
    uid: u32,
    gid: u32,
    additional_gids: Vec<u32>,
}

impl Identity {
    fn of(process: &Process) -> Self {
        let user = process.user();
        Self {
            uid: user.uid(),
            gid: user.gid(),
            additional_gids: user.additional_gids().clone().unwrap_or_default(),
        }
    }

    /// Whether the mode bits of a file owned by `owner`:`group` let this
    /// identity execute it. Root needs any execute bit.
    fn may_execute(&self, mode: u32, owner: u32, group: u32) -> bool {
        let bits = if self.uid == 0 {
            0o111
        } else if owner == self.uid {
            0o100
        } else if group == self.gid || self.additional_gids.contains(&group) {
            0o010
        } else {
            0o001
        };
        mode & bits != 0
    }
}

/// Resolves the executable and compiles the seccomp profile of `process`, so
/// that their errors surface before the point of no return.
///
/// Call it after `setup_rootfs`: `args[0]` is looked up against `PATH` from
/// the process environment inside the current root; a relative path with a
/// slash is taken from the process cwd.
pub fn prepare(process: &Process, linux: Option<&Linux>) -> Result<Exec, ContainerError> {
    let args = process.args().as_deref().unwrap_or_default();
    let Some(program) = args.first() else {
        return Err(ContainerError::InvalidSpec("process.args is empty".into()));
    };
    let env = process.env().as_deref().unwrap_or_default();
    let path_var = env
        .iter()
        .find_map(|entry| entry.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH);
    let resolved = find_executable(program, path_var, process.cwd(), &Identity::of(process))?;

    let program = CString::new(resolved.as_os_str().as_bytes()).map_err(|_| {
        ContainerError::InvalidSpec(format!(
            "executable path {} has a NUL byte",
            resolved.display()
        ))
    })?;
    let argv = to_cstrings(args, "process.args")?;
    let envp = to_cstrings(env, "process.env")?;
    let argv_ptrs = null_terminated(&argv);
    let envp_ptrs = null_terminated(&envp);
    let seccomp = match linux.and_then(|l| l.seccomp().as_ref()) {
        Some(profile) => {
            crate::seccomp::compile(profile).map_err(ContainerError::SeccompCompile)?
        }
        None => Vec::new(),
    };
    Ok(Exec {
        program,
        argv,
        envp,
        argv_ptrs,
        envp_ptrs,
        seccomp,
        no_new_privs: process.no_new_privileges().unwrap_or(false),
    })
}

fn to_cstrings(strings: &[String], field: &str) -> Result<Vec<CString>, ContainerError> {
    strings
        .iter()
        .map(|s| {
            CString::new(s.as_bytes()).map_err(|_| {
                ContainerError::InvalidSpec(format!("{field} entry {s:?} has a NUL byte"))
            })
        })
        .collect()
}

fn null_terminated(strings: &[CString]) -> Vec<*const libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

/// Finds `program` as `execvp` would: a name with a slash is a path (relative
/// to `cwd`), anything else is searched in the directories of `path_var`
/// (an empty entry meaning `cwd`). The file must be a regular file that
/// `user`'s mode bits allow to execute.
fn find_executable(
    program: &str,
    path_var: &str,
    cwd: &Path,
    user: &Identity,
) -> Result<PathBuf, ContainerError> {
    if program.contains('/') {
        let path = cwd.join(program);
        return match stat(&path) {
            Ok(st) if is_regular(&st) && user.may_execute(st.st_mode, st.st_uid, st.st_gid) => {
                Ok(path)
            }
            Ok(_) => Err(ContainerError::NotExecutable {
                path,
                uid: user.uid,
            }),
            Err(_) => Err(ContainerError::NoSuchFile {
                path: PathBuf::from(program),
            }),
        };
    }
    let mut not_executable = None;
    for dir in path_var.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let candidate = cwd.join(dir).join(program);
        match stat(&candidate) {
            Ok(st) if is_regular(&st) => {
                if user.may_execute(st.st_mode, st.st_uid, st.st_gid) {
                    return Ok(candidate);
                }
                not_executable.get_or_insert(candidate);
            }
            Ok(_) | Err(_) => {}
        }
    }
    match not_executable {
        Some(path) => Err(ContainerError::NotExecutable {
            path,
            uid: user.uid,
        }),
        None => Err(ContainerError::NotFound {
            program: program.to_owned(),
        }),
    }
}

fn is_regular(st: &FileStat) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFREG
}

/// Gives the current process the limits, identity and capabilities of
/// `process`, in this order: rlimits, oom_score_adj, the seccomp filter of
/// `linux` (only without `noNewPrivileges`, see the module docs; compiled
/// again here, [`prepare`] having shown that it compiles), keep-caps,
/// supplementary groups, gid, uid, cwd (checked as the new user),
/// capabilities, umask. AppArmor and SELinux labels are ignored.
pub fn apply(process: &Process, linux: Option<&Linux>) -> Result<(), ContainerError> {
    for rlimit in process.rlimits().as_deref().unwrap_or_default() {
        set_rlimit(rlimit)?;
    }
    if let Some(score) = process.oom_score_adj() {
        set_oom_score_adj(score)?;
    }
    let no_new_privs = process.no_new_privileges().unwrap_or(false);
    if let Some(profile) = linux.and_then(|l| l.seccomp().as_ref()) {
        if !no_new_privs {
            let programs =
                crate::seccomp::compile(profile).map_err(ContainerError::SeccompCompile)?;
            crate::seccomp::install(&programs).map_err(ContainerError::SeccompInstall)?;
        }
    }
    crate::caps::keep_caps_across_setuid().map_err(ContainerError::Caps)?;
    set_user(process)?;
    let cwd = process.cwd();
    chdir(cwd).map_err(|source| match source {
        Errno::ENOENT => ContainerError::CwdNotFound {
            cwd: cwd.to_path_buf(),
        },
        source => ContainerError::Chdir {
            cwd: cwd.to_path_buf(),
            source,
        },
    })?;
    crate::caps::apply(process.capabilities().as_ref()).map_err(ContainerError::Caps)?;
    if let Some(mask) = process.user().umask() {
        umask(Mode::from_bits_truncate(mask));
    }
    if let Some(profile) = process.apparmor_profile() {
        log::debug!("ignoring AppArmor profile {profile}: not supported in the sandbox");
    }
    if let Some(label) = process.selinux_label() {
        log::debug!("ignoring SELinux label {label}: not supported in the sandbox");
    }
    Ok(())
}

fn rlimit_resource(typ: PosixRlimitType) -> Resource {
    match typ {
        PosixRlimitType::RlimitCpu => Resource::RLIMIT_CPU,
        PosixRlimitType::RlimitFsize => Resource::RLIMIT_FSIZE,
        PosixRlimitType::RlimitData => Resource::RLIMIT_DATA,
        PosixRlimitType::RlimitStack => Resource::RLIMIT_STACK,
        PosixRlimitType::RlimitCore => Resource::RLIMIT_CORE,
        PosixRlimitType::RlimitRss => Resource::RLIMIT_RSS,
        PosixRlimitType::RlimitNproc => Resource::RLIMIT_NPROC,
        PosixRlimitType::RlimitNofile => Resource::RLIMIT_NOFILE,
        PosixRlimitType::RlimitMemlock => Resource::RLIMIT_MEMLOCK,
        PosixRlimitType::RlimitAs => Resource::RLIMIT_AS,
        PosixRlimitType::RlimitLocks => Resource::RLIMIT_LOCKS,
        PosixRlimitType::RlimitSigpending => Resource::RLIMIT_SIGPENDING,
        PosixRlimitType::RlimitMsgqueue => Resource::RLIMIT_MSGQUEUE,
        PosixRlimitType::RlimitNice => Resource::RLIMIT_NICE,
        PosixRlimitType::RlimitRtprio => Resource::RLIMIT_RTPRIO,
        PosixRlimitType::RlimitRttime => Resource::RLIMIT_RTTIME,
    }
}

/// Sets one rlimit. Root of a user namespace lacks `CAP_SYS_RESOURCE` over
/// the host, so a refused raise of the hard limit keeps the current hard
/// limit and caps the soft one to it.
fn set_rlimit(rlimit: &PosixRlimit) -> Result<(), ContainerError> {
    let resource = rlimit_resource(rlimit.typ());
    let (soft, hard) = (rlimit.soft(), rlimit.hard());
    let rlimit_error = |soft, hard, source| ContainerError::Rlimit {
        resource: rlimit.typ().to_string(),
        soft,
        hard,
        source,
    };
    match setrlimit(resource, soft, hard) {
        Ok(()) => Ok(()),
        Err(Errno::EPERM) => {
            let (_, current_hard) =
                getrlimit(resource).map_err(|source| rlimit_error(soft, hard, source))?;
            let capped_soft = soft.min(current_hard);
            log::warn!(
                "raising the hard {} limit to {hard} is not permitted in the sandbox: \
                 keeping hard {current_hard}, soft {capped_soft}",
                rlimit.typ()
            );
            setrlimit(resource, capped_soft, current_hard)
                .map_err(|source| rlimit_error(capped_soft, current_hard, source))
        }
        Err(source) => Err(rlimit_error(soft, hard, source)),
    }
}

/// Writes `/proc/self/oom_score_adj`; a refusal (lowering it needs
/// privileges the sandbox lacks) or a missing `/proc` only warns.
fn set_oom_score_adj(score: i32) -> Result<(), ContainerError> {
    let written = OpenOptions::new()
        .write(true)
        .open("/proc/self/oom_score_adj")
        .and_then(|mut file| file.write_all(score.to_string().as_bytes()));
    match written {
        Ok(()) => Ok(()),
        Err(e) if matches!(e.kind(), ErrorKind::PermissionDenied | ErrorKind::NotFound) => {
            log::warn!("cannot set oom_score_adj to {score}: {e}");
            Ok(())
        }
        Err(source) => Err(ContainerError::OomScoreAdj {
            value: score,
            source,
        }),
    }
}

/// Supplementary groups, then gid, then uid.
fn set_user(process: &Process) -> Result<(), ContainerError> {
    let user = process.user();
    let additional = user.additional_gids().as_deref().unwrap_or_default();
    let groups: Vec<Gid> = additional.iter().map(|&g| Gid::from_raw(g)).collect();
    match setgroups(&groups) {
        Ok(()) => {}
        // Dropping inherited groups is refused where setgroups is denied;
        // they are unmapped there anyway.
        Err(Errno::EPERM) if groups.is_empty() => {
            log::debug!("setgroups is denied in this user namespace: keeping the inherited groups");
        }
        Err(source) => {
            return Err(ContainerError::Setgroups {
                gids: additional.to_vec(),
                source,
            })
        }
    }
    let gid = Gid::from_raw(user.gid());
    setresgid(gid, gid, gid).map_err(|source| ContainerError::Setgid {
        gid: user.gid(),
        source,
    })?;
    let uid = Uid::from_raw(user.uid());
    setresuid(uid, uid, uid).map_err(|source| ContainerError::Setuid {
        uid: user.uid(),
        source,
    })
}

/// Sets `no_new_privs` and installs the seccomp filter if `exec` asks for
/// them, then replaces the process with the container's program. Returns
/// only on failure.
pub fn exec(exec: &Exec) -> ContainerError {
    if exec.no_new_privs {
        if let Err(source) = set_no_new_privs() {
            return ContainerError::NoNewPrivs(source);
        }
        if !exec.seccomp.is_empty() {
            if let Err(source) = crate::seccomp::install(&exec.seccomp) {
                return ContainerError::SeccompInstall(source);
            }
        }
    }
    // SAFETY: `program` is a NUL-terminated string, and `argv_ptrs` and
    // `envp_ptrs` are NULL-terminated arrays of pointers into the
    // NUL-terminated strings of `argv` and `envp`, all owned by `exec`,
    // unmodified since built, and alive for the whole call.
    unsafe {
        libc::execve(
            exec.program.as_ptr(),
            exec.argv_ptrs.as_ptr(),
            exec.envp_ptrs.as_ptr(),
        )
    };
    ContainerError::Exec {
        program: PathBuf::from(OsStr::from_bytes(exec.program.as_bytes())),
        source: Errno::last(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    /// A directory removed when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> Self {
            let path = std::env::temp_dir()
                .join(format!("runsc-rs-process-{name}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&path);
            fs::create_dir_all(&path).expect("creating a temp dir");
            Self(path)
        }

        fn file(&self, rel: &str, mode: u32) -> PathBuf {
            let path = self.0.join(rel);
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent).expect("mkdir");
            }
            fs::write(&path, "#!/bin/sh\n").expect("writing a file");
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod");
            path
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn root() -> Identity {
        Identity {
            uid: 0,
            gid: 0,
            additional_gids: Vec::new(),
        }
    }

    fn process(json: &str) -> Process {
        serde_json::from_str(json).expect("parsing a test process")
    }

    #[test]
    fn mode_bits_decide_who_may_execute() {
        let user = Identity {
            uid: 1000,
            gid: 100,
            additional_gids: vec![20],
        };
        assert!(root().may_execute(0o001, 5, 5));
        assert!(!root().may_execute(0o644, 0, 0));
        assert!(user.may_execute(0o700, 1000, 0));
        assert!(!user.may_execute(0o070, 1000, 100), "owner bits win");
        assert!(user.may_execute(0o010, 0, 100));
        assert!(user.may_execute(0o010, 0, 20));
        assert!(!user.may_execute(0o110, 0, 30));
        assert!(user.may_execute(0o001, 0, 30));
    }

    #[test]
    fn path_lookup_finds_the_first_executable() {
        let dir = TempDir::new("lookup");
        dir.file("a/prog", 0o644);
        let b = dir.file("b/prog", 0o755);
        dir.file("c/prog", 0o755);
        fs::create_dir_all(dir.0.join("d/prog")).expect("mkdir");
        let path = |dirs: &[&str]| {
            dirs.iter()
                .map(|d| dir.0.join(d).display().to_string())
                .collect::<Vec<_>>()
                .join(":")
        };
        let user = Identity {
            uid: 1000,
            gid: 1000,
            additional_gids: Vec::new(),
        };
        let found = find_executable(
            "prog",
            &path(&["missing", "d", "a", "b", "c"]),
            Path::new("/"),
            &user,
        );
        assert_eq!(found.ok(), Some(b));

        let found = find_executable("prog", &path(&["a"]), Path::new("/"), &user);
        assert!(matches!(found, Err(ContainerError::NotExecutable { .. })));

        let err = find_executable("nope", &path(&["a", "b"]), Path::new("/"), &user)
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("executable file not found in $PATH: nope")
        );
    }

    #[test]
    fn paths_with_a_slash_are_not_searched() {
        let dir = TempDir::new("slash");
        let prog = dir.file("bin/prog", 0o755);
        dir.file("bin/data", 0o644);
        let found = find_executable("bin/prog", "", &dir.0, &root());
        assert_eq!(found.ok(), Some(dir.0.join("bin/prog")));
        let found = find_executable(&prog.display().to_string(), "", Path::new("/"), &root());
        assert_eq!(found.ok(), Some(prog));

        let found = find_executable("./bin/data", "", &dir.0, &root());
        assert!(matches!(found, Err(ContainerError::NotExecutable { .. })));
        let found = find_executable("./bin", "", &dir.0, &root());
        assert!(matches!(found, Err(ContainerError::NotExecutable { .. })));
        let err = find_executable("/no/such/prog", DEFAULT_PATH, Path::new("/"), &root())
            .err()
            .map(|e| e.to_string());
        assert_eq!(err.as_deref(), Some("no such file: /no/such/prog"));
    }

    #[test]
    fn empty_path_entries_mean_the_cwd() {
        let dir = TempDir::new("cwd");
        let prog = dir.file("prog", 0o755);
        let found = find_executable("prog", "/nonexistent:", &dir.0, &root());
        assert_eq!(found.ok(), Some(prog));
    }

    #[test]
    fn prepare_builds_a_null_terminated_exec() {
        let dir = TempDir::new("prepare");
        let prog = dir.file("bin/prog", 0o755);
        let spec = process(&format!(
            r#"{{"cwd": "/", "user": {{"uid": 0, "gid": 0}},
                "args": ["prog", "-x"],
                "env": ["A=1", "PATH={}"],
                "noNewPrivileges": true}}"#,
            dir.0.join("bin").display()
        ));
        let exec = prepare(&spec, None).expect("preparing");
        assert_eq!(exec.program().to_bytes(), prog.as_os_str().as_bytes());
        assert_eq!(exec.args().len(), 2);
        assert_eq!(exec.argv_ptrs.len(), 3);
        assert!(exec.argv_ptrs[2].is_null());
        assert_eq!(exec.envp_ptrs.len(), 3);
        assert!(exec.envp_ptrs[2].is_null());
        assert!(exec.no_new_privs());
        assert!(!exec.has_seccomp());
    }

    #[test]
    fn prepare_refuses_empty_args_and_nul_bytes() {
        let spec = process(r#"{"cwd": "/", "user": {"uid": 0, "gid": 0}, "args": []}"#);
        assert!(matches!(
            prepare(&spec, None),
            Err(ContainerError::InvalidSpec(_))
        ));
        let spec = process(r#"{"cwd": "/", "user": {"uid": 0, "gid": 0}}"#);
        assert!(matches!(
            prepare(&spec, None),
            Err(ContainerError::InvalidSpec(_))
        ));
        let dir = TempDir::new("nul");
        dir.file("prog", 0o755);
        let spec = process(&format!(
            r#"{{"cwd": "/", "user": {{"uid": 0, "gid": 0}},
                "args": ["prog", "a\u0000b"], "env": ["PATH={}"]}}"#,
            dir.0.display()
        ));
        assert!(matches!(
            prepare(&spec, None),
            Err(ContainerError::InvalidSpec(_))
        ));
    }
}
