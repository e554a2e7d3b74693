use alloc::vec;
use alloc::vec::Vec;

use proptest::prelude::*;

use super::*;

/// A benchmark on a pretend clock: each run costs `overhead` ticks plus
/// `cost(sample)` ticks per operation, where `sample` counts the runs of
/// more than 0 operations after calibration.
struct Fake<F: FnMut(usize) -> u64> {
    now: u64,
    overhead: u64,
    cost: F,
    calibrating: bool,
    sample: usize,
    windows: Vec<&'static str>,
    fail_at: Option<usize>,
}

fn fake<F: FnMut(usize) -> u64>(overhead: u64, cost: F) -> Fake<F> {
    Fake {
        now: 0,
        overhead,
        cost,
        calibrating: true,
        sample: 0,
        windows: Vec::new(),
        fail_at: None,
    }
}

impl<F: FnMut(usize) -> u64> Bench for Fake<F> {
    type Error = &'static str;
    fn run(&mut self, iterations: u64) -> Result<u64, &'static str> {
        let per_op = if self.calibrating {
            (self.cost)(0)
        } else {
            if self.fail_at == Some(self.sample) {
                return Err("the guest's fork failed");
            }
            self.sample += 1;
            (self.cost)(self.sample - 1)
        };
        let ticks = self.overhead + per_op * iterations;
        self.now += ticks;
        Ok(ticks)
    }
    fn now(&mut self) -> u64 {
        self.now
    }
    fn window_start(&mut self) {
        self.calibrating = false;
        self.windows.push("start");
    }
    fn window_end(&mut self) {
        self.windows.push("end");
    }
}

fn config(min_run_ticks: u64) -> Config {
    Config {
        min_run_ticks,
        max_iterations: 1 << 32,
        max_samples: 1000,
        budget_ticks: u64::MAX,
        rough: false,
    }
}

#[test]
fn calibration_doubles_until_a_run_is_a_hundred_times_the_overhead() {
    // 50 ticks of overhead: a run must take 5000; 3 per op: 2048 ops.
    let cal = calibrate(&mut fake(50, |_| 3), &config(1000)).unwrap();
    assert_eq!(cal.overhead_ticks, 50);
    assert_eq!(cal.iterations, 2048);
    assert_eq!(
        cal.runs,
        OVERHEAD_RUNS + 13,
        "1, 2, 4 … 2048, and 2048 again"
    );
    assert!(!cal.cut_short);
    // A minimum run time longer than that wins.
    let cal = calibrate(&mut fake(50, |_| 3), &config(100_000)).unwrap();
    assert_eq!(
        cal.iterations, 65536,
        "50 + 3 × 32768 < 100 000 ≤ 50 + 3 × 65536"
    );
}

#[test]
fn one_slow_run_does_not_settle_the_count() {
    // The 8th timed run (after 5 of the overhead: 4 operations) is a
    // thousand times slower, long enough on its own.
    let mut calls = 0;
    let mut slow = fake(50, move |_| {
        calls += 1;
        if calls == 8 {
            3000
        } else {
            3
        }
    });
    let cal = calibrate(&mut slow, &config(1000)).unwrap();
    assert_eq!(cal.iterations, 2048, "the slow run at 4 was not confirmed");
}

#[test]
fn calibration_stops_at_the_iteration_cap_and_at_the_budget() {
    let mut capped = config(1 << 40);
    capped.max_iterations = 1000;
    let cal = calibrate(&mut fake(10, |_| 1), &capped).unwrap();
    assert_eq!(cal.iterations, 1000, "the cap, not the next power of two");
    assert!(cal.cut_short);
    let mut budget = config(1 << 40);
    budget.budget_ticks = 10_000;
    let cal = calibrate(&mut fake(10, |_| 1), &budget).unwrap();
    assert!(cal.cut_short);
    assert!(cal.iterations < 1 << 14, "{cal:?}");
}

#[test]
fn a_value_is_the_cost_of_one_operation_in_thousandths_less_the_overhead() {
    assert_eq!(per_op_milli(50 + 3 * 2048, 50, 2048), 3000);
    assert_eq!(per_op_milli(1 + 7, 1, 3), 2333);
    assert_eq!(per_op_milli(10, 50, 4), 0, "saturates");
    assert_eq!(per_op_milli(u64::MAX, 0, 1), u64::MAX, "saturates");
    assert_eq!(per_op_milli(5, 0, 0), 5000, "0 operations count as one");
}

#[test]
fn one_peak_within_one_percent() {
    let values: Vec<u64> = (0..40).map(|i| 100_000 + i * 20).collect();
    let p = peaks(&values);
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].count, 40);
    assert_eq!((p[0].low, p[0].high), (100_000, 100_780));
}

#[test]
fn adjacent_bins_chain_into_one_peak_and_an_empty_bin_splits() {
    // Each value in the bin after the previous one's: one peak.
    let chain = [1000, 1010, 1020, 1030, 1040];
    assert_eq!(all_peaks(&chain).len(), 1);
    // 1000's bin is [1000, 1010), the next [1010, 1020): 1025 skips one.
    let split = all_peaks(&[1000, 1001, 1025, 1026]);
    assert_eq!(split.len(), 2, "{split:?}");
    assert_eq!((split[0].count, split[1].count), (2, 2));
    // Small values: bins one unit wide.
    assert_eq!(all_peaks(&[3, 4, 5]).len(), 1);
    assert_eq!(all_peaks(&[3, 5]).len(), 2);
}

