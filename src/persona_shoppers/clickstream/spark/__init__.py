"""Spark engine of the clickstream library: the event-scale steps of data_enrichment as Spark
DataFrame expressions (window functions, group-bys and joins; no Python UDF), giving the same
rows as the polars functions they mirror.

Each module has the polars module's name and functions, with the same arguments:
``validation.validate_events``, ``sessions.sessionise``, ``sessions.build_sessions``,
``buyers.build_buyers`` and ``history.build_histories`` take and return Spark DataFrames, and
``frames.to_polars`` collects a result to the driver. Those modules import pyspark; this
``__init__`` does not, so :func:`is_spark_frame` works where pyspark is not installed.

See docs/scaling.md, "Event logs on Spark".
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyspark.sql import DataFrame as SparkFrame
else:  # pyspark is optional; Kedro reads node annotations at run time, where this is Any
    SparkFrame = Any


def is_spark_frame(frame: object) -> bool:
    """Whether ``frame`` is a Spark DataFrame (classic or Spark Connect); imports nothing."""
    kind = type(frame)
    return kind.__name__ == "DataFrame" and kind.__module__.startswith("pyspark.sql")
