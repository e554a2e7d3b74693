//! One benchmark in a process of its own, so that nothing it does can end
//! the agent.
//!
//! The agent forks a *runner*, which leads a process group of its own, sets
//! the benchmark up, times it and writes the outcome (one frame) into a
//! pipe, then `_exit`s. The agent reads the pipe while it reaps: the
//! runner's exit tells a result from a crash (a signal) or an exit without
//! one, and whatever the runner forked is reaped too (PID 1 inherits every
//! orphan). A runner still alive after its budget plus [`GRACE_MS`] is
//! killed with its group: the benchmark hung. Either way the group is killed
//! at the end, so no benchmark leaves a process behind.

use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::panic::AssertUnwindSafe;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{pipe2, Pid};
use vmbench_proto::bench::{DEFAULT_BUDGET_MS, HANG_GRACE_MS};
use vmbench_proto::{
    decode_body, encode_frame, micro_bench, BenchOutcome, BenchRequest, FrameDecoder, MICRO_BENCHES,
};

use super::{setup_of, timing, Env};

/// How long past its budget a benchmark may run (its set-up, calibration
/// and last sample) before it counts as hung: the protocol's.
pub const GRACE_MS: u64 = HANG_GRACE_MS as u64;

/// Runs the benchmark `request` names, in a runner process; whatever
/// happens to the runner, the outcome says it.
pub fn run(request: &BenchRequest, env: &Env) -> BenchOutcome {
    if micro_bench(&request.name).is_none() {
        let known: Vec<&str> = MICRO_BENCHES.iter().map(|b| b.name).collect();
        return BenchOutcome::Unavailable {
            why: format!(
                "no benchmark {:?} in this agent's micro suite ({})",
                request.name,
                known.join(", ")
            ),
        };
    }
    let budget_ms = match request.budget_ms {
        0 => u64::from(DEFAULT_BUDGET_MS),
        n => u64::from(n),
    };
    let limit = Duration::from_millis(budget_ms + GRACE_MS);
    match isolated(limit, || measure(request, env)) {
        Ok(outcome) => outcome,
        Err(why) => BenchOutcome::Failed { why },
    }
}

/// Sets the benchmark up and times it (in the runner).
fn measure(request: &BenchRequest, env: &Env) -> BenchOutcome {
    let Some(setup) = setup_of(&request.name) else {
        return BenchOutcome::Unavailable {
            why: format!("benchmark {:?} is not built into this agent", request.name),
        };
    };
    let mut workload = match setup(env) {
        Ok(workload) => workload,
        Err(e) => return e.outcome(),
    };
    match timing::sample(workload.as_mut(), request, env.in_vm) {
        Ok(samples) => BenchOutcome::Done(samples),
        Err(why) => BenchOutcome::Failed { why },
    }
}

/// The last panic's message in this process (the runner's hook sets it).
static PANIC: Mutex<Option<String>> = Mutex::new(None);

/// Runs `body` in a forked process and returns what it returned; `Err`
/// says what became of the process if it returned nothing (a panic, a
/// signal, an exit, a hang past `limit`).
fn isolated(limit: Duration, body: impl FnOnce() -> BenchOutcome) -> Result<BenchOutcome, String> {
    let (read_end, write_end) =
        pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {}", e.desc()))?;
    // SAFETY: the agent is single-threaded when it runs benchmarks (and the
    // command-line mode too), so the child may go on running Rust code.
    let fork = unsafe { nix::unistd::fork() };
    match fork {
        Err(e) => Err(format!("cannot fork the benchmark's process: {}", e.desc())),
        Ok(nix::unistd::ForkResult::Child) => {
            drop(read_end);
            runner(write_end, body)
        }
        Ok(nix::unistd::ForkResult::Parent { child }) => {
            drop(write_end);
            // Also from here: the child may not have got to it yet, and
            // killpg needs the group to exist.
            let _ = nix::unistd::setpgid(child, child);
            let result = watch(child, read_end, limit);
            // Whatever the runner left behind dies with its group.
            let _ = killpg(child, Signal::SIGKILL);
            crate::power::reap_children();
            result
        }
    }
}

/// The runner's life: run, write the outcome, exit without unwinding into
/// the agent's code.
fn runner(write_end: OwnedFd, body: impl FnOnce() -> BenchOutcome) -> ! {
    let _ = nix::unistd::setpgid(Pid::from_raw(0), Pid::from_raw(0));
    std::panic::set_hook(Box::new(|info| {
        if let Ok(mut last) = PANIC.lock() {
            *last = Some(info.to_string());
        }
    }));
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(body)).unwrap_or_else(|_| {
        let message = PANIC
            .lock()
            .ok()
            .and_then(|mut last| last.take())
            .unwrap_or_else(|| "no message".to_string());
        BenchOutcome::Failed {
            why: format!("the benchmark panicked: {message}"),
        }
    });
    let frame = encode_frame(&outcome).or_else(|e| {
        encode_frame(&BenchOutcome::Failed {
            why: format!("the result cannot be sent: {e}"),
        })
    });
    let mut pipe = std::fs::File::from(write_end);
    let code = match frame.map(|frame| pipe.write_all(&frame)) {
        Ok(Ok(())) => 0,
        _ => 3,
    };
    // SAFETY: _exit ends this process at once, without running the agent's
    // exit handlers or flushing buffers it shares with its parent.
    unsafe { libc::_exit(code) }
}

/// How the runner ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Exited(i32),
    Signaled(Signal),
    /// Someone else reaped it (only possible where other code waits for
    /// any child, as concurrent tests do).
    Vanished,
}

