"""Bootstrap intervals for alignment numbers (docs/alignment_metrics.md, "Intervals").

A statistic is a function of the indices of the units it is computed on (agents, cases or
sessions); resampling the indices with replacement and reading the percentiles gives a
percentile-bootstrap interval. Two quantities on the same units (two A/B arms, correct vs
mismatched tokens, two conditions on the same agents) are paired by computing their
difference on the same resampled indices.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

LEVEL = 0.95


def bootstrap_values(
    statistic: Callable[..., Any],
    n_units: int | tuple[int, ...],
    draws: int = 1000,
    seed: int = 0,
) -> np.ndarray:
    """The statistic on ``draws`` resamples (draws x its number of values).

    ``n_units`` is one sample size (``statistic(indices)``: one resample of ``n_units``
    indices with replacement per draw, shared by everything the statistic computes, which
    pairs them; two calls with the same size and seed resample the same indices, so their
    values pair too) or several (``statistic(indices_1, indices_2, ...)``: independent
    samples, resampled separately)."""
    sizes = (n_units,) if isinstance(n_units, int) else tuple(n_units)
    if min(sizes, default=0) < 1 or draws < 1:
        shape = np.shape(statistic(*(np.arange(n) for n in sizes)))
        return np.full((max(draws, 1), *shape), np.nan)
    rng = np.random.default_rng(seed)
    return np.array(
        [
            np.asarray(statistic(*(rng.integers(0, n, n) for n in sizes)), dtype=float)
            for _ in range(draws)
        ]
    )


def percentile_interval(values: np.ndarray, level: float = LEVEL) -> tuple[Any, Any]:
    """Per column of bootstrap ``values`` (draws x k, or draws), the percentile bounds over its
    finite entries; NaN for a column where fewer than half of the draws are finite."""
    values = np.asarray(values, dtype=float)
    tail = (1 - level) / 2
    columns = values.reshape(values.shape[0], -1)
    bounds = np.full((2, columns.shape[1]), np.nan)
    for j in range(columns.shape[1]):
        finite = columns[np.isfinite(columns[:, j]), j]
        if finite.size and finite.size >= values.shape[0] / 2:
            bounds[:, j] = np.quantile(finite, [tail, 1 - tail])
    shape = values.shape[1:]
    return bounds[0].reshape(shape), bounds[1].reshape(shape)


def bootstrap_intervals(
    statistic: Callable[..., Any],
    n_units: int | tuple[int, ...],
    draws: int = 1000,
    seed: int = 0,
    level: float = LEVEL,
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile-bootstrap intervals of a statistic that returns one value or a vector
    (:func:`bootstrap_values`, :func:`percentile_interval`)."""
    return percentile_interval(bootstrap_values(statistic, n_units, draws, seed), level)


def bootstrap_interval(
    statistic: Callable[..., float],
    n_units: int | tuple[int, ...],
    draws: int = 1000,
    seed: int = 0,
    level: float = LEVEL,
) -> tuple[float, float]:
    """:func:`bootstrap_intervals` of a statistic with one value."""
    low, high = bootstrap_intervals(statistic, n_units, draws, seed, level)
    return float(low), float(high)


def mean_interval(
    values: np.ndarray, draws: int = 1000, seed: int = 0, level: float = LEVEL
) -> tuple[float, float]:
    """:func:`bootstrap_interval` of the mean of ``values`` (vectorised)."""
    x = np.asarray(values, dtype=float)
    if x.size == 0 or draws < 1:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, (draws, x.size))].mean(axis=1)
    low, high = percentile_interval(means, level)
    return float(low), float(high)


def excludes_zero(low: float, high: float) -> bool:
    """Whether an interval lies strictly on one side of zero (NaN bounds: no)."""
    return bool(np.isfinite(low) and np.isfinite(high) and (low > 0 or high < 0))
