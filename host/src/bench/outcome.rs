//! One benchmark's outcome as a guest reported it, whichever guest: the
//! agent over vsock (protocol v4's `BenchOutcome`) or the vmexit guest on
//! its console ([`super::vmexit_report`]). The host's own type, so that
//! results.json does not follow the wire format.

/// What a guest said about one benchmark.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Done(Samples),
    /// It cannot run here (this CPU, this backend), and why.
    Unavailable {
        why: String,
    },
    /// It ran and failed, and why.
    Failed {
        why: String,
    },
}

/// A benchmark's samples (see `vmbench_sampling`'s primer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Samples {
    /// `ns` or `cycles`.
    pub unit: String,
    /// The clock the guest read: `CLOCK_MONOTONIC_RAW/tsc` (the agent: the
    /// clock and the guest kernel's clocksource), `tsc` (the vmexit guest).
    pub clock: String,
    /// Operations per sample.
    pub iterations: u64,
    /// One timed run's fixed cost, thousandths of the unit.
    pub overhead_milli: u64,
    pub calibration_runs: u32,
    /// Per operation, thousandths of the unit, in the order measured.
    pub values: Vec<u64>,
    /// `peaks`, `max_samples` or `budget`.
    pub stop: String,
    /// The exit-attribution window the guest marked.
    pub window: u16,
    pub ops_in_window: u64,
    /// The benchmark's own figures (bytes moved, a block's size).
    pub extra: Vec<(String, u64)>,
}

impl From<vmbench_proto::BenchOutcome> for Outcome {
    fn from(outcome: vmbench_proto::BenchOutcome) -> Self {
        match outcome {
            vmbench_proto::BenchOutcome::Done(s) => Outcome::Done(Samples {
                unit: s.unit,
                clock: s.clock,
                iterations: s.iterations,
                overhead_milli: s.overhead_milli,
                calibration_runs: s.calibration_runs,
                values: s.values,
                stop: s.stop,
                window: s.window,
                ops_in_window: s.ops_in_window,
                extra: s.extra,
            }),
            vmbench_proto::BenchOutcome::Unavailable { why } => Outcome::Unavailable { why },
            vmbench_proto::BenchOutcome::Failed { why } => Outcome::Failed { why },
        }
    }
}
