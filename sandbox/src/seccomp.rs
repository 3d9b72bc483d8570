//! Seccomp: compiles OCI seccomp profiles into BPF programs, installs them,
//! and builds the deny-list filter the sandbox process applies to itself.
//!
//! seccompiler filters have one match action and one mismatch action, so an
//! OCI profile becomes a stack of filters (see [`compile`]); the kernel runs
//! every filter of the stack and keeps the highest-precedence result
//! (KILL_PROCESS > KILL_THREAD > TRAP > ERRNO > TRACE > LOG > ALLOW).
//! Only the x86_64 ABI is supported: syscalls from other architectures kill
//! the process, and x32 syscalls fail with ENOSYS.

use std::collections::btree_map::Entry;
use std::collections::BTreeMap;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};

use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompOperator,
};
use seccompiler::{
    sock_filter, BackendError, BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp,
    SeccompCondition, SeccompFilter, SeccompRule, TargetArch,
};

use crate::syscalls::syscall_number;

/// Errors from compiling or installing seccomp filters.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// The profile uses an action this runtime cannot implement.
    #[error("seccomp action {0} is not supported")]
    UnsupportedAction(LinuxSeccompAction),
    /// A rule compares a syscall argument that does not exist.
    #[error("seccomp rule for {syscall} compares argument {index}, but syscalls have 6 (0-5)")]
    InvalidArgIndex {
        /// Syscall named by the rule.
        syscall: String,
        /// Argument index given by the rule.
        index: usize,
    },
    /// The rules give the `seccomp` syscall itself more than one non-default
    /// action, which the stacked filters cannot express.
    #[error("seccomp rules give the seccomp syscall more than one action")]
    SeccompSyscallActions,
    /// seccompiler rejected a rule.
    #[error("building the seccomp rule for {syscall}")]
    Rule {
        /// Syscall named by the rule.
        syscall: String,
        /// Why seccompiler rejected it.
        #[source]
        source: BackendError,
    },
    /// seccompiler rejected a filter.
    #[error("building the seccomp filter for action {action:?}")]
    Filter {
        /// Match action of the filter.
        action: SeccompAction,
        /// Why seccompiler rejected it.
        #[source]
        source: BackendError,
    },
    /// A program is longer than the kernel accepts.
    #[error(
        "seccomp program has {len} instructions, more than the kernel's limit of {BPF_MAX_LEN}"
    )]
    ProgramTooLong {
        /// Number of instructions.
        len: usize,
    },
    /// A program is empty.
    #[error("seccomp program {index} is empty")]
    EmptyProgram {
        /// Position of the program in the list given to [`install`].
        index: usize,
    },
    /// The kernel refused a program.
    #[error("installing seccomp program {index}")]
    Install {
        /// Position of the program in the list given to [`install`].
        index: usize,
        /// Why the kernel refused it.
        #[source]
        source: io::Error,
    },
    /// The filters and the syscall table are written for x86_64 only.
    #[error("seccomp filters are only supported on x86_64 hosts")]
    UnsupportedHostArch,
}

/// The kernel's limit on instructions in one seccomp program (BPF_MAXINSNS).
const BPF_MAX_LEN: usize = 4096;
/// `AUDIT_ARCH_X86_64` from linux/audit.h: `EM_X86_64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE`.
const AUDIT_ARCH_X86_64: u32 = 62 | 0x8000_0000 | 0x4000_0000;
/// `__X32_SYSCALL_BIT`: set in the syscall number of every x32 syscall.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;
/// Number of the `seccomp` syscall on x86_64.
const SYS_SECCOMP: u32 = 317;
/// Offsets of `nr` and `arch` in `struct seccomp_data`.
const SECCOMP_DATA_NR: u32 = 0;
const SECCOMP_DATA_ARCH: u32 = 4;
/// Classic BPF opcodes (linux/bpf_common.h), combined as the kernel expects.
const BPF_LD_W_ABS: u16 = 0x20; // BPF_LD (0) | BPF_W (0) | BPF_ABS
const BPF_JMP_JEQ_K: u16 = 0x05 | 0x10;
const BPF_JMP_JGT_K: u16 = 0x05 | 0x20;
const BPF_JMP_JGE_K: u16 = 0x05 | 0x30;
const BPF_RET_K: u16 = 0x06;
/// errno used when ERRNO or TRACE come without `errnoRet`, as runc does.
const EPERM: u32 = libc::EPERM.unsigned_abs();
const ENOSYS: u32 = libc::ENOSYS.unsigned_abs();

// `install` passes seccompiler's `sock_filter` to the kernel as `struct sock_filter`.
const _: () = assert!(std::mem::size_of::<sock_filter>() == 8);

/// How one syscall is matched by the rules of one action.
#[derive(Clone, Debug)]
enum Match {
    /// Whatever the arguments.
    Any,
    /// When any of the rules matches (each rule ANDs its conditions).
    Rules(Vec<SeccompRule>),
}

