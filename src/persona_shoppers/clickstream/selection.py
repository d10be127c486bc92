"""The rows of ``enriched_events`` a downstream stage reads, from any engine.

The stages after data_enrichment work on one machine (polars, pandas, the LLM), and each needs
a small part of the log: the held-out shops' events (persona mining of held-out buyers,
simulation, alignment) or the trace buyers' events (trace replay). These functions
filter a polars frame, buyer buckets as a streaming scan, or a Spark DataFrame on the cluster,
and collect only those rows (docs/scaling.md, "Event logs on Spark").
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import polars as pl

from persona_shoppers.clickstream import streaming
from persona_shoppers.clickstream.spark import SparkFrame, is_spark_frame


def events_in_shops(
    events: pl.DataFrame | streaming.BuyerBuckets | SparkFrame, shops: Sequence[str]
) -> pl.DataFrame:
    """The events of these shops, in the events' order, as polars."""
    shops = sorted(shops)
    if is_spark_frame(events):
        from pyspark.sql import functions as F

        from persona_shoppers.clickstream.spark.frames import to_polars

        return to_polars(events.filter(F.col("shop_id").isin(shops)))
    if isinstance(events, streaming.BuyerBuckets):
        return streaming.events_in_shops(events, shops)
    return events.filter(pl.col("shop_id").is_in(shops))


def events_of(
    events: pl.DataFrame | streaming.BuyerBuckets | SparkFrame, keys: pd.DataFrame | pl.DataFrame
) -> pl.DataFrame:
    """The events matching a row of ``keys`` on all of its columns (e.g. ``shop_id`` and
    ``buyer_id``: those buyers' events), in the events' order, as polars."""
    keys = pl.DataFrame(keys).unique()
    if is_spark_frame(events):
        from pyspark.sql import functions as F

        from persona_shoppers.clickstream.spark.frames import from_polars, to_polars

        spark_keys = F.broadcast(from_polars(events.sparkSession, keys))
        return to_polars(events.join(spark_keys, on=keys.columns, how="left_semi"))
    if isinstance(events, streaming.BuyerBuckets):
        return streaming.events_of(events, keys)
    return events.join(keys, on=keys.columns, how="semi", maintain_order="left")
