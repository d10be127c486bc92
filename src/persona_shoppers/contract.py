"""The raw data contract: columns, types and event vocabulary. The synthetic generator and the
adapters produce frames of this shape and data_enrichment validates them against it; a
dataset-level problem raises :class:`SchemaError` naming the dataset, the column and the rule.

See docs/bring_your_own_data.md, "The raw contract".
"""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl

EVENT_TYPES: tuple[str, ...] = (
    "page_view",
    "collection_view",
    "product_view",
    "search",
    "add_to_cart",
    "remove_from_cart",
    "checkout_start",
    "purchase",
)
PRODUCT_EVENT_TYPES: tuple[str, ...] = (
    "product_view",
    "add_to_cart",
    "remove_from_cart",
    "purchase",
)

EVENT_SCHEMA: dict[str, pl.DataType] = {
    "shop_id": pl.String,
    "buyer_id": pl.String,
    "session_id": pl.String,
    "ts": pl.Datetime("us", "UTC"),
    "event_type": pl.String,
    "product_id": pl.String,
    "collection_id": pl.String,
    "query": pl.String,
    "quantity": pl.Int64,
    "price": pl.Float64,
}
# session_id may be absent (then data_enrichment sessionises); every other column must exist.
OPTIONAL_EVENT_COLUMNS: frozenset[str] = frozenset({"session_id"})

PRODUCT_SCHEMA: dict[str, pl.DataType] = {
    "shop_id": pl.String,
    "product_id": pl.String,
    "title": pl.String,
    "category": pl.String,
    "brand": pl.String,
    "price": pl.Float64,
    "description": pl.String,
    "rating": pl.Float64,
    "review_count": pl.Int64,
}
COLLECTION_SCHEMA: dict[str, pl.DataType] = {
    "shop_id": pl.String,
    "collection_id": pl.String,
    "title": pl.String,
}
# Optional membership table (Shopify "collects"): which products a collection lists.
COLLECTION_PRODUCT_SCHEMA: dict[str, pl.DataType] = {
    "shop_id": pl.String,
    "collection_id": pl.String,
    "product_id": pl.String,
}

CATEGORY_SEPARATOR = " > "


class SchemaError(ValueError):
    """A raw dataset breaks the contract; the message names dataset, column and rule."""

    def __init__(self, dataset: str, column: str, rule: str):
        self.dataset, self.column, self.rule = dataset, column, rule
        super().__init__(f"{dataset}: column '{column}' breaks rule: {rule}")


def _is_numeric(dtype: pl.DataType) -> bool:
    return dtype.is_numeric() or dtype == pl.Null


def conform(
    frame: pl.DataFrame | pl.LazyFrame,
    schema: Mapping[str, pl.DataType],
    dataset: str,
    optional: frozenset[str] = frozenset(),
) -> pl.DataFrame | pl.LazyFrame:
    """Check ``frame`` (or a lazy scan's schema) against ``schema`` and cast it to the
    contract's types.

    Missing optional columns are added as nulls; extra columns are kept after the contract's.
    Timestamps may arrive as text (parsed row by row later, so one bad value does not fail the
    whole file) and are left as they are here.
    """
    found = frame.collect_schema()
    casts = []
    for column, dtype in schema.items():
        if column not in found:
            if column in optional:
                casts.append(pl.lit(None, dtype=dtype).alias(column))
                continue
            raise SchemaError(dataset, column, "required column is missing")
        actual = found[column]
        if dtype == pl.String:
            if actual.is_nested():
                raise SchemaError(dataset, column, f"must be text, found {actual}")
            casts.append(pl.col(column).cast(pl.String))
        elif isinstance(dtype, pl.Datetime):
            if actual == pl.String or actual == pl.Null:
                casts.append(pl.col(column).cast(pl.String))
            elif isinstance(actual, pl.Datetime):
                zone = pl.col(column)
                zone = (
                    zone.dt.replace_time_zone("UTC")
                    if actual.time_zone is None
                    else zone.dt.convert_time_zone("UTC")
                )
                casts.append(zone.dt.cast_time_unit("us"))
            else:
                raise SchemaError(
                    dataset, column, f"must be a UTC timestamp or ISO text, found {actual}"
                )
        else:
            if not _is_numeric(actual):
                raise SchemaError(dataset, column, f"must be numeric ({dtype}), found {actual}")
            casts.append(pl.col(column).cast(dtype))
    extra = [c for c in found.names() if c not in schema]
    return frame.select(*casts, *extra)
