//! The summary of one sample: location, spread, tail percentiles and the
//! values that look like outliers.
//!
//! Percentiles interpolate linearly between the closest ranks, numpy's
//! default (`method="linear"`, Hyndman and Fan's definition 7): the q-th
//! quantile of n sorted values sits at position h = (n − 1)·q, between
//! `x[⌊h⌋]` and `x[⌊h⌋ + 1]`.
//!
//! Outliers follow hyperfine (`src/outlier_detection.rs`) to the letter: a
//! value's modified z-score is `(x − median) / MAD`, with the raw MAD (or
//! `f64::EPSILON` where the MAD is 0), and |z| above 14.826 = 10 × 1.4826
//! flags it. 1.4826·MAD estimates σ for normal data, so the rule flags values
//! more than ten robust standard deviations from the median: hyperfine uses
//! it to warn about a disturbed run, not to trim tails. Iglewicz and
//! Hoaglin's own score, `0.6745·(x − median)/MAD` against 3.5, is not used.

use serde::{Deserialize, Serialize};

/// Threshold on `|x − median| / MAD` above which a value is flagged as an
/// outlier: 10 robust standard deviations, 1.4826 being the factor that turns
/// a MAD into σ for normal data (hyperfine's `OUTLIER_THRESHOLD`).
pub const OUTLIER_THRESHOLD: f64 = 1.4826 * 10.0;

/// Statistics of one sample, in the sample's own unit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Number of values, NaNs left out.
    pub n: usize,
    pub median: f64,
    pub mean: f64,
    pub min: f64,
    pub max: f64,
    /// 90th percentile, linear interpolation between closest ranks (numpy's
    /// default).
    pub p90: f64,
    /// 99th percentile, same definition as `p90`.
    pub p99: f64,
    /// Sample standard deviation (divisor n − 1); 0 for a single value.
    pub stddev: f64,
    /// Median absolute deviation from the median, raw: not scaled by 1.4826
    /// (scipy's `median_abs_deviation` with its default `scale=1.0`).
    pub mad: f64,
    /// Indices into the slice given to [`Summary::of`] (NaNs counted, so an
    /// index names the caller's value) of the values whose
    /// `|x − median| / MAD` exceeds [`OUTLIER_THRESHOLD`]. Flagged, never
    /// dropped: every other field includes them.
    pub outliers: Vec<usize>,
}

impl Summary {
    /// Summarises `values`, leaving NaNs out; `None` when no value is left.
    pub fn of(values: &[f64]) -> Option<Summary> {
        let mut sorted: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
        if sorted.is_empty() {
            return None;
        }
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = median_sorted(&sorted);
        let (min, max) = (sorted[0], sorted[n - 1]);
        // A constant sample's mean is its value and its spread exactly 0,
        // which the rounding of Σx/n would otherwise blur.
        let constant = min == max;
        let mean = if constant {
            min
        } else {
            sorted.iter().sum::<f64>() / n as f64
        };
        let stddev = if n > 1 && !constant {
            let squares: f64 = sorted.iter().map(|x| (x - mean).powi(2)).sum();
            (squares / (n - 1) as f64).sqrt()
        } else {
            0.0
        };
        let mad = mad_about(&sorted, median);
        // hyperfine divides by ε where the MAD is 0, so with most values equal
        // any different value is flagged.
        let scale = if mad > 0.0 { mad } else { f64::EPSILON };
        let outliers = values
            .iter()
            .enumerate()
            .filter(|(_, x)| ((**x - median) / scale).abs() > OUTLIER_THRESHOLD)
            .map(|(i, _)| i)
            .collect();
        Some(Summary {
            n,
            median,
            mean,
            min,
            max,
            p90: quantile_sorted(&sorted, 0.90),
            p99: quantile_sorted(&sorted, 0.99),
            stddev,
            mad,
            outliers,
        })
    }
}

/// The q-th quantile (0 ≤ q ≤ 1) of ascending, NaN-free, non-empty values,
/// interpolated linearly between the closest ranks (numpy's default).
pub(crate) fn quantile_sorted(sorted: &[f64], q: f64) -> f64 {
    let h = (sorted.len() - 1) as f64 * q.clamp(0.0, 1.0);
    let below = h.floor() as usize;
    let above = (below + 1).min(sorted.len() - 1);
    let (low, high) = (sorted[below], sorted[above]);
    // Equal neighbours (infinities among them) need no interpolation, which
    // would turn ∞ − ∞ into NaN.
    let fraction = h - below as f64;
    if fraction == 0.0 || low == high {
        low
    } else if (high - low).is_finite() {
        low + fraction * (high - low)
    } else {
        // The gap overflows between values near ±f64::MAX.
        low * (1.0 - fraction) + high * fraction
    }
}

