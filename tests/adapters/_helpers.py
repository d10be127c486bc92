from __future__ import annotations

import polars as pl

from persona_shoppers import contract


def assert_schema(frame: pl.DataFrame, schema: dict[str, pl.DataType], ts_text: bool = False):
    """The frame has exactly the contract's columns, in order, with the contract's types."""
    assert frame.columns == list(schema)
    for column, dtype in schema.items():
        expected = pl.String if (ts_text and column == "ts") else dtype
        assert frame.schema[column] == expected, (column, frame.schema[column], expected)


def assert_raw_tables(tables: dict[str, pl.DataFrame], ts_text: bool = False):
    assert set(tables) == {"events", "products", "collections"}
    assert_schema(tables["events"], contract.EVENT_SCHEMA, ts_text=ts_text)
    assert_schema(tables["products"], contract.PRODUCT_SCHEMA)
    assert_schema(tables["collections"], contract.COLLECTION_SCHEMA)
