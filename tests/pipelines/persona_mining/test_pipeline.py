"""The persona_mining pipeline on a small generated sample (buyer features from random
product embeddings), an untrained small VQ-VAE and an LLM backend that likes every option
alike (so each field takes its first option) and answers every schema with its first allowed
value: Kedro's SequentialRunner on an in-memory catalog."""

from __future__ import annotations

import json
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pytest
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from persona_shoppers.llm import registry
from persona_shoppers.llm.base import Choice, JsonResult
from persona_shoppers.personas.evidence import implied_levels
from persona_shoppers.pipelines import persona_mining
from persona_shoppers.vq_vae.model import BehaviourVQVAE

from .._kedro import KeptDataset, conf_params, featured_sample, param_datasets

K = 8
N_BUYERS = 2
OUTPUTS = (
    "persona_assignments",
    "shop_persona_distributions",
    "persona_cards",
    "persona_cards_markdown",
    "population_recovery",
    "population_recovery_mlflow_metrics",
    "population_recovery_plots",
    "persona_buyers",
    "persona_inputs",
    "persona_buyer_tokens",
    "persona_examples",
    "text_personas",
    "text_persona_metrics",
    "text_persona_mlflow_metrics",
    "text_persona_plots",
)


def _first_allowed(schema: dict[str, Any]) -> Any:
    """The first value a JSON schema allows: an enum's first value, one item per array."""
    if "enum" in schema:
        return schema["enum"][0]
    if schema["type"] == "object":
        return {key: _first_allowed(value) for key, value in schema["properties"].items()}
    if schema["type"] == "array":
        return [_first_allowed(schema["items"])]
    return "x"


class FirstAllowedLLM:
    """Answers every structured prompt validly without a model: the pipeline's wiring is
    under test here, the prompting in tests/personas."""

    def generate_json(self, prompts: list, schema: dict[str, Any], **options) -> list:
        value = _first_allowed(schema)
        return [JsonResult(value, True, json.dumps(value)) for _ in prompts]

    def choose(self, prompts: list, candidates: list, normalize: bool = False) -> list:
        return [Choice(0, c[0], [0.0] * len(c)) for c in candidates]


