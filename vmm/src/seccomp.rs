//! The VMM's confinement: a seccomp-BPF filter per thread kind, built with
//! rust-vmm's seccompiler, as Firecracker confines its VMM.
//!
//! # The model
//! Everything that needs a path or a new resource (the kernel, the images,
//! /dev/kvm, the VM, guest memory, the vCPUs, the devices' sockets and
//! eventfds) is opened during setup. Then, before the boot vCPU's first
//! `KVM_RUN`, each thread installs the filter of its kind (a filter is per
//! thread: seccomp without TSYNC), allowing only the system calls that kind
//! makes from then on, with the arguments restricted where it matters:
//! `ioctl` to the KVM vCPU requests the run loop uses (and `FIONBIO`),
//! `socket` to `AF_UNIX`, `fcntl` to the descriptor-flag commands,
//! `mmap`/`mprotect` to mappings that are not executable, and the main
//! thread's `openat` to the two ways it opens a file at the end (reading
//! `/proc/self/status`, creating `vmm.json.tmp`). Installing a filter sets
//! `PR_SET_NO_NEW_PRIVS` (seccompiler does, as the kernel requires for an
//! unprivileged filter).
//!
//! - **vCPU** threads: `KVM_RUN` and the exits. An exit may reach any
//!   device (a queue notification KVM's ioeventfd does not match, a device
//!   activated or reset by a register write), so a vCPU thread may do the
//!   devices' I/O too: the disks' reads, writes and syncs, the vsock
//!   device's Unix sockets, eventfds and timer. A benchmark window's mark
//!   reads every vCPU's statistics fd (`pread64`, as the disks read).
//! - the **device** thread ([`crate::event_loop`]): the same device I/O,
//!   and `epoll_wait`.
//! - the **main** thread: waits for the end, kicks the vCPUs (`tgkill`),
//!   writes the account (`openat`, `write`, `rename`), measures memory
//!   (`mincore`, `/proc/self/status`), and drops the devices, whose disks
//!   flush imago's caches on the way out (the disk I/O).
//!
//! Every kind may allocate (`brk`, `mmap`, `mremap`, `munmap`, `madvise`),
//! wait (`futex`), read clocks (`clock_gettime`: the vDSO, or its system
//! call fallback), take signals (`rt_sigreturn`, `rt_sigprocmask`,
//! `sigaltstack`), write (a panic's message on stderr), close descriptors,
//! and end (`exit`, `exit_group`): what Rust's std does on a panic and when
//! a thread exits (it unmaps its signal stack and glibc drops its stack
//! with `madvise`). [`allowed`] lists it all, per kind.
//!
//! # A violation
//! The filters' default action is `SECCOMP_RET_TRAP`: the kernel does not
//! run the call and sends the thread SIGSYS, whose handler ([`on_sigsys`])
//! writes one line, `seccomp: syscall 59 (execve) not allowed in the vCPU
//! thread`, to stderr with a raw write(2) and ends the process with
//! [`EXIT_STATUS`] (128 + SIGSYS, as a shell reports a process SIGSYS
//! killed), without an account: a VMM that did something it never does is
//! not trusted to write one.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::{Condvar, Mutex, PoisonError};

use kvm_bindings::{kvm_regs, kvm_sregs, kvm_vcpu_events};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};
use syscalls::Sysno;
use vmm_sys_util::{ioctl_io_nr, ioctl_ior_nr, ioctl_iow_nr};

/// The exit status of a VMM a filter stopped: 128 + SIGSYS.
pub const EXIT_STATUS: u8 = 128 + libc::SIGSYS as u8;

/// What the SIGSYS report starts with: how the orchestrator finds it.
pub const REPORT_PREFIX: &str = "seccomp: syscall ";

/// The kinds of thread the VMM runs, each with its own filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ThreadKind {
    /// The thread that sets the VM up, waits for its end and writes its account.
    Main,
    /// A vCPU's run loop.
    Vcpu,
    /// The device thread ([`crate::event_loop`]).
    Devices,
}

impl ThreadKind {
    pub const ALL: [ThreadKind; 3] = [ThreadKind::Vcpu, ThreadKind::Devices, ThreadKind::Main];

