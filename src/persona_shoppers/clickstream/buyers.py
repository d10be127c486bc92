"""The buyer-shop table: the 16 raw behavioural features (SimPersona 2.1.1 / Table 5, before its
normalisation) and the funnel stratum A-E of every (shop_id, buyer_id).

See docs/data_enrichment.md, "Outputs" (``buyers``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import polars as pl

from persona_shoppers.clickstream.ordering import same_as_previous, sort_events

logger = logging.getLogger(__name__)

BUYER_KEYS: tuple[str, ...] = ("shop_id", "buyer_id")

# (name, group, definition) in the Table 5 order; the module docstring renders the same table.
FEATURE_TABLE: tuple[tuple[str, str, str], ...] = (
    ("n_sessions", "exposure_volume", "number of sessions"),
    ("active_days", "exposure_volume", "distinct UTC dates with at least one event"),
    ("product_view_sessions", "exposure_volume", "sessions with a product_view"),
    ("atc_sessions", "exposure_volume", "sessions with an add_to_cart"),
    ("checkout_sessions", "exposure_volume", "sessions with a checkout_start"),
    ("purchase_sessions", "exposure_volume", "sessions with a purchase"),
    ("search_sessions", "exposure_volume", "sessions with a search"),
    ("collection_sessions", "exposure_volume", "sessions with a collection_view"),
    ("total_duration_s", "engagement", "sum of session durations in seconds"),
    ("total_product_views", "engagement", "number of product_view events"),
    ("atc_rate", "funnel_rates", "atc_sessions / n_sessions"),
    ("checkout_rate", "funnel_rates", "checkout_sessions / n_sessions"),
    (
        "browse_only_rate",
        "funnel_rates",
        "sessions without add_to_cart, checkout_start or purchase / n_sessions",
    ),
    (
        "intent_strength",
        "intent_strength",
        "(w_atc*atc + w_co*co + w_pur*pur) / (n_sessions + w_atc*atc + w_co*co + w_pur*pur)",
    ),
    ("avg_cart_value", "dollar_values", "mean cart_value over sessions with an add_to_cart"),
    ("avg_order_value", "dollar_values", "mean order_value over sessions with a purchase"),
)
BEHAVIOURAL_FEATURES: list[str] = [name for name, _, _ in FEATURE_TABLE]
FEATURE_GROUPS: dict[str, list[str]] = {
    group: [name for name, g, _ in FEATURE_TABLE if g == group]
    for group in dict.fromkeys(g for _, g, _ in FEATURE_TABLE)
}

# Numerators of the funnel rates (the denominators are n_sessions).
RATE_NUMERATORS: dict[str, str] = {
    "atc_rate": "atc_sessions",
    "checkout_rate": "checkout_sessions",
    "browse_only_rate": "browse_only_sessions",
}
STRATA: dict[str, str] = {
    "A": "purchaser",
    "B": "checkout abandoner",
    "C": "cart builder",
    "D": "window shopper",
    "E": "bouncer",
}
# SimPersona 2.3: the strata with a persona (A-D); A-C get "buy" goals, D (and E) browse.
PERSONA_STRATA: tuple[str, ...] = ("A", "B", "C", "D")
BUYING_STRATA: tuple[str, ...] = ("A", "B", "C")
BROWSING_STRATA: tuple[str, ...] = ("D",)
DEFAULT_INTENT_WEIGHTS: dict[str, float] = {"atc": 3.0, "checkout": 5.0, "purchase": 8.0}
# The session count each intent weight multiplies: weight "atc" -> "atc_sessions", ...
INTENT_COLUMNS: dict[str, str] = {key: f"{key}_sessions" for key in DEFAULT_INTENT_WEIGHTS}
# Session counts per buyer: feature -> the flag of the session table it counts.
SESSION_FLAG_FEATURES: dict[str, str] = {
    "product_view_sessions": "has_product_view",
    "atc_sessions": "has_add_to_cart",
    "checkout_sessions": "has_checkout",
    "purchase_sessions": "has_purchase",
    "search_sessions": "has_search",
    "collection_sessions": "has_collection_view",
}
# A session with any of these flags is not browse-only.
CONVERTING_FLAGS: tuple[str, ...] = ("has_add_to_cart", "has_checkout", "has_purchase")
# The stratum cascade: the first stratum whose column is positive, else FALLBACK_STRATUM.
STRATUM_RULES: tuple[tuple[str, str], ...] = (
    ("A", "purchase_sessions"),
    ("B", "checkout_sessions"),
    ("C", "atc_sessions"),
    ("D", "total_product_views"),
)
FALLBACK_STRATUM = "E"
BUYER_COLUMNS: tuple[str, ...] = (
    *BUYER_KEYS,
    *BEHAVIOURAL_FEATURES,
    "stratum",
    "browse_only_sessions",
    "first_seen",
    "last_seen",
)


def stratum_expr() -> pl.Expr:
    """The funnel stratum A-E by priority cascade over the buyer features (STRATUM_RULES)."""
    (first, column), *rest = STRATUM_RULES
    cascade = pl.when(pl.col(column) > 0).then(pl.lit(first))
    for stratum, column in rest:
        cascade = cascade.when(pl.col(column) > 0).then(pl.lit(stratum))
    return cascade.otherwise(pl.lit(FALLBACK_STRATUM))


def intent_column_weights(weights: Mapping[str, float] | None = None) -> dict[str, float]:
    """Session-count column -> its weight in intent_strength (defaults where not given)."""
    w = {**DEFAULT_INTENT_WEIGHTS, **(weights or {})}
    return {column: float(w[key]) for key, column in INTENT_COLUMNS.items()}


def intent_strength_expr(weights: Mapping[str, float] | None = None) -> pl.Expr:
    """SimPersona eq. 3 over session counts; weights keys ``atc``, ``checkout``, ``purchase``."""
    committed = pl.sum_horizontal(
        weight * pl.col(column) for column, weight in intent_column_weights(weights).items()
    )
    return committed / (pl.col("n_sessions") + committed)


def build_buyers(
    events: pl.DataFrame,
    sessions: pl.DataFrame,
    intent_weights: Mapping[str, float] | None = None,
) -> pl.DataFrame:
    """One row per (shop_id, buyer_id): the 16 features, stratum, first_seen, last_seen.

    ``sessions`` is the enriched session table; ``events`` (enriched events) give active
    days. Also keeps ``browse_only_sessions`` (the browse_only_rate numerator). Sorted by
    shop_id, buyer_id.
    """
    keys = list(BUYER_KEYS)
    # events in EVENT_ORDER: a new active day is a row whose (shop, buyer, date) differs
    # from the previous row's, so distinct days are counted without hashing every event.
    days = (
        sort_events(events)
        .select(*keys, pl.col("ts").dt.date().alias("_date"))
        .filter(~same_as_previous(*keys, "_date"))
        .group_by(keys)
        .agg(pl.len().cast(pl.Int64).alias("active_days"))
    )
    converting = pl.any_horizontal(CONVERTING_FLAGS)
    n = pl.col("n_sessions")
    buyers = (
        sessions.group_by(keys)
        .agg(
            pl.len().cast(pl.Int64).alias("n_sessions"),
            *(
                pl.col(flag).sum().cast(pl.Int64).alias(name)
                for name, flag in SESSION_FLAG_FEATURES.items()
            ),
            (~converting).sum().cast(pl.Int64).alias("browse_only_sessions"),
            pl.col("duration_s").sum().cast(pl.Float64).alias("total_duration_s"),
            pl.col("n_product_views").sum().cast(pl.Int64).alias("total_product_views"),
            pl.col("cart_value").filter(pl.col("has_add_to_cart")).mean().alias("avg_cart_value"),
            pl.col("order_value").filter(pl.col("has_purchase")).mean().alias("avg_order_value"),
            pl.col("session_start").min().alias("first_seen"),
            pl.col("session_end").max().alias("last_seen"),
        )
        .join(days, on=keys, how="left")
        .with_columns(
            pl.col("active_days").fill_null(0),
            *((pl.col(numerator) / n).alias(rate) for rate, numerator in RATE_NUMERATORS.items()),
            intent_strength_expr(intent_weights).alias("intent_strength"),
            pl.col("avg_cart_value").fill_null(0.0).cast(pl.Float64),
            pl.col("avg_order_value").fill_null(0.0).cast(pl.Float64),
        )
        .with_columns(stratum_expr().alias("stratum"))
        .select(BUYER_COLUMNS)
        .sort(keys)
    )
    log_strata(buyers)
    return buyers


def log_strata(buyers: pl.DataFrame) -> None:
    """Log the number of buyer-shop rows and of rows per stratum."""
    counts = buyers.group_by("stratum").len().sort("stratum")
    logger.info(
        "built %d buyer-shop rows; strata %s",
        buyers.height,
        dict(zip(counts["stratum"].to_list(), counts["len"].to_list(), strict=True)),
    )
