"""The calibration refitted on the agents' own steps, with the tiny random model."""

from __future__ import annotations

import numpy as np
import pytest

from persona_shoppers.agent.calibration import pooled_context
from persona_shoppers.agent.on_policy import fit_on_policy, funnel_shares
from persona_shoppers.agent.rollout import AgentRun, AgentSpec, RolloutEngine

from .test_rollout import _specs, llm, stores  # noqa: F401 (fixtures)

TARGETS = {
    "home|empty": {"search": 0.5, "open": 0.3, "end": 0.2},
    "search|empty": {"view": 0.9, "end": 0.1},
    "collection|empty": {"view": 0.8, "search": 0.1, "end": 0.1},
    "product|empty": {"view": 0.5, "add_to_cart": 0.3, "open": 0.1, "end": 0.1},
}


def test_the_engine_records_every_step_s_own_type_mix(llm, stores):  # noqa: F811
    engine = RolloutEngine(llm, stores, max_steps=4, temperature=20.0, record_types=True)
    engine.type_bias = {"home|empty": {"end": 3.0}}  # the record is the model's own mix
    runs = engine.run(_specs(4), progress=False)
    assert len(engine.type_records) == sum(len(r.actions) for r in runs)
    first = [p for c, p in engine.type_records if pooled_context(c) == "home|empty"]
    assert first and all(abs(sum(p.values()) - 1) < 1e-6 for p in first)
    assert all(set(p) >= {"search", "open", "end"} for p in first)
    unbiased = RolloutEngine(llm, stores, max_steps=1, temperature=20.0, record_types=True)
    unbiased.run(_specs(4), progress=False)
    np.testing.assert_allclose(
        [p["end"] for p in first[:4]], [p["end"] for _, p in unbiased.type_records], rtol=1e-4
    )


def test_a_round_matches_the_targets_on_the_agents_own_steps(llm, stores):  # noqa: F811
    engine = RolloutEngine(llm, stores, max_steps=5, temperature=20.0)
    # a wide clip, so the types buyers never take can be driven out of the tiny model's mix
    result = fit_on_policy(engine, _specs(6), TARGETS, {}, rounds=2, max_bias=30.0)
    assert [r["agents"] for r in result["rounds"]] == [6, 6]
    for round_ in result["rounds"]:
        pooled = {c: n for c, n in round_["steps_by_context"].items() if c.count("|") == 1}
        assert round_["steps"] == sum(pooled.values()) > 6
        assert set(round_["funnel"]) == {"add_to_cart", "checkout", "purchase"}
        # on the home page every targeted type is valid at every step, so the mix can be
        # matched exactly (elsewhere not always: a search with no result offers no view)
        for context in ("home|empty",):
            after = round_["mean_after"][context]
            # the target over the types the context's steps could take, renormalised
            reachable = {t: v for t, v in TARGETS[context].items() if t in after}
            total = sum(reachable.values())
            for action_type, share in reachable.items():
                assert after[action_type] == pytest.approx(share / total, abs=1e-3)
    assert set(result["type_bias"]) >= set(result["rounds"][0]["steps_by_context"]) & set(TARGETS)
    assert engine.record_types is False and engine.type_records == []


def test_funnel_shares_count_sessions_with_each_step():
    spec = AgentSpec("a", "s1", "goal")
    runs = [
        AgentRun(spec, events=[{"event_type": "add_to_cart"}, {"event_type": "checkout_start"}]),
        AgentRun(spec, events=[{"event_type": "page_view"}]),
    ]
    assert funnel_shares(runs) == {"add_to_cart": 0.5, "checkout": 0.5, "purchase": 0.0}