impl Match {
    /// ORs `other` into `self`.
    fn merge(&mut self, other: Match) {
        match (&mut *self, other) {
            (Match::Any, _) => {}
            (_, Match::Any) => *self = Match::Any,
            (Match::Rules(mine), Match::Rules(mut theirs)) => mine.append(&mut theirs),
        }
    }

    fn into_rules(self) -> Vec<SeccompRule> {
        match self {
            Match::Any => Vec::new(),
            Match::Rules(rules) => rules,
        }
    }
}

type RuleMap = BTreeMap<i64, Match>;

/// ORs `matching` into what `rules` already holds for syscall `number`.
fn add_match(rules: &mut RuleMap, number: i64, matching: Match) {
    match rules.entry(number) {
        Entry::Occupied(mut existing) => existing.get_mut().merge(matching),
        Entry::Vacant(slot) => {
            slot.insert(matching);
        }
    }
}

/// What a program's hand-written prefix does with the `seccomp` syscall.
#[derive(Clone, Copy, PartialEq, Eq)]
enum SeccompSyscall {
    /// Nothing: the rest of the program decides.
    Filter,
    /// Allows it, so that later programs of the stack can still be installed.
    Allow,
    /// Allows every other syscall: the program only decides `seccomp`.
    Only,
}

/// Compiles an OCI seccomp profile into BPF programs that give the OCI
/// semantics when installed in order with [`install`].
///
/// The stack is:
/// - for each non-default action A other than ALLOW, a filter returning A for
///   the syscalls (and argument conditions) of A's rules and ALLOW otherwise;
/// - when the default action is not ALLOW, a filter returning ALLOW for every
///   syscall named by a rule (with its conditions) and the default otherwise;
/// - when the profile does not unconditionally allow `seccomp`, a last filter
///   that only decides the `seccomp` syscall; the filters before it allow
///   `seccomp` so that the stack can be installed at all.
///
/// A syscall matching a rule thus gets that rule's action, any other one the
/// default action. Like runc, rules whose action equals the default are
/// dropped, unknown syscall names are skipped, several conditions on the same
/// argument in one rule are ORed instead of ANDed, and with an ERRNO default
/// syscalls numbered above every syscall the profile names fail with ENOSYS
/// (so that libc falls back from syscalls newer than the profile). x32
/// syscalls fail with ENOSYS; filter flags are not applied. Returns no
/// program when the profile allows everything.
pub fn compile(spec: &LinuxSeccomp) -> Result<Vec<BpfProgram>, SeccompError> {
    if !cfg!(target_arch = "x86_64") {
        return Err(SeccompError::UnsupportedHostArch);
    }
    for arch in spec.architectures().iter().flatten() {
        match arch {
            Arch::ScmpArchNative | Arch::ScmpArchX86_64 => {}
            Arch::ScmpArchX32 => log::debug!("seccomp: x32 syscalls are refused with ENOSYS"),
            other => log::debug!("seccomp: ignoring architecture {other}"),
        }
    }
    if let Some(flags) = spec.flags().as_ref().filter(|flags| !flags.is_empty()) {
        log::info!("seccomp: not applying filter flags {flags:?}");
    }

    let default = action(spec.default_action(), spec.default_errno_ret())?;
    let mut by_action: Vec<(SeccompAction, RuleMap)> = Vec::new();
    let mut highest_named: Option<i64> = None;
    for syscall in spec.syscalls().iter().flatten() {
        let rule_action = action(syscall.action(), syscall.errno_ret())?;
        for name in syscall.names() {
            let Some(number) = syscall_number(name) else {
                log::debug!("seccomp: skipping unknown syscall {name}");
                continue;
            };
            highest_named = highest_named.max(Some(number));
            if rule_action == default {
                continue;
            }
            let Some(matching) = arg_match(name, syscall.args().as_deref())? else {
                continue;
            };
            let slot = match by_action.iter().position(|(a, _)| *a == rule_action) {
                Some(slot) => slot,
                None => {
                    by_action.push((rule_action.clone(), RuleMap::new()));
                    by_action.len() - 1
                }
            };
            add_match(&mut by_action[slot].1, number, matching);
        }
    }

    if default == SeccompAction::Allow && by_action.is_empty() {
        return Ok(Vec::new());
    }

    // The `seccomp` syscall is decided by the last program only.
    let seccomp_rules: Vec<(SeccompAction, Match)> = by_action
        .iter_mut()
        .filter_map(|(a, rules)| {
            let matching = rules.remove(&i64::from(SYS_SECCOMP))?;
            Some((a.clone(), matching))
        })
        .collect();
    let enosys_above = match default {
        SeccompAction::Errno(errno) if errno != ENOSYS => highest_named,
        _ => None,
    };

    let mut programs = Vec::new();
    let mut allowed = RuleMap::new();
    for (rule_action, rules) in by_action {
        for (number, matching) in &rules {
            add_match(&mut allowed, *number, matching.clone());
        }
        if rule_action == SeccompAction::Allow || rules.is_empty() {
            continue;
        }
        let filter = filter(rules, SeccompAction::Allow, rule_action)?;
        programs.push(with_prefix(SeccompSyscall::Allow, None, filter)?);
    }
    if default != SeccompAction::Allow {
        let filter = filter(allowed, default.clone(), SeccompAction::Allow)?;
        programs.push(with_prefix(SeccompSyscall::Allow, enosys_above, filter)?);
    }
    if let Some(program) = seccomp_syscall_program(seccomp_rules, &default, enosys_above)? {
        programs.push(program);
    }
    Ok(programs)
}

