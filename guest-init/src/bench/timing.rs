//! Timing one workload with `vmbench-sampling`, on CLOCK_MONOTONIC_RAW in
//! nanoseconds, and turning the measurement into the protocol's `Samples`.

use vmbench_proto::bench::{DEFAULT_BUDGET_MS, DEFAULT_MAX_SAMPLES, MAX_SAMPLES_LIMIT};
use vmbench_proto::{BenchRequest, Samples};
use vmbench_sampling::{measure, per_op_milli, Bench, Config};

use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
use nix::unistd::Pid;

use super::Workload;
use crate::clock::{clocksource, monotonic_raw_ns};

/// The sampling rule's settings for `request`, for a workload that allows
/// at most `max_iterations` operations per run.
pub fn config(request: &BenchRequest, max_iterations: u64) -> Config {
    let max_samples = match request.max_samples {
        0 => DEFAULT_MAX_SAMPLES,
        n => n.min(MAX_SAMPLES_LIMIT),
    };
    let budget_ms = match request.budget_ms {
        0 => DEFAULT_BUDGET_MS,
        n => n,
    };
    Config {
        max_iterations: Config::nanoseconds().max_iterations.min(max_iterations),
        max_samples,
        budget_ticks: u64::from(budget_ms) * 1_000_000,
        rough: request.rough,
        ..Config::nanoseconds()
    }
}

/// A workload as `vmbench-sampling` sees it, with the window marks.
struct Timed<'a> {
    workload: &'a mut dyn Workload,
    /// The window id to mark; `None` outside a VM.
    window: Option<u16>,
}

impl Bench for Timed<'_> {
    type Error = String;

    fn run(&mut self, iterations: u64) -> Result<u64, String> {
        self.workload.run(iterations)
    }

    fn now(&mut self) -> u64 {
        monotonic_raw_ns()
    }

    fn window_start(&mut self) {
        if let Some(id) = self.window {
            crate::marker::window_start(id);
        }
    }

    fn window_end(&mut self) {
        if let Some(id) = self.window {
            // The VMM takes every vCPU's statistics at the end mark: the
            // thread must not move to another vCPU within it.
            let allowed = pin_to_this_cpu();
            crate::marker::window_end(id);
            if let Some(allowed) = allowed {
                let _ = sched_setaffinity(Pid::from_raw(0), &allowed);
            }
        }
    }
}

/// Pins this thread to the CPU it runs on; returns the CPUs it was allowed
/// before, to restore, or `None` if nothing changed.
fn pin_to_this_cpu() -> Option<CpuSet> {
    let allowed = sched_getaffinity(Pid::from_raw(0)).ok()?;
    // SAFETY: sched_getcpu only reads which CPU this thread is on.
    let cpu = usize::try_from(unsafe { libc::sched_getcpu() }).ok()?;
    let mut one = CpuSet::new();
    one.set(cpu).ok()?;
    sched_setaffinity(Pid::from_raw(0), &one).ok()?;
    Some(allowed)
}

/// Calibrates and samples `workload` as `request` asks; marks the window
/// when `in_vm`.
pub fn sample(
    workload: &mut dyn Workload,
    request: &BenchRequest,
    in_vm: bool,
) -> Result<Samples, String> {
    let config = config(request, workload.max_iterations());
    // One operation first, untimed: its one-time costs (a partner process's
    // first run, first faults on fresh pages, a cold cache) would otherwise
    // make calibration's first run look long enough and stop it at 1.
    workload.run(1)?;
    let mut timed = Timed {
        workload,
        window: in_vm.then_some(request.window),
    };
    let measurement = measure(&mut timed, &config)?;
    let calibration = measurement.calibration;
    let mut extra = workload.extra();
    if calibration.cut_short {
        // The runs are shorter than the rule wants: the clock's resolution
        // and the overhead weigh more than they should.
        extra.push(("calibration_cut_short".to_string(), 1));
    }
    extra.push((
        "overhead_ns_per_run".to_string(),
        calibration.overhead_ticks,
    ));
    Ok(Samples {
        unit: "ns".to_string(),
        clock: format!("CLOCK_MONOTONIC_RAW/{}", clocksource()),
        iterations: calibration.iterations,
        overhead_milli: per_op_milli(calibration.overhead_ticks, 0, calibration.iterations),
        calibration_runs: calibration.runs,
        ops_in_window: measurement.ops(),
        values: measurement.values,
        stop: measurement.stop.as_str().to_string(),
        window: request.window,
        extra,
    })
}

/// Times `iterations` calls of `op`, which must not fail.
#[inline(always)]
pub fn time_loop(iterations: u64, mut op: impl FnMut()) -> u64 {
    let start = monotonic_raw_ns();
    for _ in 0..iterations {
        op();
    }
    monotonic_raw_ns().saturating_sub(start)
}

/// Times `iterations` calls of `op`, stopping at its first error.
#[inline(always)]
pub fn time_fallible(
    iterations: u64,
    mut op: impl FnMut() -> Result<(), String>,
) -> Result<u64, String> {
    let start = monotonic_raw_ns();
    for _ in 0..iterations {
        op()?;
    }
    Ok(monotonic_raw_ns().saturating_sub(start))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(max_samples: u32, budget_ms: u32) -> BenchRequest {
        BenchRequest {
            name: "x".into(),
            rough: true,
            max_samples,
            budget_ms,
            window: 3,
        }
    }

    #[test]
    fn zero_means_the_defaults_and_limits_hold() {
        let c = config(&request(0, 0), u64::MAX);
        assert_eq!(c.max_samples, DEFAULT_MAX_SAMPLES);
        assert_eq!(c.budget_ticks, u64::from(DEFAULT_BUDGET_MS) * 1_000_000);
        assert_eq!(c.max_iterations, 1 << 32);
        assert!(c.rough);
        let c = config(&request(u32::MAX, 7), 4096);
        assert_eq!(c.max_samples, MAX_SAMPLES_LIMIT);
        assert_eq!(c.budget_ticks, 7_000_000);
        assert_eq!(c.max_iterations, 4096);
        assert_eq!(c.min_run_ticks, 1_000_000);
    }

    /// A workload whose every operation costs 1 µs of busy waiting.
    struct Spin;

    impl Workload for Spin {
        fn run(&mut self, iterations: u64) -> Result<u64, String> {
            Ok(time_loop(iterations, || {
                let until = monotonic_raw_ns() + 1_000;
                while monotonic_raw_ns() < until {}
            }))
        }

        fn extra(&self) -> Vec<(String, u64)> {
            vec![("spin_ns".into(), 1_000)]
        }
    }

    #[test]
    fn samples_carry_the_calibration_and_the_values() {
        let samples = sample(&mut Spin, &request(50, 2_000), false).unwrap();
        assert_eq!(samples.unit, "ns");
        assert!(samples.clock.starts_with("CLOCK_MONOTONIC_RAW/"));
        assert!(samples.iterations >= 1, "{samples:?}");
        assert!((10..=50).contains(&samples.values.len()), "{samples:?}");
        assert_eq!(
            samples.ops_in_window,
            samples.iterations * samples.values.len() as u64
        );
        assert_eq!(samples.window, 3);
        // Each operation spins at least 1 µs: 1,000,000 ps.
        let median = vmbench_sampling::summary(&samples.values).unwrap().median;
        assert!(median >= 1_000_000, "{median}");
        assert_eq!(samples.extra[0], ("spin_ns".to_string(), 1_000));
    }
}
