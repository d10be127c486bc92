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


def test_shop_sample_agents_take_token_intent_and_category_from_one_real_buyer():
    """SimPersona 3.2: an agent gets the token and intent of one real counterpart, so a
    window-shopper's token is never told to buy."""
    counterparts = pd.DataFrame(
        {
            "shop_id": ["s1"] * 4 + ["s2"] * 2,
            "buyer_id": ["a", "b", "c", "d", "e", "f"],
            "token": [1, 1, 2, 3, 4, 4],
            "stratum": ["A", "A", "D", "B", "C", "D"],
            "category": ["boots", "boots", "socks", "hats", "bags", "belts"],
        }
    )
    agents = shop_sample_agents(counterparts, 200, seed=1)
    assert len(agents) == 400 and agents["agent_id"].is_unique
    joined = agents.merge(counterparts, on=["shop_id", "buyer_id"], suffixes=("", "_real"))
    assert len(joined) == len(agents)
    for column in ("token", "stratum", "category"):
        assert (joined[column] == joined[f"{column}_real"]).all()
    # tokens follow the shop's buyers: p_s1(1) = 0.5
    assert 0.4 < (agents.loc[agents["shop_id"] == "s1", "token"] == 1).mean() < 0.6
    assert set(agents.loc[agents["shop_id"] == "s2", "token"]) == {4}
    pd.testing.assert_frame_equal(agents, shop_sample_agents(counterparts, 200, seed=1))
    other = shop_sample_agents(counterparts, 200, seed=1, population="ab_sample")
    assert not other["buyer_id"].equals(agents["buyer_id"])


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
