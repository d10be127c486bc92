"""The textual store: pages, ranking, cart semantics, invalid actions, determinism, variants."""

import json

import jsonschema
import pandas as pd
import pytest

from persona_shoppers.storefront import (
    ACTION_SCHEMA,
    Action,
    InvalidAction,
    Store,
    StoreVariant,
    approx_token_count,
    build_stores,
    listed_title,
)

PRODUCTS = pd.DataFrame(
    {
        "shop_id": ["s1"] * 5,
        "product_id": ["s1-p1", "s1-p2", "s1-p3", "s1-p4", "s1-p5"],
        "title": [
            "Northwind Trail Running Shoes",
            "Acme Cotton T-Shirt",
            "Velo Road Running Shoes",
            "Northwind Rain Jacket",
            "Velo Running Socks",
        ],
        "category": [
            "Footwear > Running Shoes",
            "Apparel > T-Shirt",
            "Footwear > Running Shoes",
            "Apparel > Rain Jacket",
            "Footwear > Socks",
        ],
        "brand": ["Northwind", "Acme", "Velo", "Northwind", "Velo"],
        "price": [120.0, 20.0, 80.0, 150.0, 10.0],
        "description": ["Light trail shoes.", "Soft tee.", "Road shoes.", "Dry jacket.", "Socks."],
        "rating": [4.1, 4.8, 4.6, 3.9, 4.0],
        "review_count": [10, 500, 40, 5, 60],
    }
)
COLLECTIONS = pd.DataFrame(
    {"shop_id": ["s1", "s1"], "collection_id": ["s1-c1", "s1-c2"], "title": ["Run", "Rain"]}
)
MEMBERS = pd.DataFrame(
    {
        "shop_id": ["s1"] * 4,
        "collection_id": ["s1-c1", "s1-c1", "s1-c1", "s1-c2"],
        "product_id": ["s1-p1", "s1-p3", "s1-p5", "s1-p4"],
    }
)


def _store(variant: StoreVariant | None = None, cap: int = 256) -> Store:
    return Store("s1", PRODUCTS, COLLECTIONS, MEMBERS, variant, max_observation_tokens=cap)


def _walk(store: Store, actions: list) -> tuple[list[str], list[dict]]:
    visit, first = store.start()
    pages, events = [first.observation], list(first.events)
    for action in actions:
        result = store.step(visit, action)
        pages.append(result.observation)
        events.extend(result.events)
    return pages, events


def test_search_ranks_bm25_matches_and_shows_short_ids():
    store = _store()
    assert store.search_results("trail running shoes")[0] == "s1-p1"
    assert set(store.search_results("running shoes")) == {"s1-p1", "s1-p3", "s1-p5"}
    visit, _ = store.start()
    page = store.step(visit, {"action": "search", "query": "running shoes"}).observation
    assert page.startswith('[search] "running shoes": 3 results, showing 1-3')
    assert "- p1: Northwind Trail Running Shoes | $120.00 | 4.1/5" in page
    assert "Acme" not in page  # the t-shirt does not match
    assert listed_title(page, "p1") == "Northwind Trail Running Shoes"
    assert listed_title(page, "p2") is None


def test_collection_page_lists_members_by_the_variant_ranking():
    store = _store(StoreVariant(ranking="price_low_to_high"))
    assert store.collection_listing("s1-c1") == ["s1-p5", "s1-p3", "s1-p1"]
    assert _store().collection_listing("s1-c1") == ["s1-p5", "s1-p3", "s1-p1"]  # by reviews
    assert _store(StoreVariant(ranking="rating")).collection_listing("s1-c1") == [
        "s1-p3",
        "s1-p1",
        "s1-p5",
    ]


def test_cart_add_remove_checkout_purchase_and_events():
    store = _store()
    pages, events = _walk(
        store,
        [
            {"action": "view", "product": "p1"},
            {"action": "add_to_cart", "product": "p1"},
            {"action": "add_to_cart", "product": "s1-p3"},  # full ids work too
            {"action": "add_to_cart", "product": "p3"},
            {"action": "remove_from_cart", "product": "p1"},
            {"action": "checkout"},
            {"action": "purchase"},
        ],
    )
    assert [e["event_type"] for e in events] == [
        "page_view",
        "product_view",
        "add_to_cart",
        "add_to_cart",
        "add_to_cart",
        "remove_from_cart",
        "checkout_start",
        "purchase",
    ]
    purchase = events[-1]
    assert (purchase["product_id"], purchase["quantity"], purchase["price"]) == ("s1-p3", 2, 80.0)
    assert "Cart: 2 item(s), $160.00" in pages[-2]
    assert pages[-1].startswith("[confirmation]")


def test_purchase_ends_the_visit_and_end_ends_it_too():
    store = _store()
    visit, _ = store.start()
    for action in ("add_to_cart", "checkout", "purchase"):
        store.step(visit, Action(action, "p2" if action == "add_to_cart" else None))
    assert visit.outcome == "purchased"
    with pytest.raises(RuntimeError, match="already ended"):
        store.step(visit, Action("end"))
    visit, _ = store.start()
    store.step(visit, Action("end"))
    assert visit.outcome == "ended" and visit.done


