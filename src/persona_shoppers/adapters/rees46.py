"""REES46 ("eCommerce behavior data from multi category store", Kaggle) csv to the raw contract;
the monthly files are scanned lazily as one.

See the REES46 section of docs/bring_your_own_data.md.
"""

from __future__ import annotations

import logging

import polars as pl

from persona_shoppers.adapters import _common
from persona_shoppers.adapters._common import TS_PARSED, TS_RAW, InputPath

logger = logging.getLogger(__name__)

FORMAT = "rees46"
DEFAULT_SHOP_ID = "rees46"

EVENT_TYPE_MAP: dict[str, str] = {
    "view": "product_view",
    "cart": "add_to_cart",
    "remove_from_cart": "remove_from_cart",
    "purchase": "purchase",
}
COLUMNS: tuple[str, ...] = (
    "event_time",
    "event_type",
    "product_id",
    "category_id",
    "category_code",
    "brand",
    "price",
    "user_id",
    "user_session",
)

MISSING: tuple[str, ...] = (
    "product titles, descriptions, ratings, review counts",
    "search queries, collections and collection views, page views",
    "checkout_start events",
    "quantities (set to 1)",
)
DERIVED: tuple[str, ...] = (
    "product title = '{Brand} {last category word}' (e.g. 'Samsung Smartphone'), derived",
    "category path from category_code ('electronics.smartphone' -> 'Electronics > Smartphone'),"
    " else 'category {category_id}'",
    "product price, brand and category = the latest non-empty value seen in the events",
    "session_id null where user_session is empty (data_enrichment sessionises those)",
)

# The format's own layout ("2019-10-01 00:00:00 UTC"): parsed for every row in the scan.
_FAST_FORMAT = "%Y-%m-%d %H:%M:%S UTC"
# Fallbacks, tried in order only on the rows the fast format missed; text ending in " UTC" or
# "Z" has that replaced by "+0000" first, naive times are taken as UTC.
_ZONED_FORMATS = ("%Y-%m-%d %H:%M:%S%.f%z", "%Y-%m-%dT%H:%M:%S%.f%z")
_NAIVE_FORMATS = ("%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f")


def _parse_fast(raw: pl.Expr) -> pl.Expr:
    return raw.str.to_datetime(_FAST_FORMAT, strict=False).dt.replace_time_zone("UTC")


def parse_event_time(raw: pl.Expr) -> pl.Expr:
    """Parse event_time text to UTC (any of the accepted layouts); bad values give null."""
    text = raw.str.strip_chars().str.replace(r"(?: UTC|Z)$", "+0000")
    zoned = [text.str.to_datetime(f, strict=False, time_zone="UTC") for f in _ZONED_FORMATS]
    naive = [
        text.str.to_datetime(f, strict=False).dt.replace_time_zone("UTC") for f in _NAIVE_FORMATS
    ]
    return pl.coalesce(_parse_fast(raw), *zoned, *naive).dt.cast_time_unit("us")


def _reparse_missed(frame: pl.DataFrame) -> pl.DataFrame:
    """Run the full :func:`parse_event_time` on the (usually few) rows the fast path missed."""
    missed = pl.col(TS_PARSED).is_null() & pl.col(TS_RAW).is_not_null()
    rows = frame.select(pl.arg_where(missed)).to_series()
    if rows.len() == 0:
        return frame
    values = frame[rows].select(parse_event_time(pl.col(TS_RAW))).to_series()
    return frame.with_columns(frame.get_column(TS_PARSED).scatter(rows, values))


def category_path(category_code: pl.Expr, category_id: pl.Expr) -> pl.Expr:
    """'electronics.smartphone' -> 'Electronics > Smartphone'; else 'category {category_id}'."""
    path = (
        category_code.str.replace_all(".", " > ", literal=True)
        .str.replace_all("_", " ")
        .str.to_titlecase()
    )
    return pl.coalesce(path, pl.format("category {}", category_id))


def derived_title(brand: pl.Expr, category_code: pl.Expr, product_id: pl.Expr) -> pl.Expr:
    """'{Brand} {last category word}'; one part alone when the other is missing; else
    'Product {product_id}'."""
    noun = category_code.str.split(".").list.last().str.replace_all("_", " ").str.to_titlecase()
    brand_text = brand.str.replace_all("_", " ").str.to_titlecase()
    return (
        pl.when(brand_text.is_not_null() & noun.is_not_null())
        .then(pl.format("{} {}", brand_text, noun))
        .when(brand_text.is_not_null())
        .then(pl.format("{} Product", brand_text))
        .when(noun.is_not_null())
        .then(noun)
        .otherwise(pl.format("Product {}", product_id))
    )


