//! PLACEHOLDER until the crate `vmbench-sampling` (sampling/, written on
//! main) lands: the same calibration, peaks and stopping rule as
//! /work/notes/issue13-design.md states them, in the shape the guest needs.
//! Replaced by the real crate when main has it.

use alloc::vec::Vec;

/// Where a sampler reads the time.
pub trait Clock {
    /// Now, in ticks.
    fn now(&mut self) -> u64;
    /// `ticks` over `iterations` operations in thousandths of the unit.
    fn ticks_to_unit_milli(&self, ticks: u64, iterations: u64) -> u64;
}

#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub min_run_ticks: u64,
    pub max_iterations: u64,
    pub max_samples: u32,
    pub budget_ticks: u64,
    pub rough: bool,
}

#[derive(Debug, Clone, Copy)]
pub struct Calibration {
    pub iterations: u64,
    pub overhead_milli: u64,
    pub calibration_runs: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    Peaks,
    MaxSamples,
    Budget,
}

impl Stop {
    pub fn name(self) -> &'static str {
        match self {
            Stop::Peaks => "peaks",
            Stop::MaxSamples => "max_samples",
            Stop::Budget => "budget",
        }
    }
}

fn time<C: Clock>(clock: &mut C, run: &mut impl FnMut(u64), iterations: u64) -> u64 {
    let start = clock.now();
    run(iterations);
    clock.now().saturating_sub(start)
}

/// The empty loop's cost per iteration, then the doubling.
pub fn calibrate<C: Clock>(
    clock: &mut C,
    settings: &Settings,
    empty: &mut impl FnMut(u64),
    body: &mut impl FnMut(u64),
) -> Calibration {
    const EMPTY_ITERATIONS: u64 = 64;
    let overhead_ticks = (0..5)
        .map(|_| time(clock, empty, EMPTY_ITERATIONS))
        .min()
        .unwrap_or(0);
    let overhead_milli = clock.ticks_to_unit_milli(overhead_ticks, EMPTY_ITERATIONS);
    let started = clock.now();
    let mut iterations = 1;
    let mut runs = 0;
    loop {
        let ticks = time(clock, body, iterations);
        runs += 1;
        let overhead = overhead_ticks.saturating_mul(iterations) / EMPTY_ITERATIONS;
        let long_enough = ticks >= overhead.saturating_mul(100) && ticks >= settings.min_run_ticks;
        let out_of_time = clock.now().saturating_sub(started) >= settings.budget_ticks;
        if long_enough || out_of_time || iterations >= settings.max_iterations {
            break;
        }
        iterations *= 2;
    }
    Calibration {
        iterations,
        overhead_milli,
        calibration_runs: runs,
    }
}

/// Samples until the stopping rule says so.
pub fn sample<C: Clock>(
    clock: &mut C,
    settings: &Settings,
    calibration: &Calibration,
    body: &mut impl FnMut(u64),
) -> (Vec<u64>, Stop) {
    let started = clock.now();
    let mut values = Vec::new();
    loop {
        let ticks = time(clock, body, calibration.iterations);
        let value = clock
            .ticks_to_unit_milli(ticks, calibration.iterations)
            .saturating_sub(calibration.overhead_milli);
        values.push(value);
        if values.len() >= 10 && peaks_done(&values, settings.rough) {
            return (values, Stop::Peaks);
        }
        if values.len() >= settings.max_samples as usize {
            return (values, Stop::MaxSamples);
        }
        if clock.now().saturating_sub(started) >= settings.budget_ticks {
            return (values, Stop::Budget);
        }
    }
}

/// Peaks of 1 % bins; whether every (rough: any) kept peak holds 10.
fn peaks_done(values: &[u64], rough: bool) -> bool {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let tiny = 2.max(sorted.len().div_ceil(20));
    let mut counts = Vec::new();
    let mut bin_start = sorted[0];
    let mut count = 0;
    for &v in &sorted {
        let mut bin_end = bin_start + 1.max(bin_start / 100);
        if v < bin_end {
            count += 1;
            continue;
        }
        // The next non-empty bin: adjacent to this one merges into its peak.
        let mut adjacent = true;
        loop {
            bin_start = bin_end;
            bin_end = bin_start + 1.max(bin_start / 100);
            if v < bin_end {
                break;
            }
            adjacent = false;
        }
        if !adjacent {
            counts.push(count);
            count = 0;
        }
        count += 1;
    }
    counts.push(count);
    let kept: Vec<usize> = counts.into_iter().filter(|&c| c >= tiny).collect();
    if rough {
        kept.iter().any(|&c| c >= 10)
    } else {
        !kept.is_empty() && kept.iter().all(|&c| c >= 10)
    }
}
