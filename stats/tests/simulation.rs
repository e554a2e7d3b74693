//! How often the verdict rule is wrong, measured: 1 000 seeded A/A and A/B
//! comparisons at 10 values a side, drawn from a skewed distribution shaped
//! like boot times, a floor with a long right tail: (100 − t) ms + t ms·e^(0.5·Z)
//! for a standard normal Z, whose tail t sets the spread: t = 5 gives a CV
//! of about 3 % (skewness about 1.8), t = 3.3 about 2 %, the spread of one
//! boot at a time on a quiet development host (`vmbench boot --runs 3`
//! there: total 636–650 ms; a loaded host spreads far wider, and no test
//! at 10 values a side separates a 10 % change from that).
//!
//! A debug build's bootstrap runs 500 resamples instead of the default
//! 10 000 to keep the test run to seconds; the interval's ends then move by
//! a few thousandths, which changes a verdict only at the margin. A release
//! build runs the default:
//!
//!     cargo test -p vmbench-stats --release --test simulation -- --nocapture
//!
//! Each test prints the rates it measured (`-- --nocapture` shows them).

use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};
use vmbench_stats::{
    compare, BootstrapConfig, CompareConfig, Direction, Metric, Verdict, NOISE_BAND_BOOT_PHASE,
    NOISE_BAND_MICRO,
};

const COMPARISONS: usize = 1_000;
const VALUES_PER_SIDE: usize = 10;

/// The tails of the two spreads simulated.
const CV_3_PERCENT: f64 = 5.0;
const CV_2_PERCENT: f64 = 3.3;

/// One boot time in ms, scaled by `factor`, with a tail of `tail` ms.
fn boot_ms(rng: &mut ChaCha8Rng, factor: f64, tail: f64) -> f64 {
    // Box–Muller: a standard normal from two uniforms in (0, 1].
    let u1 = 1.0 - rng.random::<f64>();
    let u2 = rng.random::<f64>();
    let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
    factor * (100.0 - tail + tail * (0.5 * z).exp())
}

fn sample(rng: &mut ChaCha8Rng, factor: f64, tail: f64) -> Vec<f64> {
    (0..VALUES_PER_SIDE)
        .map(|_| boot_ms(rng, factor, tail))
        .collect()
}

/// Bootstrap resamples: the default where the build is optimised.
const RESAMPLES: usize = if cfg!(debug_assertions) { 500 } else { 10_000 };

/// The share of `COMPARISONS` comparisons of A against B = `factor`·A that
/// come out as each verdict, for each noise band (the same samples for all
/// bands): `[regression, improvement, no change, inconclusive]`.
fn verdict_rates(seed: u64, factor: f64, tail: f64, noise_bands: &[f64]) -> Vec<[f64; 4]> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let config = CompareConfig {
        bootstrap: BootstrapConfig {
            resamples: RESAMPLES,
            ..BootstrapConfig::default()
        },
        ..CompareConfig::default()
    };
    let mut counts = vec![[0usize; 4]; noise_bands.len()];
    for _ in 0..COMPARISONS {
        let a = sample(&mut rng, 1.0, tail);
        let b = sample(&mut rng, factor, tail);
        for (band, count) in noise_bands.iter().zip(counts.iter_mut()) {
            let metric = Metric {
                name: "boot",
                a: &a,
                b: &b,
                direction: Direction::LowerIsBetter,
                noise_band: *band,
            };
            let slot = match compare(&[metric], &config).unwrap()[0].verdict {
                Verdict::Regression => 0,
                Verdict::Improvement => 1,
                Verdict::NoChange => 2,
                Verdict::Inconclusive => 3,
            };
            count[slot] += 1;
        }
    }
    counts
        .iter()
        .map(|c| c.map(|hits| hits as f64 / COMPARISONS as f64))
        .collect()
}

