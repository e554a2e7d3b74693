//! Process benchmarks: `context_switch`, `fork`, `exec`.
//!
//! The children these fork run only async-signal-safe code (read, write,
//! execve, `_exit`) and are waited for before an operation counts, so a
//! failure shows as an error of the run rather than as a number.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{pipe, Pid};

use super::timing::time_fallible;
use super::{Env, SetupError, Workload};

/// The argument with which the agent exits at once: what `exec` runs.
pub const EXEC_MARKER_ARG: &str = "--bench-exec-exit";

/// Forks; the child runs `child` and `_exit`s with the code it returns;
/// the parent gets the child's pid.
fn fork_with(child: impl FnOnce() -> i32) -> Result<Pid, String> {
    // SAFETY: the runner is single-threaded; the child runs only
    // async-signal-safe calls before it exits or execs.
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => Err(format!("fork: {}", std::io::Error::last_os_error())),
        0 => exit_now(child()),
        pid => Ok(Pid::from_raw(pid)),
    }
}

/// Ends a forked child at once, without the parent's exit handlers.
fn exit_now(code: i32) -> ! {
    // SAFETY: _exit is async-signal-safe and ends only this process.
    unsafe { libc::_exit(code) }
}

/// Waits for `pid`, which must exit with status 0.
fn wait_ok(pid: Pid, what: &str) -> Result<(), String> {
    loop {
        match waitpid(pid, None) {
            Ok(WaitStatus::Exited(_, 0)) => return Ok(()),
            Ok(WaitStatus::Exited(_, code)) => {
                return Err(format!("{what} exited with status {code}"))
            }
            Ok(WaitStatus::Signaled(_, signal, _)) => {
                return Err(format!("{what} was killed by {}", signal.as_str()))
            }
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(format!("waiting for {what}: {}", e.desc())),
        }
    }
}

/// `fork`: fork, the child `_exit`s, the parent waits.
pub fn fork(_env: &Env) -> Result<Box<dyn Workload>, SetupError> {
    Ok(Box::new(Fork))
}

struct Fork;

impl Workload for Fork {
    fn run(&mut self, iterations: u64) -> Result<u64, String> {
        time_fallible(iterations, || {
            let pid = fork_with(|| 0)?;
            wait_ok(pid, "the forked child")
        })
    }
}

/// `exec`: fork, exec the agent itself with [`EXEC_MARKER_ARG`] (it exits
/// at once), wait.
pub fn exec(_env: &Env) -> Result<Box<dyn Workload>, SetupError> {
    let path = std::fs::read_link("/proc/self/exe")
        .map_err(|e| SetupError::Failed(format!("cannot find the agent's own executable: {e}")))?;
    let path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| SetupError::Failed("the agent's path holds a NUL byte".into()))?;
    let marker = CString::new(EXEC_MARKER_ARG).expect("no NUL in the marker");
    Ok(Box::new(Exec { path, marker }))
}

struct Exec {
    path: CString,
    marker: CString,
}

impl Workload for Exec {
    fn run(&mut self, iterations: u64) -> Result<u64, String> {
        // Built before the fork: the child may not allocate.
        let argv = [self.path.as_ptr(), self.marker.as_ptr(), std::ptr::null()];
        let envp = [std::ptr::null()];
        time_fallible(iterations, || {
            let pid = fork_with(|| {
                // SAFETY: argv and envp are NUL-terminated arrays of C
                // strings that live until the exec (they are the parent's,
                // copied into this process by fork).
                unsafe { libc::execve(argv[0], argv.as_ptr(), envp.as_ptr()) };
                127
            })?;
            wait_ok(pid, "the exec'd agent")
        })
    }
}

