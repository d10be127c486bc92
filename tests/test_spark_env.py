"""The `spark` environment: its configuration, the SparkSession hook and its errors, and the
hand-over of Spark frames to nodes that read polars. The engine itself is compared with polars
in tests/clickstream/test_spark_equality.py."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from types import SimpleNamespace

import polars as pl
import pytest
from kedro.config import MissingConfigException, OmegaConfigLoader
from kedro.pipeline import node

from persona_shoppers import hooks
from persona_shoppers.clickstream.engines import EVENT_SCALE_TAG
from persona_shoppers.hooks import (
    EventScaleHooks,
    SparkHooks,
    SparkSetupError,
    spark_unavailable,
    start_spark,
)
from persona_shoppers.pipelines.data_enrichment import create_pipeline
from persona_shoppers.settings import CONFIG_LOADER_ARGS, HOOKS

CONF = Path(__file__).resolve().parents[1] / "conf"
EVENT_SCALE = ("raw_events", "event_quarantine", "enriched_events", "enriched_sessions")


def _loader(env: str) -> OmegaConfigLoader:
    return OmegaConfigLoader(conf_source=str(CONF), env=env, **CONFIG_LOADER_ARGS)


def test_the_spark_environment_holds_the_event_scale_tables_and_a_session():
    loader = _loader("spark")
    catalog = loader["catalog"]
    for name in EVENT_SCALE:
        assert catalog[name]["type"] == "spark.SparkDataset"
        assert catalog[name]["file_format"] == "parquet"
    assert catalog["buyers"]["type"] == "pandas.ParquetDataset"  # buyer scale, as in base
    assert loader["spark"]["spark.master"] == "local[*]"
    with pytest.raises(MissingConfigException):
        _loader("local")["spark"]
    assert _loader("base")["spark"] == {}  # no error where the run env is the base env
    assert any(isinstance(hook, SparkHooks) for hook in HOOKS)


def test_data_enrichment_nodes_take_spark_frames_as_they_are():
    assert all(EVENT_SCALE_TAG in n.tags for n in create_pipeline().nodes)


def test_a_missing_pyspark_or_java_is_named(monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "pyspark" else real_find_spec(name, *a),
    )
    assert "pyspark is not installed: pip install -e '.[spark]'" in spark_unavailable()
    with pytest.raises(SparkSetupError, match="pyspark is not installed"):
        start_spark({"spark.master": "local[1]"}, "test")
    monkeypatch.undo()

    # pyspark found (the check comes before Java's, and nothing is imported before both pass)
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: object() if name == "pyspark" else real_find_spec(name, *a),
    )
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(SparkSetupError, match="no Java runtime"):
        start_spark({"spark.master": "local[1]"}, "test")


class Loader(dict):
    """A config loader holding ``spark`` only where given."""

    def __getitem__(self, key: str) -> dict:
        if key not in self:
            raise MissingConfigException(f"no {key} config")
        return super().__getitem__(key)


def test_a_session_starts_only_where_spark_yml_exists(monkeypatch):
    started = []
    monkeypatch.setattr(hooks, "start_spark", lambda *args: started.append(args))
    project = Path("/projects/persona-shoppers")
    SparkHooks().after_context_created(SimpleNamespace(config_loader=Loader()))
    SparkHooks().after_context_created(SimpleNamespace(config_loader=Loader(spark={})))
    assert started == []
    spark = {"spark.master": "local[1]"}
    context = SimpleNamespace(config_loader=Loader(spark=spark), project_path=project)
    SparkHooks().after_context_created(context)
    assert started == [(spark, "persona-shoppers")]


class DataFrame:
    """Looks like a Spark DataFrame to ``is_spark_frame``."""

    __module__ = "pyspark.sql.dataframe"


def test_nodes_not_tagged_event_scale_get_spark_inputs_as_polars_once(monkeypatch):
    frames = pytest.importorskip("persona_shoppers.clickstream.spark.frames")
    collected = []

    def to_polars(frame):
        collected.append(frame)
        return pl.DataFrame({"a": [1]})

    monkeypatch.setattr(frames, "to_polars", to_polars)
    hook, spark_frame = EventScaleHooks(), DataFrame()
    inputs = {"enriched_events": spark_frame, "params:x": 1}
    spark_node = node(lambda e, x: e, ["enriched_events", "params:x"], "out", tags=EVENT_SCALE_TAG)
    polars_node = node(lambda e, x: e, ["enriched_events", "params:x"], "out2")

    assert hook.before_node_run(spark_node, inputs) is None
    first = hook.before_node_run(polars_node, inputs)
    again = hook.before_node_run(polars_node, inputs)
    assert set(first) == {"enriched_events"} and first["enriched_events"].equals(
        pl.DataFrame({"a": [1]})
    )
    assert again["enriched_events"] is first["enriched_events"] and collected == [spark_frame]
    hook.after_pipeline_run()
    hook.before_node_run(polars_node, inputs)
    assert len(collected) == 2  # collected again in the next run
