//! Deadlines in time-stamp-counter ticks, for every wait the guest makes.
//!
//! Waits are bounded by the TSC, never by a count of polling iterations: one
//! iteration costs a few nanoseconds on native KVM, tens under QEMU's TCG, and
//! about a microsecond per instruction under the nested KVM of our CI hosts,
//! whose instruction emulator runs every guest instruction (there, 200 million
//! spins would be an hour). The TSC counts at the host's rate under all three
//! (TCG reads the host's counter), so a deadline in ticks is about the same
//! wall time everywhere, whatever the guest's speed.

/// The time-stamp counter.
#[cfg(target_arch = "x86_64")]
pub fn tsc_ticks() -> u64 {
    // SAFETY: rdtsc only reads the counter (CR4.TSD is clear: the boot code
    // never sets it, and rdtsc is allowed at CPL 0 either way).
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// A point in time a wait may not pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline {
    end_ticks: u64,
}

impl Deadline {
    pub fn after(now_ticks: u64, wait_ticks: u64) -> Deadline {
        Deadline {
            end_ticks: now_ticks.saturating_add(wait_ticks),
        }
    }

    pub fn passed(&self, now_ticks: u64) -> bool {
        now_ticks >= self.end_ticks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_passes_at_its_end_and_never_wraps() {
        let deadline = Deadline::after(100, 50);
        assert!(!deadline.passed(100));
        assert!(!deadline.passed(149));
        assert!(deadline.passed(150));
        let far = Deadline::after(u64::MAX - 1, 30_000_000_000);
        assert!(!far.passed(u64::MAX - 1));
        assert!(far.passed(u64::MAX));
    }

    #[test]
    fn the_tsc_moves_forward() {
        let a = tsc_ticks();
        let b = tsc_ticks();
        assert!(b >= a);
    }
}
