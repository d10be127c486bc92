"""Query and text alignment metrics (PAARS section 4.3 "Query generation", section 5, app. D).

Individual alignment of generated queries is the cosine similarity between the embedding of
an agent's query and of the matching human query, read per stratum of human-query perplexity
(PAARS Figure 2). Group alignment is KL(P_human || Q_agent) between Gaussian kernel density
estimates in embedding space, estimated by Monte Carlo and swept over bandwidths (appendix D).
Text diversity is the type-token ratio (PAARS Table 4). See ``docs/alignment_metrics.md``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

__all__ = [
    "by_stratum",
    "kde_kl_divergence",
    "kde_kl_sweep",
    "matched_cosine",
    "perplexity_strata",
    "rowwise_cosine",
    "tokenize",
    "type_token_ratio",
]

_WORD = re.compile(r"[^\W_]+", re.UNICODE)
# Pairwise distance blocks are kept under this many entries (float64: 32 MiB).
_BLOCK_ENTRIES = 4_000_000


def tokenize(text: str) -> list[str]:
    """Lower-case word tokens: maximal runs of Unicode letters/digits (``[^\\W_]+``).

    Punctuation, whitespace and underscores separate tokens: ``"Women's Knee-Brace 2"`` gives
    ``["women", "s", "knee", "brace", "2"]``.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    return _WORD.findall(text.lower())


def type_token_ratio(texts: Iterable[str]) -> float:
    """Type-token ratio of a corpus (PAARS section 5, Table 4: Query-TTR, Product-TTR).

    ``TTR = |distinct tokens| / |tokens|`` over the tokens of all ``texts`` pooled together
    (one corpus per population, not an average of per-text ratios), tokens from
    :func:`tokenize`. TTR falls as a corpus grows, so compare populations on corpora of the
    same token count (e.g. the same number of sessions). Raises when there is no token.
    """
    if isinstance(texts, str):
        raise TypeError("texts must be an iterable of strings, not a single string")
    tokens = [tok for text in texts for tok in tokenize(text)]
    if not tokens:
        raise ValueError("texts contain no word tokens; TTR is undefined")
    return len(set(tokens)) / len(tokens)


def _matrix(x: Any, name: str) -> np.ndarray:
    """Validate a finite (n, d) float matrix; a 1-D input is n points in 1 dimension."""
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty (n, d) array, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def rowwise_cosine(a: Any, b: Any) -> np.ndarray:
    """Cosine similarity of matched rows, ``cos_i = <a_i, b_i> / (||a_i|| ||b_i||)``, shape (n,).

    Row i of ``a`` (e.g. the agent query embedding) is compared with row i of ``b`` (the human
    query it should reproduce). A zero row has no direction and gets cosine 0.
    """
    x, y = _matrix(a, "a"), _matrix(b, "b")
    if x.shape != y.shape:
        raise ValueError(f"a and b must have the same shape, got {x.shape} and {y.shape}")
    norms = np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1)
    dots = np.einsum("ij,ij->i", x, y)
    cos = np.divide(dots, norms, out=np.zeros_like(dots), where=norms > 0)
    return np.clip(cos, -1.0, 1.0)


def matched_cosine(a: Any, b: Any) -> float:
    """Mean matched cosine similarity (PAARS section 5: 0.69 with persona, 0.59 without).

    ``(1/n) sum_i cos(a_i, b_i)`` with :func:`rowwise_cosine`; rows are (agent, human) pairs
    of MiniLM embeddings.
    """
    return float(rowwise_cosine(a, b).mean())


def perplexity_strata(
    perplexities: Any, edges: Sequence[float] | None = None, n_strata: int = 5
) -> tuple[np.ndarray, np.ndarray]:
    """Perplexity stratum of each item, with quantile edges (PAARS section 5, Figure 2).

    Without ``edges``, the ``n_strata - 1`` interior edges are the empirical quantiles
    ``q_j = Q(j / n_strata)``, j = 1..n_strata-1, of ``perplexities`` (fit them on the human
    queries, then pass the returned edges to label anything else). Item i gets stratum
    ``#{j: q_j <= x_i}`` in 0..n_strata-1 (0 = easiest queries). Returns ``(labels, edges)``.
    Edges must be strictly increasing: heavy ties that make two quantiles equal raise.
    """
    x = np.asarray(perplexities, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"perplexities must be a non-empty 1-D array, got shape {x.shape}")
    if not np.isfinite(x).all() or (x <= 0).any():
        raise ValueError("perplexities must be finite and > 0")
    if edges is None:
        if n_strata < 2:
            raise ValueError(f"n_strata must be >= 2, got {n_strata}")
        cuts = np.quantile(x, np.arange(1, n_strata) / n_strata)
    else:
        cuts = np.asarray(edges, dtype=np.float64)
        if cuts.ndim != 1 or cuts.size == 0 or not np.isfinite(cuts).all():
            raise ValueError("edges must be a non-empty 1-D array of finite numbers")
    if (np.diff(cuts) <= 0).any():
        raise ValueError(f"edges must be strictly increasing, got {cuts.tolist()} (ties?)")
    return np.searchsorted(cuts, x, side="right"), cuts


def by_stratum(values: Any, strata: Any) -> dict[Any, float]:
    """Mean of ``values`` per stratum label, ``{s: mean_{i: strata_i = s} values_i}``, sorted."""
    v = np.asarray(values, dtype=np.float64)
    s = np.asarray(strata)
    if v.ndim != 1 or v.size == 0:
        raise ValueError(f"values must be a non-empty 1-D array, got shape {v.shape}")
    if s.shape != v.shape:
        raise ValueError(f"strata must have one label per value, got {s.shape} vs {v.shape}")
    levels, idx = np.unique(s, return_inverse=True)
    means = np.bincount(idx, weights=v) / np.bincount(idx)
    return {
        level.item() if isinstance(level, np.generic) else level: float(m)
        for level, m in zip(levels, means, strict=True)
    }


