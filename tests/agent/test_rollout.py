"""Agents in the store: valid actions by construction, lockstep = one at a time, resume."""

from __future__ import annotations

import numpy as np
import pytest

from persona_shoppers.agent.evaluation import TYPE_CANDIDATES
from persona_shoppers.agent.prompts import (
    CONTENT_FREE_GOAL,
    GOAL_PREFIX,
    assistant_turn,
    with_goal,
)
from persona_shoppers.agent.rollout import (
    OUTCOMES,
    AgentSpec,
    RolloutEngine,
    action_logprobs,
    candidate_actions,
    candidate_text,
    choice_texts,
)
from persona_shoppers.llm.local import LocalLLM
from persona_shoppers.storefront import ACTION_TYPES, Action, Store

from ..storefront.test_store import COLLECTIONS, MEMBERS, PRODUCTS


@pytest.fixture(scope="module")
def llm(tiny_model_dir):
    return LocalLLM(tiny_model_dir, dtype="float32", batch_size=4)


@pytest.fixture(scope="module")
def stores():
    return {"s1": Store("s1", PRODUCTS, COLLECTIONS, MEMBERS)}


def _specs(n: int = 6) -> list[AgentSpec]:
    goals = ["You are here to buy running shoes.", "You are interested in rain jackets."]
    profiles = [None, "<|persona_1|>", "likes trail running"]
    return [AgentSpec(f"a{i}", "s1", goals[i % 2], profiles[i % 3], seed=100 + i) for i in range(n)]


def _sessions(runs):
    return [(r.spec.agent_id, r.actions, r.outcome, r.events) for r in runs]


def test_lockstep_gives_the_same_sessions_as_one_agent_at_a_time(llm, stores):
    # A high temperature flattens the tiny random model's peaky choices, so that the
    # sessions are long and varied; each agent samples with its own seeded generator. Queries
    # are greedy: sampled at 20 over the whole vocabulary, a token's draw turns on float
    # noise that batching changes (padded rows), not on the engine.
    together = RolloutEngine(
        llm, stores, max_steps=8, temperature=20.0, query_temperature=0.0, lockstep=8
    )
    alone = RolloutEngine(
        llm, stores, max_steps=8, temperature=20.0, query_temperature=0.0, lockstep=1
    )
    specs = _specs(8)
    runs = together.run(specs, progress=False)
    assert max(len(r.actions) for r in runs) >= 3
    assert _sessions(runs) == _sessions(alone.run(specs, progress=False))


def test_an_ended_agent_hands_its_place_to_a_waiting_one(llm, stores, monkeypatch):
    engine = RolloutEngine(
        llm, stores, max_steps=6, temperature=20.0, query_temperature=0.0, lockstep=3
    )
    batches = []
    step = engine._step
    monkeypatch.setattr(engine, "_step", lambda agents: batches.append(agents) or step(agents))
    specs = _specs(8)
    runs = engine.run(specs, progress=False)
    assert len({len(r.actions) for r in runs}) > 1  # visits of different lengths
    ended = set()
    for before, batch in zip([[], *batches], batches, strict=False):
        ended |= {a.spec.agent_id for a in before} - {a.spec.agent_id for a in batch}
        assert len(batch) == min(3, len(specs) - len(ended))  # every free place is taken
    assert _sessions(runs) == _sessions(
        RolloutEngine(
            llm, stores, max_steps=6, temperature=20.0, query_temperature=0.0, lockstep=1
        ).run(specs, progress=False)
    )


@pytest.mark.integration
def test_greedy_lockstep_equals_one_at_a_time_on_the_default_model(stores):
    from persona_shoppers.llm import build_llm

    llm = build_llm({"dtype": "float32", "cache": False, "batch_size": 8})
    specs = _specs(3)
    together = RolloutEngine(llm, stores, max_steps=3, decoding="greedy", lockstep=3)
    alone = RolloutEngine(llm, stores, max_steps=3, decoding="greedy", lockstep=1)
    runs = together.run(specs, progress=False)
    assert _sessions(runs) == _sessions(alone.run(specs, progress=False))


