from datetime import UTC, datetime

import pandas as pd
import polars as pl
import pytest

from persona_shoppers.clickstream.validation import (
    QUARANTINE_REASONS,
    parse_timestamps,
    quarantine_counts,
    validate_events,
)
from persona_shoppers.contract import EVENT_SCHEMA, SchemaError

from ._frames import collections, products, raw_events

OK = {"shop_id": "s1", "buyer_id": "b1", "ts": "2026-03-14T10:00:00Z"}


def _row(**changes):
    return {**OK, "event_type": "product_view", "product_id": "p1", **changes}


# one corrupted row per reason, in priority order, plus the accepted rows around them
ROWS = [
    _row(),  # 0 accepted
    _row(shop_id=None),  # 1
    _row(buyer_id="  "),  # 2
    _row(ts="not a time"),  # 3
    _row(event_type="wishlist"),  # 4
    _row(event_type="add_to_cart", product_id=None, price=3.0),  # 5
    _row(product_id="p999"),  # 6
    _row(event_type="add_to_cart", product_id="p_noprice"),  # 7 no price, none in catalog
    _row(event_type="purchase", price=-1.0, quantity=1),  # 8
    _row(event_type="search", product_id=None, query=""),  # 9
    _row(event_type="collection_view", product_id=None, collection_id="c999"),  # 10
    _row(),  # 11 exact duplicate of row 0
    _row(event_type="add_to_cart", quantity=2),  # 12 accepted, price from catalog
    _row(shop_id=None, ts="garbage", event_type="nope"),  # 13 first rule wins
    _row(event_type="collection_view", product_id=None, collection_id="c1"),  # 14 accepted
]
EXPECTED = {
    1: "missing_shop_id",
    2: "missing_buyer_id",
    3: "unparsable_timestamp",
    4: "unknown_event_type",
    5: "missing_product_id",
    6: "product_not_in_catalog",
    7: "missing_price",
    8: "negative_price",
    9: "missing_query",
    10: "unknown_collection",
    11: "duplicate",
    13: "missing_shop_id",
}


@pytest.fixture
def result():
    return validate_events(raw_events(ROWS), products(), collections())


def test_each_corrupted_row_gets_its_reason(result):
    got = dict(zip(result.quarantine["source_row"], result.quarantine["reason"], strict=True))
    assert got == EXPECTED
    assert set(EXPECTED.values()) == set(QUARANTINE_REASONS)


def test_nothing_is_lost(result):
    assert result.accepted.height + result.quarantine.height == len(ROWS)
    rows = sorted([*result.accepted["source_row"], *result.quarantine["source_row"]])
    assert rows == list(range(len(ROWS)))


def test_quarantine_keeps_raw_values(result):
    q = result.quarantine
    assert q.columns == [*EVENT_SCHEMA, "source_row", "reason"]
    assert q["source_row"].is_sorted()
    assert q.filter(pl.col("source_row") == 3)["ts"].item() == "not a time"
    assert q.filter(pl.col("source_row") == 8)["price"].item() == -1.0


def test_price_filled_from_catalog_and_flagged(result):
    acc = result.accepted.sort("source_row")
    row = acc.filter(pl.col("source_row") == 12)
    assert row["price"].item() == 12.0 and row["price_from_catalog"].item() is True
    assert acc.filter(pl.col("source_row") == 0)["price_from_catalog"].item() is True
    assert row["title"].item() == "Trail Runner" and row["brand"].item() == "Northwind"
    coll = acc.filter(pl.col("source_row") == 14)
    assert coll["collection_title"].item() == "Trail"
    assert acc["ts"].dtype == pl.Datetime("us", "UTC")


def test_counts_cover_every_reason(result):
    counts = quarantine_counts(result.quarantine)
    assert list(counts) == list(QUARANTINE_REASONS)
    assert counts["missing_shop_id"] == 2 and counts["duplicate"] == 1


