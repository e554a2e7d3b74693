//! The verdict on each metric of an A/B comparison, from the Mann–Whitney
//! test, the bootstrap interval of B/A and the metric's noise band (the rule
//! is in the crate's overview), with one Benjamini–Hochberg correction
//! across the metrics tested.
//!
//! The estimate given with an inconclusive verdict assumes the interval's
//! half-widths shrink as √(1/n_A + 1/n_B) and the ratio stays where it is:
//! the half-width on the side that must clear a band edge is scaled to the
//! room left between the ratio and that edge, and the same number of values
//! per side that gives that width is reported. Where the interval already
//! clears the band but the corrected p does not clear α, the test's z-score
//! is scaled as √n instead.

use serde::{Deserialize, Serialize};

use crate::bootstrap::{ratio_of_medians_ci, BootstrapConfig, RatioCi};
use crate::fdr::benjamini_hochberg;
use crate::mann_whitney::{mann_whitney_u, normal_upper_tail};
use crate::summary::median_sorted;
use crate::{Error, Method, Result};

/// Noise band of a boot phase: changes within ±5 % are not worth acting on.
pub const NOISE_BAND_BOOT_PHASE: f64 = 0.05;
/// Noise band of a micro-benchmark: ±2 %.
pub const NOISE_BAND_MICRO: f64 = 0.02;
/// Up to this many values on either side, the range rule decides instead of
/// the test and interval.
pub const RANGE_RULE_MAX_N: usize = 5;

/// Which way is better for a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Durations: a larger B is a regression.
    LowerIsBetter,
    /// Rates: a smaller B is a regression.
    HigherIsBetter,
}

/// What the comparison concludes about B against A.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Regression,
    Improvement,
    NoChange,
    Inconclusive,
}

/// One metric's two samples, in one unit (ms, MiB/s...).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Metric<'a> {
    pub name: &'a str,
    /// The baseline's values.
    pub a: &'a [f64],
    /// The candidate's values.
    pub b: &'a [f64],
    pub direction: Direction,
    /// Relative change not worth acting on, a fraction: 0.05 for ±5 %
    /// ([`NOISE_BAND_BOOT_PHASE`], [`NOISE_BAND_MICRO`]).
    pub noise_band: f64,
}

/// Settings shared by all the metrics of one comparison.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CompareConfig {
    /// Significance level for the BH-corrected p-values (default 0.01).
    pub alpha: f64,
    /// The interval's resamples, confidence and seed; each metric uses the
    /// same seed, so its row does not depend on the other metrics.
    pub bootstrap: BootstrapConfig,
}

impl Default for CompareConfig {
    fn default() -> Self {
        CompareConfig {
            alpha: 0.01,
            bootstrap: BootstrapConfig::default(),
        }
    }
}

/// One metric's row. Values are in the metric's unit; ratios are B/A.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    pub name: String,
    pub direction: Direction,
    pub noise_band: f64,
    /// Values compared, NaNs left out.
    pub n_a: usize,
    pub n_b: usize,
    pub median_a: Option<f64>,
    pub median_b: Option<f64>,
    /// median(B)/median(A); `None` unless both samples are finite and
    /// positive.
    pub ratio: Option<f64>,
    /// The bootstrap interval of the ratio (percentile method).
    pub ci_low: Option<f64>,
    pub ci_high: Option<f64>,
    /// Mann–Whitney U of B: the pairs (a, b) with b > a, a tie counting ½
    /// (scipy's `mannwhitneyu(b, a).statistic`). `None` under the range rule.
    pub u: Option<f64>,
    /// Two-sided Mann–Whitney p-value; `None` under the range rule.
    pub p: Option<f64>,
    /// `p` adjusted by Benjamini–Hochberg across the metrics tested.
    pub p_corrected: Option<f64>,
    /// `None` when a sample has no values.
    pub method: Option<Method>,
    pub verdict: Verdict,
    /// One sentence on why: the evidence, or what would settle it.
    pub note: String,
}