    /// As the SIGSYS report names it: "in the vCPU thread".
    pub fn name(self) -> &'static str {
        match self {
            ThreadKind::Main => "main",
            ThreadKind::Vcpu => "vCPU",
            ThreadKind::Devices => "device",
        }
    }

    fn code(self) -> u8 {
        match self {
            ThreadKind::Main => 1,
            ThreadKind::Vcpu => 2,
            ThreadKind::Devices => 3,
        }
    }

    fn from_code(code: u8) -> Option<ThreadKind> {
        ThreadKind::ALL.into_iter().find(|k| k.code() == code)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Cannot build the seccomp filter of the {kind} thread: {source}")]
    Build {
        kind: &'static str,
        #[source]
        source: seccompiler::BackendError,
    },
    #[error("Cannot install the seccomp filter of the {kind} thread: {source}")]
    Install {
        kind: &'static str,
        #[source]
        source: seccompiler::Error,
    },
    #[error("Cannot install the SIGSYS handler: {0}")]
    Handler(std::io::Error),
}

const KVMIO: u32 = 0xae;
ioctl_io_nr!(KVM_RUN, KVMIO, 0x80);
ioctl_ior_nr!(KVM_GET_REGS, KVMIO, 0x81, kvm_regs);
ioctl_iow_nr!(KVM_SET_REGS, KVMIO, 0x82, kvm_regs);
ioctl_ior_nr!(KVM_GET_SREGS, KVMIO, 0x83, kvm_sregs);
ioctl_ior_nr!(KVM_GET_VCPU_EVENTS, KVMIO, 0x9f, kvm_vcpu_events);
ioctl_iow_nr!(KVM_SET_VCPU_EVENTS, KVMIO, 0xa0, kvm_vcpu_events);
ioctl_io_nr!(KVM_GET_STATS_FD, KVMIO, 0xce);

/// One allowed system call: unconditionally (no conditions), or when its
/// arguments match one of `when`.
#[derive(Debug, Clone)]
pub struct Allowed {
    pub sysno: Sysno,
    /// Each a way the call may be made, said for a reader (`ioctl` `KVM_RUN`).
    pub when: Vec<(String, SeccompRule)>,
}

fn arg_eq(index: u8, value: u64) -> SeccompCondition {
    SeccompCondition::new(index, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, value)
        .expect("argument index below 6")
}

fn arg_masked_zero(index: u8, mask: u64) -> SeccompCondition {
    SeccompCondition::new(
        index,
        SeccompCmpArgLen::Dword,
        SeccompCmpOp::MaskedEq(mask),
        0,
    )
    .expect("argument index below 6")
}

fn rule(conditions: Vec<SeccompCondition>) -> SeccompRule {
    SeccompRule::new(conditions).expect("a rule has a condition")
}

/// The call, whatever its arguments.
fn any(sysno: Sysno) -> Allowed {
    Allowed {
        sysno,
        when: Vec::new(),
    }
}

/// The call when argument `index` is one of `values` (named for a reader).
fn one_of(sysno: Sysno, index: u8, values: &[(&str, u64)]) -> Allowed {
    Allowed {
        sysno,
        when: values
            .iter()
            .map(|&(name, value)| (name.to_string(), rule(vec![arg_eq(index, value)])))
            .collect(),
    }
}

/// `mmap` or `mprotect` of memory that is not executable: the VMM never
/// makes code, so an exploit cannot either.
fn not_executable(sysno: Sysno) -> Allowed {
    Allowed {
        sysno,
        when: vec![(
            "not PROT_EXEC".to_string(),
            rule(vec![arg_masked_zero(2, libc::PROT_EXEC as u64)]),
        )],
    }
}

/// What every thread does: allocate, wait, read clocks, take signals,
/// panic, exit.
fn common() -> Vec<Allowed> {
    let mut list = vec![
        not_executable(Sysno::mmap),
        not_executable(Sysno::mprotect),
        // F_GETFD: Rust's std checks a descriptor before closing it (debug builds).
        one_of(Sysno::fcntl, 1, &[("F_GETFD", libc::F_GETFD as u64)]),
    ];
    list.extend(
        [
            Sysno::brk,
            Sysno::mremap,
            Sysno::munmap,
            Sysno::madvise,
            Sysno::futex,
            Sysno::sched_yield,
            Sysno::clock_gettime,
            Sysno::rt_sigreturn,
            Sysno::rt_sigprocmask,
            Sysno::restart_syscall,
            Sysno::sigaltstack,
            Sysno::getrandom,
            Sysno::gettid,
            Sysno::getpid,
            Sysno::write,
            Sysno::close,
            Sysno::exit,
            Sysno::exit_group,
        ]
        .map(any),
    );
    list
}

