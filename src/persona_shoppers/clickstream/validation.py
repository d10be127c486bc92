"""Row-level validation of raw events against the contract, with a quarantine.

Dataset-level problems (a missing column, a non-numeric price) raise
:class:`~persona_shoppers.contract.SchemaError` from :func:`contract.conform`. Row-level
problems never raise: each rejected row goes to the quarantine with exactly one ``reason``,
the first rule (in :data:`QUARANTINE_REASONS` order) that it breaks, and its ``source_row``
(0-based position in the raw events), so accepted + quarantined rows always add up to the
raw input. Everything is vectorised polars expressions; no Python loop per row.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any, NamedTuple

import pandas as pd
import polars as pl

from persona_shoppers.clickstream.ordering import same_as_previous, sort_events
from persona_shoppers.contract import (
    COLLECTION_SCHEMA,
    EVENT_SCHEMA,
    EVENT_TYPES,
    OPTIONAL_EVENT_COLUMNS,
    PRODUCT_EVENT_TYPES,
    PRODUCT_SCHEMA,
    conform,
)

logger = logging.getLogger(__name__)

CONTRACT_COLUMNS: tuple[str, ...] = tuple(EVENT_SCHEMA)

# Row rules in priority order: a row's reason is the first rule it breaks.
QUARANTINE_REASONS: tuple[str, ...] = (
    "missing_shop_id",
    "missing_buyer_id",
    "unparsable_timestamp",
    "unknown_event_type",
    "missing_product_id",
    "product_not_in_catalog",
    "missing_price",
    "negative_price",
    "missing_query",
    "unknown_collection",
    "duplicate",
)
# The one rule over pairs of rows (the others look at one row): an exact repeat of an earlier row.
DUPLICATE_REASON = QUARANTINE_REASONS[-1]

# Event types whose rows need a non-negative price unless the caller says otherwise.
PRICE_EVENT_TYPES: tuple[str, ...] = ("add_to_cart", "purchase")

# Columns the catalog joins add to accepted events.
CATALOG_COLUMNS: tuple[str, ...] = ("title", "category", "brand", "collection_title")

# Accepted events: contract columns (ts parsed to UTC), then provenance, then catalog joins.
ACCEPTED_COLUMNS: tuple[str, ...] = (
    *CONTRACT_COLUMNS,
    "source_row",
    "price_from_catalog",
    *CATALOG_COLUMNS,
)
QUARANTINE_COLUMNS: tuple[str, ...] = (*CONTRACT_COLUMNS, "source_row", "reason")

# Rewrites of stripped timestamp text before parsing (pattern, replacement; the syntax both
# polars' and Spark's regex engines read): a space after the date becomes "T", "Z" an offset.
TS_REWRITES: tuple[tuple[str, str], ...] = (
    (r"^(?<date>\d{4}-\d{2}-\d{2})[ ]", "${date}T"),
    (r"[Zz]$", "+00:00"),
)
# ISO-8601 variants accepted for text timestamps (after the rewrites).
_TS_FORMATS_WITH_ZONE = ("%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%dT%H:%M%z")
_TS_FORMATS_NAIVE = ("%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M", "%Y-%m-%d")


class ValidationResult(NamedTuple):
    """Accepted events (joined with the catalog) and the quarantined rows."""

    accepted: pl.DataFrame
    quarantine: pl.DataFrame


def to_polars(frame: pl.DataFrame | pd.DataFrame) -> pl.DataFrame:
    """Return ``frame`` as a polars DataFrame (pandas frames are converted, index dropped)."""
    if isinstance(frame, pl.DataFrame):
        return frame
    return pl.from_pandas(frame.reset_index(drop=True))


def _blank(column: str) -> pl.Expr:
    """True where a text column is null, empty or only whitespace."""
    col = pl.col(column)
    return col.is_null() | ~col.str.contains(r"\S")


def _text_list(values: Iterable[str]) -> list[str]:
    return [str(v) for v in values]


def parse_timestamps(column: str = "ts") -> pl.Expr:
    """Parse ISO-8601 text to ``Datetime('us', 'UTC')``; unparsable text gives null.

    Accepts ``2026-03-14T10:00:00``, a space instead of ``T``, fractional seconds, a ``Z`` or a
    ``+hh:mm`` / ``+hhmm`` offset (converted to UTC), and a bare date. Text without an offset
    is read as UTC.
    """
    text = pl.col(column).str.strip_chars()
    for pattern, replacement in TS_REWRITES:
        text = text.str.replace(pattern, replacement)
    attempts = [
        text.str.to_datetime(fmt, time_unit="us", time_zone="UTC", strict=False)
        for fmt in (*_TS_FORMATS_WITH_ZONE, *_TS_FORMATS_NAIVE)
    ]
    return pl.coalesce(attempts)


def conform_products(products: pl.DataFrame | pd.DataFrame) -> pl.DataFrame:
    """Conform ``raw_products``; one row per (shop_id, product_id), the first one kept."""
    frame = conform(to_polars(products), PRODUCT_SCHEMA, "raw_products").select(
        list(PRODUCT_SCHEMA)
    )
    return _unique_keys(frame, ["shop_id", "product_id"], "raw_products")


def conform_collections(collections: pl.DataFrame | pd.DataFrame) -> pl.DataFrame:
    """Conform ``raw_collections``; one row per (shop_id, collection_id), the first one kept."""
    frame = conform(to_polars(collections), COLLECTION_SCHEMA, "raw_collections").select(
        list(COLLECTION_SCHEMA)
    )
    return _unique_keys(frame, ["shop_id", "collection_id"], "raw_collections")


def _unique_keys(frame: pl.DataFrame, keys: list[str], dataset: str) -> pl.DataFrame:
    frame = frame.filter(pl.all_horizontal(pl.col(k).is_not_null() for k in keys))
    unique = frame.unique(subset=keys, keep="first", maintain_order=True)
    if unique.height < frame.height:
        logger.warning(
            "%s: %d rows repeat a (%s) key; the first of each is used",
            dataset,
            frame.height - unique.height,
            ", ".join(keys),
        )
    return unique


def catalog_joins(
    products: pl.DataFrame | pd.DataFrame, collections: pl.DataFrame | pd.DataFrame
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The two tables raw events are left-joined with: products on (shop_id, product_id) with
    the catalog columns, ``_catalog_price`` and ``_in_catalog``; collections on (shop_id,
    collection_id) with ``collection_title`` and ``_known_collection``."""
    catalog = conform_products(products).select(
        "shop_id",
        "product_id",
        "title",
        "category",
        "brand",
        pl.col("price").fill_nan(None).alias("_catalog_price"),
        pl.lit(True).alias("_in_catalog"),
    )
    directory = conform_collections(collections).select(
        "shop_id",
        "collection_id",
        pl.col("title").alias("collection_title"),
        pl.lit(True).alias("_known_collection"),
    )
    return catalog, directory


