"""The synthetic generator: determinism, planted truth, meaningful queries, A/B replays."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from persona_shoppers.contract import EVENT_SCHEMA, EVENT_TYPES
from persona_shoppers.storefront import StoreVariant
from persona_shoppers.synthetic import SyntheticConfig, ab_outcomes, generate, planted_buyer_types
from persona_shoppers.synthetic.buyer_types import DEFAULT_BUYER_TYPES, BuyerType
from persona_shoppers.synthetic.generator import relative_effects

CONTROL = StoreVariant()
SMALL = SyntheticConfig(
    seed=7,
    n_shops=3,
    n_eval_shops=1,
    products_per_shop=80,
    buyers_per_shop=300,
    ab_tests=(
        CONTROL.with_changes("price_rise", price_multiplier=1.2),
        CONTROL.with_changes("fewer_results", page_size=3),
    ),
)


@pytest.fixture(scope="module")
def small():
    return generate(SMALL, progress=False)


def test_events_follow_the_raw_contract(small):
    assert small.events.schema == pl.Schema(EVENT_SCHEMA)
    assert set(small.events["event_type"].unique()) == set(EVENT_TYPES)
    assert small.events["ts"].is_sorted()
    products = set(small.products["product_id"])
    assert set(small.events["product_id"].drop_nulls().unique()) <= products
    assert set(small.events["collection_id"].drop_nulls().unique()) <= set(
        small.collections["collection_id"]
    )


def test_same_seed_gives_identical_output(small):
    again = generate(SMALL, progress=False)
    assert again.events.equals(small.events)
    assert again.products.equals(small.products)
    assert again.planted_truth == small.planted_truth
    other = generate(SyntheticConfig(**{**SMALL.__dict__, "seed": 8}), progress=False)
    assert not other.events.equals(small.events)


def test_every_shop_has_its_own_catalog_and_mixture(small):
    truth = small.planted_truth
    assert len(truth["shops"]) == 3
    assert sum(s["role"] == "eval" for s in truth["shops"]) == 1
    assert len(truth["buyer_types"]) >= 10
    titles = small.products.groupby("shop_id")["title"].apply(set)
    assert titles.iloc[0] != titles.iloc[1]
    for shop in truth["shops"]:
        assert sum(shop["mixture"].values()) == pytest.approx(1.0, abs=1e-5)
    mixtures = [tuple(s["mixture"].values()) for s in truth["shops"]]
    assert len(set(mixtures)) == 3


def test_planted_types_cover_every_generated_buyer(small):
    types = planted_buyer_types(small.planted_truth)
    buyers = small.events.select("shop_id", "buyer_id").unique()
    assert len(types) == 3 * 300
    assert buyers.join(pl.from_pandas(types), on=["shop_id", "buyer_id"], how="anti").is_empty()


def test_sessions_are_time_ordered_and_separated_by_more_than_30_minutes(small):
    sessions = (
        small.events.group_by("shop_id", "buyer_id", "session_id")
        .agg(pl.col("ts").min().alias("start"), pl.col("ts").max().alias("end"))
        .sort("shop_id", "buyer_id", "start")
    )
    gaps = sessions.with_columns(
        (pl.col("start") - pl.col("end").shift().over("shop_id", "buyer_id")).alias("gap")
    )["gap"].drop_nulls()
    assert gaps.dt.total_minutes().min() >= 45
    inside = (
        small.events.sort("ts")
        .with_columns(pl.col("ts").diff().over("shop_id", "buyer_id", "session_id").alias("step"))[
            "step"
        ]
        .drop_nulls()
    )
    assert inside.dt.total_minutes().max() < 30


def test_queries_describe_the_product_viewed_next(small):
    """A search is followed by views of products that share words with the query."""
    events = small.events.sort("shop_id", "session_id", "ts")
    pairs = (
        events.with_columns(pl.col("query").forward_fill().over("session_id").alias("last_query"))
        .filter(pl.col("event_type") == "product_view", pl.col("last_query").is_not_null())
        .join(pl.from_pandas(small.products[["product_id", "title", "category"]]), on="product_id")
    )
    hit = [
        any(w in f"{t} {c}".lower().split() for w in q.split())
        for q, t, c in zip(pairs["last_query"], pairs["title"], pairs["category"], strict=True)
    ]
    assert len(hit) > 200
    assert np.mean(hit) > 0.6


def test_buyer_types_behave_as_planted(small):
    """Window shoppers never cart; loyal regulars buy; bouncers rarely view products."""
    types = pl.from_pandas(planted_buyer_types(small.planted_truth))
    per_type = (
        small.events.join(types, on=["shop_id", "buyer_id"])
        .group_by("buyer_type")
        .agg(
            (pl.col("event_type") == "add_to_cart").sum().alias("carts"),
            (pl.col("event_type") == "purchase").sum().alias("purchases"),
            (pl.col("event_type") == "product_view").sum().alias("views"),
            pl.col("session_id").n_unique().alias("sessions"),
        )
        .with_columns((pl.col("views") / pl.col("sessions")).alias("views_per_session"))
    )
    row = {r["buyer_type"]: r for r in per_type.iter_rows(named=True)}
    assert row["window_shopper"]["carts"] == 0
    assert row["loyal_regular"]["purchases"] > 0
    assert row["bouncer"]["views_per_session"] < 0.5 < row["researcher"]["views_per_session"]


def test_ab_tests_replay_the_same_random_numbers(small):
    truth = small.planted_truth
    assert [t["name"] for t in truth["ab_tests"]] == ["price_rise", "fewer_results"]
    # A treatment identical to the control has exactly zero effect: common random numbers.
    identical = SyntheticConfig(**{**SMALL.__dict__, "ab_tests": (CONTROL.with_changes("same"),)})
    effect = ab_outcomes(identical)[0]["pooled"]["all"]["effect"]
    assert all(v == 0.0 for v in effect.values())
    price = truth["ab_tests"][0]["pooled"]["all"]
    assert price["effect"]["conversion_rate"] < 0  # a 20% price rise loses conversions
    assert price["control"] == truth["ab_tests"][1]["pooled"]["all"]["control"]
    # a relative effect on a zero control rate is undefined, not zero
    zero = {"atc_rate": 0.0, "checkout_rate": 0.1, "conversion_rate": 0.0, "revenue_per_session": 1}
    more = {"atc_rate": 0.2, "checkout_rate": 0.2, "conversion_rate": 0.0, "revenue_per_session": 1}
    assert relative_effects(zero, more) == {
        "atc_rate": None,
        "checkout_rate": pytest.approx(1.0),
        "conversion_rate": None,
        "revenue_per_session": 0.0,
    }


def test_buyer_type_validation():
    values = DEFAULT_BUYER_TYPES[0].to_dict() | {"p_direct": 0.9}
    with pytest.raises(ValueError, match="p_search \\+ p_collection \\+ p_direct"):
        BuyerType.from_dict(values)
    with pytest.raises(ValueError, match="unknown buyer type parameters"):
        BuyerType.from_dict(DEFAULT_BUYER_TYPES[0].to_dict() | {"colour": 1})


def test_config_from_kedro_parameters():
    config = SyntheticConfig.from_params(
        {
            "seed": 1,
            "control": {"page_size": 10},
            "ab_tests": [{"name": "t", "price_multiplier": 1.1}],
        }
    )
    assert config.control.page_size == 10
    assert config.ab_tests[0].page_size == 10 and config.ab_tests[0].price_multiplier == 1.1
    assert config.buyer_types == DEFAULT_BUYER_TYPES
