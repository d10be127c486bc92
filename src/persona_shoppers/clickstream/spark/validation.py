"""Spark version of :mod:`persona_shoppers.clickstream.validation`: the same contract checks,
the same quarantine reasons in the same priority, the same duplicate rule and columns.

``source_row`` is a row's 0-based position in the input as Spark reads it (partitions in
order, rows in order within each): for one parquet file, its row number in the file, as the
polars engine counts it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import pandas as pd
import polars as pl
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql.types import DataType, NullType, StringType, TimestampNTZType

from persona_shoppers.clickstream.spark.frames import (
    US_PER_DAY,
    US_PER_SECOND,
    from_polars,
    micros,
    utc_date,
)
from persona_shoppers.clickstream.validation import (
    ACCEPTED_COLUMNS,
    DUPLICATE_REASON,
    PRICE_EVENT_TYPES,
    QUARANTINE_COLUMNS,
    QUARANTINE_REASONS,
    TS_REWRITES,
    catalog_joins,
    log_counts,
    raw_contract_columns,
)
from persona_shoppers.contract import (
    EVENT_SCHEMA,
    EVENT_TYPES,
    OPTIONAL_EVENT_COLUMNS,
    PRODUCT_EVENT_TYPES,
    conform,
)

logger = logging.getLogger(__name__)

_SPARK_TYPES: dict[type[pl.DataType], str] = {
    pl.String: "string",
    pl.Int64: "bigint",
    pl.Float64: "double",
}
_WS = r"\p{IsWhite_Space}"  # Unicode whitespace, as polars (Rust) reads \s
# The text timestamps parse_timestamps (polars) accepts, as chrono reads its formats: year,
# month, day, then optionally T hour:minute[:second[.fraction]] and an offset. A numeric
# field may follow whitespace; the offset's minutes may follow colons and whitespace.
_FIELD = rf"{_WS}*([0-9]{{1,2}})"
_TS_PATTERN = (
    rf"^([+-][0-9]{{1,5}}|[0-9]{{1,4}})-{_FIELD}-{_FIELD}"
    rf"(?:T{_FIELD}:{_FIELD}(?::{_FIELD}(?:\.([0-9]+))?)?"
    rf"(?:{_WS}*([+-])([0-9]{{2}})[:{_WS}]*([0-9]{{2}}))?)?$"
)


def _blank(column: str) -> Column:
    """True where a text column is null, empty or only whitespace."""
    return F.col(column).isNull() | ~F.col(column).rlike(f"[^{_WS}]")


def _days_from_civil(year: Column, month: Column, day: Column) -> Column:
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm)."""
    year = year - F.when(month <= 2, 1).otherwise(0)
    era = F.floor(year / 400)
    year_of_era = year - era * 400
    day_of_year = F.floor((153 * F.pmod(month + 9, F.lit(12)) + 2) / 5) + day - 1
    day_of_era = (
        year_of_era * 365 + F.floor(year_of_era / 4) - F.floor(year_of_era / 100) + day_of_year
    )
    return era * 146_097 + day_of_era - 719_468


def _days_in_month(year: Column, month: Column) -> Column:
    leap = ((year % 4 == 0) & (year % 100 != 0)) | (year % 400 == 0)
    return (
        F.when(month == 2, F.when(leap, 29).otherwise(28))
        .when(month.isin(4, 6, 9, 11), 30)
        .otherwise(31)
    )


