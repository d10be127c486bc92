"""The synthetic_data pipeline on a small configuration: Kedro's SequentialRunner on an
in-memory catalog writes the raw layer the generator makes."""

from __future__ import annotations

import json

import pandas as pd
import polars as pl
import pytest
from kedro.io import DataCatalog
from kedro.runner import SequentialRunner

from persona_shoppers.pipelines import synthetic_data
from persona_shoppers.synthetic import SyntheticConfig, generate

from .._kedro import KeptDataset, conf_params, param_datasets

OUTPUTS = (
    "raw_events",
    "raw_products",
    "raw_collections",
    "raw_collection_products",
    "planted_truth",
)


@pytest.fixture(scope="module")
def params() -> dict:
    params = conf_params("synthetic_data")
    params.update(n_shops=2, n_eval_shops=1, products_per_shop=20, buyers_per_shop=30)
    params["ab_tests"] = params["ab_tests"][:1]
    return params


@pytest.fixture(scope="module")
def outputs(params: dict) -> dict:
    catalog = DataCatalog(
        {**param_datasets(synthetic_data=params), **{name: KeptDataset() for name in OUTPUTS}}
    )
    SequentialRunner().run(synthetic_data.create_pipeline(), catalog)
    return {name: catalog.load(name) for name in OUTPUTS}


def test_outputs_are_the_generators_tables(params: dict, outputs: dict):
    expected = generate(SyntheticConfig.from_params(params), progress=False)
    assert isinstance(outputs["raw_events"], pl.DataFrame)
    assert outputs["raw_events"].equals(expected.events)
    for name, frame in (
        ("raw_products", expected.products),
        ("raw_collections", expected.collections),
        ("raw_collection_products", expected.collection_products),
    ):
        pd.testing.assert_frame_equal(outputs[name], frame)
    assert outputs["planted_truth"] == expected.planted_truth


def test_the_planted_truth_records_the_configuration(params: dict, outputs: dict):
    truth = json.loads(json.dumps(outputs["planted_truth"]))  # as planted_truth.json holds it
    config = SyntheticConfig.from_params(params).to_dict()
    assert truth["generator"] == json.loads(json.dumps(config))
    assert sorted(s["role"] for s in truth["shops"]) == ["eval", "train"]
    assert [t["name"] for t in truth["ab_tests"]] == ["price_rise_10pct"]
    events = outputs["raw_events"]
    assert set(events["shop_id"].unique()) == set(outputs["raw_products"]["shop_id"])
