//! The two-sided Mann–Whitney U test (Wilcoxon rank-sum), as scipy's
//! `mannwhitneyu(x, y)` computes it with its defaults
//! (`alternative="two-sided"`, `use_continuity=True`, `method="auto"`).
//!
//! Pool both samples and rank them, tied values sharing the mean of their
//! ranks. U₁ = R₁ − n₁(n₁ + 1)/2, with R₁ the first sample's rank sum, counts
//! the pairs (x, y) with x > y, a tie counting ½; U₂ = n₁n₂ − U₁. The p-value
//! is twice the null probability of a U at least max(U₁, U₂), capped at 1.
//!
//! Which null distribution (scipy 1.17's `_mwu_choose_method`): exact when
//! no value is tied and at least one sample has 8 values or fewer;
//! otherwise the normal approximation with mean n₁n₂/2, the variance
//! corrected for ties, (n₁n₂/12)·((n + 1) − Σ(t³ − t)/(n(n − 1))) over the tie
//! groups' sizes t, and a continuity correction of ½. The exact counts come
//! from the generating function of U, the Gaussian binomial coefficient
//! Π_{i=1..m} (1 − q^(N+i))/(1 − q^i) for sizes m ≤ N, in 128-bit integers.
//! Unlike scipy, a very lopsided pair (n₁n₂ above [`EXACT_MAX_PAIRS`], or
//! C(m + N, m) beyond 128 bits) takes the normal approximation too, which is
//! accurate there.

use serde::{Deserialize, Serialize};

use crate::{Error, Method, Result};

/// Largest size of the smaller sample for which the exact distribution is
/// used (scipy: exact unless both sizes exceed 8, or values tie).
pub const EXACT_MAX_N: usize = 8;

/// Largest n₁n₂ for which the exact distribution is used: its table holds
/// n₁n₂/2 counts.
pub const EXACT_MAX_PAIRS: usize = 2_000_000;

/// The outcome of the test.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MannWhitney {
    /// U of the first sample: the number of pairs (x, y) with x > y, a tie
    /// counting ½ (scipy's `mannwhitneyu(x, y).statistic`).
    pub u_first: f64,
    /// Two-sided p-value.
    pub p_value: f64,
    /// [`Method::MannWhitneyExact`] or [`Method::MannWhitneyNormal`].
    pub method: Method,
}

/// Tests whether `x` and `y` come from one distribution, against the
/// alternative that one tends to be larger (two-sided). NaNs are left out; an
/// error if a sample has no other value.
pub fn mann_whitney_u(x: &[f64], y: &[f64]) -> Result<MannWhitney> {
    let x: Vec<f64> = x.iter().copied().filter(|v| !v.is_nan()).collect();
    let y: Vec<f64> = y.iter().copied().filter(|v| !v.is_nan()).collect();
    if x.is_empty() {
        return Err(Error::EmptySample('x'));
    }
    if y.is_empty() {
        return Err(Error::EmptySample('y'));
    }
    let ranks = Ranks::of(&x, &y);
    let (n1, n2) = (x.len() as f64, y.len() as f64);
    let u1 = ranks.first_sum - n1 * (n1 + 1.0) / 2.0;
    let u = u1.max(n1 * n2 - u1);
    if !ranks.tied && x.len().min(y.len()) <= EXACT_MAX_N {
        // Without ties U is a whole number; the smaller tail holds n₁n₂ − U.
        let smaller_tail = (n1 * n2 - u) as usize;
        if let Some(p) = exact_lower_tail(x.len(), y.len(), smaller_tail) {
            return Ok(MannWhitney {
                u_first: u1,
                p_value: (2.0 * p).min(1.0),
                method: Method::MannWhitneyExact,
            });
        }
    }
    let n = n1 + n2;
    let variance = n1 * n2 / 12.0 * ((n + 1.0) - ranks.tie_term / (n * (n - 1.0)));
    // All values tied leaves a variance of 0 (or a rounding below it): z is
    // then −∞ and p 1.
    let z = (u - n1 * n2 / 2.0 - 0.5) / variance.max(0.0).sqrt();
    Ok(MannWhitney {
        u_first: u1,
        p_value: (2.0 * normal_upper_tail(z)).clamp(0.0, 1.0),
        method: Method::MannWhitneyNormal,
    })
}

/// The pooled ranks' sums the test needs.
struct Ranks {
    /// Sum of the first sample's (mid-)ranks, 1-based.
    first_sum: f64,
    /// Σ(t³ − t) over the groups of t tied values.
    tie_term: f64,
    tied: bool,
}