/// Builds the last program of the stack, which decides the `seccomp` syscall
/// as the whole profile would; `None` when the profile always allows it.
fn seccomp_syscall_program(
    mut rules: Vec<(SeccompAction, Match)>,
    default: &SeccompAction,
    enosys_above: Option<i64>,
) -> Result<Option<BpfProgram>, SeccompError> {
    if rules.len() > 1 {
        return Err(SeccompError::SeccompSyscallActions);
    }
    let filter = match rules.pop() {
        Some((SeccompAction::Allow, Match::Any)) => return Ok(None),
        Some((rule_action, matching)) => filter(
            BTreeMap::from([(i64::from(SYS_SECCOMP), matching)]),
            default.clone(),
            rule_action,
        )?,
        None if *default == SeccompAction::Allow => return Ok(None),
        None => {
            let verdict = match enosys_above {
                Some(highest) if i64::from(SYS_SECCOMP) > highest => SeccompAction::Errno(ENOSYS),
                _ => default.clone(),
            };
            filter(
                BTreeMap::from([(i64::from(SYS_SECCOMP), Match::Any)]),
                SeccompAction::Allow,
                verdict,
            )?
        }
    };
    with_prefix(SeccompSyscall::Only, None, filter).map(Some)
}

/// Installs `programs` in order on the calling thread, with the raw
/// `seccomp(SECCOMP_SET_MODE_FILTER)` syscall.
///
/// The kernel requires no_new_privs or CAP_SYS_ADMIN: the caller sets
/// `PR_SET_NO_NEW_PRIVS` when the OCI spec asks for it (unlike
/// `seccompiler::apply_filter`, this function never sets it). Filters apply to
/// the calling thread only (no TSYNC), so call it in a single-threaded
/// process; they are inherited across fork and execve. Does not allocate, so
/// it may be called in a child between fork and exec.
pub fn install(programs: &[BpfProgram]) -> Result<(), SeccompError> {
    for (index, program) in programs.iter().enumerate() {
        set_filter(index, program, 0)?;
    }
    Ok(())
}

/// Installs the program of [`notify_filter`] on the calling thread and
/// returns its user-notification listener (close-on-exec).
/// Needs no_new_privs or CAP_SYS_ADMIN, like [`install`].
pub fn install_notifying(program: &BpfProgram) -> Result<OwnedFd, SeccompError> {
    let fd = set_filter(
        0,
        program,
        libc::SECCOMP_FILTER_FLAG_NEW_LISTENER as libc::c_uint,
    )?;
    let fd = i32::try_from(fd).map_err(|_| SeccompError::Install {
        index: 0,
        source: io::Error::from_raw_os_error(libc::EBADF),
    })?;
    // SAFETY: with FLAG_NEW_LISTENER the kernel returns a new descriptor
    // that this process owns and nothing else refers to.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `seccomp(SECCOMP_SET_MODE_FILTER, flags, program)`; its return value.
fn set_filter(
    index: usize,
    program: &BpfProgram,
    flags: libc::c_uint,
) -> Result<libc::c_long, SeccompError> {
    /// `struct sock_fprog` from linux/filter.h, over seccompiler's instructions.
    #[repr(C)]
    struct SockFprog {
        len: libc::c_ushort,
        filter: *const sock_filter,
    }

    if program.is_empty() {
        return Err(SeccompError::EmptyProgram { index });
    }
    let len = u16::try_from(program.len())
        .ok()
        .filter(|len| usize::from(*len) <= BPF_MAX_LEN)
        .ok_or(SeccompError::ProgramTooLong { len: program.len() })?;
    let fprog = SockFprog {
        len,
        filter: program.as_ptr(),
    };
    // SAFETY: `fprog` points at `len` initialised instructions of `program`,
    // whose `sock_filter` is `#[repr(C)]` with the kernel's layout (size
    // checked above); both outlive the call, and the kernel only copies
    // them in and never writes to them.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            flags,
            std::ptr::addr_of!(fprog),
        )
    };
    if rc < 0 {
        return Err(SeccompError::Install {
            index,
            source: io::Error::last_os_error(),
        });
    }
    Ok(rc)
}