def test_rules_follow_parameters():
    rows = [_row(event_type="add_to_cart", product_id="p_noprice"), _row(product_id=None)]
    res = validate_events(
        raw_events(rows), products(), collections(), price_required_for=[], product_required_for=[]
    )
    assert res.quarantine.height == 0 and res.accepted.height == 2


def test_product_must_belong_to_the_shop():
    res = validate_events(
        raw_events([_row(shop_id="s2", product_id="p2")]), products(), collections()
    )
    assert res.quarantine["reason"].to_list() == ["product_not_in_catalog"]


def test_timestamps_as_datetime_and_iso_variants():
    text = [
        "2026-03-14T10:00:00Z",
        "2026-03-14 10:00:00",
        "2026-03-14T12:00:00+02:00",
        "2026-03-14T10:00:00.000+0000",
        "2026-03-14T10:00",
        "nope",
        None,
    ]
    parsed = pl.DataFrame({"ts": text}).select(parse_timestamps("ts"))["ts"].to_list()
    expected = datetime(2026, 3, 14, 10, tzinfo=UTC)
    assert parsed[:5] == [expected] * 5 and parsed[5:] == [None, None]

    frame = raw_events([_row(ts=None)], ts_text=False).with_columns(
        pl.lit(datetime(2026, 3, 14, 12), dtype=pl.Datetime("us")).alias("ts")
    )
    res = validate_events(frame, products(), collections())
    assert res.accepted["ts"].item() == datetime(2026, 3, 14, 12, tzinfo=UTC)
    null_ts = raw_events([_row(ts=None)], ts_text=False)  # ts column all null
    assert validate_events(null_ts, products(), collections()).quarantine["reason"].to_list() == [
        "unparsable_timestamp"
    ]


def test_duplicates_compare_raw_rows_in_input_order():
    rows = [
        _row(ts="2026-03-14T10:00:00Z"),
        _row(ts="2026-03-14T10:00:00+00:00"),
        _row(),
        _row(event_type="search", product_id=None, query="x"),
    ]
    res = validate_events(raw_events(rows[::-1]), products(), collections())
    # reversed: 0 search, 1 "...Z", 2 "...+00:00" (same instant, other text: not a copy),
    # 3 "...Z" again: the later copy (3) is the duplicate, the first (1) is kept
    assert res.quarantine.select("source_row", "reason").rows() == [(3, "duplicate")]
    assert 1 in res.accepted["source_row"].to_list()


def test_session_id_column_may_be_absent():
    frame = raw_events([_row()]).drop("session_id")
    res = validate_events(frame, products(), collections())
    assert res.accepted["session_id"].to_list() == [None]


@pytest.mark.parametrize(
    ("dataset", "column", "events", "prods", "colls"),
    [
        (
            "raw_events",
            "buyer_id",
            lambda: raw_events([_row()]).drop("buyer_id"),
            products,
            collections,
        ),
        (
            "raw_events",
            "price",
            lambda: raw_events([_row()]).with_columns(pl.lit("cheap").alias("price")),
            products,
            collections,
        ),
        (
            "raw_products",
            "title",
            lambda: raw_events([_row()]),
            lambda: products().drop(columns="title"),
            collections,
        ),
        (
            "raw_collections",
            "title",
            lambda: raw_events([_row()]),
            products,
            lambda: collections().drop(columns="title"),
        ),
    ],
)
def test_schema_errors_name_dataset_column_rule(dataset, column, events, prods, colls):
    with pytest.raises(SchemaError) as info:
        validate_events(events(), prods(), colls())
    err = info.value
    assert (err.dataset, err.column) == (dataset, column)
    assert dataset in str(err) and column in str(err) and err.rule in str(err)


def test_accepts_pandas_events_too():
    frame = raw_events([_row()]).to_pandas()
    res = validate_events(pl.from_pandas(frame), products(), pd.DataFrame(collections()))
    assert res.accepted.height == 1


def test_logs_counts(caplog):
    with caplog.at_level("WARNING"):
        validate_events(raw_events(ROWS), products(), collections())
    assert "missing_shop_id=2" in caplog.text and "duplicate=1" in caplog.text
