"""Query / text alignment metrics against hand-computed values and closed-form KLs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from persona_shoppers.metrics.text import (
    by_stratum,
    kde_kl_divergence,
    kde_kl_sweep,
    matched_cosine,
    perplexity_strata,
    rowwise_cosine,
    tokenize,
    type_token_ratio,
)

# ---------------------------------------------------------------- type-token ratio


def test_tokenize_lowercases_and_splits_on_punctuation():
    assert tokenize("Women's Knee-Brace 2_pack") == ["women", "s", "knee", "brace", "2", "pack"]


def test_ttr_hand_example_pools_tokens():
    # tokens: knee brace | knee brace for women | women s knee brace  -> 10 tokens
    # types: knee, brace, for, women, s -> 5;  TTR = 5 / 10 = 0.5
    texts = ["Knee brace", "knee brace for women", "Women's knee-brace"]
    assert type_token_ratio(texts) == pytest.approx(0.5)
    # pooled, not the mean of per-text ratios (which would be 1.0 here)
    assert type_token_ratio(["a b", "a b"]) == pytest.approx(0.5)


def test_ttr_rejects_empty_and_single_string():
    with pytest.raises(ValueError, match="no word tokens"):
        type_token_ratio(["", "  ...  "])
    with pytest.raises(TypeError, match="single string"):
        type_token_ratio("knee brace")


# ---------------------------------------------------------------- matched cosine


def test_matched_cosine_hand_values():
    a = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    b = np.array([[2.0, 0.0], [-1.0, 1.0], [1.0, 0.0]])
    # row 0: same direction -> 1; row 1: orthogonal -> 0; row 2: zero row -> 0
    assert rowwise_cosine(a, b) == pytest.approx([1.0, 0.0, 0.0])
    assert matched_cosine(a, b) == pytest.approx(1 / 3)
    assert matched_cosine([[3.0, 4.0]], [[-3.0, -4.0]]) == pytest.approx(-1.0)


def test_matched_cosine_shape_mismatch_raises():
    with pytest.raises(ValueError, match="same shape"):
        matched_cosine(np.ones((3, 4)), np.ones((2, 4)))


# ---------------------------------------------------------------- perplexity strata


def test_perplexity_strata_quantile_edges_and_reuse():
    human = np.array([10, 20, 30, 40, 50, 60, 70, 80], dtype=float)
    labels, edges = perplexity_strata(human, n_strata=4)
    # linear-interpolated quartiles of 10..80: 27.5, 45, 62.5
    assert edges == pytest.approx([27.5, 45.0, 62.5])
    assert labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    # edges fitted on humans label other items; a value equal to an edge goes up
    other, same = perplexity_strata([5.0, 27.5, 100.0], edges=edges)
    assert other.tolist() == [0, 1, 3]
    assert same is not None and same.tolist() == edges.tolist()


def test_perplexity_strata_validation():
    with pytest.raises(ValueError, match="> 0"):
        perplexity_strata([1.0, -2.0])
    with pytest.raises(ValueError, match="strictly increasing"):
        perplexity_strata(np.ones(10) * 3.0, n_strata=4)  # all ties -> equal quantiles
    with pytest.raises(ValueError, match="n_strata"):
        perplexity_strata([1.0, 2.0], n_strata=1)


def test_by_stratum_means():
    assert by_stratum([1.0, 2.0, 3.0, 4.0], ["a", "b", "a", "b"]) == {"a": 2.0, "b": 3.0}
    labels = np.array(["a", "b", "a", "b"], dtype=object)
    assert by_stratum([1.0, 2.0, 3.0, 4.0], labels) == {"a": 2.0, "b": 3.0}
    with pytest.raises(ValueError, match="one label per value"):
        by_stratum([1.0, 2.0], [0])


# ---------------------------------------------------------------- KDE Monte-Carlo KL


def _gauss_kl_1d(mu_p: float, s_p: float, mu_q: float, s_q: float) -> float:
    return math.log(s_q / s_p) + (s_p**2 + (mu_p - mu_q) ** 2) / (2 * s_q**2) - 0.5


def test_kde_kl_matches_closed_form_1d():
    # KL(N(0,1) || N(1,2^2)) = ln 2 + (1 + 1) / 8 - 1/2 = 0.4431 (the reverse is 1.3069, and
    # a KDE estimate of the reverse is far larger still: N(0,1) samples leave the far tails
    # of N(1,2^2) uncovered, so swapped arguments cannot pass this test).
    # 2000 points each, h = 0.1 (half of Silverman's rule): within 0.05 nats.
    rng = np.random.default_rng(1)
    p, q = rng.normal(0, 1, 2000), rng.normal(1, 2, 2000)
    est = kde_kl_divergence(p, q, bandwidth=0.1, n_samples=2000, seed=0)
    assert est == pytest.approx(_gauss_kl_1d(0, 1, 1, 2), abs=0.05)
    assert kde_kl_divergence(q, p, bandwidth=0.1, n_samples=2000, seed=0) > 1.3


def test_kde_kl_matches_closed_form_2d():
    # P = N(0, I), Q = N(mu, I), ||mu|| = 2 (along a diagonal): KL = ||mu||^2 / 2 = 2.
    # The KDEs smooth both to N(., (1 + h^2) I) (KL 2 / 1.09 = 1.83 at h = 0.3) and finite
    # samples add a small positive bias; 3000 points: within 0.2 nats of the true KL.
    rng = np.random.default_rng(2)
    mu = np.array([math.sqrt(2), math.sqrt(2)])
    p = rng.normal(size=(3000, 2))
    q = rng.normal(size=(3000, 2)) + mu
    est = kde_kl_divergence(p, q, bandwidth=0.3, n_samples=2000, seed=0)
    assert est == pytest.approx(2.0, abs=0.2)


def test_kde_kl_identical_samples_zero_and_seeded():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(100, 384))
    assert kde_kl_divergence(x, x, 0.1, n_samples=50) == pytest.approx(0.0, abs=1e-12)
    y = rng.normal(size=(120, 384))
    a = kde_kl_divergence(x, y, 1.0, n_samples=50, seed=7)
    assert a == kde_kl_divergence(x, y, 1.0, n_samples=50, seed=7)
    assert a != kde_kl_divergence(x, y, 1.0, n_samples=50, seed=8)


def test_kde_kl_resampled_points_share_the_seed_s_draws():
    # A bootstrap resamples the points (same sizes, same seed): each estimate must equal one
    # made from scratch with a fresh generator, whatever was estimated before it.
    rng = np.random.default_rng(5)
    p, q = rng.normal(size=(40, 8)), rng.normal(size=(30, 8)) + 0.2

    def from_scratch(a, b, h, seed):
        draws = np.random.default_rng(seed)
        x = a[draws.integers(0, len(a), size=64)]
        x = x + h * draws.standard_normal(x.shape)

        def log_density(data):
            sq = ((x[:, None, :] - data[None, :, :]) ** 2).sum(-1) / (2 * h**2)
            return np.log(np.exp(-sq).mean(axis=1))

        return float((log_density(a) - log_density(b)).mean())

    for _ in range(3):
        i, j = rng.integers(0, 40, 40), rng.integers(0, 30, 30)
        assert kde_kl_divergence(p[i], q[j], 0.7, n_samples=64, seed=9) == pytest.approx(
            from_scratch(p[i], q[j], 0.7, 9), rel=1e-9
        )


def test_kde_kl_validation():
    with pytest.raises(ValueError, match="dimension"):
        kde_kl_divergence(np.ones((3, 2)), np.ones((3, 3)), 0.1)
    with pytest.raises(ValueError, match="bandwidth"):
        kde_kl_divergence(np.ones((3, 2)), np.ones((3, 2)), 0.0)
    with pytest.raises(ValueError, match="NaN"):
        kde_kl_divergence([[np.nan]], [[1.0]], 0.1)


def test_kde_kl_sweep_in_embedding_space():
    # unit vectors in 384-d (MiniLM-like); Q is shifted, so KL > 0 and shrinks as h grows
    rng = np.random.default_rng(4)
    p = rng.normal(size=(150, 384))
    q = rng.normal(size=(150, 384)) + 0.1
    p /= np.linalg.norm(p, axis=1, keepdims=True)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    out = kde_kl_sweep(p, q, repeats=3, n_samples=100, seed=0)
    assert out["bandwidths"] == [0.001, 0.01, 0.1, 1.0]
    means = np.array(out["mean"])
    assert (np.diff(means) < 0).all() and means[-1] >= 0
    # at small h the KL scales like 1/h^2 (PAARS app. D: 410026 at 0.001 vs 2236 at 0.01)
    assert means[0] / means[1] == pytest.approx(100.0, rel=0.1)
    assert out["kl"] == means[2] and out["reference_bandwidth"] == 0.1
    assert len(out["std"]) == 4 and all(s >= 0 for s in out["std"])
    assert kde_kl_sweep(p, q, repeats=3, n_samples=100, seed=0) == out
    with pytest.raises(ValueError, match="reference_bandwidth"):
        kde_kl_sweep(p, q, bandwidths=[0.5], repeats=1)