/// `context_switch`: a 1-byte ping-pong between this process and a child
/// through two pipes, both pinned to the CPU this one runs on, so each
/// round trip is two switches on one CPU.
pub fn context_switch(_env: &Env) -> Result<Box<dyn Workload>, SetupError> {
    let failed =
        |what: &str, e: nix::errno::Errno| SetupError::Failed(format!("{what}: {}", e.desc()));
    // SAFETY: sched_getcpu only reads which CPU this thread is on.
    let cpu = unsafe { libc::sched_getcpu() };
    let mut pinned = false;
    if let (Ok(cpu), Ok(allowed)) = (usize::try_from(cpu), sched_getaffinity(Pid::from_raw(0))) {
        if allowed.is_set(cpu).unwrap_or(false) {
            let mut one = CpuSet::new();
            if one.set(cpu).is_ok() {
                pinned = sched_setaffinity(Pid::from_raw(0), &one).is_ok();
            }
        }
    }
    let (ping_read, ping_write) = pipe().map_err(|e| failed("pipe", e))?;
    let (pong_read, pong_write) = pipe().map_err(|e| failed("pipe", e))?;
    let (ping, pong) = (ping_read.as_raw_fd(), pong_write.as_raw_fd());
    let (parent_ping, parent_pong) = (ping_write.as_raw_fd(), pong_read.as_raw_fd());
    let child = fork_with(|| {
        // The parent's ends: the child's copy of the write end would keep
        // its own reads from ever seeing the end of the file.
        // SAFETY: closes this process's copies of descriptors it owns.
        unsafe {
            libc::close(parent_ping);
            libc::close(parent_pong);
        }
        let mut byte = 0u8;
        loop {
            // SAFETY: one byte into a local, from a descriptor this process owns.
            let n = unsafe { libc::read(ping, (&raw mut byte).cast(), 1) };
            if n != 1 {
                return 0;
            }
            // SAFETY: one byte from a local, to a descriptor this process owns.
            if unsafe { libc::write(pong, (&raw const byte).cast(), 1) } != 1 {
                return 1;
            }
        }
    })
    .map_err(SetupError::Failed)?;
    drop(ping_read);
    drop(pong_write);
    Ok(Box::new(PingPong {
        to_child: Some(ping_write),
        from_child: pong_read,
        child,
        pinned,
    }))
}

struct PingPong {
    to_child: Option<OwnedFd>,
    from_child: OwnedFd,
    child: Pid,
    pinned: bool,
}

impl Workload for PingPong {
    fn run(&mut self, iterations: u64) -> Result<u64, String> {
        let to = self.to_child.as_ref().map_or(-1, |fd| fd.as_raw_fd());
        let from = self.from_child.as_raw_fd();
        time_fallible(iterations, || {
            let mut byte = 1u8;
            // SAFETY: one byte from a local, to a pipe this process owns.
            if unsafe { libc::write(to, (&raw const byte).cast(), 1) } != 1 {
                return Err(format!(
                    "write to the partner: {}",
                    std::io::Error::last_os_error()
                ));
            }
            // SAFETY: one byte into a local, from a pipe this process owns.
            if unsafe { libc::read(from, (&raw mut byte).cast(), 1) } != 1 {
                return Err("the partner process stopped answering".to_string());
            }
            Ok(())
        })
    }

    fn extra(&self) -> Vec<(String, u64)> {
        vec![("pinned_to_one_cpu".to_string(), u64::from(self.pinned))]
    }
}

impl Drop for PingPong {
    fn drop(&mut self) {
        // End of file: the partner exits.
        self.to_child = None;
        let _ = waitpid(self.child, None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Env {
        Env {
            in_vm: false,
            settings: crate::settings::Settings::default(),
        }
    }

    #[test]
    fn each_runs_a_few_operations() {
        let _alone = crate::bench::test_fork_lock();
        for setup in [fork, context_switch] {
            let mut workload = setup(&env()).unwrap();
            assert!(workload.run(0).is_ok());
            let ns = workload.run(20).unwrap();
            assert!(ns > 0);
        }
    }

    #[test]
    fn exec_of_something_that_fails_is_an_error() {
        let _alone = crate::bench::test_fork_lock();
        // The test binary does not know the marker: it runs its tests…
        // so exec /bin/false instead, which exits 1.
        let mut workload = Exec {
            path: CString::new("/bin/false").unwrap(),
            marker: CString::new(EXEC_MARKER_ARG).unwrap(),
        };
        let err = workload.run(1).unwrap_err();
        assert_eq!(err, "the exec'd agent exited with status 1");
        let mut missing = Exec {
            path: CString::new("/nonexistent/agent").unwrap(),
            marker: CString::new(EXEC_MARKER_ARG).unwrap(),
        };
        assert_eq!(
            missing.run(1).unwrap_err(),
            "the exec'd agent exited with status 127"
        );
    }
}
