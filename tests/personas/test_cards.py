"""Persona cards, p_s(k) and population recovery on hand-made mixtures."""

import numpy as np
import pandas as pd
import pytest

from persona_shoppers.clickstream.buyers import BEHAVIOURAL_FEATURES
from persona_shoppers.personas.cards import (
    cards_markdown,
    persona_cards,
    population_recovery,
    shop_distributions,
)


def _buyers(rows):
    """rows: (shop, token, stratum, intent_strength); other features 1.0."""
    frame = pd.DataFrame(rows, columns=["shop_id", "token", "stratum", "intent_strength"])
    for feature in BEHAVIOURAL_FEATURES:
        if feature != "intent_strength":
            frame[feature] = 1.0
    frame["buyer_id"] = [f"b{i}" for i in range(len(frame))]
    frame["shop_role"] = "eval"
    return frame


def test_shop_distributions_are_shares_per_shop():
    frame = _buyers(
        [("s1", 0, "A", 0.5), ("s1", 0, "A", 0.5), ("s1", 1, "D", 0.0), ("s2", 1, "D", 0.0)]
    )
    out = shop_distributions(frame, k=2)
    assert out[["shop_id", "token", "n_buyers"]].values.tolist() == [
        ["s1", 0, 2],
        ["s1", 1, 1],
        ["s2", 1, 1],
    ]
    assert out["share"].tolist() == pytest.approx([2 / 3, 1 / 3, 1.0])
    with pytest.raises(ValueError, match="token outside"):
        shop_distributions(frame, k=1)


def test_recovery_is_exact_when_tokens_are_pure():
    # Token 0 = purchasers with intent 0.8, token 1 = window shoppers with intent 0.0.
    # Shop s1 is 3/4 token 0, shop s2 1/4: predicted mixes equal the real ones (JS 0) and the
    # token-weighted intent (0.6, 0.2) equals the shops' means.
    rows = (
        [("s1", 0, "A", 0.8)] * 3
        + [("s1", 1, "D", 0.0)]
        + [("s2", 0, "A", 0.8)]
        + [("s2", 1, "D", 0.0)] * 3
    )
    frame = _buyers(rows)
    result = population_recovery(frame, frame, k=2)
    assert result["js_mean"] == pytest.approx(0.0, abs=1e-12)
    assert result["js_below_threshold"] == 2
    assert result["predicted_mix"]["s1"]["A"] == pytest.approx(0.75)
    assert result["r2_per_feature"]["intent_strength"] == pytest.approx(1.0)
    assert result["store_profiles"]["reconstructed"][0][
        BEHAVIOURAL_FEATURES.index("intent_strength")
    ] == pytest.approx(0.6)


def test_recovery_of_a_mixed_token():
    # Token 0 is half A, half D in the reference; a target shop of 2 token-0 buyers that are both
    # A gets predicted (A 0.5, D 0.5) against real (A 1.0): JS(base 2) of (1,0) vs (1/2,1/2).
    reference = _buyers([("r", 0, "A", 1.0), ("r", 0, "D", 0.0)])
    target = _buyers([("t", 0, "A", 1.0), ("t", 0, "A", 1.0)])
    result = population_recovery(reference, target, k=1)
    expected = 0.5 * np.log2(1 / 0.75) + 0.5 * (
        0.5 * np.log2(0.5 / 0.75) + 0.5 * np.log2(0.5 / 0.25)
    )
    assert result["js_per_shop"]["t"] == pytest.approx(expected)
    assert result["js_below_threshold"] == 0


def test_persona_cards_describe_their_members():
    members = _buyers([("s1", 0, "A", 0.8), ("s1", 0, "A", 0.6), ("s1", 1, "D", 0.0)])
    members["engagement_bin"] = [2, 2, 0]
    members["exploration_bin"] = [1, 1, 1]
    members["purchase_bin"] = [2, 1, 0]
    categories = pd.DataFrame(
        {"token": [0, 0, 0, 1], "category": ["Shoes", "Bags", "Hats", "Shoes"], "n": [5, 9, 1, 2]}
    )
    cards = persona_cards(members, categories, k=3, top_categories=2)
    assert [c["n_buyers"] for c in cards] == [2, 1, 0]
    assert cards[0]["strata"]["A"] == 1.0
    assert cards[0]["bins"]["engagement"]["label"] == "high"
    assert cards[0]["bins"]["purchase"]["shares"] == {"low": 0.0, "medium": 0.5, "high": 0.5}
    assert cards[0]["centroid"]["intent_strength"] == pytest.approx(0.7)
    assert cards[0]["top_categories"] == ["Bags", "Shoes"]
    assert cards[2] == {"token": 2, "persona": "<|persona_2|>", "n_buyers": 0}
    markdown = cards_markdown(cards)
    assert "2 of 3 tokens" in markdown and "| 0 | 2 | A (100%) | high / medium / high |" in markdown