/// The disks' I/O through imago: reads, writes, syncs, growing a qcow2
/// file and zeroing ranges of it.
fn disk_io() -> Vec<Allowed> {
    [
        Sysno::pread64,
        Sysno::pwrite64,
        Sysno::preadv,
        Sysno::pwritev,
        Sysno::fsync,
        Sysno::fallocate,
        Sysno::ftruncate,
    ]
    .map(any)
    .to_vec()
}

/// The devices' work beyond the disks: eventfds (queue notifications,
/// interrupts), the vsock device's Unix sockets, its epoll set and timer.
fn device_io() -> Vec<Allowed> {
    let mut list = vec![
        one_of(Sysno::socket, 0, &[("AF_UNIX", libc::AF_UNIX as u64)]),
        one_of(Sysno::ioctl, 1, &[("FIONBIO", libc::FIONBIO)]),
        one_of(
            Sysno::fcntl,
            1,
            &[
                ("F_GETFL", libc::F_GETFL as u64),
                ("F_SETFL", libc::F_SETFL as u64),
            ],
        ),
    ];
    list.extend(
        [
            Sysno::read,
            Sysno::connect,
            Sysno::accept4,
            Sysno::recvfrom,
            Sysno::sendto,
            Sysno::shutdown,
            Sysno::epoll_ctl,
            Sysno::timerfd_settime,
        ]
        .map(any),
    );
    list.extend(disk_io());
    list
}

/// The KVM vCPU requests of the run loop: run, the registers and events
/// the failure report and the emulated-KVM fallback read and set, and the
/// statistics read at the end.
fn vcpu_ioctls() -> Allowed {
    one_of(
        Sysno::ioctl,
        1,
        &[
            ("KVM_RUN", KVM_RUN()),
            ("KVM_GET_REGS", KVM_GET_REGS()),
            ("KVM_SET_REGS", KVM_SET_REGS()),
            ("KVM_GET_SREGS", KVM_GET_SREGS()),
            ("KVM_GET_VCPU_EVENTS", KVM_GET_VCPU_EVENTS()),
            ("KVM_SET_VCPU_EVENTS", KVM_SET_VCPU_EVENTS()),
            ("KVM_GET_STATS_FD", KVM_GET_STATS_FD()),
        ],
    )
}

/// The main thread's own calls after setup.
fn main_only() -> Vec<Allowed> {
    let mut list = vec![one_of(
        Sysno::openat,
        2,
        &[
            (
                "O_RDONLY|O_CLOEXEC (/proc/self/status)",
                (libc::O_RDONLY | libc::O_CLOEXEC) as u64,
            ),
            (
                "O_WRONLY|O_CREAT|O_TRUNC|O_CLOEXEC (vmm.json.tmp)",
                (libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC) as u64,
            ),
        ],
    )];
    list.extend(
        [
            Sysno::read,
            Sysno::statx,
            Sysno::rename,
            Sysno::mincore,
            Sysno::tgkill,
            Sysno::clock_nanosleep,
        ]
        .map(any),
    );
    list.extend(disk_io());
    list
}

/// Every system call a thread of `kind` may make once its filter is on,
/// with the argument values it may make it with (none: any).
pub fn allowed(kind: ThreadKind) -> Vec<Allowed> {
    let mut list = common();
    match kind {
        ThreadKind::Vcpu => {
            list.push(vcpu_ioctls());
            list.extend(device_io());
        }
        ThreadKind::Devices => {
            list.extend([any(Sysno::epoll_wait), any(Sysno::epoll_pwait)]);
            list.extend(device_io());
        }
        ThreadKind::Main => list.extend(main_only()),
    }
    merge(list)
}

/// One entry per system call: a call any part allows unconditionally is
/// allowed unconditionally, else under any of the parts' conditions.
fn merge(list: Vec<Allowed>) -> Vec<Allowed> {
    let mut by_number: BTreeMap<i32, Allowed> = BTreeMap::new();
    for entry in list {
        match by_number.get_mut(&entry.sysno.id()) {
            None => {
                by_number.insert(entry.sysno.id(), entry);
            }
            Some(have) if have.when.is_empty() || entry.when.is_empty() => have.when.clear(),
            Some(have) => {
                for (name, rule) in entry.when {
                    if !have.when.iter().any(|(n, _)| *n == name) {
                        have.when.push((name, rule));
                    }
                }
            }
        }
    }
    by_number.into_values().collect()
}

