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

mod bootstrap;
mod fdr;
mod mann_whitney;
mod summary;

pub use bootstrap::{ratio_of_medians_ci, BootstrapConfig, RatioCi};
pub use fdr::benjamini_hochberg;
pub use mann_whitney::{mann_whitney_u, MannWhitney, EXACT_MAX_N, EXACT_MAX_PAIRS};
pub use summary::{Summary, OUTLIER_THRESHOLD};

/// Which form of a test was used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// Mann–Whitney with the exact null distribution.
    MannWhitneyExact,
    /// Mann–Whitney with the normal approximation.
    MannWhitneyNormal,
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
    #[error("p-value {0} is not between 0 and 1")]
    PValue(f64),
}

pub type Result<T> = std::result::Result<T, Error>;