/// Compares every metric's B against its A, correcting the p-values for the
/// number of metrics tested. An error only for a configuration or noise band
/// out of range; a metric whose data cannot be judged is `Inconclusive`, its
/// note saying why.
pub fn compare(metrics: &[Metric<'_>], config: &CompareConfig) -> Result<Vec<Comparison>> {
    config.bootstrap.check()?;
    if !(config.alpha > 0.0 && config.alpha < 1.0) {
        return Err(Error::Significance(config.alpha));
    }
    if let Some(m) = metrics
        .iter()
        .find(|m| !(m.noise_band >= 0.0 && m.noise_band < 1.0))
    {
        return Err(Error::NoiseBand {
            metric: m.name.to_string(),
            value: m.noise_band,
        });
    }
    let mut rows: Vec<Comparison> = metrics.iter().map(|m| measure(m, config)).collect();
    let tested: Vec<usize> = (0..rows.len()).filter(|&i| rows[i].p.is_some()).collect();
    let p_values: Vec<f64> = tested.iter().filter_map(|&i| rows[i].p).collect();
    for (&i, corrected) in tested.iter().zip(benjamini_hochberg(&p_values)?) {
        rows[i].p_corrected = Some(corrected);
    }
    for (row, metric) in rows.iter_mut().zip(metrics) {
        if row.method.is_some() && row.note.is_empty() {
            let (verdict, note) = judge(row, metric, config);
            row.verdict = verdict;
            row.note = note;
        }
    }
    Ok(rows)
}

/// A row with everything but the corrected p and the verdict; the note is
/// already written where the data settle the verdict (inconclusive).
fn measure(metric: &Metric<'_>, config: &CompareConfig) -> Comparison {
    let sorted = |values: &[f64]| {
        let mut kept: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
        kept.sort_by(f64::total_cmp);
        kept
    };
    let (a, b) = (sorted(metric.a), sorted(metric.b));
    let mut row = Comparison {
        name: metric.name.to_string(),
        direction: metric.direction,
        noise_band: metric.noise_band,
        n_a: a.len(),
        n_b: b.len(),
        median_a: (!a.is_empty()).then(|| median_sorted(&a)),
        median_b: (!b.is_empty()).then(|| median_sorted(&b)),
        ratio: None,
        ci_low: None,
        ci_high: None,
        u: None,
        p: None,
        p_corrected: None,
        method: None,
        verdict: Verdict::Inconclusive,
        note: String::new(),
    };
    if a.is_empty() || b.is_empty() {
        row.note = format!(
            "Nothing to compare: {} has no values.",
            if a.is_empty() { "A" } else { "B" }
        );
        return row;
    }
    match ratio_of_medians_ci(&a, &b, &config.bootstrap) {
        Ok(RatioCi { ratio, low, high }) => {
            row.ratio = Some(ratio);
            row.ci_low = Some(low);
            row.ci_high = Some(high);
        }
        Err(e) => row.note = format!("No ratio of medians: {e}."),
    }
    if a.len() <= RANGE_RULE_MAX_N || b.len() <= RANGE_RULE_MAX_N {
        row.method = Some(Method::RangeRule);
    } else {
        // Both samples are non-empty, so the test cannot fail.
        if let Ok(test) = mann_whitney_u(&b, &a) {
            row.u = Some(test.u_first);
            row.p = Some(test.p_value);
            row.method = Some(test.method);
        }
    }
    row
}

/// The verdict and its note for a row with a ratio (and, unless the range
/// rule applies, a corrected p).
fn judge(row: &Comparison, metric: &Metric<'_>, config: &CompareConfig) -> (Verdict, String) {
    let band = metric.noise_band;
    let (Some(ratio), Some(low), Some(high)) = (row.ratio, row.ci_low, row.ci_high) else {
        return (Verdict::Inconclusive, "No ratio of medians.".into());
    };
    let confidence = config.bootstrap.confidence * 100.0;
    let ci = format!("B/A {ratio:.3}, {confidence:.0} % CI {low:.3}–{high:.3}");
    let band_text = format!("the ±{:.1} % band", band * 100.0);
    // Which side of the band B lies on, if it is beyond it.
    let worse_if_above = metric.direction == Direction::LowerIsBetter;
    let beyond = |above: bool| {
        if above == worse_if_above {
            Verdict::Regression
        } else {
            Verdict::Improvement
        }
    };

    let (n_a, n_b) = (row.n_a, row.n_b);
    if row.method == Some(Method::RangeRule) {
        let (verdict, mut note) = range_rule(metric, ratio, &ci, &band_text, beyond);
        if verdict == Verdict::Inconclusive {
            let estimate =
                estimate_sentence(ratio, (low, high), band, (n_a, n_b), RANGE_RULE_MAX_N + 1);
            note = format!("{note} From the spread so far, {estimate}.");
        }
        return (verdict, note);
    }
    let p = row.p_corrected.unwrap_or(1.0);
    let above = low > 1.0 + band;
    let below = high < 1.0 - band;
    if (above || below) && p < config.alpha {
        let change = (ratio - 1.0).abs() * 100.0;
        let word = if above { "above" } else { "below" };
        return (
            beyond(above),
            format!(
                "B is {change:.1} % {word} A ({ci}, wholly beyond {band_text}; corrected p {p:.2e} < α {}).",
                config.alpha
            ),
        );
    }
    if low >= 1.0 - band && high <= 1.0 + band {
        return (Verdict::NoChange, format!("{ci}: inside {band_text}."));
    }
    let note = if above || below {
        let estimate = match values_for_p(p, config.alpha, n_a, n_b) {
            Some(n) => {
                format!("about {n} values per side would bring it below α if the effect holds")
            }
            None => "the test shows no effect to scale up".into(),
        };
        format!(
            "{ci} lies beyond {band_text}, but corrected p {p:.2e} is not below α {}; {estimate}.",
            config.alpha
        )
    } else {
        format!(
            "{ci} straddles an edge of {band_text}; {}.",
            estimate_sentence(ratio, (low, high), band, (n_a, n_b), 0)
        )
    };
    (Verdict::Inconclusive, note)
}

/// LKP's range rule on samples of 5 or fewer values.
fn range_rule(
    metric: &Metric<'_>,
    ratio: f64,
    ci: &str,
    band_text: &str,
    beyond: impl Fn(bool) -> Verdict,
) -> (Verdict, String) {
    let sorted_trimmed = |values: &[f64]| {
        let mut kept: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
        kept.sort_by(f64::total_cmp);
        if kept.len() >= 4 {
            kept.pop();
            kept.remove(0);
        }
        kept
    };
    let (a, b) = (sorted_trimmed(metric.a), sorted_trimmed(metric.b));
    let (a_min, a_median, a_max) = (a[0], median_sorted(&a), a[a.len() - 1]);
    let (b_min, b_median, b_max) = (b[0], median_sorted(&b), b[b.len() - 1]);
    let band = metric.noise_band;
    let above = b_min > a_median && b_median > a_max && ratio > 1.0 + band;
    let below = b_max < a_median && b_median < a_min && ratio < 1.0 - band;
    let ranges = format!("trimmed ranges A {a_min}–{a_max}, B {b_min}–{b_max}");
    let prefix = format!(
        "Range rule (≤ {RANGE_RULE_MAX_N} values on a side; min and max dropped from a side of 4 or more)"
    );
    if above || below {
        let (word, edge) = if above {
            ("above", "max")
        } else {
            ("below", "min")
        };
        return (
            beyond(above),
            format!(
                "{prefix}: B's values lie {word} A's median and B's median {word} A's {edge} ({ranges}; {ci}, beyond {band_text})."
            ),
        );
    }
    (
        Verdict::Inconclusive,
        format!(
            "{prefix}: the ranges are not separated beyond {band_text} ({ranges}; {ci}); with more than {RANGE_RULE_MAX_N} values per side the test and interval decide."
        ),
    )
}

/// What more values would settle an interval that straddles a band edge:
/// at least `floor` values per side.
fn estimate_sentence(
    ratio: f64,
    (low, high): (f64, f64),
    band: f64,
    (n_a, n_b): (usize, usize),
    floor: usize,
) -> String {
    let (upper, lower) = (1.0 + band, 1.0 - band);
    // How many times narrower the interval must become, and what it would
    // then show.
    let (shrink, goal) = if ratio > upper {
        (
            (ratio - low) / (ratio - upper),
            format!("lie above {upper:.3}"),
        )
    } else if ratio < lower {
        (
            (high - ratio) / (lower - ratio),
            format!("lie below {lower:.3}"),
        )
    } else {
        (
            ((high - ratio) / (upper - ratio)).max((ratio - low) / (ratio - lower)),
            format!("fit inside {lower:.3}–{upper:.3}"),
        )
    };
    match values_for_shrink(shrink, n_a, n_b) {
        Some(n) => format!(
            "about {} values per side would narrow the interval to {goal}, if the ratio and spread stay as observed",
            n.max(floor)
        ),
        None => format!(
            "the ratio {ratio:.3} sits on or too near the band's edge for any practical number of values to settle it"
        ),
    }
}

/// Most values per side an estimate reports; beyond it, none is practical.
const MAX_VALUES_PER_SIDE: f64 = 1_000_000.0;

/// Values per side (equal sides) that make a width ∝ √(1/n_A + 1/n_B)
/// `shrink` times narrower.
fn values_for_shrink(shrink: f64, n_a: usize, n_b: usize) -> Option<usize> {
    let equivalent = 2.0 / (1.0 / n_a as f64 + 1.0 / n_b as f64);
    let needed = (equivalent * shrink * shrink).ceil();
    if !needed.is_finite() || needed > MAX_VALUES_PER_SIDE {
        return None;
    }
    Some((needed as usize).max(n_a.max(n_b) + 1))
}

/// Values per side (equal sides) at which a z-score growing as √n would
/// bring a two-sided p to α.
fn values_for_p(p: f64, alpha: f64, n_a: usize, n_b: usize) -> Option<usize> {
    let z_now = normal_upper_quantile(p / 2.0);
    if z_now <= 0.0 {
        return None;
    }
    values_for_shrink(normal_upper_quantile(alpha / 2.0) / z_now, n_a, n_b)
}

/// The z with P(Z > z) = `tail` for a standard normal Z, by bisection.
fn normal_upper_quantile(tail: f64) -> f64 {
    let (mut low, mut high) = (-40.0f64, 40.0f64);
    for _ in 0..200 {
        let mid = (low + high) / 2.0;
        if normal_upper_tail(mid) > tail {
            low = mid;
        } else {
            high = mid;
        }
    }
    (low + high) / 2.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const A_MS: [f64; 10] = [
        100.3, 101.1, 99.6, 100.8, 102.4, 99.9, 100.1, 101.7, 100.5, 98.9,
    ];

    fn scaled(values: &[f64], factor: f64) -> Vec<f64> {
        values.iter().map(|v| v * factor).collect()
    }

    fn boot_phase<'a>(name: &'a str, a: &'a [f64], b: &'a [f64]) -> Metric<'a> {
        Metric {
            name,
            a,
            b,
            direction: Direction::LowerIsBetter,
            noise_band: NOISE_BAND_BOOT_PHASE,
        }
    }

    fn one(metric: Metric<'_>) -> Comparison {
        compare(&[metric], &CompareConfig::default())
            .unwrap()
            .remove(0)
    }

    #[test]
    fn a_clear_slowdown_is_a_regression() {
        let b = scaled(&A_MS, 1.10);
        let row = one(boot_phase("kernel", &A_MS, &b));
        assert_eq!(row.verdict, Verdict::Regression, "{row:?}");
        assert_eq!(row.method, Some(Method::MannWhitneyNormal));
        assert_eq!((row.n_a, row.n_b), (10, 10));
        assert!((row.ratio.unwrap() - 1.10).abs() < 1e-9);
        assert!(row.ci_low.unwrap() > 1.05 && row.ci_high.unwrap() < 1.15);
        // B above A in every pair: U of B is n_A·n_B.
        assert_eq!(row.u, Some(100.0));
        assert_eq!(row.p, row.p_corrected);
        assert!(row.note.starts_with("B is 10.0 % above A"), "{}", row.note);
    }

    #[test]
    fn direction_decides_which_side_is_worse() {
        let faster = scaled(&A_MS, 0.9);
        let row = one(boot_phase("kernel", &A_MS, &faster));
        assert_eq!(row.verdict, Verdict::Improvement, "{row:?}");
        let throughput = Metric {
            direction: Direction::HigherIsBetter,
            ..boot_phase("MiB/s", &A_MS, &faster)
        };
        assert_eq!(one(throughput).verdict, Verdict::Regression);
    }

    #[test]
    fn a_change_inside_the_band_is_no_change_even_when_significant() {
        let b = scaled(&A_MS, 1.03);
        let row = one(boot_phase("kernel", &A_MS, &b));
        assert_eq!(row.verdict, Verdict::NoChange, "{row:?}");
        assert!(row.p.unwrap() < 0.01);
        assert!(row.note.contains("inside the ±5.0 % band"), "{}", row.note);
    }

    #[test]
    fn a_wide_interval_is_inconclusive_and_says_how_many_values_would_do() {
        // A 7 % slowdown with a CV of about 5 %: the interval straddles 1.05.
        let a = [
            95.0, 104.0, 99.0, 108.0, 92.0, 101.0, 97.0, 110.0, 100.0, 94.0,
        ];
        let b = scaled(&a, 1.07);
        let row = one(boot_phase("kernel", &a, &b));
        assert_eq!(row.verdict, Verdict::Inconclusive, "{row:?}");
        assert!(row.ci_low.unwrap() < 1.05 && row.ci_high.unwrap() > 1.05);
        assert!(row.note.contains("straddles"), "{}", row.note);
        assert!(
            row.note
                .contains("values per side would narrow the interval to lie above 1.050"),
            "{}",
            row.note
        );
    }

    #[test]
    fn estimates_scale_with_the_square_of_the_shrink() {
        // Twice as narrow needs four times the values.
        assert_eq!(values_for_shrink(2.0, 10, 10), Some(40));
        // Unequal sides count as their harmonic mean: 2/(1/6 + 1/12) = 8.
        assert_eq!(values_for_shrink(1.5, 6, 12), Some(18));
        // Never fewer than one more than now.
        assert_eq!(values_for_shrink(1.0, 10, 10), Some(11));
        assert_eq!(values_for_shrink(f64::INFINITY, 10, 10), None);
        assert_eq!(values_for_shrink(1e4, 10, 10), None);
        // z grows as √n: from p = 0.05 (z 1.96) to α = 0.01 (z 2.576).
        assert_eq!(values_for_p(0.05, 0.01, 10, 10), Some(18));
        assert_eq!(values_for_p(1.0, 0.01, 10, 10), None);
        assert!((normal_upper_quantile(0.025) - 1.959963984540054).abs() < 1e-9);
        let edge = estimate_sentence(1.05, (1.0, 1.1), 0.05, (10, 10), 0);
        assert!(
            edge.contains("sits on or too near the band's edge"),
            "{edge}"
        );
    }

    #[test]
    fn the_range_rule_decides_five_or_fewer_values() {
        let a = [100.0, 101.0, 102.0, 103.0, 104.0];
        // B's extremes are trimmed away: 90 and 150 do not count.
        let b = [90.0, 111.0, 112.0, 113.0, 150.0];
        let row = one(boot_phase("kernel", &a, &b));
        assert_eq!(row.method, Some(Method::RangeRule));
        assert_eq!(row.verdict, Verdict::Regression, "{row:?}");
        assert_eq!((row.u, row.p, row.p_corrected), (None, None, None));
        assert!(row.note.starts_with("Range rule"), "{}", row.note);
        assert!(
            row.note.contains("trimmed ranges A 101–103, B 111–113"),
            "{}",
            row.note
        );

        let faster = [80.0, 81.0, 82.0];
        let row = one(boot_phase("kernel", &a, &faster));
        assert_eq!(row.verdict, Verdict::Improvement, "{row:?}");
    }

    #[test]
    fn the_range_rule_never_says_no_change() {
        let a = [100.0, 101.0, 102.0, 103.0, 104.0];
        let row = one(boot_phase("kernel", &a, &a));
        assert_eq!(row.verdict, Verdict::Inconclusive);
        assert!(row.note.contains("not separated"), "{}", row.note);
        // Identical samples: the interval is inside the band already, so the
        // estimate is the test's minimum.
        assert!(
            row.note.ends_with("From the spread so far, about 6 values per side would narrow the interval to fit inside 0.950–1.050, if the ratio and spread stay as observed."),
            "{}",
            row.note
        );
        // Separated ranges, but B is only 2 % slower: within the band.
        let b = scaled(&[102.5, 102.6, 102.7, 102.8, 102.9], 1.0);
        let row = one(boot_phase("kernel", &a, &b));
        assert_eq!(row.verdict, Verdict::Inconclusive, "{row:?}");
        // B's min above A's median, but B's median not above A's max.
        let b = [102.5, 103.5, 103.9, 140.0, 150.0];
        let row = one(boot_phase("kernel", &a, &b));
        assert_eq!(row.verdict, Verdict::Inconclusive, "{row:?}");
    }

    #[test]
    fn six_to_eight_values_use_the_exact_test() {
        let a = &A_MS[..7];
        let b = scaled(a, 1.2);
        let row = one(boot_phase("kernel", a, &b));
        assert_eq!(row.method, Some(Method::MannWhitneyExact));
        assert_eq!(row.verdict, Verdict::Regression, "{row:?}");
    }

    #[test]
    fn benjamini_hochberg_runs_across_the_tested_metrics() {
        let slower = scaled(&A_MS, 1.10);
        let few = [100.0, 101.0];
        let shuffled = [
            100.5, 99.6, 101.7, 100.8, 98.9, 101.1, 102.4, 100.3, 100.1, 99.9,
        ];
        let metrics = [
            boot_phase("slower", &A_MS, &slower),
            boot_phase("few", &few, &few),
            boot_phase("same", &A_MS, &shuffled),
        ];
        let rows = compare(&metrics, &CompareConfig::default()).unwrap();
        let (p1, p3) = (rows[0].p.unwrap(), rows[2].p.unwrap());
        let expected = benjamini_hochberg(&[p1, p3]).unwrap();
        assert_eq!(rows[0].p_corrected, Some(expected[0]));
        assert_eq!(rows[1].p_corrected, None);
        assert_eq!(rows[2].p_corrected, Some(expected[1]));
        assert_eq!(rows[2].verdict, Verdict::NoChange, "{:?}", rows[2]);
        assert_eq!(
            rows.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
            ["slower", "few", "same"]
        );
    }

    #[test]
    fn data_that_cannot_be_judged_is_inconclusive_with_a_reason() {
        let row = one(boot_phase("kernel", &[f64::NAN], &A_MS));
        assert_eq!(
            (row.verdict, row.method, row.n_a),
            (Verdict::Inconclusive, None, 0)
        );
        assert_eq!(row.note, "Nothing to compare: A has no values.");
        let zeros = [0.0; 10];
        let row = one(boot_phase("kernel", &A_MS, &zeros));
        assert_eq!(row.verdict, Verdict::Inconclusive);
        assert_eq!((row.ratio, row.ci_low), (None, None));
        assert!(
            row.note
                .starts_with("No ratio of medians: Sample B holds 0"),
            "{}",
            row.note
        );
    }

    #[test]
    fn refuses_settings_out_of_range() {
        let bad_alpha = CompareConfig {
            alpha: 0.0,
            ..CompareConfig::default()
        };
        assert_eq!(compare(&[], &bad_alpha), Err(Error::Significance(0.0)));
        let metric = Metric {
            noise_band: -0.1,
            ..boot_phase("kernel", &A_MS, &A_MS)
        };
        assert_eq!(
            compare(&[metric], &CompareConfig::default()),
            Err(Error::NoiseBand {
                metric: "kernel".into(),
                value: -0.1
            })
        );
    }

    #[test]
    fn rows_serialise_with_snake_case_words() {
        let b = scaled(&A_MS, 1.10);
        let row = one(boot_phase("kernel", &A_MS, &b));
        let json = serde_json::to_string(&row).unwrap();
        for field in [
            "\"verdict\":\"regression\"",
            "\"method\":\"mann_whitney_normal\"",
            "\"direction\":\"lower_is_better\"",
            "\"p_corrected\":",
            "\"ci_low\":",
        ] {
            assert!(json.contains(field), "{field} not in {json}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]
        #[test]
        fn never_panics_on_any_samples(
            a in proptest::collection::vec(prop_oneof![
                any::<f64>(), Just(f64::NAN), Just(0.0), Just(f64::MAX), 90.0..110.0f64,
            ], 0..14),
            b in proptest::collection::vec(prop_oneof![
                any::<f64>(), Just(f64::INFINITY), Just(100.0), 90.0..130.0f64,
            ], 0..14),
            band in 0.0..0.5f64,
            higher_is_better in any::<bool>(),
        ) {
            let metric = Metric {
                name: "any",
                a: &a,
                b: &b,
                direction: if higher_is_better { Direction::HigherIsBetter } else { Direction::LowerIsBetter },
                noise_band: band,
            };
            let config = CompareConfig {
                bootstrap: BootstrapConfig { resamples: 32, ..BootstrapConfig::default() },
                ..CompareConfig::default()
            };
            let rows = compare(&[metric, metric], &config).unwrap();
            prop_assert_eq!(rows.len(), 2);
            prop_assert!(!rows[0].note.is_empty());
            if rows[0].method == Some(Method::RangeRule) {
                prop_assert!(rows[0].verdict != Verdict::NoChange);
            }
        }
    }
}
