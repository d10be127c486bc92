"""The simulation and alignment pipelines together on a small generated sample with a tiny
random model: Kedro's SequentialRunner on an in-memory catalog."""

from __future__ import annotations

import math
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from persona_shoppers.agent.population import category_leaf
from persona_shoppers.agent.prompts import CONTENT_FREE_GOAL
from persona_shoppers.alignment.naming import split_metric_name
from persona_shoppers.alignment.report import REFERENCES
from persona_shoppers.personas.cards import shop_distributions
from persona_shoppers.pipelines import alignment, simulation
from persona_shoppers.pipelines.alignment import nodes as alignment_nodes
from persona_shoppers.storefront import StoreVariant

from ...llm.test_base import RecordingLLM
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
    "simulation_agents",
    "query_generation_cases",
    "item_selection_cases",
    "rank_selection_cases",
    "instruction_tasks",
    "human_reference_pairs",
    "query_perplexities",
    "individual_task_answers",
    "instruction_runs",
    "alignment_metrics",
    "alignment_details",
    "alignment_mlflow_metrics",
    "alignment_report",
    "alignment_plots",
)
HEADS = ("engagement", "exploration", "purchase")


def _cards(k: int) -> list[dict]:
    """Persona cards whose head bins cycle low / medium / high over the tokens."""
    levels = ("low", "medium", "high")
    return [
        {"token": t, "bins": {h: {"label": levels[(t + i) % 3]} for i, h in enumerate(HEADS)}}
        for t in range(k)
    ]


def _recovery(shops: list[str]) -> dict:
    mix = {s: {"A": 0.4, "B": 0.1, "C": 0.2, "D": 0.3} for s in shops}
    return {
        "paper_protocol": {
            "shops": shops,
            "real_mix": mix,
            "predicted_mix": mix,
            "js_per_shop": {s: 0.0 for s in shops},
        }
    }


@pytest.fixture(scope="module")
def run(tiny_model_dir: Path):
    llm = {**conf_params("llm"), "model": str(tiny_model_dir), "dtype": "float32"}
    return run_simulation_and_alignment(tiny_model_dir, llm)


def run_simulation_and_alignment(tiny_model_dir: Path, llm: dict, case_buyers: int | None = None):
    """The simulation and alignment pipelines on a small sample, with the tiny model as the
    SFT models and ``llm`` as the ``llm`` parameters (``case_buyers``: fewer alignment case
    buyers, 100 bootstrap draws): (alignment params, simulation params, outputs by name)."""
    tests = (StoreVariant().with_changes("price_rise_10pct", price_multiplier=1.1),)
    data, enriched = enriched_sample(
        n_shops=3, n_eval_shops=1, products_per_shop=40, buyers_per_shop=80, ab_tests=tests
    )
    assignments = token_assignments(enriched["buyers"], data.planted_truth)
    eval_shops = sorted(assignments.loc[assignments["shop_role"] == "eval", "shop_id"].unique())
    sim = conf_params("simulation")
    sim["populations"] = {"shop_sample_per_shop": 6, "matched_per_shop": 3, "ab_sample_per_shop": 2}
    sim["rollout"].update(max_steps=4, temperature=20.0, lockstep=16)
    sim["ab_tests"]["tests"] = sim["ab_tests"]["tests"][:1]
    params = conf_params("alignment")
    params["llm_cache"] = False
    if case_buyers is not None:
        params["cases"]["max_buyers"] = case_buyers
        params["bootstrap_draws"] = 100
    params["permutation_draws"] = 200
    if llm["backend"] == "endpoint":  # a server cannot guide queries (docs/llm.md)
        for queries in (
            sim["rollout"],
            params["individual_tasks"],
            params["instruction_following"],
        ):
            queries["query_guidance"] = 1.0
    params["kde"].update(repeats=2, n_samples=100)
    params["instruction_following"].update(
        repeats=1, max_steps=3, length_bins=[[3, 8], [9, None]], temperature=20.0
    )
    # both kinds of model, as conf/fidelity runs them
    params["instruction_following"]["conditions"]["untuned"] = {"model": "llm", "profile": "none"}
    model = MemoryDataset(SimpleNamespace(folder=tiny_model_dir))
    catalog = DataCatalog(
        {
            "shop_persona_distributions": MemoryDataset(shop_distributions(assignments, 10)),
            "persona_assignments": MemoryDataset(assignments),
            "persona_cards": MemoryDataset(_cards(10)),
            "population_recovery": MemoryDataset(_recovery(eval_shops)),
            "text_personas": MemoryDataset(
                text_personas(assignments, 30, enriched["enriched_events"], data.products)
            ),
            "sft_model": model,
            "sft_model_single_stage": model,
            **agent_calibration_inputs(assignments),
            "storefronts": MemoryDataset(storefronts(data)),
            "raw_products": MemoryDataset(data.products),
            "raw_collections": MemoryDataset(data.collections),
            "raw_collection_products": MemoryDataset(data.collection_products),
            "planted_truth": MemoryDataset(data.planted_truth),
            **{name: MemoryDataset(table) for name, table in enriched.items()},
            "held_out_events": MemoryDataset(enriched["enriched_events"]),
            **param_datasets(simulation=sim, alignment=params, llm=llm),
            **{name: KeptDataset() for name in OUTPUTS},
        }
    )
    SequentialRunner().run(simulation.create_pipeline() + alignment.create_pipeline(), catalog)
    inputs = {
        "text_personas": catalog.load("text_personas"),
        "enriched_events": enriched["enriched_events"],
        "persona_assignments": assignments,
        "raw_products": data.products,
        "storefronts": catalog.load("storefronts"),
        "llm": llm,
    }
    return params, sim, {**inputs, **{name: catalog.load(name) for name in OUTPUTS}}


