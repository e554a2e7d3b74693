//! A benchmark as results.json keeps it (`vms[].benchmarks[]`): what the
//! guest said, the peaks the host derives again from the raw values (the
//! guest is untrusted: its own summary is not taken), and the exits the
//! VMM attributed to its window. `docs/results-json.md` documents each field.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::catalog::Suite;
use super::outcome::{Outcome, Samples};

/// How a benchmark ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Measured: `samples` holds the values.
    Ok,
    /// It cannot run on this CPU or backend: `why`.
    Unavailable,
    /// It ran and failed, hung or crashed the guest: `why`.
    Failed,
    /// It never ran (an earlier benchmark hung the guest, the VM did not
    /// boot, the run was interrupted): `why`.
    NotRun,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Unavailable => "unavailable",
            Status::Failed => "failed",
            Status::NotRun => "not_run",
        }
    }
}

/// One benchmark in one VM.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchmarkRecord {
    pub name: String,
    pub suite: Suite,
    pub status: Status,
    /// Why it is not `ok`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub why: Option<String>,
    /// The measurement, when `ok`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub samples: Option<SamplesRecord>,
    /// kvm backend: the exits of the benchmark's window.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub exits: Option<BenchExits>,
    /// Why there are no `exits` (QEMU; a window the VMM did not record).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub exits_why_none: Option<String>,
    /// The inter suite: the other VM of the pair.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub peer_vm: Option<u32>,
    /// The inter suite: what the host's relay did for this benchmark.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub relay: Option<RelayRecord>,
}

/// A measured benchmark: calibration, raw values and what the host derives.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SamplesRecord {
    /// `ns` or `cycles`, per operation.
    pub unit: String,
    /// The clock the guest timed with.
    pub clock: String,
    /// Operations per sample.
    pub iterations: u64,
    /// One timed run's fixed cost (subtracted from each sample), thousandths of the unit.
    pub overhead_milli: u64,
    pub calibration_runs: u32,
    /// Why sampling stopped: `peaks`, `max_samples`, `budget`.
    pub stop: String,
    /// Every sample, per operation in thousandths of the unit, in order.
    pub values_milli: Vec<u64>,
    /// Over every sample, in the unit.
    pub median: f64,
    pub min: f64,
    pub max: f64,
    /// The distribution's peaks (`vmbench_sampling::peaks`), smallest first.
    pub peaks: Vec<PeakRecord>,
    /// The exit-attribution window the guest marked, and its operations.
    pub window: u16,
    pub ops_in_window: u64,
    /// The benchmark's own figures (bytes moved, a block's size).
    #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
    pub extra: BTreeMap<String, u64>,
}

/// One peak of a benchmark's values.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PeakRecord {
    /// Its median, in the unit.
    pub value: f64,
    pub low: f64,
    pub high: f64,
    pub count: usize,
    /// Its share of all samples, 0 to 1.
    pub share: f64,
}

/// The exits the VMM attributed to a benchmark's window (kvm backend).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BenchExits {
    pub window: u16,
    /// Operations timed in the window (the guest's `ops_in_window`).
    pub ops: u64,
    /// The window's length on the VMM's clock.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub window_ns: Option<u64>,
    /// Exits the VMM handled in userspace, by kind (`io_in`, `mmio_read`, …).
    pub userspace: BTreeMap<String, ExitsOfKind>,
    /// All userspace exits per operation.
    pub userspace_per_op: f64,
    /// The VMM's mean handling time of those exits, ns.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub vmm_mean_ns: Option<f64>,
    /// KVM's binary statistics' deltas over the window, every vCPU summed
    /// (`exits` counts every exit, in-kernel ones too).
    pub kvm: BTreeMap<String, StatDelta>,
}

/// Userspace exits of one kind in a window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ExitsOfKind {
    pub count: u64,
    pub total_ns: u64,
    pub per_op: f64,
}

/// One KVM statistic over a window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct StatDelta {
    pub delta: u64,
    pub per_op: f64,
}