/// A program that sends syscalls `nrs` of the native ABI to the user-space
/// listener and allows everything else (the filters the container's spec
/// asks for still apply: the kernel keeps the strictest answer).
pub fn notify_filter(nrs: &[i64]) -> Result<BpfProgram, SeccompError> {
    if !cfg!(target_arch = "x86_64") {
        return Err(SeccompError::UnsupportedHostArch);
    }
    const LD_W_ABS: u16 = 0x20;
    const JEQ_K: u16 = 0x15;
    const RET_K: u16 = 0x06;
    const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
    let insn = |code, jt, jf, k| sock_filter { code, jt, jf, k };
    let n = u8::try_from(nrs.len())
        .ok()
        .filter(|n| *n < 200)
        .ok_or(SeccompError::ProgramTooLong { len: nrs.len() })?;
    // arch; nr; one JEQ per syscall (taken: to NOTIFY); ALLOW; NOTIFY.
    let mut program = vec![
        insn(LD_W_ABS, 0, 0, 4), // seccomp_data.arch
        insn(JEQ_K, 0, n + 1, AUDIT_ARCH_X86_64),
        insn(LD_W_ABS, 0, 0, 0), // seccomp_data.nr
    ];
    for (i, nr) in nrs.iter().enumerate() {
        program.push(insn(JEQ_K, n - i as u8, 0, *nr as u32));
    }
    program.push(insn(RET_K, 0, 0, libc::SECCOMP_RET_ALLOW));
    program.push(insn(RET_K, 0, 0, libc::SECCOMP_RET_USER_NOTIF));
    Ok(program)
}

/// Syscalls [`sandbox_filter`] refuses with EPERM; the reasons are there.
const SANDBOX_DENIED: &[&str] = &[
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "create_module",
    "get_kernel_syms",
    "query_module",
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "open_by_handle_at",
    "name_to_handle_at",
    "keyctl",
    "add_key",
    "request_key",
    "acct",
    "swapon",
    "swapoff",
    "reboot",
    "syslog",
    "iopl",
    "ioperm",
    "quotactl",
    "lookup_dcookie",
    "nfsservctl",
    "uselib",
    "vm86",
    "vm86old",
    "kcmp",
    "process_vm_readv",
    "process_vm_writev",
    "ptrace",
    "fanotify_init",
    "pidfd_getfd",
    "move_pages",
    "mbind",
    "set_mempolicy",
    "migrate_pages",
    "clock_settime",
    "clock_adjtime",
    "settimeofday",
    "adjtimex",
    "stime",
];

/// Personas `personality` may set under [`sandbox_filter`].
const SANDBOX_PERSONAS: [u64; 5] = [0, 0x8, 0x2_0000, 0x2_0008, 0xffff_ffff];

/// Builds the filter the sandbox process applies to itself after setup and
/// that its workloads inherit: it allows everything except the syscalls
/// below (EPERM), kills the process on a syscall from another architecture
/// and refuses x32 syscalls with ENOSYS. Denied, and why:
///
/// - `kexec_load`, `kexec_file_load`: boot another kernel.
/// - `init_module`, `finit_module`, `delete_module`, `create_module`: load or
///   unload kernel modules.
/// - `get_kernel_syms`, `query_module`: obsolete module interfaces.
/// - `bpf`: loads eBPF programs into the kernel, a large attack surface.
/// - `perf_event_open`: kernel profiling, leaks kernel addresses.
/// - `userfaultfd`: lets exploits stall the kernel on page faults.
/// - `open_by_handle_at`, `name_to_handle_at`: open host files by handle,
///   bypassing the mount namespace.
/// - `keyctl`, `add_key`, `request_key`: the kernel keyring is not namespaced.
/// - `acct`: host-wide process accounting.
/// - `swapon`, `swapoff`: host swap.
/// - `reboot`: reboots the host.
/// - `syslog`: reads the kernel log, which leaks kernel addresses.
/// - `iopl`, `ioperm`: raw I/O port access.
/// - `quotactl`: host filesystem quotas.
/// - `lookup_dcookie`: profiling interface, leaks kernel paths.
/// - `nfsservctl`: obsolete kernel NFS server control.
/// - `uselib`: obsolete library loading.
/// - `vm86`, `vm86old`: virtual 8086 mode (i386 only; not in the x86_64 table).
/// - `kcmp`: compares kernel objects of other processes.
/// - `process_vm_readv`, `process_vm_writev`: access other processes' memory.
/// - `ptrace`: controls other processes, bypasses seccomp on old kernels.
/// - `personality` with a persona other than 0, PER_LINUX32 (8), UNAME26
///   (0x20000), both (0x20008) or the query 0xffffffff: the other flags
///   disable ASLR or make data executable.
/// - `fanotify_init`: watches whole filesystems.
/// - `pidfd_getfd`: steals file descriptors from other processes.
/// - `move_pages`, `mbind`, `set_mempolicy`, `migrate_pages`: NUMA placement
///   of memory, which affects the host.
/// - `clock_settime`, `clock_adjtime`, `settimeofday`, `adjtimex`, `stime`:
///   the system clock is not namespaced (`stime` is i386 only).
pub fn sandbox_filter() -> Result<BpfProgram, SeccompError> {
    if !cfg!(target_arch = "x86_64") {
        return Err(SeccompError::UnsupportedHostArch);
    }
    let mut rules = RuleMap::new();
    for name in SANDBOX_DENIED {
        match syscall_number(name) {
            Some(number) => {
                rules.insert(number, Match::Any);
            }
            None => log::debug!("seccomp: {name} does not exist on x86_64"),
        }
    }
    // `personality(unsigned int)`: compare the low 32 bits the kernel reads.
    let personas = SANDBOX_PERSONAS
        .iter()
        .map(|persona| {
            SeccompCondition::new(0, SeccompCmpArgLen::Dword, SeccompCmpOp::Ne, *persona)
        })
        .collect::<Result<Vec<_>, _>>()
        .and_then(SeccompRule::new)
        .map_err(|source| SeccompError::Rule {
            syscall: "personality".to_owned(),
            source,
        })?;
    rules.insert(libc::SYS_personality, Match::Rules(vec![personas]));

    let filter = filter(rules, SeccompAction::Allow, SeccompAction::Errno(EPERM))?;
    with_prefix(SeccompSyscall::Filter, None, filter)
}