def raw_contract_columns(raw_ts: str) -> list[str]:
    """The contract columns as the raw rows gave them (the duplicate rule compares these):
    ``ts`` is ``raw_ts`` (the text where timestamps came as text), ``price`` ``_raw_price``."""
    return [{"ts": raw_ts, "price": "_raw_price"}.get(c, c) for c in CONTRACT_COLUMNS]


def validate_events(
    events: pl.DataFrame,
    products: pl.DataFrame | pd.DataFrame,
    collections: pl.DataFrame | pd.DataFrame,
    *,
    product_required_for: Iterable[str] = PRODUCT_EVENT_TYPES,
    price_required_for: Iterable[str] = PRICE_EVENT_TYPES,
) -> ValidationResult:
    """Split raw events into accepted rows and a quarantine with one reason per rejected row.

    Accepted rows carry the contract columns (``ts`` parsed to UTC, a blank ``session_id``
    made null, a null ``price`` filled from the catalog price of its product, flagged in
    ``price_from_catalog``), ``source_row`` and the catalog joins ``title``, ``category``,
    ``brand`` and ``collection_title``; sorted by (shop_id, buyer_id, ts, source_row), the
    order every later step relies on. Quarantined rows keep the raw values (``ts`` as text)
    plus ``source_row`` and ``reason``; sorted by ``source_row``.

    Raises:
        SchemaError: a raw dataset breaks the contract (names dataset, column and rule).
    """
    raw = conform_events(to_polars(events))
    result = validate_numbered(
        number_rows(raw),
        *catalog_joins(products, collections),
        product_required_for=product_required_for,
        price_required_for=price_required_for,
    )
    log_counts(raw.height, result.accepted.height, reason_counts(result.quarantine))
    return result


