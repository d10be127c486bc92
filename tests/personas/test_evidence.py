"""Evidence of a buyer's events: figures, shop ranks, implied levels and prompt lines."""

from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import polars as pl
import pytest

from persona_shoppers.personas.evidence import (
    buyer_evidence,
    evidence_lines,
    implied_levels,
    option_gloss,
    shop_ranks,
    tercile,
)

PRODUCTS = pd.DataFrame(
    {
        "shop_id": ["s"] * 4,
        "product_id": ["p1", "p2", "p3", "p4"],
        "category": ["Shop > Shoes", "Shop > Shoes", "Shop > Shoes", "Shop > Bags"],
        "brand": ["A", "B", "A", "A"],
        "price": [10.0, 20.0, 30.0, 50.0],
    }
)


def _events(rows):
    start = datetime(2026, 1, 1)
    brands = PRODUCTS.set_index("product_id")
    return pl.DataFrame(
        [
            {
                "shop_id": "s",
                "buyer_id": buyer,
                "session_id": session,
                "ts": start + timedelta(minutes=i),
                "event_type": kind,
                "product_id": product,
                "category": brands.at[product, "category"] if product else None,
                "brand": brands.at[product, "brand"] if product else None,
            }
            for i, (buyer, session, kind, product) in enumerate(rows)
        ]
    )


def test_evidence_figures_prefer_carted_prices():
    events = _events(
        [
            ("b", "x1", "product_view", "p1"),
            ("b", "x1", "product_view", "p1"),
            ("b", "x1", "product_view", "p4"),
            ("b", "x1", "add_to_cart", "p1"),
            ("b", "x2", "search", None),
            ("b", "x2", "purchase", "p1"),
            ("v", "y1", "product_view", "p3"),
        ]
    )
    evidence = buyer_evidence(events, PRODUCTS).set_index("buyer_id")
    b = evidence.loc["b"]
    assert (b["n_sessions"], b["n_views"], b["n_searches"], b["n_carts"], b["n_purchases"]) == (
        2,
        3,
        1,
        1,
        1,
    )
    # carted and bought: p1 twice, the cheapest of three shoes (percentile 1/3)
    assert b["price_level"] == pytest.approx(1 / 3) and b["price_basis"] == "carted"
    assert b["top_brand"] == "A" and b["top_brand_share"] == 1.0
    assert b["categories"] == ["Shop > Bags", "Shop > Shoes"]
    assert b["top_categories"] == ["Shop > Shoes", "Shop > Bags"]
    assert b["top_category_views"] == [2, 1]
    # one view: a price level from it, no brand focus (under MIN_BRAND_VIEWS)
    v = evidence.loc["v"]
    assert v["price_basis"] == "viewed" and v["price_level"] == pytest.approx(1.0)
    assert pd.isna(v["top_brand"]) and pd.isna(v["top_brand_share"])


def test_shop_ranks_count_ties_half_and_keep_price_bases_apart():
    reference = pd.DataFrame(
        {
            "shop_id": ["s"] * 4,
            "price_basis": ["carted", "carted", "carted", "viewed"],
            "price_level": [0.2, 0.4, 0.6, 0.1],
            "top_brand_share": [0.5, 0.5, 1.0, np.nan],
            "n_sessions": [1, 2, 3, 4],
        }
    )
    own = pd.DataFrame(
        {
            "shop_id": ["s", "s", "t"],
            "price_basis": ["carted", "viewed", "carted"],
            "price_level": [0.4, 0.5, 0.4],
            "top_brand_share": [0.5, np.nan, 0.5],
            "n_sessions": [2, 9, 1],
        }
    )
    ranks = shop_ranks(own, reference)
    # 0.4 among carted [0.2, 0.4, 0.6]: one below, one equal -> 1.5/3
    assert ranks["price_level_rank"].iloc[0] == pytest.approx(0.5)
    assert ranks["price_level_rank"].iloc[1] == pytest.approx(1.0)  # above the one viewed
    assert ranks["top_brand_share_rank"].iloc[0] == pytest.approx(1 / 3)  # two ties of three
    assert np.isnan(ranks["top_brand_share_rank"].iloc[1])
    assert ranks["n_sessions_rank"].iloc[1] == 1.0
    assert ranks.iloc[2][["price_level_rank", "n_sessions_rank"]].isna().all()  # no reference


def test_implied_levels_and_their_evidence_words():
    assert [tercile(r) for r in (0.0, 0.33, 0.34, 0.67, 1.0, np.nan)] == [0, 0, 1, 2, 2, None]
    levels = implied_levels(
        {"price_level_rank": 0.1, "top_brand_share_rank": 0.9, "n_sessions_rank": 0.5}
    )
    assert levels == {
        "price_sensitivity": "high",  # a budget buyer
        "brand_reliance": "high",
        "shopping_frequency": "occasional",
    }
    assert implied_levels({"price_level_rank": np.nan})["price_sensitivity"] is None
    assert option_gloss("price_sensitivity", "high") == "budget"
    assert option_gloss("price_sensitivity", "low") == "premium"
    assert option_gloss("brand_reliance", "high") == "one main brand"
    assert option_gloss("income", "high") is None


def test_evidence_lines_say_each_fact_once():
    row = {
        "n_sessions": 3,
        "n_views": 5,
        "n_searches": 2,
        "n_carts": 1,
        "n_purchases": 1,
        "price_level": 0.2,
        "price_basis": "carted",
        "price_level_rank": 0.1,
        "top_brand": "Acme",
        "top_brand_share": 0.6,
        "top_brand_share_rank": 0.8,
        "n_sessions_rank": 0.5,
        "top_categories": ["Shop > Ankle Boots"],
        "top_category_views": [4],
    }
    lines = evidence_lines(row).splitlines()
    assert lines == [
        "- visits: occasional visitor (3 sessions)",
        "- activity: 5 product views, 2 searches, 1 added to cart, 1 purchase",
        "- price level: budget (carted products pricier than 20% of their category; more so "
        "than 10% of this shop's shoppers)",
        "- brands: one main brand (Acme, 60% of views)",
        "- top categories: ankle boots (4 views)",
    ]
    row.update(price_level_rank=np.nan, top_brand=None, top_brand_share_rank=np.nan)
    assert len(evidence_lines(row).splitlines()) == 3
