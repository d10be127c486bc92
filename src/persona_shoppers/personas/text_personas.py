"""PAARS text personas (section 3): an LLM reads a buyer's shopping history and writes a
consumer profile, then shopping preferences, each as schema-validated JSON with its reasoning;
and the check of the personas against what the data can verify.

See docs/persona_mining.md, "Text personas (PAARS)".
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

LEVELS = ["low", "medium", "high"]

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
        "occupation": {"type": "string", "maxLength": 40},
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
            "shopping_frequency": {"type": "string", "enum": ["rare", "occasional", "frequent"]},
            "interests": {
                "type": "array",
                "items": {"type": "string", "enum": categories},
                "maxItems": 3,
            },
        },
        "required": ["reasoning", *PREFERENCE_FIELDS, "interests"],
    }


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
    llm: JsonLLM, buyers: pd.DataFrame, categories: dict[str, list[str]], history_chars: int
) -> pd.DataFrame:
    """The two PAARS prompts for every row of ``buyers`` (shop_id, buyer_id, history_text).

    ``categories`` maps a shop to its product categories (the allowed interests). Returns one
    row per buyer: profile, preferences, reasoning, history, status (ok / failed) and error.
    """
    histories = [text[-history_chars:] for text in buyers["history_text"]]
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


def _tercile_levels(values: np.ndarray, reverse: bool = False) -> np.ndarray:
    """low / medium / high by terciles of ``values`` over the given buyers."""
    edges = np.quantile(values, [1 / 3, 2 / 3])
    level = np.digitize(values, edges, right=True)
    return np.array(LEVELS)[2 - level if reverse else level]


def buyer_evidence(views: pd.DataFrame, products: pd.DataFrame) -> pd.DataFrame:
    """What the data says about each buyer, from its product views.

    ``views``: (shop_id, buyer_id, product_id) one row per view. Returns per buyer: the mean
    price percentile of viewed products within their shop and category, the share of views on
    the most viewed brand, and the set of viewed categories.
    """
    catalog = products[["shop_id", "product_id", "category", "brand", "price"]].copy()
    catalog["price_pct"] = catalog.groupby(["shop_id", "category"])["price"].rank(pct=True)
    seen = views.merge(catalog, on=["shop_id", "product_id"])
    keys = ["shop_id", "buyer_id"]
    brand_share = (
        seen.groupby([*keys, "brand"])
        .size()
        .groupby(level=[0, 1])
        .apply(lambda counts: counts.max() / counts.sum())
    )
    return pd.DataFrame(
        {
            "price_percentile": seen.groupby(keys)["price_pct"].mean(),
            "top_brand_share": brand_share,
            "categories": seen.groupby(keys)["category"].agg(lambda c: sorted(set(c))),
        }
    ).reset_index()


def faithfulness(personas: pd.DataFrame, evidence: pd.DataFrame, seed: int = 0) -> dict[str, float]:
    """Agreement of stated preferences with the data, and the same for shuffled personas.

    - price: stated price sensitivity equals the level implied by the buyer's price
      percentile terciles (cheap products -> high sensitivity);
    - brand: stated brand reliance equals the terciles of the top-brand share;
    - interests: share of stated interests among the categories the buyer viewed.
    The baseline gives each buyer the preferences of another buyer of the same shop (a seeded
    permutation within shops).
    """
    ok = personas[personas["status"] == "ok"].merge(evidence, on=["shop_id", "buyer_id"])
    if len(ok) < 2:
        return {"n": float(len(ok))}
    implied_price = _tercile_levels(ok["price_percentile"].to_numpy(), reverse=True)
    implied_brand = _tercile_levels(ok["top_brand_share"].to_numpy())
    prefs = ok["preferences"].tolist()

    def agreement(order: np.ndarray) -> dict[str, float]:
        stated = [prefs[i] for i in order]
        interests = [
            np.mean([c in seen for c in p["interests"]]) if p["interests"] else 0.0
            for p, seen in zip(stated, ok["categories"], strict=True)
        ]
        return {
            "price": float(
                np.mean(
                    [
                        p["price_sensitivity"] == v
                        for p, v in zip(stated, implied_price, strict=True)
                    ]
                )
            ),
            "brand": float(
                np.mean(
                    [p["brand_reliance"] == v for p, v in zip(stated, implied_brand, strict=True)]
                )
            ),
            "interests": float(np.mean(interests)),
        }

    # Shuffle within each shop, so interests stay drawn from the right catalog.
    rng = np.random.default_rng(seed)
    order = np.arange(len(ok))
    for rows in ok.groupby("shop_id").indices.values():
        order[rows] = rng.permutation(rows)
    own = agreement(np.arange(len(ok)))
    shuffled = agreement(order)
    out = {"n": float(len(ok))}
    out.update({f"{k}_agreement": v for k, v in own.items()})
    out.update({f"{k}_agreement_shuffled": v for k, v in shuffled.items()})
    return out
