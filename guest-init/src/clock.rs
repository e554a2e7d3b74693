//! The guest's clocks: CLOCK_BOOTTIME for the boot's marks, CLOCK_MONOTONIC_RAW
//! (read through the vDSO) for the benchmarks.

use nix::time::{clock_gettime, ClockId};

/// CLOCK_BOOTTIME in nanoseconds: time since the kernel started, suspend included.
pub fn boottime_ns() -> u64 {
    match clock_gettime(ClockId::CLOCK_BOOTTIME) {
        Ok(ts) => (ts.tv_sec() as u64).saturating_mul(1_000_000_000) + ts.tv_nsec() as u64,
        Err(_) => 0,
    }
}

/// CLOCK_MONOTONIC_RAW in nanoseconds, through the vDSO: the clocksource's
/// counter unadjusted by NTP, read without entering the kernel when the
/// clocksource allows it (tsc and kvm-clock do).
pub fn monotonic_raw_ns() -> u64 {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::MonotonicRaw);
    (ts.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(ts.tv_nsec as u64)
}

/// The kernel's current clocksource (`tsc`, `kvm-clock`, `jiffies`, …),
/// or empty when sysfs does not say.
pub fn clocksource() -> String {
    std::fs::read_to_string("/sys/devices/system/clocksource/clocksource0/current_clocksource")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}