/// The median of ascending, NaN-free, non-empty values: the middle one, or
/// the mean of the middle two.
pub(crate) fn median_sorted(sorted: &[f64]) -> f64 {
    let middle = sorted.len() / 2;
    if sorted.len() % 2 == 1 {
        sorted[middle]
    } else {
        midpoint(sorted[middle - 1], sorted[middle])
    }
}

/// (a + b)/2 without overflow near ±f64::MAX: halving is exact, so this is
/// the correctly rounded mean wherever a + b would not overflow.
pub(crate) fn midpoint(a: f64, b: f64) -> f64 {
    if a == b {
        a
    } else {
        a / 2.0 + b / 2.0
    }
}

/// The median of `|x − center|` over ascending, NaN-free, non-empty values.
fn mad_about(sorted: &[f64], center: f64) -> f64 {
    let mut deviations: Vec<f64> = sorted.iter().map(|x| (x - center).abs()).collect();
    // An infinite value with an infinite median leaves a NaN deviation; it
    // sorts last and so stays out of the middle unless most values are NaN.
    deviations.sort_by(f64::total_cmp);
    median_sorted(&deviations)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn close(actual: f64, expected: f64) -> bool {
        (actual - expected).abs() <= 1e-12 * expected.abs().max(1.0)
    }

    /// Boot times in ms with one disturbed run. Expected values from
    /// `stats/tests/reference/reference.py` (section "summary"): numpy 1.26
    /// `np.percentile` (default `method="linear"`), `np.median`, `np.mean`,
    /// `np.std(ddof=1)`, scipy 1.17 `stats.median_abs_deviation` (scale 1.0).
    const BOOT_MS: [f64; 12] = [
        101.2, 99.8, 100.4, 102.9, 98.7, 100.0, 100.9, 99.5, 101.7, 100.2, 140.3, 100.6,
    ];

    #[test]
    fn matches_numpy_and_scipy() {
        let s = Summary::of(&BOOT_MS).unwrap();
        assert_eq!(s.n, 12);
        assert!(close(s.median, 100.5), "{}", s.median);
        assert!(close(s.mean, 103.85000000000001), "{}", s.mean);
        assert!(close(s.p90, 102.78), "{}", s.p90);
        assert!(close(s.p99, 136.18600000000004), "{}", s.p99);
        assert!(close(s.stddev, 11.529842701757591), "{}", s.stddev);
        assert!(close(s.mad, 0.7000000000000028), "{}", s.mad);
        assert_eq!((s.min, s.max), (98.7, 140.3));
        // 140.3 is (140.3 − 100.5) / 0.7 ≈ 56.9 MADs out; 102.9 is 3.4.
        assert_eq!(s.outliers, vec![10]);
    }

    #[test]
    fn percentiles_of_small_samples() {
        // numpy: np.percentile([1, 2, 3, 4], [90, 99]) = [3.7, 3.97];
        // np.percentile([5], 99) = 5.0 ("summary" section of reference.py).
        let s = Summary::of(&[4.0, 1.0, 3.0, 2.0]).unwrap();
        assert!(
            close(s.p90, 3.7) && close(s.p99, 3.9699999999999998),
            "{s:?}"
        );
        assert_eq!(s.median, 2.5);
        let s = Summary::of(&[5.0]).unwrap();
        assert_eq!((s.p90, s.p99, s.stddev, s.mad), (5.0, 5.0, 0.0, 0.0));
        assert!(s.outliers.is_empty());
    }

    /// hyperfine's own cases (`test_detect_outliers` and
    /// `test_detect_outliers_if_mad_becomes_0` in `src/outlier_detection.rs`),
    /// its expected outlier counts with the indices they imply.
    #[test]
    fn outliers_as_hyperfine_flags_them() {
        let flagged = |xs: &[f64]| Summary::of(xs).unwrap().outliers;
        assert!(flagged(&[50.0]).is_empty());
        assert!(flagged(&[1000.0, 0.0]).is_empty());
        assert!(flagged(&[-0.2, 0.0, 0.2]).is_empty());
        assert_eq!(flagged(&[-0.2, 0.0, 0.2, 4.0]), vec![3]);
        assert_eq!(flagged(&[0.5, 0.30, 0.29, 0.31, 0.30]), vec![0]);
        let normal = [
            2.33269488,
            1.42195907,
            -0.57527698,
            -0.31293437,
            2.2948158,
            0.75813273,
            -1.0712388,
            -0.96394741,
            -1.15897446,
            1.10976285,
        ];
        assert!(flagged(&normal).is_empty());
        let mut disturbed = normal.to_vec();
        disturbed.extend([20.0, -500.0]);
        assert_eq!(flagged(&disturbed), vec![10, 11]);
        // MAD 0: hyperfine divides by ε, so any other value is flagged.
        let mut tens = vec![10.0; 7];
        tens.push(100.0);
        assert_eq!(flagged(&tens), vec![7]);
        tens.push(100.0);
        assert_eq!(flagged(&tens), vec![7, 8]);
    }

    #[test]
    fn nans_are_left_out_but_indices_name_the_callers_values() {
        assert_eq!(Summary::of(&[]), None);
        assert_eq!(Summary::of(&[f64::NAN, f64::NAN]), None);
        let s = Summary::of(&[f64::NAN, -0.2, 0.0, f64::NAN, 0.2, 4.0]).unwrap();
        assert_eq!((s.n, s.median, s.max), (4, 0.1, 4.0));
        assert_eq!(s.outliers, vec![5]);
    }

    /// Inputs proptest once shrank a failure to.
    #[test]
    fn extreme_values_keep_the_statistics_ordered() {
        // Interpolating between f64::MAX and ∞ at a fraction of 0 gave NaN.
        let s = Summary::of(&[f64::INFINITY, f64::MAX, f64::MAX]).unwrap();
        assert_eq!(
            (s.min, s.median, s.max),
            (f64::MAX, f64::MAX, f64::INFINITY)
        );
        // Σx/n of a constant sample rounded away from x, leaving a spread.
        let s = Summary::of(&[-269107145998.2354; 3]).unwrap();
        assert_eq!((s.mean, s.stddev), (-269107145998.2354, 0.0));
        // The gap between −MAX and MAX overflows; the median is still 0.
        assert_eq!(Summary::of(&[-f64::MAX, f64::MAX]).unwrap().median, 0.0);
    }

    #[test]
    fn serialises_to_json_and_back() {
        let s = Summary::of(&BOOT_MS).unwrap();
        let json = serde_json::to_string(&s).unwrap();
        assert!(json.contains("\"p99\":") && json.contains("\"outliers\":[10]"));
        // serde_json's default float parsing may miss by an ulp.
        let back: Summary = serde_json::from_str(&json).unwrap();
        assert_eq!((back.n, &back.outliers), (s.n, &s.outliers));
        assert!(close(back.mean, s.mean) && close(back.stddev, s.stddev));
    }

    proptest! {
        #[test]
        fn never_panics_and_orders_its_statistics(
            values in proptest::collection::vec(
                prop_oneof![
                    any::<f64>(),
                    Just(f64::NAN),
                    Just(f64::INFINITY),
                    Just(f64::MAX),
                    -1e3..1e3f64,
                ],
                0..40,
            )
        ) {
            let kept = values.iter().filter(|x| !x.is_nan()).count();
            match Summary::of(&values) {
                None => prop_assert_eq!(kept, 0),
                Some(s) => {
                    prop_assert_eq!(s.n, kept);
                    prop_assert!(s.min <= s.median && s.median <= s.max);
                    prop_assert!(s.p90 <= s.p99 || s.p99.is_nan() || s.p90.is_nan());
                    prop_assert!(s.outliers.iter().all(|&i| i < values.len()));
                }
            }
        }

        #[test]
        fn all_equal_values_have_no_spread_and_no_outliers(x in -1e12..1e12f64, n in 1..30usize) {
            let s = Summary::of(&vec![x; n]).unwrap();
            prop_assert_eq!((s.median, s.p90, s.p99, s.mad, s.stddev), (x, x, x, 0.0, 0.0));
            prop_assert!(s.outliers.is_empty());
        }
    }
}
