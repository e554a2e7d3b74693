//! Statistics for vmbench: did variant B boot slower than A, by how much, and
//! how sure is that? Pure functions of their inputs: no I/O, no clock, and
//! every random choice is drawn from a seeded ChaCha8 generator, so the same
//! numbers always give the same answer.
//!
//! # The methods
//!
//! - **Summary** ([`Summary::of`]): n, median, mean, min, max, p90 and p99
//!   (linear interpolation between closest ranks, numpy's default), sample
//!   standard deviation (n − 1), the raw median absolute deviation (MAD), and
//!   the values more than ten robust standard deviations from the median,
//!   flagged by hyperfine's rule `|x − median| / MAD > 14.826`.
//! - **Bootstrap interval of the ratio of medians B/A**
//!   ([`ratio_of_medians_ci`]): resample each side with replacement (10 000
//!   times by default), take median(B*)/median(A*) each time, and keep the
//!   middle 95 % of those ratios (the percentile method). A ratio says "B
//!   takes 1.07× A's time" whatever the metric's unit.
//! - **Mann–Whitney U test** ([`mann_whitney_u`]): does one sample tend to
//!   lie above the other? It uses ranks only, so a few slow outliers cannot
//!   fake or hide a shift. Exact null distribution when there are no ties
//!   and one sample has at most 8 values, else the normal approximation with
//!   tie and continuity corrections: scipy's `mannwhitneyu` defaults.
//! - **Benjamini–Hochberg** ([`benjamini_hochberg`]): comparing twenty
//!   metrics at once, some p-values are small by chance; the adjusted
//!   p-values bound the expected share of false alarms among the flagged.
//! - **E-divisive means** ([`change_points`]): where in a metric's history did
//!   its distribution change? Split where the energy distance between before
//!   and after is largest, keep the split if shuffled histories rarely split
//!   as well (a permutation test), and repeat inside the parts.
//!
//! # The verdict rule ([`compare`])
//!
//! Each metric has a direction (lower or higher is better) and a noise band,
//! a fraction (±5 % for boot phases, ±2 % for micro-benchmarks): changes
//! inside it are not worth acting on. With more than 5 values on each side:
//!
//! - **regression** when the BH-corrected p < α (0.01) and the whole interval
//!   of B/A lies beyond the band on the worse side (above 1 + band when
//!   lower is better); **improvement** symmetrically;
//! - **no change** when the interval lies inside [1 − band, 1 + band];
//! - **inconclusive** otherwise, with an estimate of how many values per
//!   side would settle it if the ratio and spread stay as observed.
//!
//! With 5 values or fewer on a side, an interval and a rank test say little,
//! and LKP's range rule decides instead: drop each side's single min and max
//! when it has 4 or more values; B is worse when B's min lies beyond A's
//! median and B's median beyond A's max (and the ratio of medians beyond the
//! band); otherwise inconclusive, never "no change".

mod bootstrap;
mod change_points;
mod fdr;
mod mann_whitney;
mod summary;
mod verdict;

pub use bootstrap::{ratio_of_medians_ci, BootstrapConfig, RatioCi};
pub use change_points::{change_points, ChangePointConfig};
pub use fdr::benjamini_hochberg;
pub use mann_whitney::{mann_whitney_u, MannWhitney, EXACT_MAX_N, EXACT_MAX_PAIRS};
pub use summary::{Summary, OUTLIER_THRESHOLD};
pub use verdict::{
    compare, CompareConfig, Comparison, Direction, Metric, Verdict, NOISE_BAND_BOOT_PHASE,
    NOISE_BAND_MICRO, RANGE_RULE_MAX_N,
};

/// How a metric was judged: which test, or the range rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// Mann–Whitney with the exact null distribution.
    MannWhitneyExact,
    /// Mann–Whitney with the normal approximation.
    MannWhitneyNormal,
    /// LKP's range rule, for 5 or fewer values on a side.
    RangeRule,
}

/// What this crate refuses: a configuration out of range, or data a method
/// cannot use.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    #[error("Sample {0} has no values (NaNs are left out)")]
    EmptySample(char),
    #[error("Sample {sample} holds {value}; a ratio of medians needs finite values above 0")]
    NotPositive { sample: char, value: f64 },
    #[error("Confidence level {0} is not between 0 and 1")]
    Confidence(f64),
    #[error("The bootstrap needs at least one resample")]
    NoResamples,
    #[error("Significance level {0} is not between 0 and 1")]
    Significance(f64),
    #[error("Noise band {value} of metric {metric} is not a fraction in [0, 1)")]
    NoiseBand { metric: String, value: f64 },
    #[error("p-value {0} is not between 0 and 1")]
    PValue(f64),
    #[error("Value {value} at index {index} of the series is not finite")]
    NonFinite { index: usize, value: f64 },
    #[error("The permutation test needs at least one permutation")]
    NoPermutations,
}

pub type Result<T> = std::result::Result<T, Error>;