@pytest.fixture(scope="module")
def run():
    data, sample = featured_sample(
        pca_dim=4, n_shops=3, n_eval_shops=1, products_per_shop=40, buyers_per_shop=80
    )
    model = BehaviourVQVAE(embedding_dim=4, hidden_dims=(16,), latent_dim=4, num_codes=K).eval()
    params = conf_params("persona_mining")
    params["text_personas"].update(n_buyers=N_BUYERS, history_chars=300, permutation_draws=50)
    llm = {"backend": "first_allowed", "model": "none", "cache": False}
    catalog = DataCatalog(
        {
            "buyer_features": MemoryDataset(sample["buyer_features"]),
            "buyers": MemoryDataset(sample["buyers"]),
            "buyer_histories": MemoryDataset(sample["buyer_histories"]),
            "enriched_sessions": MemoryDataset(sample["enriched_sessions"]),
            "enriched_events": MemoryDataset(sample["enriched_events"]),
            "held_out_events": MemoryDataset(sample["enriched_events"]),
            "product_embeddings": MemoryDataset(sample["product_embeddings"]),
            "feature_transformer": MemoryDataset(sample["feature_transformer"]),
            "planted_truth": MemoryDataset(data.planted_truth),
            "raw_products": MemoryDataset(data.products),
            "vq_vae_model": MemoryDataset(model),
            **param_datasets(
                persona_mining=params,
                llm=llm,
                data_enrichment=conf_params("data_enrichment"),
                alignment={"cases": conf_params("alignment")["cases"]},
            ),
            **{name: KeptDataset() for name in OUTPUTS},
        }
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(registry, "BACKENDS", dict(registry.BACKENDS))
        registry.register_backend("first_allowed", model_tag=str)(lambda *_: FirstAllowedLLM())
        SequentialRunner().run(persona_mining.create_pipeline(), catalog)
    out = {name: catalog.load(name) for name in OUTPUTS}
    yield sample, out
    plt.close("all")


def test_every_buyer_has_a_token_and_every_shop_a_distribution(run):
    sample, out = run
    assignments = out["persona_assignments"]
    features = sample["buyer_features"]
    assert assignments[["shop_id", "buyer_id"]].equals(features[["shop_id", "buyer_id"]])
    assert assignments["token"].between(0, K - 1).all()
    shares = out["shop_persona_distributions"].groupby("shop_id")["share"].sum()
    assert set(shares.index) == set(features["shop_id"]) and np.allclose(shares, 1.0)


def test_cards_and_population_recovery(run):
    sample, out = run
    train_tokens = out["persona_assignments"].query("shop_role == 'train'")["token"]
    cards = out["persona_cards"]
    assert [c["token"] for c in cards] == list(range(K))
    assert sum(c["n_buyers"] for c in cards) == len(train_tokens)
    used = sum(c["n_buyers"] > 0 for c in cards)
    assert f"{used} of {K} tokens hold training-shop buyers" in out["persona_cards_markdown"]
    recovery = out["population_recovery"]
    assert set(recovery) == {"paper_protocol", "training_shops_only"}
    eval_shops = set(sample["buyer_features"].query("shop_role == 'eval'")["shop_id"])
    assert set(recovery["paper_protocol"]["shops"]) == eval_shops
    metrics = out["population_recovery_mlflow_metrics"]
    assert "paper_protocol_js_mean" in metrics
    assert set(out["population_recovery_plots"]) == {
        "stratum_recovery.png",
        "profile_recovery.png",
    }


def test_text_personas_of_sampled_held_out_buyers(run):
    sample, out = run
    buyers = out["persona_buyers"]
    assert len(buyers) == N_BUYERS
    assert (buyers["shop_role"] == "eval").all() and buyers["stratum"].isin(list("ABCD")).all()
    personas = out["text_personas"]
    assert personas[["shop_id", "buyer_id"]].equals(buyers[["shop_id", "buyer_id"]])
    assert (personas["status"] == "ok").all()
    # every option alike, no prior to divide out: each field takes its first option
    assert personas["profile"].map(lambda p: p["age_range"]).eq("18-24").all()
    assert personas["preferences"].map(lambda p: p["price_sensitivity"]).eq("low").all()
    report = out["text_persona_metrics"]
    assert report["n_buyers"] == report["n_ok"] == N_BUYERS and report["failures"] == 0
    assert report["spread"]["age_range"] == {"distinct": 1, "top_value": "18-24", "top_share": 1.0}
    assert set(report["behaviour"]) == {
        "price_sensitivity",
        "brand_reliance",
        "shopping_frequency",
        "interests",
    }
    # every persona says "low": it follows its evidence where the evidence implies "low"
    implied = [implied_levels(r) for r in out["persona_inputs"].to_dict("records")]
    for field in ("price_sensitivity", "brand_reliance"):
        levels = [i[field] for i in implied if i[field] is not None]
        assert report["evidence"][field] == {
            "n": len(levels),
            "share": pytest.approx(np.mean([v == "low" for v in levels])),
        }
    assert set(report["planted"]) == {"price_sensitivity", "brand_reliance"}
    evidence_types = report["planted"]["price_sensitivity"]["evidence"]["types"]
    assert sum(t["n"] for t in evidence_types.values()) == N_BUYERS
    assert set(out["text_persona_plots"]) == {"behaviour_agreement.png", "planted_types.png"}
    # the token of the features before the cutoff, one of the model's codes
    assert personas["token"].between(0, K - 1).all()
    assert personas["token"].tolist() == out["persona_buyer_tokens"]["token"].tolist()


def test_persona_inputs_hold_only_events_before_the_cutoff(run):
    sample, out = run
    inputs = out["persona_inputs"]
    events = sample["enriched_events"].to_pandas()
    for row in inputs.to_dict("records"):
        mine = events[
            (events["shop_id"] == row["shop_id"]) & (events["buyer_id"] == row["buyer_id"])
        ]
        before = mine[mine["ts"] < row["history_until"]]
        assert len(before) and (mine["ts"] >= row["history_until"]).any()
        # the evidence counts the events before the cutoff, no later one
        assert row["n_sessions"] <= before["session_id"].nunique()
        assert f"{row['n_views']} product views" in row["evidence"]
    examples = out["persona_examples"]
    assert 0 < len(examples) <= conf_params("persona_mining")["text_personas"]["few_shot"]
    for example in examples:
        assert example["answers"]["price_sensitivity"] in ("low", "medium", "high")
        assert example["shop_id"] not in set(inputs["shop_id"])  # training shops only


def test_no_training_shop_means_no_examples_and_a_warning(run, caplog):
    from persona_shoppers.pipelines.persona_mining.nodes import select_persona_examples

    sample, out = run
    held_out = out["persona_assignments"].query("shop_role == 'eval'")
    params = conf_params("persona_mining")["text_personas"]
    history = conf_params("data_enrichment")["history"]
    with caplog.at_level("WARNING"):
        examples = select_persona_examples(
            held_out, sample["enriched_events"], None, history, params
        )
    assert examples == [] and "no training-shop buyer" in caplog.text
