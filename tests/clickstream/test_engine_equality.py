"""The Spark and the streaming engines of data_enrichment give the polars engine's rows for
every output.

The data_enrichment pipeline runs twice on the same raw events, read from one parquet file:
once on polars frames, once on the other engine's input (each node picks its engine from its
input): Spark DataFrames in local mode, or a lazy polars scan split into buyer buckets. The
quarantine, the enriched events and sessions (collected to polars) and the buyer tables
(pandas in every engine) must hold the same rows, floats to 1e-9. Spark's session time zone is
not UTC and the file is read in several partitions; the streaming engine gets buckets of a
sixth of the rows; so neither can hide a difference.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import polars as pl
import pytest
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner
from polars.testing import assert_frame_equal

from persona_shoppers.clickstream.engines import is_event_scale, to_polars_table
from persona_shoppers.clickstream.ordering import sort_events
from persona_shoppers.clickstream.selection import events_in_shops, events_of
from persona_shoppers.clickstream.streaming import split_by_buyer
from persona_shoppers.clickstream.validation import parse_timestamps
from persona_shoppers.contract import SchemaError
from persona_shoppers.hooks import spark_unavailable
from persona_shoppers.pipelines.data_enrichment import create_pipeline
from persona_shoppers.synthetic import SyntheticConfig, generate

from ..pipelines._kedro import KeptDataset, conf_params, param_datasets
from ._frames import collections, products, raw_events

# pyspark 4.3 warns on every pandas >= 3; the engine hands frames over through Arrow
pytestmark = pytest.mark.filterwarnings(
    "ignore:PySpark does not yet fully support pandas:FutureWarning"
)
ENGINES = [
    "streaming",
    pytest.param(
        "spark",
        marks=pytest.mark.skipif(
            spark_unavailable() is not None, reason=f"Spark engine: {spark_unavailable()}"
        ),
    ),
]

# Each output's key: rows are compared in its order.
OUTPUT_KEYS: dict[str, list[str]] = {
    "event_quarantine": ["source_row"],
    "enriched_events": ["source_row"],
    "enriched_sessions": ["shop_id", "buyer_id", "session_id"],
    "buyers": ["shop_id", "buyer_id"],
    "buyer_histories": ["shop_id", "buyer_id"],
}
# Outputs compared as the in-memory engine gives them, pandas.
PANDAS_OUTPUTS = ("buyers", "buyer_histories")
T0 = datetime(2026, 3, 14, 10, tzinfo=UTC)


@pytest.fixture(scope="module")
def spark_session():
    from pyspark.sql import SparkSession

    session = (
        SparkSession.builder.master("local[2]")
        .appName("test_spark_equality")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.sql.session.timeZone", "America/New_York")
        .config("spark.sql.files.maxPartitionBytes", "16k")  # several partitions per file
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture(params=ENGINES)
def engine(request) -> Callable[[Path], Any]:
    """How the engine under test reads a parquet file of raw events."""
    if request.param == "spark":
        session = request.getfixturevalue("spark_session")
        return lambda path: session.read.parquet(str(path))
    return pl.scan_parquet


def _run(
    events: pl.DataFrame | Any, products: pd.DataFrame, collections: pd.DataFrame, params: dict
) -> dict[str, pl.DataFrame | pd.DataFrame]:
    """The pipeline's outputs, each in its key's order: polars frames (a Spark frame collected)
    and the buyer tables as the pipeline gives them, pandas."""
    catalog = DataCatalog(
        {
            "raw_events": MemoryDataset(events),
            "raw_products": MemoryDataset(products),
            "raw_collections": MemoryDataset(collections),
            **param_datasets(data_enrichment=params),
            **{name: KeptDataset() for name in OUTPUT_KEYS},
        }
    )
    SequentialRunner().run(create_pipeline(), catalog)
    outputs = {}
    for name, keys in OUTPUT_KEYS.items():
        table = catalog.load(name)
        if not isinstance(table, pd.DataFrame):
            assert is_event_scale(table) == is_event_scale(events)  # the input's engine ran
            table = to_polars_table(table)
        if name in PANDAS_OUTPUTS and isinstance(table, pl.DataFrame):  # histories in buckets
            table = table.to_pandas()
        if isinstance(table, pd.DataFrame):
            outputs[name] = table.sort_values(keys, ignore_index=True)
        else:
            outputs[name] = table.sort(keys)
    return outputs


def _assert_same_outputs(
    engine, tmp_path: Path, events: pl.DataFrame, products, collections, **history: Any
) -> dict[str, pl.DataFrame | pd.DataFrame]:
    """Run polars and ``engine`` on ``events`` (written to parquet) and compare every output;
    return the polars engine's."""
    params = conf_params("data_enrichment")
    params["history"].update(history)
    params["rows_per_bucket"] = max(1, events.height // 6)  # six buckets or so
    path = tmp_path / "events.parquet"
    events.write_parquet(path, row_group_size=200)  # several row groups, several partitions
    expected = _run(pl.read_parquet(path), products, collections, params)
    got = _run(engine(path), products, collections, params)
    for name, table in expected.items():
        try:
            if isinstance(table, pd.DataFrame):
                pd.testing.assert_frame_equal(got[name], table, rtol=1e-9, atol=1e-9)
            else:
                assert_frame_equal(got[name], table, rel_tol=1e-9, abs_tol=1e-9)
        except AssertionError as difference:
            raise AssertionError(f"{name}: {difference}") from None
    return expected


def test_generated_sample(engine, tmp_path):
    data = generate(
        SyntheticConfig(n_shops=3, n_eval_shops=1, products_per_shop=40, buyers_per_shop=60),
        progress=False,
    )
    events = data.events.with_columns(  # every third session id missing: sessionised
        pl.when(pl.int_range(pl.len()) % 3 == 0)
        .then(None)
        .otherwise(pl.col("session_id"))
        .alias("session_id")
    )
    # some rows to quarantine, with timestamps (not text): duplicates and an unknown type
    events = pl.concat(
        [
            events,
            events.slice(10, 5),
            events.slice(40, 1).with_columns(pl.lit("wishlist").alias("event_type")),
        ]
    )
    # a short recent window and a small budget: older purchases and truncated histories
    out = _assert_same_outputs(
        engine, tmp_path, events, data.products, data.collections, recent_days=30, max_chars=400
    )
    assert out["event_quarantine"]["reason"].value_counts().sort("reason").rows() == [
        ("duplicate", 5),
        ("unknown_event_type", 1),
    ]
    histories = out["buyer_histories"]
    assert histories["truncated"].any() and (histories["n_older_purchases"] > 0).any()


def _edge_rows() -> list[dict[str, Any]]:
    """Raw rows (ts as text) for every rule and corner of the engines."""

    def row(buyer: str | None, ts: float | str | None, kind: str | None, **fields: Any) -> dict:
        text = ts if ts is None or isinstance(ts, str) else (T0 + timedelta(minutes=ts)).isoformat()
        return {"shop_id": "s1", "buyer_id": buyer, "ts": text, "event_type": kind, **fields}

    p1, p2, day = {"product_id": "p1"}, {"product_id": "p2"}, 60 * 24
    return [
        # a gap of exactly 30 minutes starts a session, 29:59 does not
        row("gap", 0, "product_view", **p1),
        row("gap", 29 + 59 / 60, "product_view", **p1),
        row("gap", 59 + 59 / 60, "product_view", **p1),
        row("gap", 90, "page_view"),
        # given session ids (one blank) among missing ones; given ones do not break gaps
        row("mixed", 0, "product_view", session_id="given-1", **p1),
        row("mixed", 5, "product_view", **p1),
        row("mixed", 20, "product_view", session_id="given-2", **p1),
        row("mixed", 40, "product_view", session_id="  ", **p1),
        # a purchase without a checkout, a repeated checkout, searches, collection views
        row("buyer", 0, "search", query="trail shoes"),
        row("buyer", 1, "collection_view", collection_id="c1"),
        row("buyer", 2, "product_view", **p1),
        row("buyer", 2, "product_view", **p2),  # the same ts: source_row orders them
        row("buyer", 3, "add_to_cart", quantity=2, price=12.5, **p1),
        row("buyer", 4, "purchase", quantity=2, price=12.5, **p1),
        row("buyer", day, "checkout_start"),
        row("buyer", day + 1, "checkout_start"),
        row("buyer", day + 2, "add_to_cart", **p2),  # price from the catalog
        # older purchases (before a 3-day window), one in another shop
        row("buyer", -10 * day, "purchase", price=5.0, **p2),
        row("buyer", -9 * day, "purchase", price=30.0, shop_id="s2", **p1),
        # duplicates: exact repeats (one with a NaN price), and a near repeat
        row("dup", 0, "page_view", price=float("nan")),
        row("dup", 0, "page_view", price=float("nan")),
        row("dup", 1, "product_view", quantity=1, **p1),
        row("dup", 1, "product_view", quantity=1, **p1),
        row("dup", 1, "product_view", quantity=2, **p1),
        # the same instant written two ways does not repeat the raw row
        row("dup", "2026-03-14T10:05:00Z", "page_view"),
        row("dup", "2026-03-14 10:05:00+00:00", "page_view"),
        # timestamps: accepted variants and unparsable ones
        row("ts", " 2026-03-14T12:00:00.5Z ", "page_view"),
        row("ts", "2026-03-14 13:00:00+0230", "page_view"),
        row("ts", "2026-03-15", "page_view"),
        row("ts", "2026-03-14T23:59:60", "page_view"),
        row("ts", "yesterday", "page_view"),
        row("ts", "2026-02-30T10:00:00", "page_view"),
        row("ts", "", "page_view"),
        row("ts", None, "page_view"),
        # every other rule
        row("rules", 0, "page_view", shop_id=None),
        row(" \u00a0", 0, "page_view"),
        row("rules", 0, "wishlist"),
        row("rules", 0, None),
        row("rules", 0, "product_view"),
        row("rules", 0, "product_view", product_id="p9"),
        row("rules", 0, "add_to_cart", product_id="p_noprice"),
        row("rules", 0, "purchase", price=-1.0, **p1),
        row("rules", 0, "search", query=" "),
        row("rules", 0, "collection_view", collection_id="c9"),
        row("rules", 1, "add_to_cart", **p2),
    ]


def test_edge_cases(engine, tmp_path):
    out = _assert_same_outputs(
        engine,
        tmp_path,
        raw_events(_edge_rows()),
        products(),
        collections(),
        recent_days=3,
        max_chars=120,
    )
    reasons = out["event_quarantine"]["reason"].value_counts()
    assert dict(reasons.rows()) == {
        "missing_shop_id": 1,
        "missing_buyer_id": 1,
        "unparsable_timestamp": 4,
        "unknown_event_type": 2,
        "missing_product_id": 1,
        "product_not_in_catalog": 1,
        "missing_price": 1,
        "negative_price": 1,
        "missing_query": 1,
        "unknown_collection": 1,
        "duplicate": 2,
    }
    sessions = out["enriched_events"].filter(pl.col("buyer_id") == "gap")["session_id"]
    assert sessions.to_list() == ["gap-s1", "gap-s1", "gap-s2", "gap-s3"]
    buyers = out["buyers"].set_index(["shop_id", "buyer_id"])
    assert buyers.loc[("s1", "buyer"), "stratum"] == "A"  # purchased without a checkout


def test_timestamps_without_zone_read_as_utc(engine, tmp_path):
    events = raw_events(_edge_rows()[:18]).with_columns(
        parse_timestamps("ts").dt.replace_time_zone(None)
    )
    assert events.schema["ts"] == pl.Datetime("us")  # Spark reads it as TIMESTAMP_NTZ
    _assert_same_outputs(engine, tmp_path, events, products(), collections())


def test_raw_events_schema_checked_as_in_polars(engine, tmp_path):
    path = tmp_path / "events.parquet"
    raw_events([{"shop_id": "s1", "buyer_id": "b", "ts": "2026-03-14"}]).drop(
        "buyer_id"
    ).write_parquet(path)
    with pytest.raises(SchemaError, match="'buyer_id'"):
        _run(engine(path), products(), collections(), conf_params("data_enrichment"))


def test_the_later_stages_selections_give_the_same_rows_on_every_engine(request, engine):
    """held_out_events and trace_events: filtered on the engine, then collected in polars
    order."""
    data = generate(
        SyntheticConfig(n_shops=3, n_eval_shops=1, products_per_shop=40, buyers_per_shop=30),
        progress=False,
    )
    params = conf_params("data_enrichment")
    enriched = _run(data.events, data.products, data.collections, params)["enriched_events"]
    polars_events = sort_events(enriched)  # the polars engine's order (_run sorts by row)
    if "spark" in request.node.callspec.id:
        session = request.getfixturevalue("spark_session")
        engine_events = session.createDataFrame(polars_events.to_arrow()).repartition(3)
    else:
        engine_events = split_by_buyer(polars_events.lazy(), polars_events.height // 4)
    shops = polars_events["shop_id"].unique().sort()[:2].to_list()
    assert_frame_equal(events_in_shops(engine_events, shops), events_in_shops(polars_events, shops))
    keys = polars_events.select("shop_id", "buyer_id").unique().sort("buyer_id").head(5)
    picked = events_of(polars_events, keys)
    assert_frame_equal(events_of(engine_events, keys), picked)
    assert set(picked["buyer_id"]) == set(keys["buyer_id"])
    assert picked.height == polars_events.join(keys, on=["shop_id", "buyer_id"]).height
