"""What persona tokens mean and how well a shop's token mix recovers its population.

- persona cards: per token its size, auxiliary-head bins, stratum profile, raw feature
  centroid and top product categories (computed from training-shop buyers);
- population recovery (SimPersona appendix B): a shop's stratum mix predicted from its token
  mix (eq. 5) against the real mix (Jensen-Shannon divergence), and its mean raw feature
  profile reconstructed from token centroids (eq. 6) against the real one (R^2 across shops).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from persona_shoppers.clickstream.buyers import BEHAVIOURAL_FEATURES, PERSONA_STRATA
from persona_shoppers.features.labels import AUX_HEADS
from persona_shoppers.metrics.distributions import (
    centroids_from_assignments,
    js_divergence_rows,
    predicted_mix,
    profiles_from_assignments,
    r_squared,
    token_distribution,
)
from persona_shoppers.personas.token_format import persona_token

STRATA = PERSONA_STRATA
BIN_NAMES = ("low", "medium", "high")


def shop_distributions(assignments: pd.DataFrame, k: int) -> pd.DataFrame:
    """p_s(k) in long form: shop_id, shop_role, token, n_buyers, share (tokens with buyers)."""
    counts = assignments.groupby(["shop_id", "token"]).size().rename("n_buyers").reset_index()
    counts["share"] = counts["n_buyers"] / counts.groupby("shop_id")["n_buyers"].transform("sum")
    roles = assignments.drop_duplicates("shop_id").set_index("shop_id")["shop_role"]
    counts.insert(1, "shop_role", counts["shop_id"].map(roles))
    if (counts["token"] >= k).any() or (counts["token"] < 0).any():
        raise ValueError(f"persona_assignments: token outside [0, {k})")
    return counts.sort_values(["shop_id", "token"], ignore_index=True)


def persona_cards(
    members: pd.DataFrame, categories: pd.DataFrame, k: int, top_categories: int = 3
) -> list[dict]:
    """One card per token from its member buyers.

    ``members``: one row per buyer with token, stratum, the 16 raw features and the
    ``<head>_bin`` columns; ``categories``: (token, category, n) product-view counts.
    """
    cards = []
    by_token = members.groupby("token")
    top = (
        categories.sort_values(["token", "n", "category"], ascending=[True, False, True])
        .groupby("token")
        .head(top_categories)
    )
    top_by_token = top.groupby("token")["category"].apply(list).to_dict()
    for token in range(k):
        card: dict = {"token": token, "persona": persona_token(token), "n_buyers": 0}
        if token in by_token.groups:
            group = by_token.get_group(token)
            card["n_buyers"] = len(group)
            strata = group["stratum"].value_counts(normalize=True)
            card["strata"] = {s: round(float(strata.get(s, 0.0)), 4) for s in (*STRATA, "E")}
            card["bins"] = {}
            for head in AUX_HEADS:
                shares = group[f"{head}_bin"].value_counts(normalize=True)
                card["bins"][head] = {
                    "label": BIN_NAMES[int(shares.idxmax())],
                    "shares": {BIN_NAMES[b]: round(float(shares.get(b, 0.0)), 4) for b in range(3)},
                }
            card["centroid"] = {f: round(float(group[f].mean()), 4) for f in BEHAVIOURAL_FEATURES}
            card["top_categories"] = top_by_token.get(token, [])
        cards.append(card)
    return cards


def cards_markdown(cards: list[dict]) -> str:
    """A human-readable table of the used tokens, largest first."""
    used = sorted((c for c in cards if c["n_buyers"]), key=lambda c: -c["n_buyers"])
    lines = [
        "# Persona cards",
        "",
        f"{len(used)} of {len(cards)} tokens hold training-shop buyers. Token k is the LLM token "
        "`<|persona_k|>`. Bins: engagement / exploration / purchase intensity. Centroids are "
        "means over the token's buyers.",
        "",
        "| token | buyers | main stratum | engage / explore / purchase | sessions | ATC rate "
        "| checkout rate | intent | avg order $ | top categories |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in used:
        main = max(c["strata"], key=c["strata"].get)
        bins = " / ".join(c["bins"][h]["label"] for h in AUX_HEADS)
        x = c["centroid"]
        lines.append(
            f"| {c['token']} | {c['n_buyers']} | {main} ({c['strata'][main]:.0%}) | {bins} "
            f"| {x['n_sessions']:.1f} | {x['atc_rate']:.2f} | {x['checkout_rate']:.2f} "
            f"| {x['intent_strength']:.2f} | {x['avg_order_value']:.0f} "
            f"| {', '.join(c['top_categories'])} |"
        )
    return "\n".join(lines) + "\n"


def population_recovery(
    reference: pd.DataFrame, target: pd.DataFrame, k: int, js_threshold: float = 0.10
) -> dict:
    """SimPersona appendix B on the shops of ``target`` with token profiles from ``reference``.

    Both frames hold one row per buyer (strata A-D only) with shop_id, token, stratum and the
    16 raw features. Returns per-shop JS divergences, their mean / median / count below the
    threshold, and per-feature R^2 of eq. 6 across the target shops.
    """
    profiles = profiles_from_assignments(reference["token"], reference["stratum"], k, list(STRATA))
    shops, p_shop = token_distribution(target["token"], target["shop_id"], k)
    predicted = predicted_mix(p_shop, profiles)
    real = (
        pd.crosstab(target["shop_id"], target["stratum"], normalize="index")
        .reindex(index=shops, columns=list(STRATA), fill_value=0.0)
        .to_numpy()
    )
    js = js_divergence_rows(real, predicted)
    features = list(BEHAVIOURAL_FEATURES)
    centroids = centroids_from_assignments(
        reference["token"], reference[features].to_numpy(float), k
    )
    reconstructed = p_shop @ centroids
    actual = target.groupby("shop_id")[features].mean().reindex(shops).to_numpy()
    if len(shops) >= 2:
        r2 = r_squared(actual, reconstructed, columns=features)
    else:  # R^2 across shops needs at least two shops
        r2 = {"per_column": dict.fromkeys(features, float("nan")), "mean": float("nan")}
    return {
        "shops": [str(s) for s in shops],
        "js_per_shop": {str(s): float(v) for s, v in zip(shops, js, strict=True)},
        "js_mean": float(js.mean()),
        "js_median": float(np.median(js)),
        "js_below_threshold": int((js < js_threshold).sum()),
        "js_threshold": js_threshold,
        "real_mix": {
            str(s): dict(zip(STRATA, map(float, r), strict=True))
            for s, r in zip(shops, real, strict=True)
        },
        "predicted_mix": {
            str(s): dict(zip(STRATA, map(float, r), strict=True))
            for s, r in zip(shops, predicted, strict=True)
        },
        "r2_per_feature": r2["per_column"],
        "r2_mean": r2["mean"],
        "store_profiles": {
            "actual": actual.tolist(),
            "reconstructed": reconstructed.tolist(),
            "features": features,
        },
    }
