"""Small hand-made raw frames shared by the clickstream tests."""

from __future__ import annotations

from typing import Any

import pandas as pd
import polars as pl

from persona_shoppers.contract import EVENT_SCHEMA

RAW_SCHEMA = {**EVENT_SCHEMA, "ts": pl.String}


def raw_events(rows: list[dict[str, Any]], ts_text: bool = True) -> pl.DataFrame:
    """Raw events from partial rows; missing contract columns are null."""
    schema = RAW_SCHEMA if ts_text else EVENT_SCHEMA
    return pl.DataFrame(
        [{c: row.get(c) for c in schema} for row in rows], schema=schema, orient="row"
    )


def products() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "shop_id": ["s1", "s1", "s1", "s2"],
            "product_id": ["p1", "p2", "p_noprice", "p1"],
            "title": ["Trail Runner", "Rain Shell", "Mystery Box", "Other Shop Runner"],
            "category": ["Shoes > Trail", "Apparel > Jackets", "Misc", "Shoes"],
            "brand": ["Northwind", "Northwind", None, "Acme"],
            "price": [12.0, 5.0, None, 30.0],
            "description": ["", "", "", ""],
            "rating": [4.5, 4.0, None, 3.0],
            "review_count": [10, 3, 0, 1],
        }
    )


def collections() -> pd.DataFrame:
    return pd.DataFrame(
        {"shop_id": ["s1", "s2"], "collection_id": ["c1", "c1"], "title": ["Trail", "Sale"]}
    )
