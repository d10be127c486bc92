"""Auxiliary labels and funnel signatures (SimPersona 2.2, appendices D and E).

- engagement: terciles of log(1 + total session duration);
- exploration: terciles of log(1 + search, collection and product-view sessions);
- purchase intensity: 8 x checkout_sessions + 3 x atc_sessions with edges 1.5 and 4.5
  (browse only / interest only / purchase-committed);
- signature (the contrastive funnel gate): 3 purchased, 2 carted, 1 viewed, 0 none.
Tercile edges are fitted on training buyers and reused for everyone else.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

AUX_HEADS: tuple[str, ...] = ("engagement", "exploration", "purchase")
PURCHASE_WEIGHTS = {"checkout_sessions": 8.0, "atc_sessions": 3.0}
PURCHASE_EDGES = (1.5, 4.5)


def aux_scores(buyers: pd.DataFrame) -> dict[str, np.ndarray]:
    """The three scores the auxiliary bins are cut from."""
    exploration = buyers[["search_sessions", "collection_sessions", "product_view_sessions"]].sum(
        axis=1
    )
    purchase = sum(w * buyers[c].to_numpy(dtype=float) for c, w in PURCHASE_WEIGHTS.items())
    return {
        "engagement": np.log1p(buyers["total_duration_s"].to_numpy(dtype=float)),
        "exploration": np.log1p(exploration.to_numpy(dtype=float)),
        "purchase": np.asarray(purchase, dtype=float),
    }


def fit_aux_edges(buyers: pd.DataFrame) -> dict[str, list[float]]:
    """Bin edges: terciles for engagement and exploration, the fixed 1.5 / 4.5 for purchase."""
    scores = aux_scores(buyers)
    edges = {
        h: np.quantile(scores[h], [1 / 3, 2 / 3]).tolist() for h in ("engagement", "exploration")
    }
    edges["purchase"] = list(PURCHASE_EDGES)
    return edges


def aux_labels(buyers: pd.DataFrame, edges: dict[str, list[float]]) -> np.ndarray:
    """(n, 3) int bins 0 low / 1 medium / 2 high, columns in AUX_HEADS order."""
    scores = aux_scores(buyers)
    return np.stack([np.digitize(scores[h], edges[h], right=True) for h in AUX_HEADS], axis=1)


def funnel_signature(buyers: pd.DataFrame) -> np.ndarray:
    """Highest interaction level: 3 purchase, 2 add to cart, 1 product view, 0 none."""
    return np.select(
        [
            buyers["purchase_sessions"] > 0,
            buyers["atc_sessions"] > 0,
            buyers["total_product_views"] > 0,
        ],
        [3, 2, 1],
        default=0,
    )
