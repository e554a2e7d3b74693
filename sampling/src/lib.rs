//! How vmbench times a guest benchmark, after virtbench: calibrate, sample
//! until the distribution's peaks are known, summarise.
//!
//! # Primer
//!
//! - A benchmark is something that can run an operation `n` times and say
//!   how many *ticks* of its clock that took ([`Bench::run`]). A tick is the
//!   benchmark's unit: nanoseconds for the agent (CLOCK_MONOTONIC_RAW),
//!   TSC cycles for the freestanding vmexit guest.
//! - **Calibration** ([`calibrate`]): first the fixed cost of one timed run
//!   with no operation in it (reading the clock, the call): the *overhead*,
//!   the smallest of [`OVERHEAD_RUNS`] runs of 0 operations. Then, from one
//!   operation, the count doubles until a run takes at least
//!   [`OVERHEAD_FACTOR`] times the overhead *and* at least the configured
//!   minimum run time, so the overhead is noise and the clock's resolution
//!   too — twice in a row, so that one slow run does not settle it.
//! - **A sample** is one run at the calibrated count; its *value* is the
//!   cost of one operation in thousandths of the unit (picoseconds,
//!   milli-cycles), the overhead subtracted (saturating at 0), so that
//!   cheap operations keep their digits in an integer.
//! - **Peaks** ([`peaks`]): the sorted values fall into bins 1 % wide, the
//!   first starting at the smallest value and each next starting where the
//!   previous ends; a run of adjacent non-empty bins is one peak (a
//!   benchmark is often bimodal: a cache hit and a miss, a fast path and a
//!   slow one). A peak holding fewer than 5 % of the samples is *tiny*: an
//!   interruption, not a mode; it is left out of the peaks (its values stay
//!   in the minimum, maximum and median). Early on a single odd sample is
//!   a peak of its own and holds sampling up until it is either joined by
//!   others or outnumbered twenty to one.
//! - **Stopping** ([`enough`], [`measure`]): after at least [`MIN_SAMPLES`],
//!   stop as soon as every peak holds [`PEAK_SAMPLES`] samples (`rough`: as
//!   soon as any one does), or at the sample limit, or when the time budget
//!   is spent; the result says which ([`Stop`]).
//! - **Summary** ([`summary`]): median, minimum and maximum of every value,
//!   printed as `name: median (min – max) unit`.
//!
//! `no_std` with `alloc` and no dependencies: the agent (std), the vmexit
//! guest (freestanding, with a bump allocator) and the host (which derives
//! the peaks again from the raw values it receives) share this one rule.
#![no_std]

extern crate alloc;

use alloc::vec::Vec;

/// Runs of 0 operations whose fastest is the overhead.
pub const OVERHEAD_RUNS: u32 = 5;
/// A calibrated run takes at least this many times the overhead.
pub const OVERHEAD_FACTOR: u64 = 100;
/// No stopping before this many samples.
pub const MIN_SAMPLES: usize = 10;
/// A peak is known once it holds this many samples.
pub const PEAK_SAMPLES: usize = 10;
/// Values are per operation in thousandths of the unit.
pub const MILLI: u64 = 1000;

/// Something to time.
pub trait Bench {
    type Error;
    /// Runs the operation `iterations` times (0: the timed run alone, for
    /// the overhead) and returns the ticks it took.
    fn run(&mut self, iterations: u64) -> Result<u64, Self::Error>;
    /// The clock now, in ticks, for the time budget.
    fn now(&mut self) -> u64;
    /// Called right before the first measured sample (after calibration):
    /// where a guest marks the start of its exit-attribution window.
    fn window_start(&mut self) {}
    /// Called right after the last measured sample.
    fn window_end(&mut self) {}
}

/// How long and how much to sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// A calibrated run takes at least this many ticks.
    pub min_run_ticks: u64,
    /// Calibration never goes past this many operations per run.
    pub max_iterations: u64,
    /// Sampling stops at this many samples whatever the peaks say.
    pub max_samples: u32,
    /// Calibration and sampling together stop after this many ticks.
    pub budget_ticks: u64,
    /// Stop once any one peak is known, rather than every one.
    pub rough: bool,
}

