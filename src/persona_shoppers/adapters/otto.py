"""OTTO ("OTTO - Multi-Objective Recommender", Kaggle) session logs (jsonl, or flat parquet
re-encodings) to the raw contract: clicks, carts and orders; one buyer per session.

See the OTTO section of docs/bring_your_own_data.md.
"""

from __future__ import annotations

import logging

import polars as pl

from persona_shoppers.adapters import _common
from persona_shoppers.adapters._common import TS_PARSED, TS_RAW, InputPath

logger = logging.getLogger(__name__)

FORMAT = "otto"
DEFAULT_SHOP_ID = "otto"

EVENT_TYPE_MAP: dict[str, str] = {
    "clicks": "product_view",
    "carts": "add_to_cart",
    "orders": "purchase",
}
# Integer type codes used by the common parquet re-encodings of OTTO.
TYPE_CODES: dict[str, str] = {"0": "clicks", "1": "carts", "2": "orders"}

MISSING: tuple[str, ...] = (
    "user ids (buyer_id is the session id: one buyer per session)",
    "product titles, categories, brands, descriptions, ratings",
    "prices (events and products): set data_enrichment.price_required_for: []",
    "search queries, collections and collection views, page views",
    "checkout_start and remove_from_cart events",
    "quantities (set to 1)",
)
DERIVED: tuple[str, ...] = (
    "buyer_id = session_id = OTTO session number as text",
    "products: one row per aid seen, title 'Product {aid}' (placeholder)",
    "ts unit (seconds or milliseconds) detected per value by magnitude",
)

_JSONL_SCHEMA = {
    "session": pl.String,
    "events": pl.List(pl.Struct({"aid": pl.String, "ts": pl.String, "type": pl.String})),
}


def _scan_flat(path: InputPath) -> pl.LazyFrame:
    """Flat rows (session, aid, ts, type) as text from jsonl or a parquet re-encoding."""
    first = _common.first_source(path)
    if first.endswith(".parquet"):
        lf = pl.scan_parquet(_common.as_sources(path))
        _common.require_columns(lf, ("session", "aid", "ts", "type"), first)
        type_text = pl.col("type").cast(pl.String).replace(TYPE_CODES)
        return lf.select(
            pl.col("session").cast(pl.String),
            pl.col("aid").cast(pl.String),
            pl.col("ts").cast(pl.String),
            type_text.alias("type"),
        )
    # Nested jsonl: scanned lazily with an all-text schema (numbers arrive as their text, so
    # an odd value in one line cannot fail the file), then one row per event.
    lf = pl.scan_ndjson(_common.as_sources(path), schema=_JSONL_SCHEMA)
    return (
        lf.explode("events")
        .filter(pl.col("events").is_not_null())
        .unnest("events")
        .select("session", "aid", "ts", "type")
    )


def read_otto(path: InputPath, shop_id: str = DEFAULT_SHOP_ID) -> dict[str, pl.DataFrame]:
    """Convert OTTO session logs to ``{"events", "products", "collections"}`` frames.

    ``path`` is a jsonl file (or parquet re-encoding), a glob or a list of files. The frames
    conform to :mod:`persona_shoppers.contract`; rows with an unknown type keep the original
    type text, rows with an unparsable ts keep it as text (data_enrichment quarantines both).
    """
    source = str(_common.as_sources(path))
    _common.log_format_notes(FORMAT, MISSING, DERIVED)
    flat = _scan_flat(path)
    seconds = _common.epoch_is_seconds(pl.col("ts"))
    events = flat.select(
        pl.lit(shop_id, dtype=pl.String).alias("shop_id"),
        pl.col("session").alias("buyer_id"),
        pl.col("session").alias("session_id"),
        _common.parse_epoch(pl.col("ts")).alias(TS_PARSED),
        pl.col("ts").alias(TS_RAW),
        _common.map_event_types(pl.col("type"), EVENT_TYPE_MAP).alias("event_type"),
        pl.col("aid").alias("product_id"),
        pl.lit(None, dtype=pl.String).alias("collection_id"),
        pl.lit(None, dtype=pl.String).alias("query"),
        pl.lit(1, dtype=pl.Int64).alias("quantity"),
        pl.lit(None, dtype=pl.Float64).alias("price"),
        seconds.alias("__ts_seconds"),
    ).collect(engine="streaming")
    n_seconds = int(events.get_column("__ts_seconds").sum() or 0)
    if n_seconds:
        logger.info(
            "%s: %d timestamp(s) read as epoch seconds (below %g)",
            source,
            n_seconds,
            _common.SECONDS_THRESHOLD,
        )
    events = _common.finish_timestamps(events.drop("__ts_seconds"), source)
    _common.log_unknown_event_types(events, source)

    products = _common.placeholder_products(events, shop_id)
    logger.info(
        "%s: %d events, %d sessions, %d products (placeholder titles, no prices)",
        source,
        events.height,
        events.get_column("session_id").n_unique(),
        products.height,
    )
    return _common.conform_tables(events, products, _common.empty_collections())
