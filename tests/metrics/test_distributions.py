"""Distribution / population-recovery metrics against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from persona_shoppers.metrics import (
    centroids_from_assignments,
    js_divergence,
    js_divergence_rows,
    kl_divergence,
    predicted_mix,
    profiles_from_assignments,
    r_squared,
    token_distribution,
)

# ---------------------------------------------------------------- Jensen-Shannon


def test_js_identical_is_zero_and_disjoint_is_one():
    p = np.array([0.1, 0.2, 0.3, 0.4])
    assert js_divergence(p, p) == pytest.approx(0.0, abs=1e-12)
    assert js_divergence([1, 0], [0, 1]) == pytest.approx(1.0)
    assert js_divergence([0.5, 0.5, 0, 0], [0, 0, 0.3, 0.7]) == pytest.approx(1.0)


def test_js_hand_value_counts_and_base():
    # p = (1, 0), q = (.5, .5), m = (.75, .25):
    # KL(p||m) = log2(4/3) = 0.4150375;  KL(q||m) = .5 log2(2/3) + .5 log2(2) = 0.2075187
    # JS = (0.4150375 + 0.2075187) / 2 = 0.3112781
    assert js_divergence([1, 0], [0.5, 0.5]) == pytest.approx(0.3112781, abs=1e-7)
    assert js_divergence([3, 0], [7, 7]) == pytest.approx(0.3112781, abs=1e-7)  # normalised
    assert js_divergence([1, 0], [0, 1], base=math.e) == pytest.approx(math.log(2))
    assert js_divergence([1, 0], [0.5, 0.5]) == pytest.approx(js_divergence([0.5, 0.5], [1, 0]))


def test_js_rejects_bad_input():
    with pytest.raises(ValueError, match="negative"):
        js_divergence([0.5, -0.1, 0.6], [0.3, 0.3, 0.4])
    with pytest.raises(ValueError, match="sums to 0"):
        js_divergence([0, 0], [0.5, 0.5])
    with pytest.raises(ValueError, match="same shape"):
        js_divergence([0.5, 0.5], [0.2, 0.3, 0.5])
    with pytest.raises(ValueError, match="NaN"):
        js_divergence([np.nan, 1.0], [0.5, 0.5])


def test_js_rows():
    p = np.array([[1.0, 0.0], [0.5, 0.5], [0.2, 0.8]])
    q = np.array([[0.0, 1.0], [1.0, 0.0], [0.2, 0.8]])
    np.testing.assert_allclose(js_divergence_rows(p, q), [1.0, 0.3112781, 0.0], atol=1e-7)


# ---------------------------------------------------------------- Kullback-Leibler


def test_kl_two_point_exact():
    # .5 ln(.5/.25) + .5 ln(.5/.75) = .5 ln(4/3) = 0.1438410
    assert kl_divergence([0.5, 0.5], [0.25, 0.75], epsilon=0) == pytest.approx(0.1438410, abs=1e-7)
    assert kl_divergence([0.5, 0.5], [0.25, 0.75], epsilon=0, base=2) == pytest.approx(
        0.5 * math.log2(4 / 3)
    )
    assert kl_divergence([0.3, 0.7], [0.3, 0.7]) == pytest.approx(0.0, abs=1e-12)


def test_kl_smoothing():
    # eps = .1, C = 2: p~ = (1.1, .1) / 1.2 = (11/12, 1/12), q~ = (1/12, 11/12)
    # KL = 11/12 ln 11 + 1/12 ln(1/11) = (10/12) ln 11 = 1.9982461
    assert kl_divergence([1, 0], [0, 1], epsilon=0.1) == pytest.approx(1.9982461, abs=1e-7)
    assert kl_divergence([1, 0], [0, 1], epsilon=0) == math.inf
    assert math.isfinite(kl_divergence([1, 0], [0, 1]))  # default epsilon keeps it finite
    with pytest.raises(ValueError, match="negative"):
        kl_divergence([1, -1, 1], [1, 1, 1])
    with pytest.raises(ValueError, match="epsilon"):
        kl_divergence([1, 1], [1, 1], epsilon=-1)


# ---------------------------------------------------------------- eq. 4 / 5 / 6


def test_token_distribution_eq4():
    levels, p = token_distribution(np.array([0, 1, 1, 2, 0]), ["s1", "s1", "s2", "s2", "s2"], k=3)
    assert levels.tolist() == ["s1", "s2"]
    np.testing.assert_allclose(p, [[0.5, 0.5, 0.0], [1 / 3, 1 / 3, 1 / 3]])


def test_predicted_mix_two_tokens_two_classes():
    token_dist = np.array([[1.0, 0.0], [0.25, 0.75]])
    profiles = np.array([[0.8, 0.2], [0.1, 0.9]])
    # row 2: .25 * (.8, .2) + .75 * (.1, .9) = (.2 + .075, .05 + .675) = (.275, .725)
    np.testing.assert_allclose(predicted_mix(token_dist, profiles), [[0.8, 0.2], [0.275, 0.725]])
    np.testing.assert_allclose(predicted_mix([[1, 3]], profiles), [[0.275, 0.725]])  # counts
    np.testing.assert_allclose(predicted_mix([0.25, 0.75], profiles), [0.275, 0.725])  # 1-D


def test_predicted_mix_centroids_eq6_and_validation():
    centroids = np.array([[0.0, 10.0], [2.0, 20.0]])
    np.testing.assert_allclose(predicted_mix([[0.5, 0.5]], centroids), [[1.0, 15.0]])
    with pytest.raises(ValueError, match="2 tokens but profiles has 3"):
        predicted_mix([[0.5, 0.5]], np.ones((3, 2)))
    with pytest.raises(ValueError, match="negative"):
        predicted_mix([[-0.5, 1.5]], centroids)


def test_profiles_from_assignments_with_unused_token():
    codes = np.array([0, 0, 1, 1, 1])
    labels = np.array(["A", "B", "A", "A", "C"])
    prof = profiles_from_assignments(codes, labels, k=3, classes=("A", "B", "C"))
    # token 2 is never used -> global mix (3/5, 1/5, 1/5)
    np.testing.assert_allclose(prof, [[0.5, 0.5, 0.0], [2 / 3, 0.0, 1 / 3], [0.6, 0.2, 0.2]])
    # class order follows ``classes``; D is a class nobody has
    prof2 = profiles_from_assignments(codes, labels, k=2, classes=("D", "C", "B", "A"))
    np.testing.assert_allclose(prof2, [[0.0, 0.0, 0.5, 0.5], [0.0, 1 / 3, 0.0, 2 / 3]])
    with pytest.raises(ValueError, match="not in classes"):
        profiles_from_assignments(codes, labels, k=3, classes=("A", "B"))
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        profiles_from_assignments(codes, labels, k=1, classes=("A", "B", "C"))


def test_centroids_from_assignments():
    x = np.array([[1.0, 0.0], [3.0, 2.0], [5.0, 4.0]])
    # token 0: mean of rows 0, 1 = (2, 1); token 1 unused -> global mean (3, 2); token 2: (5, 4)
    np.testing.assert_allclose(
        centroids_from_assignments([0, 0, 2], x, k=3), [[2.0, 1.0], [3.0, 2.0], [5.0, 4.0]]
    )


def test_round_trip_recovers_store_mix():
    # each token is pure in one class, so mixing token profiles by the store's token mix must
    # give back the store's class mix exactly
    codes = np.array([0, 0, 1, 2, 2, 2, 1, 0])
    labels = np.array(["A", "A", "D", "C", "C", "C", "D", "A"])
    stores = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    prof = profiles_from_assignments(codes, labels, 3, ("A", "C", "D"))
    _, mix = token_distribution(codes, stores, 3)
    pred = predicted_mix(mix, prof)
    np.testing.assert_allclose(pred, [[0.5, 0.25, 0.25], [0.25, 0.5, 0.25]])
    np.testing.assert_allclose(js_divergence_rows(pred, pred), 0.0, atol=1e-12)


# ---------------------------------------------------------------- R^2


def test_r_squared_per_column_and_mean():
    y = np.array([[1.0, 2.0], [2.0, 4.0], [3.0, 6.0]])
    yhat = np.array([[1.0, 2.0], [2.0, 5.0], [3.0, 6.0]])
    # column 0 perfect -> 1; column 1: SS_res = 1, SS_tot = 4 + 0 + 4 = 8 -> 1 - 1/8 = .875
    out = r_squared(y, yhat, columns=["atc_rate", "intent"])
    assert out["per_column"] == pytest.approx({"atc_rate": 1.0, "intent": 0.875})
    assert out["mean"] == pytest.approx(0.9375)
    assert r_squared([1.0, 2.0, 3.0], [2.0, 2.0, 2.0])["mean"] == pytest.approx(0.0)


def test_r_squared_constant_column_is_nan():
    y = np.array([[1.0, 5.0], [3.0, 5.0]])
    out = r_squared(y, np.array([[1.0, 4.0], [3.0, 6.0]]))
    assert out["per_column"]["0"] == 1.0
    assert math.isnan(out["per_column"]["1"])
    assert out["mean"] == 1.0
    with pytest.raises(ValueError, match="same 2-D shape"):
        r_squared(y, y[:, :1])
