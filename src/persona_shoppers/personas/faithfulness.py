"""Do text personas say something true about their buyer? Three checks, per field, each with
its n: the spread of values (a constant field says nothing), agreement with the buyer's own
behaviour against personas shuffled within shops (permutation p-value), and agreement with
the planted buyer types where a generator planted them. See docs/persona_mining.md,
"Faithfulness".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from persona_shoppers.personas.text_personas import INTERESTS, PREFERENCE_FIELDS, PROFILE_FIELDS

# The persona field each planted buyer-type parameter should order (higher -> more "high").
PLANTED: dict[str, str] = {
    "price_sensitivity": "price_sensitivity",
    "brand_reliance": "brand_loyalty",
}


def field_values(personas: pd.DataFrame) -> dict[str, list[str]]:
    """Every enumerated field's value per persona (profile then preferences)."""
    out: dict[str, list[str]] = {}
    for part, fields in (("profile", PROFILE_FIELDS), ("preferences", PREFERENCE_FIELDS)):
        for field in fields:
            out[field] = [p[field] for p in personas[part]]
    return out


def value_spread(personas: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Per field: distinct values, the most common one and its share of personas."""
    out = {}
    for field, values in field_values(personas).items():
        counts = pd.Series(values).value_counts()
        out[field] = {
            "distinct": int(len(counts)),
            "top_value": str(counts.index[0]),
            "top_share": float(counts.iloc[0] / len(values)),
        }
    return out


def _agreement_matrix(stated: Sequence, truth: Sequence, field: str) -> np.ndarray:
    """``[j, i]``: how persona j's stated ``field`` agrees with buyer i's behaviour, 1/0 (a level
    equals the implied one) or the share of stated interests among the viewed categories."""
    if field == INTERESTS:
        seen = [set(t) for t in truth]
        return np.array(
            [[np.mean([c in v for c in s]) if len(s) else 0.0 for v in seen] for s in stated]
        )
    return np.array([[s == t for t in truth] for s in stated], dtype=float)


def shop_permutations(shops: Sequence[str], draws: int, seed: int) -> np.ndarray:
    """``draws`` x n orders, each a seeded permutation of positions within the same shop."""
    rng = np.random.default_rng(seed)
    shops = np.asarray(shops)
    orders = np.tile(np.arange(len(shops)), (draws, 1))
    for shop in np.unique(shops):
        rows = np.flatnonzero(shops == shop)
        orders[:, rows] = rows[rng.permuted(np.tile(np.arange(len(rows)), (draws, 1)), axis=1)]
    return orders


def behaviour_agreement(
    stated: Sequence, truth: Sequence, shops: Sequence[str], field: str, draws: int, seed: int
) -> dict[str, float]:
    """Agreement of each buyer's stated ``field`` with its behaviour (``truth``: implied levels,
    or viewed categories for interests), against the same personas shuffled within shops:
    own, shuffled (mean over ``draws`` permutations), their difference, the one-sided
    permutation p-value and n (buyers whose behaviour says something)."""
    known = [i for i, t in enumerate(truth) if t is not None and (field != INTERESTS or len(t))]
    stated = [stated[i] for i in known]
    truth = [truth[i] for i in known]
    shops = [shops[i] for i in known]
    if len(known) < 2:
        return {"n": float(len(known))}
    agreement = _agreement_matrix(stated, truth, field)
    own = float(np.diag(agreement).mean())
    orders = shop_permutations(shops, draws, seed)
    null = agreement[orders, np.arange(len(known))].mean(axis=1)
    return {
        "n": float(len(known)),
        "own": own,
        "shuffled": float(null.mean()),
        "gain": own - float(null.mean()),
        "p_value": float((1 + (null >= own - 1e-12).sum()) / (draws + 1)),
    }


def evidence_following(stated: Sequence[str], implied: Sequence[str | None]) -> dict[str, float]:
    """How often a persona states the level its own input's evidence implies (the model
    reading its prompt, not a claim about the buyer): the share and n, over the personas whose
    evidence implies a level."""
    pairs = [(s, i) for s, i in zip(stated, implied, strict=True) if i is not None]
    if not pairs:
        return {"n": 0.0}
    return {"n": float(len(pairs)), "share": float(np.mean([s == i for s, i in pairs]))}


def planted_agreement(
    stated: Sequence[str],
    buyer_types: Sequence[str | None],
    planted: Mapping[str, float],
    min_buyers: int = 3,
) -> dict[str, Any]:
    """Does the share of a planted type's buyers whose field is ``high`` follow the type's
    planted parameter? Spearman rho over the types with at least ``min_buyers`` personas,
    with the per-type shares and n."""
    frame = pd.DataFrame({"type": buyer_types, "high": [s == "high" for s in stated]})
    per_type = frame.dropna(subset=["type"]).groupby("type")["high"].agg(["mean", "size"])
    kept = per_type[per_type["size"] >= min_buyers]
    out: dict[str, Any] = {
        "types": {
            t: {"planted": planted[t], "share_high": float(r["mean"]), "n": int(r["size"])}
            for t, r in per_type.iterrows()
        },
        "n_types": int(len(kept)),
    }
    if len(kept) >= 3 and kept["mean"].nunique() > 1:
        rho, p = spearmanr([planted[t] for t in kept.index], kept["mean"])
        out.update({"spearman_rho": float(rho), "spearman_p": float(p)})
    return out