#[test]
fn the_distributions_are_skewed_with_cvs_of_about_3_and_2_percent() {
    for (tail, cv_range) in [(CV_3_PERCENT, 0.025..0.035), (CV_2_PERCENT, 0.017..0.023)] {
        let cv = skewed_cv(tail);
        assert!(cv_range.contains(&cv), "tail {tail}: CV {cv}");
    }
}

/// The CV of the distribution with a tail of `tail` ms (and its skewness checked).
fn skewed_cv(tail: f64) -> f64 {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let values: Vec<f64> = (0..100_000).map(|_| boot_ms(&mut rng, 1.0, tail)).collect();
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let sd = (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
    let skewness = values
        .iter()
        .map(|v| ((v - mean) / sd).powi(3))
        .sum::<f64>()
        / n;
    println!(
        "mean {mean:.2} ms, CV {:.4}, skewness {skewness:.2}",
        sd / mean
    );
    assert!(skewness > 1.0, "skewness {skewness}");
    sd / mean
}

#[test]
fn a_a_comparisons_flag_a_regression_at_most_1_percent_of_the_time() {
    // Without a band only the test stands between noise and a verdict: its
    // two-sided α = 0.01 puts about 0.5 % on the regression side.
    let rates = verdict_rates(11, 1.0, CV_3_PERCENT, &[NOISE_BAND_BOOT_PHASE, 0.0]);
    let [boot_band, no_band] = [rates[0], rates[1]];
    println!("A/A with the ±5 % band [regression, improvement, no change, inconclusive]: {boot_band:.3?}");
    println!("A/A with no band: {no_band:.3?}");
    assert!(boot_band[0] <= 0.01, "{boot_band:?}");
    assert!(no_band[0] <= 0.01, "{no_band:?}");
    assert!(boot_band[1] <= 0.01 && no_band[1] <= 0.01);
}

#[test]
fn a_10_percent_slowdown_is_detected_at_least_90_percent_of_the_time() {
    let rates = verdict_rates(
        21,
        1.10,
        CV_3_PERCENT,
        &[NOISE_BAND_MICRO, NOISE_BAND_BOOT_PHASE],
    );
    let [micro_band, boot_band] = [rates[0], rates[1]];
    println!("10 % slowdown with the ±2 % band [regression, improvement, no change, inconclusive]: {micro_band:.3?}");
    println!("10 % slowdown with the ±5 % band: {boot_band:.3?}");
    // With the micro-benchmark band (±2 %) the rule's power at this spread
    // clears 90 %.
    assert!(micro_band[0] >= 0.90, "{micro_band:?}");
    // With the boot-phase band the whole interval must clear 1.05 while the
    // true ratio is 1.10: at 10 values a side and a CV of 3 % the interval's
    // lower half-width is about 0.03–0.05, so some real slowdowns stay
    // inconclusive (about 0.87 are found). This guards that level, and
    // that the others are inconclusive, never "no change" or "improvement".
    assert!(boot_band[0] >= 0.80, "{boot_band:?}");
    assert_eq!(boot_band[1] + boot_band[2], 0.0, "{boot_band:?}");
}

#[test]
fn at_a_quiet_hosts_spread_the_boot_band_finds_a_10_percent_slowdown_90_percent_of_the_time() {
    let rates = verdict_rates(31, 1.10, CV_2_PERCENT, &[NOISE_BAND_BOOT_PHASE]);
    println!("10 % slowdown at a CV of 2 % with the ±5 % band [regression, improvement, no change, inconclusive]: {:.3?}", rates[0]);
    assert!(rates[0][0] >= 0.90, "{:?}", rates[0]);
    let a_a = verdict_rates(41, 1.0, CV_2_PERCENT, &[NOISE_BAND_BOOT_PHASE]);
    println!("A/A at a CV of 2 % with the ±5 % band: {:.3?}", a_a[0]);
    assert!(a_a[0][0] <= 0.01, "{:?}", a_a[0]);
}
