//! Did B boot slower than A? Every metric both runs have, its samples from
//! the measured rounds' ok VMs, judged by the statistics crate: the ratio
//! of medians B/A with a bootstrap interval, a Mann–Whitney test (or LKP's
//! range rule at five samples or fewer), Benjamini–Hochberg across the
//! metrics, and a noise band. See `vmbench_stats::compare` for the rule.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use vmbench_stats::{
    CompareConfig, Comparison, Metric, Verdict, NOISE_BAND_BOOT_PHASE, NOISE_BAND_MICRO,
};

use crate::metrics::{self, Direction};
use crate::results::{RunResults, VmStatus};

/// How to judge.
#[derive(Debug, Clone)]
pub struct Judge {
    /// The corrected p-value below which a change is significant.
    pub alpha: f64,
    /// Relative change not worth acting on, for every metric (`--noise`);
    /// none: each metric's own ([`noise_band_of`]).
    pub noise_band: Option<f64>,
    /// Bands of named metrics, over `noise_band` (an experiment file's
    /// `noise_by_metric`).
    pub noise_bands: BTreeMap<String, f64>,
}

impl Default for Judge {
    fn default() -> Self {
        Judge {
            alpha: CompareConfig::default().alpha,
            noise_band: None,
            noise_bands: BTreeMap::new(),
        }
    }
}

/// A metric's own noise band: 2 % for a guest benchmark (`bench.*`: many
/// samples of one operation, virtbench's resolution), 5 % for everything
/// else (boot phases, memory, exit counts).
pub fn noise_band_of(metric: &metrics::MetricDef) -> f64 {
    if metric.name.starts_with(metrics::BENCH_PREFIX) {
        NOISE_BAND_MICRO
    } else {
        NOISE_BAND_BOOT_PHASE
    }
}

/// A comparison of two runs: one row per metric both had.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Verdicts {
    pub baseline: String,
    pub candidate: String,
    pub alpha: f64,
    pub rows: Vec<Row>,
}

/// One metric's verdict, with what it is.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    pub unit: String,
    pub clock: String,
    #[serde(flatten)]
    pub comparison: Comparison,
}

impl Verdicts {
    /// Whether any metric regressed.
    pub fn regressed(&self) -> bool {
        self.rows
            .iter()
            .any(|r| r.comparison.verdict == Verdict::Regression)
    }
}

/// One side of a comparison: a name for it, and each metric's samples.
#[derive(Debug, Clone, Default)]
pub struct Side {
    pub label: String,
    pub samples: BTreeMap<String, (metrics::MetricDef, Vec<f64>)>,
}

impl Side {
    fn add(&mut self, metric: &metrics::MetricDef, value: f64) {
        self.samples
            .entry(metric.name.clone())
            .or_insert_with(|| (metric.clone(), Vec::new()))
            .1
            .push(value);
    }

    /// A run's samples: the measured rounds' ok VMs' values.
    pub fn of_results(label: &str, run: &RunResults) -> Side {
        let mut side = Side {
            label: label.to_string(),
            ..Side::default()
        };
        for vm in run
            .vms
            .iter()
            .filter(|v| !v.warmup && v.status == VmStatus::Ok)
        {
            for sample in metrics::samples_of(vm) {
                side.add(&sample.metric, sample.value);
            }
        }
        side
    }

    /// Adds a stored run's samples of `variant` (warm-up rounds left out).
    pub fn add_record(&mut self, run: &vmbench_store::RunRecord, variant: &str) {
        let defs: BTreeMap<&str, metrics::MetricDef> = run
            .metrics
            .iter()
            .map(|m| (m.name.as_str(), metric_of(m)))
            .collect();
        for sample in run
            .samples
            .iter()
            .filter(|s| s.variant == variant && !s.warmup)
        {
            if let Some(def) = defs.get(sample.metric.as_str()) {
                self.add(def, sample.value);
            }
        }
    }
}

/// The orchestrator's metric from the store's.
pub fn metric_of(m: &vmbench_store::MetricDef) -> metrics::MetricDef {
    metrics::MetricDef {
        name: m.name.clone(),
        unit: m.unit.clone(),
        clock: m.clock.clone(),
        direction: match m.direction {
            vmbench_store::Direction::LowerIsBetter => Direction::LowerIsBetter,
            vmbench_store::Direction::HigherIsBetter => Direction::HigherIsBetter,
        },
        alias: m.alias_group.clone(),
    }
}

/// Compares every metric both sides have (the candidate against the baseline).
pub fn compare(baseline: &Side, candidate: &Side, judge: Judge) -> vmbench_stats::Result<Verdicts> {
    let a = &baseline.samples;
    let b = &candidate.samples;
    let both: Vec<(&metrics::MetricDef, &[f64], &[f64])> = a
        .iter()
        .filter_map(|(name, (def, a))| Some((def, a.as_slice(), b.get(name)?.1.as_slice())))
        .collect();
    let inputs: Vec<Metric<'_>> = both
        .iter()
        .map(|(def, a, b)| Metric {
            name: &def.name,
            a,
            b,
            direction: match def.direction {
                Direction::LowerIsBetter => vmbench_stats::Direction::LowerIsBetter,
                Direction::HigherIsBetter => vmbench_stats::Direction::HigherIsBetter,
            },
            noise_band: judge
                .noise_bands
                .get(&def.name)
                .copied()
                .or(judge.noise_band)
                .unwrap_or_else(|| noise_band_of(def)),
        })
        .collect();
    let config = CompareConfig {
        alpha: judge.alpha,
        ..CompareConfig::default()
    };
    let rows = vmbench_stats::compare(&inputs, &config)?
        .into_iter()
        .zip(&both)
        .map(|(comparison, (def, _, _))| Row {
            unit: def.unit.clone(),
            clock: def.clock.clone(),
            comparison,
        })
        .collect();
    Ok(Verdicts {
        baseline: baseline.label.clone(),
        candidate: candidate.label.clone(),
        alpha: judge.alpha,
        rows,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::results::VmRecord;

    fn run(totals: &[f64]) -> RunResults {
        let mut results = crate::results::test_results();
        for (id, total) in totals.iter().enumerate() {
            let mut vm = VmRecord::new(id as u32, Path::new("/x"));
            vm.status = VmStatus::Ok;
            vm.phases_ms.total = Some(*total);
            results.vms.push(vm);
        }
        results
    }

    #[test]
    fn a_clear_slowdown_is_a_regression_and_the_same_run_no_change() {
        let a: Vec<f64> = (0..10).map(|i| 600.0 + f64::from(i)).collect();
        let b: Vec<f64> = a.iter().map(|x| x * 1.2).collect();
        let side = |label, totals: &[f64]| Side::of_results(label, &run(totals));
        let v = compare(&side("A", &a), &side("B", &b), Judge::default()).unwrap();
        assert_eq!(v.rows.len(), 1);
        assert_eq!(v.rows[0].comparison.name, "phase.total");
        assert_eq!(v.rows[0].comparison.verdict, Verdict::Regression);
        assert!(v.regressed());
        let same = compare(&side("A", &a), &side("A", &a), Judge::default()).unwrap();
        assert_eq!(same.rows[0].comparison.verdict, Verdict::NoChange);
        assert!(!same.regressed());
    }
}
