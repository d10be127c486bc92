"""What the Spark steps share: time arithmetic in UTC microseconds (whatever the session time
zone) and the hand-over between Spark and polars through Arrow."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import reduce

import polars as pl
from pyspark.sql import Column, DataFrame, SparkSession, WindowSpec
from pyspark.sql import functions as F

from persona_shoppers.clickstream.tables import in_engine_order

US_PER_SECOND = 1_000_000
US_PER_DAY = 86_400 * US_PER_SECOND
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def micros(column: str | Column) -> Column:
    """Microseconds since the epoch of a timestamp column."""
    return F.unix_micros(F.col(column) if isinstance(column, str) else column)


def utc_date(column: str | Column) -> Column:
    """The UTC calendar date of a timestamp column."""
    us = micros(column)
    return F.date_from_unix_date(((us - F.pmod(us, F.lit(US_PER_DAY))) / US_PER_DAY).cast("int"))


def to_micros(moment: datetime) -> int:
    """Microseconds since the epoch of a timezone-aware datetime."""
    return (moment - _EPOCH) // timedelta(microseconds=1)


def from_micros(us: int | None) -> datetime | None:
    """The UTC datetime of microseconds since the epoch (None stays None)."""
    return None if us is None else _EPOCH + timedelta(microseconds=us)


def same_as_previous(order: WindowSpec, *columns: str) -> Column:
    """True where every column equals the previous row's in ``order`` (False on a partition's
    first row or a null), like the polars ``ordering.same_as_previous``."""
    return reduce(
        lambda a, b: a & b,
        (F.coalesce(F.col(c) == F.lag(c).over(order), F.lit(False)) for c in columns),
    )


def ordered_list(entries: Column, value: str) -> Column:
    """``value`` of each struct collected in ``entries`` (an array of structs whose first
    fields give the order), in that order."""
    return F.array_sort(entries)[value]


def from_polars(spark: SparkSession, frame: pl.DataFrame) -> DataFrame:
    """A Spark DataFrame of a (driver-sized) polars frame."""
    return spark.createDataFrame(frame.to_arrow())


def to_polars(frame: DataFrame) -> pl.DataFrame:
    """``frame`` collected to the driver as polars, through Arrow; a table of the clickstream
    library (known by its columns) comes back in the row order the polars engine gives it."""
    return in_engine_order(pl.from_arrow(frame.toArrow()))
