"""Spark version of :mod:`persona_shoppers.clickstream.buyers`: the 16 behavioural features and
the stratum of every (shop_id, buyer_id), from the same tables of features and rules."""

from __future__ import annotations

from collections.abc import Mapping
from functools import reduce

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from persona_shoppers.clickstream.buyers import (
    BUYER_COLUMNS,
    BUYER_KEYS,
    CONVERTING_FLAGS,
    FALLBACK_STRATUM,
    RATE_NUMERATORS,
    SESSION_FLAG_FEATURES,
    STRATUM_RULES,
    intent_column_weights,
)
from persona_shoppers.clickstream.spark.frames import utc_date


def stratum() -> Column:
    """The funnel stratum A-E by the priority cascade of STRATUM_RULES."""
    (first, column), *rest = STRATUM_RULES
    cascade = F.when(F.col(column) > 0, F.lit(first))
    for name, column in rest:
        cascade = cascade.when(F.col(column) > 0, F.lit(name))
    return cascade.otherwise(F.lit(FALLBACK_STRATUM))


def intent_strength(weights: Mapping[str, float] | None = None) -> Column:
    """SimPersona eq. 3 over session counts, as ``buyers.intent_strength_expr``."""
    terms = (F.lit(w) * F.col(column) for column, w in intent_column_weights(weights).items())
    committed = reduce(lambda a, b: a + b, terms)
    return committed / (F.col("n_sessions") + committed)


def build_buyers(
    events: DataFrame,
    sessions: DataFrame,
    intent_weights: Mapping[str, float] | None = None,
) -> DataFrame:
    """One row per (shop_id, buyer_id): the rows and columns of the polars ``build_buyers``
    (16 features, stratum, browse_only_sessions, first_seen, last_seen), in no order."""
    keys = list(BUYER_KEYS)
    days = events.groupBy(*keys).agg(F.count_distinct(utc_date("ts")).alias("active_days"))
    browse_only = ~reduce(lambda a, b: a | b, (F.col(flag) for flag in CONVERTING_FLAGS))
    n = F.col("n_sessions")
    return (
        sessions.groupBy(*keys)
        .agg(
            F.count(F.lit(1)).alias("n_sessions"),
            *(
                F.count(F.when(F.col(flag), 1)).alias(name)
                for name, flag in SESSION_FLAG_FEATURES.items()
            ),
            F.count(F.when(browse_only, 1)).alias("browse_only_sessions"),
            F.sum("duration_s").alias("total_duration_s"),
            F.sum("n_product_views").alias("total_product_views"),
            F.avg(F.when(F.col("has_add_to_cart"), F.col("cart_value"))).alias("avg_cart_value"),
            F.avg(F.when(F.col("has_purchase"), F.col("order_value"))).alias("avg_order_value"),
            F.min("session_start").alias("first_seen"),
            F.max("session_end").alias("last_seen"),
        )
        .join(days, keys, "left")
        .withColumns(
            {
                "active_days": F.coalesce(F.col("active_days"), F.lit(0)),
                **{rate: F.col(numerator) / n for rate, numerator in RATE_NUMERATORS.items()},
                "intent_strength": intent_strength(intent_weights),
                "avg_cart_value": F.coalesce(F.col("avg_cart_value"), F.lit(0.0)),
                "avg_order_value": F.coalesce(F.col("avg_order_value"), F.lit(0.0)),
            }
        )
        .withColumn("stratum", stratum())
        .select(*BUYER_COLUMNS)
    )
