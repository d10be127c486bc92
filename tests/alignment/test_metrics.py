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
    counterpart_rates,
    funnel_metrics,
    held_out_human_sessions,
    instruction_metrics,
    item_selection_metrics,
    merge_metric_families,
    popular_choices,
    query_generation_metrics,
    rank_selection_metrics,
    search_counts,
    search_metrics,
    separation_metrics,
    session_metrics,
)
from persona_shoppers.alignment.naming import split_metric_name


def _values(metrics: dict) -> dict:
    """The values alone (without their n and interval bounds)."""
    return {k: v for k, v in metrics.items() if split_metric_name(k)[3] is None}


def _interval(metrics: dict, name: str) -> tuple[float, float]:
    return metrics[f"{name}/ci_low"], metrics[f"{name}/ci_high"]


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
            _answers("query_generation", "base", "query", ["a", "b", "a", "b"]),
            _answers("query_generation", "blank", "query", [None, "b", "a", "b"]),
            _answers("item_selection", "base", "query", [None] * 4),
        ]
    )
    others = pd.DataFrame({"query": ["a", "b", "b", None, "a", "a"]})
    kde = {"bandwidths": [0.1, 1.0], "reference_bandwidth": 0.1, "repeats": 1, "n_samples": 20}
    metrics, detail = query_generation_metrics(
        cases, perplexities, answers, others, _Embedder(), kde, seed=0, draws=50
    )
    conditions = ("blank", "base", "title_as_query")
    per_condition = ("cosine", "cosine_ppl_stratum_0", "cosine_ppl_stratum_1", "kde_kl")
    expected = {
        f"query_generation/{m}/{c}"
        for c in conditions
        for m in (*per_condition, "kde_kl_h0.1", "kde_kl_h1")
    }
    minus_base = {f"query_generation/cosine_minus_base/{c}" for c in ("blank", "title_as_query")}
    floor = "query_generation/kde_kl/human_noise_floor"
    floor_sweep = {f"query_generation/kde_kl_h{h}/human_noise_floor" for h in ("0.1", "1")}
    assert set(_values(metrics)) == expected | minus_base | {floor} | floor_sweep
    # blank: cosines 0 (empty query), 1, 1, 1
    assert metrics["query_generation/cosine/blank"] == 0.75
    assert metrics["query_generation/cosine/blank/n"] == 4
    low, high = _interval(metrics, "query_generation/cosine/blank")
    assert 0 <= low <= 0.75 <= high == 1.0
    assert detail["similarity_by_stratum"]["blank"] == {0: 0.5, 1: 1.0}
    assert metrics["query_generation/cosine/base"] == 1.0
    assert metrics["query_generation/cosine_minus_base/blank"] == -0.25  # paired on the cases
    # title as query: cos([1, 1], [1, 0]) = 1 / sqrt(2), cos([0, 1], [0, 1]) = 1
    assert metrics["query_generation/cosine/title_as_query"] == pytest.approx(
        (math.sqrt(0.5) + 1) / 2
    )
    sweep = detail["kde_sweep"]["blank"]
    assert metrics["query_generation/kde_kl/blank"] == sweep["kl"] == sweep["mean"][0]
    # the floor: as many other humans' queries as there are cases (4 of the 5 non-null)
    assert metrics[f"{floor}/n"] == 4 and math.isfinite(metrics[floor])


def _item_cases() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "shop_id": ["s1", "s1"],
            "buyer_id": ["u1", "u2"],
            "product_ids": [["p1", "p2", "p3", "p4"], ["p5", "p6", "p7", "p8"]],
            "answer": [0, 2],
        }
    )


