"""Cluster-quality metrics for persona codebooks (SimPersona section 3.1, Table 1, appendix H).

Every function takes flat numpy arrays (one entry per buyer) and returns plain floats or dicts
of floats. Cluster and class labels may be ints or strings; they are encoded once with
``np.unique`` and all per-cluster statistics come from a sparse cluster x class contingency table
or a sparse cluster-indicator matrix product, so nothing loops over buyers or clusters.

Definitions, formulas and the default thresholds are documented in ``docs/metrics.md``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import sparse
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from persona_shoppers.clickstream.buyers import BROWSING_STRATA, BUYING_STRATA

__all__ = [
    "agreement_with_truth",
    "calinski_harabasz",
    "cluster_report",
    "codebook_usage",
    "head_incoherence",
    "incompatible_mixing",
    "stratum_purity",
    "within_cluster_cosine",
]

HIGH_FUNNEL_STRATA: tuple[str, ...] = BUYING_STRATA
WINDOW_SHOPPER_STRATA: tuple[str, ...] = BROWSING_STRATA


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _labels(x: Any, name: str, n: int | None = None) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    if n is not None and arr.size != n:
        raise ValueError(f"{name} has {arr.size} entries, expected {n} (one per buyer)")
    return arr


def _encode(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct values (sorted) and the 0-based index of each entry among them."""
    levels, idx = np.unique(x, return_inverse=True)
    return levels, idx.reshape(-1)


def _contingency(rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, sparse.csr_array]:
    """Row levels and the sparse (n_row_levels x n_col_levels) count table of two labelings."""
    row_levels, r = _encode(rows)
    _, c = _encode(cols)
    shape = (row_levels.size, int(c.max()) + 1)
    table = sparse.csr_array((np.ones(r.size, dtype=np.int64), (r, c)), shape=shape)
    table.sum_duplicates()
    return row_levels, table


def _indicator(idx: np.ndarray, n_groups: int) -> sparse.csr_array:
    """Sparse (n_groups x n) one-hot matrix: row g selects the buyers with idx == g."""
    n = idx.size
    return sparse.csr_array((np.ones(n), (idx, np.arange(n))), shape=(n_groups, n))


def _member(labels: np.ndarray, values: Sequence[Any], name: str) -> np.ndarray:
    """Boolean mask of ``labels`` in ``values``; rejects str values against numeric labels."""
    vals = np.asarray(list(values))
    if vals.size == 0:
        raise ValueError(f"{name} names no strata")
    if (labels.dtype.kind in "iuf") != (vals.dtype.kind in "iuf"):
        raise ValueError(
            f"{name}={tuple(values)!r} does not match the strata labels' type ({labels.dtype}); "
            "pass integer codes for integer strata"
        )
    return np.isin(labels, vals)


