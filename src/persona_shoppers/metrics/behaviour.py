"""Behavioural alignment metrics: PAARS group and individual metrics (KL over count variables
and ranks, item-selection accuracy, A/B agreement), SimPersona action rates, behavioural
separation and calibration.

See docs/alignment_metrics.md.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from scipy import stats

from .distributions import kl_divergence
from .intervals import bootstrap_interval, mean_interval

__all__ = [
    "ab_agreement",
    "accuracy",
    "accuracy_against_baseline",
    "action_rate_alignment",
    "calibration",
    "cohens_d",
    "discrete_kl",
    "kruskal_wallis",
    "pair_action_rates",
    "permutation_test",
    "probability_against_frequency",
    "search_shares",
    "pairing_alignment",
    "persona_pairing_alignment",
    "rank_distribution_kl",
    "real_pair_rates",
    "separation_tests",
    "stratified_alignment",
    "welch_t",
]


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _vector(x: Any, name: str, n: int | None = None) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array, got shape {arr.shape}")
    if n is not None and arr.size != n:
        raise ValueError(f"{name} has {arr.size} entries, expected {n}")
    return arr


def _numeric(x: Any, name: str, n: int | None = None, min_size: int = 1) -> np.ndarray:
    arr = _vector(x, name, n).astype(np.float64)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    if arr.size < min_size:
        raise ValueError(f"{name} needs at least {min_size} values, got {arr.size}")
    return arr


def _rate(x: Any, name: str, n: int | None = None) -> np.ndarray:
    arr = _numeric(x, name, n)
    if ((arr < 0) | (arr > 1)).any():
        raise ValueError(f"{name} must lie in [0, 1] (flags or rates)")
    return arr


def _scalar(value: Any) -> Any:
    """A numpy scalar as the matching Python scalar (object-array entries pass through)."""
    return value.item() if isinstance(value, np.generic) else value


def _bools(x: Any, name: str, n: int | None = None) -> np.ndarray:
    arr = _vector(x, name, n)
    if arr.dtype != bool and not np.isin(arr, (0, 1)).all():
        raise ValueError(f"{name} must be booleans or 0/1")
    return arr.astype(bool)


# --------------------------------------------------------------------------------------------
# PAARS: discrete group KL and individual accuracy
# --------------------------------------------------------------------------------------------


def discrete_kl(
    p_samples: Any, q_samples: Any, support: Sequence[Any] | None = None, epsilon: float = 1e-6
) -> float:
    """KL(P || Q) between the histograms of two samples of a discrete variable (PAARS 4.2).

    P is the reference (human) sample, Q the agent sample, e.g. #searches per session.
    ``p_v = #{i: p_samples_i = v} / n_p`` over every value v of the ``support`` (default: the
    sorted union of both samples' values; a given support must contain every observed value),
    likewise q. Both histograms are smoothed additively on the probability scale,
    ``p~_v = (p_v + epsilon) / (1 + V epsilon)`` with V = |support|, and
    ``KL = sum_v p~_v ln(p~_v / q~_v)`` in nats (:func:`~.distributions.kl_divergence`). A
    value humans use but agents never produce costs about ``p_v ln(p_v / epsilon)``: at the
    default 1e-6 up to 13.8 p_v nats, which is why near-degenerate agents score ~10 (PAARS
    Table 2, appendix B).
    """
    p = _vector(p_samples, "p_samples")
    q = _vector(q_samples, "q_samples")
    values = np.union1d(p, q) if support is None else _vector(np.asarray(support), "support")
    if np.unique(values).size != values.size:
        raise ValueError("support must not repeat values")
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    counts = []
    for name, x in (("p_samples", p), ("q_samples", q)):
        pos = np.clip(np.searchsorted(sorted_values, x), 0, values.size - 1)
        outside = sorted_values[pos] != x
        if outside.any():
            raise ValueError(f"{name} has values outside support: {np.unique(x[outside])[:5]}")
        counts.append(np.bincount(pos, minlength=values.size))
    return kl_divergence(counts[0], counts[1], epsilon=epsilon)


def rank_distribution_kl(
    human_ranks: Any, agent_ranks: Any, n_ranks: int, epsilon: float = 1e-6
) -> float:
    """KL(P_human || Q_agent) over the rank of the selected search result (PAARS 4.3).

    Ranks are 1-based positions in a result list of length ``n_ranks``; the histogram is over
    ranks 1..n_ranks (ranks never chosen still count as bins), smoothed as in
    :func:`discrete_kl`.
    """
    if n_ranks < 1:
        raise ValueError(f"n_ranks must be >= 1, got {n_ranks}")
    for name, r in (("human_ranks", human_ranks), ("agent_ranks", agent_ranks)):
        arr = _numeric(r, name)
        if (arr != np.round(arr)).any() or arr.min() < 1 or arr.max() > n_ranks:
            raise ValueError(f"{name} must be integers in [1, {n_ranks}]")
    support = np.arange(1, n_ranks + 1)
    return discrete_kl(
        np.asarray(human_ranks, dtype=np.int64),
        np.asarray(agent_ranks, dtype=np.int64),
        support,
        epsilon,
    )


def accuracy(predicted: Any, actual: Any) -> float:
    """Share of exact matches, ``(1/n) sum_i 1[predicted_i = actual_i]`` (PAARS 4.3, Table 3).

    In the 4-way item-selection task, random guessing scores 0.25.
    """
    pred = _vector(predicted, "predicted")
    act = _vector(actual, "actual", pred.size)
    return float(np.mean(pred == act))


def accuracy_against_baseline(
    correct: Any, baseline_correct: Any, draws: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """A predictor's accuracy beside a baseline's on the same steps (flags per step): both
    accuracies, their difference with a paired 95% bootstrap interval over steps, and n."""
    model = _bools(correct, "correct").astype(float)
    base = _bools(baseline_correct, "baseline_correct", model.size).astype(float)
    gain = model - base
    return {
        "accuracy": float(model.mean()),
        "interval": list(mean_interval(model, draws, seed)),
        "baseline": float(base.mean()),
        "difference": float(gain.mean()),
        "difference_interval": list(mean_interval(gain, draws, seed)),
        "n": int(model.size),
    }


def search_shares(counts: Any, draws: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Per session (rows of ``counts``: searches, searches that found no product, searches
    repeating the session's previous query), the share of all searches that found nothing and
    the share that repeat, each pooled over sessions with a 95% bootstrap interval over
    sessions, and n (searches) and sessions. NaN shares where there is no search."""
    table = np.asarray(counts, dtype=float).reshape(-1, 3)
    if not np.isfinite(table).all() or (table < 0).any():
        raise ValueError("search_shares: counts must be finite and non-negative")
    if (table[:, 1:] > table[:, :1]).any():
        raise ValueError(
            "search_shares: a session has more empty or repeated searches than searches"
        )

    def share(column: int) -> Callable[[np.ndarray], float]:
        def value(i: np.ndarray) -> float:
            total = table[i, 0].sum()
            return float(table[i, column].sum() / total) if total else float("nan")

        return value

    report: dict[str, Any] = {"n": int(table[:, 0].sum()), "sessions": len(table)}
    everything = np.arange(len(table))
    for name, column in (("empty", 1), ("repeated", 2)):
        value = share(column)
        report[name] = value(everything)
        report[f"{name}_interval"] = (
            list(bootstrap_interval(value, len(table), draws, seed))
            if report["n"]
            else [np.nan] * 2
        )
    return report