def test_item_selection_accuracy_and_baselines():
    cases = _item_cases()
    answers = pd.concat(
        [
            _answers("item_selection", "base", "choice", [0, 1]),
            _answers("item_selection", "better", "choice", [0, 2]),
        ]
    )
    events = pl.DataFrame(
        {
            "shop_id": ["s1"] * 5,
            "buyer_id": ["u3", "u3", "u4", "u4", "u5"],
            "event_type": ["purchase", "purchase", "purchase", "purchase", "product_view"],
            "product_id": ["p2", "p2", "p1", "p7", "p1"],
        }
    )
    metrics = item_selection_metrics(cases, answers, events, seed=0, draws=200)
    assert set(_values(metrics)) == {
        "item_selection/accuracy/base",
        "item_selection/accuracy/better",
        "item_selection/accuracy_minus_base/better",
        "item_selection/accuracy/random_choice",
        "item_selection/accuracy/most_popular",
    }
    assert metrics["item_selection/accuracy/base"] == 0.5
    assert metrics["item_selection/accuracy_minus_base/better"] == 0.5
    # most purchased option: p2 (wrong), p7 (right); views do not count
    assert metrics["item_selection/accuracy/most_popular"] == 0.5
    # random choice among 4 options: exactly 1/4, and the spread of a random chooser on 2 cases
    assert metrics["item_selection/accuracy/random_choice"] == 0.25
    assert _interval(metrics, "item_selection/accuracy/random_choice") == (0.0, 1.0)
    assert metrics["item_selection/accuracy/random_choice/n"] == 2


def test_most_popular_never_counts_the_case_buyers_own_purchase():
    cases = _item_cases()
    events = pl.DataFrame(
        {
            "shop_id": ["s1", "s1", "s1", "s2"],
            "buyer_id": ["u1", "u1", "u9", "u9"],  # u1's own purchases of the answer p1
            "event_type": ["purchase"] * 4,
            "product_id": ["p1", "p1", "p3", "p1"],  # p1 in another shop does not count
        }
    )
    assert popular_choices(cases.iloc[:1], events, seed=0).tolist() == [2]  # p3, by u9


def test_rank_selection_kl_floor_and_histograms():
    cases = pd.DataFrame({"results": [["p1", "p2", "p3"], ["p4", "p5"]], "rank": [1, 2]})
    answers = pd.concat(
        [
            _answers("rank_selection", "same", "choice", [1, 2]),
            _answers("rank_selection", "off", "choice", [3, 1]),
        ]
    )
    others = pd.DataFrame({"rank": pd.array([2, None, 1], dtype="Int64")})
    metrics, detail = rank_selection_metrics(cases, answers, others, seed=0, draws=50)
    assert set(_values(metrics)) == {
        f"rank_selection/rank_kl/{c}" for c in ("off", "same", "random_rank", "human_noise_floor")
    }
    assert metrics["rank_selection/rank_kl/same"] == 0.0
    assert _interval(metrics, "rank_selection/rank_kl/same") == (0.0, 0.0)
    assert metrics["rank_selection/rank_kl/off"] > 0
    assert metrics["rank_selection/rank_kl/human_noise_floor"] == 0.0  # ranks 1 and 2 again
    assert metrics["rank_selection/rank_kl/human_noise_floor/n"] == 2
    hist = detail["rank_histograms"]
    assert list(hist) == ["human", "off", "same", "random_rank", "human_noise_floor"]
    assert hist["human"] == hist["same"] == [1, 1, 0]
    assert hist["off"] == [1, 0, 1]
    assert sum(hist["random_rank"]) == 2


def _sessions(**columns) -> pd.DataFrame:
    return pd.DataFrame({"shop_id": "s1", **columns})


def _simulated(conditions: dict, population: str = "pop") -> pd.DataFrame:
    """Sessions of the same agents (a0, a1, ...) under each condition."""
    return pd.concat(
        [
            table.assign(
                condition=c, population=population, agent_id=[f"a{i}" for i in range(len(table))]
            )
            for c, table in conditions.items()
        ],
        ignore_index=True,
    )


