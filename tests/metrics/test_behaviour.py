"""Behavioural alignment metrics (PAARS group metrics, SimPersona ARA and separation tests)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from persona_shoppers.metrics.behaviour import (
    ab_agreement,
    accuracy,
    accuracy_against_baseline,
    action_rate_alignment,
    calibration,
    cohens_d,
    discrete_kl,
    kruskal_wallis,
    pair_action_rates,
    permutation_test,
    persona_pairing_alignment,
    probability_against_frequency,
    rank_distribution_kl,
    search_shares,
    separation_tests,
    stratified_alignment,
    token_swap_gain,
    welch_t,
)

# ---------------------------------------------------------------- discrete KL


def test_discrete_kl_three_bins_by_hand():
    # p samples 0,0,1,2 -> p = (.50, .25, .25); q samples 0,1,1,1 -> q = (.25, .75, 0)
    # epsilon = .01, V = 3: p~ = (p + .01) / 1.03 = (.51, .26, .26) / 1.03
    #                       q~ = (q + .01) / 1.03 = (.26, .76, .01) / 1.03
    # KL = (.51 ln(.51/.26) + .26 ln(.26/.76) + .26 ln(.26/.01)) / 1.03
    #    = (.51 * .673729 + .26 * (-1.072637) + .26 * 3.258097) / 1.03
    #    = (.343602 - .278886 + .847105) / 1.03 = .885263
    kl = discrete_kl([0, 0, 1, 2], [0, 1, 1, 1], epsilon=0.01)
    assert kl == pytest.approx(0.885263, abs=1e-6)
    # exact KL (epsilon 0) is infinite: q misses p's value 2
    assert discrete_kl([0, 0, 1, 2], [0, 1, 1, 1], epsilon=0.0) == math.inf
    # an unobserved support value adds a bin (V = 4) and changes the smoothing
    assert discrete_kl([0, 0, 1, 2], [0, 1, 1, 1], support=[0, 1, 2, 3], epsilon=0.01) != kl
    assert discrete_kl([1, 2, 2], [2, 1, 2]) == pytest.approx(0.0, abs=1e-12)


def test_discrete_kl_support_validation():
    with pytest.raises(ValueError, match="outside support"):
        discrete_kl([0, 5], [0, 1], support=[0, 1, 2])
    with pytest.raises(ValueError, match="repeat"):
        discrete_kl([0], [0], support=[0, 0])


def test_rank_distribution_kl_by_hand():
    # human ranks 1,1,2 -> (2/3, 1/3, 0); agent 1,2,2 -> (1/3, 2/3, 0); exact KL:
    # 2/3 ln 2 + 1/3 ln(1/2) = ln(2) / 3 = 0.231049
    kl = rank_distribution_kl([1, 1, 2], [1, 2, 2], n_ranks=3, epsilon=0.0)
    assert kl == pytest.approx(math.log(2) / 3)
    with pytest.raises(ValueError, match=r"integers in \[1, 3\]"):
        rank_distribution_kl([0, 1], [1, 2], n_ranks=3)
    with pytest.raises(ValueError, match=r"integers in \[1, 3\]"):
        rank_distribution_kl([1, 1], [1, 4], n_ranks=3)


def test_paars_appendix_b_dice():
    # PAARS appendix B: a 5-sided die tossed 1000 times; system A always predicts 3,
    # system B predicts a uniformly random face. In expectation both are 20 % accurate,
    # MSE_A = E[(X - 3)^2] = (4 + 1 + 0 + 1 + 4) / 5 = 2 and MSE_B = 2 Var(X) = 4 (paper:
    # 1.97 vs 3.96), so A is equal or better on individual metrics; on group KL
    # (KL(humans || system)) A is terrible (paper 10.04; ~9.4 with our epsilon = 1e-6) and
    # B is near 0 (paper 0.0095).
    rng = np.random.default_rng(0)
    tosses = rng.integers(1, 6, size=1000)
    pred_a = np.full(1000, 3)
    pred_b = rng.integers(1, 6, size=1000)
    faces = range(1, 6)
    acc_a, acc_b = accuracy(pred_a, tosses), accuracy(pred_b, tosses)
    se = math.sqrt(0.2 * 0.8 / 1000)  # binomial standard error of a 20 % accuracy
    assert acc_a == pytest.approx(0.2, abs=3 * se) and acc_b == pytest.approx(0.2, abs=3 * se)
    assert acc_a >= acc_b - 3 * se  # A ties or wins on accuracy
    assert np.mean((pred_a - tosses) ** 2) < np.mean((pred_b - tosses) ** 2)  # A wins on MSE
    kl_a = discrete_kl(tosses, pred_a, support=faces)
    kl_b = discrete_kl(tosses, pred_b, support=faces)
    assert kl_a > 8.0 and kl_b < 0.02
    # with a perfectly fair sample (each face 200 times) KL_A has a closed form:
    # p~ = (.2 + 1e-6) / (1 + 5e-6); q~_3 = (1 + 1e-6) / (1 + 5e-6); q~_other = 1e-6 / (1 + 5e-6)
    # KL_A = 4 p~ ln(200001) + p~ ln(.200001 / 1.000001) = 9.442975
    fair = np.repeat(np.arange(1, 6), 200)
    assert discrete_kl(fair, pred_a, support=faces) == pytest.approx(9.442975, abs=1e-6)


def test_accuracy_hand_and_validation():
    assert accuracy(["a", "b", "c", "d"], ["a", "x", "c", "y"]) == 0.5
    with pytest.raises(ValueError, match="expected 2"):
        accuracy([1, 2], [1, 2, 3])


# ---------------------------------------------------------------- A/B and noise floor


def test_ab_agreement():
    assert ab_agreement(0.30, 0.01) == {"direction_agrees": True, "magnitude_ratio": 30.0}
    out = ab_agreement(-0.2, 0.1)
    assert out["direction_agrees"] is False and out["magnitude_ratio"] == pytest.approx(-2.0)
    zero = ab_agreement(0.1, 0.0)
    assert zero["direction_agrees"] is False and math.isnan(zero["magnitude_ratio"])
    with pytest.raises(ValueError, match="finite"):
        ab_agreement(float("nan"), 1.0)


def test_action_rate_alignment_hand_values():
    # ATC: 1 - |.3 - .5| = .8 ; PUR: 1 - |.1 - .05| = .95 ; ARA = (.8 + .95) / 2 = .875
    out = action_rate_alignment(0.3, 0.1, 0.5, 0.05)
    assert out["atc"] == pytest.approx([0.8])
    assert out["purchase"] == pytest.approx([0.95])
    assert out["ara"] == pytest.approx([0.875])
    with pytest.raises(ValueError, match=r"agent_atc must lie in \[0, 1\]"):
        action_rate_alignment(0.3, 0.1, 1.5, 0.05)


def test_stratified_alignment_reproduces_simpersona_table2_correct_row():
    # Table 2, "Correct" columns per stratum A-D; stratified = unweighted mean over strata.
    # The table's inputs are rounded to 3 decimals, so its aggregates match to +-1e-3.
    atc = [0.706, 0.736, 0.767, 0.942]
    pur = [0.742, 0.760, 0.674, 0.965]
    out = stratified_alignment(atc, pur, ["A", "B", "C", "D"])
    assert out["per_stratum"]["A"]["ara"] == pytest.approx(0.724)
    assert out["stratified"]["atc"] == pytest.approx(0.788, abs=1e-3)
    assert out["stratified"]["purchase"] == pytest.approx(0.785, abs=1e-3)
    assert out["stratified"]["ara"] == pytest.approx(0.787, abs=1e-3)


def _ara_tables() -> tuple[dict, dict]:
    # real buyers (one row each)                pair rates (atc, pur), modal stratum
    #   s1/t0: 2 x A, atc 1,1  pur 1,0          (1.0, .5)  A
    #   s1/t1: C,C,C,D atc 1,1,0,0 pur 0        (.5, 0)    C
    #   s1/t2: 2 x D, atc 0 pur 0               (0, 0)     D
    #   s2/t0: A, atc 1 pur 1                   (1, 1)     A
    #   s2/t5: 2 x D, atc 0 pur 0               (0, 0)     D
    #   s3/t7: B, atc 1 pur 0                   (1, 0)     B  (only token of s3)
    real = {
        "shop": ["s1"] * 8 + ["s2"] * 3 + ["s3"],
        "token": [0, 0, 1, 1, 1, 1, 2, 2, 0, 5, 5, 7],
        "stratum": ["A", "A", "C", "C", "C", "D", "D", "D", "A", "D", "D", "B"],
        "atc": [1, 1, 1, 1, 0, 0, 0, 0, 1, 0, 0, 1],
        "purchase": [1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0],
    }
    # agent sessions: s1/t0 (.75, .25), s1/t1 (.5, 0), s1/t2 (.25, 0), s2/t5 (0, 0),
    # s3/t7 (1, 1); no agent for s2/t0
    agent = {
        "shop": ["s1"] * 10 + ["s2", "s3"],
        "token": [0, 0, 0, 0, 1, 1, 2, 2, 2, 2, 5, 7],
        "atc": [1, 1, 1, 0, 1, 0, 0, 0, 0, 1, 0, 1],
        "purchase": [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
    }
    return real, agent


def test_pair_action_rates_and_modal_stratum():
    real, _ = _ara_tables()
    rates = pair_action_rates(
        real["shop"], real["token"], real["atc"], real["purchase"], real["stratum"]
    )
    assert list(zip(rates["shop"], rates["token"], strict=True)) == [
        ("s1", 0), ("s1", 1), ("s1", 2), ("s2", 0), ("s2", 5), ("s3", 7)
    ]  # fmt: skip
    assert rates["atc"] == pytest.approx([1.0, 0.5, 0.0, 1.0, 0.0, 1.0])
    assert rates["purchase"] == pytest.approx([0.5, 0.0, 0.0, 1.0, 0.0, 0.0])
    assert rates["n"].tolist() == [2, 4, 2, 1, 2, 1]
    assert rates["stratum"].tolist() == ["A", "C", "D", "A", "D", "B"]


def test_persona_pairing_alignment_by_hand():
    real, agent = _ara_tables()
    out = persona_pairing_alignment(real, agent, seed=0)
    # correct (1 - |real - agent|), on the cells that have a mismatch (s3 has one token only):
    #   s1/t0 A: atc 1-|1-.75| = .75, pur 1-|.5-.25| = .75
    #   s1/t1 C: 1, 1        s1/t2 D: atc .75, pur 1
    #   s2/t5 D: 1, 1        (s3/t7 B left out)
    # per stratum: A (.75,.75)  C (1, 1)  D (.875, 1)
    # stratified: atc 2.625/3 = .875, pur 2.75/3, ARA (.875 + 2.75/3) / 2
    correct = out["correct"]
    assert set(correct["per_stratum"]) == {"A", "C", "D"}
    assert correct["per_stratum"]["D"]["atc"] == pytest.approx(0.875)
    assert correct["per_stratum"]["C"]["ara"] == pytest.approx(1.0)
    assert correct["per_stratum"]["D"]["n_cells"] == 2
    assert correct["stratified"]["atc"] == pytest.approx(0.875)
    assert correct["stratified"]["purchase"] == pytest.approx(2.75 / 3)
    assert correct["stratified"]["ara"] == pytest.approx((0.875 + 2.75 / 3) / 2)
    # all-mismatch (mean over the other tokens of the same shop; s3 has none -> left out):
    #   s1/t0 (.75,.25) vs t1 (.5,0): (.75,.75); vs t2 (0,0): (.25,.75) -> (.5,.75)  A
    #   s1/t1 (.5,0)    vs t0 (1,.5): (.5,.5);   vs t2 (0,0): (.5,1)    -> (.5,.75)  C
    #   s1/t2 (.25,0)   vs t0 (1,.5): (.25,.5);  vs t1 (.5,0): (.75,1)  -> (.5,.75)  D
    #   s2/t5 (0,0)     vs t0 (1,1):  (0,0)                                          D
    # per stratum: A (.5,.75)  C (.5,.75)  D (.25,.375); stratified atc 1.25/3, pur 1.875/3
    mis = out["all_mismatch"]
    assert set(mis["per_stratum"]) == {"A", "C", "D"}
    assert mis["per_stratum"]["D"]["purchase"] == pytest.approx(0.375)
    assert mis["stratified"]["atc"] == pytest.approx(1.25 / 3)
    assert mis["stratified"]["purchase"] == pytest.approx(0.625)
    assert mis["stratified"]["ara"] == pytest.approx((1.25 / 3 + 0.625) / 2)
    assert correct["stratified"]["ara"] > mis["stratified"]["ara"]
    # DataFrames (object-dtype string columns) give the same result
    framed = persona_pairing_alignment(pd.DataFrame(real), pd.DataFrame(agent), seed=0)
    assert framed == out


def test_random_mismatch_draws_one_other_token_uniformly():
    real, agent = _ara_tables()
    c_values = set()
    for seed in range(20):
        rand = persona_pairing_alignment(real, agent, seed=seed)["random_mismatch"]
        # s2/t5 has a single other token (s2/t0): always (0, 0)
        assert rand["per_stratum"]["D"]["n_cells"] == 2
        # s1/t1 (stratum C) vs t0 -> (.5,.5) or vs t2 -> (.5,1); never itself (1,1)
        c = rand["per_stratum"]["C"]
        c_values.add((c["atc"], c["purchase"]))
    assert c_values == {(0.5, 0.5), (0.5, 1.0)}


def test_persona_pairing_alignment_errors():
    real, agent = _ara_tables()
    agent_bad = {**agent, "token": [9] + agent["token"][1:]}
    with pytest.raises(ValueError, match="without real buyers"):
        persona_pairing_alignment(real, agent_bad)
    real_bad = {k: v for k, v in real.items() if k != "stratum"}
    with pytest.raises(ValueError, match="'stratum' column"):
        persona_pairing_alignment(real_bad, agent)
    lonely = {k: [v[-1]] for k, v in agent.items()}  # s3 has a single token
    with pytest.raises(ValueError, match="no mismatch"):
        persona_pairing_alignment(real, lonely)


# ---------------------------------------------------------------- separation tests


def test_cohens_d_and_welch_by_hand():
    # x = 2,4,6 (mean 4, SS 8); y = 1,2,3 (mean 2, SS 2); s_p = sqrt(10 / 4) = 1.581139
    # d = 2 / 1.581139 = 1.264911
    assert cohens_d([2, 4, 6], [1, 2, 3]) == pytest.approx(1.264911, abs=1e-6)
    assert cohens_d([1, 2, 3], [2, 4, 6]) == pytest.approx(-1.264911, abs=1e-6)
    assert cohens_d([1, 1], [2, 2]) == -math.inf
    # Welch: t = 2 / sqrt(4/3 + 1/3) = 1.549193; df = (5/3)^2 / ((4/3)^2/2 + (1/3)^2/2) = 50/17
    w = welch_t([2, 4, 6], [1, 2, 3])
    assert w["t"] == pytest.approx(1.549193, abs=1e-6)
    assert w["df"] == pytest.approx(50 / 17)
    assert 0.1 < w["p"] < 0.3
    with pytest.raises(ValueError, match="at least 2"):
        welch_t([1.0], [1.0, 2.0])


def test_kruskal_wallis_by_hand():
    # ranks 1..6; R = 6, 15; H = 12 / (6 * 7) * (36/3 + 225/3) - 3 * 7 = 3.857143
    out = kruskal_wallis([1, 2, 3], [4, 5, 6])
    assert out["h"] == pytest.approx(3.857143, abs=1e-6)
    assert out["p"] == pytest.approx(0.0495, abs=1e-4)
    assert math.isnan(kruskal_wallis([1, 1], [1, 1])["h"])
    with pytest.raises(ValueError, match="at least 2 groups"):
        kruskal_wallis([1, 2, 3])


def test_permutation_test_p_value_sanity():
    x = np.arange(20, dtype=float)
    same = permutation_test(x, x.copy(), n_draws=2000, seed=0)
    assert same["statistic"] == 0.0 and same["p"] == pytest.approx(1.0)
    # no relabelling of well separated groups reaches |T_obs|: p = 1 / (n_draws + 1)
    apart = permutation_test(x + 100, x, n_draws=2000, seed=0)
    assert apart["statistic"] == pytest.approx(100.0)
    assert apart["p"] == pytest.approx(1 / 2001)
    # seeded, and a custom vectorised statistic works
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=30), rng.normal(0.5, 1, size=30)
    assert permutation_test(a, b, seed=1, n_draws=500) == permutation_test(
        a, b, seed=1, n_draws=500
    )

    def median_diff(u: np.ndarray, v: np.ndarray, axis: int = -1) -> np.ndarray:
        return np.median(u, axis=axis) - np.median(v, axis=axis)

    med = permutation_test(a, b, statistic=median_diff, n_draws=500)
    assert med["statistic"] == pytest.approx(np.median(a) - np.median(b))
    assert 1 / 501 <= med["p"] <= 1.0


def test_separation_tests_table3_row():
    # purchase head: Low tokens almost never convert, High always do
    scores = np.array([0, 0, 1, 0, 2, 3, 2, 3, 7, 8, 6, 9], dtype=float)
    bins = np.repeat([0, 1, 2], 4)
    out = separation_tests(scores, bins, n_draws=1000)
    assert out["mean_per_bin"] == {0: 0.25, 1: 2.5, 2: 7.5}
    assert out["cohens_d"] == pytest.approx(cohens_d(scores[8:], scores[:4]))
    assert out["cohens_d"] > 2 and out["welch_p"] < 1e-3 and out["kruskal_p"] < 0.01
    # 4 vs 4 has C(8, 4) = 70 labellings < 1000: scipy enumerates them, p = 2/70 exactly
    assert out["permutation_p"] == pytest.approx(2 / 70)
    with pytest.raises(ValueError, match="high=2"):
        separation_tests(scores[:8], bins[:8])


# ---------------------------------------------------------------- calibration


def test_calibration_hand_values():
    # runs:      1 2 3 4 5
    # claimed:   1 1 1 1 0
    # achieved:  1 1 0 0 0   -> claim .8, success .4, agreement 3/5, precision 2/4, recall 2/2
    out = calibration([1, 1, 1, 1, 0], [True, True, False, False, False])
    assert out == {
        "n": 5.0,
        "claim_rate": 0.8,
        "success_rate": 0.4,
        "agreement": 0.6,
        "precision": 0.5,
        "recall": 1.0,
    }
    assert math.isnan(calibration([0, 0], [1, 0])["precision"])
    with pytest.raises(ValueError, match="booleans or 0/1"):
        calibration([2, 0], [1, 0])


def test_accuracy_against_baseline_by_hand():
    out = accuracy_against_baseline([1, 1, 0, 1], [1, 0, 0, 0], draws=500, seed=1)
    assert out["accuracy"] == 0.75 and out["baseline"] == 0.25
    assert out["difference"] == 0.5 and out["n"] == 4
    low, high = out["difference_interval"]
    assert 0 <= low <= 0.5 <= high <= 1  # per-step gains are 0 or 1
    with pytest.raises(ValueError, match="baseline_correct has 3 entries"):
        accuracy_against_baseline([1, 0, 1, 1], [1, 0, 1])


def test_probability_against_frequency_by_hand():
    out = probability_against_frequency([0.2, 0.4, 0.0, 0.2], [1, 0, 0, 1], draws=500, seed=1)
    assert out["model"] == pytest.approx(0.2) and out["human"] == 0.5
    assert out["ratio"] == pytest.approx(0.4) and out["n"] == 4
    never = probability_against_frequency([0.1, 0.3], [0, 0], draws=50)
    assert np.isnan(never["ratio"]) and np.isnan(never["ratio_interval"][0])
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        probability_against_frequency([1.5], [1])


def test_search_shares_pool_searches_over_sessions():
    # (searches, found nothing, repeated the previous query) per session
    counts = [[2, 1, 1], [0, 0, 0], [3, 0, 0], [1, 1, 0]]
    report = search_shares(counts, draws=200, seed=1)
    assert report["n"] == 6 and report["sessions"] == 4
    assert report["empty"] == pytest.approx(2 / 6)
    assert report["repeated"] == pytest.approx(1 / 6)
    low, high = report["empty_interval"]
    assert 0 <= low <= 2 / 6 <= high <= 1
    assert math.isnan(search_shares([[0, 0, 0]])["empty"])  # no search: no share
    with pytest.raises(ValueError, match="more empty or repeated"):
        search_shares([[1, 2, 0]])


def test_token_swap_gain_is_the_mean_log_ratio_of_the_taken_action():
    own = [[0.5, 0.5], [0.8, 0.2], [0.1, 0.9]]
    swapped = [[0.25, 0.75], [0.8, 0.2], [0.3, 0.7]]
    result = token_swap_gain(own, swapped, [0, 1, 1])
    expected = (math.log(0.5 / 0.25) + 0.0 + math.log(0.9 / 0.7)) / 3
    assert result["gain"] == pytest.approx(expected)
    assert result["n"] == 3
    low, high = result["interval"]
    assert low <= result["gain"] <= high


def test_token_swap_gain_is_zero_for_a_model_that_ignores_its_token():
    probs = [[0.2, 0.3, 0.5], [0.6, 0.1, 0.3]]
    result = token_swap_gain(probs, probs, [2, 0])
    assert result["gain"] == 0.0
    assert result["interval"] == [0.0, 0.0]


def test_token_swap_gain_refuses_mismatched_shapes():
    with pytest.raises(ValueError, match="one shape"):
        token_swap_gain([[0.5, 0.5]], [[0.5, 0.5], [0.5, 0.5]], [0])
