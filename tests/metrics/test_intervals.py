"""Bootstrap intervals: coverage of a known mean, pairing, several samples, too few units."""

import math

import numpy as np

from persona_shoppers.metrics.intervals import (
    bootstrap_interval,
    bootstrap_intervals,
    excludes_zero,
    mean_interval,
)


def test_mean_interval_brackets_the_mean_and_shrinks_with_n():
    rng = np.random.default_rng(0)
    small, large = rng.random(20) < 0.5, rng.random(2000) < 0.5
    lo_s, hi_s = mean_interval(small, draws=500, seed=1)
    lo_l, hi_l = mean_interval(large, draws=500, seed=1)
    assert lo_s <= small.mean() <= hi_s and lo_l <= large.mean() <= hi_l
    assert hi_l - lo_l < (hi_s - lo_s) / 5  # about sqrt(100) narrower
    assert (lo_l, hi_l) == mean_interval(large, draws=500, seed=1)  # seeded
    assert mean_interval(large, draws=500, seed=1) == bootstrap_interval(
        lambda i: large[i].mean(), large.size, draws=500, seed=1
    )


def test_pairing_removes_the_shared_noise_and_finds_a_planted_difference():
    rng = np.random.default_rng(2)
    base = rng.normal(size=200)
    same, shifted = base.copy(), base + 0.1
    low, high = bootstrap_interval(lambda i: (same[i] - base[i]).mean(), 200, 300, seed=0)
    assert low <= 0 <= high and not excludes_zero(low, high)
    low, high = bootstrap_interval(lambda i: (shifted[i] - base[i]).mean(), 200, 300, seed=0)
    assert excludes_zero(low, high) and low > 0.09
    # unpaired, the same 0.1 shift drowns in the spread of the values
    low, high = bootstrap_interval(
        lambda i, j: shifted[i].mean() - base[j].mean(), (200, 200), 300, seed=0
    )
    assert not excludes_zero(low, high)


def test_vector_statistics_and_undefined_resamples():
    x = np.arange(10.0)
    low, high = bootstrap_intervals(lambda i: [x[i].mean(), x[i].max()], 10, 200, seed=0)
    assert low.shape == (2,) and low[1] <= 9 == high[1]
    nan = bootstrap_interval(lambda i: float("nan"), 10, 50)
    assert all(math.isnan(b) for b in nan)
    assert all(math.isnan(b) for b in bootstrap_interval(lambda i: 1.0, 0, 50))
    assert not excludes_zero(float("nan"), 1.0)
