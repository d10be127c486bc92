"""Spark version of :mod:`persona_shoppers.clickstream.history`: the same text, line by line,
from window functions over each buyer's events and lines, and ordered array aggregates."""

from __future__ import annotations

from datetime import datetime, timedelta

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from persona_shoppers.clickstream.history import (
    DAY_PREFIX_CHARS,
    ELLIPSIS,
    HEADER_SECTION,
    HISTORY_COLUMNS,
    MARKER_SECTION,
    MAX_CHARS,
    OLDER_HEADER,
    OLDER_SECTION,
    RECENT_DAYS,
    RECENT_SECTION,
    RUN_HEADS,
    TRUNCATION_MARKER,
    VERBS,
    history_budget,
    reference_from_latest,
)
from persona_shoppers.clickstream.spark.frames import (
    from_micros,
    micros,
    ordered_list,
    same_as_previous,
    to_micros,
    utc_date,
)

_KEYS = ["shop_id", "buyer_id"]


def _object() -> Column:
    """What an event is about in the text: a quoted query, a collection, a product, nothing."""
    kind = F.col("event_type")
    return (
        F.when(kind == "search", F.concat(F.lit('"'), F.col("query"), F.lit('"')))
        .when(kind == "collection_view", F.coalesce("collection_title", "collection_id"))
        .when(kind == "checkout_start", F.lit(None).cast("string"))
        .otherwise(F.coalesce("title", "product_id"))
    )


def _day_lines(events: DataFrame, reference_us: int, cutoff_us: int) -> DataFrame:
    """One row per (buyer, section, date): keys, section, date, line, ``_first`` (the (ts,
    source_row) of the day's first event: the polars engine's line order) and ``_events``.

    Each event becomes a fragment ("; viewed A" when it starts a run of one verb, ", B" when
    it continues one, nothing when it repeats the previous object); a line joins its day's
    fragments in event order. ``_events`` counts the day's events, repeats included.
    """
    kind, ts = F.col("event_type"), micros("ts")
    rows = events.filter(
        (ts <= reference_us) & kind.isin(*VERBS) & ((ts > cutoff_us) | (kind == "purchase"))
    ).select(
        *_KEYS,
        ts.alias("_t"),
        "source_row",
        F.when(ts > cutoff_us, RECENT_SECTION).otherwise(OLDER_SECTION).alias("section"),
        utc_date("ts").alias("date"),
        kind.alias("verb"),
        _object().alias("object"),
    )
    in_time = Window.partitionBy(*_KEYS).orderBy("_t", "source_row")
    new_day = ~same_as_previous(in_time, "section", "date")
    new_run = new_day | ~same_as_previous(in_time, "verb")
    repeat = ~new_run & F.col("object").eqNullSafe(F.lag("object").over(in_time))
    head = F.create_map(*(F.lit(text) for pair in RUN_HEADS.items() for text in pair))
    fragment = F.concat_ws(
        "",
        F.when(new_day, F.concat(F.col("date").cast("string"), F.lit(": ")))
        .when(new_run, F.lit("; "))
        .otherwise(F.lit(", ")),
        F.when(new_run, head[F.col("verb")]),
        F.col("object"),
    )
    event = F.struct("_t", "source_row")
    kept = F.when(~F.col("_repeat"), F.struct(event, "fragment"))
    return (
        rows.select("*", fragment.alias("fragment"), repeat.alias("_repeat"))
        .groupBy(*_KEYS, "section", "date")
        .agg(
            F.min(event).alias("_first"),
            F.array_join(ordered_list(F.collect_list(kept), "fragment"), "").alias("line"),
            F.count(F.lit(1)).alias("_events"),
        )
    )


def _line(section: int, text: str) -> Column:
    """A dateless line of ``section`` (the truncation marker, the older purchases' header)."""
    return F.struct(
        F.lit(section).alias("section"),
        F.lit(None).cast("date").alias("date"),
        F.lit(text).alias("line"),
    )


def build_histories(
    events: DataFrame,
    *,
    recent_days: float = RECENT_DAYS,
    reference_time: str | datetime | None = None,
    max_chars: int = MAX_CHARS,
) -> DataFrame:
    """Per (shop_id, buyer_id): history_text, n_days, n_older_purchases, truncated; the rows of
    the polars ``build_histories``, in no particular order.

    Events -> day lines -> buyers, each a group-by of the one before, all partitioned by
    (shop_id, buyer_id) after the first window, so the buyers' events are shuffled once.
    """
    latest = events.agg(F.max(micros("ts"))).first()[0]
    reference = reference_from_latest(from_micros(latest), reference_time)
    budget, line_cap = history_budget(max_chars)
    line, section = F.col("line"), F.col("section")
    cutoff_us = to_micros(reference - timedelta(days=recent_days))
    lines = _day_lines(events, to_micros(reference), cutoff_us).withColumn(
        "line",
        F.when(
            F.length(line) > line_cap,  # keep the date and the latest actions of an over-long day
            F.concat(
                F.left(line, F.lit(DAY_PREFIX_CHARS)),
                F.lit(ELLIPSIS),
                F.right(line, F.lit(line_cap - DAY_PREFIX_CHARS - len(ELLIPSIS))),
            ),
        ).otherwise(line),
    )
    # Priority: recent days newest first, then older purchases newest first; the newest older
    # line also pays for the header line.
    buyer = Window.partitionBy(*_KEYS)
    in_section = Window.partitionBy(*_KEYS, "section").orderBy("_first")
    newest = F.lead("_first").over(in_section).isNull()
    header = F.when((section == OLDER_SECTION) & newest, len(OLDER_HEADER) + 1).otherwise(0)
    lines = lines.withColumn("_cost", F.length(line) + 1 + header)
    newer = Window.partitionBy(*_KEYS, "section").orderBy(F.col("_first").desc())
    suffix = F.sum("_cost").over(newer.rowsBetween(Window.unboundedPreceding, 0))
    recent_total = F.sum(F.when(section == RECENT_SECTION, F.col("_cost")).otherwise(0))
    spent = F.when(section == RECENT_SECTION, suffix).otherwise(recent_total.over(buyer) + suffix)
    fits = F.sum("_cost").over(buyer) - 1 <= max_chars
    lines = lines.withColumns({"_kept": fits | (spent <= budget), "_fits": fits})
    texts = lines.groupBy(*_KEYS).agg(
        (~F.bool_and("_fits")).alias("truncated"),
        F.count(F.when(section == RECENT_SECTION, 1)).alias("n_days"),  # a line per day
        F.sum(F.when(section == OLDER_SECTION, F.col("_events"))).alias("n_older_purchases"),
        F.collect_list(F.when(F.col("_kept"), F.struct("section", "date", "line"))).alias("_lines"),
    )
    has_older = F.exists("_lines", lambda entry: entry["section"] == OLDER_SECTION)
    extra = F.array(
        F.when(F.col("truncated"), _line(MARKER_SECTION, TRUNCATION_MARKER)),
        F.when(has_older, _line(HEADER_SECTION, OLDER_HEADER)),
    )
    text = F.array_join(ordered_list(F.array_compact(F.concat(extra, "_lines")), "line"), "\n")
    defaults = {"history_text": "", "n_days": 0, "n_older_purchases": 0, "truncated": False}
    return (
        events.select(*_KEYS)
        .distinct()
        .join(texts.withColumn("history_text", text), _KEYS, "left")
        .select(
            *(
                F.coalesce(F.col(c), F.lit(defaults[c])).alias(c) if c in defaults else F.col(c)
                for c in HISTORY_COLUMNS
            )
        )
    )
