"""The simulation pipeline on a small generated sample with a tiny random model: Kedro's
SequentialRunner on an in-memory catalog."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from persona_shoppers.agent.rollout import OUTCOMES
from persona_shoppers.clickstream import SESSION_COLUMNS
from persona_shoppers.personas.cards import shop_distributions
from persona_shoppers.pipelines import simulation
from persona_shoppers.pipelines.simulation.nodes import (
    build_simulation_agents,
    calibrate_agents_on_policy,
    condition_engine,
)
from persona_shoppers.storefront import StoreVariant

from .._kedro import (
    KeptDataset,
    agent_calibration_inputs,
    conf_params,
    enriched_sample,
    param_datasets,
    storefronts,
    text_personas,
    token_assignments,
)

OUTPUTS = (
    "agent_action_calibration",
    "simulation_agents",
    "simulated_sessions",
    "simulation_outcomes",
    "simulation_mlflow_metrics",
    "ab_test_results",
    "ab_test_sessions",
)


@pytest.fixture(scope="module")
def run(tiny_model_dir: Path):
    tests = (
        StoreVariant().with_changes("price_rise_10pct", price_multiplier=1.1),
        StoreVariant().with_changes("fewer_results_per_page", page_size=4),
    )
    data, enriched = enriched_sample(
        n_shops=3, n_eval_shops=1, products_per_shop=40, buyers_per_shop=60, ab_tests=tests
    )
    assignments = token_assignments(enriched["buyers"], data.planted_truth)
    params = conf_params("simulation")
    params["populations"] = {
        "shop_sample_per_shop": 4,
        "matched_per_shop": 3,
        "ab_sample_per_shop": 3,
    }
    params["rollout"].update(max_steps=4, temperature=20.0, lockstep=8)
    params["ab_tests"]["tests"] = params["ab_tests"]["tests"][:2]
    params["on_policy_calibration"]["agents"] = 8  # 4 training sessions to draw from
    llm = {**conf_params("llm"), "model": str(tiny_model_dir), "dtype": "float32"}
    catalog = DataCatalog(
        {
            "shop_persona_distributions": MemoryDataset(shop_distributions(assignments, 10)),
            "persona_assignments": MemoryDataset(assignments),
            "held_out_events": MemoryDataset(enriched["enriched_events"]),
            "text_personas": MemoryDataset(text_personas(assignments, 4)),
            "sft_model": MemoryDataset(SimpleNamespace(folder=tiny_model_dir)),
            "sft_model_single_stage": MemoryDataset(SimpleNamespace(folder=tiny_model_dir)),
            **agent_calibration_inputs(assignments),
            "storefronts": MemoryDataset(storefronts(data)),
            "raw_products": MemoryDataset(data.products),
            "raw_collections": MemoryDataset(data.collections),
            "planted_truth": MemoryDataset(data.planted_truth),
            **param_datasets(simulation=params, llm=llm),
            **{name: KeptDataset() for name in OUTPUTS},
        }
    )
    SequentialRunner().run(simulation.create_pipeline(), catalog)
    inputs = {"persona_assignments": assignments, "planted_truth": data.planted_truth}
    return params, {**inputs, **{name: catalog.load(name) for name in OUTPUTS}}


def test_populations(run):
    _, out = run
    agents = out["simulation_agents"]
    sampled = agents[agents["population"] == "shop_sample"]
    matched = agents[agents["population"] == "matched"]
    ab_sample = agents[agents["population"] == "ab_sample"]
    assert len(sampled) == 4 and len(matched) == 3 and len(ab_sample) == 3
    assert (matched["mismatch_token"] != matched["token"]).all()
    assert matched["text_persona"].str.contains("price sensitivity: high").all()
    assert agents["goal"].str.match(r"You are here to (buy|browse) ").all()
    assert agents["agent_id"].is_unique
    # every agent is one real buyer of its shop: that buyer's token and stratum together
    real = out["persona_assignments"].set_index(["shop_id", "buyer_id"])
    for agent in agents.to_dict("records"):
        buyer = real.loc[(agent["shop_id"], agent["buyer_id"])]
        assert (agent["token"], agent["stratum"]) == (buyer["token"], buyer["stratum"])


def test_the_matched_agents_alone_when_no_population_is_sampled():
    data, enriched = enriched_sample(
        n_shops=3, n_eval_shops=1, products_per_shop=40, buyers_per_shop=60
    )
    assignments = token_assignments(enriched["buyers"], data.planted_truth)
    agents = build_simulation_agents(
        shop_distributions(assignments, 10),
        assignments,
        enriched["enriched_events"],
        text_personas(assignments, 4),
        seed=0,
        populations={"shop_sample_per_shop": 0, "matched_per_shop": 3, "ab_sample_per_shop": 0},
    )
    assert len(agents) == 3 and (agents["population"] == "matched").all()


def test_the_agents_calibration_is_refitted_on_their_own_steps(run):
    _, out = run
    calibration = out["agent_action_calibration"]
    assert calibration["state_type_bias"] == {"product|empty": {"view": 0.5}}
    (round_,) = calibration["on_policy"]["rounds"]
    assert calibration["on_policy"]["agents"] == round_["agents"] == 4
    assert round_["steps"] >= 4 and "home|empty" in round_["steps_by_context"]
    # on the agents' home-page steps, searching moves toward the buyers' 0.6 (the tiny
    # random model's peaky logits keep it from reaching it within the bias clip)
    before, after = (round_[k]["home|empty"]["search"] for k in ("mean_before", "mean_after"))
    assert abs(after - 0.6) < abs(before - 0.6)
    assert set(calibration["type_bias"]) >= {"home|empty", "product|empty"}


def test_without_fitting_agents_the_buyers_calibration_is_passed_on():
    calibration = {"type_bias": {"product|empty": {"view": 0.5}}, "targets": {}}
    on_policy = {**conf_params("simulation")["on_policy_calibration"], "agents": 0}
    rollout = conf_params("simulation")["rollout"]
    passed = calibrate_agents_on_policy(calibration, None, None, {}, rollout, on_policy, 5.0, {})
    assert passed == {**calibration, "on_policy": None}


def test_every_condition_runs_with_valid_actions_and_counted_outcomes(run):
    params, out = run
    sessions = out["simulated_sessions"]
    assert set(SESSION_COLUMNS) <= set(sessions.columns)
    assert {"condition", "persona_token", "outcome"} <= set(sessions.columns)
    expected = sum(
        len(out["simulation_agents"].query("population == @p"))
        for spec in params["conditions"].values()
        for p in spec["populations"]
    )
    assert len(sessions) == expected
    assert sessions["outcome"].isin(OUTCOMES).all()
    assert (sessions["n_errors"] == 0).all()
    token = sessions[sessions["condition"] == "persona_token"]
    assert token["persona_token"].str.fullmatch(r"<\|persona_\d+\|>").all()
    assert sessions.loc[sessions["condition"] == "base", "persona_token"].isna().all()
    neutral = sessions[sessions["condition"].str.startswith("neutral_")]
    assert neutral["goal"].str.match(r"You are interested in ").all()
    assert (
        sessions.loc[sessions["condition"] == "persona_token", "goal"]
        .str.match(r"You are here to (buy|browse) ")
        .all()
    )
    counts = out["simulation_outcomes"]
    assert counts["base"]["matched"]["sessions"] == 3
    assert sum(counts["base"]["matched"][o] for o in OUTCOMES) == 3
    assert counts["token_mismatch"]["matched"]["malformed_actions"] == 0


def test_ab_tests_report_every_test_on_the_same_population(run):
    params, out = run
    results = out["ab_test_results"]
    names = [t["name"] for t in params["ab_tests"]["tests"]]
    assert sorted(results["test"].unique()) == sorted(names)
    assert set(results["metric"]) == {
        "atc_rate",
        "checkout_rate",
        "conversion_rate",
        "revenue_per_session",
    }
    planted = {t["name"]: t["pooled"]["eval"]["effect"] for t in out["planted_truth"]["ab_tests"]}
    for row in results.to_dict("records"):  # the generator's planted effects, None undefined
        expected = planted[row["test"]][row["metric"]]
        assert row["reference_effect"] == expected or (
            expected is None and row["status"] == "undefined"
        )
        if np.isfinite(row["simulated_effect"]):
            assert row["ci_low"] <= row["simulated_effect"] <= row["ci_high"]
    assert set(results["status"]) <= {"agrees", "disagrees", "inconclusive", "undefined"}
    decided = results["status"].isin(["agrees", "disagrees"])
    assert (
        results.loc[decided, "direction_agreement"] == (results.loc[decided, "status"] == "agrees")
    ).all()
    assert results.loc[~decided, "direction_agreement"].isna().all()
    arms = out["ab_test_sessions"]
    assert set(arms["variant"]) == {"control", *names}
    control = arms[arms["variant"] == "control"]
    population = out["simulation_agents"].query("population == 'ab_sample'")
    assert control["agent_id"].tolist() == population["agent_id"].tolist()
    assert (control["condition"] == params["ab_tests"]["condition"]).all()
    for name in names:
        arm = arms[arms["variant"] == name]
        assert arm["agent_id"].tolist() == control["agent_id"].tolist()
        assert arm["goal"].tolist() == control["goal"].tolist()
        assert arm["persona_token"].tolist() == control["persona_token"].tolist()
    row = results[(results["test"] == names[0]) & (results["metric"] == "conversion_rate")]
    assert row["control"].item() == control["has_purchase"].mean()
    row = results[(results["test"] == names[0]) & (results["metric"] == "atc_rate")]
    assert row["control"].item() == control["has_add_to_cart"].mean()


def test_fidelity_env_sizes_the_main_conditions_and_ab_arms_to_100():
    """conf/fidelity: at least 100 agents per main condition and A/B arm on the default data's
    6 eval shops, every matched agent with a text persona, visits of up to 30 steps as in
    conf/base."""
    eval_shops = 6
    populations = conf_params("simulation", env="fidelity")["populations"]
    mining = conf_params("persona_mining", env="fidelity")["text_personas"]
    assert populations["matched_per_shop"] * eval_shops >= 100
    assert populations["ab_sample_per_shop"] * eval_shops >= 100
    assert mining["n_buyers"] >= populations["matched_per_shop"] * eval_shops
    base = conf_params("simulation")
    fidelity = conf_params("simulation", env="fidelity")
    assert fidelity["conditions"] == base["conditions"]  # only the sizes
    assert fidelity["rollout"] == base["rollout"]
    assert base["rollout"]["max_steps"] == 30  # the papers' limit, in the default run too
    refit = {**base["on_policy_calibration"], "agents": 102}  # the measured refit
    assert fidelity["on_policy_calibration"] == refit
    assert base["on_policy_calibration"]["agents"] > 0  # the default run refits too, smaller


def test_fidelity_env_measures_on_every_case_buyer_with_both_instruction_agents():
    """conf/fidelity: all text-persona buyers as alignment cases, the untuned agents beside the
    persona-token ones in instruction following, and stage 2's 3 epochs (the model the
    fidelity figures were measured on); the rest is conf/base."""
    base, fidelity = conf_params("alignment"), conf_params("alignment", env="fidelity")
    assert fidelity["cases"] == {**base["cases"], "max_buyers": None}
    conditions = fidelity["instruction_following"]["conditions"]
    assert conditions == {
        **base["instruction_following"]["conditions"],
        "untuned": conditions["untuned"],
    }
    assert conditions["untuned"] == {"model": "llm", "profile": "none"}
    paper = conf_params("alignment", env="paper")["instruction_following"]["conditions"]
    assert paper == conditions
    sft, sft_fidelity = conf_params("sft"), conf_params("sft", env="fidelity")
    stage2 = sft_fidelity["stage2"]
    assert stage2["trainer"] == {**sft["stage2"]["trainer"], "max_epochs": 3}
    assert stage2["max_val_examples"] == 96
    trainer = {**sft["stage2"]["trainer"], "max_epochs": 3}
    assert stage2 == {**sft["stage2"], "max_val_examples": 96, "trainer": trainer}
    assert {**sft_fidelity, "stage2": sft["stage2"]} == sft


def test_only_the_sft_model_s_agents_are_calibrated():
    rollout = conf_params("simulation")["rollout"]
    assert rollout["calibrated"] is True
    calibration = {"type_bias": {"product": {"add_to_cart": 1.2}}}
    assert (
        condition_engine(None, {}, rollout, "sft", calibration).type_bias
        == calibration["type_bias"]
    )
    for model in ("llm", "sft_single_stage"):
        assert condition_engine(None, {}, rollout, model, calibration).type_bias == {}
    assert (
        condition_engine(None, {}, {**rollout, "calibrated": False}, "sft", calibration).type_bias
        == {}
    )
    for empty in ({}, {"type_bias": {}, "steps": 0}):
        with pytest.raises(ValueError, match="calibration has no type_bias"):
            condition_engine(None, {}, rollout, "sft", empty)
