"""Faithfulness of text personas: spread, behaviour against shuffles, planted types."""

import numpy as np
import pandas as pd
import pytest

from persona_shoppers.personas.faithfulness import (
    behaviour_agreement,
    evidence_following,
    planted_agreement,
    shop_permutations,
    value_spread,
)
from persona_shoppers.personas.text_personas import enumerated_options


def _personas(genders):
    profile = {f: o[0] for f, o in enumerated_options().items()}
    return pd.DataFrame(
        {
            "profile": [{**profile, "gender": g} for g in genders],
            "preferences": [profile] * len(genders),
        }
    )


def test_value_spread_counts_values_and_the_top_share():
    spread = value_spread(_personas(["male", "female", "male", "male"]))
    assert spread["gender"] == {"distinct": 2, "top_value": "male", "top_share": 0.75}
    assert spread["age_range"]["distinct"] == 1


def test_permutations_stay_within_shops():
    shops = ["a", "a", "b", "b", "b"]
    orders = shop_permutations(shops, 50, seed=0)
    assert orders.shape == (50, 5)
    for order in orders:
        assert sorted(order[:2]) == [0, 1] and sorted(order[2:]) == [2, 3, 4]
    assert (orders != np.arange(5)).any()  # not all identity
    assert np.array_equal(orders, shop_permutations(shops, 50, seed=0))


def test_behaviour_agreement_against_shuffles():
    stated = ["high", "low", "medium", "high", "low", "medium"] * 3
    shops = ["s"] * len(stated)
    result = behaviour_agreement(stated, stated, shops, "price_sensitivity", 500, seed=1)
    assert result["own"] == 1.0 and result["n"] == 18
    assert result["shuffled"] == pytest.approx(1 / 3, abs=0.05)
    assert result["gain"] == pytest.approx(result["own"] - result["shuffled"])
    assert result["p_value"] < 0.01
    # unknown behaviour is left out of n
    truth = [None, *stated[1:]]
    assert behaviour_agreement(stated, truth, shops, "price_sensitivity", 10, 0)["n"] == 17
    # a constant persona agrees no better than its shuffle: p = 1
    flat = behaviour_agreement(["high"] * 18, stated, shops, "price_sensitivity", 100, 0)
    assert flat["gain"] == pytest.approx(0.0) and flat["p_value"] == 1.0


def test_interest_agreement_is_the_share_of_stated_interests_viewed():
    stated = [["Boots", "Hats"], ["Sandals"]]
    seen = [["Boots"], ["Sandals", "Boots"]]
    result = behaviour_agreement(stated, seen, ["s", "t"], "interests", 20, 0)
    assert result["own"] == pytest.approx((0.5 + 1.0) / 2)
    assert result["shuffled"] == result["own"]  # one buyer per shop: nothing to shuffle


def test_planted_types_rank_by_their_share_called_high():
    stated = ["high", "high", "low", "high", "low", "low", "low", "low", "low", "high"]
    types = ["deal"] * 3 + ["mid"] * 3 + ["lux"] * 3 + [None]
    result = planted_agreement(stated, types, {"deal": 2.0, "mid": 0.5, "lux": -1.0})
    assert result["types"]["deal"] == {"planted": 2.0, "share_high": 2 / 3, "n": 3}
    assert result["types"]["lux"]["share_high"] == 0.0
    assert result["n_types"] == 3 and result["spearman_rho"] == pytest.approx(1.0)
    few = planted_agreement(stated[:6], types[:6], {"deal": 2.0, "mid": 0.5}, min_buyers=3)
    assert few["n_types"] == 2 and "spearman_rho" not in few


def test_evidence_following_counts_personas_whose_evidence_implies_a_level():
    stated = ["high", "low", "medium", "high"]
    implied = ["high", "medium", None, "high"]
    assert evidence_following(stated, implied) == {"n": 3.0, "share": 2 / 3}
    assert evidence_following(["low"], [None]) == {"n": 0.0}
