"""Cluster metrics against values worked out by hand on a tiny clustering.

Tiny clustering (8 buyers, 3 clusters):

    buyer    0  1  2 | 3  4  5 | 6  7
    cluster  0  0  0 | 1  1  1 | 2  2
    stratum  A  A  D | D  D  D | B  C
    engage   0  2  1 | 0  0  1 | 2  2

* purity: cluster 0 -> 2/3, cluster 1 -> 3/3, cluster 2 -> 1/2;
  mean = (2/3 + 1 + 1/2) / 3 = 13/18, weighted = (2 + 3 + 1) / 8 = 3/4.
* mixing: cluster 0 has high share 2/3 and window-shopper share 1/3 (flagged if size allowed);
  cluster 1 is all D, cluster 2 all high.
* engagement incoherence: only cluster 0 holds both bin 0 and bin 2 -> 3/8 = 37.5 %.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import calinski_harabasz_score

from persona_shoppers.metrics import (
    agreement_with_truth,
    calinski_harabasz,
    cluster_report,
    codebook_usage,
    head_incoherence,
    incompatible_mixing,
    stratum_purity,
    within_cluster_cosine,
)

CLUSTERS = np.array([0, 0, 0, 1, 1, 1, 2, 2])
STRATA = np.array(list("AADDDDBC"))
ENGAGE = np.array([0, 2, 1, 0, 0, 1, 2, 2])

# Cosine features. Cluster 0: (1,0),(2,0),(0,3): pair cosines 1, 0, 0 -> 1/3.
# Cluster 1: (1,1),(2,2),(1,0): 1, 1/sqrt2, 1/sqrt2 -> (1 + sqrt2)/3.  Cluster 2: (1,0),(-1,0): -1.
COS_X = np.array([[1, 0], [2, 0], [0, 3], [1, 1], [2, 2], [1, 0], [1, 0], [-1, 0]], dtype=float)
R2 = math.sqrt(2.0)
COS_MEAN = (1 / 3 + (1 + R2) / 3 - 1) / 3  # = (sqrt2 - 1) / 9
COS_WEIGHTED = (3 * (1 / 3) + 3 * (1 + R2) / 3 + 2 * (-1)) / 8  # = sqrt2 / 8
COS_POOLED = (3 * (1 / 3) + 3 * (1 + R2) / 3 + 1 * (-1)) / 7  # pairs 3, 3, 1 -> (1 + sqrt2)/7

# CH features (1-D): centroids 1, 11, 21; SS_within = 2 + 2 + 2 = 6; global mean 78/8 = 9.75;
# SS_between = 3*8.75^2 + 3*1.25^2 + 2*11.25^2 = 229.6875 + 4.6875 + 253.125 = 487.5;
# CH = (487.5 / 2) / (6 / 5) = 203.125.
CH_X = np.array([0, 1, 2, 10, 11, 12, 20, 22], dtype=float)[:, None]
CH_VALUE = 203.125


# ---------------------------------------------------------------- stratum purity


def test_stratum_purity_hand_values():
    out = stratum_purity(CLUSTERS, STRATA)
    assert out["mean"] == pytest.approx(13 / 18)
    assert out["weighted"] == pytest.approx(0.75)


def test_stratum_purity_label_encoding_does_not_matter():
    relabelled = np.array(["z", "z", "z", "x", "x", "x", "q", "q"])
    sparse_ids = np.array([500, 500, 500, 7, 7, 7, 42, 42])
    int_strata = np.array([0, 0, 3, 3, 3, 3, 1, 2])
    for c, s in [(relabelled, STRATA), (sparse_ids, STRATA), (CLUSTERS, int_strata)]:
        out = stratum_purity(c, s)
        assert out["mean"] == pytest.approx(13 / 18)
        assert out["weighted"] == pytest.approx(0.75)


def test_stratum_purity_single_cluster_and_pure():
    assert stratum_purity(np.zeros(8, int), STRATA)["mean"] == pytest.approx(4 / 8)  # 4 D's
    pure = stratum_purity(CLUSTERS, np.array(list("AAABBBCC")))
    assert pure == {"mean": 1.0, "weighted": 1.0}


def test_stratum_purity_rejects_bad_input():
    with pytest.raises(ValueError, match="empty"):
        stratum_purity(np.array([], int), np.array([]))
    with pytest.raises(ValueError, match="expected 8"):
        stratum_purity(CLUSTERS, STRATA[:5])


# ---------------------------------------------------------------- incompatible mixing


def test_incompatible_mixing_tiny():
    assert incompatible_mixing(CLUSTERS, STRATA, min_size=1) == 1  # cluster 0 only
    assert incompatible_mixing(CLUSTERS, STRATA) == 0  # default min_size=5: all too small
    assert incompatible_mixing(CLUSTERS, STRATA, min_size=1, min_share=0.4) == 0  # D is 1/3


def test_incompatible_mixing_defaults_on_larger_clusters():
    # cluster 0: 7 A + 3 D (30 % D -> mixed); cluster 1: 9 A + 1 D (10 % D -> fine);
    # cluster 2: 2 A, 1 D, 2 E (A 40 %, D 20 %, E in the denominator -> mixed);
    # cluster 3: 4 C + 4 D (50/50, size 8 -> mixed); cluster 4: 2 A + 2 D but size 4 < 5.
    clusters = np.repeat([0, 1, 2, 3, 4], [10, 10, 5, 8, 4])
    strata = np.array(
        list("AAAAAAADDD") + list("AAAAAAAAAD") + list("AADEE") + list("CCCCDDDD") + list("AADD")
    )
    assert incompatible_mixing(clusters, strata) == 3
    assert incompatible_mixing(clusters, strata, min_size=4) == 4
    assert incompatible_mixing(clusters, strata, min_share=0.25) == 2  # cluster 2's D is 20 %


def test_incompatible_mixing_integer_strata():
    strata = np.array([0, 0, 3, 3, 3, 3, 1, 2])
    assert incompatible_mixing(CLUSTERS, strata, high=(0, 1, 2), low=(3,), min_size=1) == 1
    with pytest.raises(ValueError, match="integer codes"):
        incompatible_mixing(CLUSTERS, strata)  # default ("A","B","C") vs int strata
    with pytest.raises(ValueError, match="overlap"):
        incompatible_mixing(CLUSTERS, STRATA, high=("A", "D"), low=("D",))


# ---------------------------------------------------------------- head incoherence


def test_head_incoherence_tiny():
    assert head_incoherence(CLUSTERS, ENGAGE) == pytest.approx(37.5)
    # each bin is 1/3 of cluster 0: a 40 % floor flags nothing
    assert head_incoherence(CLUSTERS, ENGAGE, min_share=0.4) == 0.0
    assert head_incoherence(CLUSTERS, np.array([0, 1, 1, 0, 0, 1, 2, 1])) == 0.0  # adjacent only


def test_head_incoherence_single_outlier():
    # one cluster of 30: 29 low + 1 high -> 1/30 < 5 %: not flagged
    assert head_incoherence(np.zeros(30, int), np.r_[np.zeros(29, int), 2]) == 0.0
    # one cluster of 10: 9 low + 1 high -> 10 % >= 5 %: flagged, all 10 buyers (100 %)
    small = np.r_[np.zeros(9, int), 2]
    assert head_incoherence(np.zeros(10, int), small) == pytest.approx(100.0)
    assert head_incoherence(np.zeros(10, int), small, min_count=2) == 0.0


def test_head_incoherence_general_ordinal_and_validation():
    # 4 bins: cluster 0 holds bins 1 and 3 (non-adjacent) -> its 2 of 4 buyers = 50 %
    assert head_incoherence(np.array([0, 0, 1, 1]), np.array([1, 3, 2, 3])) == pytest.approx(50.0)
    assert head_incoherence(CLUSTERS, ENGAGE.astype(float)) == pytest.approx(37.5)
    with pytest.raises(ValueError, match="integer"):
        head_incoherence(CLUSTERS, np.array(list("LHMLLMHH")))
    with pytest.raises(ValueError, match="non-negative"):
        head_incoherence(CLUSTERS, ENGAGE - 1)


# ---------------------------------------------------------------- pairwise cosine


def test_within_cluster_cosine_hand_values():
    out = within_cluster_cosine(COS_X, CLUSTERS)
    assert out["mean"] == pytest.approx(COS_MEAN)
    assert out["mean"] == pytest.approx((R2 - 1) / 9)
    assert out["weighted"] == pytest.approx(R2 / 8)
    assert out["weighted"] == pytest.approx(COS_WEIGHTED)
    assert out["pooled"] == pytest.approx(COS_POOLED)


def test_within_cluster_cosine_skips_singletons_and_handles_zero_rows():
    x = np.vstack([COS_X, [[5.0, 5.0]]])
    out = within_cluster_cosine(x, np.r_[CLUSTERS, 9])  # singleton cluster 9 ignored
    assert out["mean"] == pytest.approx(COS_MEAN)
    # zero vector: cosine 0 with both others; the others are parallel -> (0 + 0 + 1) / 3
    zero = within_cluster_cosine(np.array([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0]]), [0, 0, 0])
    assert zero["mean"] == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match=">= 2 members"):
        within_cluster_cosine(COS_X[:3], [0, 1, 2])


def test_within_cluster_cosine_matches_brute_force():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 5))
    c = rng.integers(0, 6, size=60)
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    sims = u @ u.T
    per = [
        (sims[np.ix_(c == g, c == g)].sum() - (c == g).sum())
        / ((c == g).sum() * ((c == g).sum() - 1))
        for g in np.unique(c)
    ]
    assert within_cluster_cosine(x, c)["mean"] == pytest.approx(np.mean(per))


# ---------------------------------------------------------------- Calinski-Harabasz


def test_calinski_harabasz_hand_value():
    assert calinski_harabasz(CH_X, CLUSTERS) == pytest.approx(CH_VALUE)
    assert calinski_harabasz(CH_X.ravel(), CLUSTERS) == pytest.approx(CH_VALUE)  # 1-D accepted


def test_calinski_harabasz_agrees_with_sklearn():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 4))
    c = rng.integers(0, 5, size=50)
    assert calinski_harabasz(x, c) == pytest.approx(calinski_harabasz_score(x, c))


def test_calinski_harabasz_edge_cases():
    with pytest.raises(ValueError, match="at least 2 clusters"):
        calinski_harabasz(CH_X, np.zeros(8, int))
    with pytest.raises(ValueError, match="fewer clusters than buyers"):
        calinski_harabasz(CH_X, np.arange(8))
    # zero within-cluster scatter with separated centroids -> inf
    assert calinski_harabasz(np.array([[0.0], [0.0], [1.0], [1.0]]), [0, 0, 1, 1]) == math.inf


# ---------------------------------------------------------------- codebook usage


def test_codebook_usage_hand_values():
    # counts (2, 1, 0, 1, 0) over k=5: p = (.5, .25, 0, .25, 0)
    # H = .5 ln 2 + 2 * .25 ln 4 = 1.5 ln 2 -> perplexity 2 ** 1.5
    out = codebook_usage(np.array([0, 0, 1, 3]), k=5)
    assert out["active_codes"] == 3
    assert out["active_share"] == pytest.approx(0.6)
    assert out["perplexity"] == pytest.approx(2**1.5)
    assert out["max_code_share"] == pytest.approx(0.5)


def test_codebook_usage_extremes():
    collapsed = codebook_usage(np.zeros(10, int), k=256)
    assert collapsed["active_codes"] == 1
    assert collapsed["perplexity"] == pytest.approx(1.0)
    assert collapsed["max_code_share"] == 1.0
    uniform = codebook_usage(np.repeat(np.arange(8), 3), k=8)
    assert uniform["perplexity"] == pytest.approx(8.0)
    assert uniform["active_share"] == 1.0
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        codebook_usage(np.array([0, 4]), k=4)
    with pytest.raises(ValueError, match="integer"):
        codebook_usage(np.array(["a"]), k=4)


# ---------------------------------------------------------------- agreement with truth


def test_agreement_with_truth_hand_values():
    # contingency [[2, 0], [1, 1]]: index = sum C(n_ij, 2) = 1; row pairs 1 + 1 = 2, column
    # pairs 3 + 0 = 3, expected = 2 * 3 / C(4, 2) = 1 -> ARI = (1 - 1) / (2.5 - 1) = 0.
    out = agreement_with_truth(np.array([0, 0, 1, 1]), np.array([0, 0, 0, 1]))
    assert out["ari"] == pytest.approx(0.0, abs=1e-12)
    assert out["purity"] == pytest.approx(0.75)
    mi = 0.5 * math.log(4 / 3) + 0.25 * math.log(2 / 3) + 0.25 * math.log(2)
    h_c = math.log(2)
    h_t = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert out["nmi"] == pytest.approx(mi / ((h_c + h_t) / 2))


def test_agreement_with_truth_permuted_perfect():
    out = agreement_with_truth(CLUSTERS, np.array(list("bbbaaacc")))
    assert out == pytest.approx({"ari": 1.0, "nmi": 1.0, "purity": 1.0})


# ---------------------------------------------------------------- report


def test_cluster_report_flat_dict():
    truth = np.array([0, 0, 0, 1, 1, 1, 2, 2])
    rep = cluster_report(
        COS_X,
        CLUSTERS,
        STRATA,
        {
            "engage": ENGAGE,
            "explore": np.zeros(8, int),
            "purchase": np.array([0, 1, 2] * 2 + [1, 1]),
        },
        truth=truth,
        k=4,
        mixing_min_size=1,
    )
    assert rep["n_clusters"] == 3
    assert rep["stratum_purity_mean"] == pytest.approx(13 / 18)
    assert rep["stratum_purity_weighted"] == pytest.approx(0.75)
    assert rep["incompatible_mixing_clusters"] == 1
    assert rep["incoherence_engage_pct"] == pytest.approx(37.5)
    assert rep["incoherence_explore_pct"] == 0.0
    assert rep["incoherence_purchase_pct"] == pytest.approx(75.0)  # clusters 0 and 1 span 0..2
    assert rep["pairwise_cosine"] == pytest.approx(COS_MEAN)
    assert rep["pairwise_cosine_weighted"] == pytest.approx(COS_WEIGHTED)
    assert rep["active_codes"] == 3
    assert rep["active_code_share"] == pytest.approx(0.75)
    assert rep["ari_planted"] == pytest.approx(1.0)
    assert rep["nmi_planted"] == pytest.approx(1.0)
    assert all(isinstance(v, float) for v in rep.values())
    ch = cluster_report(CH_X, CLUSTERS, STRATA, {})
    assert ch["calinski_harabasz"] == pytest.approx(CH_VALUE)
    assert "active_codes" not in ch and "ari_planted" not in ch


def test_cluster_report_degenerate_clusterings():
    one = cluster_report(CH_X, np.zeros(8, int), STRATA, {"engage": ENGAGE})
    assert math.isnan(one["calinski_harabasz"])
    assert one["incoherence_engage_pct"] == pytest.approx(100.0)
    singletons = cluster_report(CH_X, np.arange(8), STRATA, {})
    assert math.isnan(singletons["pairwise_cosine"])
    assert math.isnan(singletons["calinski_harabasz"])
    assert singletons["stratum_purity_mean"] == 1.0
