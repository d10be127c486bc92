"""Agent evaluation on held-out trace steps, with a scripted model."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pandas as pd
import pytest

from persona_shoppers.agent import SYSTEM_PROMPT, chat, persona_token, user_turn
from persona_shoppers.agent.evaluation import (
    evaluate_agent,
    funnel_top_up,
    held_out_draw,
    page_modes,
    query_scores,
    search_targets,
    step_contexts,
    summarize_actions,
    token_swap_distributions,
    with_token,
)
from persona_shoppers.agent.rollout import SEARCH_PREFIX
from persona_shoppers.llm.base import Choice
from persona_shoppers.storefront import ACTION_TYPES


class ScriptedLLM:
    """Prefers the action type named in the goal; if ``by_token``, persona 1 prefers 'end'."""

    def __init__(self, by_token: bool):
        self.by_token = by_token

    def choose(self, prompts, candidates):
        out = []
        for prompt, cands in zip(prompts, candidates, strict=True):
            user = prompt[1]["content"]
            wanted = re.search(r"Goal: do (\w+)", user).group(1)
            if self.by_token and persona_token(1) in user:
                wanted = "end"
            logprobs = [0.0 if f'"{wanted}"' in c else -3.0 for c in cands]
            out.append(Choice(int(np.argmax(logprobs)), "", logprobs))
        return out

    def generate(self, prompts, max_new_tokens=64, *args, **kwargs):
        if prompts[0][-1] == {"role": "assistant", "content": SEARCH_PREFIX}:
            return ["red shoes", "", "p0042"][: len(prompts)]
        return ['{"action": "end"}' if i % 2 else "not json" for i in range(len(prompts))]


def _traces() -> pd.DataFrame:
    rows = []
    for i, (goal, truth) in enumerate(
        [("view", "view"), ("search", "search"), ("end", "view"), ("view", "view")]
    ):
        user = user_turn(f"do {goal}", "[home]", profile=persona_token(i % 2))
        rows.append(
            {
                "messages": chat(SYSTEM_PROMPT, user, "{}"),
                "action": truth,
                "page": "home",
                "stratum": "A",
            }
        )
    return pd.DataFrame(rows)


def _evaluate(llm, traces, **kwargs):
    report, _ = evaluate_agent(llm, traces, [0, 1], {"home": "view"}, 4, 4, 32, **kwargs)
    return report


def test_accuracy_validity_and_token_sensitivity_by_hand():
    report = _evaluate(ScriptedLLM(by_token=False), _traces())
    assert report["next_action_type_accuracy"] == 0.75  # the "do end" step was a view
    assert report["accuracy_by_type"] == {"search": 1.0, "view": 2 / 3}
    assert report["majority_type_accuracy"] == 0.75
    assert report["against_majority"]["difference"] == 0.0
    assert report["by_page"]["home"]["n"] == 4
    assert report["json_validity"] == 0.5
    assert report["token_sensitivity_kl"] == 0.0  # the tokens change nothing
    sensitive = _evaluate(ScriptedLLM(by_token=True), _traces())
    # By hand: each distribution puts a = 1/z on its preferred type and b = e^-3/z on the 9
    # others; two that prefer different types differ by KL = 3 (a - b) nats in both
    # directions. 3 of the 4 prompts ("do end" is the exception) have such a pair.
    z = 1 + 9 * math.exp(-3)
    a, b = 1 / z, math.exp(-3) / z
    assert sensitive["token_sensitivity_kl"] == pytest.approx(0.75 * 3 * (a - b), abs=1e-4)


def test_token_swap_distributions_score_each_step_with_its_own_and_the_given_token():
    traces = _traces()  # tokens 0, 1, 0, 1; goals view, search, end, view
    own, swapped = token_swap_distributions(ScriptedLLM(by_token=True), traces, [1, 0, 1, 0])
    best = [ACTION_TYPES[i] for i in own.argmax(axis=1)]
    assert best == ["view", "end", "end", "end"]  # persona 1 prefers end
    assert [ACTION_TYPES[i] for i in swapped.argmax(axis=1)] == ["end", "search", "end", "view"]
    np.testing.assert_allclose(own.sum(axis=1), 1.0)
    with pytest.raises(ValueError, match="2 swapped tokens for 4 steps"):
        token_swap_distributions(ScriptedLLM(by_token=True), traces, [1, 0])


def test_with_token_replaces_only_the_profile_token():
    prompt = chat(SYSTEM_PROMPT, user_turn("g", "page <|persona_9|>", profile=persona_token(3)))
    swapped = with_token(prompt, 7)
    assert "Buyer profile: <|persona_7|>" in swapped[1]["content"]
    assert "page <|persona_9|>" in swapped[1]["content"]
    with pytest.raises(ValueError, match="no 'Buyer profile"):
        with_token(chat(SYSTEM_PROMPT, user_turn("g", "page")), 1)
    assert len(ACTION_TYPES) == 10


def _scores(rows: list[tuple[str, str, str, str, float]]) -> pd.DataFrame:
    """(page, stratum, buyer's action, predicted, P(buyer's action)) per step; the rest of the
    probability goes to 'end' (or to 'view' when the buyer's action is 'end')."""
    table = []
    for page, stratum, action, predicted, p in rows:
        probs = dict.fromkeys(ACTION_TYPES, 0.0)
        probs[action] = p
        probs["end" if action != "end" else "view"] += 1 - p
        table.append(
            {
                **{f"p_{t}": v for t, v in probs.items()},
                "predicted": predicted,
                "action": action,
                "page": page,
                "stratum": stratum,
            }
        )
    return pd.DataFrame(table)


def test_summarize_actions_by_hand():
    scores = _scores(
        [
            ("checkout", "A", "purchase", "purchase", 0.8),
            ("checkout", "D", "end", "end", 0.6),  # browse intent: not in the purchase check
            ("checkout", "B", "end", "purchase", 0.3),
            ("product", "A", "add_to_cart", "view", 0.2),
            ("product", "A", "view", "view", 0.5),
        ]
    )
    report = summarize_actions(scores, {"checkout": "end", "product": "view"}, draws=200)
    assert report["next_action_type_accuracy"] == 0.6
    # majority of the steps: end (2 of 5); page modes: end, end, end, view, view -> 3 right
    assert report["against_majority"]["baseline"] == 0.4
    assert report["against_page_mode"]["baseline"] == 0.6
    assert report["against_page_mode"]["difference"] == 0.0
    assert report["mean_p_next_action"] == pytest.approx((0.8 + 0.6 + 0.3 + 0.2 + 0.5) / 5)
    assert report["by_page"]["checkout"] == {
        "n": 3,
        "accuracy": 2 / 3,
        "mean_p_next_action": pytest.approx(1.7 / 3),
    }
    purchase = report["purchase_on_checkout"]  # buy-intent checkout steps: A and B
    assert purchase["n"] == 2
    assert purchase["model"] == pytest.approx((0.8 + 0.0) / 2)  # P(purchase) on the B step: 0
    assert purchase["human"] == 0.5
    cart = report["add_to_cart_on_product"]
    assert cart["model"] == pytest.approx(0.1)  # 0.2 and 0
    assert cart["human"] == 0.5 and cart["ratio"] == pytest.approx(0.2)


def test_funnel_checks_are_topped_up_from_the_rest_of_the_draw():
    pool = pd.DataFrame(
        {
            "page": ["home", "checkout", "product", "checkout", "checkout", "product", "checkout"],
            "stratum": ["A", "A", "A", "D", "B", "A", "C"],
        },
        index=[10, 11, 12, 13, 14, 15, 16],
    )
    steps = pool.iloc[:3]  # one buy-intent checkout and one product page
    # checkout: 14 and 16 (13 is browse intent); product: 15; in the pool's order
    assert funnel_top_up(steps, pool, 3).index.tolist() == [14, 16, 15]
    assert funnel_top_up(steps, pool, 2).index.tolist() == [14, 15]
    assert funnel_top_up(steps, pool, 1).empty  # the draw has one of each already
    # the checks count the topped-up steps, and say how many were added
    scores = _scores(
        [
            ("checkout", "A", "purchase", "purchase", 0.8),
            ("product", "A", "view", "view", 0.5),
        ]
    )
    top_up = _scores(
        [("checkout", "B", "end", "end", 0.6), ("checkout", "C", "purchase", "x", 0.2)]
    )
    report = summarize_actions(scores, {}, draws=200, top_up=top_up)
    assert report["examples"] == 2  # accuracy stays on the draw
    purchase = report["purchase_on_checkout"]
    assert purchase["n"] == 3 and purchase["topped_up"] == 2
    assert purchase["model"] == pytest.approx((0.8 + 0.0 + 0.2) / 3)
    assert purchase["human"] == pytest.approx(2 / 3)
    assert report["add_to_cart_on_product"]["topped_up"] == 0


def test_evaluate_agent_scores_the_topped_up_steps_once():
    traces = _traces()
    traces.loc[3, "page"] = "checkout"
    calls = []

    class Counting(ScriptedLLM):
        def choose(self, prompts, candidates):
            calls.append(len(prompts))
            return super().choose(prompts, candidates)

    report, scores = evaluate_agent(
        Counting(by_token=False),
        traces.iloc[:2],
        [0, 1],
        {"home": "view"},
        4,
        4,
        32,
        funnel_pool=traces,
        funnel_min_steps=5,
    )
    assert len(scores) == 2 and report["examples"] == 2
    assert report["purchase_on_checkout"]["n"] == 1  # the one checkout of the pool
    assert calls[0] == 3  # the draw and its top-up in one call


def test_summarize_actions_rejects_unknown_action_types():
    scores = _scores([("home", "A", "view", "view", 1.0)])
    scores.loc[0, "action"] = "teleport"
    with pytest.raises(ValueError, match="unknown types"):
        summarize_actions(scores, {})


def test_page_modes_and_nested_draws():
    traces = pd.DataFrame(
        {"page": ["home", "home", "home", "cart"], "action": ["search", "open", "open", "end"]}
    )
    assert page_modes(traces) == {"home": "open", "cart": "end"}
    steps = pd.DataFrame({"x": range(50)})
    big, small = held_out_draw(steps, 20, seed=3), held_out_draw(steps, 5, seed=3)
    assert small["x"].tolist() == big["x"].tolist()[:5]


def _session(steps: list[tuple[str, str, dict]]) -> list[dict]:
    return [
        {
            "session_id": "s1",
            "step": i,
            "action": action,
            "messages": chat(SYSTEM_PROMPT, user_turn("g", page), json.dumps(answer)),
            "category": "shoes",
        }
        for i, (action, page, answer) in enumerate(steps)
    ]


LISTING = "[search] results\n- p01: Red Trail Shoes | $10.00 | 4.5/5\n- p02: Blue Socks | $2.00"


def _search_traces() -> pd.DataFrame:
    return pd.DataFrame(
        _session(
            [
                ("search", "[home]", {"action": "search", "query": "red shoes"}),
                ("view", LISTING, {"action": "view", "product": "p01"}),
                ("search", "[product] p01", {"action": "search", "query": "socks"}),
                ("end", LISTING, {"action": "end"}),
            ]
        )
    )


def test_search_targets_are_the_titles_viewed_next():
    targets = search_targets(_search_traces())
    assert targets.to_dict() == {0: "Red Trail Shoes", 2: None}


class FakeEmbedder:
    """Unit vectors by first letter: texts sharing it have cosine 1, others 0."""

    def embed(self, texts):
        return np.array([[1.0, 0.0] if t[:1] in "rR" else [0.0, 1.0] for t in texts])


def test_query_scores_by_hand():
    traces = _search_traces()
    report = query_scores(
        ScriptedLLM(by_token=False),
        traces,
        search_targets(traces),
        FakeEmbedder(),
        max_tokens=8,
        temperature=1.0,
        seed=0,
        draws=100,
    )
    # agent: "red shoes" (vs "red shoes": 1), "" (empty: 0)
    assert report["n"] == 2
    assert report["cosine"] == 0.5
    assert report["empty_share"] == 0.5 and report["id_like_share"] == 0.0
    assert report["title_as_query"] == {
        "cosine": 1.0,
        "cosine_interval": [1.0, 1.0],
        "agent_cosine_same_steps": 1.0,
        "n": 1,
    }
    assert report["category_as_query"]["cosine"] == 0.5  # "shoes" vs "red shoes" and "socks"


def test_step_contexts_read_the_page_s_cart_line():
    steps = pd.DataFrame(
        {
            "page": ["product", "cart"],
            "messages": [
                chat(SYSTEM_PROMPT, user_turn("do view", "[product]\nCart: empty"), "{}"),
                chat(SYSTEM_PROMPT, user_turn("do view", "[cart]\nCart: 1 item(s), $9.00"), "{}"),
            ],
        }
    )
    assert step_contexts(steps) == ["product|empty", "cart|items"]


def test_action_type_distributions_run_the_shared_system_prompt_once(tiny_model_dir):
    """Prefilling the system prompt the steps share changes no probability (float32) and
    leaves nothing cached; the prefill is what the scoring reuses."""
    from persona_shoppers.agent.evaluation import TYPE_CANDIDATES, action_type_distributions
    from persona_shoppers.llm.local import LocalLLM

    llm = LocalLLM(tiny_model_dir, dtype="float32", batch_size=2)
    prompts = [list(m[:2]) for m in _traces()["messages"]]
    plain = np.array([c.probs for c in llm.choose(prompts, [TYPE_CANDIDATES] * len(prompts))])
    prefills = []
    prefill = llm.prefill
    llm.prefill = lambda texts: prefills.append(list(texts)) or prefill(texts)
    shared = action_type_distributions(llm, prompts)
    np.testing.assert_allclose(shared, plain, atol=1e-5)
    assert prefills == [[llm.render(prompts[0]).split("Goal: ")[0]]]
    assert not llm.prefix_cache.entries