impl Ranks {
    fn of(x: &[f64], y: &[f64]) -> Ranks {
        let mut pooled: Vec<(f64, bool)> = x
            .iter()
            .map(|&v| (v, true))
            .chain(y.iter().map(|&v| (v, false)))
            .collect();
        pooled.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut ranks = Ranks {
            first_sum: 0.0,
            tie_term: 0.0,
            tied: false,
        };
        let mut start = 0;
        while start < pooled.len() {
            // −0.0 and 0.0 sort apart but are equal, hence `==`, not
            // total_cmp, for the group.
            let end = start
                + pooled[start..]
                    .iter()
                    .take_while(|(v, _)| *v == pooled[start].0)
                    .count();
            let size = (end - start) as f64;
            let mid_rank = (start + 1 + end) as f64 / 2.0;
            let firsts = pooled[start..end]
                .iter()
                .filter(|(_, first)| *first)
                .count();
            ranks.first_sum += mid_rank * firsts as f64;
            if end - start > 1 {
                ranks.tied = true;
                ranks.tie_term += size * size * size - size;
            }
            start = end;
        }
        ranks
    }
}

/// P(U ≤ k) under the null hypothesis for samples of sizes `n1` and `n2`
/// without ties, or `None` where the counts would overflow 128 bits.
fn exact_lower_tail(n1: usize, n2: usize, k: usize) -> Option<f64> {
    let (m, n) = (n1.min(n2), n1.max(n2));
    if n1.saturating_mul(n2) > EXACT_MAX_PAIRS {
        return None;
    }
    // C(n + m, m), built as C(n + i, i) for i = 1..=m: each step divides
    // exactly.
    let mut total: i128 = 1;
    for i in 1..=m {
        total = total.checked_mul((n + i) as i128)? / i as i128;
    }
    // counts[u] = number of orderings of the pooled sample with U = u, for
    // u ≤ k: the coefficients of Π (1 − q^(n+i))/(1 − q^i). Both steps read
    // only lower powers, so truncating at q^k is exact. Every partial
    // product is a Gaussian binomial, so no count exceeds `total`.
    let mut counts = vec![0i128; k + 1];
    counts[0] = 1;
    for i in 1..=m {
        let shift = n + i;
        for u in (shift..=k).rev() {
            counts[u] -= counts[u - shift];
        }
        for u in i..=k {
            counts[u] += counts[u - i];
        }
    }
    let at_most_k: i128 = counts.iter().sum();
    Some(at_most_k as f64 / total as f64)
}