impl Config {
    /// The agent's defaults, for a nanosecond clock: runs of at least 1 ms,
    /// at most 1000 samples, 10 s.
    pub const fn nanoseconds() -> Config {
        Config {
            min_run_ticks: 1_000_000,
            max_iterations: 1 << 32,
            max_samples: 1000,
            budget_ticks: 10_000_000_000,
            rough: false,
        }
    }
}

/// What calibration found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Calibration {
    /// Operations per sample.
    pub iterations: u64,
    /// The fixed cost of one timed run, in ticks.
    pub overhead_ticks: u64,
    /// Timed runs calibration took (the overhead's included).
    pub runs: u32,
    /// Calibration stopped at [`Config::max_iterations`] or the budget
    /// before a run was long enough.
    pub cut_short: bool,
}

/// Why sampling stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Every peak (`rough`: one) holds enough samples.
    Peaks,
    /// [`Config::max_samples`] reached.
    MaxSamples,
    /// [`Config::budget_ticks`] spent.
    Budget,
}

impl Stop {
    /// The name results carry.
    pub fn as_str(self) -> &'static str {
        match self {
            Stop::Peaks => "peaks",
            Stop::MaxSamples => "max_samples",
            Stop::Budget => "budget",
        }
    }
}

/// One benchmark's samples.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Measurement {
    pub calibration: Calibration,
    /// Per operation, in thousandths of the unit, in the order measured.
    pub values: Vec<u64>,
    pub stop: Stop,
}

impl Measurement {
    /// Operations timed in the samples (the exit-attribution window's).
    pub fn ops(&self) -> u64 {
        self.calibration
            .iterations
            .saturating_mul(self.values.len() as u64)
    }
}

/// Finds the fixed overhead of a timed run, then the operations per run.
pub fn calibrate<B: Bench>(bench: &mut B, config: &Config) -> Result<Calibration, B::Error> {
    let started = bench.now();
    let mut overhead_ticks = u64::MAX;
    for _ in 0..OVERHEAD_RUNS {
        overhead_ticks = overhead_ticks.min(bench.run(0)?);
    }
    let mut runs = OVERHEAD_RUNS;
    let long_enough = overhead_ticks
        .saturating_mul(OVERHEAD_FACTOR)
        .max(config.min_run_ticks);
    let max_iterations = config.max_iterations.max(1);
    let mut iterations = 1u64;
    loop {
        let ticks = bench.run(iterations)?;
        runs += 1;
        // A run long enough is run once more: one slow run (an interrupt,
        // a cold cache) must not settle the count; the faster of the two
        // must be long enough too.
        if ticks >= long_enough && {
            runs += 1;
            bench.run(iterations)? >= long_enough
        } {
            return Ok(Calibration {
                iterations,
                overhead_ticks,
                runs,
                cut_short: false,
            });
        }
        let spent = bench.now().saturating_sub(started);
        if iterations >= max_iterations || spent >= config.budget_ticks {
            return Ok(Calibration {
                iterations,
                overhead_ticks,
                runs,
                cut_short: true,
            });
        }
        iterations = iterations.saturating_mul(2).min(max_iterations);
    }
}

/// The cost of one operation in thousandths of a tick: `ticks` for
/// `iterations` operations, less the run's overhead.
pub fn per_op_milli(ticks: u64, overhead_ticks: u64, iterations: u64) -> u64 {
    let work = u128::from(ticks.saturating_sub(overhead_ticks));
    let milli = work * u128::from(MILLI) / u128::from(iterations.max(1));
    u64::try_from(milli).unwrap_or(u64::MAX)
}

/// Calibrates, then samples until the stopping rule holds (see the primer).
pub fn measure<B: Bench>(bench: &mut B, config: &Config) -> Result<Measurement, B::Error> {
    let started = bench.now();
    let calibration = calibrate(bench, config)?;
    let max_samples = usize::try_from(config.max_samples.max(1)).unwrap_or(usize::MAX);
    let mut values = Vec::new();
    // The values sorted as they come (one insertion each), for the
    // stopping rule, which then allocates nothing per sample.
    let mut sorted: Vec<u64> = Vec::new();
    bench.window_start();
    let stop = loop {
        let ticks = match bench.run(calibration.iterations) {
            Ok(ticks) => ticks,
            Err(e) => {
                bench.window_end();
                return Err(e);
            }
        };
        let value = per_op_milli(ticks, calibration.overhead_ticks, calibration.iterations);
        values.push(value);
        sorted.insert(sorted.partition_point(|&v| v <= value), value);
        if values.len() >= MIN_SAMPLES && enough_sorted(&sorted, config.rough) {
            break Stop::Peaks;
        }
        if values.len() >= max_samples {
            break Stop::MaxSamples;
        }
        if bench.now().saturating_sub(started) >= config.budget_ticks {
            break Stop::Budget;
        }
    };
    bench.window_end();
    Ok(Measurement {
        calibration,
        values,
        stop,
    })
}

