"""The alignment metric families on small hand-made inputs."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import polars as pl
import pytest

from persona_shoppers.alignment.metrics import (
    ab_metrics,
    ablation_metrics,
    action_rate_metrics,
    held_out_human_sessions,
    instruction_metrics,
    item_selection_metrics,
    merge_metric_families,
    query_generation_metrics,
    rank_selection_metrics,
    separation_metrics,
    session_metrics,
)


def _answers(task: str, condition: str, column: str, values: list) -> pd.DataFrame:
    """``individual_task_answers`` rows of one condition, in reverse case order."""
    rows = pd.DataFrame(
        {"task": task, "case": range(len(values)), "condition": condition, column: values}
    )
    return rows.iloc[::-1]


class _Embedder:
    """Fixed 2-D embeddings; an empty query is embedded as " " (the zero vector)."""

    VECTORS = {"a": [1, 0], "b": [0, 1], "ta": [1, 1], "tb": [0, 1], " ": [0, 0]}

    def embed(self, texts: list[str]) -> np.ndarray:
        return np.array([self.VECTORS[t] for t in texts], dtype=float)


def test_query_generation_cosine_per_condition_and_stratum():
    cases = pd.DataFrame({"query": ["a", "b", "a", "b"], "title": ["ta", "tb", "ta", "tb"]})
    perplexities = pd.DataFrame({"case": [3, 2, 1, 0], "stratum": [1, 1, 0, 0]})
    answers = pd.concat(
        [
            _answers("query_generation", "echo", "query", ["a", "b", "a", "b"]),
            _answers("query_generation", "blank", "query", [None, "b", "a", "b"]),
            _answers("item_selection", "echo", "query", [None] * 4),
        ]
    )
    kde = {"bandwidths": [0.1, 1.0], "reference_bandwidth": 0.1, "repeats": 1, "n_samples": 20}
    metrics, detail = query_generation_metrics(
        cases, perplexities, answers, _Embedder(), kde, seed=0, noise_floor_repeats=2
    )
    conditions = ("blank", "echo", "title_as_query")
    per_condition = ("cosine", "cosine_ppl_stratum_0", "cosine_ppl_stratum_1", "kde_kl")
    expected = {
        f"query_generation/{m}/{c}"
        for c in conditions
        for m in (*per_condition, "kde_kl_h0.1", "kde_kl_h1")
    }
    assert set(metrics) == expected | {"query_generation/kde_kl/human_noise_floor"}
    # blank: cosines 0 (empty query), 1, 1, 1
    assert metrics["query_generation/cosine/blank"] == 0.75
    assert detail["similarity_by_stratum"]["blank"] == {0: 0.5, 1: 1.0}
    assert metrics["query_generation/cosine/echo"] == 1.0
    # title as query: cos([1, 1], [1, 0]) = 1 / sqrt(2), cos([0, 1], [0, 1]) = 1
    assert metrics["query_generation/cosine/title_as_query"] == pytest.approx(
        (math.sqrt(0.5) + 1) / 2
    )
    sweep = detail["kde_sweep"]["blank"]
    assert metrics["query_generation/kde_kl/blank"] == sweep["kl"] == sweep["mean"][0]


def test_item_selection_accuracy_and_baselines():
    cases = pd.DataFrame(
        {
            "product_ids": [["p1", "p2", "p3", "p4"], ["p5", "p6", "p7", "p8"]],
            "answer": [0, 2],
        }
    )
    answers = _answers("item_selection", "c", "choice", [0, 1])
    events = pl.DataFrame(
        {
            "event_type": ["purchase", "purchase", "purchase", "purchase", "product_view"],
            "product_id": ["p2", "p2", "p1", "p7", "p1"],
        }
    )
    metrics = item_selection_metrics(cases, answers, events, seed=0)
    assert set(metrics) == {
        "item_selection/accuracy/c",
        "item_selection/accuracy/random_choice",
        "item_selection/accuracy/most_popular",
    }
    assert metrics["item_selection/accuracy/c"] == 0.5
    # most purchased option: p2 (wrong), p7 (right); views do not count
    assert metrics["item_selection/accuracy/most_popular"] == 0.5
    assert metrics["item_selection/accuracy/random_choice"] in (0.0, 0.5, 1.0)


def test_rank_selection_kl_and_histograms():
    cases = pd.DataFrame({"results": [["p1", "p2", "p3"], ["p4", "p5"]], "rank": [1, 2]})
    answers = pd.concat(
        [
            _answers("rank_selection", "same", "choice", [1, 2]),
            _answers("rank_selection", "off", "choice", [3, 1]),
        ]
    )
    metrics, detail = rank_selection_metrics(cases, answers, seed=0, noise_floor_repeats=2)
    assert set(metrics) == {
        f"rank_selection/rank_kl/{c}" for c in ("off", "same", "random_rank", "human_noise_floor")
    }
    assert metrics["rank_selection/rank_kl/same"] == 0.0
    assert metrics["rank_selection/rank_kl/off"] > 0
    hist = detail["rank_histograms"]
    assert list(hist) == ["human", "off", "same", "random_rank"]
    assert hist["human"] == hist["same"] == [1, 1, 0]
    assert hist["off"] == [1, 0, 1]
    assert sum(hist["random_rank"]) == 2


def _sessions(**columns) -> pd.DataFrame:
    return pd.DataFrame({"shop_id": "s1", **columns})


def test_session_kl_ttr_and_histograms():
    human = _sessions(
        n_searches=[0, 1, 3, 1],
        n_product_views=[1, 1, 2, 0],
        n_purchases=[0, 0, 1, 0],
        queries=[["red boots"], ["blue boots"], [], None],
        viewed_titles=[["A b"], ["a"], [], None],
    )
    mirror = human.assign(condition="mirror", queries=[["red boots"], ["red hat"], [], None])
    none = _sessions(
        condition="none",
        n_searches=[0] * 4,
        n_product_views=[0] * 4,
        n_purchases=[0] * 4,
        queries=[[]] * 4,
        viewed_titles=[None] * 4,
    )
    metrics, detail = session_metrics(
        human, pd.concat([mirror, none]), max_count=2, seed=0, noise_floor_repeats=2
    )
    references = ("marginal_resample", "human_noise_floor")
    assert set(metrics) == {
        f"session/kl_{label}/{c}"
        for label in ("searches", "views", "purchases")
        for c in ("mirror", "none", *references)
    } | {
        f"session/{m}/{c}" for m in ("query_ttr", "title_ttr") for c in ("mirror", "none", "human")
    }
    assert metrics["session/kl_searches/mirror"] == 0.0
    assert metrics["session/kl_searches/none"] > 0
    assert metrics["session/query_ttr/mirror"] == 0.75  # red boots red hat
    assert math.isnan(metrics["session/title_ttr/none"])  # no title at all
    assert metrics["session/query_ttr/human"] == 0.75  # red boots blue boots
    assert metrics["session/title_ttr/human"] == pytest.approx(2 / 3)  # a b a
    hist = detail["session_histograms"]
    assert hist["searches"]["human"] == [0.25, 0.5, 0.25]  # 3 searches pooled as "2+"
    assert hist["searches"]["none"] == [1.0, 0.0, 0.0]
    assert detail["max_count"] == 2


def test_held_out_human_sessions_come_from_the_simulated_shops():
    sessions = pl.DataFrame({"shop_id": ["s1", "s2", "s1", "s1"], "session_id": [1, 2, 3, 4]})
    simulated = pd.DataFrame({"shop_id": ["s1"]})
    sample = held_out_human_sessions(sessions, simulated, n_sessions=2, seed=0)
    assert len(sample) == 2 and set(sample["session_id"]) <= {1, 3, 4}
    every = held_out_human_sessions(sessions, simulated, n_sessions=10, seed=0)
    assert sorted(every["session_id"]) == [1, 3, 4]


def test_action_rates_pair_an_agent_with_the_buyer_it_stands_for():
    """A token_mismatch agent is conditioned on a token absent from its shop; its pair is
    still its own buyer's (shop, token)."""
    buyers = pd.DataFrame(
        {
            "shop_id": ["s1"] * 4,
            "buyer_id": ["u1", "u2", "u3", "u4"],
            "atc_sessions": [1, 0, 2, 0],
            "purchase_sessions": [1, 0, 0, 0],
            "n_sessions": [2, 2, 2, 1],
            "stratum": ["A", "D", "C", "D"],
        }
    )
    assignments = buyers[["shop_id", "buyer_id"]].assign(token=[1, 2, 1, 2])
    simulated = pd.DataFrame(
        {
            "shop_id": ["s1", "s1"],
            "condition": ["token_mismatch", "token_mismatch"],
            "buyer_token": [1, 2],
            "persona_token": ["<|persona_99|>", "<|persona_98|>"],
            "has_add_to_cart": [True, False],
            "has_purchase": [False, False],
        }
    )
    metrics, _ = action_rate_metrics(simulated, buyers, assignments, seed=0, noise_floor_repeats=2)
    # token 1: real atc (0.5 + 1) / 2 = 0.75, purchase 0.25; agent 1, 0 -> .75 / .75
    # token 2: real atc 0, purchase 0; agent 0, 0 -> 1 / 1
    assert metrics["action_rate/atc_stratum_A/token_mismatch"] == 0.75
    assert metrics["action_rate/purchase_stratum_A/token_mismatch"] == 0.75
    assert metrics["action_rate/ara_stratum_D/token_mismatch"] == 1.0