/// Maps an OCI action to seccompiler's.
fn action(oci: LinuxSeccompAction, errno_ret: Option<u32>) -> Result<SeccompAction, SeccompError> {
    Ok(match oci {
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            SeccompAction::KillThread
        }
        LinuxSeccompAction::ScmpActKillProcess => SeccompAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => SeccompAction::Trap,
        LinuxSeccompAction::ScmpActErrno => SeccompAction::Errno(errno_ret.unwrap_or(EPERM)),
        LinuxSeccompAction::ScmpActTrace => SeccompAction::Trace(errno_ret.unwrap_or(EPERM)),
        LinuxSeccompAction::ScmpActLog => SeccompAction::Log,
        LinuxSeccompAction::ScmpActAllow => SeccompAction::Allow,
        LinuxSeccompAction::ScmpActNotify => return Err(SeccompError::UnsupportedAction(oci)),
    })
}

/// Translates the argument conditions of one OCI rule; `None` when they can
/// never match.
fn arg_match(
    syscall: &str,
    args: Option<&[LinuxSeccompArg]>,
) -> Result<Option<Match>, SeccompError> {
    let args = match args {
        Some(args) if !args.is_empty() => args,
        _ => return Ok(Some(Match::Any)),
    };
    let conditions = args
        .iter()
        .map(|arg| condition(syscall, arg))
        .collect::<Result<Vec<_>, _>>()?;
    let repeated_index = args
        .iter()
        .enumerate()
        .any(|(i, arg)| args[..i].iter().any(|prev| prev.index() == arg.index()));
    let groups: Vec<Vec<SeccompCondition>> = if repeated_index {
        // runc (and libseccomp before it) ORs conditions on the same argument.
        conditions.into_iter().flatten().map(|c| vec![c]).collect()
    } else if conditions.iter().all(Option::is_some) {
        vec![conditions.into_iter().flatten().collect()]
    } else {
        Vec::new()
    };
    if groups.is_empty() {
        log::debug!("seccomp: a rule for {syscall} can never match, skipping it");
        return Ok(None);
    }
    let rules = groups
        .into_iter()
        .map(SeccompRule::new)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| SeccompError::Rule {
            syscall: syscall.to_owned(),
            source,
        })?;
    Ok(Some(Match::Rules(rules)))
}

/// Translates one OCI argument condition, compared on all 64 bits; `None`
/// when it can never be true.
fn condition(
    syscall: &str,
    arg: &LinuxSeccompArg,
) -> Result<Option<SeccompCondition>, SeccompError> {
    let index = u8::try_from(arg.index())
        .ok()
        .filter(|index| *index <= 5)
        .ok_or_else(|| SeccompError::InvalidArgIndex {
            syscall: syscall.to_owned(),
            index: arg.index(),
        })?;
    let (op, value) = match arg.op() {
        LinuxSeccompOperator::ScmpCmpNe => (SeccompCmpOp::Ne, arg.value()),
        LinuxSeccompOperator::ScmpCmpLt => (SeccompCmpOp::Lt, arg.value()),
        LinuxSeccompOperator::ScmpCmpLe => (SeccompCmpOp::Le, arg.value()),
        LinuxSeccompOperator::ScmpCmpEq => (SeccompCmpOp::Eq, arg.value()),
        LinuxSeccompOperator::ScmpCmpGe => (SeccompCmpOp::Ge, arg.value()),
        LinuxSeccompOperator::ScmpCmpGt => (SeccompCmpOp::Gt, arg.value()),
        LinuxSeccompOperator::ScmpCmpMaskedEq => {
            // (arg & value) == valueTwo; seccompiler would mask valueTwo too.
            let mask = arg.value();
            let datum = arg.value_two().unwrap_or(0);
            if datum & !mask != 0 {
                return Ok(None);
            }
            (SeccompCmpOp::MaskedEq(mask), datum)
        }
    };
    SeccompCondition::new(index, SeccompCmpArgLen::Qword, op, value)
        .map(Some)
        .map_err(|source| SeccompError::Rule {
            syscall: syscall.to_owned(),
            source,
        })
}

