"""Nodes of data_enrichment: thin wrappers that call the clickstream library, each on the
engine of its input: Spark for a Spark DataFrame (``kedro run --env spark``), else polars."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

import pandas as pd
import polars as pl

from persona_shoppers.clickstream.spark import SparkFrame, is_spark_frame


def _library(frame: pl.DataFrame | SparkFrame, module: str) -> ModuleType:
    """The clickstream module ``module`` of ``frame``'s engine (``clickstream.spark.<module>``
    for a Spark DataFrame, imported only then)."""
    engine = "clickstream.spark" if is_spark_frame(frame) else "clickstream"
    return importlib.import_module(f"persona_shoppers.{engine}.{module}")


def _to_pandas(table: pl.DataFrame | SparkFrame) -> pd.DataFrame:
    """A buyer-scale table as pandas; a Spark one is collected to the driver first."""
    if is_spark_frame(table):
        from persona_shoppers.clickstream.spark.frames import to_polars

        table = to_polars(table)
    return table.to_pandas()


def validate_events(
    raw_events: pl.DataFrame | SparkFrame,
    raw_products: pd.DataFrame,
    raw_collections: pd.DataFrame,
    product_required_for: list[str],
    price_required_for: list[str],
) -> tuple[pl.DataFrame | SparkFrame, pl.DataFrame | SparkFrame]:
    """Check raw events against the contract; return (accepted events, event_quarantine)."""
    accepted, quarantine = _library(raw_events, "validation").validate_events(
        raw_events,
        raw_products,
        raw_collections,
        product_required_for=product_required_for,
        price_required_for=price_required_for,
    )
    return accepted, quarantine


def sessionise_events(
    validated_events: pl.DataFrame | SparkFrame, session_timeout_minutes: float
) -> pl.DataFrame | SparkFrame:
    """Fill missing session ids by the inactivity rule: the enriched_events table."""
    sessions = _library(validated_events, "sessions")
    return sessions.sessionise(validated_events, float(session_timeout_minutes))


def build_sessions(enriched_events: pl.DataFrame | SparkFrame) -> pl.DataFrame | SparkFrame:
    """Aggregate enriched events to one row per (shop, buyer, session)."""
    return _library(enriched_events, "sessions").build_sessions(enriched_events)


def build_buyers(
    enriched_events: pl.DataFrame | SparkFrame,
    enriched_sessions: pl.DataFrame | SparkFrame,
    intent_weights: dict[str, float] | None,
) -> pd.DataFrame:
    """The buyer-shop table: 16 raw behavioural features and the funnel stratum (pandas)."""
    buyers = _library(enriched_events, "buyers")
    return _to_pandas(buyers.build_buyers(enriched_events, enriched_sessions, intent_weights))


def build_histories(
    enriched_events: pl.DataFrame | SparkFrame, history_options: dict[str, Any] | None
) -> pd.DataFrame:
    """Per-buyer shopping history text for PAARS persona mining (pandas)."""
    options = history_options or {}
    table = _library(enriched_events, "history").build_histories(
        enriched_events,
        recent_days=float(options.get("recent_days", 182)),
        reference_time=options.get("reference_time"),
        max_chars=int(options.get("max_chars", 6000)),
    )
    return _to_pandas(table)
