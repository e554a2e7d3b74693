#!/usr/bin/env python3
"""Reference values for vmbench-stats' unit tests, from independent
implementations: numpy, scipy and MongoDB's signal-processing-algorithms.

The tests paste the numbers this prints as constants, each with a comment
naming the section here that produced it. To run it again:

    python3 -m venv /tmp/statsref && /tmp/statsref/bin/pip install \
        scipy numpy signal-processing-algorithms
    /tmp/statsref/bin/python stats/tests/reference/reference.py

Versions used for the pasted values: scipy 1.17.1, numpy 1.26.4
(signal-processing-algorithms 2.1.6 pins numpy below 2).
"""

import numpy as np
import scipy
from scipy import stats


def section(name):
    print(f"\n== {name} ==")


def summary():
    section("summary")
    boot_ms = [101.2, 99.8, 100.4, 102.9, 98.7, 100.0, 100.9, 99.5, 101.7, 100.2, 140.3, 100.6]
    x = np.array(boot_ms)
    print("median", repr(float(np.median(x))))
    print("mean", repr(float(np.mean(x))))
    print("p90", repr(float(np.percentile(x, 90))))
    print("p99", repr(float(np.percentile(x, 99))))
    print("stddev (ddof=1)", repr(float(np.std(x, ddof=1))))
    print("mad (scale=1.0)", repr(float(stats.median_abs_deviation(x))))
    print("percentile([1,2,3,4], [90, 99])", [float(v) for v in np.percentile([1, 2, 3, 4], [90, 99])])
    print("percentile([5], 99)", float(np.percentile([5], 99)))


def mannwhitneyu():
    section("mannwhitneyu")
    cases = {
        "exact 5 vs 6": ([101.3, 99.2, 104.8, 100.1, 102.6], [106.9, 103.4, 108.2, 105.5, 107.1, 104.1]),
        "exact 8 vs 12": (
            [3.1, 4.7, 1.2, 5.5, 2.8, 6.3, 0.9, 7.4],
            [4.0, 2.2, 6.8, 5.1, 3.6, 1.9, 7.9, 8.4, 0.5, 9.3, 6.1, 2.5],
        ),
        "exact 3 vs 40": ([0.5, 10.5, 20.5], list(range(40))),
        "normal with ties 10 vs 11": (
            [12, 15, 15, 11, 19, 14, 15, 13, 18, 12],
            [16, 15, 21, 19, 17, 15, 22, 18, 20, 16, 19],
        ),
        "normal small with ties": ([1, 2, 2], [2, 3, 4, 5]),
        "normal 9 vs 12": ([i * 1.5 + 0.25 for i in range(9)], [i * 1.1 + 3.0 for i in range(12)]),
    }
    for name, (x, y) in cases.items():
        auto = stats.mannwhitneyu(x, y)
        exact = stats.mannwhitneyu(x, y, method="exact") if name.startswith("exact") else None
        asym = stats.mannwhitneyu(x, y, method="asymptotic", use_continuity=True)
        print(name, "U1", float(auto.statistic), "p(auto)", repr(float(auto.pvalue)))
        if exact is not None:
            assert exact.pvalue == auto.pvalue, "auto should pick exact here"
        else:
            assert asym.pvalue == auto.pvalue, "auto should pick asymptotic here"


def bh():
    section("bh")
    ps = [0.0001, 0.0004, 0.0019, 0.0095, 0.0201, 0.0278, 0.0298, 0.0344, 0.0459, 0.324,
          0.4262, 0.5719, 0.6528, 0.759, 1.0]
    print("adjusted", [float(v) for v in stats.false_discovery_control(ps, method="bh")])
    ps = [0.04, 0.001, 0.03, 0.5, 0.02]
    print("adjusted unsorted", [float(v) for v in stats.false_discovery_control(ps, method="bh")])


def bootstrap():
    section("bootstrap")
    # scipy's percentile bootstrap of median(B)/median(A), independent
    # resampling of each side, with many resamples: the Rust interval (10 000
    # resamples, another generator) must agree within Monte-Carlo error.
    a = [100.3, 101.1, 99.6, 100.8, 102.4, 99.9, 100.1, 101.7, 100.5, 98.9, 100.0, 101.3, 99.4, 100.9, 100.6]
    b = [106.2, 104.9, 107.8, 105.5, 106.7, 104.1, 108.3, 105.9, 106.0, 105.2, 107.1, 104.6, 106.4, 105.7, 109.2]

    def ratio(b_, a_, axis=-1):
        return np.median(b_, axis=axis) / np.median(a_, axis=axis)

    res = stats.bootstrap((b, a), ratio, n_resamples=200_000, confidence_level=0.95,
                          method="percentile", vectorized=True, paired=False,
                          random_state=np.random.default_rng(12345))
    ci = res.confidence_interval
    print("ratio", repr(float(ratio(np.array(b), np.array(a)))))
    print("95 % percentile CI", repr(float(ci.low)), repr(float(ci.high)))


def e_divisive():
    section("e_divisive")
    from signal_processing_algorithms.energy_statistics import energy_statistics as es

    series = np.array([1.0, 1.2, 0.9, 1.1, 5.0, 5.2, 4.9, 1.0, 1.1])
    distances = es._get_distance_matrix(np.atleast_2d(series).T, use_c_if_possible=False)
    t = es._calculate_t_stats(distances, use_c_if_possible=False)
    print("t stats", [float(v) for v in t])

    wobble = [0.0, 0.7, -0.4, 1.1, -0.9, 0.3, -1.2, 0.5, 0.9, -0.6, 0.2]
    shifts = [(110.0 if 20 <= i < 40 else 100.0) + wobble[i % 11] for i in range(60)]
    np.random.seed(1234)
    print("change points of the shifts", es.e_divisive(shifts, pvalue=0.05, permutations=100))


if __name__ == "__main__":
    print("scipy", scipy.__version__, "numpy", np.__version__)
    summary()
    mannwhitneyu()
    bh()
    bootstrap()
    e_divisive()
