"""Agent populations: draws from a shop's mixes, matched buyers, profiles; runs as sessions."""

from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from persona_shoppers.agent.population import (
    category_leaf,
    condition_profile,
    matched_agents,
    runs_to_sessions,
    shop_sample_agents,
    text_persona_profile,
)
from persona_shoppers.agent.rollout import AgentRun, AgentSpec
from persona_shoppers.storefront import Action, Store

from ..storefront.test_store import COLLECTIONS, MEMBERS, PRODUCTS


def _mix(column, values, shares, shops=("s1", "s2")):
    return pd.DataFrame(
        [
            {"shop_id": s, column: v, "share": p}
            for s in shops
            for v, p in zip(values, shares, strict=True)
        ]
    )


def test_shop_sample_draws_each_shop_from_its_mixes_deterministically():
    tokens = pd.concat(
        [_mix("token", [1, 2], [1.0, 0.0], ["s1"]), _mix("token", [3, 4], [0.0, 1.0], ["s2"])]
    )
    strata = _mix("stratum", ["A", "D"], [0.5, 0.5])
    cats = _mix("category", ["boots", "socks"], [0.9, 0.1])
    agents = shop_sample_agents(tokens, strata, cats, 50, seed=1)
    assert len(agents) == 100 and agents["agent_id"].is_unique
    assert set(agents.loc[agents["shop_id"] == "s1", "token"]) == {1}
    assert set(agents.loc[agents["shop_id"] == "s2", "token"]) == {4}
    assert 0.3 < (agents["stratum"] == "A").mean() < 0.7
    assert (agents["category"] == "boots").mean() > 0.75
    pd.testing.assert_frame_equal(agents, shop_sample_agents(tokens, strata, cats, 50, seed=1))


def test_matched_agents_get_another_token_in_use():
    buyers = pd.DataFrame(
        {
            "shop_id": ["s1"] * 20,
            "buyer_id": [f"b{i}" for i in range(20)],
            "token": [5] * 20,
            "stratum": ["A"] * 20,
            "category": ["x"] * 20,
            "text_persona": [""] * 20,
        }
    )
    agents = matched_agents(buyers, [5, 6, 7], seed=0)
    assert set(agents["mismatch_token"]) == {6, 7}
    with pytest.raises(ValueError, match="at least 2 tokens"):
        matched_agents(buyers, [5], seed=0)


def test_profiles_by_condition():
    line = text_persona_profile(
        {"age_range": "25-34", "reasoning": "long text", "income": ""},
        {"price_sensitivity": "high", "interests": ["Apparel > Skirts", "Shoes"]},
    )
    assert line == "age range: 25-34; price sensitivity: high; interests: skirts, shoes"
    agent = {"token": 3, "mismatch_token": 8, "text_persona": line}
    assert condition_profile(agent, "none") is None
    assert condition_profile(agent, "token") == "<|persona_3|>"
    assert condition_profile(agent, "mismatch_token") == "<|persona_8|>"
    assert condition_profile(agent, "text_and_token").startswith("<|persona_3|> age range")
    with pytest.raises(ValueError, match="unknown profile kind"):
        condition_profile(agent, "tokens")
    assert category_leaf("Footwear > Ankle Boots") == "ankle boots"


def test_runs_to_sessions_takes_a_cart_event_after_a_hundred_views():
    # quantity is null on the first 121 events and set on the last: a schema inferred from
    # the first rows rejected it
    store = Store("s1", PRODUCTS, COLLECTIONS, MEMBERS)
    visit, first = store.start()
    events = list(first.events)
    for _ in range(60):
        events += store.step(visit, Action("view", "p1")).events
        events += store.step(visit, Action("view", "p2")).events
    events += store.step(visit, Action("add_to_cart", "p2")).events
    start = datetime(2026, 1, 1, tzinfo=UTC)
    timed = [{**e, "ts": start + timedelta(seconds=i)} for i, e in enumerate(events)]
    run = AgentRun(AgentSpec("a1", "s1", "goal"), events=timed)
    table = runs_to_sessions([run], pd.DataFrame({"condition": ["base"]}), PRODUCTS, COLLECTIONS)
    assert table.loc[0, ["n_product_views", "n_add_to_cart"]].tolist() == [120, 1]
    assert table.loc[0, "condition"] == "base"