def test_every_action_is_valid_and_every_visit_ends(llm, stores):
    engine = RolloutEngine(llm, stores, max_steps=5, temperature=20.0, lockstep=3)
    runs = engine.run(_specs(), progress=False)
    for run in runs:
        assert run.outcome in OUTCOMES
        assert run.errors == [] and run.outcome != "error"
        assert 1 <= len(run.actions) <= 5
        assert run.events[0]["event_type"] == "page_view"
        for text in run.actions:
            Action.parse(text)  # well-formed JSON actions
    assert {r.outcome for r in runs} <= {"ended", "purchased", "step_limit"}


def test_the_step_limit_ends_a_visit(llm, stores):
    runs = RolloutEngine(llm, stores, max_steps=1, lockstep=6).run(_specs(), progress=False)
    for run in runs:
        assert len(run.actions) == 1
        assert run.outcome in ("step_limit", "ended")


def test_agents_with_their_own_seeds_draw_their_own_sessions(llm, stores):
    same = [
        AgentSpec(f"b{i}", "s1", "You are interested in socks.", None, seed=i) for i in range(8)
    ]
    # a high temperature flattens the tiny random model's peaky choices
    engine = RolloutEngine(llm, stores, max_steps=4, temperature=20.0, lockstep=8)
    runs = engine.run(same, progress=False)
    assert len({tuple(r.actions) for r in runs}) > 1


def test_a_run_resumes_from_its_checkpoint(llm, stores, tmp_path):
    engine = RolloutEngine(llm, stores, max_steps=4, temperature=20.0, lockstep=2)
    specs = _specs()
    fresh = engine.run(specs, progress=False)
    checkpoint = tmp_path / "runs.jsonl"
    engine.run(specs[:3], checkpoint=checkpoint, progress=False)  # an interrupted run
    assert len(checkpoint.read_text().splitlines()) == 3
    resumed = engine.run(specs, checkpoint=checkpoint, progress=False)
    assert _sessions(resumed) == _sessions(fresh)
    assert len(checkpoint.read_text().splitlines()) == 6


def test_candidates_are_the_valid_actions_of_the_page(stores):
    store = stores["s1"]
    visit, _ = store.start()
    home = candidate_actions(store, visit)
    assert Action("open", "c1") in home and Action("end") in home
    assert Action("back") not in home and Action("checkout") not in home
    store.step(visit, Action("search", "running"))
    listed = candidate_actions(store, visit)
    assert {a.argument for a in listed if a.type == "view"} == {"p1", "p3", "p5"}
    store.step(visit, Action("view", "p3"))
    on_product = candidate_actions(store, visit)
    assert Action("add_to_cart", "p3") in on_product
    # views: the products shown earlier in the visit, not the one on the page
    assert [a.argument for a in on_product if a.type == "view"] == ["p1", "p5"]
    store.step(visit, Action("add_to_cart", "p3"))
    on_cart = candidate_actions(store, visit)
    assert Action("remove_from_cart", "p3") in on_cart and Action("checkout") in on_cart
    store.step(visit, Action("checkout"))
    on_checkout = candidate_actions(store, visit)
    assert {a.type for a in on_checkout} == {"purchase", "open", "view", "view_cart", "back", "end"}
    # collections open from every page (the home page every visit starts on lists them)
    assert all(Action("open", "c1") in c for c in (listed, on_product, on_cart, on_checkout))
    assert {a.argument for a in on_checkout if a.type == "view"} == {"p1", "p3", "p5"}
    with pytest.raises(ValueError, match="no store for shops"):
        RolloutEngine(None, stores).run([AgentSpec("x", "s9", "goal")], progress=False)


class _EmptyQueries:
    """The tiny model, except that every generated search query is empty."""

    def __init__(self, llm):
        self.llm = llm

    def __getattr__(self, name):
        return getattr(self.llm, name)

    def generate(self, prompts, *args, **kwargs):
        return ["" for _ in prompts]