#[test]
fn two_peaks_well_apart_with_their_shares() {
    let mut values = vec![2000; 30];
    values.extend([1000; 70]);
    let p = peaks(&values);
    assert_eq!(p.len(), 2);
    assert_eq!((p[0].value, p[0].count), (1000, 70));
    assert_eq!((p[1].value, p[1].count), (2000, 30));
}

#[test]
fn a_tiny_cluster_is_no_peak_but_stays_in_the_summary() {
    let mut values = vec![1000; 38];
    values.extend([50_000, 50_001]);
    // 40 samples: a peak needs 2 (5 %); two values make one.
    assert_eq!(peaks(&values).len(), 2);
    values.extend([1000; 20]);
    // 60 samples: a peak needs 3.
    let p = peaks(&values);
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(all_peaks(&values).len(), 2);
    let s = summary(&values).unwrap();
    assert_eq!(
        (s.median, s.min, s.max, s.samples),
        (1000, 1000, 50_001, 60)
    );
    assert_eq!(min_peak_samples(10), 1);
    assert_eq!(min_peak_samples(20), 1);
    assert_eq!(min_peak_samples(21), 2);
    assert_eq!(min_peak_samples(41), 3);
    assert_eq!(min_peak_samples(1000), 50);
}

#[test]
fn sampling_stops_when_every_peak_is_known_and_rough_when_one_is() {
    // Every tenth sample takes twice as long: two peaks, the slow one of
    // a tenth of the samples.
    let bimodal = |i: usize| if i % 10 == 9 { 6 } else { 3 };
    let mut bench = fake(50, bimodal);
    let m = measure(&mut bench, &config(1000)).unwrap();
    assert_eq!(m.stop, Stop::Peaks);
    assert_eq!(
        m.values.len(),
        100,
        "the slow peak's tenth sample is the 100th"
    );
    assert_eq!(m.calibration.iterations, 2048);
    assert_eq!(m.ops(), 204_800);
    assert_eq!(bench.windows, ["start", "end"]);
    let p = peaks(&m.values);
    assert_eq!(p.len(), 2);
    assert_eq!((p[0].value, p[1].value), (3000, 6000));

    let mut rough = config(1000);
    rough.rough = true;
    let m = measure(&mut fake(50, bimodal), &rough).unwrap();
    assert_eq!(m.stop, Stop::Peaks);
    assert_eq!(m.values.len(), 11, "at 10 the fast peak has 9");
}

#[test]
fn sampling_stops_at_the_sample_limit_and_the_budget() {
    // Every sample far from every other: no peak ever holds two.
    let spread = |i: usize| 1u64 << (i % 40);
    let mut limited = config(1);
    limited.max_samples = 25;
    let m = measure(&mut fake(0, spread), &limited).unwrap();
    assert_eq!((m.stop, m.values.len()), (Stop::MaxSamples, 25));

    let mut budget = config(1);
    budget.budget_ticks = 1 << 20;
    let m = measure(&mut fake(0, spread), &budget).unwrap();
    assert_eq!(m.stop, Stop::Budget);
    assert!(m.values.len() < 1000);
}

#[test]
fn a_failing_run_is_an_error_and_closes_the_window() {
    let mut bench = fake(0, |_| 5);
    bench.fail_at = Some(3);
    assert_eq!(
        measure(&mut bench, &config(100)),
        Err("the guest's fork failed")
    );
    assert_eq!(bench.windows, ["start", "end"]);
}

#[test]
fn medians() {
    assert_eq!(summary(&[]), None);
    assert_eq!(summary(&[7]).unwrap().median, 7);
    assert_eq!(
        summary(&[4, 1, 3, 2]).unwrap().median,
        2,
        "(2 + 3) / 2 rounded down"
    );
    assert_eq!(summary(&[u64::MAX, u64::MAX]).unwrap().median, u64::MAX);
    assert_eq!(
        summary(&[u64::MAX - 1, u64::MAX]).unwrap().median,
        u64::MAX - 1
    );
}

proptest! {
    #[test]
    fn peaks_partition_the_sorted_values(values in proptest::collection::vec(any::<u64>(), 1..300)) {
        let all = all_peaks(&values);
        prop_assert_eq!(all.iter().map(|p| p.count).sum::<usize>(), values.len());
        for pair in all.windows(2) {
            prop_assert!(pair[0].high < pair[1].low);
        }
        for p in &all {
            prop_assert!(p.low <= p.value && p.value <= p.high);
        }
        let kept = peaks(&values);
        prop_assert!(kept.iter().all(|p| p.count >= min_peak_samples(values.len())));
        let s = summary(&values).unwrap();
        prop_assert!(s.min <= s.median && s.median <= s.max);
    }

    #[test]
    fn values_within_a_peak_are_chained_by_adjacent_bins(base in 1u64..1_000_000_000, n in 2usize..50) {
        // Steps of just under 1 % of the value: never a whole empty bin.
        let mut values = vec![base];
        for _ in 1..n {
            let last = *values.last().unwrap();
            values.push(last + (last / 100).max(1) - 1);
        }
        prop_assert_eq!(all_peaks(&values).len(), 1);
    }
}
