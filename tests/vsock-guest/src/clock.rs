//! Deadlines in time-stamp-counter ticks, for every wait the guest makes
//! (the TSC and [`Deadline`] are `freestanding::clock`'s; see there why
//! waits count ticks, never polling iterations).

pub use freestanding::clock::*;

/// The default bound of one wait: 3×10^10 ticks, 10 s at 3 GHz, 11.5 s at
/// 2.6 GHz. Long enough for a busy test host to answer, short enough that a
/// broken one ends the test rather than hanging it.
pub const DEFAULT_WAIT_TICKS: u64 = 30_000_000_000;
