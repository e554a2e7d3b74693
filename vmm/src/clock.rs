//! The VMM's clock: CLOCK_MONOTONIC in nanoseconds. Every `_ns` time in
//! the account (vmm.json) is on it, so a reader on the same host (the
//! orchestrator's own marks are on CLOCK_MONOTONIC too) can put the VMM's
//! times on one axis with its own.

/// CLOCK_MONOTONIC now, in nanoseconds.
pub fn now_ns() -> u64 {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .expect("CLOCK_MONOTONIC is always available");
    ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64
}
