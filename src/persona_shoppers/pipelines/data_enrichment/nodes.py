"""Nodes of data_enrichment: thin wrappers that convert frames and call the clickstream library."""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd
import polars as pl

from persona_shoppers.clickstream import buyers, history, sessions, validation

logger = logging.getLogger(__name__)


def validate_events(
    raw_events: pl.DataFrame,
    raw_products: pd.DataFrame,
    raw_collections: pd.DataFrame,
    product_required_for: list[str],
    price_required_for: list[str],
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Check raw events against the contract; return (accepted events, event_quarantine)."""
    result = validation.validate_events(
        raw_events,
        validation.to_polars(raw_products),
        validation.to_polars(raw_collections),
        product_required_for=product_required_for,
        price_required_for=price_required_for,
    )
    return result.accepted, result.quarantine


def sessionise_events(
    validated_events: pl.DataFrame, session_timeout_minutes: float
) -> pl.DataFrame:
    """Fill missing session ids by the inactivity rule: the enriched_events table."""
    return sessions.sessionise(validated_events, float(session_timeout_minutes))


def build_sessions(enriched_events: pl.DataFrame) -> pl.DataFrame:
    """Aggregate enriched events to one row per (shop, buyer, session)."""
    return sessions.build_sessions(enriched_events)


def build_buyers(
    enriched_events: pl.DataFrame,
    enriched_sessions: pl.DataFrame,
    intent_weights: dict[str, float] | None,
) -> pd.DataFrame:
    """The buyer-shop table: 16 raw behavioural features and the funnel stratum (pandas)."""
    table = buyers.build_buyers(enriched_events, enriched_sessions, intent_weights)
    return table.to_pandas()


def build_histories(
    enriched_events: pl.DataFrame, history_options: dict[str, Any] | None
) -> pd.DataFrame:
    """Per-buyer shopping history text for PAARS persona mining (pandas)."""
    options = history_options or {}
    table = history.build_histories(
        enriched_events,
        recent_days=float(options.get("recent_days", 182)),
        reference_time=options.get("reference_time"),
        max_chars=int(options.get("max_chars", 6000)),
    )
    return table.to_pandas()
