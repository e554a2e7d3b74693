//! Stopping a run in order when the operator asks: SIGINT (Ctrl-C), SIGTERM
//! or SIGHUP.
//!
//! A [`Stop`] is shared by everything a run does. The signal handlers (from
//! signal-hook, which runs them async-signal-safely) only note the signal
//! and make the stop's wake socket readable; every VM's watch has that
//! socket in its `poll`, so all of them wake at once, ask their VMMs to stop
//! (the VMM's own SIGTERM path writes its account), wait a little, kill what
//! is left, and the run is finalised with what it had. A second signal cuts
//! the waiting short ([`Stop::hurried`]) but not the finalising.
//!
//! The wake socket is never drained: once a stop is requested it stays
//! readable, so a `poll` that includes it never sleeps again — every loop
//! that polls it must leave once [`Stop::requested`] says so.

use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::SigId;

/// The signals that stop a run.
pub const SIGNALS: [i32; 3] = [SIGINT, SIGTERM, SIGHUP];

/// How long VMs asked to stop may take before they are killed.
pub const STOP_GRACE: Duration = Duration::from_secs(2);

/// A run's stop request: which signal asked first, how many came.
pub struct Stop {
    state: Arc<State>,
    /// Readable once a stop has been requested (see the module docs).
    wake_read: UnixStream,
    /// Handlers registered by [`Stop::on_signals`], removed on drop.
    handlers: Vec<SigId>,
}

struct State {
    first: AtomicI32,
    count: AtomicU32,
    wake_write: UnixStream,
}

impl State {
    /// Async-signal-safe: atomics and one non-blocking write(2).
    fn note(&self, signal: i32) {
        let _ = self
            .first
            .compare_exchange(0, signal, Ordering::SeqCst, Ordering::SeqCst);
        self.count.fetch_add(1, Ordering::SeqCst);
        // A full socket is already readable: the byte is not needed.
        let _ = (&self.wake_write).write(&[1]);
    }
}

impl Stop {
    /// A stop nothing requests but [`Stop::request`] (tests, and commands
    /// that run no VMs).
    pub fn new() -> std::io::Result<Stop> {
        let (wake_read, wake_write) = UnixStream::pair()?;
        wake_read.set_nonblocking(true)?;
        wake_write.set_nonblocking(true)?;
        Ok(Stop {
            state: Arc::new(State {
                first: AtomicI32::new(0),
                count: AtomicU32::new(0),
                wake_write,
            }),
            wake_read,
            handlers: Vec::new(),
        })
    }

    /// A stop that SIGINT, SIGTERM and SIGHUP request, for as long as it lives.
    pub fn on_signals() -> std::io::Result<Stop> {
        let mut stop = Stop::new()?;
        for signal in SIGNALS {
            let state = Arc::clone(&stop.state);
            // SAFETY: the action only touches atomics and calls write(2) on a
            // non-blocking socket, both async-signal-safe; it allocates nothing
            // and takes no lock.
            let id =
                unsafe { signal_hook::low_level::register(signal, move || state.note(signal)) }?;
            stop.handlers.push(id);
        }
        Ok(stop)
    }

    /// As if `signal` had arrived.
    pub fn request(&self, signal: i32) {
        self.state.note(signal);
    }

    /// The first signal that asked the run to stop, if one did.
    pub fn requested(&self) -> Option<i32> {
        match self.state.first.load(Ordering::SeqCst) {
            0 => None,
            signal => Some(signal),
        }
    }

    /// A second signal came: stop waiting for VMs to end on their own.
    pub fn hurried(&self) -> bool {
        self.state.count.load(Ordering::SeqCst) >= 2
    }

    /// For `poll`: readable once a stop is requested.
    pub fn wake_fd(&self) -> BorrowedFd<'_> {
        self.wake_read.as_fd()
    }

    /// Waits until `done` says so, the grace period ends or a second signal
    /// comes, checking every few milliseconds; returns whether `done` did.
    pub fn wait_grace(&self, mut done: impl FnMut() -> bool) -> bool {
        let start = Instant::now();
        loop {
            if done() {
                return true;
            }
            if self.hurried() || start.elapsed() >= STOP_GRACE {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Stop {
    fn drop(&mut self) {
        for id in self.handlers.drain(..) {
            signal_hook::low_level::unregister(id);
        }
    }
}

/// `SIGINT`, `SIGTERM`, `SIGHUP` or the number.
pub fn name(signal: i32) -> String {
    match signal {
        SIGINT => "SIGINT".into(),
        SIGTERM => "SIGTERM".into(),
        SIGHUP => "SIGHUP".into(),
        other => format!("signal {other}"),
    }
}

/// The exit status of a program stopped by `signal`, as shells report it:
/// 128 + the signal number (130 for SIGINT, 143 for SIGTERM, 129 for SIGHUP).
pub fn exit_status(signal: i32) -> u8 {
    u8::try_from(128 + signal.clamp(1, 127)).unwrap_or(u8::MAX)
}

#[cfg(test)]
mod tests {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

    use super::*;

    fn readable(stop: &Stop) -> bool {
        let mut fds = [PollFd::new(stop.wake_fd(), PollFlags::POLLIN)];
        poll(&mut fds, PollTimeout::ZERO).unwrap() == 1
    }

    #[test]
    fn a_request_wakes_polls_and_stays_readable() {
        let stop = Stop::new().unwrap();
        assert_eq!((stop.requested(), stop.hurried()), (None, false));
        assert!(!readable(&stop));
        stop.request(SIGTERM);
        stop.request(SIGINT);
        assert_eq!(stop.requested(), Some(SIGTERM), "the first signal counts");
        assert!(stop.hurried());
        assert!(readable(&stop) && readable(&stop), "never drained");
    }

    #[test]
    fn a_second_signal_ends_the_grace_at_once() {
        let stop = Stop::new().unwrap();
        stop.request(SIGINT);
        stop.request(SIGINT);
        let mut looked = 0;
        assert!(!stop.wait_grace(|| {
            looked += 1;
            false
        }));
        assert_eq!(looked, 1, "it gave up at the first look");
        let stop = Stop::new().unwrap();
        assert!(stop.wait_grace(|| true));
    }

    #[test]
    fn exit_statuses_are_the_shells() {
        assert_eq!([SIGINT, SIGTERM, SIGHUP].map(exit_status), [130, 143, 129]);
        assert_eq!(name(SIGHUP), "SIGHUP");
    }
}