def test_session_kl_floor_ttr_and_histograms():
    human = _sessions(
        n_searches=[0, 1, 3, 1] * 3,
        n_product_views=[1, 1, 2, 0] * 3,
        n_purchases=[0, 0, 1, 0] * 3,
        queries=[["red boots"], ["blue boots"], [], None] * 3,
        viewed_titles=[["A b"], ["a"], [], None] * 3,
    )
    mirror = human.iloc[:4].assign(queries=[["red boots"], ["red hat"], [], None])
    none = _sessions(
        n_searches=[0] * 4,
        n_product_views=[0] * 4,
        n_purchases=[0] * 4,
        queries=[[]] * 4,
        viewed_titles=[None] * 4,
    )
    metrics, detail = session_metrics(
        human, _simulated({"mirror": mirror, "none": none}), "pop", max_count=2, seed=0, draws=50
    )
    assert set(_values(metrics)) == {
        f"session/kl_{label}/{c}"
        for label in ("searches", "views", "purchases")
        for c in ("mirror", "none", "human_noise_floor")
    } | {
        f"session/{m}/{c}" for m in ("query_ttr", "title_ttr") for c in ("mirror", "none", "human")
    }
    assert metrics["session/kl_searches/mirror"] < metrics["session/kl_searches/none"]
    assert metrics["session/kl_searches/none/n"] == 4
    assert metrics["session/kl_searches/human_noise_floor/n"] == 4  # as many as the agents
    low, high = _interval(metrics, "session/kl_searches/none")
    assert low <= metrics["session/kl_searches/none"] <= high
    assert metrics["session/query_ttr/mirror"] == 0.75  # red boots red hat
    assert math.isnan(metrics["session/title_ttr/none"])  # no title at all
    hist = detail["session_histograms"]
    assert hist["searches"]["none"] == [1.0, 0.0, 0.0]
    assert sum(hist["searches"]["human"]) == pytest.approx(1.0)
    assert detail["max_count"] == 2 and detail["human_reference_sessions"] == 8


def test_session_floor_shrinks_as_the_agents_grow():
    rng = np.random.default_rng(0)
    human = _sessions(
        n_searches=rng.poisson(1.5, 4000),
        n_product_views=rng.poisson(2.0, 4000),
        n_purchases=rng.binomial(1, 0.2, 4000),
        queries=[[]] * 4000,
        viewed_titles=[[]] * 4000,
    )
    floors = []
    for n in (10, 1000):
        agents = human.iloc[:n].reset_index(drop=True)
        metrics, _ = session_metrics(human, _simulated({"c": agents}), "pop", 5, seed=1, draws=20)
        floors.append(metrics["session/kl_searches/human_noise_floor"])
    assert floors[1] < floors[0] / 5


def test_conditions_on_different_agents_are_refused():
    one = _sessions(
        n_searches=[1], n_product_views=[1], n_purchases=[0], queries=[[]], viewed_titles=[[]]
    )
    simulated = _simulated({"a": one, "b": one}).assign(agent_id=["x", "y"])
    with pytest.raises(ValueError, match="different agents"):
        session_metrics(one, simulated, "pop", 2, seed=0, draws=10)


def _funnel_sessions(condition: str, atc: list, checkout: list, purchase: list) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "population": "matched",
            "condition": condition,
            "agent_id": ["a1", "a2", "a3", "a4"],
            "shop_id": ["s1", "s1", "s2", "s2"],
            "counterpart_id": ["b1", "b2", "b3", "b4"],
            "stratum": ["A", "C", "D", "A"],
            "has_add_to_cart": atc,
            "has_checkout": checkout,
            "has_purchase": purchase,
        }
    )


def test_funnel_rates_and_ratios_against_the_buyers_the_agents_stand_for():
    # b1: 2 sessions, one with a cart, a checkout and a purchase; b2: one cart only;
    # b3: none of 1; b4: 2 carts of 2, one purchase. Another buyer (b9) is not counted.
    human = pl.DataFrame(
        {
            "shop_id": ["s1", "s1", "s1", "s2", "s2", "s2", "s2"],
            "buyer_id": ["b1", "b1", "b2", "b3", "b4", "b4", "b9"],
            "has_add_to_cart": [True, False, True, False, True, True, True],
            "has_checkout": [True, False, False, False, False, True, True],
            "has_purchase": [True, False, False, False, False, True, True],
        }
    )
    agent = _funnel_sessions("persona_token", [1, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0])
    rates = counterpart_rates(human, agent)
    assert rates["has_add_to_cart"].tolist() == [0.5, 1.0, 0.0, 1.0]
    assert rates["has_purchase"].tolist() == [0.5, 0.0, 0.0, 0.5]
    base = _funnel_sessions("base", [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0])
    metrics = funnel_metrics(pd.concat([base, agent]), rates, "matched", seed=0, draws=200)
    assert metrics["funnel/atc_rate/matched_humans"] == pytest.approx(2.5 / 4)
    assert metrics["funnel/atc_rate/persona_token"] == 0.5
    assert metrics["funnel/atc_ratio/persona_token"] == pytest.approx(2 / 2.5)
    assert metrics["funnel/checkout_ratio/persona_token"] == pytest.approx(1 / (0.5 + 0.5))
    assert metrics["funnel/purchase_ratio/persona_token"] == 0.0
    assert metrics["funnel/atc_ratio/base"] == 0.0 and metrics["funnel/atc_ratio/base/n"] == 4
    low, high = _interval(metrics, "funnel/atc_ratio/persona_token")
    assert low <= 0.8 <= high
    # within strata: A is b1 and b4, C is b2, D is b3
    by_stratum = "funnel_by_stratum/{}_rate_{}/{}"
    assert metrics[by_stratum.format("purchase", "A", "matched_humans")] == 0.5
    assert metrics[by_stratum.format("purchase", "A", "persona_token")] == 0.0
    assert metrics[by_stratum.format("atc", "A", "persona_token")] == 0.5
    assert metrics[by_stratum.format("atc", "C", "matched_humans")] == 1.0
    assert metrics[by_stratum.format("atc", "C", "persona_token")] == 1.0
    assert metrics[by_stratum.format("checkout", "C", "persona_token")] == 0.0
    assert metrics[by_stratum.format("atc", "D", "base") + "/n"] == 1


