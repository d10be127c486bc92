"""The row order the polars engine gives each table of the clickstream library, restored on
tables another engine assembles from parts (Spark's partitions, buyer buckets)."""

from __future__ import annotations

import polars as pl

from persona_shoppers.clickstream.buyers import BUYER_COLUMNS, BUYER_KEYS
from persona_shoppers.clickstream.history import HISTORY_COLUMNS
from persona_shoppers.clickstream.ordering import sort_events
from persona_shoppers.clickstream.sessions import SESSION_COLUMNS
from persona_shoppers.clickstream.validation import ACCEPTED_COLUMNS, QUARANTINE_COLUMNS

# Each table's row order, known by its columns (enriched events: EVENT_ORDER, by sort_events).
_ROW_ORDERS: dict[frozenset[str], list[str]] = {
    frozenset(QUARANTINE_COLUMNS): ["source_row"],
    frozenset(SESSION_COLUMNS): ["shop_id", "buyer_id", "session_start", "session_id"],
    frozenset(BUYER_COLUMNS): list(BUYER_KEYS),
    frozenset(HISTORY_COLUMNS): list(BUYER_KEYS),
}


def in_engine_order(table: pl.DataFrame) -> pl.DataFrame:
    """``table`` in the row order the polars engine gives it (a table it does not know: as is)."""
    columns = frozenset(table.columns)
    if columns == frozenset(ACCEPTED_COLUMNS):
        return sort_events(table)
    order = _ROW_ORDERS.get(columns)
    return table.sort(order) if order else table