def _features(features: Any, n: int) -> np.ndarray:
    x = np.asarray(features, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise ValueError(f"features must be a 2-D (buyers x dims) array, got shape {x.shape}")
    if x.shape[0] != n:
        raise ValueError(f"features has {x.shape[0]} rows, expected {n} (one per buyer)")
    if not np.isfinite(x).all():
        raise ValueError("features contain NaN or infinite values")
    return x


# --------------------------------------------------------------------------------------------
# stratum purity and incompatible mixing
# --------------------------------------------------------------------------------------------


def stratum_purity(clusters: Any, strata: Any) -> dict[str, float]:
    """Share of each cluster's majority stratum, averaged over clusters.

    For a cluster c with n_c buyers of which n_{c,s} are in stratum s,
    ``purity_c = max_s n_{c,s} / n_c``. Returned are

    * ``mean``     = (1/K) sum_c purity_c, unweighted over the K non-empty clusters (the
      paper's "mean purity": every code counts the same, however many buyers it holds);
    * ``weighted`` = sum_c (n_c / N) purity_c = (1/N) sum_c max_s n_{c,s}, the classic
      size-weighted purity (share of buyers that are in their cluster's majority stratum).

    Only clusters that actually occur in ``clusters`` exist here, so there are no empty
    clusters to skip. Every distinct stratum value (including e.g. "E") is its own class; drop
    buyers beforehand to restrict the metric to strata A-D.
    """
    c = _labels(clusters, "clusters")
    s = _labels(strata, "strata", c.size)
    _, table = _contingency(c, s)
    sizes = table.sum(axis=1)
    majority = table.max(axis=1).toarray()
    return {
        "mean": float(np.mean(majority / sizes)),
        "weighted": float(majority.sum() / sizes.sum()),
    }


def incompatible_mixing(
    clusters: Any,
    strata: Any,
    high: Sequence[Any] = HIGH_FUNNEL_STRATA,
    low: Sequence[Any] = WINDOW_SHOPPER_STRATA,
    min_share: float = 0.2,
    min_size: int = 5,
) -> int:
    """Number of clusters in which high-funnel buyers and window shoppers both abound.

    For a cluster c of n_c buyers, ``h_c = #{b in c: stratum_b in high} / n_c`` and
    ``l_c = #{b in c: stratum_b in low} / n_c`` (the denominator counts every buyer of the
    cluster, whatever its stratum). The cluster is *incompatibly mixed* when

        n_c >= min_size  and  h_c >= min_share  and  l_c >= min_share.

    Defaults: ``high`` = strata A-C (purchasers, checkout abandoners, cart builders), ``low`` =
    stratum D (window shoppers); ``min_share = 0.2`` (each side at least a fifth of the
    cluster: "co-occur in substantial proportions"); ``min_size = 5`` (below five buyers a
    single buyer is already >= 20 % and shares say nothing). Pass integer codes in ``high`` /
    ``low`` when strata are integers.
    """
    if not 0.0 <= min_share <= 1.0:
        raise ValueError(f"min_share must be in [0, 1], got {min_share}")
    c = _labels(clusters, "clusters")
    s = _labels(strata, "strata", c.size)
    is_high = _member(s, high, "high")
    is_low = _member(s, low, "low")
    if (is_high & is_low).any():
        raise ValueError("high and low strata overlap")
    _, idx = _encode(c)
    sizes = np.bincount(idx).astype(np.float64)
    h = np.bincount(idx, weights=is_high, minlength=sizes.size) / sizes
    lo = np.bincount(idx, weights=is_low, minlength=sizes.size) / sizes
    mixed = (sizes >= min_size) & (h >= min_share) & (lo >= min_share) & (h > 0) & (lo > 0)
    return int(mixed.sum())


# --------------------------------------------------------------------------------------------
# auxiliary-head coherence
# --------------------------------------------------------------------------------------------


def head_incoherence(
    clusters: Any, bins: Any, min_share: float = 0.05, min_count: int = 1
) -> float:
    """Percent of buyers whose cluster spans non-adjacent bins of one auxiliary head.

    ``bins`` are ordinal integer labels (0 = low, 1 = medium, 2 = high). A bin b is *present*
    in cluster c when ``n_{c,b} >= min_count`` and ``n_{c,b} / n_c >= min_share``. The cluster
    is *incoherent* when its present bins are non-adjacent, i.e. ``max_b - min_b >= 2`` over
    present bins (with three bins: both low and high present). The result is

        100 * sum_{c incoherent} n_c / N.

    ``min_share = 0.05`` keeps a lone outlier in a large cluster (<5 % of it) from flagging the
    whole cluster while any real low/high merge (>= 1 in 20 buyers) still counts;
    ``min_count = 1`` adds no count floor (raise it to ignore single outliers in small
    clusters too). Call once per head (engagement, exploration, purchase).
    """
    if not 0.0 <= min_share <= 1.0:
        raise ValueError(f"min_share must be in [0, 1], got {min_share}")
    c = _labels(clusters, "clusters")
    b = _labels(bins, "bins", c.size)
    if b.dtype.kind not in "iu":
        if b.dtype.kind == "f" and np.all(np.isfinite(b)) and np.all(b == np.round(b)):
            b = b.astype(np.int64)
        else:
            raise ValueError("bins must be integer ordinal labels (0 = low, 1 = mid, 2 = high)")
    if b.min() < 0:
        raise ValueError("bins must be non-negative integers")
    _, idx = _encode(c)
    n_bins = int(b.max()) + 1
    table = np.bincount(idx * n_bins + b, minlength=(idx.max() + 1) * n_bins).reshape(-1, n_bins)
    sizes = table.sum(axis=1)
    present = (table >= max(min_count, 1)) & (table >= min_share * sizes[:, None])
    bin_ids = np.arange(n_bins)
    lo = np.where(present, bin_ids, n_bins).min(axis=1)
    hi = np.where(present, bin_ids, -1).max(axis=1)
    incoherent = (hi - lo) >= 2
    return float(100.0 * sizes[incoherent].sum() / sizes.sum())


# --------------------------------------------------------------------------------------------
# separation: pairwise cosine and Calinski-Harabasz
# --------------------------------------------------------------------------------------------


def within_cluster_cosine(features: Any, clusters: Any) -> dict[str, float]:
    """Mean pairwise cosine similarity between buyers of the same cluster (exact, O(N d)).

    With unit rows u_i = x_i / ||x_i|| and S_c = sum_{i in c} u_i, the identity
    ``sum_{i != j in c} cos(x_i, x_j) = ||S_c||^2 - sum_{i in c} ||u_i||^2`` gives the mean over
    the n_c (n_c - 1) ordered pairs, ``m_c = (||S_c||^2 - sum ||u_i||^2) / (n_c (n_c - 1))``,
    without forming pairs. All-zero rows have no direction: they get u_i = 0, i.e. cosine 0
    with every other buyer (they still count as pair members).

    Over the clusters with n_c >= 2 (singletons have no pairs and are skipped):

    * ``mean``     = unweighted average of m_c (every cluster counts the same);
    * ``weighted`` = sum n_c m_c / sum n_c (size-weighted: per-buyer average);
    * ``pooled``   = sum n_c (n_c - 1) m_c / sum n_c (n_c - 1) (mean over all same-cluster
      pairs pooled, dominated by the largest clusters).

    Raises ``ValueError`` when no cluster has two members.
    """
    c = _labels(clusters, "clusters")
    x = _features(features, c.size)
    norms = np.linalg.norm(x, axis=1)
    nonzero = norms > 0
    u = np.divide(x, norms[:, None], out=np.zeros_like(x), where=nonzero[:, None])
    _, idx = _encode(c)
    n_groups = int(idx.max()) + 1
    sums = _indicator(idx, n_groups) @ u
    sizes = np.bincount(idx, minlength=n_groups).astype(np.float64)
    self_terms = np.bincount(idx, weights=nonzero.astype(np.float64), minlength=n_groups)
    keep = sizes >= 2
    if not keep.any():
        raise ValueError("within_cluster_cosine needs at least one cluster with >= 2 members")
    pairs = sizes[keep] * (sizes[keep] - 1.0)
    pair_sums = np.einsum("ij,ij->i", sums[keep], sums[keep]) - self_terms[keep]
    m = np.clip(pair_sums / pairs, -1.0, 1.0)
    return {
        "mean": float(m.mean()),
        "weighted": float(np.average(m, weights=sizes[keep])),
        "pooled": float(np.clip(pair_sums.sum() / pairs.sum(), -1.0, 1.0)),
    }


def calinski_harabasz(features: Any, clusters: Any) -> float:
    """Calinski-Harabasz index (SimPersona eq. 12).

    ``CH = (SS_between / (K - 1)) / (SS_within / (N - K))`` with
    ``SS_between = sum_c n_c ||mu_c - mu||^2`` (size-weighted squared distance from each
    cluster centroid to the global centroid) and ``SS_within = sum_i ||x_i - mu_{c(i)}||^2``.
    Same value as ``sklearn.metrics.calinski_harabasz_score``, except that a clustering with
    ``SS_within = 0`` returns ``inf`` (sklearn returns 1.0). Needs 2 <= K < N, otherwise raises
    ``ValueError``.
    """
    c = _labels(clusters, "clusters")
    x = _features(features, c.size)
    _, idx = _encode(c)
    n, k = c.size, int(idx.max()) + 1
    if k < 2:
        raise ValueError(f"Calinski-Harabasz needs at least 2 clusters, got {k}")
    if k >= n:
        raise ValueError(f"Calinski-Harabasz needs fewer clusters than buyers ({k} >= {n})")
    sizes = np.bincount(idx, minlength=k).astype(np.float64)
    centroids = (_indicator(idx, k) @ x) / sizes[:, None]
    ss_between = float(np.sum(sizes * np.sum((centroids - x.mean(axis=0)) ** 2, axis=1)))
    ss_within = float(np.sum((x - centroids[idx]) ** 2))
    if ss_within == 0.0:
        return float("inf") if ss_between > 0 else float("nan")
    return ss_between * (n - k) / (ss_within * (k - 1))


# --------------------------------------------------------------------------------------------
# codebook usage and agreement with planted truth
# --------------------------------------------------------------------------------------------


def codebook_usage(codes: Any, k: int) -> dict[str, float | int]:
    """How much of a K-entry codebook is used.

    With counts n_j (j = 0..k-1, codes outside [0, k) are rejected) and p_j = n_j / N:

    * ``active_codes``   = #{j: n_j > 0};  ``active_share`` = active_codes / k;
    * ``perplexity``     = exp(-sum_{p_j > 0} p_j ln p_j), the effective number of codes in
      use (1 if all buyers share one code, k if usage is uniform);
    * ``max_code_share`` = max_j p_j.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    c = _labels(codes, "codes")
    if c.dtype.kind not in "iu":
        raise ValueError("codes must be integer code indices")
    if c.min() < 0 or c.max() >= k:
        raise ValueError(f"codes must lie in [0, {k}), got range [{c.min()}, {c.max()}]")
    counts = np.bincount(c, minlength=k)
    p = counts[counts > 0] / c.size
    active = int(p.size)
    return {
        "active_codes": active,
        "active_share": active / k,
        "perplexity": float(np.exp(-np.sum(p * np.log(p)))),
        "max_code_share": float(p.max()),
    }


def agreement_with_truth(clusters: Any, truth: Any) -> dict[str, float]:
    """Agreement of a clustering with known (planted) labels.

    * ``ari``: adjusted Rand index (sklearn ``adjusted_rand_score``), 0 for chance, 1 for equal
      partitions;
    * ``nmi``: normalised mutual information, I(C; T) / ((H(C) + H(T)) / 2) (sklearn,
      arithmetic normalisation);
    * ``purity``: (1/N) sum_c max_t n_{c,t}, the size-weighted share of buyers in their
      cluster's majority truth label.
    """
    c = _labels(clusters, "clusters")
    t = _labels(truth, "truth", c.size)
    _, table = _contingency(c, t)
    return {
        "ari": float(adjusted_rand_score(t, c)),
        "nmi": float(normalized_mutual_info_score(t, c)),
        "purity": float(table.max(axis=1).toarray().sum() / c.size),
    }


# --------------------------------------------------------------------------------------------
# everything at once
# --------------------------------------------------------------------------------------------


def cluster_report(
    features: Any,
    clusters: Any,
    strata: Any,
    bins: Mapping[str, Any],
    truth: Any = None,
    k: int | None = None,
    *,
    high: Sequence[Any] = HIGH_FUNNEL_STRATA,
    low: Sequence[Any] = WINDOW_SHOPPER_STRATA,
    mixing_min_share: float = 0.2,
    mixing_min_size: int = 5,
    incoherence_min_share: float = 0.05,
    incoherence_min_count: int = 1,
) -> dict[str, float]:
    """All cluster metrics of SimPersona Table 1 (plus codebook and truth) as one flat dict.

    Keys: ``n_clusters``, ``stratum_purity_mean``, ``stratum_purity_weighted``,
    ``incompatible_mixing_clusters``, ``incoherence_<head>_pct`` for each entry of ``bins``
    (e.g. ``engage``, ``explore``, ``purchase``), ``pairwise_cosine`` (unweighted mean over
    clusters), ``pairwise_cosine_weighted``, ``pairwise_cosine_pooled``, ``calinski_harabasz``;
    with ``k``: ``active_codes``, ``active_code_share``, ``codebook_perplexity``,
    ``max_code_share``; with ``truth``: ``ari_planted``, ``nmi_planted``, ``purity_planted``.
    ``calinski_harabasz`` is NaN when there are fewer than 2 clusters (or as many as buyers)
    and ``pairwise_cosine*`` are NaN when no cluster has two members, so a degenerate codebook
    still yields a report.
    """
    c = _labels(clusters, "clusters")
    purity = stratum_purity(c, strata)
    report: dict[str, float] = {
        "n_clusters": float(np.unique(c).size),
        "stratum_purity_mean": purity["mean"],
        "stratum_purity_weighted": purity["weighted"],
        "incompatible_mixing_clusters": float(
            incompatible_mixing(c, strata, high, low, mixing_min_share, mixing_min_size)
        ),
    }
    for head, head_bins in bins.items():
        report[f"incoherence_{head}_pct"] = head_incoherence(
            c, head_bins, incoherence_min_share, incoherence_min_count
        )
    n_clusters = int(report["n_clusters"])
    if n_clusters < c.size:  # some cluster has >= 2 members
        cos = within_cluster_cosine(features, c)
    else:
        _features(features, c.size)
        cos = {"mean": float("nan"), "weighted": float("nan"), "pooled": float("nan")}
    report["pairwise_cosine"] = cos["mean"]
    report["pairwise_cosine_weighted"] = cos["weighted"]
    report["pairwise_cosine_pooled"] = cos["pooled"]
    report["calinski_harabasz"] = (
        calinski_harabasz(features, c) if 2 <= n_clusters < c.size else float("nan")
    )
    if k is not None:
        usage = codebook_usage(c, k)
        report["active_codes"] = float(usage["active_codes"])
        report["active_code_share"] = usage["active_share"]
        report["codebook_perplexity"] = usage["perplexity"]
        report["max_code_share"] = usage["max_code_share"]
    if truth is not None:
        agree = agreement_with_truth(c, truth)
        report["ari_planted"] = agree["ari"]
        report["nmi_planted"] = agree["nmi"]
        report["purity_planted"] = agree["purity"]
    return report
