"""Distribution and population-recovery metrics (SimPersona appendix B, eqs. 4-6).

A store's buyers are mapped to persona tokens; the token mix p_s(k) (eq. 4) combined with
per-token profiles P(c | k) predicts the store's stratum mix (eq. 5) or, with per-token feature
centroids, its mean behavioural profile (eq. 6). Predictions are compared with the real values
by Jensen-Shannon divergence (strata) and per-feature R^2 (continuous features).

All functions are vectorised and return floats, dicts or numpy arrays. See ``docs/metrics.md``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import sparse
from scipy.special import rel_entr

__all__ = [
    "centroids_from_assignments",
    "js_divergence",
    "js_divergence_rows",
    "kl_divergence",
    "predicted_mix",
    "profiles_from_assignments",
    "r_squared",
    "token_distribution",
]


def _distribution(p: Any, name: str) -> np.ndarray:
    """Validate a non-negative vector (or rows) and normalise it to sum 1 along the last axis."""
    arr = np.asarray(p, dtype=np.float64)
    if arr.ndim == 0 or arr.shape[-1] == 0:
        raise ValueError(f"{name} is empty")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    if (arr < 0).any():
        raise ValueError(f"{name} has negative entries; probabilities/counts must be >= 0")
    total = arr.sum(axis=-1, keepdims=True)
    if (total <= 0).any():
        raise ValueError(f"{name} sums to 0; cannot normalise")
    return arr / total


def _pair(p: Any, q: Any) -> tuple[np.ndarray, np.ndarray]:
    pn, qn = _distribution(p, "p"), _distribution(q, "q")
    if pn.shape != qn.shape:
        raise ValueError(f"p and q must have the same shape, got {pn.shape} and {qn.shape}")
    return pn, qn


def _js(p: np.ndarray, q: np.ndarray, base: float) -> np.ndarray:
    m = 0.5 * (p + q)
    # rel_entr(x, y) = x ln(x / y), with 0 ln(0 / y) = 0; m > 0 wherever p > 0 or q > 0.
    js = 0.5 * (rel_entr(p, m).sum(axis=-1) + rel_entr(q, m).sum(axis=-1)) / np.log(base)
    return np.clip(js, 0.0, np.log(2.0) / np.log(base))


def js_divergence(p: Any, q: Any, base: float = 2) -> float:
    """Jensen-Shannon divergence between two discrete distributions (Lin 1991).

    ``JS(P, Q) = 1/2 KL(P || M) + 1/2 KL(Q || M)`` with ``M = (P + Q) / 2`` and
    ``KL(P || M) = sum_i p_i log_base(p_i / m_i)`` (terms with p_i = 0 are 0). Inputs are
    normalised to sum 1 first (so raw counts are fine); negative entries raise ``ValueError``.
    With ``base = 2`` the value lies in [0, 1]: 0 for identical, 1 for disjoint supports. This
    is the divergence itself, not its square root (the JS *distance*).
    """
    if base <= 1:
        raise ValueError(f"base must be > 1, got {base}")
    pn, qn = _pair(p, q)
    if pn.ndim != 1:
        raise ValueError("js_divergence takes 1-D distributions; use js_divergence_rows")
    return float(_js(pn, qn, base))


def js_divergence_rows(p: Any, q: Any, base: float = 2) -> np.ndarray:
    """Row-wise :func:`js_divergence` of two (S, C) arrays (e.g. real vs predicted store mixes)."""
    if base <= 1:
        raise ValueError(f"base must be > 1, got {base}")
    pn, qn = _pair(p, q)
    if pn.ndim != 2:
        raise ValueError(f"js_divergence_rows takes (S, C) arrays, got shape {pn.shape}")
    return _js(pn, qn, base)


def kl_divergence(p: Any, q: Any, epsilon: float = 1e-6, base: float = np.e) -> float:
    """Kullback-Leibler divergence KL(P || Q) with explicit additive smoothing.

    Both inputs are normalised to sum 1, then smoothed as
    ``p~_i = (p_i + epsilon) / (1 + C epsilon)`` (likewise q), C = number of outcomes, and
    ``KL = sum_i p~_i log_base(p~_i / q~_i)`` (natural log by default). Smoothing keeps KL
    finite when Q gives zero mass to an outcome P uses; with the default epsilon = 1e-6 such
    an outcome costs about p_i ln(p_i / 1e-6) <= 13.8 p_i nats, and the bias on distributions
    with full support is O(C epsilon). ``epsilon = 0`` gives the exact KL (``inf`` when Q misses
    P's support). Negative entries raise ``ValueError``.
    """
    if epsilon < 0:
        raise ValueError(f"epsilon must be >= 0, got {epsilon}")
    if base <= 1:
        raise ValueError(f"base must be > 1, got {base}")
    pn, qn = _pair(p, q)
    if pn.ndim != 1:
        raise ValueError("kl_divergence takes 1-D distributions")
    c = pn.size
    ps = (pn + epsilon) / (1.0 + c * epsilon)
    qs = (qn + epsilon) / (1.0 + c * epsilon)
    return float(max(rel_entr(ps, qs).sum(), 0.0) / np.log(base))


def _codes(codes: Any, k: int) -> np.ndarray:
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    c = np.asarray(codes)
    if c.ndim != 1 or c.size == 0:
        raise ValueError("codes must be a non-empty 1-D array")
    if c.dtype.kind not in "iu":
        raise ValueError("codes must be integer token indices")
    if c.min() < 0 or c.max() >= k:
        raise ValueError(f"codes must lie in [0, {k}), got range [{c.min()}, {c.max()}]")
    return c.astype(np.int64)


def token_distribution(codes: Any, groups: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Empirical token mix per group (store), SimPersona eq. 4.

    ``p_s(k) = (1 / |B_s|) sum_{b in B_s} 1[code_b = k]``. Returns ``(group_levels, P)`` with
    ``group_levels`` the sorted distinct groups and ``P`` an (S, k) array whose rows sum to 1.
    """
    c = _codes(codes, k)
    g = np.asarray(groups)
    if g.shape != c.shape:
        raise ValueError(f"groups must have one entry per code, got {g.shape} vs {c.shape}")
    levels, gi = np.unique(g, return_inverse=True)
    counts = np.bincount(gi.reshape(-1) * k + c, minlength=levels.size * k).reshape(-1, k)
    return levels, counts / counts.sum(axis=1, keepdims=True)


def predicted_mix(token_distribution: Any, profiles: Any) -> np.ndarray:
    """Predicted per-store mix from token mixes and per-token profiles (SimPersona eq. 5).

    ``P_s(c) = sum_k p_s(k) P(c | k)``, i.e. ``token_distribution @ profiles``. Rows of
    ``token_distribution`` (S, K) must be non-negative and are normalised to sum 1 (counts are
    fine). ``profiles`` (K, C) is used as given: class distributions P(c | k) give eq. 5, and
    per-token feature centroids (K, d) give the store-profile reconstruction of eq. 6.
    A 1-D ``token_distribution`` is treated as one store and returns a 1-D result.
    """
    t = _distribution(token_distribution, "token_distribution")
    prof = np.asarray(profiles, dtype=np.float64)
    if prof.ndim != 2:
        raise ValueError(f"profiles must be a (K, C) array, got shape {prof.shape}")
    if t.shape[-1] != prof.shape[0]:
        raise ValueError(
            f"token_distribution has {t.shape[-1]} tokens but profiles has {prof.shape[0]} rows"
        )
    if not np.isfinite(prof).all():
        raise ValueError("profiles contain NaN or infinite values")
    return t @ prof


def profiles_from_assignments(
    codes: Any, labels: Any, k: int, classes: Sequence[Any]
) -> np.ndarray:
    """Per-token class profile P(c | k) estimated from all buyers assigned to each token.

    ``P(c | k) = #{b: code_b = k, label_b = c} / #{b: code_b = k}`` as a (k, C) array with
    columns in the order of ``classes``. Tokens no buyer uses have no estimate; their row is
    set to the global label distribution ``#{b: label_b = c} / N`` (the best uninformed guess,
    and it keeps every row a distribution so eq. 5 stays a proper mixture). Labels not in
    ``classes`` raise ``ValueError``.
    """
    c = _codes(codes, k)
    lab = np.asarray(labels)
    if lab.shape != c.shape:
        raise ValueError(f"labels must have one entry per code, got {lab.shape} vs {c.shape}")
    cls = np.asarray(list(classes))
    if cls.size == 0 or np.unique(cls).size != cls.size:
        raise ValueError("classes must be non-empty and distinct")
    order = np.argsort(cls, kind="stable")
    pos = np.searchsorted(cls[order], lab)
    pos = np.clip(pos, 0, cls.size - 1)
    found = cls[order][pos] == lab
    if not found.all():
        missing = np.unique(lab[~found])[:5]
        raise ValueError(f"labels not in classes: {missing.tolist()}")
    col = order[pos]
    n_cls = cls.size
    counts = np.bincount(c * n_cls + col, minlength=k * n_cls).reshape(k, n_cls).astype(float)
    sizes = counts.sum(axis=1, keepdims=True)
    global_dist = counts.sum(axis=0) / c.size
    return np.where(sizes > 0, counts / np.maximum(sizes, 1.0), global_dist)


def centroids_from_assignments(codes: Any, features: Any, k: int) -> np.ndarray:
    """Per-token mean feature vector x_bar_k (SimPersona eq. 6 input), shape (k, d).

    ``x_bar_k = mean of the features of buyers with code k``; tokens no buyer uses get the
    global feature mean (same convention as :func:`profiles_from_assignments`).
    """
    c = _codes(codes, k)
    x = np.asarray(features, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[0] != c.size:
        raise ValueError(f"features must be ({c.size}, d), got shape {x.shape}")
    indicator = sparse.csr_array((np.ones(c.size), (c, np.arange(c.size))), shape=(k, c.size))
    sums = indicator @ x
    sizes = np.bincount(c, minlength=k)[:, None].astype(float)
    return np.where(sizes > 0, sums / np.maximum(sizes, 1.0), x.mean(axis=0))


def r_squared(y_true: Any, y_pred: Any, columns: Sequence[str] | None = None) -> dict[str, Any]:
    """Coefficient of determination per column (e.g. per feature across stores) and its mean.

    For each column j: ``R^2_j = 1 - sum_s (y_sj - yhat_sj)^2 / sum_s (y_sj - ybar_j)^2``
    (can be negative when the prediction is worse than the column mean). A constant column
    (zero total variance) has no defined R^2 and gets NaN; ``mean`` averages the defined
    columns (NaN if none). Returns ``{"per_column": {name: R^2_j}, "mean": float}`` with names
    from ``columns`` or the column indices as strings. 1-D inputs are one column.
    """
    yt = np.asarray(y_true, dtype=np.float64)
    yp = np.asarray(y_pred, dtype=np.float64)
    if yt.ndim == 1:
        yt, yp = yt[:, None], (yp[:, None] if yp.ndim == 1 else yp)
    if yt.shape != yp.shape or yt.ndim != 2:
        raise ValueError(f"y_true and y_pred must have the same 2-D shape: {yt.shape}, {yp.shape}")
    if yt.shape[0] < 2:
        raise ValueError("R^2 needs at least 2 rows")
    if not (np.isfinite(yt).all() and np.isfinite(yp).all()):
        raise ValueError("y_true / y_pred contain NaN or infinite values")
    names = [str(j) for j in range(yt.shape[1])] if columns is None else [str(n) for n in columns]
    if len(names) != yt.shape[1]:
        raise ValueError(f"{len(names)} column names for {yt.shape[1]} columns")
    ss_res = np.sum((yt - yp) ** 2, axis=0)
    ss_tot = np.sum((yt - yt.mean(axis=0)) ** 2, axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = np.where(ss_tot > 0, 1.0 - ss_res / ss_tot, np.nan)
    defined = r2[np.isfinite(r2)]
    return {
        "per_column": dict(zip(names, r2.tolist(), strict=True)),
        "mean": float(defined.mean()) if defined.size else float("nan"),
    }
