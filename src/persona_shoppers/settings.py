"""Kedro project settings."""

from pathlib import Path

from persona_shoppers.hooks import EventScaleHooks, NumericsHook, RunTagsHook, SparkHooks
from persona_shoppers.input_check import MissingInputsHook
from persona_shoppers.quiet import silence_third_party_noise

silence_third_party_noise()

PROJECT_ROOT = Path(__file__).resolve().parents[2]

# Tags every MLflow run (pipeline, llm_model, data, ...) after kedro-mlflow has started it;
# starts the SparkSession of an environment with a spark.yml (`kedro run --env spark`).
HOOKS = (MissingInputsHook(), RunTagsHook(), NumericsHook(), SparkHooks(), EventScaleHooks())

# `${project_root:}` anchors paths (the MLflow SQLite store) to the project, wherever a
# notebook kernel or a CLI call starts from.
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    "custom_resolvers": {"project_root": lambda: PROJECT_ROOT.as_posix()},
    # An environment (conf/paper, conf/local) overrides single parameters, not whole blocks.
    "merge_strategy": {"parameters": "soft"},
    # The SparkSession settings of a Spark environment (conf/spark/spark.yml).
    "config_patterns": {"spark": ["spark*", "spark*/**"]},
}
