"""PAARS text personas (section 3): the persona fields and their options, and PAARS's own
method (``paars``): an LLM reads a buyer's shopping history and writes a consumer profile, then
shopping preferences, each as schema-validated JSON with its reasoning. The default method
scores the options instead (``likelihood``, :mod:`persona_shoppers.personas.likelihood_mining`).

See docs/persona_mining.md, "Text personas".
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

import pandas as pd
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

MINING_METHODS = ("likelihood", "paars")
LEVELS = ["low", "medium", "high"]
FREQUENCIES = ["rare", "occasional", "frequent"]
OCCUPATIONS = [
    "student",
    "office worker",
    "professional",
    "skilled trade",
    "service worker",
    "homemaker",
    "retired",
    "self-employed",
]

# The persona fields a prompt shows (PAARS appendix A), in order; "reasoning" is the model's own.
PROFILE_FIELDS: tuple[str, ...] = (
    "age_range",
    "gender",
    "marital_status",
    "household",
    "income",
    "occupation",
    "location",
)
INTERESTS = "interests"  # the preference that lists categories
PREFERENCE_FIELDS: tuple[str, ...] = (
    "price_sensitivity",
    "value_perception",
    "review_reliance",
    "brand_reliance",
    "shopping_frequency",
)

PROFILE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "reasoning": {"type": "string", "maxLength": 300},
        "age_range": {
            "type": "string",
            "enum": ["18-24", "25-34", "35-44", "45-54", "55-64", "65+"],
        },
        "gender": {"type": "string", "enum": ["female", "male", "unknown"]},
        "marital_status": {"type": "string", "enum": ["single", "married", "unknown"]},
        "household": {"type": "string", "enum": ["lives alone", "couple", "family with children"]},
        "income": {"type": "string", "enum": LEVELS},
        "occupation": {"type": "string", "enum": OCCUPATIONS},
        "location": {"type": "string", "enum": ["urban", "suburban", "rural"]},
    },
    "required": ["reasoning", *PROFILE_FIELDS],
}


def preferences_schema(categories: list[str]) -> dict[str, Any]:
    """Shopping preferences; interests are chosen among the shop's categories."""
    return {
        "type": "object",
        "properties": {
            "reasoning": {"type": "string", "maxLength": 300},
            "price_sensitivity": {"type": "string", "enum": LEVELS},
            "value_perception": {
                "type": "string",
                "enum": ["price over quality", "balanced", "quality over price"],
            },
            "review_reliance": {"type": "string", "enum": LEVELS},
            "brand_reliance": {"type": "string", "enum": LEVELS},
            "shopping_frequency": {"type": "string", "enum": FREQUENCIES},
            "interests": {
                "type": "array",
                "items": {"type": "string", "enum": categories},
                "maxItems": 3,
            },
        },
        "required": ["reasoning", *PREFERENCE_FIELDS, "interests"],
    }


def enumerated_options() -> dict[str, list[str]]:
    """Every profile and preference field (in prompt order) with its options."""
    properties = {
        **PROFILE_SCHEMA["properties"],
        **preferences_schema([])["properties"],
    }
    return {f: list(properties[f]["enum"]) for f in (*PROFILE_FIELDS, *PREFERENCE_FIELDS)}


SYSTEM = "You are a retail analyst. You describe a real customer from their shopping history."


def profile_prompt(history: str) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": SYSTEM},
        {
            "role": "user",
            "content": "Shopping history (searches, views, purchases by day):\n"
            f"{history}\n\nInfer this customer's consumer profile: age range, gender, marital "
            "status, household, income, occupation and location. Think briefly first.",
        },
    ]


def preferences_prompt(history: str, profile: dict[str, Any]) -> list[dict[str, str]]:
    described = ", ".join(f"{k}: {v}" for k, v in profile.items() if k != "reasoning")
    return [
        {"role": "system", "content": SYSTEM},
        {
            "role": "user",
            "content": f"Consumer profile: {described}.\nShopping history:\n{history}\n\n"
            "Infer this customer's shopping preferences: price sensitivity, value perception, "
            "reliance on reviews, reliance on brands, shopping frequency and main interests. "
            "Think briefly first.",
        },
    ]


class JsonLLM(Protocol):
    """What persona mining needs from the LLM layer."""

    def generate_json(
        self, prompts: list[list[dict[str, str]]], schema: dict[str, Any]
    ) -> list[Any]: ...


def mine_text_personas(
    llm: JsonLLM, buyers: pd.DataFrame, categories: dict[str, list[str]]
) -> pd.DataFrame:
    """The two PAARS prompts for every row of ``buyers`` (shop_id, buyer_id, history).

    ``categories`` maps a shop to its product categories (the allowed interests). Returns one
    row per buyer: profile, preferences, reasoning, history, status (ok / failed) and error.
    """
    histories = list(buyers["history"])
    logger.info("text personas: step 1 of 2, consumer profiles of %d buyers", len(histories))
    profiles = llm.generate_json([profile_prompt(h) for h in histories], PROFILE_SCHEMA)
    rows: list[dict[str, Any]] = [
        {
            "shop_id": s,
            "buyer_id": b,
            "history": h,
            "profile": p.value,
            "profile_attempts": p.attempts,
        }
        for s, b, h, p in zip(
            buyers["shop_id"], buyers["buyer_id"], histories, profiles, strict=True
        )
    ]
    for row, result in zip(rows, profiles, strict=True):
        row["error"] = None if result.valid else f"profile: {result.error}"
    # Preferences, shop by shop (each shop has its own category list), for valid profiles only.
    shops = list(dict.fromkeys(r["shop_id"] for r in rows))
    logger.info("text personas: step 2 of 2, shopping preferences, shop by shop")
    for shop in tqdm(shops, desc="preferences", unit="shop"):
        todo = [r for r in rows if r["shop_id"] == shop and r["error"] is None]
        if not todo:
            continue
        schema = preferences_schema(categories[shop])
        answers = llm.generate_json(
            [preferences_prompt(r["history"], r["profile"]) for r in todo], schema
        )
        for row, result in zip(todo, answers, strict=True):
            row["preferences"] = result.value
            row["preferences_attempts"] = result.attempts
            if not result.valid:
                row["error"] = f"preferences: {result.error}"
    for row in rows:
        row.setdefault("preferences", None)
        row["status"] = "ok" if row["error"] is None else "failed"
        row["reasoning"] = {
            part: (row[part] or {}).get("reasoning") for part in ("profile", "preferences")
        }
    return pd.DataFrame(rows)
