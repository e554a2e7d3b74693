//! Change points in a metric's history: E-divisive means (Matteson and
//! James 2014) with a permutation test, as MongoDB's
//! `signal_processing_algorithms.energy_statistics.e_divisive` runs it.
//!
//! Splitting a window of values at τ into X (before τ) and Y (from τ on),
//! the energy distance between the two parts is
//! E = 2·mean|X − Y| − mean|X − X'| − mean|Y − Y'| (the within-part means
//! taken over all n² ordered pairs, self-pairs included, as MongoDB does),
//! and the statistic is T(τ) = (n·m/(n + m))·E for parts of n and m values.
//! The best split is the τ with the largest T. It is significant when few
//! random orderings of the window do as well: each of `permutations` times,
//! every window is shuffled and its largest T taken; the candidate's p-value
//! is the count of shuffles whose largest T over all windows reaches the
//! candidate's, divided by `permutations + 1`, and the candidate becomes a
//! change point when that is at most `significance`. The search then repeats
//! in the windows the change points bound, until a candidate fails.
//!
//! A change point's index is the first value of the new regime. Defaults
//! are MongoDB's: 100 permutations, significance 0.05. The shuffles use
//! ChaCha8 seeded from [`ChangePointConfig::seed`], so a history always gives
//! the same change points; which borderline candidates pass differs from
//! MongoDB's numpy generator.

use rand::rngs::ChaCha8Rng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The permutation test's settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ChangePointConfig {
    /// Shuffles per candidate (MongoDB's default: 100).
    pub permutations: usize,
    /// Largest p-value that makes a candidate a change point (MongoDB's
    /// default: 0.05).
    pub significance: f64,
    /// Seed of the ChaCha8 generator that shuffles.
    pub seed: u64,
}

impl Default for ChangePointConfig {
    fn default() -> Self {
        ChangePointConfig {
            permutations: 100,
            significance: 0.05,
            // MongoDB's default implementation seeds with 1234.
            seed: 1234,
        }
    }
}

/// The indices, ascending, at which `series` changes distribution; an error
/// if a value is not finite or the configuration is out of range.
pub fn change_points(series: &[f64], config: &ChangePointConfig) -> Result<Vec<usize>> {
    if config.permutations == 0 {
        return Err(Error::NoPermutations);
    }
    if !(config.significance > 0.0 && config.significance < 1.0) {
        return Err(Error::Significance(config.significance));
    }
    if let Some((index, &value)) = series.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(Error::NonFinite { index, value });
    }
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let mut found: Vec<usize> = Vec::new();
    let mut shuffled = Vec::with_capacity(series.len());
    // Each round adds one change point or stops, so at most n rounds.
    while found.len() < series.len() {
        let bounds = window_bounds(&found, series.len());
        // Reversed so that `max_by`, which keeps the last of equals, keeps the
        // earliest window's candidate, as MongoDB's `max` does.
        let Some((candidate, candidate_t)) = bounds
            .windows(2)
            .rev()
            .filter_map(|w| best_split(&series[w[0]..w[1]]).map(|(tau, t)| (w[0] + tau, t)))
            .max_by(|a, b| a.1.total_cmp(&b.1))
        else {
            break;
        };
        let mut as_good = 0usize;
        for _ in 0..config.permutations {
            let mut best_t = f64::NEG_INFINITY;
            for w in bounds.windows(2) {
                shuffled.clear();
                shuffled.extend_from_slice(&series[w[0]..w[1]]);
                shuffled.shuffle(&mut rng);
                if let Some((_, t)) = best_split(&shuffled) {
                    best_t = best_t.max(t);
                }
            }
            if best_t >= candidate_t {
                as_good += 1;
            }
        }
        let p_value = as_good as f64 / (config.permutations + 1) as f64;
        if p_value > config.significance {
            break;
        }
        found.push(candidate);
        found.sort_unstable();
    }
    Ok(found)
}

/// 0, the change points, the series' length.
fn window_bounds(change_points: &[usize], len: usize) -> Vec<usize> {
    let mut bounds = Vec::with_capacity(change_points.len() + 2);
    bounds.push(0);
    bounds.extend_from_slice(change_points);
    bounds.push(len);
    bounds
}

/// The split τ (0 < τ < len) of `window` with the largest T, and that T;
/// `None` for a window too short to split or with no positive T (all values
/// equal).
fn best_split(window: &[f64]) -> Option<(usize, f64)> {
    let stats = t_statistics(window);
    let (tau, t) = stats.iter().copied().enumerate().skip(1).fold(
        None,
        |best: Option<(usize, f64)>, (tau, t)| match best {
            // The first τ wins ties, as numpy's argmax.
            Some((_, best_t)) if best_t >= t => best,
            _ => Some((tau, t)),
        },
    )?;
    (t > 0.0).then_some((tau, t))
}

