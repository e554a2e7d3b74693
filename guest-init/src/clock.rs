//! The guest's clocks.

use nix::time::{clock_gettime, ClockId};

/// CLOCK_BOOTTIME in nanoseconds: time since the kernel started, suspend included.
pub fn boottime_ns() -> u64 {
    match clock_gettime(ClockId::CLOCK_BOOTTIME) {
        Ok(ts) => (ts.tv_sec() as u64).saturating_mul(1_000_000_000) + ts.tv_nsec() as u64,
        Err(_) => 0,
    }
}
