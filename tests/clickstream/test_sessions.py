from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from persona_shoppers.clickstream.sessions import SESSION_COLUMNS, build_sessions, sessionise
from persona_shoppers.clickstream.validation import validate_events

from ._frames import collections, products, raw_events

T0 = datetime(2026, 3, 14, 10, 0, tzinfo=UTC)


def _events(rows):
    """Accepted, enriched (not yet sessionised) events from partial rows."""
    full = [{"shop_id": "s1", "buyer_id": "b1", "event_type": "page_view", **row} for row in rows]
    for row in full:
        row["ts"] = row["ts"].isoformat()
    result = validate_events(raw_events(full), products(), collections())
    assert result.quarantine.height == 0
    return result.accepted


def _ids(events):
    return dict(zip(events["source_row"], events["session_id"], strict=True))


@pytest.mark.parametrize(
    ("gap", "same_session"),
    [(timedelta(minutes=30), False), (timedelta(minutes=29, seconds=59), True)],
)
def test_gap_of_exactly_the_timeout_starts_a_new_session(gap, same_session):
    out = sessionise(_events([{"ts": T0}, {"ts": T0 + gap}]), 30)
    ids = _ids(out)
    assert ids[0] == "b1-s1"
    assert ids[1] == ("b1-s1" if same_session else "b1-s2")


def test_unsorted_input_gives_the_sorted_result():
    rows = [{"ts": T0 + timedelta(minutes=m)} for m in (0, 10, 45, 50, 200, 201)]
    shuffled = [rows[i] for i in (4, 1, 5, 0, 3, 2)]
    a = sessionise(_events(rows), 30)
    b = sessionise(_events(shuffled), 30)
    assert a.drop("source_row").equals(b.drop("source_row"))
    assert a["session_id"].to_list() == ["b1-s1", "b1-s1", "b1-s2", "b1-s2", "b1-s3", "b1-s3"]
    assert b["ts"].is_sorted()


def test_one_buyer_in_two_shops_gets_sessions_per_shop():
    rows = [
        {"shop_id": "s1", "ts": T0},
        {"shop_id": "s2", "ts": T0 + timedelta(minutes=5)},
        {"shop_id": "s1", "ts": T0 + timedelta(minutes=10)},
        {"shop_id": "s2", "ts": T0 + timedelta(hours=2)},
    ]
    out = sessionise(_events(rows), 30)
    got = {(s, r): sid for s, r, sid in out.select("shop_id", "source_row", "session_id").rows()}
    assert got == {("s1", 0): "b1-s1", ("s1", 2): "b1-s1", ("s2", 1): "b1-s1", ("s2", 3): "b1-s2"}
    sessions = build_sessions(out)
    assert sessions.select("shop_id", "session_id", "n_events").rows() == [
        ("s1", "b1-s1", 2),
        ("s2", "b1-s1", 1),
        ("s2", "b1-s2", 1),
    ]


def test_existing_session_ids_are_kept():
    rows = [
        {"ts": T0, "session_id": "web-9"},
        {"ts": T0 + timedelta(hours=5), "session_id": "web-9"},  # far apart, still kept
        {"ts": T0 + timedelta(minutes=1)},
        {"ts": T0 + timedelta(minutes=50)},
    ]
    out = sessionise(_events(rows), 30)
    assert _ids(out) == {0: "web-9", 1: "web-9", 2: "b1-s1", 3: "b1-s2"}
    sessions = build_sessions(out)
    web = sessions.filter(pl.col("session_id") == "web-9")
    assert web["n_events"].item() == 2 and web["duration_s"].item() == 5 * 3600.0


def test_build_sessions_counts_flags_values_and_lists():
    rows = [
        {"ts": T0, "event_type": "search", "query": "trail shoes"},
        {"ts": T0 + timedelta(minutes=1), "event_type": "collection_view", "collection_id": "c1"},
        {"ts": T0 + timedelta(minutes=2), "event_type": "product_view", "product_id": "p2"},
        {"ts": T0 + timedelta(minutes=3), "event_type": "product_view", "product_id": "p1"},
        {
            "ts": T0 + timedelta(minutes=4),
            "event_type": "add_to_cart",
            "product_id": "p1",
            "quantity": 2,
            "price": 10.0,
        },
        {"ts": T0 + timedelta(minutes=5), "event_type": "add_to_cart", "product_id": "p2"},
        {"ts": T0 + timedelta(minutes=6), "event_type": "remove_from_cart", "product_id": "p2"},
        {"ts": T0 + timedelta(minutes=7), "event_type": "checkout_start"},
        {
            "ts": T0 + timedelta(minutes=8),
            "event_type": "purchase",
            "product_id": "p1",
            "quantity": 2,
            "price": 9.0,
        },
        {"ts": T0 + timedelta(minutes=9)},  # page_view
    ]
    sessions = build_sessions(sessionise(_events(rows[::-1]), 30))
    assert sessions.columns == list(SESSION_COLUMNS)
    s = sessions.row(0, named=True)
    assert s["session_start"] == T0 and s["duration_s"] == 540.0 and s["n_events"] == 10
    assert [
        s[c]
        for c in (
            "n_page_views",
            "n_collection_views",
            "n_product_views",
            "n_searches",
            "n_add_to_cart",
            "n_remove_from_cart",
            "n_checkout_starts",
            "n_purchases",
        )
    ] == [1, 1, 2, 1, 2, 1, 1, 1]
    assert all(
        s[f]
        for f in (
            "has_product_view",
            "has_search",
            "has_collection_view",
            "has_add_to_cart",
            "has_checkout",
            "has_purchase",
        )
    )
    assert s["cart_value"] == 2 * 10.0 + 1 * 5.0  # second item: catalog price, quantity 1
    assert s["order_value"] == 18.0
    assert s["queries"] == ["trail shoes"]
    assert s["viewed_product_ids"] == ["p2", "p1"]
    assert s["viewed_titles"] == ["Rain Shell", "Trail Runner"]
    assert s["carted_product_ids"] == ["p1", "p2"]
    assert s["carted_titles"] == ["Trail Runner", "Rain Shell"]
    assert s["purchased_product_ids"] == ["p1"] and s["purchased_titles"] == ["Trail Runner"]
    assert s["collection_titles"] == ["Trail"]


def test_sessions_sorted_and_empty_lists():
    rows = [{"buyer_id": "b2", "ts": T0}, {"ts": T0 + timedelta(hours=3)}, {"ts": T0}]
    sessions = build_sessions(sessionise(_events(rows), 30))
    assert sessions.select("buyer_id", "session_id").rows() == [
        ("b1", "b1-s1"),
        ("b1", "b1-s2"),
        ("b2", "b2-s1"),
    ]
    assert sessions["queries"].to_list() == [[], [], []]
    assert not sessions["has_purchase"].any() and sessions["cart_value"].to_list() == [0.0] * 3