def _kde_log_density(points: np.ndarray, data: np.ndarray, bandwidth: float) -> np.ndarray:
    """log of the Gaussian KDE of ``data`` at ``points``, without the (2 pi h^2)^(d/2) factor.

    ``log f(x) + (d/2) log(2 pi h^2) = logsumexp_j(-||x - x_j||^2 / (2 h^2)) - log n``, with
    squared distances from ``||x||^2 + ||x_j||^2 - 2 <x, x_j>`` in blocks, in place.
    """
    out = np.empty(points.shape[0])
    data_sq = np.einsum("ij,ij->i", data, data)
    step = max(1, _BLOCK_ENTRIES // data.shape[0])
    for start in range(0, points.shape[0], step):
        block = points[start : start + step]
        a = block @ data.T
        a *= -2.0
        a += np.einsum("ij,ij->i", block, block)[:, None]
        a += data_sq[None, :]
        np.maximum(a, 0.0, out=a)
        a *= -0.5 / bandwidth**2
        peak = a.max(axis=1)
        a -= peak[:, None]
        np.exp(a, out=a)
        out[start : start + step] = peak + np.log(a.sum(axis=1))
    return out - np.log(data.shape[0])


@functools.lru_cache(maxsize=16)
def _monte_carlo_draws(seed: int, n: int, n_samples: int, dim: int) -> tuple[np.ndarray, ...]:
    """The seed's draws of :func:`kde_kl_divergence`: which of ``n`` points each sample is
    centred on, and its standard normal offset (read-only). They depend on the sizes only, so
    a bootstrap over resampled points (same sizes, same seed) draws them once."""
    rng = np.random.default_rng(seed)
    which = rng.integers(0, n, size=n_samples)
    noise = rng.standard_normal((n_samples, dim))
    for array in (which, noise):
        array.flags.writeable = False
    return which, noise


def kde_kl_divergence(
    p_samples: Any, q_samples: Any, bandwidth: float, n_samples: int = 1000, seed: int = 0
) -> float:
    """Monte-Carlo KL(P || Q) between Gaussian KDEs (PAARS section 4.2 and query generation).

    ``p_h(x) = (1/n_p) sum_j N(x; p_j, h^2 I)`` and ``q_h`` likewise (isotropic Gaussian
    kernel, ``bandwidth`` h is the kernel standard deviation in the embedding's own units, as
    in scikit-learn's ``KernelDensity``). With x_1..x_M drawn from p_h (a random P point plus
    N(0, h^2 I) noise), ``KL = (1/M) sum_i [log p_h(x_i) - log q_h(x_i)]``, log-densities by
    logsumexp. This is an unbiased estimate of KL(p_h || q_h); it approaches the true KL when
    the KDEs approach the densities (many samples, small h), and grows like 1/h^2 as h shrinks
    on finite samples (PAARS app. D). Deterministic given ``seed``; works in any dimension.
    """
    p, q = _matrix(p_samples, "p_samples"), _matrix(q_samples, "q_samples")
    if p.shape[1] != q.shape[1]:
        raise ValueError(
            f"p_samples and q_samples differ in dimension: {p.shape[1]} vs {q.shape[1]}"
        )
    if not bandwidth > 0:
        raise ValueError(f"bandwidth must be > 0, got {bandwidth}")
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    which, noise = _monte_carlo_draws(seed, p.shape[0], n_samples, p.shape[1])
    x = p[which] + bandwidth * noise
    log_ratio = _kde_log_density(x, p, bandwidth) - _kde_log_density(x, q, bandwidth)
    return float(log_ratio.mean())


def kde_kl_sweep(
    p_samples: Any,
    q_samples: Any,
    bandwidths: Sequence[float] = (0.001, 0.01, 0.1, 1.0),
    repeats: int = 5,
    n_samples: int = 1000,
    seed: int = 0,
    reference_bandwidth: float = 0.1,
) -> dict[str, Any]:
    """KDE Monte-Carlo KL over a bandwidth sweep, ``repeats`` estimates each (PAARS app. D).

    For every bandwidth h: ``mean`` and ``std`` (population std, ddof 0) of ``repeats``
    :func:`kde_kl_divergence` estimates with seeds spawned from ``seed`` (the same repeat seeds
    at every h). PAARS reports the mean of 5 repeats at h = 0.1 as the headline (Table 2) and
    the sweep 0.001, 0.01, 0.1, 1 to show the ranking of conditions does not depend on h; so
    ``kl`` is the mean at ``reference_bandwidth`` (which must be in ``bandwidths``), not a
    minimum over h (KL always shrinks as h grows). Returns ``{"bandwidths", "mean", "std",
    "reference_bandwidth", "kl"}`` with lists in the order of ``bandwidths``.
    """
    hs = [float(h) for h in bandwidths]
    if not hs:
        raise ValueError("bandwidths is empty")
    if reference_bandwidth not in hs:
        raise ValueError(f"reference_bandwidth {reference_bandwidth} is not in bandwidths {hs}")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    seeds = [int(s.generate_state(1)[0]) for s in np.random.SeedSequence(seed).spawn(repeats)]
    runs = np.array(
        [[kde_kl_divergence(p_samples, q_samples, h, n_samples, s) for s in seeds] for h in hs]
    )
    means = runs.mean(axis=1)
    return {
        "bandwidths": hs,
        "mean": means.tolist(),
        "std": runs.std(axis=1).tolist(),
        "reference_bandwidth": float(reference_bandwidth),
        "kl": float(means[hs.index(reference_bandwidth)]),
    }
