"""Test-case mining on hand-made event logs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import polars as pl

from persona_shoppers.alignment.cases import (
    CUTOFF,
    before_cutoff,
    item_selection_cases,
    persona_cutoffs,
    query_generation_cases,
    rank_selection_cases,
    redact_history,
    reference_pairs,
)
from persona_shoppers.alignment.instructions import instruction_tasks, task_success

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def _events(rows: list[tuple]) -> pl.DataFrame:
    """(buyer, session, seconds, event_type, product_id, query, category) rows of shop s1."""
    titles = {"p1": "Red Boots", "p2": "Blue Hat", "p3": "Green Mat"}
    return pl.DataFrame(
        [
            {
                "shop_id": "s1",
                "buyer_id": b,
                "session_id": s,
                "ts": T0 + timedelta(seconds=t),
                "event_type": e,
                "product_id": p,
                "query": q,
                "title": titles.get(p),
                "category": c,
                "collection_title": None,
            }
            for b, s, t, e, p, q, c in rows
        ],
        schema_overrides={"ts": pl.Datetime("us", "UTC")},
    )


EVENTS = _events(
    [
        # u1, session a: first query, a view 30 s later (kept), a second query (discarded)
        ("u1", "a", 0, "search", None, "red boots", None),
        ("u1", "a", 30, "product_view", "p1", None, "Shoes"),
        ("u1", "a", 40, "search", None, "hat", None),
        ("u1", "a", 50, "product_view", "p2", None, "Hats"),
        ("u1", "a", 60, "add_to_cart", "p1", None, "Shoes"),
        ("u1", "a", 70, "checkout_start", None, None, None),
        ("u1", "a", 80, "purchase", "p1", None, "Shoes"),
        # u2: the view comes 90 s after the query: no query-generation case
        ("u2", "b", 0, "search", None, "mat", None),
        ("u2", "b", 90, "product_view", "p3", None, "Mats"),
    ]
)
BUYERS = pd.DataFrame({"shop_id": ["s1", "s1"], "buyer_id": ["u1", "u2"]})


def test_query_generation_takes_the_first_query_and_a_view_within_the_window():
    cases = query_generation_cases(EVENTS, BUYERS, window_s=60)
    assert cases[["buyer_id", "query", "product_id"]].values.tolist() == [["u1", "red boots", "p1"]]
    wider = query_generation_cases(EVENTS, BUYERS, window_s=120)
    assert wider["buyer_id"].tolist() == ["u1", "u2"]


def test_item_selection_distractors_come_from_unviewed_categories():
    products = pd.DataFrame(
        {
            "shop_id": ["s1"] * 6,
            "product_id": ["p1", "p2", "p3", "p4", "p5", "p6"],
            "title": ["Red Boots", "Blue Hat", "Green Mat", "Cup", "Pen", "Lamp"],
            "category": ["Shoes", "Hats", "Mats", "Kitchen", "Office", "Home"],
        }
    )
    cases = item_selection_cases(EVENTS, products, BUYERS, n_distractors=3, seed=1)
    assert len(cases) == 1  # only u1 purchased
    case = cases.iloc[0]
    assert case["product_ids"][case["answer"]] == "p1"
    others = set(case["product_ids"]) - {"p1"}
    assert len(others) == 3 and others <= {"p3", "p4", "p5", "p6"}  # u1 viewed Shoes, Hats


def test_rank_selection_keeps_pairs_whose_product_is_on_the_page():
    pages = {"s1": lambda q: ["p9", "p1"] if q == "red boots" else ["p9"]}
    cases = rank_selection_cases(EVENTS, BUYERS, pages, window_s=120)
    assert cases[["buyer_id", "rank"]].values.tolist() == [["u1", 2]]


def test_reference_pairs_come_from_the_other_buyers_of_the_cases_shops():
    pages = {"s1": lambda q: ["p9", "p3"] if q == "mat" else ["p9"]}
    other_shop = EVENTS.with_columns(shop_id=pl.lit("s2"), buyer_id=pl.lit("u9"))
    events = pl.concat([EVENTS, other_shop])
    pairs = reference_pairs(events, BUYERS.iloc[:1], pages, window_s=120)
    # u1 is a case buyer, u9 shops elsewhere: only u2's pair, its product second on the page
    assert pairs[["buyer_id", "query", "title"]].values.tolist() == [["u2", "mat", "Green Mat"]]
    assert pairs["rank"].tolist() == [2]
    off_page = reference_pairs(events, BUYERS.iloc[:1], {"s1": lambda q: []}, window_s=120)
    assert off_page["rank"].isna().all() and len(off_page) == 1


def test_redact_history_drops_every_entry_that_mentions_a_test_item():
    history = (
        '2026-03-01: searched "red boots"; viewed Red Boots; viewed Blue Hat\n'
        "2026-03-02: viewed Red Boots\nOlder purchases:\n2026-01-01: purchased Green Mat"
    )
    assert redact_history(history, ["Red Boots", "red boots"]) == (
        "2026-03-01: viewed Blue Hat\nOlder purchases:\n2026-01-01: purchased Green Mat"
    )
    assert redact_history(history, []) == history


def test_instruction_tasks_end_at_the_deepest_funnel_action():
    tasks = instruction_tasks(EVENTS, n_per_bin=1, length_bins=[[3, 10]], seed=0)
    assert len(tasks) == 1
    task = tasks.iloc[0]
    assert task["required"] == "purchase" and task["n_actions"] == 7
    assert task["goal"].startswith('Follow these steps in order: 1) search "red boots"; ')
    assert "7) purchase" in task["goal"]
    assert task_success([{"event_type": "purchase"}], "purchase")
    assert not task_success([{"event_type": "checkout_start"}], "purchase")


def test_persona_cutoffs_and_the_events_a_persona_may_use():
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    rows = [
        # session 1: a search and a view of p1; session 2: buys p2; session 3: views p1, buys p3
        ("b", "s1", 0, "search", None, "red boots"),
        ("b", "s1", 10, "product_view", "p1", None),
        ("b", "s2", 1000, "purchase", "p2", None),
        ("b", "s3", 2000, "search", None, "red boots"),
        ("b", "s3", 2010, "product_view", "p1", None),
        ("b", "s3", 2020, "purchase", "p3", None),
        # a buyer whose only session holds its test events: nothing before
        ("c", "s4", 0, "purchase", "p2", None),
    ]
    events = pl.DataFrame(
        [
            {
                "shop_id": "x",
                "buyer_id": buyer,
                "session_id": session,
                "ts": t0 + timedelta(seconds=sec),
                "event_type": kind,
                "product_id": product,
                "query": query,
                "title": product,
                "category": "Boots" if product else None,
            }
            for buyer, session, sec, kind, product, query in rows
        ]
    )
    cutoffs = persona_cutoffs(events, window_s=60).to_pandas().set_index("buyer_id")
    # the last purchase session and the last search+view session are both s3
    assert cutoffs.loc["b", CUTOFF] == t0 + timedelta(seconds=2000)
    assert cutoffs.loc["b", "events_before"] == 3
    assert cutoffs.loc["c", "events_before"] == 0
    buyers = cutoffs.reset_index()[["shop_id", "buyer_id", CUTOFF]]
    allowed = before_cutoff(events, buyers.head(1)).to_pandas()
    # p1 and "red boots" come back after the cutoff: only the purchase of p2 is left
    assert allowed["event_type"].tolist() == ["purchase"]
    assert allowed["product_id"].tolist() == ["p2"]