def conform_events(events: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame | pl.LazyFrame:
    """Raw events checked against the contract and cast to it, contract columns only."""
    raw = conform(events, EVENT_SCHEMA, "raw_events", OPTIONAL_EVENT_COLUMNS)
    return raw.select(CONTRACT_COLUMNS)


def number_rows(raw: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame | pl.LazyFrame:
    """``raw`` with ``source_row``, its 0-based position, in front."""
    return raw.with_row_index("source_row").with_columns(pl.col("source_row").cast(pl.Int64))


def validate_numbered(
    frame: pl.DataFrame,
    catalog: pl.DataFrame,
    directory: pl.DataFrame,
    *,
    product_required_for: Iterable[str] = PRODUCT_EVENT_TYPES,
    price_required_for: Iterable[str] = PRICE_EVENT_TYPES,
) -> ValidationResult:
    """:func:`validate_events` on conformed events that carry their ``source_row`` already
    (all of a log, or the buyers of one bucket of it, :mod:`.streaming`), with the catalog
    tables of :func:`catalog_joins`; logs nothing."""
    ts_is_text = frame.schema["ts"] != pl.Datetime("us", "UTC")
    if ts_is_text:  # the raw text stays in _raw_ts for the duplicate rule and the quarantine
        frame = frame.rename({"ts": "_raw_ts"}).with_columns(
            parse_timestamps("_raw_ts").alias("ts")
        )
    # The one sort of the pipeline, on the narrow raw frame: accepted events leave here in
    # (shop_id, buyer_id, ts, source_row) order; the joins below keep it.
    frame = (
        sort_events(frame)
        .join(catalog, on=["shop_id", "product_id"], how="left", maintain_order="left")
        .join(directory, on=["shop_id", "collection_id"], how="left", maintain_order="left")
        .with_columns(pl.col("price").alias("_raw_price"), pl.col("price").fill_nan(None))
        .with_columns(
            (pl.col("price").is_null() & pl.col("_catalog_price").is_not_null()).alias(
                "price_from_catalog"
            ),
            pl.coalesce("price", "_catalog_price").alias("price"),
        )
    )
    event_type = pl.col("event_type")
    needs_product = event_type.is_in(_text_list(product_required_for))
    needs_price = event_type.is_in(_text_list(price_required_for))
    reason = (
        pl.when(_blank("shop_id"))
        .then(pl.lit("missing_shop_id"))
        .when(_blank("buyer_id"))
        .then(pl.lit("missing_buyer_id"))
        .when(pl.col("ts").is_null())
        .then(pl.lit("unparsable_timestamp"))
        .when(event_type.is_null() | ~event_type.is_in(_text_list(EVENT_TYPES)))
        .then(pl.lit("unknown_event_type"))
        .when(needs_product & _blank("product_id"))
        .then(pl.lit("missing_product_id"))
        .when(~_blank("product_id") & pl.col("_in_catalog").is_null())
        .then(pl.lit("product_not_in_catalog"))
        .when(needs_price & pl.col("price").is_null())
        .then(pl.lit("missing_price"))
        .when(needs_price & (pl.col("price") < 0))
        .then(pl.lit("negative_price"))
        .when((event_type == "search") & _blank("query"))
        .then(pl.lit("missing_query"))
        .when((event_type == "collection_view") & pl.col("_known_collection").is_null())
        .then(pl.lit("unknown_collection"))
        .otherwise(pl.lit(None, dtype=pl.String))
    )
    frame = frame.with_columns(reason.alias("reason"))
    rejected = frame.filter(pl.col("reason").is_not_null())
    valid = frame.filter(pl.col("reason").is_null())
    del frame
    duplicates = _duplicate_rows(valid, "_raw_ts" if ts_is_text else "ts")
    if duplicates.height:
        rejected = pl.concat(
            [
                rejected,
                valid.join(
                    duplicates, on="source_row", how="semi", maintain_order="left"
                ).with_columns(pl.lit(DUPLICATE_REASON).alias("reason")),
            ]
        )
        valid = valid.join(duplicates, on="source_row", how="anti", maintain_order="left")

    accepted = valid.with_columns(
        pl.when(_blank("session_id")).then(None).otherwise(pl.col("session_id")).alias("session_id")
    ).select(ACCEPTED_COLUMNS)
    raw_ts_text = (
        pl.col("_raw_ts").cast(pl.String)
        if ts_is_text
        else pl.col("ts").dt.to_string("%Y-%m-%dT%H:%M:%S%.fZ")
    )
    quarantine = (
        rejected.with_columns(raw_ts_text.alias("ts"), pl.col("_raw_price").alias("price"))
        .select(QUARANTINE_COLUMNS)
        .sort("source_row")
    )
    return ValidationResult(accepted, quarantine)


def _duplicate_rows(valid: pl.DataFrame, raw_ts: str) -> pl.DataFrame:
    """source_row of rows that exactly repeat an earlier row over the raw contract columns.

    ``valid`` is in EVENT_ORDER, so exact duplicates (same shop, buyer and timestamp) sit in
    one block of equal (shop_id, buyer_id, ts); only rows in such blocks are compared, in
    source_row order within the block.
    """
    raw_columns = raw_contract_columns(raw_ts)
    same = same_as_previous("shop_id", "buyer_id", "ts")
    columns = list(dict.fromkeys(["source_row", "ts", *raw_columns]))
    candidates = valid.select(columns).filter(same | same.shift(-1).fill_null(False))
    if candidates.height == 0:
        return pl.DataFrame(schema={"source_row": pl.Int64})
    return candidates.filter(~pl.struct(raw_columns).is_first_distinct()).select("source_row")


def reason_counts(quarantine: pl.DataFrame) -> dict[str, int]:
    """Quarantined rows per reason found (reasons without rows left out)."""
    counts = quarantine.group_by("reason").len()
    return dict(zip(counts["reason"].to_list(), counts["len"].to_list(), strict=True))


def log_counts(n_raw: int, n_accepted: int, by_reason: dict[str, int]) -> None:
    """Log how many raw rows were accepted and how many quarantined, per reason."""
    n_quarantined = sum(by_reason.values())
    if n_quarantined == 0:
        logger.info("raw_events: all %d rows accepted, none quarantined", n_raw)
        return
    detail = ", ".join(f"{r}={by_reason[r]}" for r in QUARANTINE_REASONS if r in by_reason)
    logger.warning(
        "raw_events: %d of %d rows quarantined (%s); %d accepted",
        n_quarantined,
        n_raw,
        detail,
        n_accepted,
    )


def quarantine_counts(quarantine: pl.DataFrame) -> dict[str, Any]:
    """Rows per reason, every reason listed (zeros included), in priority order."""
    found = reason_counts(quarantine)
    return {reason: int(found.get(reason, 0)) for reason in QUARANTINE_REASONS}
