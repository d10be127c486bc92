"""The sft pipeline end to end on a tiny random Llama and synthetic traces, run by Kedro's
SequentialRunner on an in-memory catalog."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from persona_shoppers.agent.evaluation import FUNNEL_CHECKS
from persona_shoppers.datasets import HuggingFaceModelDataset
from persona_shoppers.pipelines.sft import create_pipeline
from persona_shoppers.pipelines.sft.nodes import calibrate_sft_agent, evaluate_sft, query_steps
from persona_shoppers.sft.data import sample_split
from persona_shoppers.sft.tokens import find_persona_tokens, is_tied
from persona_shoppers.vq_vae.model import BehaviourVQVAE

from ...sft._traces import synthetic_traces
from .._kedro import KeptDataset, conf_params, param_datasets

OUTPUTS = (
    "sft_model_stage1",
    "sft_stage1_history",
    "sft_model",
    "sft_stage2_history",
    "sft_model_single_stage",
    "sft_single_stage_history",
)


@pytest.fixture
def params(tiny_base_dir: Path, tmp_path: Path) -> dict:
    params = conf_params("sft")
    params["model"] = str(tiny_base_dir)
    params["data"]["batch_size"] = 4
    params["trainer"]["enable_progress_bar"] = False
    params["checkpoint"]["dir"] = str(tmp_path / "checkpoints")
    params["checkpoint"]["every_n_train_steps"] = 2
    for stage in ("stage1", "stage2"):
        params[stage]["max_examples"] = 12
        params[stage]["max_val_examples"] = 4
    params["stage2"]["data"] = {"batch_size": 3}  # a stage's own data settings win
    params["stage2"].update(top_layers=1, trainer={}, query_examples=1)  # tiny: 2 layers
    params["single_stage"].update(max_examples=12, max_val_examples=4)
    return params


def test_pipeline_trains_both_stages_and_the_single_stage_ablation(params, tmp_path):
    vq_vae = BehaviourVQVAE(hidden_dims=(32,), latent_dim=8, num_codes=16)
    traces = {
        f"sft_traces_stage{s}": synthetic_traces(sessions=8, steps=3, stage=s, num_tokens=16)
        for s in (1, 2)
    }
    catalog = DataCatalog(
        {
            "vq_vae_model": MemoryDataset(vq_vae),
            **param_datasets(sft=params, llm={"backend": "local", "model": "unused"}),
            **{name: MemoryDataset(frame) for name, frame in traces.items()},
            **{name: KeptDataset() for name in OUTPUTS},  # deep copies, as in a run
        }
    )
    training = create_pipeline().to_nodes("train_sft_stage2", "train_sft_single_stage")
    SequentialRunner().run(training, catalog)

    initial = None
    for name in ("sft_model_stage1", "sft_model", "sft_model_single_stage"):
        model, tokenizer = catalog.load(name)
        persona = find_persona_tokens(tokenizer)
        assert persona.count == 16 and is_tied(model) and not model.training
        embeddings = model.get_input_embeddings().weight
        if initial is None:
            initial = embeddings[: persona.first].clone()
        frozen_rows_kept = torch.equal(embeddings[: persona.first], initial)
        # stage 1 trains the persona rows, stage 2 the upper layer: only the ablation moves them
        assert frozen_rows_kept == (name != "sft_model_single_stage"), name
    upper = [
        catalog.load(n)[0].model.layers[-1].mlp.up_proj.weight
        for n in ("sft_model_stage1", "sft_model")
    ]
    assert not torch.equal(*upper)
    # 12 examples at batch 4; 12 and a query example at batch 3; both stages' 24 at batch 3
    for stage, steps, examples in (("stage1", 3, 12), ("stage2", 5, 13), ("single_stage", 8, 24)):
        history = catalog.load(f"sft_{stage}_history")
        assert [p["step"] for p in history["train_loss"]] == list(range(1, steps + 1)), stage
        assert history["val_loss"] and history["train_kept"][0]["value"] == examples
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "single_stage",
        "stage1",
        "stage2",
    ]

    HuggingFaceModelDataset(str(tmp_path / "sft_model")).save(catalog.load("sft_model"))
    assert (tmp_path / "sft_model" / "config.json").is_file()


def test_node_names():
    assert {n.name for n in create_pipeline().nodes} == {
        "add_persona_tokens",
        "train_sft_stage1",
        "train_sft_stage2",
        "train_sft_single_stage",
        "calibrate_sft_agent",
        "evaluate_sft",
    }


def test_every_node_that_trains_or_runs_the_llm_takes_sft_or_llm_parameters():
    """persona_shoppers.hooks.NumericsHook logs the numerics of nodes whose inputs name the
    ``sft`` or ``llm`` parameters."""
    for node in create_pipeline().nodes:
        blocks = {name.removeprefix("params:").split(".")[0] for name in node.inputs}
        assert blocks & {"sft", "llm"}, node.name


def test_evaluate_sft_reports_every_model(params, tiny_base_dir):
    traces = synthetic_traces(sessions=8, steps=3, stage=2, num_tokens=16, validation_share=0.5)
    traces.loc[traces.index % 2 == 0, "page"] = "product"  # product pages past every draw
    saved = HuggingFaceModelDataset(str(tiny_base_dir)).load()
    assert saved.folder == tiny_base_dir
    params["evaluation"].update(
        examples={"two_stage": 6, "zero_shot": 4, "single_stage": 4},
        funnel_min_steps={"two_stage": 8, "zero_shot": 0, "single_stage": 0},
        sensitivity_prompts=2,
        sensitivity_tokens=3,
        embedding_cache_dir=None,
    )
    llm = {"backend": "local", "model": "unused", "dtype": "float32", "cache": False}
    calibration = calibrate_sft_agent(
        traces, saved, params["stage2"], params["calibration"], params["seed"], llm
    )
    report, metrics = evaluate_sft(
        traces,
        saved,
        saved,
        calibration,
        params["evaluation"],
        params["model"],
        params["hf_cache_dir"],
        llm,
    )
    assert len(report["tokens"]) == 3
    # Only the two-stage model has a calibration; its calibrated figures use the same steps.
    assert report["two_stage"]["calibrated"]["examples"] == 6
    assert "calibrated" not in report["single_stage"]
    assert "two_stage.calibrated.mean_p_next_action" in metrics
    for name, n in (("zero_shot", 4), ("two_stage", 6), ("single_stage", 4)):
        assert report[name]["examples"] == n
        topped_up = [report[name].get(c, {}).get("topped_up", 0) for c in FUNNEL_CHECKS]
        assert (sum(topped_up) > 0) == (name == "two_stage")  # only its checks are topped up
        assert 0 <= report[name]["next_action_type_accuracy"] <= 1
        assert 0 <= report[name]["json_validity"] <= 1
        assert report[name]["token_sensitivity_kl"] >= 0
        assert metrics[f"{name}.token_sensitivity_kl"]["value"] == pytest.approx(
            report[name]["token_sensitivity_kl"]
        )


def test_query_steps_are_training_searches_outside_the_draw():
    traces = synthetic_traces(sessions=12, steps=4, stage=2, validation_share=0.3)
    searches = traces[(traces["split"] == "train") & (traces["action"] == "search")]
    drawn = searches.index[:2]
    picked = query_steps(traces, drawn, 100, seed=0)
    assert set(picked.index) == set(searches.index) - set(drawn)  # every other one, no more
    assert len(query_steps(traces, drawn, 1, seed=0)) == 1
    assert query_steps(traces, drawn, 3, seed=4).equals(query_steps(traces, drawn, 3, seed=4))


def test_calibration_is_fitted_on_training_steps_stage2_did_not_train_on(
    params, tiny_base_dir, monkeypatch
):
    traces = synthetic_traces(sessions=12, steps=4, stage=2, validation_share=0.3)
    traces.loc[traces.index % 3 == 0, "page"] = "product"
    params["stage2"].update(max_examples=10, query_examples=2)
    params["calibration"].update(examples=8)
    scored = []

    def fit(llm, steps, targets, max_bias):
        scored.append(steps)
        return {"steps": len(steps), "targets_n": len(targets), "type_bias": {}, "mean_after": {}}

    monkeypatch.setattr("persona_shoppers.pipelines.sft.nodes.fit_agent_calibration", fit)
    model = HuggingFaceModelDataset(str(tiny_base_dir)).load()
    llm = {"backend": "local", "model": "unused", "dtype": "float32", "cache": False}
    report = calibrate_sft_agent(
        traces, model, params["stage2"], params["calibration"], params["seed"], llm
    )
    training = traces[traces["split"] == "train"]
    assert report["steps"] == 8 and report["targets_n"] == len(training)
    drawn = sample_split(traces, "train", 10, params["seed"], params["stage2"]["stratify_by"])
    extra = query_steps(traces, drawn.index, 2, params["seed"])
    steps = scored[0]
    assert set(steps.index) <= set(training.index) - set(drawn.index) - set(extra.index)
    # even shares per context: page, cart (the synthetic prompts show no empty cart), intent
    assert steps["context"].value_counts().to_dict() == {
        f"{page}|items|{intent}": 2
        for page in ("product", "search")
        for intent in ("buy", "browse")
    }


def test_paper_scale_fits_no_calibration_and_its_agents_use_none():
    sft, simulation = conf_params("sft", "paper"), conf_params("simulation", "paper")
    assert sft["stage2"]["max_examples"] is None and sft["calibration"]["examples"] == 0
    assert simulation["rollout"]["calibrated"] is False
    model = SimpleNamespace(folder="never loaded")
    report = calibrate_sft_agent(
        synthetic_traces(), model, sft["stage2"], sft["calibration"], sft["seed"], {}
    )
    assert report == {"type_bias": {}, "steps": 0}
