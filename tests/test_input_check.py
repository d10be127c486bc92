"""The missing-input check names each absent dataset and the pipeline that makes it."""

from __future__ import annotations

from pathlib import Path

import pytest
from kedro.framework.startup import bootstrap_project
from kedro.io import DataCatalog, MemoryDataset
from kedro.pipeline import Pipeline, node
from kedro_datasets.json import JSONDataset

from persona_shoppers.datasets import OptionalJSONDataset
from persona_shoppers.input_check import (
    MissingInputError,
    MissingInputsHook,
    missing_inputs,
    missing_inputs_message,
)


def _identity(x):
    return x


def _combine(a, b, c, x):
    return a


def _pair(a, b):
    return a


def test_missing_inputs_names_dataset_and_producing_pipeline(tmp_path):
    written = tmp_path / "a.json"
    written.write_text("{}")
    upstream = Pipeline([node(_identity, "raw", "b", name="make_b")])
    downstream = Pipeline([node(_combine, ["a", "b", "c", "params:x"], "d", name="use")])
    catalog = DataCatalog(
        {
            "a": JSONDataset(filepath=str(written)),
            "b": JSONDataset(filepath=str(tmp_path / "b.json")),
            "c": MemoryDataset(),
        }
    )
    pipelines = {"up": upstream, "down": downstream, "__default__": upstream + downstream}
    missing = missing_inputs(downstream, catalog, pipelines)
    assert missing == {"b": ["up"]}
    message = missing_inputs_message(missing)
    assert "b: `kedro run --pipelines=up`" in message


def test_hook_stops_a_project_run_before_its_first_node(tmp_path):
    """In this project, text_personas comes from the persona_mining pipeline."""
    bootstrap_project(Path(__file__).resolve().parents[1])
    catalog = DataCatalog({"text_personas": JSONDataset(filepath=str(tmp_path / "t.json"))})
    pipeline = Pipeline([node(_identity, "text_personas", "out")])
    with pytest.raises(MissingInputError, match="kedro run --pipelines=persona_mining"):
        MissingInputsHook().before_pipeline_run({}, pipeline, catalog)


def test_an_optional_dataset_does_not_stop_a_run_and_loads_empty(tmp_path, caplog):
    """The planted truth: absent on a real log, where it loads as {} with one log line."""
    absent = OptionalJSONDataset(filepath=str(tmp_path / "truth.json"), absent="Skipped.")
    written = tmp_path / "written.json"
    written.write_text('{"ab_tests": []}')
    other = JSONDataset(filepath=str(tmp_path / "o.json"))
    catalog = DataCatalog({"truth": absent, "other": other})
    pipeline = Pipeline([node(_pair, ["truth", "other"], "out")])
    assert missing_inputs(pipeline, catalog, {"p": pipeline}) == {"other": []}
    with caplog.at_level("INFO"):
        assert absent.load() == {} and absent.load() == {}
    assert caplog.text.count("truth.json does not exist; loaded as {}. Skipped.") == 1
    assert OptionalJSONDataset(filepath=str(written)).load() == {"ab_tests": []}