def parse_timestamps(column: str = "ts") -> Column:
    """Spark's :func:`~persona_shoppers.clickstream.validation.parse_timestamps`: ISO-8601
    text to a timestamp, read as UTC where it has no offset; unparsable text gives null.

    Computed from the matched fields in microseconds, so no session time zone is involved;
    a leap second (``:60``) is the next minute's first second, as polars reads it.
    """
    text = F.regexp_replace(F.col(column), rf"^{_WS}+|{_WS}+$", "")
    for pattern, replacement in TS_REWRITES:
        text = F.regexp_replace(text, pattern, replacement)

    def field(group: int) -> Column:
        return F.nullif(F.regexp_extract(text, _TS_PATTERN, group), F.lit("")).cast("long")

    year, month, day = field(1), field(2), field(3)
    hour, minute, second, offset_hours, offset_minutes = (
        F.coalesce(field(group), F.lit(0)) for group in (4, 5, 6, 9, 10)
    )
    digits = F.regexp_extract(text, _TS_PATTERN, 7)  # fractional seconds, truncated to us
    fraction = F.rpad(F.substring(digits, 1, 6), 6, "0").cast("long")
    sign = F.when(F.regexp_extract(text, _TS_PATTERN, 8) == "-", -1).otherwise(1)
    seconds = (hour * 60 + minute - sign * (offset_hours * 60 + offset_minutes)) * 60 + second
    valid = (
        year.isNotNull()
        & month.between(1, 12)
        & (day >= 1)
        & (day <= _days_in_month(year, month))
        & (hour <= 23)
        & (minute <= 59)
        & (second <= 60)
        & (offset_hours <= 23)
        & (offset_minutes <= 59)
    )
    us = _days_from_civil(year, month, day) * US_PER_DAY + seconds * US_PER_SECOND + fraction
    return F.when(valid, F.timestamp_micros(us))


def iso_text(column: str) -> Column:
    """A UTC timestamp as the polars engine writes it in the quarantine: ISO-8601 with ``Z``,
    fractional seconds only where present (3 digits for whole milliseconds, else 6)."""
    us = micros(column)
    of_day = F.pmod(us, F.lit(US_PER_DAY))
    second = F.floor(of_day / US_PER_SECOND)
    fraction = F.pmod(us, F.lit(US_PER_SECOND))
    return F.concat(
        utc_date(column).cast("string"),
        F.format_string(
            "T%02d:%02d:%02d", F.floor(second / 3600), F.floor(second / 60) % 60, second % 60
        ),
        F.when(fraction == 0, F.lit(""))
        .when(fraction % 1000 == 0, F.format_string(".%03d", (fraction / 1000).cast("long")))
        .otherwise(F.format_string(".%06d", fraction)),
        F.lit("Z"),
    )


def _conform_ts(dtype: DataType) -> Column:
    """``ts`` as the contract takes it: text as is, a timestamp without time zone read as UTC."""
    ts = F.col("ts")
    if isinstance(dtype, TimestampNTZType):  # its fields, read in UTC (not the session's zone)
        fields = (F.year(ts), F.month(ts), F.dayofmonth(ts), F.hour(ts), F.minute(ts))
        return F.make_timestamp(*fields, F.date_part(F.lit("SECOND"), ts), F.lit("UTC"))
    if isinstance(dtype, StringType | NullType):
        return ts.cast("string")
    return ts


def conform_events(events: DataFrame) -> DataFrame:
    """The contract columns of raw events, cast to the contract's types (``ts`` as given).

    The checks are :func:`~persona_shoppers.contract.conform`'s own, run on an empty polars
    frame of the same schema, so they raise the same :class:`SchemaError`.
    """
    given = events.select(*(c for c in events.columns if c in EVENT_SCHEMA))
    empty = pl.from_arrow(given.limit(0).toArrow())
    schema = conform(empty, EVENT_SCHEMA, "raw_events", OPTIONAL_EVENT_COLUMNS).schema
    columns = []
    for name, dtype in EVENT_SCHEMA.items():
        if name not in events.columns:  # an optional column
            columns.append(F.lit(None).cast(_SPARK_TYPES[dtype]).alias(name))
        elif name == "ts":
            columns.append(_conform_ts(events.schema[name].dataType).alias(name))
        else:
            columns.append(F.col(name).cast(_SPARK_TYPES[schema[name]]).alias(name))
    return events.select(columns)


def with_source_row(frame: DataFrame) -> DataFrame:
    """``frame`` with ``source_row``: each row's 0-based position in the input.

    One pass counts the rows of each partition; a row's position is its partition's offset
    plus its index within the partition, which ``monotonically_increasing_id`` holds in its
    lower 33 bits.
    """
    indexed = frame.withColumns(
        {"_part": F.spark_partition_id(), "_id": F.monotonically_increasing_id()}
    )
    offsets, total = [], 0
    for part, count in sorted(indexed.groupBy("_part").count().collect()):
        offsets += [F.lit(part), F.lit(total)]
        total += count
    offset = F.create_map(*offsets)[F.col("_part")] if offsets else F.lit(0)
    index = F.col("_id") - F.shiftleft(F.col("_part").cast("long"), 33)
    return indexed.withColumn("source_row", (offset + index).cast("long")).drop("_part", "_id")


