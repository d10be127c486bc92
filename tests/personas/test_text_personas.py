"""PAARS text personas: the two prompts, failures kept, faithfulness against a shuffle."""

import pandas as pd
import pytest

from persona_shoppers.llm.base import JsonResult
from persona_shoppers.personas.text_personas import (
    PROFILE_SCHEMA,
    buyer_evidence,
    faithfulness,
    mine_text_personas,
)

PROFILE = {
    "reasoning": "buys running shoes",
    "age_range": "25-34",
    "gender": "unknown",
    "marital_status": "single",
    "household": "lives alone",
    "income": "medium",
    "occupation": "nurse",
    "location": "urban",
}


def _preferences(price="high", brand="low", interests=("Shoes",)):
    return {
        "reasoning": "cheap items",
        "price_sensitivity": price,
        "value_perception": "balanced",
        "review_reliance": "medium",
        "brand_reliance": brand,
        "shopping_frequency": "occasional",
        "interests": list(interests),
    }


class ScriptedLLM:
    """Answers profile prompts validly except for buyer b2; records the prompts it saw."""

    def __init__(self):
        self.calls = []

    def generate_json(self, prompts, schema):
        self.calls.append((prompts, schema))
        out = []
        for messages in prompts:
            text = messages[-1]["content"]
            if schema is PROFILE_SCHEMA:
                ok = "history of b2" not in text
                out.append(
                    JsonResult(PROFILE if ok else None, ok, "{}", 3, None if ok else "not JSON")
                )
            else:
                out.append(JsonResult(_preferences(), True, "{}", 1))
        return out


def test_two_step_prompting_keeps_failures_and_reasoning():
    buyers = pd.DataFrame(
        {
            "shop_id": ["s1", "s1", "s2"],
            "buyer_id": ["b1", "b2", "b3"],
            "history_text": ["history of b1", "history of b2", "x" * 50 + "history of b3"],
        }
    )
    llm = ScriptedLLM()
    personas = mine_text_personas(
        llm, buyers, {"s1": ["Shoes", "Bags"], "s2": ["Hats"]}, history_chars=20
    )
    assert personas["status"].tolist() == ["ok", "failed", "ok"]
    assert (
        personas.loc[1, "error"] == "profile: not JSON" and personas.loc[1, "preferences"] is None
    )
    assert personas.loc[0, "reasoning"] == {
        "profile": "buys running shoes",
        "preferences": "cheap items",
    }
    assert personas.loc[2, "history"] == "xxxxxxxhistory of b3"  # the most recent 20 characters
    # One profile call for all buyers, then one preferences call per shop with its categories,
    # for valid profiles only; the preferences prompt carries the profile.
    assert len(llm.calls) == 3
    schemas = [schema for _, schema in llm.calls[1:]]
    assert [s["properties"]["interests"]["items"]["enum"] for s in schemas] == [
        ["Shoes", "Bags"],
        ["Hats"],
    ]
    assert len(llm.calls[1][0]) == 1 and "age_range: 25-34" in llm.calls[1][0][0][-1]["content"]


def test_buyer_evidence_from_views():
    products = pd.DataFrame(
        {
            "shop_id": ["s"] * 4,
            "product_id": ["p1", "p2", "p3", "p4"],
            "category": ["Shoes", "Shoes", "Shoes", "Bags"],
            "brand": ["A", "B", "A", "A"],
            "price": [10.0, 20.0, 30.0, 50.0],
        }
    )
    views = pd.DataFrame(
        {"shop_id": ["s"] * 3, "buyer_id": ["b"] * 3, "product_id": ["p1", "p1", "p4"]}
    )
    evidence = buyer_evidence(views, products).iloc[0]
    # Price percentiles within category: p1 1/3 (cheapest of 3 shoes), p4 1.0 (only bag).
    assert evidence["price_percentile"] == pytest.approx((1 / 3 + 1 / 3 + 1.0) / 3)
    assert evidence["top_brand_share"] == 1.0
    assert evidence["categories"] == ["Bags", "Shoes"]


def test_faithfulness_against_a_within_shop_shuffle():
    # Three buyers whose stated price sensitivity and brand reliance match the data exactly.
    personas = pd.DataFrame(
        {
            "shop_id": ["s"] * 3,
            "buyer_id": ["cheap", "mid", "dear"],
            "status": ["ok"] * 3,
            "preferences": [
                _preferences("high", "low", ["Shoes"]),
                _preferences("medium", "medium", ["Bags"]),
                _preferences("low", "high", ["Hats", "Shoes"]),
            ],
        }
    )
    evidence = pd.DataFrame(
        {
            "shop_id": ["s"] * 3,
            "buyer_id": ["cheap", "mid", "dear"],
            "price_percentile": [0.1, 0.5, 0.9],
            "top_brand_share": [0.2, 0.5, 0.9],
            "categories": [["Shoes"], ["Bags"], ["Shoes"]],
        }
    )
    result = faithfulness(personas, evidence, seed=0)
    assert result["n"] == 3
    assert result["price_agreement"] == 1.0 and result["brand_agreement"] == 1.0
    assert result["interests_agreement"] == pytest.approx((1 + 1 + 0.5) / 3)
    assert result["price_agreement_shuffled"] < 1.0