/// Each thread kind's filter, compiled to BPF once, before any thread starts.
pub struct Filters {
    programs: [(ThreadKind, BpfProgram); 3],
}

impl Filters {
    pub fn compile() -> Result<Filters, Error> {
        let compile = |kind: ThreadKind| -> Result<(ThreadKind, BpfProgram), Error> {
            let build = |source| Error::Build {
                kind: kind.name(),
                source,
            };
            let rules = allowed(kind)
                .into_iter()
                .map(|a| {
                    let rules = a.when.into_iter().map(|(_, rule)| rule).collect();
                    (a.sysno.id() as i64, rules)
                })
                .collect();
            let filter = SeccompFilter::new(
                rules,
                SeccompAction::Trap,
                SeccompAction::Allow,
                TargetArch::x86_64,
            )
            .map_err(build)?;
            Ok((kind, filter.try_into().map_err(build)?))
        };
        Ok(Filters {
            programs: [
                compile(ThreadKind::Vcpu)?,
                compile(ThreadKind::Devices)?,
                compile(ThreadKind::Main)?,
            ],
        })
    }

    fn program(&self, kind: ThreadKind) -> &BpfProgram {
        &self
            .programs
            .iter()
            .find(|(k, _)| *k == kind)
            .expect("a program per kind")
            .1
    }
}

thread_local! {
    /// This thread's kind, for the SIGSYS report: a plain byte, so that the
    /// handler reads it without allocating or locking.
    static KIND: Cell<u8> = const { Cell::new(0) };
}

/// Marks this thread as `kind` and, with `filters`, installs its filter
/// (and `PR_SET_NO_NEW_PRIVS`). Without filters (`--no-seccomp`) only the
/// mark is set.
pub fn enter(kind: ThreadKind, filters: Option<&Filters>) -> Result<(), Error> {
    KIND.with(|k| k.set(kind.code()));
    let Some(filters) = filters else {
        return Ok(());
    };
    seccompiler::apply_filter(filters.program(kind)).map_err(|source| Error::Install {
        kind: kind.name(),
        source,
    })
}

/// Where the VMM's threads start together: each installs its filter and
/// reports, and none goes on (no `KVM_RUN`, no device work) until every
/// thread, the main one last, has its filter on. A thread that cannot
/// install its filter keeps them all from going on, and the VM fails.
pub struct Gate {
    filters: Option<Filters>,
    state: Mutex<GateState>,
    changed: Condvar,
}

#[derive(Default)]
struct GateState {
    /// Threads that have installed their filter (or failed to).
    entered: usize,
    /// The first thread's failure to install its filter.
    error: Option<String>,
    /// Set once the main thread has decided: go on, or end.
    go: Option<bool>,
}

impl Gate {
    /// A gate for threads confined by `filters` (none: `--no-seccomp`).
    pub fn new(filters: Option<Filters>) -> Gate {
        Gate {
            filters,
            state: Mutex::new(GateState::default()),
            changed: Condvar::new(),
        }
    }

    /// A gate already open, for threads run without the rest of the VMM (tests).
    pub fn open_unfiltered() -> Gate {
        let gate = Gate::new(None);
        gate.lock().go = Some(true);
        gate
    }