def test_cases_come_from_the_persona_buyers(run):
    _, _, out = run
    query = out["query_generation_cases"]
    assert len(query) > 0 and query["query"].str.len().gt(0).all()
    items = out["item_selection_cases"]
    assert (items["product_ids"].map(len) == 4).all()
    for row in items.to_dict("records"):  # the answer is the buyer's purchase
        assert 0 <= row["answer"] < 4
    ranks = out["rank_selection_cases"]
    assert all(r["results"][r["rank"] - 1] == r["product_id"] for r in ranks.to_dict("records"))
    tasks = out["instruction_tasks"]
    assert tasks["required"].isin(["cart", "checkout", "purchase"]).all()
    assert tasks["goal"].str.startswith("Follow these steps").all()


def test_every_condition_answers_every_case(run):
    params, _, out = run
    answers = out["individual_task_answers"]
    conditions = set(params["individual_tasks"]["conditions"])
    sizes = {
        "query_generation": len(out["query_generation_cases"]),
        "item_selection": len(out["item_selection_cases"]),
        "rank_selection": len(out["rank_selection_cases"]),
    }
    for task, n in sizes.items():
        mine = answers[answers["task"] == task]
        assert set(mine["condition"]) == conditions
        assert (mine.groupby("condition").size() == n).all()
    items = answers[answers["task"] == "item_selection"]
    assert items["choice"].between(0, 3).all()
    runs = out["instruction_runs"]
    n_conditions = len(params["instruction_following"]["conditions"])
    assert len(runs) == len(out["instruction_tasks"]) * n_conditions
    assert runs["success"].isin([True, False]).all()