def test_separation_scores_sessions_by_their_token_bins():
    heads = ("purchase", "engagement", "exploration")
    cards = [
        {"token": 0, "bins": {h: {"label": "low"} for h in heads}},
        {"token": 1, "bins": {h: {"label": "high"} for h in heads}},
        {"token": 2},
    ]
    scores = {
        "n_add_to_cart": [0, 1, 1, 1],
        "n_checkout_starts": [0, 0, 1, 1],
        "n_purchases": [0, 0, 0, 1],  # purchase head: 0, 1 (low) vs 2, 3 (high)
        "n_actions": [1, 2, 3, 5],
        "viewed_product_ids": [None, ["p1", "p1"], ["p1", "p2"], ["p1", "p2", "p3"]],
    }
    tokened = pd.DataFrame(
        {
            "condition": "tok",
            "persona_token": ["<|persona_0|>"] * 2 + ["<|persona_1|>"] * 2,
            "buyer_token": 2,  # overridden by the conditioning token
            **scores,
        }
    )
    blind = tokened.assign(condition="blind", persona_token=None, buyer_token=0)
    metrics = separation_metrics(pd.concat([tokened, blind]), cards, permutation_draws=50, seed=0)
    assert metrics["separation/purchase_mean_low/tok"] == 0.5
    assert metrics["separation/purchase_mean_high/tok"] == 2.5
    assert metrics["separation/exploration_mean_low/tok"] == 0.5  # 0 and 1 distinct products
    assert metrics["separation/engagement_cohens_d/tok"] > 0
    # every blind session stands for token 0 (all Low): undefined, no per-bin means
    for stat in ("cohens_d", "welch_p", "kruskal_p", "permutation_p"):
        assert math.isnan(metrics[f"separation/purchase_{stat}/blind"])
    assert not any(k.startswith("separation/purchase_mean") and "blind" in k for k in metrics)


