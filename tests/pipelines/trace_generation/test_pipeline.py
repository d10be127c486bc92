"""The trace_generation pipeline on a small generated sample: Kedro's SequentialRunner on an
in-memory catalog (synthetic data -> data_enrichment -> trace_generation)."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pytest
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from persona_shoppers.agent import SYSTEM_PROMPT
from persona_shoppers.pipelines import trace_generation
from persona_shoppers.pipelines.trace_generation import nodes
from persona_shoppers.storefront import Action, build_stores

from .._kedro import (
    KeptDataset,
    conf_params,
    enriched_sample,
    param_datasets,
    storefronts,
    token_assignments,
)

ROOT = Path(__file__).resolve().parents[3]
OUTPUTS = (
    "enriched_events",
    "enriched_sessions",
    "storefronts",
    "trace_sessions",
    "trace_events",
    "sft_traces_stage1",
    "sft_traces_stage2",
    "trace_replay_report",
    "trace_length_report",
    "trace_mlflow_metrics",
    "trace_length_plot",
)

pytestmark = pytest.mark.integration  # counts tokens with the default model's tokenizer


@pytest.fixture(scope="module")
def run():
    data, enriched = enriched_sample(
        n_shops=3, n_eval_shops=1, products_per_shop=40, buyers_per_shop=60
    )
    assignments = token_assignments(enriched["buyers"], data.planted_truth)
    catalog = DataCatalog(
        {
            "enriched_events": KeptDataset(enriched["enriched_events"]),
            "enriched_sessions": KeptDataset(enriched["enriched_sessions"]),
            "persona_assignments": MemoryDataset(assignments),
            "raw_products": MemoryDataset(data.products),
            "raw_collections": MemoryDataset(data.collections),
            "raw_collection_products": MemoryDataset(data.collection_products),
            **param_datasets(
                storefront=conf_params("storefront"),
                trace_generation=conf_params("trace_generation"),
                llm={**conf_params("llm"), "hf_cache_dir": str(ROOT / "data" / "06_models" / "hf")},
            ),
            **{name: KeptDataset() for name in OUTPUTS[2:]},
        }
    )
    SequentialRunner().run(trace_generation.create_pipeline(), catalog)
    return data, assignments, {name: catalog.load(name) for name in OUTPUTS}


def test_every_token_in_use_is_sampled_from_training_shops_only(run):
    _, assignments, out = run
    sessions = out["trace_sessions"]
    train = assignments[assignments["shop_role"] == "train"]
    assert set(sessions["token"]) == set(train["token"])
    assert set(sessions["shop_id"]) <= set(train["shop_id"])
    per_token = sessions.groupby("token").size()
    assert per_token.max() <= conf_params("trace_generation")["sessions_per_token"]
    assert set(sessions["split"]) == {"train", "validation"}


def test_storefronts_cover_every_shop_and_survive_pickling(run):
    """The catalog persists ``storefronts`` as a pickle; a restored store serves the same
    pages."""
    data, _, out = run
    stores = out["storefronts"]
    assert sorted(stores) == sorted(data.products["shop_id"].unique())
    restored = pickle.loads(pickle.dumps(stores))
    cap = conf_params("storefront")["max_observation_tokens"]
    for shop, store in stores.items():
        assert restored[shop].max_observation_tokens == store.max_observation_tokens == cap
        query = store.products["title"].iloc[0]
        assert restored[shop].search_results(query) == store.search_results(query)
        assert restored[shop].search_results(query)  # the title finds its product


def test_every_trace_re_executes_in_the_store_without_an_invalid_action(run):
    data, _, out = run
    stores = build_stores(
        data.products,
        data.collections,
        data.collection_products,
        max_observation_tokens=conf_params("storefront")["max_observation_tokens"],
    )
    for stage in ("sft_traces_stage1", "sft_traces_stage2"):
        traces = out[stage]
        for (shop, _), session in traces.groupby(["shop_id", "session_id"]):
            visit, page = stores[shop].start()
            for messages in session.sort_values("step")["messages"]:
                system, user, assistant = messages
                assert system == {"role": "system", "content": SYSTEM_PROMPT}
                assert user["content"].endswith(page.observation)
                page = stores[shop].step(visit, Action.parse(assistant["content"]))
                assert page.valid, page.error
            assert visit.done


def test_stage_goals_and_metadata(run):
    _, _, out = run
    one, two = out["sft_traces_stage1"], out["sft_traces_stage2"]
    assert len(one) == len(two) and (one["session_id"] == two["session_id"]).all()
    assert one["goal"].str.startswith("You are interested in ").all()
    buy = two["stratum"].isin(["A", "B", "C"])
    assert two.loc[buy, "goal"].str.startswith("You are here to buy ").all()
    assert two.loc[~buy, "goal"].str.startswith("You are here to browse ").all()
    for traces, stage in ((one, 1), (two, 2)):
        assert (traces["stage"] == stage).all()
        user = traces["messages"].map(lambda m: m[1]["content"])
        assert all(
            f"Buyer profile: {t}\n" in u for t, u in zip(traces["persona_token"], user, strict=True)
        )
        assert (traces["step"] < traces["n_steps"]).all()
        assert traces["action"].iloc[-1] in {"end", "purchase"}
        json.dumps(traces.iloc[0].to_dict())  # json-lines serialisable


def test_replay_covers_the_human_events_and_reports_lengths(run):
    _, _, out = run
    report = out["trace_replay_report"]
    assert report["event_coverage"] >= 0.95
    assert (
        report["replayed_events"] + sum(report["skipped_events"].values()) == report["human_events"]
    )
    assert report["examples_per_stage"] == len(out["sft_traces_stage1"])
    lengths = out["trace_length_report"]
    assert 100 < lengths["stage1"]["q50"] <= 512
    assert lengths["stage1"]["q5"] <= lengths["stage1"]["q50"] <= lengths["stage1"]["q100"]
    metrics = out["trace_mlflow_metrics"]
    assert metrics["event_coverage"]["value"] == report["event_coverage"]
    assert np.isclose(metrics["stage1_median_tokens"]["value"], lengths["stage1"]["q50"])


def test_same_input_gives_the_same_traces(run):
    data, assignments, out = run
    params = conf_params("trace_generation")
    sessions = nodes.sample_trace_sessions(
        out["enriched_sessions"],
        assignments,
        params["seed"],
        params["sessions_per_token"],
        params["validation_fraction"],
    )
    pd.testing.assert_frame_equal(sessions, out["trace_sessions"])
    stage1, _, report = nodes.replay_trace_sessions(
        sessions, out["trace_events"], storefronts(data), params["max_progress_steps"]
    )
    pd.testing.assert_frame_equal(stage1, out["sft_traces_stage1"])
    assert report == out["trace_replay_report"]


def test_the_trace_events_are_every_event_of_the_trace_buyers(run):
    _, _, out = run
    events, buyers = out["enriched_events"], out["trace_sessions"][["shop_id", "buyer_id"]]
    expected = events.join(pl.from_pandas(buyers).unique(), on=["shop_id", "buyer_id"], how="semi")
    assert out["trace_events"].equals(expected)
    assert set(out["trace_events"]["session_id"]) >= set(out["trace_sessions"]["session_id"])
