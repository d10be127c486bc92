"""Helpers shared by the adapters: timestamp finishing, conforming, summaries, writing."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import polars as pl

from persona_shoppers import contract

logger = logging.getLogger(__name__)

# ``InputPath`` is one file, a glob pattern ("2019-*.csv") or a list of files; polars scans
# them all as one lazy frame.
InputPath = str | Path | Sequence[str | Path]

# Text form of a parsed timestamp, used only when some rows of a file have an unparsable ts
# and the whole column has to travel as text (see :func:`finish_timestamps`).
ISO_FORMAT = "%Y-%m-%dT%H:%M:%S%.6f+00:00"

TS_PARSED = "__ts_parsed"
TS_RAW = "__ts_raw"

TABLES = ("events", "products", "collections")


def as_sources(path: InputPath) -> str | list[str]:
    """Normalise an input path (file, glob or list) to what ``pl.scan_*`` accepts."""
    if isinstance(path, str | Path):
        return str(path)
    return [str(p) for p in path]


def first_source(path: InputPath) -> str:
    return as_sources(path) if isinstance(path, str | Path) else str(list(path)[0])


def blank_to_null(expr: pl.Expr) -> pl.Expr:
    """Trim text and turn empty strings into nulls."""
    text = expr.cast(pl.String).str.strip_chars()
    return pl.when(text == "").then(None).otherwise(text)


def map_event_types(raw: pl.Expr, mapping: dict[str, str]) -> pl.Expr:
    """Map a format's event vocabulary onto the contract's; unknown values keep their text.

    Unknown types are not dropped: data_enrichment quarantines them with a reason.
    """
    return raw.replace(mapping)


# Epoch values below this are seconds, above it milliseconds (1e11 s is the year 5138,
# 1e11 ms is 1973).
SECONDS_THRESHOLD = 1e11


def _epoch_number(raw: pl.Expr) -> pl.Expr:
    num = raw.cast(pl.String).str.strip_chars().cast(pl.Float64, strict=False)
    return pl.when(num.is_finite()).then(num)


def epoch_is_seconds(raw: pl.Expr) -> pl.Expr:
    """True where an epoch value (text or number) is small enough to be seconds."""
    return _epoch_number(raw) < SECONDS_THRESHOLD


def parse_epoch(raw: pl.Expr) -> pl.Expr:
    """Epoch seconds or milliseconds (detected per value by magnitude) to a UTC datetime.

    Values that are not numbers give null (the caller keeps the raw text).
    """
    num = _epoch_number(raw)
    micros = pl.when(num < SECONDS_THRESHOLD).then(num * 1e6).otherwise(num * 1e3)
    return micros.round(0).cast(pl.Int64).cast(pl.Datetime("us", "UTC"))


def require_columns(lf: pl.LazyFrame, columns: Sequence[str], source: str) -> None:
    """Raise :class:`contract.SchemaError` naming the file when an input column is missing."""
    present = set(lf.collect_schema().names())
    for column in columns:
        if column not in present:
            raise contract.SchemaError(source, column, "required input column is missing")


def finish_timestamps(frame: pl.DataFrame, source: str) -> pl.DataFrame:
    """Turn the parsed/raw timestamp helper columns into the contract's ``ts`` column.

    ``frame`` carries ``__ts_parsed`` (UTC datetime, null where parsing failed) and
    ``__ts_raw`` (the original text). When every non-null raw value parsed, ``ts`` is a UTC
    datetime. Otherwise the whole column becomes text: parsed values as ISO-8601 UTC text,
    unparsable ones as their original text, so data_enrichment parses it row by row and
    quarantines only the bad rows (nothing is dropped here).
    """
    bad_mask = pl.col(TS_PARSED).is_null() & pl.col(TS_RAW).is_not_null()
    bad = frame.filter(bad_mask)
    if bad.height == 0:
        ts = pl.col(TS_PARSED)
    else:
        examples = bad.get_column(TS_RAW).unique(maintain_order=True).head(5).to_list()
        logger.warning(
            "%s: %d row(s) have an unparsable timestamp (e.g. %s); they are kept with ts as "
            "text and data_enrichment quarantines them as unparsable",
            source,
            bad.height,
            examples,
        )
        ts = (
            pl.when(pl.col(TS_PARSED).is_not_null())
            .then(pl.col(TS_PARSED).dt.strftime(ISO_FORMAT))
            .otherwise(pl.col(TS_RAW))
        )
    missing = frame.filter(pl.col(TS_RAW).is_null()).height
    if missing:
        logger.warning("%s: %d row(s) have no timestamp at all; kept with ts null", source, missing)
    return frame.with_columns(ts.alias("ts")).drop(TS_PARSED, TS_RAW)


def log_unknown_event_types(events: pl.DataFrame, source: str) -> None:
    unknown = (
        events.filter(~pl.col("event_type").is_in(contract.EVENT_TYPES))
        .group_by("event_type")
        .len()
        .sort("len", descending=True)
    )
    if unknown.height:
        counts = dict(zip(unknown["event_type"].to_list(), unknown["len"].to_list(), strict=True))
        logger.warning(
            "%s: %d row(s) have an event type outside the contract %s; kept with their original "
            "text, data_enrichment quarantines them",
            source,
            int(unknown["len"].sum()),
            counts,
        )


def log_format_notes(fmt: str, missing: Sequence[str], derived: Sequence[str]) -> None:
    for item in missing:
        logger.info("%s format lacks: %s", fmt, item)
    for item in derived:
        logger.info("%s adapter derives: %s", fmt, item)


def placeholder_products(events: pl.DataFrame, shop_id: str) -> pl.DataFrame:
    """One product row per product_id seen, title 'Product {id}', every attribute null."""
    ids = events.get_column("product_id").drop_nulls().unique().sort()
    return pl.DataFrame({"product_id": ids}, schema={"product_id": pl.String}).select(
        pl.lit(shop_id, dtype=pl.String).alias("shop_id"),
        pl.col("product_id"),
        pl.format("Product {}", pl.col("product_id")).alias("title"),
        pl.lit(None, dtype=pl.String).alias("category"),
        pl.lit(None, dtype=pl.String).alias("brand"),
        pl.lit(None, dtype=pl.Float64).alias("price"),
        pl.lit(None, dtype=pl.String).alias("description"),
        pl.lit(None, dtype=pl.Float64).alias("rating"),
        pl.lit(None, dtype=pl.Int64).alias("review_count"),
    )


def empty_collections() -> pl.DataFrame:
    return pl.DataFrame(schema=contract.COLLECTION_SCHEMA)


def conform_tables(
    events: pl.DataFrame, products: pl.DataFrame, collections: pl.DataFrame
) -> dict[str, pl.DataFrame]:
    """Run the three tables through :func:`contract.conform` (contract columns, in order)."""
    return {
        "events": contract.conform(
            events.select(list(contract.EVENT_SCHEMA)),
            contract.EVENT_SCHEMA,
            "events",
            contract.OPTIONAL_EVENT_COLUMNS,
        ),
        "products": contract.conform(
            products.select(list(contract.PRODUCT_SCHEMA)), contract.PRODUCT_SCHEMA, "products"
        ),
        "collections": contract.conform(
            collections.select(list(contract.COLLECTION_SCHEMA)),
            contract.COLLECTION_SCHEMA,
            "collections",
        ),
    }


def read_raw(folder: str | Path) -> dict[str, pl.DataFrame]:
    """The tables :func:`write_raw` wrote to ``folder``."""
    return {name: pl.read_parquet(Path(folder) / f"{name}.parquet") for name in TABLES}


def concat_raw(datasets: Sequence[dict[str, pl.DataFrame]]) -> dict[str, pl.DataFrame]:
    """Several converted logs (one per shop, or per format) as one raw dataset.

    Shop ids must not repeat across them: two logs under one ``shop_id`` would merge their
    catalogs. Where one log's ``ts`` travels as text (it has unparsable rows), the others'
    parsed timestamps are written as ISO text too, so the column keeps one type."""
    seen: dict[str, int] = {}
    for i, tables in enumerate(datasets):
        for shop in tables["events"]["shop_id"].unique().drop_nulls().to_list():
            if shop in seen:
                raise ValueError(
                    f"concat_raw: shop_id {shop!r} is in dataset {seen[shop]} and dataset {i}; "
                    "give each log its own shop_id"
                )
            seen[shop] = i
    ts_text = any(t["events"].schema["ts"] == pl.String for t in datasets)
    events = [
        t["events"].with_columns(pl.col("ts").dt.strftime(ISO_FORMAT))
        if ts_text and t["events"].schema["ts"] != pl.String
        else t["events"]
        for t in datasets
    ]
    return {
        "events": pl.concat(events),
        **{name: pl.concat([t[name] for t in datasets]) for name in TABLES if name != "events"},
    }


def summarize(tables: dict[str, pl.DataFrame]) -> dict[str, object]:
    """Counts for a converted dataset: rows per table, buyers, sessions, event-type mix."""
    events = tables["events"]
    type_counts = events.group_by("event_type").len().sort("len", descending=True)
    return {
        "events": events.height,
        "products": tables["products"].height,
        "collections": tables["collections"].height,
        "buyers": events.get_column("buyer_id").n_unique(),
        "sessions": events.get_column("session_id").drop_nulls().n_unique(),
        "events_without_session": events.get_column("session_id").null_count(),
        "event_types": dict(
            zip(type_counts["event_type"].to_list(), type_counts["len"].to_list(), strict=True)
        ),
        "ts_as_text": events.schema["ts"] == pl.String,
    }


def write_raw(tables: dict[str, pl.DataFrame], out_dir: str | Path) -> dict[str, Path]:
    """Write events/products/collections as ``<out_dir>/<name>.parquet``; returns the paths.

    An empty ``collection_products.parquet`` (the optional membership table) is written too,
    unless ``tables`` holds one, so that a membership table left in ``out_dir`` by another
    dataset (the synthetic sample) is not mixed with the converted one.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name in TABLES:
        path = out / f"{name}.parquet"
        tables[name].write_parquet(path)
        paths[name] = path
    memberships = tables.get(
        "collection_products", pl.DataFrame(schema=contract.COLLECTION_PRODUCT_SCHEMA)
    )
    paths["collection_products"] = out / "collection_products.parquet"
    memberships.write_parquet(paths["collection_products"])
    stale = out / "planted_truth.json"
    if stale.exists():
        logger.warning(
            "%s belongs to the synthetic sample, not to this dataset; remove it (or write to a "
            "fresh folder) before checks that compare against the planted truth",
            stale,
        )
    return paths