/// What the host's relay did for one inter-suite benchmark.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct RelayRecord {
    /// The relay's own CPU time (its thread, user + system) for this benchmark.
    pub cpu_ms: f64,
    /// Bytes it moved from the measuring VM to its peer, and back.
    pub bytes_to_peer: u64,
    pub bytes_from_peer: u64,
}

impl BenchmarkRecord {
    /// A benchmark that did not get measured.
    pub fn not_measured(name: &str, suite: Suite, status: Status, why: String) -> Self {
        BenchmarkRecord {
            name: name.to_string(),
            suite,
            status,
            why: Some(why),
            samples: None,
            exits: None,
            exits_why_none: None,
            peer_vm: None,
            relay: None,
        }
    }

    /// What a guest reported.
    pub fn from_outcome(name: &str, suite: Suite, outcome: Outcome) -> Self {
        match outcome {
            Outcome::Done(samples) => BenchmarkRecord {
                samples: Some(SamplesRecord::from_samples(samples)),
                status: Status::Ok,
                why: None,
                ..Self::not_measured(name, suite, Status::Ok, String::new())
            },
            Outcome::Unavailable { why } => {
                Self::not_measured(name, suite, Status::Unavailable, why)
            }
            Outcome::Failed { why } => Self::not_measured(name, suite, Status::Failed, why),
        }
    }
}

/// Thousandths of the unit as the unit.
pub fn unit_of_milli(milli: u64) -> f64 {
    milli as f64 / vmbench_sampling::MILLI as f64
}

impl SamplesRecord {
    /// The guest's samples, with the summary and peaks derived here.
    /// `samples.values` must not be empty (the readers of both guests'
    /// reports refuse an `ok` without values).
    pub fn from_samples(samples: Samples) -> Self {
        let summary = vmbench_sampling::summary(&samples.values);
        let total = samples.values.len().max(1) as f64;
        let peaks = vmbench_sampling::peaks(&samples.values)
            .into_iter()
            .map(|p| PeakRecord {
                value: unit_of_milli(p.value),
                low: unit_of_milli(p.low),
                high: unit_of_milli(p.high),
                count: p.count,
                share: p.count as f64 / total,
            })
            .collect();
        let (median, min, max) = summary.map_or((0.0, 0.0, 0.0), |s| {
            (
                unit_of_milli(s.median),
                unit_of_milli(s.min),
                unit_of_milli(s.max),
            )
        });
        SamplesRecord {
            unit: samples.unit,
            clock: samples.clock,
            iterations: samples.iterations,
            overhead_milli: samples.overhead_milli,
            calibration_runs: samples.calibration_runs,
            stop: samples.stop,
            values_milli: samples.values,
            median,
            min,
            max,
            peaks,
            window: samples.window,
            ops_in_window: samples.ops_in_window,
            extra: samples.extra.into_iter().collect(),
        }
    }

    /// Every value in the unit.
    pub fn values(&self) -> impl Iterator<Item = f64> + '_ {
        self.values_milli.iter().map(|&v| unit_of_milli(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_derives_summary_and_peaks_from_the_raw_values() {
        let mut values = vec![10_000u64; 30];
        values.extend(vec![20_000u64; 10]);
        values.push(90_000);
        let record = SamplesRecord::from_samples(Samples {
            unit: "ns".into(),
            clock: "CLOCK_MONOTONIC_RAW/tsc".into(),
            iterations: 8,
            overhead_milli: 5,
            calibration_runs: 9,
            values,
            stop: "peaks".into(),
            window: 1,
            ops_in_window: 8 * 41,
            extra: vec![("bytes".into(), 1)],
        });
        assert_eq!((record.median, record.min, record.max), (10.0, 10.0, 90.0));
        // The lone 90 ns sample is a tiny peak: dropped from the peaks.
        let peaks: Vec<(f64, usize)> = record.peaks.iter().map(|p| (p.value, p.count)).collect();
        assert_eq!(peaks, [(10.0, 30), (20.0, 10)]);
        assert!((record.peaks[0].share - 30.0 / 41.0).abs() < 1e-9);
        assert_eq!(record.extra["bytes"], 1);
    }
}