def test_an_empty_query_falls_back_to_another_valid_action(llm, stores):
    engine = RolloutEngine(_EmptyQueries(llm), stores, max_steps=6, temperature=20.0, lockstep=6)
    runs = engine.run(_specs(), progress=False)
    for run in runs:
        assert run.errors == [] and run.outcome != "error"
        assert all(Action.parse(a).type != "search" for a in run.actions)


class _AlwaysSearchesBoots(_EmptyQueries):
    """The tiny model, except that it always prefers to search, and always for "boots"."""

    def choose(self, prompts, candidates):
        choices = self.llm.choose(prompts, candidates)
        for choice in choices:  # the first candidate is the search type (choice_texts)
            choice.logprobs[:] = [0.0] + [-30.0] * (len(choice.logprobs) - 1)
        return choices

    def generate(self, prompts, *args, **kwargs):
        return ["boots" for _ in prompts]


def test_a_search_that_would_reload_its_own_results_page_is_no_new_search(llm, stores):
    engine = RolloutEngine(_AlwaysSearchesBoots(llm), stores, max_steps=6, lockstep=6)
    for run in engine.run(_specs(), progress=False):
        actions = [Action.parse(a) for a in run.actions]
        assert actions[0] == Action("search", "boots")  # the first search is made
        assert run.errors == []
        for before, after in zip(actions, actions[1:], strict=False):
            assert not (before.type == after.type == "search")  # then another action


@pytest.mark.parametrize(
    "action",
    [Action("view", "p0031"), Action("open", "c02"), Action("end"), Action("checkout")],
    ids=str,
)
def test_candidates_are_token_prefixes_of_the_training_answers(llm, action):
    # Scored candidates must end where the trained answers' tokens do: a candidate cut at a
    # bare closing quote scores a token (") the answers never have there (they have ",), so
    # every complete action lost to the search prefix and agents only searched.
    answer = llm.tokenizer.encode(assistant_turn(action, "Because."))
    candidate = llm.tokenizer.encode(candidate_text(action))
    assert answer[: len(candidate)] == candidate
    type_start = llm.tokenizer.encode(TYPE_CANDIDATES[ACTION_TYPES.index(action.type)])
    assert answer[: len(type_start)] == type_start


def test_action_probabilities_are_type_then_argument():
    options = [
        Action("view", "p1"),
        Action("view", "p2"),
        Action("add_to_cart", "p1"),
        Action("end"),
    ]
    types, texts = choice_texts(options)
    assert types == ["search", "view", "add_to_cart", "end"]
    assert texts == [
        '{"action": "search",',
        '{"action": "view",',
        '{"action": "add_to_cart",',
        '{"action": "end",',
        '{"action": "view", "product": "p1",',
        '{"action": "view", "product": "p2",',
    ]
    # types: search .1, view .6, add_to_cart .2, end .1; within view: p1 .03 vs p2 .01 of the
    # model's mass (ids off the page hold the rest), so P(p1 | view) = .75, P(p2 | view) = .25
    likelihoods = [0.1, 0.6, 0.2, 0.1, 0.6 * 0.03, 0.6 * 0.01]
    probs = np.exp(action_logprobs(options, types, np.log(likelihoods)))
    np.testing.assert_allclose(probs, [0.1, 0.45, 0.15, 0.2, 0.1])


def test_a_page_bias_reweights_the_types_before_the_arguments():
    options = [Action("view", "p1"), Action("view", "p2"), Action("add_to_cart", "p1")]
    types, texts = choice_texts(options)
    assert types == ["search", "view", "add_to_cart"]
    # types: search .2, view .6, add_to_cart .2; add_to_cart's bias doubles its weight:
    # .2 / .6 / .4 over 1.2; the split of view between p1 and p2 (3:1) is unchanged.
    likelihoods = [0.2, 0.6, 0.2, 0.6 * 0.03, 0.6 * 0.01]
    bias = {"add_to_cart": np.log(2.0), "purchase": 3.0}  # types not valid here are ignored
    probs = np.exp(action_logprobs(options, types, np.log(likelihoods), bias))
    np.testing.assert_allclose(probs, [0.2 / 1.2, 0.375, 0.125, 0.4 / 1.2])


