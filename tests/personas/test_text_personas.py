"""PAARS text personas: the two prompts, failures kept."""

import pandas as pd

from persona_shoppers.llm.base import JsonResult
from persona_shoppers.personas.text_personas import (
    PROFILE_SCHEMA,
    enumerated_options,
    mine_text_personas,
)

PROFILE = {
    "reasoning": "buys running shoes",
    "age_range": "25-34",
    "gender": "unknown",
    "marital_status": "single",
    "household": "lives alone",
    "income": "medium",
    "occupation": "professional",
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
            "history": ["history of b1", "history of b2", "xxxxxxxhistory of b3"],
        }
    )
    llm = ScriptedLLM()
    personas = mine_text_personas(llm, buyers, {"s1": ["Shoes", "Bags"], "s2": ["Hats"]})
    assert personas["status"].tolist() == ["ok", "failed", "ok"]
    assert (
        personas.loc[1, "error"] == "profile: not JSON" and personas.loc[1, "preferences"] is None
    )
    assert personas.loc[0, "reasoning"] == {
        "profile": "buys running shoes",
        "preferences": "cheap items",
    }
    assert personas.loc[2, "history"] == "xxxxxxxhistory of b3"
    # One profile call for all buyers, then one preferences call per shop with its categories,
    # for valid profiles only; the preferences prompt carries the profile.
    assert len(llm.calls) == 3
    schemas = [schema for _, schema in llm.calls[1:]]
    assert [s["properties"]["interests"]["items"]["enum"] for s in schemas] == [
        ["Shoes", "Bags"],
        ["Hats"],
    ]
    assert len(llm.calls[1][0]) == 1 and "age_range: 25-34" in llm.calls[1][0][0][-1]["content"]


def test_enumerated_options_cover_every_field_in_prompt_order():
    options = enumerated_options()
    assert list(options)[:2] == ["age_range", "gender"]
    assert options["price_sensitivity"] == ["low", "medium", "high"]
    assert "professional" in options["occupation"] and "interests" not in options