def read_rees46(path: InputPath, shop_id: str = DEFAULT_SHOP_ID) -> dict[str, pl.DataFrame]:
    """Convert REES46-style event csv(s) to ``{"events", "products", "collections"}`` frames.

    ``path`` is a csv file, a glob ("2019-*.csv") or a list of files. Every column is read as
    text and parsed here, so one bad value cannot fail the file: rows with an unknown
    event_type keep its text, rows with an unparsable event_time keep it as text
    (data_enrichment quarantines both); prices that do not parse become null (counted in the
    log).
    """
    source = str(_common.as_sources(path))
    _common.log_format_notes(FORMAT, MISSING, DERIVED)
    lf = pl.scan_csv(_common.as_sources(path), infer_schema=False)
    _common.require_columns(lf, COLUMNS, _common.first_source(path))

    raw_price = _common.blank_to_null(pl.col("price"))
    lf = lf.select(
        pl.lit(shop_id, dtype=pl.String).alias("shop_id"),
        _common.blank_to_null(pl.col("user_id")).alias("buyer_id"),
        _common.blank_to_null(pl.col("user_session")).alias("session_id"),
        _parse_fast(pl.col("event_time")).dt.cast_time_unit("us").alias(TS_PARSED),
        _common.blank_to_null(pl.col("event_time")).alias(TS_RAW),
        _common.map_event_types(_common.blank_to_null(pl.col("event_type")), EVENT_TYPE_MAP).alias(
            "event_type"
        ),
        _common.blank_to_null(pl.col("product_id")).alias("product_id"),
        pl.lit(None, dtype=pl.String).alias("collection_id"),
        pl.lit(None, dtype=pl.String).alias("query"),
        pl.lit(1, dtype=pl.Int64).alias("quantity"),
        raw_price.cast(pl.Float64, strict=False).alias("price"),
        (raw_price.is_not_null() & raw_price.cast(pl.Float64, strict=False).is_null()).alias(
            "__bad_price"
        ),
        _common.blank_to_null(pl.col("category_id")).alias("__category_id"),
        _common.blank_to_null(pl.col("category_code")).alias("__category_code"),
        _common.blank_to_null(pl.col("brand")).alias("__brand"),
    )
    frame = _reparse_missed(lf.collect(engine="streaming"))
    bad_price = int(frame.get_column("__bad_price").sum() or 0)
    if bad_price:
        logger.warning(
            "%s: %d row(s) have a price that is not a number; set to null", source, bad_price
        )
    no_session = frame.get_column("session_id").null_count()
    if no_session:
        logger.info(
            "%s: %d row(s) have no user_session; data_enrichment sessionises them",
            source,
            no_session,
        )

    # Latest non-empty value per product: rows in time order (stable, so file order breaks
    # ties), then the last non-null value within each product's group.
    product_columns = ("price", "__brand", "__category_code", "__category_id")
    products = (
        frame.lazy()
        .select("product_id", TS_PARSED, *product_columns)
        .filter(pl.col("product_id").is_not_null())
        .sort(TS_PARSED, nulls_last=False, maintain_order=True)
        .group_by("product_id")
        .agg(pl.col(c).last(ignore_nulls=True) for c in product_columns)
        .select(
            pl.lit(shop_id, dtype=pl.String).alias("shop_id"),
            pl.col("product_id"),
            derived_title(pl.col("__brand"), pl.col("__category_code"), pl.col("product_id")).alias(
                "title"
            ),
            category_path(pl.col("__category_code"), pl.col("__category_id")).alias("category"),
            pl.col("__brand").alias("brand"),
            pl.col("price"),
            pl.lit(None, dtype=pl.String).alias("description"),
            pl.lit(None, dtype=pl.Float64).alias("rating"),
            pl.lit(None, dtype=pl.Int64).alias("review_count"),
        )
        .sort("product_id")
        .collect()
    )

    events = frame.drop("__bad_price", "__category_id", "__category_code", "__brand")
    events = _common.finish_timestamps(events, source)
    _common.log_unknown_event_types(events, source)
    logger.info(
        "%s: %d events, %d buyers, %d products (titles derived from brand and category)",
        source,
        events.height,
        events.get_column("buyer_id").n_unique(),
        products.height,
    )
    return _common.conform_tables(events, products, _common.empty_collections())