    /// Whether the threads run confined.
    pub fn filtered(&self) -> bool {
        self.filters.is_some()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Called first by a thread of `kind`: installs its filter, reports,
    /// and waits for the main thread's word. False: the thread must end
    /// without doing its work.
    pub fn enter(&self, kind: ThreadKind) -> bool {
        let installed = enter(kind, self.filters.as_ref());
        let mut state = self.lock();
        state.entered += 1;
        if let Err(e) = installed {
            state.error.get_or_insert(e.to_string());
        }
        self.changed.notify_all();
        loop {
            if let Some(go) = state.go {
                return go;
            }
            state = self
                .changed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Called by the main thread once it has started `threads` threads
    /// (`go`: all it meant to): waits for each to install its filter,
    /// installs its own, and lets them go on, or end. The error says which
    /// thread's filter could not be installed.
    pub fn open(&self, threads: usize, go: bool) -> Result<(), String> {
        let mut state = self.lock();
        while state.entered < threads {
            state = self
                .changed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        if let Err(e) = enter(ThreadKind::Main, self.filters.as_ref()) {
            state.error.get_or_insert(e.to_string());
        }
        let result = match state.error.clone() {
            Some(e) => Err(e),
            None => Ok(()),
        };
        state.go = Some(go && result.is_ok());
        self.changed.notify_all();
        result
    }
}

/// The test aid `--forbidden-syscall-in`: makes a system call no filter
/// allows (`execve` of nothing, which fails with EFAULT when no filter
/// stops it), so a test sees the thread's filter catch it.
pub fn make_forbidden_call() {
    // SAFETY: execve with null pointers touches no memory of ours: without
    // a filter the kernel fails it with EFAULT; with one, it never runs.
    let _ = unsafe {
        libc::syscall(
            libc::SYS_execve,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<*const libc::c_char>(),
            std::ptr::null::<*const libc::c_char>(),
        )
    };
}

/// The line the SIGSYS handler writes: "seccomp: syscall 59 (execve) not
/// allowed in the vCPU thread". `buf` holds it; returns its length. No
/// allocation, no lock: it runs in a signal handler.
fn report(syscall: i64, kind: Option<ThreadKind>, buf: &mut [u8; 160]) -> usize {
    let mut len = 0;
    let mut put = |bytes: &[u8]| {
        let n = bytes.len().min(buf.len() - len);
        buf[len..len + n].copy_from_slice(&bytes[..n]);
        len += n;
    };
    put(REPORT_PREFIX.as_bytes());
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut n = syscall.unsigned_abs();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if syscall < 0 {
        put(b"-");
    }
    put(&digits[at..]);
    let name = usize::try_from(syscall)
        .ok()
        .and_then(Sysno::new)
        .map_or("unknown", |s| s.name());
    put(b" (");
    put(name.as_bytes());
    put(b") not allowed in the ");
    put(kind.map_or("unnamed", ThreadKind::name).as_bytes());
    put(b" thread\n");
    len
}

/// `si_syscall` of a SIGSYS siginfo: after si_signo, si_errno, si_code
/// (three ints, padded to 16 bytes) and `_call_addr` (a pointer), at byte 24.
const SI_SYSCALL_OFFSET: usize = 24;
/// `si_code` of a SIGSYS that seccomp sent.
const SYS_SECCOMP: i32 = 1;

/// The SIGSYS handler: the report line on stderr, then the end of the
/// process with [`EXIT_STATUS`]. Only async-signal-safe calls: a
/// thread-local byte, a stack buffer, write(2), _exit(2).
extern "C" fn on_sigsys(_: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: the kernel hands a valid siginfo to an SA_SIGINFO handler.
    let code = unsafe { (*info).si_code };
    let syscall = if code == SYS_SECCOMP {
        // SAFETY: for SYS_SECCOMP the kernel fills `_sigsys`, whose
        // `_syscall` int sits at SI_SYSCALL_OFFSET inside the 128-byte siginfo.
        i64::from(unsafe {
            info.cast::<u8>()
                .add(SI_SYSCALL_OFFSET)
                .cast::<i32>()
                .read()
        })
    } else {
        -1
    };
    let kind = KIND.with(|k| ThreadKind::from_code(k.get()));
    let mut buf = [0u8; 160];
    let len = report(syscall, kind, &mut buf);
    // SAFETY: write(2) of our own stack buffer to stderr, then _exit(2):
    // both async-signal-safe and allowed by every filter.
    unsafe {
        libc::write(libc::STDERR_FILENO, buf.as_ptr().cast(), len);
        libc::_exit(i32::from(EXIT_STATUS));
    }
}

/// Installs the SIGSYS handler for the whole process (before any thread
/// installs a filter); every other signal is blocked while it runs.
pub fn install_sigsys_handler() -> Result<(), Error> {
    // SAFETY: a zeroed sigaction is valid; the handler is an
    // `extern "C"` fn of the SA_SIGINFO signature that only does
    // async-signal-safe work; sigfillset and sigaction write only `action`.
    let rc = unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_sigsys as *const () as usize;
        action.sa_flags = libc::SA_SIGINFO;
        libc::sigfillset(&mut action.sa_mask);
        libc::sigaction(libc::SIGSYS, &action, std::ptr::null_mut())
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(Error::Handler(std::io::Error::last_os_error()))
    }
}

/// A panic hook for confined threads: the message and where, without the
/// backtrace std's own hook prints under RUST_BACKTRACE (it opens the
/// executable to find its symbols, which no filter allows). A panic the
/// VMM catches (imago's, on a corrupt image) then fails that request only.
pub fn set_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        use std::io::Write;
        let thread = std::thread::current();
        // Straight to stderr (not eprintln!, which a test harness captures).
        let _ = writeln!(
            std::io::stderr(),
            "thread '{}' {info}",
            thread.name().unwrap_or("?")
        );
    }));
}

