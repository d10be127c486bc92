"""RetailRocket ("Retailrocket recommender system dataset", Kaggle) events.csv to the raw contract.

See the RetailRocket section of docs/bring_your_own_data.md.
"""

from __future__ import annotations

import logging

import polars as pl

from persona_shoppers.adapters import _common
from persona_shoppers.adapters._common import TS_PARSED, TS_RAW, InputPath

logger = logging.getLogger(__name__)

FORMAT = "retailrocket"
DEFAULT_SHOP_ID = "retailrocket"

EVENT_TYPE_MAP: dict[str, str] = {
    "view": "product_view",
    "addtocart": "add_to_cart",
    "transaction": "purchase",
}
COLUMNS: tuple[str, ...] = ("timestamp", "visitorid", "event", "itemid")

MISSING: tuple[str, ...] = (
    "sessions (session_id null: data_enrichment sessionises)",
    "product titles, categories, brands, descriptions, ratings (item_properties not read)",
    "prices (events and products): set data_enrichment.price_required_for: []",
    "search queries, collections and collection views, page views",
    "checkout_start and remove_from_cart events",
    "quantities (set to 1)",
)
DERIVED: tuple[str, ...] = (
    "buyer_id = visitorid",
    "products: one row per itemid seen, title 'Product {itemid}' (placeholder)",
)


def read_retailrocket(path: InputPath, shop_id: str = DEFAULT_SHOP_ID) -> dict[str, pl.DataFrame]:
    """Convert RetailRocket events.csv to ``{"events", "products", "collections"}`` frames.

    Unknown event names keep their text and unparsable timestamps are kept as text
    (data_enrichment quarantines both).
    """
    source = str(_common.as_sources(path))
    _common.log_format_notes(FORMAT, MISSING, DERIVED)
    lf = pl.scan_csv(_common.as_sources(path), infer_schema=False)
    _common.require_columns(lf, COLUMNS, _common.first_source(path))
    raw_ts = _common.blank_to_null(pl.col("timestamp"))
    events = lf.select(
        pl.lit(shop_id, dtype=pl.String).alias("shop_id"),
        _common.blank_to_null(pl.col("visitorid")).alias("buyer_id"),
        pl.lit(None, dtype=pl.String).alias("session_id"),
        _common.parse_epoch(raw_ts).alias(TS_PARSED),
        raw_ts.alias(TS_RAW),
        _common.map_event_types(_common.blank_to_null(pl.col("event")), EVENT_TYPE_MAP).alias(
            "event_type"
        ),
        _common.blank_to_null(pl.col("itemid")).alias("product_id"),
        pl.lit(None, dtype=pl.String).alias("collection_id"),
        pl.lit(None, dtype=pl.String).alias("query"),
        pl.lit(1, dtype=pl.Int64).alias("quantity"),
        pl.lit(None, dtype=pl.Float64).alias("price"),
    ).collect(engine="streaming")
    events = _common.finish_timestamps(events, source)
    _common.log_unknown_event_types(events, source)

    products = _common.placeholder_products(events, shop_id)
    logger.info(
        "%s: %d events, %d visitors, %d products (placeholder titles, no prices)",
        source,
        events.height,
        events.get_column("buyer_id").n_unique(),
        products.height,
    )
    return _common.conform_tables(events, products, _common.empty_collections())
