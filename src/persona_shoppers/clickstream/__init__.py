"""Clickstream library: validation, sessionisation, session / buyer tables, histories.

The data_enrichment pipeline's nodes call these functions; notebooks and other pipelines can
import them too (e.g. ``BEHAVIOURAL_FEATURES`` for feature_engineering). Everything is
vectorised polars; the subpackage ``spark`` holds the same event-scale steps for Spark
DataFrames (imported only where used, so pyspark stays optional).
"""

from persona_shoppers.clickstream.buyers import (
    BEHAVIOURAL_FEATURES,
    FEATURE_GROUPS,
    FEATURE_TABLE,
    STRATA,
    build_buyers,
    intent_strength_expr,
    stratum_expr,
)
from persona_shoppers.clickstream.history import build_histories, resolve_reference_time
from persona_shoppers.clickstream.ordering import EVENT_ORDER, is_event_ordered, sort_events
from persona_shoppers.clickstream.sessions import (
    SESSION_COLUMNS,
    SESSION_KEYS,
    build_sessions,
    session_keys,
    sessionise,
)
from persona_shoppers.clickstream.validation import (
    QUARANTINE_REASONS,
    ValidationResult,
    conform_collections,
    conform_products,
    parse_timestamps,
    quarantine_counts,
    validate_events,
)

__all__ = [
    "BEHAVIOURAL_FEATURES",
    "EVENT_ORDER",
    "FEATURE_GROUPS",
    "FEATURE_TABLE",
    "QUARANTINE_REASONS",
    "SESSION_COLUMNS",
    "SESSION_KEYS",
    "STRATA",
    "ValidationResult",
    "build_buyers",
    "build_histories",
    "build_sessions",
    "conform_collections",
    "conform_products",
    "intent_strength_expr",
    "is_event_ordered",
    "parse_timestamps",
    "quarantine_counts",
    "resolve_reference_time",
    "session_keys",
    "sessionise",
    "sort_events",
    "stratum_expr",
    "validate_events",
]
