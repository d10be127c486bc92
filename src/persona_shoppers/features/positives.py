"""Contrastive positives through SimPersona's three gates (section 2.2, appendix D).

1. funnel gate: only buyers with the same funnel signature can pair;
2. product filter: the top M peers by cosine similarity of product-embedding channels;
3. behavioural filter: of those, the top F by Euclidean distance over exploration and
   engagement features (product views, search sessions, collection sessions, duration).
Vectorised per signature group in row chunks (matrix products and argpartition).
"""

from __future__ import annotations

import numpy as np


def contrastive_positives(
    signature: np.ndarray,
    product_vectors: np.ndarray,
    behaviour_vectors: np.ndarray,
    top_m: int = 10,
    top_f: int = 3,
    chunk: int = 2048,
) -> np.ndarray:
    """(n, top_f) row indices of each buyer's positives, nearest first, -1 where fewer exist."""
    if top_m <= top_f:
        raise ValueError(f"contrastive positives need M > F, got M={top_m}, F={top_f}")
    n = len(signature)
    out = np.full((n, top_f), -1, dtype=np.int64)
    norms = np.linalg.norm(product_vectors, axis=1, keepdims=True)
    unit = np.divide(product_vectors, norms, out=np.zeros_like(product_vectors), where=norms > 0)
    for value in np.unique(signature):
        members = np.flatnonzero(signature == value)
        if len(members) < 2:
            continue
        m = min(top_m, len(members) - 1)
        f = min(top_f, m)
        group_unit = unit[members]
        group_behaviour = behaviour_vectors[members]
        for lo in range(0, len(members), chunk):
            rows = np.arange(lo, min(lo + chunk, len(members)))
            similarity = group_unit[rows] @ group_unit.T
            similarity[np.arange(len(rows)), rows] = -np.inf  # never oneself
            candidates = np.argpartition(-similarity, m - 1, axis=1)[:, :m]
            distance = np.linalg.norm(
                group_behaviour[candidates] - group_behaviour[rows][:, None, :], axis=2
            )
            # Stable tie-break: by distance, then by product similarity rank.
            order = np.lexsort(
                (-np.take_along_axis(similarity, candidates, axis=1), distance), axis=1
            )
            best = np.take_along_axis(candidates, order[:, :f], axis=1)
            out[members[rows], :f] = members[best]
    return out
