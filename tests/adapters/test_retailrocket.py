from __future__ import annotations

from datetime import UTC, datetime

import polars as pl

from persona_shoppers.adapters import read_retailrocket

from ._helpers import assert_raw_tables

CSV = """timestamp,visitorid,event,itemid,transactionid
1433221332117,257597,view,355908,
1433224214164,992329,view,248676,
1433221999827,111016,addtocart,7943,
1433222276276,111016,transaction,7943,4000
1433222276276,111016,wishlist,7943,
"""


def test_retailrocket(tmp_path):
    path = tmp_path / "events.csv"
    path.write_text(CSV)
    tables = read_retailrocket(path)
    assert_raw_tables(tables)
    events = tables["events"]
    assert events["event_type"].to_list() == [
        "product_view",
        "product_view",
        "add_to_cart",
        "purchase",
        "wishlist",
    ]
    assert events["session_id"].null_count() == 5
    assert events["buyer_id"][0] == "257597"
    assert events["ts"][0] == datetime(2015, 6, 2, 5, 2, 12, 117000, tzinfo=UTC)
    products = tables["products"]
    assert products["product_id"].to_list() == sorted(["355908", "248676", "7943"])
    assert products.filter(pl.col("product_id") == "7943")["title"][0] == "Product 7943"