/// Descriptors the VMM may hold at once: its own (KVM, eventfds, disks,
/// sockets) and at most 1024 vsock connections fit well under it; a VMM
/// led astray cannot take the host's.
pub const MAX_OPEN_FILES: u64 = 4096;

/// Resource limits for the VMM, set before it opens anything: no core dump
/// (a crashing VMM would write its guest's memory to the host's disk) and
/// at most [`MAX_OPEN_FILES`] descriptors. Limits are only ever lowered.
pub fn limit_resources() -> std::io::Result<()> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    for (resource, wanted) in [
        (Resource::RLIMIT_CORE, 0),
        (Resource::RLIMIT_NOFILE, MAX_OPEN_FILES),
    ] {
        let (soft, hard) = getrlimit(resource)?;
        setrlimit(resource, soft.min(wanted), hard.min(wanted))?;
    }
    Ok(())
}

/// Closes every descriptor but stdin, stdout and stderr: whatever the VMM
/// inherited is not its to use. Called first, before it opens its own.
pub fn close_inherited_fds() {
    // SAFETY: close_range(2) on descriptors this process has not opened
    // (nothing of ours is open yet); it touches no memory.
    let rc = unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
    if rc == 0 {
        return;
    }
    // Before Linux 5.9: every descriptor /proc lists, as numbers first
    // (the directory's own descriptor closes with the iterator).
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<i32> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|&fd| fd > 2)
        .collect();
    for fd in fds {
        // SAFETY: closing a descriptor number; the one read_dir held is
        // closed already and nothing else of ours is open.
        unsafe { libc::close(fd) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The README's table of what each filter allows: a row per system
    /// call, a column per thread kind, a cell `yes`, the argument values
    /// allowed, or `—`.
    fn readme_table() -> String {
        let kinds = [ThreadKind::Vcpu, ThreadKind::Devices, ThreadKind::Main];
        let lists: Vec<Vec<Allowed>> = kinds.iter().map(|&k| allowed(k)).collect();
        let mut calls: Vec<Sysno> = lists.iter().flatten().map(|a| a.sysno).collect();
        calls.sort_by_key(|s| s.name());
        calls.dedup();
        let mut table = String::from(
            "| system call | vCPU threads | device thread | main thread |\n| --- | --- | --- | --- |\n",
        );
        for call in calls {
            let cells: Vec<String> = lists
                .iter()
                .map(|list| match list.iter().find(|a| a.sysno == call) {
                    None => "—".to_string(),
                    Some(a) if a.when.is_empty() => "yes".to_string(),
                    Some(a) => a
                        .when
                        .iter()
                        // A pipe in a table cell is written `\|`, code span or not.
                        .map(|(name, _)| format!("`{}`", name.replace('|', "\\|")))
                        .collect::<Vec<_>>()
                        .join(", "),
                })
                .collect();
            table.push_str(&format!("| `{}` | {} |\n", call.name(), cells.join(" | ")));
        }
        table
    }

    #[test]
    fn the_readme_lists_what_each_filter_allows() {
        let readme =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
        let table = readme_table();
        assert!(
            readme.contains(&table),
            "README.md's table of allowed system calls is not this one:\n{table}"
        );
    }

    /// A benchmark window's mark reads every vCPU's KVM statistics from the
    /// marking vCPU's thread: a `pread64` on each stats fd, opened during
    /// setup ([`crate::windows`]). Any vCPU thread may mark.
    #[test]
    fn a_vcpu_thread_may_read_every_vcpus_statistics() {
        let pread = allowed(ThreadKind::Vcpu)
            .into_iter()
            .find(|a| a.sysno == Sysno::pread64)
            .expect("pread64 is allowed to vCPU threads");
        assert!(pread.when.is_empty(), "on any descriptor: {:?}", pread.when);
    }

    #[test]
    fn ioctl_numbers_are_kvms() {
        // As strace and linux/kvm.h give them on x86-64.
        assert_eq!(KVM_RUN(), 0xae80);
        assert_eq!(KVM_GET_REGS(), 0x8090_ae81);
        assert_eq!(KVM_SET_REGS(), 0x4090_ae82);
        assert_eq!(KVM_GET_SREGS(), 0x8138_ae83);
        assert_eq!(KVM_GET_VCPU_EVENTS(), 0x8040_ae9f);
        assert_eq!(KVM_SET_VCPU_EVENTS(), 0x4040_aea0);
        assert_eq!(KVM_GET_STATS_FD(), 0xaece);
    }

    #[test]
    fn the_report_names_the_call_and_the_thread() {
        let mut buf = [0u8; 160];
        let line = |syscall, kind, buf: &mut [u8; 160]| {
            let len = report(syscall, kind, buf);
            String::from_utf8(buf[..len].to_vec()).unwrap()
        };
        assert_eq!(
            line(59, Some(ThreadKind::Vcpu), &mut buf),
            "seccomp: syscall 59 (execve) not allowed in the vCPU thread\n"
        );
        assert_eq!(
            line(0, Some(ThreadKind::Main), &mut buf),
            "seccomp: syscall 0 (read) not allowed in the main thread\n"
        );
        assert_eq!(
            line(99_999, None, &mut buf),
            "seccomp: syscall 99999 (unknown) not allowed in the unnamed thread\n"
        );
        assert_eq!(
            line(-1, Some(ThreadKind::Devices), &mut buf),
            "seccomp: syscall -1 (unknown) not allowed in the device thread\n"
        );
    }

    #[test]
    fn each_kind_allows_what_it_needs_and_nothing_that_escapes() {
        let names =
            |kind| -> Vec<&'static str> { allowed(kind).iter().map(|a| a.sysno.name()).collect() };
        for kind in ThreadKind::ALL {
            let have = names(kind);
            for needed in [
                "futex",
                "mmap",
                "munmap",
                "exit",
                "exit_group",
                "sigaltstack",
            ] {
                assert!(have.contains(&needed), "{kind:?} lacks {needed}");
            }
            for never in [
                "execve", "execveat", "fork", "vfork", "clone", "clone3", "ptrace", "open",
                "mount", "bind", "listen", "kill", "setuid", "prctl", "seccomp",
            ] {
                assert!(!have.contains(&never), "{kind:?} allows {never}");
            }
            let sorted = allowed(kind)
                .windows(2)
                .all(|w| w[0].sysno.id() < w[1].sysno.id());
            assert!(sorted, "one entry per call");
        }
        assert!(names(ThreadKind::Vcpu).contains(&"ioctl"));
        assert!(!names(ThreadKind::Main).contains(&"ioctl"));
        assert!(!names(ThreadKind::Vcpu).contains(&"openat"));
        assert!(!names(ThreadKind::Devices).contains(&"openat"));
        assert!(names(ThreadKind::Devices).contains(&"epoll_wait"));
        // The vCPU's ioctl is restricted to KVM's requests and FIONBIO.
        let vcpu = allowed(ThreadKind::Vcpu);
        let ioctl = vcpu.iter().find(|a| a.sysno == Sysno::ioctl).unwrap();
        let requests: Vec<&str> = ioctl.when.iter().map(|(n, _)| n.as_str()).collect();
        assert!(requests.contains(&"KVM_RUN") && requests.contains(&"FIONBIO"));
        assert_eq!(requests.len(), 8, "{requests:?}");
        assert!(Filters::compile().is_ok());
    }

    /// In a child process (a filter cannot be taken off): installs `kind`'s
    /// filter on one thread, then makes `call`; returns how it ended and
    /// what it wrote to stderr.
    fn in_child(kind: ThreadKind, call: impl FnOnce()) -> (i32, String) {
        let filters = Filters::compile().unwrap();
        install_sigsys_handler().unwrap();
        let mut pipe = [0i32; 2];
        // SAFETY: pipe(2) fills the two-int array.
        assert_eq!(unsafe { libc::pipe(pipe.as_mut_ptr()) }, 0);
        // SAFETY: the child only redirects stderr, installs a filter, makes
        // the call and exits; it touches no lock another thread could hold
        // (the test harness's threads do not run in it).
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: dup2 and _exit in the child.
            unsafe { libc::dup2(pipe[1], 2) };
            if enter(kind, Some(&filters)).is_err() {
                // SAFETY: as above.
                unsafe { libc::_exit(90) };
            }
            // A failed assertion must not unwind into the harness's copy.
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(call)).is_err() {
                // SAFETY: as above.
                unsafe { libc::_exit(91) };
            }
            // SAFETY: as above.
            unsafe { libc::_exit(0) };
        }
        // SAFETY: our end of the pipe; the child's copy is closed by its exit.
        unsafe { libc::close(pipe[1]) };
        let mut status = 0;
        // SAFETY: waiting for our own child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        let mut out = Vec::new();
        let mut buf = [0u8; 256];
        loop {
            // SAFETY: reading into our buffer from our end of the pipe.
            let n = unsafe { libc::read(pipe[0], buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                break;
            }
            out.extend_from_slice(&buf[..n as usize]);
        }
        // SAFETY: our descriptor.
        unsafe { libc::close(pipe[0]) };
        assert!(libc::WIFEXITED(status), "status {status:#x}");
        (
            libc::WEXITSTATUS(status),
            String::from_utf8_lossy(&out).into_owned(),
        )
    }

    /// A disk's work under every filter that may do it: a vCPU's or the
    /// device thread's reads, writes that allocate qcow2 clusters over a
    /// backing file, and flushes; the main thread's drop, which writes back
    /// imago's caches.
    #[test]
    fn the_disks_work_passes_the_filters() {
        use crate::devices::virtio::block::disk::Disk;
        use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};
        for kind in ThreadKind::ALL {
            let dir = tempfile::tempdir().unwrap();
            let (_base, overlay) = vmbench_image::testing::overlay_over_raw(dir.path());
            let mut disk = Disk::open(&overlay, false, Some(vmbench_image::Format::Qcow2)).unwrap();
            let (status, stderr) = in_child(kind, move || {
                let mem: GuestMemoryMmap =
                    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
                mem.write_slice(&[0xa5; 70_000], GuestAddress(0)).unwrap();
                for offset in [0, 512 << 10] {
                    let slice = mem.get_slice(GuestAddress(0), 70_000).unwrap();
                    disk.write(offset, &[slice]).unwrap();
                }
                let slice = mem.get_slice(GuestAddress(0x10_0000 - 4096), 4096).unwrap();
                disk.read(4096, &[slice]).unwrap();
                if kind != ThreadKind::Main {
                    disk.flush().unwrap();
                }
                drop(disk);
            });
            assert_eq!((status, stderr.as_str()), (0, ""), "{kind:?}");
        }
    }

    /// A caught panic (how imago's end on a corrupt image) unwinds under
    /// every filter, its message on stderr.
    #[test]
    fn a_caught_panic_passes_the_filters() {
        for kind in ThreadKind::ALL {
            let (status, stderr) = in_child(kind, || {
                set_panic_hook();
                let caught = std::panic::catch_unwind(|| panic!("a corrupt image"));
                assert!(caught.is_err());
            });
            assert_eq!(status, 0, "{kind:?}: {stderr}");
            assert!(stderr.contains("panicked at"), "{stderr}");
            assert!(stderr.contains("a corrupt image"), "{stderr}");
        }
    }

    #[test]
    fn a_forbidden_call_is_reported_and_ends_the_process() {
        for kind in ThreadKind::ALL {
            let (status, stderr) = in_child(kind, make_forbidden_call);
            assert_eq!(status, i32::from(EXIT_STATUS), "{kind:?}: {stderr}");
            assert_eq!(
                stderr,
                format!(
                    "seccomp: syscall 59 (execve) not allowed in the {} thread\n",
                    kind.name()
                )
            );
        }
        // Arguments matter: a socket that is not AF_UNIX is not the devices'.
        let (status, stderr) = in_child(ThreadKind::Devices, || {
            // SAFETY: socket(2) takes no pointers.
            unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
        });
        assert_eq!(status, i32::from(EXIT_STATUS));
        assert!(stderr.contains("syscall 41 (socket)"), "{stderr}");
        // And what a thread needs goes through.
        let (status, stderr) = in_child(ThreadKind::Devices, || {
            // SAFETY: as above; the descriptor is closed at once.
            let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0) };
            assert!(fd >= 0);
            // SAFETY: our descriptor.
            unsafe { libc::close(fd) };
            let v = vec![1u8; 1 << 20];
            drop(v);
        });
        assert_eq!((status, stderr.as_str()), (0, ""));
    }
}
