"""Spark version of :mod:`persona_shoppers.clickstream.sessions`: the inactivity rule as window
functions over (shop_id, buyer_id) in time order, and the session table as one group-by."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from persona_shoppers.clickstream.sessions import (
    COUNT_COLUMNS,
    FLAG_COLUMNS,
    LIST_COLUMNS,
    SESSION_COLUMNS,
    SESSION_ID_INFIX,
    SESSION_KEYS,
)
from persona_shoppers.clickstream.spark.frames import US_PER_SECOND, micros


def sessionise(events: DataFrame, session_timeout_minutes: float = 30.0) -> DataFrame:
    """Fill null ``session_id`` by the inactivity rule, as the polars ``sessionise`` does.

    Among a buyer's events without a session id (in (ts, source_row) order), one starts a new
    session when it is the first or follows the previous by at least the timeout; its id is
    ``buyer_id + SESSION_ID_INFIX + n``, n counting the buyer's sessions in that shop from 1.
    Events with an id are left as they are and do not break the gaps. Same columns and rows.
    """
    timeout = timedelta(minutes=session_timeout_minutes) // timedelta(microseconds=1)
    generated = F.col("_generated")
    # one window spec for both steps: one shuffle and one sort
    in_time = Window.partitionBy("shop_id", "buyer_id", generated).orderBy("ts", "source_row")
    frame = events.withColumn("_generated", F.col("session_id").isNull()).withColumn(
        "_gap", micros("ts") - F.lag(micros("ts")).over(in_time)
    )
    starts = (F.col("_gap").isNull() | (F.col("_gap") >= timeout)).cast("long")
    number = F.sum(starts).over(in_time.rowsBetween(Window.unboundedPreceding, Window.currentRow))
    session_id = F.concat(F.col("buyer_id"), F.lit(SESSION_ID_INFIX), number.cast("string"))
    return frame.withColumn(
        "session_id", F.when(generated, session_id).otherwise(F.col("session_id"))
    ).select(*events.columns)


def _of_kind(kind: str) -> Callable[[Column], Column]:
    """Whether a collected event (a struct with ``_k``) is of ``kind``."""
    return lambda entry: entry["_k"] == kind


def build_sessions(events: DataFrame) -> DataFrame:
    """One row per (shop_id, buyer_id, session_id): counts, flags, values and lists.

    ``events`` are enriched events; list columns follow event order (ts, then source_row).
    The rows and columns of the polars ``build_sessions``, in no particular order.
    """
    kind = F.col("event_type")
    line_value = F.coalesce(F.col("price"), F.lit(0.0)) * F.coalesce(F.col("quantity"), F.lit(1))
    sources = sorted({source for _, source in LIST_COLUMNS.values()})
    listed = sorted({k for k, _ in LIST_COLUMNS.values()})
    # the listed events of a session, sorted by (ts, source_row): one sort serves every list
    entry = F.struct(
        micros("ts").alias("_t"), F.col("source_row").alias("_r"), kind.alias("_k"), *sources
    )
    sessions = events.groupBy(*SESSION_KEYS).agg(
        F.min("ts").alias("session_start"),
        F.max("ts").alias("session_end"),
        F.count(F.lit(1)).alias("n_events"),
        *(F.count(F.when(kind == k, 1)).alias(name) for k, name in COUNT_COLUMNS.items()),
        F.sum(F.when(kind == "add_to_cart", line_value).otherwise(0.0)).alias("cart_value"),
        F.sum(F.when(kind == "purchase", line_value).otherwise(0.0)).alias("order_value"),
        F.array_sort(F.collect_list(F.when(kind.isin(*listed), entry))).alias("_events"),
    )
    duration = (micros("session_end") - micros("session_start")) / US_PER_SECOND
    flags = {flag: F.col(COUNT_COLUMNS[k]) > 0 for flag, k in FLAG_COLUMNS.items()}
    lists = {
        name: F.filter("_events", _of_kind(k))[source] for name, (k, source) in LIST_COLUMNS.items()
    }
    columns = {"duration_s": duration, **flags, **lists}
    return sessions.select(*(columns.get(c, F.col(c)).alias(c) for c in SESSION_COLUMNS))