def test_the_engine_applies_the_bias_of_the_agent_s_page(llm, stores):
    # A start page (empty cart) whose bias makes `end` certain: every agent leaves at once; a
    # bias on the same page with items in the cart changes nothing there.
    specs = _specs(4)
    plain = _sessions(
        RolloutEngine(llm, stores, max_steps=4, decoding="greedy").run(specs, progress=False)
    )
    assert any(actions != ['{"action": "end"}'] for _, actions, _, _ in plain)
    home = RolloutEngine(
        llm, stores, max_steps=4, decoding="greedy", type_bias={"home|empty": {"end": 50.0}}
    )
    assert [r.actions for r in home.run(specs, progress=False)] == [['{"action": "end"}']] * 4
    other = RolloutEngine(
        llm, stores, max_steps=4, decoding="greedy", type_bias={"home|items": {"end": 50.0}}
    )
    assert _sessions(other.run(specs, progress=False)) == plain


class _RecordsQueries(_AlwaysSearchesBoots):
    """Always searches; records the guidance and contrast prompts of the queries it writes."""

    def __init__(self, llm):
        super().__init__(llm)
        self.calls: list = []

    def generate(self, prompts, *args, contrast=None, guidance=1.0, **kwargs):
        self.calls.append((prompts, contrast, guidance))
        return ["boots" for _ in prompts]


def test_queries_are_guided_away_from_what_a_goal_free_prompt_writes(llm, stores):
    recorder = _RecordsQueries(llm)
    RolloutEngine(recorder, stores, max_steps=1, lockstep=6, query_guidance=2.0).run(
        _specs(), progress=False
    )
    prompts, contrast, guidance = recorder.calls[0]
    assert guidance == 2.0 and len(contrast) == len(prompts)
    for prompt, other in zip(prompts, contrast, strict=True):
        assert prompt[1]["content"].startswith(GOAL_PREFIX)
        # the same step, the assistant's search started, the goal content-free
        assert other[1]["content"] == with_goal(prompt[1]["content"], CONTENT_FREE_GOAL)
        assert other[0] == prompt[0] and other[2:] == prompt[2:]
    RolloutEngine(recorder, stores, max_steps=1, lockstep=6).run(_specs(), progress=False)
    assert recorder.calls[-1][1:] == (None, 1.0)  # no guidance by default


def test_with_goal_replaces_only_the_goal_line():
    user = f"{GOAL_PREFIX}You are here to buy boots.\nProgress:\n(just arrived)"
    assert with_goal(user, "N/A") == f"{GOAL_PREFIX}N/A\nProgress:\n(just arrived)"
    with pytest.raises(ValueError, match="starts with 'Goal: '"):
        with_goal("Progress:\n(just arrived)", "N/A")


def test_guided_queries_reuse_their_contrast_prefixes_and_free_them(tiny_model_dir, stores):
    # The contrast prompt's prefixes (goal replaced) are kept from search to search: the same
    # sessions as without any prompt cache, and no agent's prefix left cached after the run.
    def run(prefix_cache_mb):
        llm = LocalLLM(
            tiny_model_dir, dtype="float32", batch_size=4, prefix_cache_mb=prefix_cache_mb
        )
        prefilled = []
        prefill = llm.prefill
        llm.prefill = lambda prefixes: prefilled.extend(prefixes) or prefill(prefixes)
        engine = RolloutEngine(
            llm, stores, max_steps=6, temperature=20.0, query_temperature=0.0, query_guidance=2.0
        )
        runs = engine.run(_specs(6), progress=False)
        return runs, prefilled, llm

    runs, prefilled, llm = run(512)
    contrast = [p for p in prefilled if f"{GOAL_PREFIX}{CONTENT_FREE_GOAL}\n" in p]
    assert contrast and not any("\nPage:\n" in p for p in contrast)  # prefixes, before the page
    left = [llm.tokenizer.decode(list(key)) for key in llm.prefix_cache.entries]
    assert len(left) == 1 and GOAL_PREFIX not in left[0]  # only the shared system prompt
    assert _sessions(runs) == _sessions(run(0)[0])
