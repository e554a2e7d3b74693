//! The boot CPU's watchdog: the local APIC timer, one-shot, on
//! [`WATCHDOG_VECTOR`], armed around each caught piece of a benchmark
//! (which runs with interrupts on). When it fires past its deadline while a
//! catch is armed, the trap handler ends the benchmark as timed out; the
//! suite goes on with the next.
//!
//! Why: an operation may never complete. A KVM that emulates every guest
//! instruction (nested KVM without hardware virtualisation, as on vmbench's
//! CI hosts) handles VMCALL by patching in the vendor's hypercall
//! instruction and re-executing it, expecting the CPU to run it next time;
//! the emulator gets it again, for ever. Interrupts still come between two
//! of those attempts.
//!
//! The timer counts at the APIC bus rate (1 GHz under KVM and QEMU, but
//! timed here against the TSC); its 32-bit count lasts a few seconds, so a
//! later deadline re-arms it from the handler until the TSC has passed it.

use core::sync::atomic::{AtomicU64, Ordering};

use freestanding::clock::tsc_ticks;

use crate::apic;

pub const WATCHDOG_VECTOR: u8 = 0xb2;

/// Timer counts per TSC tick, times 2^32 (0: no timer, no watchdog).
static COUNTS_PER_TICK_2_32: AtomicU64 = AtomicU64::new(0);
/// The TSC at which the watchdog bites; 0 when disarmed.
static DEADLINE_TICKS: AtomicU64 = AtomicU64::new(0);
/// What it was armed for, for the report.
static ARMED_MS: AtomicU64 = AtomicU64::new(0);

/// Times the APIC timer against the TSC over about `sample_ticks`;
/// returns whether there is a timer that counts.
pub fn calibrate(sample_ticks: u64) -> bool {
    if apic::mode() == apic::Mode::None {
        return false;
    }
    apic::timer_one_shot(WATCHDOG_VECTOR);
    apic::timer_start(u32::MAX);
    let start = tsc_ticks();
    while tsc_ticks() - start < sample_ticks {
        core::hint::spin_loop();
    }
    let counted = u64::from(u32::MAX - apic::timer_count());
    let ticks = tsc_ticks() - start;
    apic::timer_start(0);
    let rate = (u128::from(counted) << 32) / u128::from(ticks.max(1));
    let rate = u64::try_from(rate).unwrap_or(u64::MAX);
    COUNTS_PER_TICK_2_32.store(rate, Ordering::SeqCst);
    rate > 0
}

/// Bites once `ms` (of `ticks_per_ms` TSC ticks) have passed.
pub fn arm(ms: u64, ticks_per_ms: u64) {
    if COUNTS_PER_TICK_2_32.load(Ordering::SeqCst) == 0 {
        return;
    }
    ARMED_MS.store(ms, Ordering::SeqCst);
    let ticks = ms.saturating_mul(ticks_per_ms);
    let now = tsc_ticks();
    DEADLINE_TICKS.store(now.saturating_add(ticks).max(1), Ordering::SeqCst);
    apic::timer_one_shot(WATCHDOG_VECTOR);
    start_for(ticks);
}

/// The time the watchdog was last armed for.
pub fn armed_ms() -> u64 {
    ARMED_MS.load(Ordering::SeqCst)
}

pub fn disarm() {
    DEADLINE_TICKS.store(0, Ordering::SeqCst);
    if COUNTS_PER_TICK_2_32.load(Ordering::SeqCst) != 0 {
        apic::timer_start(0);
    }
}

/// The timer for `ticks` of the TSC, or as long as its count lasts.
fn start_for(ticks: u64) {
    let rate = u128::from(COUNTS_PER_TICK_2_32.load(Ordering::SeqCst));
    let counts = (u128::from(ticks) * rate) >> 32;
    apic::timer_start(u32::try_from(counts).unwrap_or(u32::MAX).max(1));
}

/// The handler's question when [`WATCHDOG_VECTOR`] comes: has the deadline
/// passed? If not, the timer is started again for what remains.
pub fn bites() -> bool {
    let deadline = DEADLINE_TICKS.load(Ordering::SeqCst);
    if deadline == 0 {
        return false;
    }
    let now = tsc_ticks();
    if now >= deadline {
        DEADLINE_TICKS.store(0, Ordering::SeqCst);
        return true;
    }
    start_for(deadline - now);
    false
}
