"""The raw contract's schema checks."""

from datetime import datetime

import polars as pl
import pytest

from persona_shoppers.contract import EVENT_SCHEMA, OPTIONAL_EVENT_COLUMNS, SchemaError, conform


def _events(**overrides):
    row = {
        "shop_id": ["s1"],
        "buyer_id": ["b1"],
        "ts": [datetime(2026, 1, 1, 12)],
        "event_type": ["page_view"],
        "product_id": [None],
        "collection_id": [None],
        "query": [None],
        "quantity": [None],
        "price": [None],
    }
    row.update(overrides)
    return pl.DataFrame({k: v for k, v in row.items() if v is not ...})


def test_conform_casts_to_the_contract_and_adds_optional_columns():
    out = conform(
        _events(quantity=[2.0], extra=["kept"]), EVENT_SCHEMA, "raw_events", OPTIONAL_EVENT_COLUMNS
    )
    assert out.schema["ts"] == pl.Datetime("us", "UTC")  # naive timestamps are read as UTC
    assert out.schema["quantity"] == pl.Int64 and out["quantity"][0] == 2
    assert out["session_id"].is_null().all()
    assert out.columns[-1] == "extra"


def test_text_timestamps_are_left_for_row_level_parsing():
    out = conform(
        _events(ts=["2026-01-01T12:00:00Z"]), EVENT_SCHEMA, "raw_events", OPTIONAL_EVENT_COLUMNS
    )
    assert out.schema["ts"] == pl.String


def test_schema_errors_name_dataset_column_and_rule():
    with pytest.raises(
        SchemaError, match="raw_events: column 'buyer_id' breaks rule: required column is missing"
    ):
        conform(_events(buyer_id=...), EVENT_SCHEMA, "raw_events", OPTIONAL_EVENT_COLUMNS)
    with pytest.raises(
        SchemaError, match="raw_events: column 'price' breaks rule: must be numeric"
    ):
        conform(_events(price=["cheap"]), EVENT_SCHEMA, "raw_events", OPTIONAL_EVENT_COLUMNS)
    with pytest.raises(SchemaError, match="column 'ts' breaks rule: must be a UTC timestamp"):
        conform(_events(ts=[1.5]), EVENT_SCHEMA, "raw_events", OPTIONAL_EVENT_COLUMNS)