def test_every_metric_exists_for_every_condition_baseline_and_noise_floor(run):
    params, sim, out = run
    metrics = out["alignment_metrics"]
    by_task: dict[str, set[str]] = {}
    for name in metrics:
        task, _, condition, _ = split_metric_name(name)
        by_task.setdefault(task, set()).add(condition)
    individual = set(params["individual_tasks"]["conditions"])
    assert individual | {"title_as_query", "human_noise_floor"} <= by_task["query_generation"]
    assert individual | {"random_choice", "most_popular"} <= by_task["item_selection"]
    assert individual | {"random_rank", "human_noise_floor"} <= by_task["rank_selection"]
    compared = {
        c for c, spec in sim["conditions"].items() if params["population"] in spec["populations"]
    }
    assert compared == {
        "base",
        "text_persona",
        "persona_token",
        "token_mismatch",
        "intent_no_token",
    }
    assert by_task["session"] == compared | {"human", "human_noise_floor"}
    baselines = {"shop_rate_baseline", "shop_stratum_rate_baseline", "human_noise_floor"}
    assert by_task["action_rate"] == compared | baselines
    assert by_task["separation"] <= compared
    assert set(params["instruction_following"]["conditions"]) == by_task["instruction_following"]
    assert by_task["ablation_sft"] == {"persona_token", "single_stage"}
    assert by_task["ablation_neutral"] == {"neutral_token", "neutral_no_token"}
    assert by_task["ab_test"] == {"persona_token"}
    for condition in compared:
        assert f"action_rate/ara_all_mismatch/{condition}" in metrics
        assert f"session/kl_purchases/{condition}" in metrics
    for h in params["kde"]["bandwidths"]:
        assert f"query_generation/kde_kl_h{h:g}/base" in metrics
    # every headline number has its n and interval, the floors sized like the agents
    agents = len(out["simulation_agents"].query("population == 'matched'"))
    for name in (
        "query_generation/cosine/base",
        "query_generation/kde_kl/human_noise_floor",
        "item_selection/accuracy/persona_token",
        "item_selection/accuracy/random_choice",
        "rank_selection/rank_kl/human_noise_floor",
        "session/kl_views/persona_token",
        "session/kl_views/human_noise_floor",
        "action_rate/ara/persona_token",
        "action_rate/ara/human_noise_floor",
        "action_rate/ara_correct_minus_all_mismatch/persona_token",
        "action_rate/ara_minus_base/persona_token",
        "action_rate/ara_minus_token_mismatch/persona_token",
        "instruction_following/success_rate/untuned",
    ):
        assert {f"{name}/n", f"{name}/ci_low", f"{name}/ci_high"} <= set(metrics), name
    assert metrics["session/kl_views/human_noise_floor/n"] == agents
    assert metrics["session/kl_views/persona_token/n"] == agents
    n_cases = len(out["query_generation_cases"])
    assert metrics["query_generation/kde_kl/human_noise_floor/n"] == min(
        n_cases, out["human_reference_pairs"]["query"].notna().sum()
    )
    assert metrics["item_selection/accuracy/random_choice"] == 0.25
    mlflow = out["alignment_mlflow_metrics"]
    finite = {k for k, v in metrics.items() if math.isfinite(v)}
    assert set(mlflow) == set(metrics)  # undefined ones too, as NaN
    assert all(re.fullmatch(r"[\w\-. :/]+", name) for name in mlflow)  # MLflow's name rule
    # Undefined only where a tiny sample cannot support the statistic (a bin without two
    # sessions, a zero control arm, a precision with no claim, a TTR or a search share
    # without any query, an interval of too few units), never a value of the main families.
    undefined = {
        k
        for k in set(metrics) - finite
        if split_metric_name(k)[0] not in ("separation", "ab_test", "instruction_following")
        and split_metric_name(k)[3] is None
    }
    assert all(split_metric_name(k)[1].endswith(("_ttr", "_search_share")) for k in undefined), (
        undefined
    )
    # the humans search in this sample: their share of searches that find nothing is defined
    assert math.isfinite(metrics["session/empty_search_share/human"])


def test_personas_are_mined_from_before_the_cases(run):
    """Every case comes at or after its buyer's cutoff, and the persona's input (history and
    evidence lines) names no test product, title or query; a test category appears there only
    where the buyer viewed another product of it before the cutoff."""
    _, _, out = run
    personas = out["text_personas"].set_index(["shop_id", "buyer_id"])
    events = out["enriched_events"].to_pandas()
    products = out["raw_products"].set_index(["shop_id", "product_id"])

    def seen_before(shop, buyer):
        cutoff = personas.loc[(shop, buyer), "history_until"]
        mine = events[(events["shop_id"] == shop) & (events["buyer_id"] == buyer)]
        return mine[mine["ts"] < cutoff], mine[mine["ts"] >= cutoff]

    checked = 0
    for table, product_of in (
        (out["query_generation_cases"], lambda c: c["product_id"]),
        (out["item_selection_cases"], lambda c: c["product_ids"][c["answer"]]),
        (out["rank_selection_cases"], lambda c: c["product_id"]),
    ):
        for case in table.to_dict("records"):
            shop, buyer, product = case["shop_id"], case["buyer_id"], product_of(case)
            before, after = seen_before(shop, buyer)
            assert product in set(after["product_id"])  # the test event is after the cutoff
            row = personas.loc[(shop, buyer)]
            text = f"{row['history']}\n{row['evidence']}".lower()
            title, category = products.loc[(shop, product), ["title", "category"]]
            assert product.lower() not in text and title.lower() not in text
            if case.get("query"):
                assert f'"{case["query"].lower()}"' not in text
            if category_leaf(category) in text:
                assert (before["category"] == category).any()
            checked += 1
    assert checked >= 5