/// T(τ) for every τ in 0..len, from sums of distances kept up to date as τ
/// moves right: O(len²) for the whole window.
fn t_statistics(window: &[f64]) -> Vec<f64> {
    let len = window.len();
    let distance = |i: usize, j: usize| (window[i] - window[j]).abs();
    // Sums over unordered pairs: within X, within Y, and across.
    let mut within_x = 0.0;
    let mut within_y: f64 = (0..len)
        .map(|i| (i + 1..len).map(|j| distance(i, j)).sum::<f64>())
        .sum();
    let mut across = 0.0;
    let mut stats = Vec::with_capacity(len);
    for tau in 0..len {
        let (n, m) = (tau as f64, (len - tau) as f64);
        let across_mean = if tau > 0 { across / (n * m) } else { 0.0 };
        let x_mean = if tau > 0 {
            2.0 * within_x / (n * n)
        } else {
            0.0
        };
        let y_mean = 2.0 * within_y / (m * m);
        let energy = 2.0 * across_mean - x_mean - y_mean;
        stats.push(n * m / (n + m) * energy);
        // Value τ moves from Y to X.
        let to_x: f64 = (0..tau).map(|i| distance(i, tau)).sum();
        let to_y: f64 = (tau + 1..len).map(|j| distance(tau, j)).sum();
        across += to_y - to_x;
        within_x += to_x;
        within_y -= to_y;
    }
    stats
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn t_statistics_match_mongodbs() {
        // MongoDB signal-processing-algorithms 2.1.6,
        // `energy_statistics._calculate_t_stats` on this series, printed by
        // `stats/tests/reference/reference.py` (section "e_divisive").
        let series = [1.0, 1.2, 0.9, 1.1, 5.0, 5.2, 4.9, 1.0, 1.1];
        let expected = [
            0.0,
            1.088888888888889,
            2.1746031746031753,
            3.9222222222222243,
            6.148888888888891,
            1.5688888888888899,
            0.0888888888888908,
            2.2746031746031785,
            1.013888888888898,
        ];
        let stats = t_statistics(&series);
        assert_eq!(stats.len(), expected.len());
        for (s, e) in stats.iter().zip(expected) {
            assert!((s - e).abs() < 1e-9, "{stats:?}");
        }
    }

    #[test]
    fn finds_the_shifts_mongodb_finds() {
        // MongoDB's `e_divisive(series)` (pvalue 0.05, 100 permutations)
        // returns [20, 40] for this series (section "e_divisive" of
        // reference.py): two level shifts of 10 %, values with a CV of 1 %.
        let series = reference_shifts();
        let found = change_points(&series, &ChangePointConfig::default()).unwrap();
        assert_eq!(found, vec![20, 40]);
    }

    /// 60 values: 100 for 20, 110 for 20, 100 again, with a deterministic
    /// ±1 % wobble (the same list is in reference.py).
    fn reference_shifts() -> Vec<f64> {
        (0..60)
            .map(|i| {
                let level = if (20..40).contains(&i) { 110.0 } else { 100.0 };
                let wobble = [0.0, 0.7, -0.4, 1.1, -0.9, 0.3, -1.2, 0.5, 0.9, -0.6, 0.2][i % 11];
                level + wobble
            })
            .collect()
    }

    #[test]
    fn a_flat_or_short_history_has_none() {
        let config = ChangePointConfig::default();
        assert_eq!(change_points(&[], &config).unwrap(), Vec::<usize>::new());
        assert_eq!(change_points(&[3.0], &config).unwrap(), Vec::<usize>::new());
        assert_eq!(
            change_points(&[3.0; 50], &config).unwrap(),
            Vec::<usize>::new()
        );
        let wobble: Vec<f64> = (0..50).map(|i| 100.0 + f64::from(i % 7) * 0.3).collect();
        assert_eq!(
            change_points(&wobble, &config).unwrap(),
            Vec::<usize>::new()
        );
    }

    #[test]
    fn same_seed_same_answer() {
        let series = reference_shifts();
        let config = ChangePointConfig::default();
        let first = change_points(&series, &config).unwrap();
        assert_eq!(change_points(&series, &config).unwrap(), first);
    }

    #[test]
    fn refuses_bad_input() {
        let config = ChangePointConfig::default();
        assert!(matches!(
            change_points(&[1.0, f64::NAN], &config),
            Err(Error::NonFinite { index: 1, value }) if value.is_nan()
        ));
        let none = ChangePointConfig {
            permutations: 0,
            ..config
        };
        assert_eq!(change_points(&[1.0], &none), Err(Error::NoPermutations));
        let bad = ChangePointConfig {
            significance: 1.0,
            ..config
        };
        assert_eq!(change_points(&[1.0], &bad), Err(Error::Significance(1.0)));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn never_panics_and_indices_are_inside(
            series in proptest::collection::vec(prop_oneof![
                any::<f64>(), Just(1.0), Just(f64::MAX), -1e6..1e6f64,
            ], 0..25)
        ) {
            let config = ChangePointConfig { permutations: 20, ..ChangePointConfig::default() };
            if let Ok(found) = change_points(&series, &config) {
                prop_assert!(found.windows(2).all(|w| w[0] < w[1]));
                prop_assert!(found.iter().all(|&i| i > 0 && i < series.len()));
            }
        }
    }
}