@pytest.mark.parametrize(
    ("action", "rule"),
    [
        ('{"action": "fly"}', "malformed"),
        ("not json", "malformed"),
        ('{"action": "search"}', "malformed"),
        ('{"action": "checkout", "product": "p1"}', "malformed"),
        ('{"action": "view", "product": "p99"}', "unknown_product"),
        ('{"action": "open", "collection": "c9"}', "unknown_collection"),
        ('{"action": "remove_from_cart", "product": "p1"}', "not_in_cart"),
        ('{"action": "checkout"}', "empty_cart"),
        ('{"action": "purchase"}', "not_at_checkout"),
        ('{"action": "back"}', "no_previous_page"),
    ],
)
def test_invalid_actions_give_an_error_page_and_change_nothing(action, rule):
    store = _store()
    visit, start = store.start()
    result = store.step(visit, action)
    assert not result.valid and result.rule == rule and result.events == []
    assert result.observation.startswith("Error: ")
    assert result.observation.endswith(start.observation)  # still on the home page
    assert (visit.steps, visit.errors, visit.cart, visit.outcome) == (1, 1, {}, None)


def test_back_returns_to_the_previous_page():
    store = _store()
    pages, events = _walk(
        store,
        [
            {"action": "search", "query": "rain"},
            {"action": "view", "product": "p4"},
            {"action": "back"},
        ],
    )
    assert pages[-1] == pages[1]
    assert [e["event_type"] for e in events] == ["page_view", "search", "product_view"]


def test_same_actions_give_the_same_pages_and_events():
    actions = [
        {"action": "search", "query": "running"},
        {"action": "view", "product": "p3"},
        {"action": "add_to_cart", "product": "p3"},
        {"action": "open", "collection": "c1"},
    ]
    assert _walk(_store(), actions) == _walk(_store(), actions)


def test_a_variant_changes_only_what_it_configures():
    actions = [
        {"action": "search", "query": "running"},
        {"action": "view", "product": "p3"},
        {"action": "add_to_cart", "product": "p3"},
    ]
    control_pages, control_events = _walk(_store(), actions)
    dearer_pages, dearer_events = _walk(_store(StoreVariant(price_multiplier=1.1)), actions)
    for a, b in zip(control_events, dearer_events, strict=True):
        assert {k: v for k, v in a.items() if k != "price"} == {
            k: v for k, v in b.items() if k != "price"
        }
        assert (a["price"] is None) == (b["price"] is None)
        if a["price"] is not None:
            assert b["price"] == round(a["price"] * 1.1, 2)
    assert control_pages[0] == dearer_pages[0]  # the home page shows no prices
    assert "$88.00" in dearer_pages[2] and "$80.00" in control_pages[2]
    short = _store(StoreVariant(page_size=1))
    assert short.search_results("running") == _store().search_results("running")[:1]
    cheap = _store(StoreVariant(ranking="price_low_to_high")).search_results("running")
    assert sorted(cheap) == sorted(_store().search_results("running"))
    assert cheap == ["s1-p5", "s1-p3", "s1-p1"]


@pytest.mark.parametrize(
    "variant",
    [
        StoreVariant("dearer", price_multiplier=1.1),
        StoreVariant("short", page_size=1),
        StoreVariant("cheap_first", ranking="price_low_to_high"),
    ],
)
def test_a_derived_variant_store_is_a_store_built_with_the_variant(variant: StoreVariant):
    actions = [
        {"action": "search", "query": "running"},
        {"action": "view", "product": "p3"},
        {"action": "add_to_cart", "product": "p3"},
        {"action": "open", "collection": "c1"},
    ]
    control = _store()
    control.search_results("running")  # a memoised control search must not leak into the arm
    derived = control.with_variant(variant)
    assert derived.variant == variant and control.variant == StoreVariant()
    assert _walk(derived, actions) == _walk(_store(variant), actions)
    assert _walk(control, actions) == _walk(_store(), actions)


def test_observations_respect_the_token_cap():
    store = _store(cap=40)
    visit, _ = store.start()
    page = store.step(visit, {"action": "search", "query": "running"}).observation
    assert approx_token_count(page) <= 40
    assert "more not shown" in page
    page = store.step(visit, {"action": "view", "product": "p1"}).observation
    assert approx_token_count(page) <= 40


def test_the_published_schema_agrees_with_the_parser():
    good = [
        {"action": "search", "query": "red shoes"},
        {"action": "view", "product": "p1", "reason": "looks good"},
        {"action": "end"},
    ]
    bad = [
        {"action": "search"},
        {"action": "end", "product": "p1"},
        {"action": "jump"},
        {"action": "view", "product": ""},
        {"action": "search", "query": "x" * 81},
        ["search"],
    ]
    for value in good:
        jsonschema.validate(value, ACTION_SCHEMA)
        assert Action.from_dict(value).to_dict(value.get("reason")) == value
        assert Action.parse(json.dumps(value)).type == value["action"]
    for value in bad:
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(value, ACTION_SCHEMA)
        with pytest.raises(InvalidAction):
            Action.from_dict(value)


def test_many_visits_step_independently_through_one_store():
    store = build_stores(PRODUCTS, COLLECTIONS, MEMBERS)["s1"]
    visits = [store.start()[0] for _ in range(3)]
    store.step(visits[0], Action("add_to_cart", "p1"))
    store.step(visits[1], Action("search", "rain"))
    assert visits[0].cart == {"s1-p1": 1} and visits[1].cart == {} and visits[2].cart == {}
    assert [v.page.kind for v in visits] == ["cart", "search", "home"]
    with pytest.raises(ValueError, match="no products for shops"):
        build_stores(PRODUCTS, COLLECTIONS, MEMBERS, shops=["s2"])