/// One mode of a benchmark's distribution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peak {
    /// The median of the peak's values.
    pub value: u64,
    /// Its smallest and largest value.
    pub low: u64,
    pub high: u64,
    /// Samples in it.
    pub count: usize,
}

/// The smallest peak that is not tiny, for `total` samples.
pub fn min_peak_samples(total: usize) -> usize {
    total.div_ceil(20).max(1)
}

/// The width of the 1 % bin that starts at `start` (at least 1).
fn bin_width(start: u64) -> u64 {
    (start / 100).max(1)
}

/// Calls `f` with each peak of `sorted` (ascending), tiny ones included,
/// as the slice of its values; allocates nothing.
fn for_each_peak(sorted: &[u64], mut f: impl FnMut(&[u64])) {
    let Some(&first) = sorted.first() else {
        return;
    };
    // The end of the current bin (its start is where the previous ended),
    // and where the current peak began.
    let mut end = first.saturating_add(bin_width(first));
    let mut peak_from = 0;
    for (i, &v) in sorted.iter().enumerate() {
        if v < end {
            continue;
        }
        // The next bin is adjacent: if v falls in it the peak goes on.
        end = end.saturating_add(bin_width(end));
        if v < end {
            continue;
        }
        // At least one empty bin: the peak ends; find v's bin.
        f(&sorted[peak_from..i]);
        peak_from = i;
        while v >= end && end < u64::MAX {
            end = end.saturating_add(bin_width(end));
        }
    }
    f(&sorted[peak_from..]);
}

/// Every peak of `values`, tiny ones included, in increasing order.
pub fn all_peaks(values: &[u64]) -> Vec<Peak> {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let mut peaks = Vec::new();
    for_each_peak(&sorted, |p| peaks.push(peak_of(p)));
    peaks
}

fn peak_of(sorted: &[u64]) -> Peak {
    Peak {
        value: median_sorted(sorted),
        low: sorted[0],
        high: sorted[sorted.len() - 1],
        count: sorted.len(),
    }
}

/// The peaks of `values` that are not tiny (see the primer).
pub fn peaks(values: &[u64]) -> Vec<Peak> {
    let min = min_peak_samples(values.len());
    let mut peaks = all_peaks(values);
    peaks.retain(|p| p.count >= min);
    peaks
}

/// Whether sampling may stop: every peak holds [`PEAK_SAMPLES`] samples
/// (`rough`: any one does). No peak that is not tiny: not yet.
pub fn enough(values: &[u64], rough: bool) -> bool {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    enough_sorted(&sorted, rough)
}

/// [`enough`] for values already sorted, without allocating.
pub fn enough_sorted(sorted: &[u64], rough: bool) -> bool {
    let min = min_peak_samples(sorted.len());
    let (mut kept, mut known) = (0usize, 0usize);
    for_each_peak(sorted, |p| {
        if p.len() >= min {
            kept += 1;
            known += usize::from(p.len() >= PEAK_SAMPLES);
        }
    });
    kept > 0 && if rough { known > 0 } else { known == kept }
}

/// Median, minimum and maximum of a benchmark's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub median: u64,
    pub min: u64,
    pub max: u64,
    pub samples: usize,
}

/// `None` for no values.
pub fn summary(values: &[u64]) -> Option<Summary> {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    Some(Summary {
        min: *sorted.first()?,
        median: median_sorted(&sorted),
        max: *sorted.last()?,
        samples: sorted.len(),
    })
}

/// The middle value; of two middle values, their mean rounded down.
fn median_sorted(sorted: &[u64]) -> u64 {
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        let (a, b) = (sorted[n / 2 - 1], sorted[n / 2]);
        a / 2 + b / 2 + (a % 2 + b % 2) / 2
    }
}

#[cfg(test)]
mod tests;
