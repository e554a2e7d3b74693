//! The Benjamini–Hochberg correction for testing many metrics at once.
//!
//! Comparing twenty metrics at α = 0.01 would flag one in five A/A runs by
//! chance. Benjamini and Hochberg (1995) bound instead the expected share of
//! false discoveries among the flagged metrics: sort the m p-values
//! ascending, p₍ᵢ₎ becomes p₍ᵢ₎·m/i, then each adjusted value is the minimum
//! of those at its rank and above (so the adjusted values keep the order of
//! the raw ones), capped at 1. Comparing an adjusted p to α is the BH
//! procedure at level α, as scipy's `false_discovery_control(ps, method="bh")`.

use crate::{Error, Result};

/// The Benjamini–Hochberg adjusted p-values, in the order given; an error
/// if one is not a probability (NaN or outside [0, 1]).
pub fn benjamini_hochberg(p_values: &[f64]) -> Result<Vec<f64>> {
    if let Some(&p) = p_values.iter().find(|p| !(0.0..=1.0).contains(*p)) {
        return Err(Error::PValue(p));
    }
    let m = p_values.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&i, &j| p_values[i].total_cmp(&p_values[j]));
    let mut adjusted = vec![0.0; m];
    let mut smallest_above = 1.0f64;
    for (rank, &i) in order.iter().enumerate().rev() {
        // p·(m/i) rather than p·m/i: the factor is ≥ 1, so the product never
        // rounds below p.
        smallest_above = smallest_above.min(p_values[i] * (m as f64 / (rank + 1) as f64));
        adjusted[i] = smallest_above;
    }
    Ok(adjusted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn matches_scipy_false_discovery_control() {
        // scipy 1.17.1 `stats.false_discovery_control(ps, method="bh")`,
        // printed by `stats/tests/reference/reference.py` (section "bh").
        let ps = [
            0.0001, 0.0004, 0.0019, 0.0095, 0.0201, 0.0278, 0.0298, 0.0344, 0.0459, 0.324, 0.4262,
            0.5719, 0.6528, 0.759, 1.0,
        ];
        let expected = [
            0.0015,
            0.003,
            0.0095,
            0.035625,
            0.0603,
            0.06385714285714286,
            0.06385714285714286,
            0.0645,
            0.07650000000000001,
            0.486,
            0.5811818181818181,
            0.7148749999999999,
            0.7532307692307693,
            0.8132142857142857,
            1.0,
        ];
        let adjusted = benjamini_hochberg(&ps).unwrap();
        for (a, e) in adjusted.iter().zip(expected) {
            assert!((a - e).abs() < 1e-12, "{adjusted:?}");
        }
        // Unsorted input keeps its order.
        let ps = [0.04, 0.001, 0.03, 0.5, 0.02];
        let expected = [0.05, 0.005, 0.05, 0.5, 0.05];
        let adjusted = benjamini_hochberg(&ps).unwrap();
        for (a, e) in adjusted.iter().zip(expected) {
            assert!((a - e).abs() < 1e-12, "{adjusted:?}");
        }
    }

    #[test]
    fn edge_cases() {
        assert_eq!(benjamini_hochberg(&[]).unwrap(), Vec::<f64>::new());
        assert_eq!(benjamini_hochberg(&[0.3]).unwrap(), vec![0.3]);
        assert_eq!(benjamini_hochberg(&[0.9, 0.9]).unwrap(), vec![0.9, 0.9]);
        assert_eq!(benjamini_hochberg(&[0.6, 0.7]).unwrap(), vec![0.7, 0.7]);
        assert!(
            matches!(benjamini_hochberg(&[0.1, f64::NAN]), Err(Error::PValue(p)) if p.is_nan())
        );
        assert_eq!(benjamini_hochberg(&[1.5]), Err(Error::PValue(1.5)));
    }

    #[test]
    fn rounding_never_adjusts_below_the_raw_value() {
        // proptest's shrunk failure: p·m/i rounded below p at i = m.
        let mut ps = vec![0.0; 33];
        ps[8] = 0.986178298022835;
        let adjusted = benjamini_hochberg(&ps).unwrap();
        assert_eq!(adjusted[8], 0.986178298022835);
    }

    proptest! {
        #[test]
        fn adjusted_values_are_monotone_capped_and_not_below_raw(
            ps in proptest::collection::vec(0.0..=1.0f64, 0..50)
        ) {
            let adjusted = benjamini_hochberg(&ps).unwrap();
            for i in 0..ps.len() {
                prop_assert!(adjusted[i] >= ps[i] && adjusted[i] <= 1.0);
                for j in 0..ps.len() {
                    if ps[i] <= ps[j] {
                        prop_assert!(adjusted[i] <= adjusted[j]);
                    }
                }
            }
        }

        #[test]
        fn never_panics(ps in proptest::collection::vec(any::<f64>(), 0..20)) {
            let _ = benjamini_hochberg(&ps);
        }
    }
}
