"""Project hooks: :class:`RunTagsHook` tags every MLflow run (``pipeline``, ``llm_model``,
``data``, ``data_fingerprint``, ``conditions``, ``numerics``) so that the UI compares runs side
by side; :class:`NumericsHook` logs the numerics at the start of every node that runs or trains
the LLM; :class:`SparkHooks` starts the SparkSession of a Spark environment;
:class:`EventScaleHooks` collects the event-scale tables of Spark or the streaming engine for
the nodes that work in memory.

See README.md, "MLflow", docs/numerics.md, "Where the choice shows", and docs/scaling.md,
"Event logs on Spark".
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from kedro.config import MissingConfigException
from kedro.framework.hooks import hook_impl
from kedro.io import DataCatalog
from kedro.pipeline import Node, Pipeline

from persona_shoppers.clickstream.engines import EVENT_SCALE_TAG, is_event_scale, to_polars_table
from persona_shoppers.llm.registry import model_tag as llm_model_tag
from persona_shoppers.numerics import numerics_summary

if TYPE_CHECKING:
    from kedro.framework.context import KedroContext
    from pyspark.sql import SparkSession

logger = logging.getLogger(__name__)

RAW_TABLES = ("raw_events", "raw_products", "raw_collections", "raw_collection_products")
# Files above this size are fingerprinted by size and their first and last chunks only.
FULL_HASH_LIMIT = 1 << 30
CHUNK = 1 << 24


def file_fingerprint(path: Path, digest: Any) -> None:
    """Feed ``path``'s content into ``digest``: all of it up to 1 GiB, else its size and its
    first and last 16 MiB (a cheap stand-in for event logs of many gigabytes)."""
    size = path.stat().st_size
    digest.update(f"{path.name}:{size}:".encode())
    with path.open("rb") as handle:
        if size <= FULL_HASH_LIMIT:
            while block := handle.read(CHUNK):
                digest.update(block)
        else:
            digest.update(handle.read(CHUNK))
            handle.seek(size - CHUNK)
            digest.update(handle.read(CHUNK))


def data_fingerprint(paths: list[Path]) -> str:
    """12 hex digits over the given files (names, sizes, contents), in the given order."""
    digest = hashlib.sha256()
    for path in paths:
        file_fingerprint(path, digest)
    return digest.hexdigest()[:12]


def _local_path(catalog: DataCatalog, name: str) -> Path | None:
    """The local file behind catalog entry ``name``, or None (absent, remote, in memory)."""
    if name not in catalog:
        return None
    description = catalog.get(name)._describe()  # kedro datasets describe their filepath
    filepath, protocol = description.get("filepath"), description.get("protocol", "file")
    if not isinstance(filepath, str | PurePosixPath) or protocol not in ("file", None):
        return None
    path = Path(str(filepath))
    return path if path.is_file() else None


def data_description(planted_truth: dict | None, synthetic_params: dict | None) -> str:
    """``synthetic default sample``, ``synthetic seed=... shops=... buyers/shop=...`` or
    ``raw data``, from the generator's record in ``planted_truth``."""
    generator = (planted_truth or {}).get("generator")
    if not generator:
        return "raw data"
    if synthetic_params is not None:
        from persona_shoppers.synthetic import SyntheticConfig

        default = SyntheticConfig.from_params(synthetic_params).to_dict()
        if json.loads(json.dumps(default)) == generator:
            return "synthetic default sample"
    return (
        f"synthetic seed={generator.get('seed')} shops={generator.get('n_shops')} "
        f"buyers/shop={generator.get('buyers_per_shop')}"
    )


def _param(catalog: DataCatalog, name: str) -> Any:
    key = f"params:{name}"
    return catalog.load(key) if key in catalog else None


def _takes_params(inputs: Iterable[str], block: str) -> bool:
    """Whether dataset names ``inputs`` hold the ``block`` parameters or an entry of them."""
    return any(name == f"params:{block}" or name.startswith(f"params:{block}.") for name in inputs)


def run_tags(run_params: dict[str, Any], pipeline: Pipeline, catalog: DataCatalog) -> dict:
    """The tags :class:`RunTagsHook` sets, from the run's parameters, pipeline and catalog."""
    names = run_params.get("pipeline_names") or [run_params.get("pipeline_name") or "__default__"]
    tags = {"pipeline": "+".join(names), "llm_model": llm_model_tag(_param(catalog, "llm") or {})}
    raw = [path for name in RAW_TABLES if (path := _local_path(catalog, name))]
    if raw:
        tags["data_fingerprint"] = data_fingerprint(raw)
    truth = _local_path(catalog, "planted_truth")
    planted = json.loads(truth.read_text()) if truth else None
    tags["data"] = data_description(planted, _param(catalog, "synthetic_data"))
    llm, sft = _param(catalog, "llm"), _param(catalog, "sft")
    if llm is not None or sft is not None:
        tags["numerics"] = numerics_summary(llm, sft)
    if _takes_params(pipeline.inputs(), "simulation"):
        conditions = (_param(catalog, "simulation") or {}).get("conditions") or {}
        tags["conditions"] = ",".join(conditions)
    return tags