def test_instruction_following_rates_and_calibration():
    runs = pd.DataFrame(
        {
            "condition": "a",
            "success": [True, False, True, True],
            "length_bin": ["3-5", "3-5", "6-10", "6-10"],
            "n_steps": [2, 4, 6, 8],
            "n_errors": [0, 1, 0, 0],
            "claimed": [True, True, False, True],
        }
    )
    metrics = instruction_metrics(runs)
    expected = {
        "success_rate": 0.75,
        "success_rate_len_3-5": 0.5,
        "success_rate_len_6-10": 1.0,
        "steps_per_run": 5.0,
        "error_rate": 0.25,
        "calibration_claim_rate": 0.75,
        "calibration_success_rate": 0.75,
        "calibration_agreement": 0.5,
        "calibration_precision": 2 / 3,
        "calibration_recall": 2 / 3,
    }
    assert metrics == {f"instruction_following/{k}/a": v for k, v in expected.items()}


def _ablation_sessions() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "condition": ["c1", "c1", "c2", "c1"],
            "population": ["pop", "pop", "pop", "other"],
            "outcome": ["purchased", "step_limit", "ended", "error"],
            "n_errors": [0, 2, 0, 1],
            "n_add_to_cart": [1, 0, 0, 5],
            "n_checkout_starts": [1, 0, 0, 5],
            "n_actions": [6, 4, 2, 9],
            "n_page_views": [1, 1, 1, 9],
            "n_product_views": [2, 0, 1, 9],
            "n_collection_views": [0, 1, 0, 9],
        }
    )


