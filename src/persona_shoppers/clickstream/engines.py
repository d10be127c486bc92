"""The engine of an event-scale table, chosen by its type, so one node wiring serves all three:
a Spark DataFrame runs on Spark (:mod:`.spark`, ``--env spark``), a lazy polars scan or
:class:`~.streaming.BuyerBuckets` bucket by bucket (:mod:`.streaming`, ``--env streaming``),
a polars DataFrame in memory (the modules of :mod:`persona_shoppers.clickstream`).

See docs/scaling.md.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

import polars as pl

from persona_shoppers.clickstream.spark import SparkFrame, is_spark_frame
from persona_shoppers.clickstream.streaming import BuyerBuckets

# An event-scale table on any engine (what the nodes tagged EVENT_SCALE_TAG take).
EventTable = pl.DataFrame | pl.LazyFrame | BuyerBuckets | SparkFrame

# Nodes so tagged take event-scale inputs as they are (Spark DataFrames, buyer buckets);
# every other node gets them collected as polars (persona_shoppers.hooks.EventScaleHooks).
EVENT_SCALE_TAG = "event_scale"


def is_streaming(frame: object) -> bool:
    """Whether ``frame`` goes to the streaming engine (a lazy scan or buyer buckets)."""
    return isinstance(frame, pl.LazyFrame | BuyerBuckets)


def is_event_scale(frame: object) -> bool:
    """Whether ``frame`` is a table another engine than in-memory polars holds."""
    return is_spark_frame(frame) or is_streaming(frame)


def library(frame: object, module: str) -> ModuleType:
    """The clickstream module ``module`` (``validation``, ``sessions``, ``buyers``,
    ``history``) of ``frame``'s engine; the streaming engine is one module."""
    if is_spark_frame(frame):
        return importlib.import_module(f"persona_shoppers.clickstream.spark.{module}")
    if is_streaming(frame):
        return importlib.import_module("persona_shoppers.clickstream.streaming")
    return importlib.import_module(f"persona_shoppers.clickstream.{module}")


def to_polars_table(frame: Any) -> pl.DataFrame:
    """``frame`` of any engine in memory as polars, in the polars engine's row order (a
    Spark DataFrame is collected to the driver)."""
    if is_spark_frame(frame):
        from persona_shoppers.clickstream.spark.frames import to_polars

        return to_polars(frame)
    if isinstance(frame, BuyerBuckets):
        return frame.collect()
    if isinstance(frame, pl.LazyFrame):
        return frame.collect(engine="streaming")
    return frame
