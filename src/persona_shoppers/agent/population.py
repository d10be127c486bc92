"""Agent populations for a shop (``shop_sample``, ``matched``, ``ab_sample``; SimPersona 3.2),
and the simulated session table they produce.

See docs/simulation.md, "Populations (SimPersona 3.2)".
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import polars as pl

from ..clickstream import sessions as session_table
from ..clickstream import validation
from ..contract import EVENT_SCHEMA
from ..personas.text_personas import PREFERENCE_FIELDS, PROFILE_FIELDS
from ..personas.token_format import persona_token
from .prompts import intent_goal
from .rollout import AgentRun


def category_leaf(category: str) -> str:
    """``"Footwear > Ankle Boots"`` -> ``"ankle boots"``: how goals name a category."""
    return str(category).split(">")[-1].strip().lower()


def buyer_top_categories(events: pl.DataFrame) -> pd.DataFrame:
    """Each (shop, buyer)'s most viewed category leaf over all their events (ties: by name)."""
    return (
        events.drop_nulls("category")
        .group_by("shop_id", "buyer_id", "category")
        .len("n")
        .sort(["shop_id", "buyer_id", "n", "category"], descending=[False, False, True, False])
        .group_by("shop_id", "buyer_id", maintain_order=True)
        .first()
        .with_columns(pl.col("category").map_elements(category_leaf, return_dtype=pl.String))
        .select("shop_id", "buyer_id", "category")
        .to_pandas()
    )


def shop_sample_agents(
    counterparts: pd.DataFrame, n_per_shop: int, seed: int, population: str = "shop_sample"
) -> pd.DataFrame:
    """Agents per shop, each standing for one real buyer of the shop drawn uniformly (with
    replacement, seeded) from ``counterparts`` (shop_id, buyer_id, token, stratum, category):
    the agent takes that buyer's token, stratum (its buy / browse intent) and top category
    together, so tokens follow p_s(k) and a token never gets another stratum's intent
    (SimPersona 3.2). Each ``population`` name draws its own agents."""
    rows = []
    stream = zlib.crc32(population.encode())
    for s, (shop, pool) in enumerate(counterparts.groupby("shop_id", sort=True)):
        rng = np.random.default_rng([seed, s, stream])
        pool = pool.sort_values("buyer_id").reset_index(drop=True)
        drawn = pool.iloc[rng.integers(0, len(pool), n_per_shop)]
        for i, row in enumerate(drawn.to_dict("records")):
            rows.append(
                {
                    "agent_id": f"{shop}-{population}-{i:04d}",
                    "population": population,
                    "shop_id": shop,
                    "buyer_id": row["buyer_id"],
                    "token": int(row["token"]),
                    "stratum": str(row["stratum"]),
                    "category": str(row["category"]),
                }
            )
    return pd.DataFrame(rows)


def matched_agents(buyers: pd.DataFrame, tokens_in_use: Sequence[int], seed: int) -> pd.DataFrame:
    """One agent per real buyer (shop_id, buyer_id, token, stratum, category, text_persona),
    plus ``mismatch_token``: another token in use, drawn at random (seeded)."""
    rng = np.random.default_rng(seed)
    pool = np.array(sorted(set(int(t) for t in tokens_in_use)))
    if len(pool) < 2:
        raise ValueError("matched_agents: a mismatched token needs at least 2 tokens in use")
    out = buyers.reset_index(drop=True).copy()
    mismatch = []
    for token in out["token"]:
        others = pool[pool != int(token)]
        mismatch.append(int(rng.choice(others)))
    out.insert(
        0, "agent_id", [f"{s}-{b}" for s, b in zip(out["shop_id"], out["buyer_id"], strict=True)]
    )
    out.insert(1, "population", "matched")
    out["mismatch_token"] = mismatch
    return out


def text_persona_profile(
    profile: Mapping[str, Any] | None, preferences: Mapping[str, Any] | None
) -> str:
    """A PAARS persona (profile + preferences, without the reasoning) as one compact line."""
    parts = []
    for source, keys in ((profile, PROFILE_FIELDS), (preferences, PREFERENCE_FIELDS)):
        for key in keys:
            value = (source or {}).get(key)
            if value not in (None, ""):
                parts.append(f"{key.replace('_', ' ')}: {value}")
    interests = (preferences or {}).get("interests") or []
    if interests:
        parts.append("interests: " + ", ".join(category_leaf(i) for i in interests))
    return "; ".join(parts)


def condition_profile(agent: Mapping[str, Any], profile: str) -> str | None:
    """The profile line of an agent under a condition's profile kind."""
    if profile == "none":
        return None
    if profile == "token":
        return persona_token(agent["token"])
    if profile == "mismatch_token":
        return persona_token(agent["mismatch_token"])
    if profile == "text":
        return agent["text_persona"] or None
    if profile == "text_and_token":
        return f"{persona_token(agent['token'])} {agent['text_persona']}".strip()
    raise ValueError(
        f"unknown profile kind {profile!r}: none, token, mismatch_token, text, text_and_token"
    )


def agent_goal(agent: Mapping[str, Any]) -> str:
    """The intent-bearing goal (SimPersona 2.3 stage 2) of an agent."""
    return intent_goal(agent["category"], agent["stratum"])


# the contract's event columns an agent's events carry (the ids come from the run)
EVENT_FIELDS = tuple(k for k in EVENT_SCHEMA if k not in ("shop_id", "buyer_id", "session_id"))


def runs_to_sessions(
    runs: Sequence[AgentRun],
    labels: pd.DataFrame,
    products: pd.DataFrame,
    collections: pd.DataFrame,
) -> pd.DataFrame:
    """The simulated session table: the columns of ``enriched_sessions`` (built by the same
    code as the human one) plus the columns of ``labels`` (one row per run, same order)."""
    rows = []
    for i, run in enumerate(runs):
        for event in run.events:
            ids = {"shop_id": run.spec.shop_id, "buyer_id": run.spec.agent_id}
            rows.append(
                {**ids, "session_id": f"sim-{i:06d}", **{k: event[k] for k in EVENT_FIELDS}}
            )
    # the raw contract's schema: inferred from the first rows, a column that is null there
    # (quantity before the first cart event) would reject later values
    events = pl.DataFrame(rows, schema=EVENT_SCHEMA, strict=False)
    result = validation.validate_events(
        events, products, collections, price_required_for=(), product_required_for=()
    )
    if result.quarantine.height:
        reasons = result.quarantine["reason"].value_counts().to_dicts()
        raise RuntimeError(f"simulated events break the raw contract: {reasons}")
    table = session_table.build_sessions(result.accepted).to_pandas()
    order = {f"sim-{i:06d}": i for i in range(len(runs))}
    table = table.sort_values("session_id", key=lambda s: s.map(order)).reset_index(drop=True)
    if len(table) != len(runs):
        raise RuntimeError(f"{len(runs)} runs gave {len(table)} sessions")
    return pd.concat([table, labels.reset_index(drop=True)], axis=1)