def test_funnel_needs_every_agent_s_buyer_in_the_sessions():
    human = pl.DataFrame(
        {
            "shop_id": ["s1"],
            "buyer_id": ["b1"],
            "has_add_to_cart": [True],
            "has_checkout": [False],
            "has_purchase": [False],
        }
    )
    agent = _funnel_sessions("persona_token", [1, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0])
    with pytest.raises(ValueError, match="3 agents stand for buyers without a session"):
        counterpart_rates(human, agent)


def test_held_out_human_sessions_come_from_the_simulated_shops():
    sessions = pl.DataFrame({"shop_id": ["s1", "s2", "s1", "s1"], "session_id": [1, 2, 3, 4]})
    simulated = pd.DataFrame({"shop_id": ["s1"]})
    sample = held_out_human_sessions(sessions, simulated, n_sessions=2, seed=0)
    assert len(sample) == 2 and set(sample["session_id"]) <= {1, 3, 4}
    every = held_out_human_sessions(sessions, simulated, n_sessions=10, seed=0)
    assert sorted(every["session_id"]) == [1, 3, 4]


def _human_rate_log(n_per_cell: int = 40) -> tuple[pl.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Two shops, tokens 1 (stratum A: every session carts, half buy) and 2 (stratum D: none
    does), and a stratum-E buyer who always buys (left out: ARA is over A-D)."""
    rows, buyers = [], []
    for shop in ("s1", "s2"):
        for token, stratum, atc, buy in ((1, "A", 1, 0.5), (2, "D", 0, 0.0), (3, "E", 1, 1.0)):
            for b in range(4):
                buyer = f"{shop}-{token}-{b}"
                buyers.append(
                    {"shop_id": shop, "buyer_id": buyer, "stratum": stratum, "token": token}
                )
                for i in range(n_per_cell // 4):
                    rows.append(
                        {
                            "shop_id": shop,
                            "buyer_id": buyer,
                            "session_id": f"{buyer}-{i}",
                            "has_add_to_cart": bool(atc),
                            "has_purchase": bool(i % 2 < 2 * buy),
                        }
                    )
    table = pd.DataFrame(buyers)
    return (
        pl.DataFrame(rows),
        table[["shop_id", "buyer_id", "stratum"]],
        table[["shop_id", "buyer_id", "token"]],
    )


def _agents_like_humans(n: int = 6) -> pd.DataFrame:
    """n agents per (shop, token 1 / 2) cell that behave like that cell's humans."""
    rows = []
    for shop in ("s1", "s2"):
        for token, stratum in ((1, "A"), (2, "D")):
            for i in range(n):
                rows.append(
                    {
                        "shop_id": shop,
                        "buyer_token": token,
                        "stratum": stratum,
                        "persona_token": f"<|persona_{token}|>",
                        "has_add_to_cart": token == 1,
                        "has_purchase": token == 1 and i % 2 == 0,
                    }
                )
    return pd.DataFrame(rows)


def test_action_rates_find_a_planted_difference_on_the_same_agents():
    sessions, buyers, assignments = _human_rate_log()
    good = _agents_like_humans()
    blind = good.assign(has_add_to_cart=False, has_purchase=False)
    simulated = _simulated(
        {"base": blind, "persona_token": good, "same_as_base": blind, "token_mismatch": blind}
    )
    metrics, detail = action_rate_metrics(
        simulated, sessions, buyers, assignments, "pop", seed=0, draws=200
    )
    name = "action_rate/ara/persona_token"
    assert metrics[name] == pytest.approx(1.0, abs=0.03)  # the reference lost the floor sessions
    assert metrics[f"{name}/n"] == 24
    # the planted difference is found, an identical pair covers 0
    low, _ = _interval(metrics, "action_rate/ara_minus_base/persona_token")
    assert metrics["action_rate/ara_minus_base/persona_token"] > 0 and low > 0
    low, high = _interval(metrics, "action_rate/ara_minus_base/same_as_base")
    assert low <= 0 <= high
    # the same against the mismatched token's rows (here as blind as base)
    name = "action_rate/ara_minus_token_mismatch"
    assert metrics[f"{name}/persona_token"] == metrics["action_rate/ara_minus_base/persona_token"]
    assert _interval(metrics, f"{name}/persona_token")[0] > 0
    low, high = _interval(metrics, f"{name}/same_as_base")
    assert low <= 0 <= high
    # correct tokens beat all-mismatch on the same cells (token 1 vs 2 differ fully in atc)
    low, _ = _interval(metrics, "action_rate/ara_correct_minus_all_mismatch/persona_token")
    assert low > 0
    # the floor: as many human sessions per cell as agents; humans match humans
    assert metrics["action_rate/ara/human_noise_floor/n"] == 24
    assert metrics["action_rate/atc/human_noise_floor"] == 1.0
    # the reference: the other human sessions of strata A-D (2 shops x 2 tokens x 40)
    assert detail["action_rate_reference_sessions"] == 2 * 2 * 40 - 24
    # baselines on the same agents: the shop's rate mixes tokens, the stratum's does not
    assert metrics["action_rate/atc/shop_stratum_rate_baseline"] == 1.0
    assert metrics["action_rate/atc/shop_rate_baseline"] < 0.8
    assert set(detail["ara_by_stratum"]["persona_token"]["correct"]) == {"A", "D"}  # no E


def test_action_rates_leave_out_cells_without_enough_humans_for_a_floor():
    sessions, buyers, assignments = _human_rate_log(n_per_cell=4)  # one session per buyer
    agents = _agents_like_humans(n=4)  # 4 agents per cell, 4 human sessions per cell
    with pytest.raises(ValueError, match="enough human sessions"):
        action_rate_metrics(
            _simulated({"c": agents}), sessions, buyers, assignments, "pop", seed=0, draws=10
        )


def test_separation_scores_sessions_by_their_token_bins():
    heads = ("purchase", "engagement", "exploration")
    cards = [
        {"token": 0, "bins": {h: {"label": "low"} for h in heads}},
        {"token": 1, "bins": {h: {"label": "high"} for h in heads}},
        {"token": 2},
    ]
    scores = {
        "n_add_to_cart": [0, 1, 1, 1, 9],
        "n_checkout_starts": [0, 0, 1, 1, 9],
        "n_purchases": [0, 0, 0, 1, 9],  # purchase head: 0, 1 (low) vs 2, 3 (high)
        "n_actions": [1, 2, 3, 5, 9],
        "n_searches": [0, 1, 1, 1, 9],
        "n_collection_views": [0, 0, 1, 1, 9],
        "n_product_views": [0, 0, 0, 2, 9],  # exploration: 0, 1 (low) vs 2, 4 (high)
    }
    tokened = pd.DataFrame(
        {
            "persona_token": ["<|persona_0|>"] * 2 + ["<|persona_1|>"] * 2 + ["<|persona_2|>"],
            "buyer_token": 2,  # overridden by the conditioning token
            **scores,
        }
    )
    blind = tokened.assign(persona_token=None, buyer_token=0)
    simulated = _simulated({"tok": tokened, "blind": blind})
    metrics = separation_metrics(simulated, cards, "pop", permutation_draws=50, seed=0, draws=50)
    assert metrics["separation/purchase_mean_low/tok"] == 0.5
    assert metrics["separation/purchase_mean_high/tok"] == 2.5
    assert metrics["separation/exploration_mean_low/tok"] == 0.5
    assert metrics["separation/exploration_mean_high/tok"] == 3.0
    assert "separation/purchase_mean_none/tok" not in metrics  # token 2 has no bin
    assert metrics["separation/engagement_cohens_d/tok"] > 0
    assert metrics["separation/engagement_cohens_d/tok/n"] == 4
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
    metrics = instruction_metrics(runs, seed=0, draws=50)
    assert metrics.pop("instruction_following/success_rate/a/n") == 4
    low = metrics.pop("instruction_following/success_rate/a/ci_low")
    high = metrics.pop("instruction_following/success_rate/a/ci_high")
    assert low <= 0.75 <= high
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
    metrics = ablation_metrics(
        _ablation_sessions(), {"ablation_x": ["c1", "c2"]}, "pop", seed=0, draws=50
    )
    assert metrics["ablation_x/outcome_purchased/c1/n"] == 2
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
        ablation_metrics(_ablation_sessions(), {"ablation_x": ["c3"]}, "pop", seed=0, draws=5)


def test_ab_metrics_per_test_and_metric():
    results = pd.DataFrame(
        {
            "test": ["t1", "t1", "t1"],
            "metric": ["conversion_rate", "sales", "atc_rate"],
            "condition": "persona_token",
            "sessions_per_arm": 24,
            "simulated_effect": [0.1, 0.2, 0.05],
            "ci_low": [0.02, 0.1, -0.1],
            "ci_high": [0.2, 0.3, 0.2],
            "reference_effect": [-0.05, float("nan"), 0.1],
            "status": ["disagrees", "undefined", "inconclusive"],
            "direction_agreement": [False, None, None],
            "magnitude_ratio": [-2.0, float("nan"), 0.5],
        }
    )
    metrics = ab_metrics(results)
    stem = "ab_test/t1.conversion_rate"
    assert metrics[f"{stem}.simulated_effect/persona_token"] == 0.1
    assert metrics[f"{stem}.simulated_effect/persona_token/n"] == 24
    assert _interval(metrics, f"{stem}.simulated_effect/persona_token") == (0.02, 0.2)
    assert metrics[f"{stem}.reference_effect/persona_token"] == -0.05
    assert metrics[f"{stem}.direction_agreement/persona_token"] == 0.0
    assert metrics[f"{stem}.conclusive/persona_token"] == 1.0
    assert metrics[f"{stem}.magnitude_ratio/persona_token"] == -2.0
    assert math.isnan(metrics["ab_test/t1.sales.direction_agreement/persona_token"])
    assert math.isnan(metrics["ab_test/t1.sales.conclusive/persona_token"])
    assert metrics["ab_test/t1.atc_rate.conclusive/persona_token"] == 0.0
    assert math.isnan(metrics["ab_test/t1.atc_rate.direction_agreement/persona_token"])
    assert len(metrics) == 3 * 8


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


def test_searches_that_find_nothing_or_repeat_per_condition():
    def found(shop: str, query: str) -> bool:
        return query != "c01"  # the store finds everything but a collection id

    human = _sessions(queries=[["red boots"], ["boots", "red boots"], [], None])
    assert search_counts(human, found).tolist() == [[1, 0, 0], [2, 0, 0], [0, 0, 0], [0, 0, 0]]
    looping = _sessions(queries=[["c01", "c01", "c01"], ["boots"]])
    fine = _sessions(queries=[["boots"], ["red boots", "boots"]])
    simulated = _simulated({"base": looping, "persona_token": fine})
    metrics = search_metrics(human, simulated, "pop", found, seed=0, draws=100)
    assert metrics["session/empty_search_share/base"] == pytest.approx(3 / 4)
    assert metrics["session/repeated_search_share/base"] == pytest.approx(2 / 4)
    assert metrics["session/empty_search_share/base/n"] == 4
    assert metrics["session/empty_search_share/persona_token"] == 0
    assert metrics["session/empty_search_share/human"] == 0
    assert metrics["session/repeated_search_share/human/n"] == 3
    low, high = _interval(metrics, "session/empty_search_share/base")
    # two sessions resampled: both the looping one (1), both the other (0), or one each (3/4)
    assert (low, high) == (0.0, 1.0)