def test_ablation_rates_on_one_population():
    metrics = ablation_metrics(_ablation_sessions(), {"ablation_x": ["c1", "c2"]}, "pop")
    assert metrics["ablation_x/outcome_purchased/c1"] == 0.5
    assert metrics["ablation_x/outcome_error/c1"] == 0.0  # the error is another population's
    assert metrics["ablation_x/error_rate/c1"] == 0.5
    assert metrics["ablation_x/atc_per_session/c1"] == 0.5
    assert metrics["ablation_x/checkout_per_session/c1"] == 0.5
    assert metrics["ablation_x/actions_per_session/c1"] == 5.0
    assert metrics["ablation_x/pages_per_session/c1"] == 2.5  # (1 + 2) and (1 + 1)
    assert metrics["ablation_x/outcome_ended/c2"] == 1.0


def test_ablation_without_sessions_names_the_ablation():
    with pytest.raises(ValueError, match=r"alignment\.ablations\.ablation_x.*'c3'"):
        ablation_metrics(_ablation_sessions(), {"ablation_x": ["c3"]}, "pop")


def test_ab_metrics_per_test_and_metric():
    results = pd.DataFrame(
        {
            "test": ["t1", "t1"],
            "metric": ["conversion_rate", "sales"],
            "condition": "persona_token",
            "simulated_effect": [0.1, 0.2],
            "reference_effect": [-0.05, 0.0],
            "direction_agreement": [False, None],
            "magnitude_ratio": [-2.0, float("nan")],
        }
    )
    metrics = ab_metrics(results)
    stem = "ab_test/t1.conversion_rate"
    assert metrics[f"{stem}.simulated_effect/persona_token"] == 0.1
    assert metrics[f"{stem}.reference_effect/persona_token"] == -0.05
    assert metrics[f"{stem}.direction_agreement/persona_token"] == 0.0
    assert metrics[f"{stem}.magnitude_ratio/persona_token"] == -2.0
    assert math.isnan(metrics["ab_test/t1.sales.direction_agreement/persona_token"])
    assert len(metrics) == 8


def test_merge_sorts_names_and_keeps_detail_order():
    metrics, detail, mlflow = merge_metric_families(
        [{"b/x/c": 1}, {"a/x/c": np.float32(2)}, {"b/x/c": 3}],
        [{"k2": [1]}, {"k1": 2}],
    )
    assert list(metrics) == ["a/x/c", "b/x/c"]
    assert metrics == {"a/x/c": 2.0, "b/x/c": 3.0}  # a later family wins a shared name
    assert all(type(v) is float for v in metrics.values())
    assert list(detail) == ["k2", "k1"]
    assert mlflow == {"a/x/c": {"value": 2.0, "step": 0}, "b/x/c": {"value": 3.0, "step": 0}}