/// Builds one seccompiler x86_64 filter.
fn filter(
    rules: RuleMap,
    mismatch: SeccompAction,
    on_match: SeccompAction,
) -> Result<BpfProgram, SeccompError> {
    let rules = rules
        .into_iter()
        .map(|(number, matching)| (number, matching.into_rules()))
        .collect();
    SeccompFilter::new(rules, mismatch, on_match.clone(), TargetArch::x86_64)
        .and_then(BpfProgram::try_from)
        .map_err(|source| SeccompError::Filter {
            action: on_match,
            source,
        })
}

/// Prepends to a seccompiler program a hand-written check that kills the
/// process on a foreign architecture, refuses x32 syscalls (which carry the
/// x86_64 architecture) and, as asked, decides `seccomp` and refuses
/// syscalls numbered above `enosys_above`. Every path of the prefix returns
/// or falls through to the program, so no jump of the program changes.
fn with_prefix(
    seccomp: SeccompSyscall,
    enosys_above: Option<i64>,
    program: BpfProgram,
) -> Result<BpfProgram, SeccompError> {
    let stmt = |code, k| sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    };
    let jump = |code, k, jt, jf| sock_filter { code, jt, jf, k };
    let enosys = libc::SECCOMP_RET_ERRNO | ENOSYS;

    let mut prefix = vec![
        stmt(BPF_LD_W_ABS, SECCOMP_DATA_ARCH),
        jump(BPF_JMP_JEQ_K, AUDIT_ARCH_X86_64, 1, 0),
        stmt(BPF_RET_K, libc::SECCOMP_RET_KILL_PROCESS),
        stmt(BPF_LD_W_ABS, SECCOMP_DATA_NR),
    ];
    match seccomp {
        SeccompSyscall::Filter => {}
        SeccompSyscall::Allow => {
            prefix.push(jump(BPF_JMP_JEQ_K, SYS_SECCOMP, 0, 1));
            prefix.push(stmt(BPF_RET_K, libc::SECCOMP_RET_ALLOW));
        }
        SeccompSyscall::Only => {
            prefix.push(jump(BPF_JMP_JEQ_K, SYS_SECCOMP, 1, 0));
            prefix.push(stmt(BPF_RET_K, libc::SECCOMP_RET_ALLOW));
        }
    }
    if seccomp != SeccompSyscall::Only {
        prefix.push(jump(BPF_JMP_JGE_K, X32_SYSCALL_BIT, 0, 1));
        prefix.push(stmt(BPF_RET_K, enosys));
    }
    if let Some(highest) = enosys_above {
        // Syscall numbers are below 500; a larger one would never match.
        let highest = u32::try_from(highest).unwrap_or(u32::MAX);
        prefix.push(jump(BPF_JMP_JGT_K, highest, 0, 1));
        prefix.push(stmt(BPF_RET_K, enosys));
    }
    prefix.extend(program);
    if prefix.len() > BPF_MAX_LEN {
        return Err(SeccompError::ProgramTooLong { len: prefix.len() });
    }
    Ok(prefix)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::wait::{waitpid, WaitStatus};
    use nix::unistd::{fork, ForkResult};

    /// Runs `child` in a forked child and returns its exit code. `child` must
    /// not allocate, lock or panic: the child of a multi-threaded test
    /// process may only make raw syscalls.
    fn exit_code_of(child: impl FnOnce() -> i32) -> i32 {
        // SAFETY: the child only runs `child`, which by contract makes raw
        // syscalls without allocating or taking locks, then calls `_exit`.
        match unsafe { fork() }.expect("fork") {
            ForkResult::Child => {
                let code = child();
                // SAFETY: `_exit` ends the child without running destructors or
                // atexit handlers that would touch the parent's state.
                unsafe { libc::_exit(code) }
            }
            ForkResult::Parent { child } => match waitpid(child, None).expect("waitpid") {
                WaitStatus::Exited(_, code) => code,
                other => panic!("child did not exit: {other:?}"),
            },
        }
    }

    /// Makes syscall `nr` with up to three integer arguments and returns its
    /// result or errno.
    ///
    /// # Safety
    /// The syscall must not read or write memory through its arguments (they
    /// are integers or null pointers) nor change the process's memory map.
    unsafe fn raw_syscall(nr: i64, a0: u64, a1: u64, a2: u64) -> Result<i64, i32> {
        // SAFETY: the caller guarantees the syscall touches no memory of ours.
        let rc = unsafe { libc::syscall(nr, a0, a1, a2) };
        if rc == -1 {
            Err(io::Error::last_os_error().raw_os_error().unwrap_or(0))
        } else {
            Ok(rc)
        }
    }

    fn set_no_new_privs() -> bool {
        // SAFETY: PR_SET_NO_NEW_PRIVS only sets a flag of the calling thread.
        unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0 }
    }

    fn profile(json: &str) -> LinuxSeccomp {
        serde_json::from_str(json).expect("test profile parses")
    }

    /// The shape of containerd's default profile, abridged.
    const CONTAINERD_LIKE: &str = r#"{
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 1,
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [
            {
                "names": ["accept", "accept4", "access", "arch_prctl", "bind", "brk",
                    "capget", "capset", "chdir", "chmod", "chown", "clock_gettime",
                    "clone", "close", "connect", "dup", "dup2", "dup3", "epoll_create1",
                    "epoll_ctl", "epoll_pwait", "execve", "exit", "exit_group", "faccessat2",
                    "fchmodat2", "fcntl", "fstat", "futex", "getdents64", "getpid", "getppid",
                    "getuid", "ioctl", "lseek", "mkdir", "mkdirat", "mmap", "mprotect",
                    "munmap", "newfstatat", "openat", "pipe2", "prctl", "read", "readlink",
                    "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "seccomp",
                    "set_robust_list", "set_tid_address", "statx", "wait4", "write",
                    "some_future_syscall"],
                "action": "SCMP_ACT_ALLOW"
            },
            {
                "names": ["personality"],
                "action": "SCMP_ACT_ALLOW",
                "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_EQ"}]
            },
            {
                "names": ["personality"],
                "action": "SCMP_ACT_ALLOW",
                "args": [{"index": 0, "value": 4294967295, "op": "SCMP_CMP_EQ"}]
            },
            {
                "names": ["clone"],
                "action": "SCMP_ACT_ALLOW",
                "args": [{"index": 0, "value": 2114060288, "valueTwo": 0,
                    "op": "SCMP_CMP_MASKED_EQ"}]
            },
            {
                "names": ["clone3"],
                "action": "SCMP_ACT_ERRNO",
                "errnoRet": 38
            }
        ]
    }"#;

    #[test]
    fn syscall_numbers_match_libc() {
        assert_eq!(syscall_number("seccomp"), Some(i64::from(SYS_SECCOMP)));
        assert_eq!(i64::from(SYS_SECCOMP), libc::SYS_seccomp);
        assert_eq!(syscall_number("personality"), Some(libc::SYS_personality));
    }

    #[test]
    fn compiles_containerd_like_profile() {
        let programs = compile(&profile(CONTAINERD_LIKE)).expect("compiles");
        // clone3's ERRNO(38) filter and the default filter; seccomp is allowed,
        // so no program decides it separately.
        assert_eq!(programs.len(), 2);
        assert!(programs
            .iter()
            .all(|p| !p.is_empty() && p.len() <= BPF_MAX_LEN));
    }

    #[test]
    fn profile_not_allowing_seccomp_gets_a_last_program_for_it() {
        let json = CONTAINERD_LIKE.replace("\"seccomp\",", "");
        assert_eq!(compile(&profile(&json)).expect("compiles").len(), 3);
    }

    #[test]
    fn skips_unknown_syscalls() {
        let spec = profile(
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
                {"names": ["no_such_syscall"], "action": "SCMP_ACT_ERRNO"}]}"#,
        );
        assert!(compile(&spec).expect("compiles").is_empty());

        let spec = profile(
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
                {"names": ["no_such_syscall", "getppid"], "action": "SCMP_ACT_ERRNO"}]}"#,
        );
        assert_eq!(compile(&spec).expect("compiles").len(), 1);
    }

    #[test]
    fn allow_everything_needs_no_program() {
        let spec = profile(
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
                {"names": ["getppid"], "action": "SCMP_ACT_ALLOW"}]}"#,
        );
        assert!(compile(&spec).expect("compiles").is_empty());
    }

    #[test]
    fn notify_is_unsupported() {
        let spec = profile(
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
                {"names": ["getppid"], "action": "SCMP_ACT_NOTIFY"}]}"#,
        );
        let err = compile(&spec).expect_err("NOTIFY must be refused");
        assert!(matches!(
            err,
            SeccompError::UnsupportedAction(LinuxSeccompAction::ScmpActNotify)
        ));
        assert!(err.to_string().contains("SCMP_ACT_NOTIFY"), "{err}");
    }

    #[test]
    fn rejects_argument_index_out_of_range() {
        let spec = profile(
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
                {"names": ["getppid"], "action": "SCMP_ACT_ERRNO",
                 "args": [{"index": 6, "value": 0, "op": "SCMP_CMP_EQ"}]}]}"#,
        );
        assert!(matches!(
            compile(&spec),
            Err(SeccompError::InvalidArgIndex { index: 6, .. })
        ));
    }

    #[test]
    fn rejects_seccomp_syscall_with_two_actions() {
        let spec = profile(
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
                {"names": ["seccomp"], "action": "SCMP_ACT_ERRNO",
                 "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}]},
                {"names": ["seccomp"], "action": "SCMP_ACT_KILL_PROCESS",
                 "args": [{"index": 0, "value": 2, "op": "SCMP_CMP_EQ"}]}]}"#,
        );
        assert!(matches!(
            compile(&spec),
            Err(SeccompError::SeccompSyscallActions)
        ));
    }

    #[test]
    fn install_rejects_empty_program() {
        assert!(matches!(
            install(&[Vec::new()]),
            Err(SeccompError::EmptyProgram { index: 0 })
        ));
    }

    #[test]
    fn default_allow_profile_denies_getppid_only() {
        let programs = compile(&profile(
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
                {"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1},
                {"names": ["mkdirat", "mkdir"], "action": "SCMP_ACT_ALLOW"}]}"#,
        ))
        .expect("compiles");
        assert_eq!(programs.len(), 1);

        let code = exit_code_of(|| {
            if !set_no_new_privs() {
                return 10;
            }
            if install(&programs).is_err() {
                return 11;
            }
            // SAFETY: getppid and getpid take no arguments.
            let (ppid, pid) = unsafe {
                (
                    raw_syscall(libc::SYS_getppid, 0, 0, 0),
                    raw_syscall(libc::SYS_getpid, 0, 0, 0),
                )
            };
            if ppid != Err(libc::EPERM) {
                return 12;
            }
            if !matches!(pid, Ok(pid) if pid > 0) {
                return 13;
            }
            0
        });
        assert_eq!(code, 0, "see the child's exit codes above");
    }

    #[test]
    fn default_errno_profile_behaves_like_oci() {
        // Without seccomp, getppid and the syscalls numbered above futex_waitv.
        let json = [
            "\"seccomp\",",
            "\"getppid\",",
            "\"fchmodat2\",",
            "\"faccessat2\",",
        ]
        .iter()
        .fold(CONTAINERD_LIKE.to_owned(), |json, name| {
            json.replace(name, "")
        });
        let programs = compile(&profile(&json)).expect("compiles");

        let code = exit_code_of(|| {
            if !set_no_new_privs() {
                return 10;
            }
            if install(&programs).is_err() {
                return 11;
            }
            // SAFETY: every syscall below gets only integers or null pointers
            // (clone3 and futex_waitv with a null pointer and zero size fail
            // without touching memory even when allowed) and none of them
            // changes the memory map.
            unsafe {
                if !matches!(raw_syscall(libc::SYS_getpid, 0, 0, 0), Ok(pid) if pid > 0) {
                    return 12;
                }
                // Not named, numbered below the highest named: the default.
                if raw_syscall(libc::SYS_getppid, 0, 0, 0) != Err(libc::EPERM) {
                    return 13;
                }
                // The rule's errnoRet.
                if raw_syscall(libc::SYS_clone3, 0, 0, 0) != Err(libc::ENOSYS) {
                    return 14;
                }
                // Not named, numbered above every named syscall: ENOSYS.
                if raw_syscall(libc::SYS_futex_waitv, 0, 0, 0) != Err(libc::ENOSYS) {
                    return 15;
                }
                // x32 getpid.
                let x32_getpid = libc::SYS_getpid | i64::from(X32_SYSCALL_BIT);
                if raw_syscall(x32_getpid, 0, 0, 0) != Err(libc::ENOSYS) {
                    return 16;
                }
                // Conditional rules: personality(0xffffffff) only queries.
                if raw_syscall(libc::SYS_personality, 0xffff_ffff, 0, 0).is_err() {
                    return 17;
                }
                if raw_syscall(libc::SYS_personality, 0x0040_0000, 0, 0) != Err(libc::EPERM) {
                    return 18;
                }
                // seccomp itself is not allowed by this profile.
                if raw_syscall(libc::SYS_seccomp, 0xff, 0, 0) != Err(libc::EPERM) {
                    return 19;
                }
            }
            0
        });
        assert_eq!(code, 0, "see the child's exit codes above");
    }

    #[test]
    fn sandbox_filter_denies_the_list_and_allows_the_rest() {
        let program = sandbox_filter().expect("compiles");
        // The x32 check, which a kernel without x32 support cannot exercise.
        assert!(program
            .iter()
            .any(|insn| insn.code == BPF_JMP_JGE_K && insn.k == X32_SYSCALL_BIT));

        let code = exit_code_of(|| {
            if !set_no_new_privs() {
                return 10;
            }
            if install(std::slice::from_ref(&program)).is_err() {
                return 11;
            }
            // SAFETY: every syscall below gets only integers or null pointers
            // and none of them changes the memory map; keyctl(KEYCTL_GET_KEYRING_ID
            // = 0, ...) and ptrace(PTRACE_TRACEME = 0) are refused before running.
            unsafe {
                if !matches!(raw_syscall(libc::SYS_getpid, 0, 0, 0), Ok(pid) if pid > 0) {
                    return 12;
                }
                if raw_syscall(libc::SYS_keyctl, 0, 0, 0) != Err(libc::EPERM) {
                    return 13;
                }
                if raw_syscall(libc::SYS_ptrace, 0, 0, 0) != Err(libc::EPERM) {
                    return 14;
                }
                if raw_syscall(libc::SYS_personality, 0xffff_ffff, 0, 0).is_err() {
                    return 15;
                }
                if raw_syscall(libc::SYS_personality, 0x0040_0000, 0, 0) != Err(libc::EPERM) {
                    return 16;
                }
                let x32_getpid = libc::SYS_getpid | i64::from(X32_SYSCALL_BIT);
                if raw_syscall(x32_getpid, 0, 0, 0) != Err(libc::ENOSYS) {
                    return 17;
                }
            }
            0
        });
        assert_eq!(code, 0, "see the child's exit codes above");
    }
}
