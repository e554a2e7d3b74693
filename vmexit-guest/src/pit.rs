//! Timing the TSC against the 8254 PIT, for CPUs whose CPUID does not state
//! the TSC's rate (QEMU's TCG, most KVM guests). Channel 0 counts down at
//! 1.193182 MHz from 65536 over and over (mode 2); the guest reads latched
//! counts and the TSC together until [`CALIBRATION_PIT_TICKS`] have passed.
//! Its interrupt goes nowhere: the guest masks the 8259s.

pub const PIT_HZ: u64 = 1_193_182;
pub const CHANNEL0: u16 = 0x40;
pub const COMMAND: u16 = 0x43;
/// Channel 0, low then high byte, mode 2 (rate generator), binary.
pub const PROGRAM_CHANNEL0: u8 = 0x34;
/// Channel 0, latch the count.
pub const LATCH_CHANNEL0: u8 = 0x00;
/// 20 ms: long enough that reading the counter (an exit each, microseconds
/// under an emulating KVM) costs under a thousandth of it.
pub const CALIBRATION_PIT_TICKS: u64 = PIT_HZ / 50;

/// Ticks between two reads of the down-counter, which wraps at 65536
/// (reads must come less than 55 ms apart).
pub fn elapsed(earlier: u16, later: u16) -> u64 {
    u64::from(earlier.wrapping_sub(later))
}

/// The TSC's rate from `tsc_ticks` over `pit_ticks`, if plausible (0.1 to
/// 10 GHz).
pub fn tsc_khz(tsc_ticks: u64, pit_ticks: u64) -> Option<u64> {
    if pit_ticks == 0 {
        return None;
    }
    let khz = u128::from(tsc_ticks) * u128::from(PIT_HZ) / u128::from(pit_ticks) / 1000;
    u64::try_from(khz)
        .ok()
        .filter(|k| (100_000..=10_000_000).contains(k))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_counter_counts_down_and_wraps() {
        assert_eq!(elapsed(1000, 400), 600);
        assert_eq!(elapsed(100, 65_000), 636);
        assert_eq!(elapsed(7, 7), 0);
    }

    #[test]
    fn rates() {
        // 20 ms of PIT at 2.6 GHz.
        assert_eq!(tsc_khz(52_000_000, CALIBRATION_PIT_TICKS), Some(2_600_069));
        assert_eq!(tsc_khz(1, CALIBRATION_PIT_TICKS), None);
        assert_eq!(tsc_khz(u64::MAX, 1), None);
        assert_eq!(tsc_khz(1000, 0), None);
    }
}
