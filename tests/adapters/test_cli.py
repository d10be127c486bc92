from __future__ import annotations

import json

import pandas as pd
import polars as pl

from persona_shoppers import contract
from persona_shoppers.adapters import cli

from .test_rees46 import CSV


def test_cli_otto_writes_three_parquet_files(tmp_path, capsys):
    src = tmp_path / "train.jsonl"
    src.write_text(
        json.dumps(
            {
                "session": 1,
                "events": [
                    {"aid": 7, "ts": 1661724000278, "type": "clicks"},
                    {"aid": 7, "ts": 1661724001278, "type": "orders"},
                ],
            }
        )
        + "\n"
    )
    out = tmp_path / "01_raw"
    assert cli.main(["otto", str(src), "--out", str(out), "--shop-id", "demo"]) == 0
    for name in ("events", "products", "collections", "collection_products"):
        assert (out / f"{name}.parquet").is_file()
    # the catalog reads products and collections with pandas
    assert pd.read_parquet(out / "products.parquet")["title"].tolist() == ["Product 7"]
    assert pd.read_parquet(out / "collection_products.parquet").empty
    events = pl.read_parquet(out / "events.parquet")
    assert events.schema == pl.Schema(contract.EVENT_SCHEMA)
    assert set(events["shop_id"]) == {"demo"}
    printed = capsys.readouterr().out
    assert "events.parquet: 2 rows" in printed
    assert "buyers: 1, sessions: 1" in printed
    assert "price_required_for" in printed  # what the format lacks


def test_cli_rees46(tmp_path, capsys):
    src = tmp_path / "2019-Oct.csv"
    src.write_text(CSV)
    out = tmp_path / "raw"
    assert cli.main(["rees46", str(src), "--out", str(out), "-q"]) == 0
    products = pl.read_parquet(out / "products.parquet")
    assert products.schema == pl.Schema(contract.PRODUCT_SCHEMA)
    assert products.height == 3
    collections = pl.read_parquet(out / "collections.parquet")
    assert collections.schema == pl.Schema(contract.COLLECTION_SCHEMA)
    printed = capsys.readouterr().out
    assert "ts written as text" in printed
    assert "checkout_start" in printed


def test_cli_appends_a_second_shop(tmp_path, capsys):
    src = tmp_path / "2019-Oct.csv"
    src.write_text(CSV)
    out = tmp_path / "raw"
    convert = ["rees46", str(src), "--out", str(out), "-q", "--shop-id"]
    assert cli.main([*convert, "a"]) == 0
    assert cli.main([*convert, "b", "--append"]) == 0
    events = pl.read_parquet(out / "events.parquet")
    per_shop = events.group_by("shop_id").len().sort("shop_id")["len"].to_list()
    assert per_shop == [len(events) // 2] * 2
    assert set(pl.read_parquet(out / "products.parquet")["shop_id"]) == {"a", "b"}