def test_no_prompt_of_an_alignment_task_holds_the_answer(run, monkeypatch):
    """The goal and the buyer profile (persona and redacted history) of every individual-task
    prompt name neither the answer's title, id nor category; the answer's query stays out of
    the history too. The page itself is the task's input (item selection lists the options)."""
    params, _, out = run
    n_queries, n_conditions = (
        len(out["query_generation_cases"]),
        len(params["individual_tasks"]["conditions"]),
    )
    recorder = RecordingLLM()
    monkeypatch.setattr(alignment_nodes, "condition_llm", lambda *args, **kwargs: recorder)
    alignment_nodes.answer_individual_tasks(
        out["query_generation_cases"],
        out["item_selection_cases"],
        out["rank_selection_cases"],
        out["text_personas"],
        None,
        out["raw_products"],
        out["storefronts"],
        params["individual_tasks"],
        100_000,  # the whole history: nothing hides behind the cut
        False,
        0,
        out["llm"],
    )
    products = out["raw_products"].set_index(["shop_id", "product_id"])
    prompts = [p for call in recorder.calls if call[0] != "contrast" for p in call[1]]
    contrasts = [p for call in recorder.calls if call[0] == "contrast" for p in call[1]]
    assert len(contrasts) == n_queries * len(params["individual_tasks"]["conditions"])
    for contrast in contrasts:  # a guided query's contrast: the content-free goal
        assert _goal_and_profile(contrast).startswith(f"Goal: {CONTENT_FREE_GOAL}\n")
    query, items, ranks = (
        out["query_generation_cases"],
        out["item_selection_cases"],
        out["rank_selection_cases"],
    )
    assert len(prompts) == n_conditions * (len(query) + len(items) + len(ranks))
    it = iter(prompts)
    for _ in range(n_conditions):  # per condition: query, item, rank prompts in case order
        for case in query.to_dict("records"):
            head = _goal_and_profile(next(it))
            assert head.startswith(f"Goal: Find this product: {case['title']}.")
            profile = head.partition("\nBuyer profile: ")[2].lower()
            for text in (case["query"], case["title"], case["product_id"]):
                assert text.lower() not in profile
        for case in items.to_dict("records"):
            head = _goal_and_profile(next(it)).lower()
            assert head.startswith("goal: you are here to buy one of these products.")
            answer = case["product_ids"][case["answer"]]
            for text in (*case["titles"], answer, case["categories"][case["answer"]]):
                assert text.lower() not in head
        for case in ranks.to_dict("records"):
            head = _goal_and_profile(next(it))
            assert head.startswith(f'Goal: You searched for "{case["query"]}".\n')
            product = products.loc[(case["shop_id"], case["product_id"])]
            profile = head.partition("\nBuyer profile: ")[2].lower()
            for text in (case["query"], product["title"], case["product_id"], product["category"]):
                assert text.lower() not in profile


def _goal_and_profile(prompt: list[dict]) -> str:
    """The user turn of a task prompt up to its page (goal, buyer profile, progress)."""
    user = next(m["content"] for m in prompt if m["role"] == "user")
    return user.partition("\nPage:")[0]


def test_report_has_every_task_table_and_plot(run):
    _, _, out = run
    report = out["alignment_report"]
    for heading in ("Query generation", "Item selection", "Rank selection", "Session"):
        assert f"## {heading}" in report
    for name in out["alignment_plots"]:
        assert f"alignment_plots/{name}" in report
    assert set(out["alignment_plots"]) == {
        "similarity_by_perplexity.png",
        "rank_distributions.png",
        "session_histograms.png",
        "ara_by_stratum.png",
        "stratum_recovery.png",
    }
    assert "human_noise_floor" in report and REFERENCES[0] in report
