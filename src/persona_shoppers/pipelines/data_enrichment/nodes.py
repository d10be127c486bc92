"""Nodes of data_enrichment: thin wrappers that call the clickstream library, each on the
engine of its input (:mod:`persona_shoppers.clickstream.engines`): Spark for a Spark
DataFrame (``kedro run --env spark``), the streaming engine for a lazy scan or buyer buckets
(``--env streaming``), else polars in memory."""

from __future__ import annotations

from typing import Any

import pandas as pd

from persona_shoppers.clickstream.engines import (
    EventTable,
    is_streaming,
    library,
    to_polars_table,
)
from persona_shoppers.clickstream.history import history_arguments
from persona_shoppers.clickstream.streaming import BuyerBuckets


def validate_events(
    raw_events: EventTable,
    raw_products: pd.DataFrame,
    raw_collections: pd.DataFrame,
    product_required_for: list[str],
    price_required_for: list[str],
    rows_per_bucket: int,
) -> tuple[EventTable, EventTable]:
    """Check raw events against the contract; return (accepted events, event_quarantine).

    ``rows_per_bucket`` sizes the buckets of the streaming engine (a lazy ``raw_events``)."""
    streaming = {"rows_per_bucket": int(rows_per_bucket)} if is_streaming(raw_events) else {}
    accepted, quarantine = library(raw_events, "validation").validate_events(
        raw_events,
        raw_products,
        raw_collections,
        product_required_for=product_required_for,
        price_required_for=price_required_for,
        **streaming,
    )
    return accepted, quarantine


def sessionise_events(validated_events: EventTable, session_timeout_minutes: float) -> EventTable:
    """Fill missing session ids by the inactivity rule: the enriched_events table."""
    sessions = library(validated_events, "sessions")
    return sessions.sessionise(validated_events, float(session_timeout_minutes))


def build_sessions(enriched_events: EventTable) -> EventTable:
    """Aggregate enriched events to one row per (shop, buyer, session)."""
    return library(enriched_events, "sessions").build_sessions(enriched_events)


def build_buyers(
    enriched_events: EventTable,
    enriched_sessions: EventTable,
    intent_weights: dict[str, float] | None,
) -> pd.DataFrame:
    """The buyer-shop table: 16 raw behavioural features and the funnel stratum (pandas)."""
    buyers = library(enriched_events, "buyers")
    table = buyers.build_buyers(enriched_events, enriched_sessions, intent_weights)
    return to_polars_table(table).to_pandas()


def build_histories(
    enriched_events: EventTable, history_options: dict[str, Any] | None
) -> pd.DataFrame | BuyerBuckets:
    """Per-buyer shopping history text for PAARS persona mining: pandas, or buyer buckets on
    the streaming engine (as much text as the log, docs/scaling.md)."""
    table = library(enriched_events, "history").build_histories(
        enriched_events, **history_arguments(history_options)
    )
    return table if isinstance(table, BuyerBuckets) else to_polars_table(table).to_pandas()