/// Reaps every child that has ended; returns how `child` ended if it is
/// among them.
fn reap(child: Pid) -> Option<End> {
    let mut end = None;
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => return end,
            Ok(WaitStatus::Exited(pid, code)) if pid == child => end = Some(End::Exited(code)),
            Ok(WaitStatus::Signaled(pid, signal, _)) if pid == child => {
                end = Some(End::Signaled(signal))
            }
            Ok(_) => {}
            Err(Errno::ECHILD) => return end.or(Some(End::Vanished)),
            Err(_) => return end,
        }
    }
}

/// Reads the runner's outcome while reaping, until it has exited and the
/// pipe is closed, or until `limit` (then it is killed).
fn watch(child: Pid, read_end: OwnedFd, limit: Duration) -> Result<BenchOutcome, String> {
    let deadline = Instant::now() + limit;
    let mut pipe = std::fs::File::from(read_end);
    let mut decoder = FrameDecoder::new();
    let mut buf = [0u8; 4096];
    let mut status = None;
    let mut pipe_open = true;
    let mut hung = false;
    while pipe_open || status.is_none() {
        if pipe_open {
            let mut fds = [PollFd::new(pipe.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::from(100u16)) {
                Ok(0) | Err(Errno::EINTR) => {}
                Ok(_) => match pipe.read(&mut buf) {
                    Ok(0) => pipe_open = false,
                    Ok(n) => decoder.push(&buf[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => pipe_open = false,
                },
                Err(_) => pipe_open = false,
            }
        } else {
            std::thread::sleep(Duration::from_millis(5));
        }
        // Reap everything: the runner, and (as PID 1) orphans.
        if let Some(end) = reap(child) {
            if status.is_none() {
                status = Some(end);
                // Grandchildren holding the pipe's write end would keep it open.
                let _ = killpg(child, Signal::SIGKILL);
            }
        }
        if !hung && Instant::now() >= deadline {
            hung = true;
            let _ = killpg(child, Signal::SIGKILL);
            let _ = nix::sys::signal::kill(child, Signal::SIGKILL);
        }
    }
    if hung && status == Some(End::Signaled(Signal::SIGKILL)) {
        return Err(format!(
            "the benchmark did not finish within {} s (its budget and a grace): killed",
            limit.as_secs()
        ));
    }
    let outcome = match decoder.next_body() {
        Ok(Some(body)) => decode_body::<BenchOutcome>(&body).ok(),
        _ => None,
    };
    match (outcome, status) {
        (Some(outcome), Some(End::Exited(0) | End::Vanished)) => Ok(outcome),
        (_, Some(End::Signaled(signal))) => Err(format!(
            "the benchmark's process was killed by {}",
            signal.as_str()
        )),
        (_, Some(End::Exited(code))) => Err(format!(
            "the benchmark's process exited with status {code} without a result"
        )),
        _ => Err("the benchmark's process vanished without a result".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // These fork the test process; the forked child runs only the body and
    // `_exit`s, and the harness's other threads do not exist in it. Each
    // holds the fork lock: the runner's watch reaps any child.

    #[test]
    fn a_result_comes_back() {
        let _alone = crate::bench::test_fork_lock();
        let got = isolated(Duration::from_secs(20), || BenchOutcome::Unavailable {
            why: "from the child".into(),
        });
        assert_eq!(
            got,
            Ok(BenchOutcome::Unavailable {
                why: "from the child".into()
            })
        );
    }

    #[test]
    fn a_crash_is_named() {
        let _alone = crate::bench::test_fork_lock();
        let got = isolated(Duration::from_secs(20), || {
            // Rust's own SIGSEGV handler (for stack overflows) would let a
            // raised one pass: the default action, as for a real crash.
            // SAFETY: resets this (forked) process's disposition only.
            unsafe { libc::signal(libc::SIGSEGV, libc::SIG_DFL) };
            let _ = nix::sys::signal::raise(Signal::SIGSEGV);
            BenchOutcome::Failed {
                why: "lived".into(),
            }
        });
        assert_eq!(
            got,
            Err("the benchmark's process was killed by SIGSEGV".into())
        );
    }

    #[test]
    fn a_panic_is_a_failure_with_its_message() {
        let _alone = crate::bench::test_fork_lock();
        let got = isolated(Duration::from_secs(20), || panic!("deliberately"));
        match got {
            Ok(BenchOutcome::Failed { why }) => {
                assert!(
                    why.contains("panicked") && why.contains("deliberately"),
                    "{why}"
                )
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_hang_is_killed_with_what_it_forked() {
        let _alone = crate::bench::test_fork_lock();
        let started = Instant::now();
        let got = isolated(Duration::from_millis(300), || {
            // A grandchild that would outlive its parent, holding the pipe.
            // SAFETY: the child only sleeps.
            if let Ok(nix::unistd::ForkResult::Child) = unsafe { nix::unistd::fork() } {
                loop {
                    std::thread::sleep(Duration::from_secs(60));
                }
            }
            loop {
                std::thread::sleep(Duration::from_secs(60));
            }
        });
        assert!(
            matches!(&got, Err(why) if why.contains("did not finish")),
            "{got:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(15));
    }

    #[test]
    fn an_unknown_name_is_unavailable() {
        let env = Env {
            in_vm: false,
            settings: crate::settings::Settings::default(),
        };
        let request = BenchRequest {
            name: "warp_drive".into(),
            rough: true,
            max_samples: 0,
            budget_ms: 0,
            window: 0,
        };
        match run(&request, &env) {
            BenchOutcome::Unavailable { why } => {
                assert!(
                    why.contains("warp_drive") && why.contains("syscall"),
                    "{why}"
                )
            }
            other => panic!("{other:?}"),
        }
    }
}