def probability_against_frequency(
    probabilities: Any, taken: Any, draws: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """A model's mean probability of an action against how often the humans took it on the
    same steps: both means with 95% bootstrap intervals over steps, the ratio model / human
    with a paired interval (NaN where the humans never took it), and n."""
    p = _rate(probabilities, "probabilities")
    human = _bools(taken, "taken", p.size).astype(float)

    def ratio(idx: np.ndarray) -> float:
        rate = human[idx].mean()
        return float(p[idx].mean() / rate) if rate > 0 else float("nan")

    return {
        "model": float(p.mean()),
        "model_interval": list(mean_interval(p, draws, seed)),
        "human": float(human.mean()),
        "human_interval": list(mean_interval(human, draws, seed)),
        "ratio": ratio(np.arange(p.size)),
        "ratio_interval": list(bootstrap_interval(ratio, p.size, draws, seed)),
        "n": int(p.size),
    }


def token_swap_gain(
    own: Any, swapped: Any, taken: Any, draws: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """How much a persona token tells the model about the action the human took: per step,
    log P(taken | own token) - log P(taken | another token) (``own`` and ``swapped``: the
    model's (steps, actions) probabilities, ``taken``: the column of the human's action),
    its mean with a 95% bootstrap interval over steps and n. 0 for a model that ignores its
    token, positive where the own token makes the human's action more likely."""
    p_own = np.asarray(own, dtype=float)
    p_swapped = np.asarray(swapped, dtype=float)
    if p_own.ndim != 2 or p_own.shape != p_swapped.shape:
        raise ValueError(
            f"own and swapped must be (steps, actions) of one shape, got {p_own.shape} and "
            f"{p_swapped.shape}"
        )
    column = _vector(taken, "taken", p_own.shape[0]).astype(int)
    rows = np.arange(p_own.shape[0])
    tiny = np.finfo(float).tiny
    gain = np.log(np.maximum(p_own[rows, column], tiny)) - np.log(
        np.maximum(p_swapped[rows, column], tiny)
    )
    return {
        "gain": float(gain.mean()),
        "interval": list(mean_interval(gain, draws, seed)),
        "n": int(gain.size),
    }


def ab_agreement(simulated_effect: float, reference_effect: float) -> dict[str, Any]:
    """Directional agreement and magnitude ratio of one A/B test (PAARS section 5).

    Effects are treatment minus control (e.g. the change in sales). ``direction_agrees`` is
    ``sign(simulated) == sign(reference)`` (a zero effect only agrees with a zero effect);
    ``magnitude_ratio = simulated / reference`` (PAARS saw 10-30x; NaN when the reference is
    0, negative when the directions disagree).
    """
    sim, ref = float(simulated_effect), float(reference_effect)
    if not (np.isfinite(sim) and np.isfinite(ref)):
        raise ValueError("simulated_effect and reference_effect must be finite")
    return {
        "direction_agrees": bool(np.sign(sim) == np.sign(ref)),
        "magnitude_ratio": sim / ref if ref != 0 else float("nan"),
    }


# --------------------------------------------------------------------------------------------
# SimPersona section 3.2: action-rate alignment
# --------------------------------------------------------------------------------------------


def action_rate_alignment(
    real_atc: Any, real_purchase: Any, agent_atc: Any, agent_purchase: Any
) -> dict[str, np.ndarray]:
    """ATC alignment, purchase alignment and ARA, elementwise (SimPersona section 3.2).

    ``ATC alignment = 1 - |ATC_real - ATC_agent|``, ``purchase alignment = 1 - |PUR_real -
    PUR_agent|`` and ``ARA = 0.5 ATC alignment + 0.5 purchase alignment``, with rates in
    [0, 1]. Scalars or equal-length arrays (one entry per compared cell).
    """
    ra, rp = np.atleast_1d(real_atc), np.atleast_1d(real_purchase)
    n = ra.size
    ra, rp = _rate(ra, "real_atc"), _rate(rp, "real_purchase", n)
    aa = _rate(np.atleast_1d(agent_atc), "agent_atc", n)
    ap = _rate(np.atleast_1d(agent_purchase), "agent_purchase", n)
    atc = 1.0 - np.abs(ra - aa)
    purchase = 1.0 - np.abs(rp - ap)
    return {"atc": atc, "purchase": purchase, "ara": 0.5 * atc + 0.5 * purchase}


def stratified_alignment(
    atc_alignment: Any, purchase_alignment: Any, strata: Any
) -> dict[str, Any]:
    """Alignment per funnel stratum and stratified (SimPersona section 3.2, Table 2).

    Inputs are per-cell alignments (one per (shop, token) pair) and the cell's stratum. Per
    stratum g: the unweighted mean over its cells of ATC and purchase alignment, and
    ``ARA_g = 0.5 ATC_g + 0.5 PUR_g``. Stratified: the unweighted mean over the strata present,
    so a dominant stratum (window shoppers) cannot wash out rare ones; this reproduces Table 2
    (e.g. correct ATC: (.706 + .736 + .767 + .942) / 4 = .788). Returns
    ``{"per_stratum": {g: {"atc", "purchase", "ara", "n_cells"}}, "stratified": {"atc",
    "purchase", "ara"}}``.
    """
    atc = _numeric(atc_alignment, "atc_alignment")
    pur = _numeric(purchase_alignment, "purchase_alignment", atc.size)
    s = _vector(strata, "strata", atc.size)
    levels, idx = np.unique(s, return_inverse=True)
    n_cells = np.bincount(idx)
    atc_g = np.bincount(idx, weights=atc) / n_cells
    pur_g = np.bincount(idx, weights=pur) / n_cells
    per_stratum = {
        _scalar(g): {
            "atc": float(a),
            "purchase": float(p),
            "ara": float(0.5 * a + 0.5 * p),
            "n_cells": int(c),
        }
        for g, a, p, c in zip(levels, atc_g, pur_g, n_cells, strict=True)
    }
    a_all, p_all = float(atc_g.mean()), float(pur_g.mean())
    return {
        "per_stratum": per_stratum,
        "stratified": {"atc": a_all, "purchase": p_all, "ara": 0.5 * a_all + 0.5 * p_all},
    }


def pair_action_rates(
    shop: Any, token: Any, atc: Any, purchase: Any, strata: Any = None
) -> dict[str, np.ndarray]:
    """Add-to-cart and purchase rates per (shop, token) pair (SimPersona section 3.2).

    One row per unit (a session, or a buyer with per-buyer rates); ``atc`` and ``purchase`` are
    0/1 flags or rates in [0, 1]. For every pair present: ``atc`` = mean of the rows' atc,
    ``purchase`` likewise, ``n`` = number of rows, sorted by (shop, token). With ``strata``
    (one funnel stratum per row), ``stratum`` is the pair's modal stratum (ties go to the
    first label in sorted order, i.e. the deeper funnel stage A before B).
    """
    s = _vector(shop, "shop")
    n = s.size
    t = _vector(token, "token", n)
    a, p = _rate(atc, "atc", n), _rate(purchase, "purchase", n)
    shops, si = np.unique(s, return_inverse=True)
    tokens, ti = np.unique(t, return_inverse=True)
    keys, pi = np.unique(si.reshape(-1) * tokens.size + ti.reshape(-1), return_inverse=True)
    counts = np.bincount(pi)
    out = {
        "shop": shops[keys // tokens.size],
        "token": tokens[keys % tokens.size],
        "n": counts,
        "atc": np.bincount(pi, weights=a) / counts,
        "purchase": np.bincount(pi, weights=p) / counts,
    }
    if strata is not None:
        levels, gi = np.unique(_vector(strata, "strata", n), return_inverse=True)
        table = np.bincount(pi * levels.size + gi.reshape(-1), minlength=keys.size * levels.size)
        out["stratum"] = levels[table.reshape(keys.size, levels.size).argmax(axis=1)]
    return out


def _column(table: Any, key: str, name: str) -> Any:
    if key not in table:
        raise ValueError(f"{name} needs a '{key}' column")
    return table[key]


def persona_pairing_alignment(real: Any, agent: Any, seed: int = 0) -> dict[str, Any]:
    """ATC / purchase alignment and ARA for correct vs mismatched tokens (SimPersona 3.2).

    ``real`` (real buyers) and ``agent`` (agent sessions) are tables (dict of arrays or a
    DataFrame), one row per unit, with columns ``shop``, ``token`` (the persona token assigned
    to the buyer / conditioning the agent), ``atc``, ``purchase`` (flags or rates in [0, 1]);
    ``real`` also ``stratum``. Rates are per (shop, token) pair (:func:`pair_action_rates`);
    every agent pair must have real buyers. For agent pair (s, a) with rates x:

    * ``correct``: alignment of x with the real rates of (s, a);
    * ``all_mismatch``: the mean, over every other token b != a with real buyers on shop s, of
      the alignment of x with the real rates of (s, b);
    * ``random_mismatch``: alignment of x with one b != a drawn uniformly (``seed``).

    Each is reported by :func:`stratified_alignment`, a pair's stratum being the modal stratum
    of the real rows of (s, a). All three are over the same cells: pairs on shops with a single
    real token have no mismatch and are left out (``n_cells`` shows how many remain). Returns
    ``{"correct", "all_mismatch", "random_mismatch"}``.
    """
    return pairing_alignment(real_pair_rates(real), agent, seed)


def real_pair_rates(real: Any) -> dict[str, np.ndarray]:
    """The real side of :func:`persona_pairing_alignment`: :func:`pair_action_rates` of
    ``real`` with each pair's modal stratum, computed once for many agent tables."""
    return pair_action_rates(
        _column(real, "shop", "real"),
        _column(real, "token", "real"),
        _column(real, "atc", "real"),
        _column(real, "purchase", "real"),
        _column(real, "stratum", "real"),
    )


def pairing_alignment(rp: dict[str, np.ndarray], agent: Any, seed: int = 0) -> dict[str, Any]:
    """:func:`persona_pairing_alignment` against real pair rates from :func:`real_pair_rates`."""
    ap = pair_action_rates(
        _column(agent, "shop", "agent"),
        _column(agent, "token", "agent"),
        _column(agent, "atc", "agent"),
        _column(agent, "purchase", "agent"),
    )
    m = rp["shop"].size
    _, shop_code = np.unique(np.concatenate([rp["shop"], ap["shop"]]), return_inverse=True)
    tokens, tok_code = np.unique(np.concatenate([rp["token"], ap["token"]]), return_inverse=True)
    key = shop_code.reshape(-1) * tokens.size + tok_code.reshape(-1)
    real_key, agent_key = key[:m], key[m:]  # real_key is sorted: pairs come sorted
    pos = np.clip(np.searchsorted(real_key, agent_key), 0, m - 1)
    missing = real_key[pos] != agent_key
    if missing.any():
        shops, toks = ap["shop"][missing][:5].tolist(), ap["token"][missing][:5].tolist()
        bad = list(zip(shops, toks, strict=True))
        raise ValueError(f"agent (shop, token) pairs without real buyers: {bad}")
    real_shop = shop_code[:m]
    start = np.searchsorted(real_shop, real_shop[pos], side="left")
    size = np.searchsorted(real_shop, real_shop[pos], side="right") - start
    strata = rp["stratum"][pos]

    def against(idx: np.ndarray, rows: np.ndarray | slice) -> dict[str, np.ndarray]:
        return action_rate_alignment(
            rp["atc"][idx], rp["purchase"][idx], ap["atc"][rows], ap["purchase"][rows]
        )

    has_other = size > 1
    if not has_other.any():
        raise ValueError("no agent pair's shop has real buyers of another token: no mismatch")
    correct = against(pos[has_other], np.flatnonzero(has_other))
    # all-mismatch: every (agent pair, real pair of the same shop) combination, own token out
    owner = np.repeat(np.arange(pos.size), size)
    offset = np.arange(owner.size) - np.repeat(np.cumsum(size) - size, size)
    other = np.repeat(start, size) + offset
    keep = other != pos[owner]
    combos = against(other[keep], owner[keep])
    n_other = np.maximum(size - 1, 1)
    mean_atc = np.bincount(owner[keep], combos["atc"], pos.size) / n_other
    mean_pur = np.bincount(owner[keep], combos["purchase"], pos.size) / n_other
    # random-mismatch: draw u in [0, size - 1) and skip the own token's slot
    rng = np.random.default_rng(seed)
    draw = rng.integers(0, n_other[has_other])
    rank = (pos - start)[has_other]
    pick = start[has_other] + draw + (draw >= rank)
    rand = against(pick, np.flatnonzero(has_other))
    return {
        "correct": stratified_alignment(correct["atc"], correct["purchase"], strata[has_other]),
        "all_mismatch": stratified_alignment(
            mean_atc[has_other], mean_pur[has_other], strata[has_other]
        ),
        "random_mismatch": stratified_alignment(rand["atc"], rand["purchase"], strata[has_other]),
    }


# --------------------------------------------------------------------------------------------
# SimPersona section 3.3: behavioural separation tests
# --------------------------------------------------------------------------------------------


def cohens_d(x: Any, y: Any) -> float:
    """Cohen's d with the pooled standard deviation (SimPersona section 3.3, Table 3).

    ``d = (mean(x) - mean(y)) / s_p`` with ``s_p^2 = (sum (x_i - mean x)^2 + sum (y_j -
    mean y)^2) / (n_x + n_y - 2)``, i.e. the pooled ddof-1 variances. Pass High as ``x`` and
    Low as ``y`` for a positive d when High scores more. ``s_p = 0`` gives +-inf (or NaN for
    equal means).
    """
    a, b = _numeric(x, "x"), _numeric(y, "y")
    if a.size + b.size < 3:
        raise ValueError("cohens_d needs n_x + n_y >= 3")
    ss = np.sum((a - a.mean()) ** 2) + np.sum((b - b.mean()) ** 2)
    sp = np.sqrt(ss / (a.size + b.size - 2))
    diff = a.mean() - b.mean()
    if sp == 0:
        return float("nan") if diff == 0 else float(np.sign(diff) * np.inf)
    return float(diff / sp)


def welch_t(x: Any, y: Any) -> dict[str, float]:
    """Welch's unequal-variance t-test (SimPersona 3.3): ``{"t", "p", "df"}``, p two-sided.

    ``t = (mean x - mean y) / sqrt(s_x^2/n_x + s_y^2/n_y)`` with Welch-Satterthwaite df, via
    ``scipy.stats.ttest_ind(equal_var=False)``.
    """
    a, b = _numeric(x, "x", min_size=2), _numeric(y, "y", min_size=2)
    res = stats.ttest_ind(a, b, equal_var=False)
    return {"t": float(res.statistic), "p": float(res.pvalue), "df": float(res.df)}


def kruskal_wallis(*groups: Any) -> dict[str, float]:
    """Kruskal-Wallis H test across groups, e.g. Low / Medium / High (SimPersona 3.3).

    Rank-based test that at least one group's distribution differs (tie-corrected H, chi^2
    p-value with k - 1 df), via ``scipy.stats.kruskal``. Returns ``{"h", "p"}``; NaN for both
    when every value is identical (no ranks to compare).
    """
    if len(groups) < 2:
        raise ValueError(f"kruskal_wallis needs at least 2 groups, got {len(groups)}")
    arrays = [_numeric(g, f"groups[{i}]") for i, g in enumerate(groups)]
    if np.unique(np.concatenate(arrays)).size == 1:
        return {"h": float("nan"), "p": float("nan")}
    res = stats.kruskal(*arrays)
    return {"h": float(res.statistic), "p": float(res.pvalue)}


def _mean_difference(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(x, axis=axis) - np.mean(y, axis=axis)


def permutation_test(
    x: Any,
    y: Any,
    statistic: Callable[..., Any] = _mean_difference,
    n_draws: int = 10_000,
    seed: int = 0,
) -> dict[str, float]:
    """Two-sample permutation test with random label reassignments (SimPersona 3.3, Table 3).

    ``statistic(x, y, axis)`` must be vectorised along ``axis`` (default: mean(x) - mean(y)).
    The pooled values are reshuffled into groups of the original sizes ``n_draws`` times and

        p = (1 + #{draws with |T*| >= |T_obs|}) / (n_draws + 1),

    two-sided on |T| with the +1 correction (the observed labelling counts as one draw, so
    p >= 1 / (n_draws + 1) is never 0). When fewer distinct labellings exist than
    ``n_draws``, scipy enumerates all of them and p is exact (no +1). Returns
    ``{"statistic": T_obs, "p": p}``; via ``scipy.stats.permutation_test``.
    """
    a, b = _numeric(x, "x"), _numeric(y, "y")
    if n_draws < 1:
        raise ValueError(f"n_draws must be >= 1, got {n_draws}")

    def absolute(u: np.ndarray, v: np.ndarray, axis: int = -1) -> np.ndarray:
        return np.abs(statistic(u, v, axis=axis))

    res = stats.permutation_test(
        (a, b),
        absolute,
        permutation_type="independent",
        vectorized=True,
        n_resamples=n_draws,
        batch=max(1, 2_000_000 // (a.size + b.size)),
        alternative="greater",
        rng=np.random.default_rng(seed),
    )
    return {"statistic": float(statistic(a, b, axis=-1)), "p": float(res.pvalue)}


def separation_tests(
    scores: Any,
    bins: Any,
    low: Any = 0,
    high: Any = 2,
    n_draws: int = 10_000,
    seed: int = 0,
) -> dict[str, Any]:
    """One row of SimPersona Table 3: do simulated scores separate across head bins?

    ``scores`` are per-simulation behavioural scores (e.g. event counts), ``bins`` the
    auxiliary-head bin of the persona token that conditioned each simulation. Returns
    ``mean_per_bin`` ({bin: mean}), ``cohens_d`` (High vs Low), ``welch_t`` / ``welch_p``
    (High vs Low), ``kruskal_h`` / ``kruskal_p`` (all bins present) and ``permutation_p``
    (|mean High - mean Low|, ``n_draws`` relabellings of the High and Low simulations).
    """
    v = _numeric(scores, "scores")
    b = _vector(bins, "bins", v.size)
    levels, idx = np.unique(b, return_inverse=True)
    groups = [v[idx == i] for i in range(levels.size)]
    hi, lo = v[b == high], v[b == low]
    if hi.size == 0 or lo.size == 0:
        raise ValueError(f"bins must contain both low={low!r} and high={high!r}")
    welch = welch_t(hi, lo)
    kw = kruskal_wallis(*groups)
    return {
        "mean_per_bin": {
            _scalar(lv): float(g.mean()) for lv, g in zip(levels, groups, strict=True)
        },
        "cohens_d": cohens_d(hi, lo),
        "welch_t": welch["t"],
        "welch_p": welch["p"],
        "kruskal_h": kw["h"],
        "kruskal_p": kw["p"],
        "permutation_p": permutation_test(hi, lo, n_draws=n_draws, seed=seed)["p"],
    }


# --------------------------------------------------------------------------------------------
# SimPersona section 3.4: instruction-following calibration
# --------------------------------------------------------------------------------------------


def calibration(claimed: Any, achieved: Any) -> dict[str, float]:
    """How well an agent's own ``goal_reached`` claim matches reality (SimPersona 3.4, Table 4).

    Per run: ``claimed`` (the agent declared the goal reached) and ``achieved`` (the required
    action was reached, checked by replay or a judge). Returns ``n``, ``claim_rate`` = P(claim)
    (Table 4 "self-reported goal reached"), ``success_rate`` = P(achieved), ``agreement`` =
    P(claim = achieved), ``precision`` = P(achieved | claim) (the calibration SimPersona
    stresses: a claim should mean success) and ``recall`` = P(claim | achieved); precision /
    recall are NaN when nothing was claimed / achieved.
    """
    c = _bools(claimed, "claimed")
    a = _bools(achieved, "achieved", c.size)
    both = float(np.sum(c & a))
    return {
        "n": float(c.size),
        "claim_rate": float(c.mean()),
        "success_rate": float(a.mean()),
        "agreement": float(np.mean(c == a)),
        "precision": both / float(c.sum()) if c.any() else float("nan"),
        "recall": both / float(a.sum()) if a.any() else float("nan"),
    }
