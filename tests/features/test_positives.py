"""Contrastive positives through the three gates (SimPersona 2.2, appendix D)."""

from __future__ import annotations

import numpy as np
import pytest

from persona_shoppers.features.positives import contrastive_positives

# A hand-built set: (signature, product angle in degrees, product norm, behaviour).
# Cosine only looks at the angle; the norms differ to show it is not a dot product.
HAND = [
    (1, 0, 1.0, 0.0),  # 0
    (1, 10, 2.0, 5.0),  # 1
    (1, 20, 0.5, 1.0),  # 2
    (1, 30, 3.0, 2.0),  # 3
    (1, 80, 10.0, 0.1),  # 4
    (1, 90, 1.0, 0.2),  # 5
    (2, 0, 1.0, 0.0),  # 6: same product and behaviour as 0, other signature
    (2, 45, 1.0, 3.0),  # 7
    (3, 0, 1.0, 0.0),  # 8: alone in its signature
]
# top_m = 3, top_f = 2, worked out by hand:
#  0: product top 3 {1, 2, 3}; behaviour distances 5, 1, 2 -> [2, 3] (4 and 5 are closer in
#     behaviour but fail the product gate; 6 and 8 are identical but fail the funnel gate)
#  1: top 3 {0, 2, 3}; distances 5, 4, 3 -> [3, 2]
#  2: top 3 {1, 3, 0}; distances 4, 1, 1 -> tie between 3 and 0 broken by product
#     similarity (3 is 10 degrees away, 0 is 20) -> [3, 0]
#  3: top 3 {2, 1, 0}; distances 1, 3, 2 -> [2, 0]
#  4: top 3 {5, 3, 2}; distances 0.1, 1.9, 0.9 -> [5, 2]
#  5: top 3 {4, 3, 2}; distances 0.1, 1.8, 0.8 -> [4, 2]
#  6, 7: a pair: M = min(3, 1), F = 1 -> [7, -1] and [6, -1]
#  8: a group of one -> [-1, -1]
EXPECTED = [[2, 3], [3, 2], [3, 0], [2, 0], [5, 2], [4, 2], [7, -1], [6, -1], [-1, -1]]


def _hand():
    signature = np.array([s for s, _, _, _ in HAND])
    angle = np.deg2rad([a for _, a, _, _ in HAND])
    norm = np.array([n for _, _, n, _ in HAND])
    products = np.stack([np.cos(angle), np.sin(angle)], axis=1) * norm[:, None]
    behaviour = np.array([[b] for _, _, _, b in HAND])
    return signature, products, behaviour


def test_hand_built_positives():
    out = contrastive_positives(*_hand(), top_m=3, top_f=2)
    assert out.dtype == np.int64
    assert out.tolist() == EXPECTED


def test_chunking_does_not_change_the_result():
    assert contrastive_positives(*_hand(), top_m=3, top_f=2, chunk=2).tolist() == EXPECTED


@pytest.mark.parametrize(("m", "f"), [(3, 3), (2, 3)])
def test_m_must_exceed_f(m, f):
    with pytest.raises(ValueError, match="M > F"):
        contrastive_positives(*_hand(), top_m=m, top_f=f)


def test_a_group_of_one_gets_minus_one():
    signature = np.array([0, 1, 1, 1, 1])
    rng = np.random.default_rng(0)
    out = contrastive_positives(signature, rng.normal(size=(5, 4)), rng.normal(size=(5, 2)), 3, 2)
    assert out[0].tolist() == [-1, -1]
    assert (out[1:] >= 1).all()


def test_random_set_respects_all_three_gates():
    rng = np.random.default_rng(7)
    n, top_m, top_f = 300, 10, 3
    signature = rng.integers(1, 4, size=n)
    products = rng.normal(size=(n, 5))
    behaviour = rng.normal(size=(n, 4))
    out = contrastive_positives(signature, products, behaviour, top_m, top_f, chunk=64)
    unit = products / np.linalg.norm(products, axis=1, keepdims=True)
    for i in range(n):
        peers = np.flatnonzero((signature == signature[i]) & (np.arange(n) != i))
        positives = out[i]
        assert (positives >= 0).all() and i not in positives
        # 1. funnel gate
        assert (signature[positives] == signature[i]).all()
        # 2. product gate: among the top M peers by cosine similarity
        cosine = unit[peers] @ unit[i]
        top = peers[np.argsort(-cosine)[:top_m]]
        assert set(positives) <= set(top)
        # 3. behavioural gate: the F nearest of those, nearest first
        distance = np.linalg.norm(behaviour[top] - behaviour[i], axis=1)
        assert positives.tolist() == top[np.argsort(distance)[:top_f]].tolist()
