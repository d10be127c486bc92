from datetime import UTC, datetime

import pytest

from persona_shoppers.clickstream.buyers import (
    BEHAVIOURAL_FEATURES,
    FEATURE_GROUPS,
    build_buyers,
)
from persona_shoppers.clickstream.sessions import build_sessions, sessionise
from persona_shoppers.clickstream.validation import validate_events

from ._frames import collections, products, raw_events


def _at(day, hour, minute=0):
    return datetime(2026, 3, day, hour, minute, tzinfo=UTC).isoformat()


def _buyers(rows, weights=None):
    raw = raw_events([{"shop_id": "s1", **row} for row in rows])
    accepted = validate_events(raw, products(), collections()).accepted
    events = sessionise(accepted, 30)
    return build_buyers(events, build_sessions(events), weights)


# buyer x: 3 sessions over 2 days; buyer y: a session across midnight, then a bounce
X_Y_ROWS = [
    # x, session 1 (2026-03-01 10:00-10:20): full funnel
    {"buyer_id": "x", "ts": _at(1, 10), "event_type": "page_view"},
    {"buyer_id": "x", "ts": _at(1, 10, 5), "event_type": "product_view", "product_id": "p1"},
    {
        "buyer_id": "x",
        "ts": _at(1, 10, 10),
        "event_type": "add_to_cart",
        "product_id": "p1",
        "quantity": 2,
        "price": 10.0,
    },
    {"buyer_id": "x", "ts": _at(1, 10, 15), "event_type": "checkout_start"},
    {
        "buyer_id": "x",
        "ts": _at(1, 10, 20),
        "event_type": "purchase",
        "product_id": "p1",
        "quantity": 2,
        "price": 10.0,
    },
    # x, session 2 (2026-03-01 12:00-12:02): search and browse only
    {"buyer_id": "x", "ts": _at(1, 12), "event_type": "search", "query": "shoes"},
    {"buyer_id": "x", "ts": _at(1, 12, 1), "event_type": "product_view", "product_id": "p2"},
    {"buyer_id": "x", "ts": _at(1, 12, 2), "event_type": "product_view", "product_id": "p1"},
    # x, session 3 (2026-03-03 09:00-09:10): collection, cart 1 x 5.0
    {"buyer_id": "x", "ts": _at(3, 9), "event_type": "collection_view", "collection_id": "c1"},
    {
        "buyer_id": "x",
        "ts": _at(3, 9, 10),
        "event_type": "add_to_cart",
        "product_id": "p2",
        "price": 5.0,
    },
    # y, session 1 (2026-03-02 23:50 - 2026-03-03 00:10)
    {"buyer_id": "y", "ts": _at(2, 23, 50), "event_type": "product_view", "product_id": "p1"},
    {"buyer_id": "y", "ts": _at(3, 0, 10), "event_type": "product_view", "product_id": "p1"},
    # y, session 2 (2026-03-05 08:00): one page view
    {"buyer_id": "y", "ts": _at(5, 8), "event_type": "page_view"},
]
# written by hand from the rows above
EXPECTED = {
    "x": {
        "n_sessions": 3,
        "active_days": 2,
        "product_view_sessions": 2,
        "atc_sessions": 2,
        "checkout_sessions": 1,
        "purchase_sessions": 1,
        "search_sessions": 1,
        "collection_sessions": 1,
        "total_duration_s": 1200.0 + 120.0 + 600.0,
        "total_product_views": 3,
        "atc_rate": 2 / 3,
        "checkout_rate": 1 / 3,
        "browse_only_rate": 1 / 3,
        "intent_strength": 19 / 22,
        "avg_cart_value": 12.5,
        "avg_order_value": 20.0,
    },
    "y": {
        "n_sessions": 2,
        "active_days": 3,
        "product_view_sessions": 1,
        "atc_sessions": 0,
        "checkout_sessions": 0,
        "purchase_sessions": 0,
        "search_sessions": 0,
        "collection_sessions": 0,
        "total_duration_s": 1200.0,
        "total_product_views": 2,
        "atc_rate": 0.0,
        "checkout_rate": 0.0,
        "browse_only_rate": 1.0,
        "intent_strength": 0.0,
        "avg_cart_value": 0.0,
        "avg_order_value": 0.0,
    },
}


def test_feature_list():
    assert len(BEHAVIOURAL_FEATURES) == 16
    assert BEHAVIOURAL_FEATURES[:2] == ["n_sessions", "active_days"]
    assert BEHAVIOURAL_FEATURES[-3:] == ["intent_strength", "avg_cart_value", "avg_order_value"]
    assert [len(v) for v in FEATURE_GROUPS.values()] == [8, 2, 3, 1, 2]


def test_sixteen_features_by_hand():
    buyers = _buyers(X_Y_ROWS)
    assert buyers["buyer_id"].to_list() == ["x", "y"]
    for row in buyers.iter_rows(named=True):
        expected = EXPECTED[row["buyer_id"]]
        for name in BEHAVIOURAL_FEATURES:
            assert row[name] == pytest.approx(expected[name]), (row["buyer_id"], name)
    assert buyers["stratum"].to_list() == ["A", "D"]
    x = buyers.row(0, named=True)
    assert x["first_seen"] == datetime(2026, 3, 1, 10, tzinfo=UTC)
    assert x["last_seen"] == datetime(2026, 3, 3, 9, 10, tzinfo=UTC)


def test_intent_weights_are_parameters():
    buyers = _buyers(X_Y_ROWS, {"atc": 1, "checkout": 1, "purchase": 1})
    assert buyers["intent_strength"][0] == pytest.approx(4 / 7)


def _session(buyer, day, *types):
    rows = []
    for i, kind in enumerate(types):
        row = {"buyer_id": buyer, "ts": _at(day, 10, i), "event_type": kind}
        if kind in ("product_view", "add_to_cart", "purchase", "remove_from_cart"):
            row["product_id"] = "p1"
        if kind == "search":
            row["query"] = "q"
        rows.append(row)
    return rows


@pytest.mark.parametrize(
    ("sessions", "stratum"),
    [
        ([("product_view", "add_to_cart", "checkout_start", "purchase")], "A"),
        ([("purchase",)], "A"),  # purchase without cart or checkout still A
        ([("product_view",), ("checkout_start",), ("add_to_cart",)], "B"),
        ([("add_to_cart", "remove_from_cart")], "C"),
        ([("page_view",), ("product_view",)], "D"),
        ([("page_view", "search"), ("collection_view",)], "E"),
        ([("page_view",)], "E"),
    ],
)
def test_stratum_cascade(sessions, stratum):
    rows = []
    for day, types in enumerate(sessions, start=1):
        session = _session("b", day, *types)
        for row in session:
            if row["event_type"] == "collection_view":
                row["collection_id"] = "c1"
        rows += session
    assert _buyers(rows)["stratum"].to_list() == [stratum]


def test_one_row_per_shop_and_buyer_sorted():
    rows = (
        _session("b", 1, "product_view")
        + [{**r, "shop_id": "s2"} for r in _session("b", 2, "purchase")]
        + _session("a", 1, "page_view")
    )
    raw = raw_events([{"shop_id": "s1", **r} for r in rows])
    events = sessionise(validate_events(raw, products(), collections()).accepted)
    buyers = build_buyers(events, build_sessions(events))
    assert buyers.select("shop_id", "buyer_id", "stratum").rows() == [
        ("s1", "a", "E"),
        ("s1", "b", "D"),
        ("s2", "b", "A"),
    ]
