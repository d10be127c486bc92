"""Shop roles and the training sample (SimPersona section 3.1, appendix C).

Evaluation shops are held out whole. In training shops at most `per_stratum` buyers of each
stratum and `per_shop` buyers per shop are sampled (stratum E dropped), then split into
training and validation rows; everyone else is kept with split "unsampled" so every buyer can
still be featurised and assigned a token later.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def shop_roles(
    shops: list[str], eval_shops: list[str] | None, n_eval: int, seed: int
) -> dict[str, str]:
    """shop_id -> "train" | "eval": the listed evaluation shops, or a seeded draw of n_eval."""
    shops = sorted(shops)
    if len(shops) < 2:
        raise ValueError(
            f"feature_engineering: the data has one shop ({shops}); the evaluation is "
            "shop-disjoint (held-out shops), so it needs at least 2 shops "
            "(docs/bring_your_own_data.md, 'Shops')"
        )
    if eval_shops is None:
        rng = np.random.default_rng(seed)
        eval_shops = rng.choice(shops, size=min(n_eval, len(shops) - 1), replace=False).tolist()
    unknown = sorted(set(eval_shops) - set(shops))
    if unknown:
        raise ValueError(
            f"parameters_feature_engineering: eval_shops {unknown} are not in buyers.shop_id "
            f"({shops[:10]}); list shops of your data, or set eval_shops: null for a seeded "
            "draw of n_eval_shops (docs/bring_your_own_data.md, 'Shops')"
        )
    if set(eval_shops) == set(shops):
        raise ValueError(
            "parameters_feature_engineering: every shop is an eval shop; none left to train on"
        )
    return {shop: "eval" if shop in set(eval_shops) else "train" for shop in shops}


def even_per_shop(buyers: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """At most ``n`` rows of ``buyers``, ``ceil(n / shops)`` per shop where a shop has them,
    seeded, sorted by shop and buyer."""
    per_shop = -(-n // max(buyers["shop_id"].nunique(), 1))
    shuffled = buyers.sample(frac=1.0, random_state=seed)
    chosen = shuffled[shuffled.groupby("shop_id").cumcount() < per_shop]
    return chosen.sort_values(["shop_id", "buyer_id"]).head(n).reset_index(drop=True)


def assign_splits(
    buyers: pd.DataFrame,
    roles: dict[str, str],
    per_shop: int = 1500,
    per_stratum: int = 300,
    drop_strata: tuple[str, ...] = ("E",),
    val_share: float = 0.15,
    seed: int = 0,
) -> pd.DataFrame:
    """(shop_id, buyer_id, stratum, shop_role, split) with split in train/val/unsampled/eval."""
    frame = buyers[["shop_id", "buyer_id", "stratum"]].reset_index(drop=True).copy()
    frame["shop_role"] = frame["shop_id"].map(roles)
    rng = np.random.default_rng(seed)
    frame["_key"] = rng.random(len(frame))
    eligible = (frame["shop_role"] == "train") & ~frame["stratum"].isin(drop_strata)
    candidates = frame[eligible].sort_values(["shop_id", "stratum", "_key"])
    candidates = candidates[candidates.groupby(["shop_id", "stratum"]).cumcount() < per_stratum]
    candidates = candidates.sort_values(["shop_id", "_key"])
    sampled = candidates[candidates.groupby("shop_id").cumcount() < per_shop]
    # Validation rows: the first val_share of each shop's sample in a second random order.
    order = sampled.assign(_val_key=rng.random(len(sampled))).sort_values(["shop_id", "_val_key"])
    rank = order.groupby("shop_id").cumcount()
    size = order.groupby("shop_id")["buyer_id"].transform("size")
    is_val = rank < np.round(val_share * size)
    frame["split"] = np.where(frame["shop_role"] == "eval", "eval", "unsampled")
    frame.loc[order.index, "split"] = np.where(is_val, "val", "train")
    return frame.drop(columns="_key")