def validate_events(
    events: DataFrame,
    products: pl.DataFrame | pd.DataFrame,
    collections: pl.DataFrame | pd.DataFrame,
    *,
    product_required_for: Iterable[str] = PRODUCT_EVENT_TYPES,
    price_required_for: Iterable[str] = PRICE_EVENT_TYPES,
) -> tuple[DataFrame, DataFrame]:
    """(accepted events, quarantine): the rows and columns of the polars ``validate_events``,
    in no particular order (``frames.to_polars`` restores it).

    The rules run once: their result is checkpointed, so the quarantine, its counts and the
    accepted events read it without recomputing it.

    Raises:
        SchemaError: a raw dataset breaks the contract (names dataset, column and rule).
    """
    spark = events.sparkSession
    raw = with_source_row(conform_events(events))
    catalog, directory = (from_polars(spark, t) for t in catalog_joins(products, collections))
    ts_is_text = isinstance(raw.schema["ts"].dataType, StringType)
    if ts_is_text:  # the raw text stays in _raw_ts for the duplicate rule and the quarantine
        raw = raw.withColumnRenamed("ts", "_raw_ts").withColumn("ts", parse_timestamps("_raw_ts"))
    price = F.when(~F.isnan("price"), F.col("price"))
    frame = (
        raw.join(F.broadcast(catalog), ["shop_id", "product_id"], "left")
        .join(F.broadcast(directory), ["shop_id", "collection_id"], "left")
        .withColumns(
            {
                "_raw_price": F.col("price"),
                "price_from_catalog": price.isNull() & F.col("_catalog_price").isNotNull(),
                "price": F.coalesce(price, F.col("_catalog_price")),
            }
        )
    )
    kind = F.col("event_type")
    needs_product = kind.isin(list(product_required_for))
    needs_price = kind.isin(list(price_required_for))
    rules = {
        "missing_shop_id": _blank("shop_id"),
        "missing_buyer_id": _blank("buyer_id"),
        "unparsable_timestamp": F.col("ts").isNull(),
        "unknown_event_type": kind.isNull() | ~kind.isin(list(EVENT_TYPES)),
        "missing_product_id": needs_product & _blank("product_id"),
        "product_not_in_catalog": ~_blank("product_id") & F.col("_in_catalog").isNull(),
        "missing_price": needs_price & F.col("price").isNull(),
        "negative_price": needs_price & (F.col("price") < 0),
        "missing_query": (kind == "search") & _blank("query"),
        "unknown_collection": (kind == "collection_view") & F.col("_known_collection").isNull(),
    }
    assert [*rules, DUPLICATE_REASON] == list(QUARANTINE_REASONS)
    (first, broken), *rest = rules.items()
    reason = F.when(broken, F.lit(first))
    for name, broken in rest:  # the first rule broken gives the reason
        reason = reason.when(broken, F.lit(name))
    frame = frame.withColumn("reason", reason)
    # an exact repeat (raw columns) of an accepted row with a smaller source_row
    repeats = Window.partitionBy(
        *raw_contract_columns("_raw_ts" if ts_is_text else "ts"), F.col("reason").isNull()
    ).orderBy("source_row")
    repeated = F.col("reason").isNull() & (F.row_number().over(repeats) > 1)
    frame = frame.withColumn(
        "reason", F.when(repeated, F.lit(DUPLICATE_REASON)).otherwise(F.col("reason"))
    ).localCheckpoint()

    counts = dict(frame.groupBy("reason").count().collect())
    n_accepted = counts.pop(None, 0)
    log_counts(n_accepted + sum(counts.values()), n_accepted, counts)
    raw_values = {
        "ts": F.col("_raw_ts") if ts_is_text else iso_text("ts"),
        "price": F.col("_raw_price"),
    }
    quarantine = frame.filter(F.col("reason").isNotNull()).select(
        *(raw_values.get(c, F.col(c)).alias(c) for c in QUARANTINE_COLUMNS)
    )
    accepted = (
        frame.filter(F.col("reason").isNull())
        .withColumn("session_id", F.when(~_blank("session_id"), F.col("session_id")))
        .select(*ACCEPTED_COLUMNS)
    )
    return accepted, quarantine
