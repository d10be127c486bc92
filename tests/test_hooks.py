"""The MLflow run tags of persona_shoppers.hooks and the run name of conf/base/mlflow.yml.

The tags of a real `kedro run` (kedro-mlflow's hook first, then ours) are checked end to end
in tests/test_run.py (test_runs_are_named_and_tagged).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from kedro.config import OmegaConfigLoader
from kedro.io import DataCatalog, MemoryDataset
from kedro.pipeline import Pipeline, node

from persona_shoppers import numerics
from persona_shoppers.hooks import (
    NumericsHook,
    data_description,
    data_fingerprint,
    llm_model_tag,
    run_tags,
)
from persona_shoppers.numerics import Bf16Probe
from persona_shoppers.settings import CONFIG_LOADER_ARGS, HOOKS, RunTagsHook

ROOT = Path(__file__).resolve().parents[1]
RAW = ROOT / "data" / "01_raw"


def _synthetic_params() -> dict:
    return yaml.safe_load((ROOT / "conf/base/parameters_synthetic_data.yml").read_text())[
        "synthetic_data"
    ]


def test_the_hooks_are_registered():
    assert any(isinstance(hook, RunTagsHook) for hook in HOOKS)
    assert any(isinstance(hook, NumericsHook) for hook in HOOKS)


@pytest.fixture
def emulated_bf16(monkeypatch):
    probe = Bf16Probe("cpu", "AVX2", False, "probe", 68.0, 0.9)
    monkeypatch.setattr(numerics, "bf16_probe", lambda device="cpu": probe)


def test_llm_model_tag_names_the_local_model_or_the_endpoint():
    assert llm_model_tag({"backend": "local", "model": "data/06_models/sft_model"}) == (
        "data/06_models/sft_model"
    )
    endpoint = {"model": "qwen2.5:7b", "base_url": "http://localhost:11434/v1"}
    assert llm_model_tag({"backend": "endpoint", "endpoint": endpoint}) == (
        "qwen2.5:7b @ http://localhost:11434/v1"
    )


def test_the_committed_sample_is_the_synthetic_default_sample():
    truth = json.loads((RAW / "planted_truth.json").read_text())
    assert data_description(truth, _synthetic_params()) == "synthetic default sample"
    other = {**_synthetic_params(), "buyers_per_shop": 20000}
    assert data_description(truth, other).startswith("synthetic seed=20261122 shops=12")
    assert data_description(None, _synthetic_params()) == "raw data"


def test_fingerprint_follows_content(tmp_path: Path):
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    a.write_bytes(b"events")
    b.write_bytes(b"products")
    first = data_fingerprint([a, b])
    assert len(first) == 12 and first == data_fingerprint([a, b])
    b.write_bytes(b"products!")
    assert data_fingerprint([a, b]) != first


def _identity(x):
    return x


def test_run_tags_from_the_catalog(tmp_path: Path, emulated_bf16):
    truth = tmp_path / "planted_truth.json"
    truth.write_text(json.dumps({"generator": {"seed": 3, "n_shops": 2, "buyers_per_shop": 9}}))
    events = tmp_path / "events.parquet"
    events.write_bytes(b"not really parquet, only hashed")
    catalog = DataCatalog.from_config(
        {
            "planted_truth": {"type": "json.JSONDataset", "filepath": str(truth)},
            "raw_events": {"type": "pandas.ParquetDataset", "filepath": str(events)},
        }
    )
    catalog["params:llm"] = MemoryDataset({"backend": "local", "model": "smollm2-135m-instruct"})
    catalog["params:synthetic_data"] = MemoryDataset(_synthetic_params())
    conditions = {"base": {}, "persona_token": {}}
    catalog["params:simulation"] = MemoryDataset({"conditions": conditions})
    simulating = Pipeline([node(_identity, "params:simulation.conditions", "out", name="n")])
    tags = run_tags({"pipeline_names": ["simulation"]}, simulating, catalog)
    assert tags == {
        "pipeline": "simulation",
        "llm_model": "smollm2-135m-instruct",
        "data_fingerprint": data_fingerprint([events]),
        "data": "synthetic seed=3 shops=2 buyers/shop=9",
        "numerics": "llm=float32 [cpu (AVX2): bf16 0.9 vs float32 68.0 GFLOP/s]",
        "conditions": "base,persona_token",
    }
    other = Pipeline([node(_identity, "params:llm", "out", name="n")])
    tags = run_tags({"pipeline_names": None}, other, catalog)
    assert tags["pipeline"] == "__default__" and "conditions" not in tags


@pytest.mark.parametrize(
    "runtime_params, name", [({"run_name": "paper_sft"}, "paper_sft"), ({}, None)]
)
def test_run_name_comes_from_the_runtime_parameter(runtime_params: dict, name: str | None):
    loader = OmegaConfigLoader(
        conf_source=str(ROOT / "conf"),
        runtime_params=runtime_params,
        custom_resolvers=CONFIG_LOADER_ARGS["custom_resolvers"],
        base_env="base",
        default_run_env="local",
    )
    loader.config_patterns["mlflow"] = ["mlflow*", "mlflow*/**", "**/mlflow*"]
    assert loader["mlflow"]["tracking"]["run"]["name"] == name


def test_llm_and_sft_nodes_log_their_numerics(emulated_bf16, caplog):
    catalog = DataCatalog()
    catalog["params:llm"] = MemoryDataset({"backend": "local", "dtype": "auto"})
    catalog["params:sft"] = MemoryDataset(
        {"trainer": {"precision": "auto"}, "stage1": {"frozen_dtype": "bfloat16"}}
    )
    hook = NumericsHook()
    with caplog.at_level("INFO", logger="persona_shoppers.hooks"):
        hook.before_node_run(node(_identity, "params:sft.stage1", "a", name="train"), catalog)
        hook.before_node_run(node(_identity, "params:llm", "b", name="mine"), catalog)
        hook.before_node_run(node(_identity, "params:alignment", "c", name="other"), catalog)
    probe = "[cpu (AVX2): bf16 0.9 vs float32 68.0 GFLOP/s]"
    # Only the hook's lines: once a Kedro runner has run, the catalog logs its loads too.
    hooks = [r.getMessage() for r in caplog.records if r.name == "persona_shoppers.hooks"]
    assert hooks == [
        f"train numerics: sft=32-true frozen=bfloat16 {probe}",
        f"mine numerics: llm=float32 {probe}",
    ]