class RunTagsHook:
    """Tags the MLflow run kedro-mlflow started (see the module docstring)."""

    @hook_impl(trylast=True)  # after kedro-mlflow's before_pipeline_run has started the run
    def before_pipeline_run(
        self, run_params: dict[str, Any], pipeline: Pipeline, catalog: DataCatalog
    ) -> None:
        import mlflow

        if mlflow.active_run() is None:  # tracking disabled for this pipeline
            return
        tags = run_tags(run_params, pipeline, catalog)
        mlflow.set_tags(tags)
        logger.info("MLflow run tags: %s", tags)


# Parameter blocks whose nodes run the LLM or train it.
NUMERICS_PARAMS = ("llm", "sft")


class NumericsHook:
    """Logs the numerics (:func:`~persona_shoppers.numerics.numerics_summary`) at the start of
    each node that takes the ``llm`` or ``sft`` parameters."""

    @hook_impl
    def before_node_run(self, node: Node, catalog: DataCatalog) -> None:
        blocks = {block for block in NUMERICS_PARAMS if _takes_params(node.inputs, block)}
        if blocks:
            logger.info(
                "%s numerics: %s",
                node.name,
                numerics_summary(
                    _param(catalog, "llm") if "llm" in blocks else None,
                    _param(catalog, "sft") if "sft" in blocks else None,
                ),
            )


class SparkSetupError(RuntimeError):
    """A Spark environment was asked for where pyspark or Java is missing."""


def spark_unavailable() -> str | None:
    """Why a SparkSession cannot start here (pyspark or Java missing), or None."""
    if importlib.util.find_spec("pyspark") is None:
        return "pyspark is not installed: pip install -e '.[spark]'"
    java_home = os.environ.get("JAVA_HOME")
    if not (java_home and Path(java_home, "bin", "java").is_file()) and not shutil.which("java"):
        return (
            "no Java runtime (java on PATH or JAVA_HOME): install Java 17 or later, e.g. "
            "apt-get install openjdk-17-jre-headless"
        )
    return None


def start_spark(conf: Mapping[str, Any], app_name: str) -> SparkSession:
    """The SparkSession of ``conf`` (``conf/<env>/spark.yml``: ``spark.master`` and any
    other Spark setting), started or, where one runs, reused.

    Raises:
        SparkSetupError: pyspark or Java is missing (the message names which).
    """
    problem = spark_unavailable()
    if problem:
        raise SparkSetupError(f"this environment runs on Spark, but {problem}")
    from pyspark.sql import SparkSession

    spark = SparkSession.builder.appName(app_name).config(map=dict(conf)).getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    logger.info("SparkSession %s on %s", spark.version, spark.sparkContext.master)
    return spark


class SparkHooks:
    """Starts one SparkSession from ``conf/<env>/spark.yml`` where that file exists (the Kedro
    PySpark starter's hook)."""

    @hook_impl
    def after_context_created(self, context: KedroContext) -> None:
        try:
            conf = context.config_loader["spark"]
        except MissingConfigException:  # not a Spark environment
            return
        if conf:  # `--env base` gets {} rather than the error
            start_spark(conf, context.project_path.name)


class EventScaleHooks:
    """Hands each node not tagged ``event_scale`` the polars frame of its event-scale inputs
    (Spark DataFrames, buyer buckets): collected once per dataset and run. Later stages read
    the log through tagged nodes that filter it first (``held_out_events``, ``trace_events``;
    docs/scaling.md), and ``enriched_sessions`` whole."""

    def __init__(self) -> None:
        self._collected: dict[str, Any] = {}

    @hook_impl
    def before_node_run(self, node: Node, inputs: dict[str, Any]) -> dict[str, Any] | None:
        if EVENT_SCALE_TAG in node.tags:
            return None
        names = [name for name, value in inputs.items() if is_event_scale(value)]
        if not names:
            return None
        for name in names:
            if name not in self._collected:
                logger.info("%s: collecting %s into memory as polars", node.name, name)
                self._collected[name] = to_polars_table(inputs[name])
        return {name: self._collected[name] for name in names}

    @hook_impl
    def after_pipeline_run(self) -> None:
        self._collected.clear()

    @hook_impl
    def on_pipeline_error(self) -> None:
        self._collected.clear()
