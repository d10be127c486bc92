"""A small clickstream in REES46's csv format (several shops), as a user downloads it: no
planted truth, no searches, no checkout events, derived titles.

The shoppers' behaviour comes from the synthetic generator, written out in the public
format and read back through the adapter, so the end-to-end tests exercise what a real log
lacks rather than what the generator adds.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from persona_shoppers.adapters import concat_raw, read_rees46, write_raw
from persona_shoppers.adapters.rees46 import COLUMNS, EVENT_TYPE_MAP
from persona_shoppers.synthetic import SyntheticConfig, generate

# contract event type -> REES46 event_type (the adapter's map, inverted); the format has no
# other kinds of event.
REES46_TYPES = {contract: rees46 for rees46, contract in EVENT_TYPE_MAP.items()}


def rees46_csv(events: pl.DataFrame, products: pl.DataFrame) -> pl.DataFrame:
    """One shop's events as REES46 rows: numeric-looking ids, ``electronics.smartphone``-style
    category codes, lower-case brands, every third session without ``user_session`` (so
    ``data_enrichment`` sessionises it)."""
    catalog = products.select(
        "product_id",
        pl.col("category").hash(seed=1).cast(pl.String).alias("category_id"),
        pl.col("category")
        .str.to_lowercase()
        .str.replace_all(" > ", ".", literal=True)
        .str.replace_all(" ", "_", literal=True)
        .alias("category_code"),
        pl.col("brand").str.to_lowercase().alias("brand"),
    )
    session_rank = pl.col("session_id").rank("dense")
    return (
        events.filter(pl.col("event_type").is_in(list(REES46_TYPES)))
        .join(catalog, on="product_id", how="left")
        .select(
            pl.col("ts").dt.strftime("%Y-%m-%d %H:%M:%S UTC").alias("event_time"),
            pl.col("event_type").replace_strict(REES46_TYPES),
            "product_id",
            "category_id",
            "category_code",
            "brand",
            pl.col("price").round(2),
            pl.col("buyer_id").alias("user_id"),
            pl.when(session_rank % 3 != 0).then(pl.col("session_id")).alias("user_session"),
        )
        .select(COLUMNS)
    )


def write_rees46_shops(folder: Path, buyers_per_shop: int = 60, n_shops: int = 4) -> list[Path]:
    """One REES46 csv per shop under ``folder``, plus two rows a real export has: an event
    type the format's mapping does not know (``compare``) and a broken timestamp."""
    data = generate(
        SyntheticConfig(
            n_shops=n_shops, n_eval_shops=1, products_per_shop=40, buyers_per_shop=buyers_per_shop
        ),
        progress=False,
    )
    products = pl.from_pandas(data.products)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for shop in sorted(products["shop_id"].unique()):
        rows = rees46_csv(
            data.events.filter(pl.col("shop_id") == shop),
            products.filter(pl.col("shop_id") == shop),
        )
        odd = rows.head(2).with_columns(
            pl.Series("event_type", ["compare", "view"]),
            pl.Series("event_time", [rows["event_time"][0], "not a time"]),
        )
        path = folder / f"{shop}.csv"
        pl.concat([rows, odd]).write_csv(path)
        paths.append(path)
    return paths


def real_format_raw(folder: Path, out: Path, **shops) -> dict[str, Path]:
    """The REES46 files of :func:`write_rees46_shops` converted by the adapter (each file its
    own shop) and written as a raw layer to ``out``; returns the written paths."""
    tables = [read_rees46(path, shop_id=path.stem) for path in write_rees46_shops(folder, **shops)]
    return write_raw(concat_raw(tables), out)