/// P(Z > z) for a standard normal Z.
pub(crate) fn normal_upper_tail(z: f64) -> f64 {
    0.5 * libm::erfc(z / std::f64::consts::SQRT_2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn assert_close(actual: f64, expected: f64, relative: f64) {
        assert!(
            (actual - expected).abs() <= relative * expected.abs(),
            "{actual} is not within {relative} of {expected}"
        );
    }

    // Expected values: scipy 1.17.1 `scipy.stats.mannwhitneyu(x, y)` with its
    // defaults, printed by `stats/tests/reference/reference.py` (section
    // "mannwhitneyu").

    #[test]
    fn exact_small_samples_without_ties() {
        let x = [101.3, 99.2, 104.8, 100.1, 102.6];
        let y = [106.9, 103.4, 108.2, 105.5, 107.1, 104.1];
        let r = mann_whitney_u(&x, &y).unwrap();
        assert_eq!(r.method, Method::MannWhitneyExact);
        assert_eq!(r.u_first, 2.0);
        assert_close(r.p_value, 0.017316017316017316, 1e-12);

        let x = [3.1, 4.7, 1.2, 5.5, 2.8, 6.3, 0.9, 7.4];
        let y = [4.0, 2.2, 6.8, 5.1, 3.6, 1.9, 7.9, 8.4, 0.5, 9.3, 6.1, 2.5];
        let r = mann_whitney_u(&x, &y).unwrap();
        assert_eq!(r.method, Method::MannWhitneyExact);
        assert_eq!(r.u_first, 40.0);
        assert_close(r.p_value, 0.5713582599031516, 1e-12);
    }

    #[test]
    fn exact_with_one_small_and_one_large_sample() {
        // 3 against 40: still exact in scipy (only one size must be ≤ 8).
        let x = [0.5, 10.5, 20.5];
        let y: Vec<f64> = (0..40).map(f64::from).collect();
        let r = mann_whitney_u(&x, &y).unwrap();
        assert_eq!(r.method, Method::MannWhitneyExact);
        assert_eq!(r.u_first, 33.0);
        assert_close(r.p_value, 0.2182967344623612, 1e-12);
    }

    #[test]
    fn normal_approximation_with_ties() {
        let x = [12.0, 15.0, 15.0, 11.0, 19.0, 14.0, 15.0, 13.0, 18.0, 12.0];
        let y = [
            16.0, 15.0, 21.0, 19.0, 17.0, 15.0, 22.0, 18.0, 20.0, 16.0, 19.0,
        ];
        let r = mann_whitney_u(&x, &y).unwrap();
        assert_eq!(r.method, Method::MannWhitneyNormal);
        assert_eq!(r.u_first, 15.5);
        assert_close(r.p_value, 0.005593709955709941, 1e-9);

        // Small but tied: scipy switches to the normal approximation.
        let r = mann_whitney_u(&[1.0, 2.0, 2.0], &[2.0, 3.0, 4.0, 5.0]).unwrap();
        assert_eq!(r.method, Method::MannWhitneyNormal);
        assert_eq!(r.u_first, 1.0);
        assert_close(r.p_value, 0.09872864789482493, 1e-9);
    }

    #[test]
    fn normal_approximation_for_two_large_samples() {
        // Both sizes above 8, no ties.
        let x: Vec<f64> = (0..9).map(|i| f64::from(i) * 1.5 + 0.25).collect();
        let y: Vec<f64> = (0..12).map(|i| f64::from(i) * 1.1 + 3.0).collect();
        let r = mann_whitney_u(&x, &y).unwrap();
        assert_eq!(r.method, Method::MannWhitneyNormal);
        assert_eq!(r.u_first, 34.0);
        assert_close(r.p_value, 0.16580656019401352, 1e-9);
    }

    #[test]
    fn complete_separation_gives_the_smallest_exact_p() {
        // 2 / C(16, 8) = 2 / 12870.
        let x: Vec<f64> = (0..8).map(f64::from).collect();
        let y: Vec<f64> = (10..18).map(f64::from).collect();
        let r = mann_whitney_u(&x, &y).unwrap();
        assert_eq!((r.u_first, r.method), (0.0, Method::MannWhitneyExact));
        assert_close(r.p_value, 2.0 / 12870.0, 1e-12);
        let r = mann_whitney_u(&y, &x).unwrap();
        assert_eq!(r.u_first, 64.0);
        assert_close(r.p_value, 2.0 / 12870.0, 1e-12);
    }

    #[test]
    fn exact_counts_are_symmetric_and_sum_to_one() {
        for (n1, n2) in [(1, 1), (3, 5), (8, 8), (8, 30), (2, 200)] {
            let all = exact_lower_tail(n1, n2, n1 * n2).unwrap();
            assert!((all - 1.0).abs() < 1e-12, "{n1} {n2}: {all}");
            // P(U ≤ k) + P(U ≤ n₁n₂ − k − 1) = 1 by symmetry.
            for k in 0..n1 * n2 {
                let sum = exact_lower_tail(n1, n2, k).unwrap()
                    + exact_lower_tail(n1, n2, n1 * n2 - k - 1).unwrap();
                assert!((sum - 1.0).abs() < 1e-12, "{n1} {n2} {k}: {sum}");
            }
        }
    }

    #[test]
    fn huge_exact_case_falls_back_to_normal() {
        // C(250 008, 8) ≈ 3.8e38 overflows i128; n₁n₂ = 3 000 000 exceeds the cap.
        assert!(exact_lower_tail(8, 250_000, 10).is_none());
        assert!(exact_lower_tail(8, 100_000, 10).is_some());
        assert!(exact_lower_tail(1, 3_000_000, 10).is_none());
    }

    #[test]
    fn all_values_equal_gives_p_one() {
        let r = mann_whitney_u(&[5.0; 10], &[5.0; 12]).unwrap();
        assert_eq!((r.u_first, r.p_value), (60.0, 1.0));
    }

    #[test]
    fn nans_are_left_out_and_empty_samples_refused() {
        let with_nan = mann_whitney_u(&[1.0, f64::NAN, 2.0], &[3.0, 4.0]).unwrap();
        assert_eq!(with_nan, mann_whitney_u(&[1.0, 2.0], &[3.0, 4.0]).unwrap());
        assert_eq!(
            mann_whitney_u(&[f64::NAN], &[1.0]),
            Err(Error::EmptySample('x'))
        );
        assert_eq!(mann_whitney_u(&[1.0], &[]), Err(Error::EmptySample('y')));
    }

    proptest! {
        #[test]
        fn never_panics_and_p_is_a_probability(
            x in proptest::collection::vec(prop_oneof![
                any::<f64>(), Just(f64::NAN), Just(f64::INFINITY), Just(0.0), Just(-0.0), 0.0..10.0f64,
            ], 0..30),
            y in proptest::collection::vec(prop_oneof![
                any::<f64>(), Just(f64::NEG_INFINITY), Just(1.0), 0.0..10.0f64,
            ], 0..30),
        ) {
            if let Ok(r) = mann_whitney_u(&x, &y) {
                prop_assert!((0.0..=1.0).contains(&r.p_value), "{:?}", r);
                let n1 = x.iter().filter(|v| !v.is_nan()).count() as f64;
                let n2 = y.iter().filter(|v| !v.is_nan()).count() as f64;
                prop_assert!(r.u_first >= 0.0 && r.u_first <= n1 * n2);
            }
        }
    }
}
