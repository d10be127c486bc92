from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

import polars as pl
import pytest

from persona_shoppers import contract
from persona_shoppers.adapters import read_otto

from ._helpers import assert_raw_tables

SESSIONS = [
    {
        "session": 12899779,
        "events": [
            {"aid": 59625, "ts": 1661724000278, "type": "clicks"},
            {"aid": 59625, "ts": 1661724060000, "type": "carts"},
            {"aid": 1142000, "ts": 1661724120000, "type": "orders"},
        ],
    },
    {
        "session": 12899780,
        "events": [
            {"aid": 1142000, "ts": 1661724000, "type": "clicks"},  # epoch seconds
            {"aid": 582732, "ts": 1661724030, "type": "wishlist"},  # unknown type
        ],
    },
    {"session": 12899781, "events": []},
]


def write_jsonl(path, sessions):
    path.write_text("\n".join(json.dumps(s) for s in sessions) + "\n")
    return path


@pytest.fixture
def otto_file(tmp_path):
    return write_jsonl(tmp_path / "train.jsonl", SESSIONS)


def test_tables_follow_the_contract(otto_file):
    tables = read_otto(otto_file)
    assert_raw_tables(tables)
    assert tables["events"].schema["ts"] == pl.Datetime("us", "UTC")
    assert tables["collections"].height == 0
    # conform() accepts them as they are
    contract.conform(tables["events"], contract.EVENT_SCHEMA, "events")


def test_event_mapping_ids_and_shop(otto_file):
    events = read_otto(otto_file, shop_id="my-shop")["events"]
    assert events.height == 5  # the empty session has no events; nothing else is lost
    assert events["event_type"].to_list() == [
        "product_view",
        "add_to_cart",
        "purchase",
        "product_view",
        "wishlist",
    ]
    assert set(events["shop_id"]) == {"my-shop"}
    assert events["buyer_id"].to_list() == events["session_id"].to_list()
    assert events["buyer_id"][0] == "12899779"
    assert events["product_id"].to_list() == ["59625", "59625", "1142000", "1142000", "582732"]
    assert events["quantity"].to_list() == [1] * 5
    assert events["price"].null_count() == 5


def test_unknown_event_type_is_kept(otto_file, caplog):
    with caplog.at_level(logging.WARNING):
        events = read_otto(otto_file)["events"]
    unknown = events.filter(~pl.col("event_type").is_in(contract.EVENT_TYPES))
    assert unknown["event_type"].to_list() == ["wishlist"]
    assert "wishlist" in caplog.text


def test_timestamps_milliseconds_and_seconds_are_utc(otto_file):
    ts = read_otto(otto_file)["events"]["ts"].to_list()
    assert ts[0] == datetime(2022, 8, 28, 22, 0, 0, 278000, tzinfo=UTC)
    assert ts[1] == datetime(2022, 8, 28, 22, 1, tzinfo=UTC)
    # 1661724000 is in seconds: detected by magnitude
    assert ts[3] == datetime(2022, 8, 28, 22, 0, tzinfo=UTC)


def test_unparsable_ts_is_kept_as_text(tmp_path):
    path = write_jsonl(
        tmp_path / "bad.jsonl",
        [
            {
                "session": 1,
                "events": [
                    {"aid": 1, "ts": 1661724000278, "type": "clicks"},
                    {"aid": 2, "ts": "yesterday", "type": "clicks"},
                ],
            }
        ],
    )
    tables = read_otto(path)
    assert_raw_tables(tables, ts_text=True)
    ts = tables["events"]["ts"].to_list()
    assert ts[1] == "yesterday"
    parsed = pl.Series([ts[0]]).str.to_datetime(time_zone="UTC")[0]
    assert parsed == datetime(2022, 8, 28, 22, 0, 0, 278000, tzinfo=UTC)


def test_products_are_placeholders_for_every_aid(otto_file):
    products = read_otto(otto_file)["products"]
    assert products["product_id"].to_list() == sorted(["59625", "1142000", "582732"])
    row = products.filter(pl.col("product_id") == "59625").row(0, named=True)
    assert row["title"] == "Product 59625"
    assert row["shop_id"] == "otto"
    for column in ("category", "brand", "price", "description", "rating", "review_count"):
        assert row[column] is None


def test_flat_parquet_reencoding_with_type_codes(tmp_path):
    path = tmp_path / "train.parquet"
    pl.DataFrame(
        {
            "session": [5, 5, 5],
            "aid": [10, 11, 11],
            "ts": [1661724000, 1661724010, 1661724020],
            "type": pl.Series([0, 1, 2], dtype=pl.UInt8),
        }
    ).write_parquet(path)
    events = read_otto(path)["events"]
    assert events["event_type"].to_list() == ["product_view", "add_to_cart", "purchase"]
    assert events["ts"][0] == datetime(2022, 8, 28, 22, 0, tzinfo=UTC)
