//! The orchestrator's clock: CLOCK_MONOTONIC in nanoseconds, the host clock
//! of every mark in results.json. The kvm backend's VMM stamps its own
//! marks (vmm.json) on the same clock, so the two meet on one axis.

/// CLOCK_MONOTONIC now, in nanoseconds.
pub fn now_ns() -> u64 {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .expect("CLOCK_MONOTONIC is always available");
    ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64
}
