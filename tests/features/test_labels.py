"""Auxiliary labels (SimPersona 2.2, appendix E) and the funnel signature."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from persona_shoppers.features.labels import (
    AUX_HEADS,
    aux_labels,
    aux_scores,
    fit_aux_edges,
    funnel_signature,
)

# Engagement log1p(duration) = 0 1 2 3 4 5; exploration log1p(sessions) = k log 2, k = 0..5;
# purchase 8 checkout + 3 atc = 0 3 6 8 11 16.
HAND = pd.DataFrame(
    {
        "total_duration_s": np.expm1(np.arange(6.0)),
        "search_sessions": [0, 1, 1, 3, 5, 11],
        "collection_sessions": [0, 0, 1, 2, 5, 10],
        "product_view_sessions": [0, 0, 1, 2, 5, 10],  # totals 0 1 3 7 15 31
        "checkout_sessions": [0, 0, 0, 1, 1, 2],
        "atc_sessions": [0, 1, 2, 0, 1, 0],
    }
)


def test_scores_by_hand():
    scores = aux_scores(HAND)
    np.testing.assert_allclose(scores["engagement"], [0, 1, 2, 3, 4, 5], atol=1e-12)
    np.testing.assert_allclose(scores["exploration"], np.log(2) * np.arange(6), atol=1e-12)
    assert scores["purchase"].tolist() == [0, 3, 6, 8, 11, 16]


def test_tercile_and_fixed_purchase_edges():
    edges = fit_aux_edges(HAND)
    # Quantiles 1/3 and 2/3 of 0..5 (linear): 5/3 and 10/3.
    np.testing.assert_allclose(edges["engagement"], [5 / 3, 10 / 3])
    np.testing.assert_allclose(edges["exploration"], [5 / 3 * np.log(2), 10 / 3 * np.log(2)])
    assert edges["purchase"] == [1.5, 4.5]


def test_bins_by_hand():
    labels = aux_labels(HAND, fit_aux_edges(HAND))
    assert AUX_HEADS == ("engagement", "exploration", "purchase")
    assert labels.shape == (6, 3)
    assert labels[:, 0].tolist() == [0, 0, 1, 1, 2, 2]
    assert labels[:, 1].tolist() == [0, 0, 1, 1, 2, 2]
    # 0 -> low; 3 (one atc session) -> medium; 6, 8, 11, 16 -> high (above 4.5).
    assert labels[:, 2].tolist() == [0, 1, 2, 2, 2, 2]


def test_edges_fitted_once_are_reused_for_other_buyers():
    edges = fit_aux_edges(HAND)
    other = pd.DataFrame(
        {
            "total_duration_s": [np.expm1(10.0), 0.0],
            "search_sessions": [100, 0],
            "collection_sessions": [0, 0],
            "product_view_sessions": [0, 0],
            "checkout_sessions": [0, 0],
            "atc_sessions": [0, 0],
        }
    )
    # Fitted on `other` alone the terciles would differ; with the fitted edges: high and low.
    assert aux_labels(other, edges).tolist() == [[2, 2, 0], [0, 0, 0]]


def test_funnel_signature_cascade():
    buyers = pd.DataFrame(
        {
            "purchase_sessions": [1, 0, 0, 0, 1, 2],
            "atc_sessions": [0, 2, 0, 0, 1, 0],
            "total_product_views": [0, 5, 3, 0, 1, 0],
        }
    )
    assert funnel_signature(buyers).tolist() == [3, 2, 1, 0, 3, 3]


@pytest.mark.parametrize("column", ["total_duration_s", "atc_sessions"])
def test_missing_columns_raise(column):
    with pytest.raises(KeyError):
        aux_scores(HAND.drop(columns=column))
