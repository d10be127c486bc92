from __future__ import annotations

import logging
from datetime import UTC, datetime

import polars as pl
import pytest

from persona_shoppers import contract
from persona_shoppers.adapters import read_rees46

from ._helpers import assert_raw_tables

HEADER = (
    "event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session"
)
PHONE = "1004237,2053013555631882655,electronics.smartphone,samsung"
SOFA = "3900821,2053013552326770905,furniture.living_room.sofa,"
SESSION = "c6bd7419-2748-4c56-95b4-8cec9ff8b80d"
ROWS = [
    "2019-10-01 00:00:00 UTC,view,44600062,2103807459595387724,,shiseido,35.79,541312140,"
    "72d76fde-8bb3-4e00-8c23-a032dfed738c",
    f"2019-10-01 00:00:01 UTC,view,{PHONE},1081.98,535871217,{SESSION}",
    f"2019-10-01 00:00:05 UTC,cart,{PHONE},1079.50,535871217,{SESSION}",
    f"2019-10-01 00:00:09 UTC,remove_from_cart,{PHONE},1079.50,535871217,{SESSION}",
    f"2019-10-01 00:01:00 UTC,purchase,{PHONE},1070.00,535871217,{SESSION}",
    f"2019-10-01 00:02:00 UTC,view,{SOFA},199.00,512742880,",  # no user_session
    f"2019-10-01 00:03:00 UTC,compare,{SOFA},199.00,512742880,",  # unknown event type
    f"not a time,view,{SOFA},199.00,512742880,",  # unparsable event_time
]
CSV = "\n".join([HEADER, *ROWS]) + "\n"


@pytest.fixture
def rees_file(tmp_path):
    path = tmp_path / "2019-Oct.csv"
    path.write_text(CSV)
    return path


@pytest.fixture
def clean_file(tmp_path):
    path = tmp_path / "clean.csv"
    path.write_text("\n".join(CSV.splitlines()[:-1]) + "\n")  # without the bad event_time
    return path


def test_tables_follow_the_contract(clean_file):
    tables = read_rees46(clean_file)
    assert_raw_tables(tables)
    assert tables["events"].schema["ts"] == pl.Datetime("us", "UTC")
    assert tables["collections"].height == 0


def test_event_mapping_and_columns(clean_file):
    events = read_rees46(clean_file, shop_id="store-1")["events"]
    assert events["event_type"].to_list() == [
        "product_view",
        "product_view",
        "add_to_cart",
        "remove_from_cart",
        "purchase",
        "product_view",
        "compare",  # unknown: kept with its text for data_enrichment to quarantine
    ]
    assert set(events["shop_id"]) == {"store-1"}
    assert events["buyer_id"][1] == "535871217"
    assert events["session_id"][1] == "c6bd7419-2748-4c56-95b4-8cec9ff8b80d"
    assert events["session_id"][5] is None  # empty user_session -> null (sessionised later)
    assert events["product_id"][1] == "1004237"
    assert events["price"].to_list()[:3] == [35.79, 1081.98, 1079.50]
    assert events["quantity"].to_list() == [1] * 7
    assert events["query"].null_count() == events["collection_id"].null_count() == 7


def test_timestamps_are_utc(clean_file):
    ts = read_rees46(clean_file)["events"]["ts"]
    assert ts[0] == datetime(2019, 10, 1, 0, 0, 0, tzinfo=UTC)
    assert ts[4] == datetime(2019, 10, 1, 0, 1, 0, tzinfo=UTC)


def test_unknown_type_and_unparsable_ts_are_kept(rees_file, caplog):
    with caplog.at_level(logging.WARNING):
        tables = read_rees46(rees_file)
    events = tables["events"]
    assert events.height == 8  # nothing dropped
    assert_raw_tables(tables, ts_text=True)
    assert "compare" in events["event_type"].to_list()
    assert events["ts"][7] == "not a time"
    assert pl.Series([events["ts"][0]]).str.to_datetime(time_zone="UTC")[0] == datetime(
        2019, 10, 1, tzinfo=UTC
    )
    assert "unparsable timestamp" in caplog.text
    assert "compare" in caplog.text


def test_products_latest_price_category_path_and_derived_title(clean_file):
    products = read_rees46(clean_file)["products"]
    assert products["product_id"].to_list() == sorted(["44600062", "1004237", "3900821"])
    phone = products.filter(pl.col("product_id") == "1004237").row(0, named=True)
    assert phone["title"] == "Samsung Smartphone"
    assert phone["category"] == "Electronics > Smartphone"
    assert phone["brand"] == "samsung"
    assert phone["price"] == 1070.00  # the latest seen
    assert phone["shop_id"] == "rees46"
    assert phone["rating"] is None and phone["review_count"] is None
    assert phone["description"] is None

    cosmetic = products.filter(pl.col("product_id") == "44600062").row(0, named=True)
    assert cosmetic["category"] == "category 2103807459595387724"  # no category_code
    assert cosmetic["title"] == "Shiseido Product"

    sofa = products.filter(pl.col("product_id") == "3900821").row(0, named=True)
    assert sofa["category"] == "Furniture > Living Room > Sofa"
    assert sofa["brand"] is None
    assert sofa["title"] == "Sofa"


def test_several_files_and_missing_column(tmp_path, clean_file):
    second = tmp_path / "2019-Nov.csv"
    second.write_text(HEADER + "\n" + ROWS[0].replace("2019-10", "2019-11") + "\n")
    events = read_rees46([clean_file, second])["events"]
    assert events.height == 8

    broken = tmp_path / "broken.csv"
    broken.write_text("event_time,event_type\n2019-10-01 00:00:00 UTC,view\n")
    with pytest.raises(contract.SchemaError, match="product_id"):
        read_rees46(broken)


def test_product_price_is_the_latest_in_time_not_in_file_order(tmp_path):
    path = tmp_path / "shuffled.csv"
    rows = [
        f"2019-10-03 00:00:00 UTC,view,{PHONE},300.00,1,s1",
        f"2019-10-01 00:00:00 UTC,view,{PHONE},100.00,1,s1",
        f"2019-10-04 00:00:00 UTC,view,{PHONE},,1,s1",  # empty price: earlier value kept
        f"2019-10-02 00:00:00 UTC,view,{PHONE},200.00,1,s1",
    ]
    path.write_text("\n".join([HEADER, *rows]) + "\n")
    products = read_rees46(path)["products"]
    assert products["price"].to_list() == [300.00]
