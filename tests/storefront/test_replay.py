"""Replaying human sessions in the store."""

from persona_shoppers.storefront import Action
from persona_shoppers.storefront.replay import replay_session

from .test_store import _store


def _events(*rows):
    keys = ("event_type", "product_id", "collection_id", "query")
    return [dict(zip(keys, (*row, *[None] * (4 - len(row))), strict=True)) for row in rows]


def test_a_purchase_session_replays_into_valid_steps():
    events = _events(
        ("page_view",),
        ("search", None, None, "running shoes"),
        ("product_view", "s1-p3"),
        ("add_to_cart", "s1-p3"),
        ("checkout_start",),
        ("purchase", "s1-p3"),
    )
    replay = replay_session(_store(), events)
    assert [s.action for s in replay.steps] == [
        Action("search", "running shoes"),
        Action("view", "p3"),
        Action("add_to_cart", "p3"),
        Action("checkout"),
        Action("purchase"),
    ]
    assert (replay.n_events, replay.n_replayed, replay.outcome) == (6, 6, "purchased")
    assert replay.steps[1].reason.startswith("This one on the page")  # p3 was in the results
    assert replay.steps[2].progress == (
        'searched "running shoes"',
        "viewed p3 (Velo Road Running Shoes, $80.00)",
    )
    assert replay.steps[0].observation.startswith("[home]")
    assert replay.steps[2].observation.startswith("[product] p3")


def test_a_browse_session_ends_and_direct_views_are_marked():
    replay = replay_session(_store(), _events(("page_view",), ("product_view", "s1-p4")))
    assert [s.action.type for s in replay.steps] == ["view", "end"]
    assert replay.steps[0].reason.startswith("Going straight")  # not listed on the home page
    assert replay.outcome == "ended"


def test_events_the_store_rejects_are_skipped_with_a_reason():
    events = _events(
        ("page_view",),
        ("product_view", "s1-p99"),  # not in the catalog
        ("remove_from_cart", "s1-p1"),  # not in the cart
        ("page_view",),  # a second page view has no store page
        ("add_to_cart", "s1-p1"),
        ("checkout_start",),
        ("purchase", "s1-p1"),
        ("purchase", "s1-p2"),  # not in the order
    )
    replay = replay_session(_store(), events)
    assert replay.n_events == 8 and replay.n_replayed == 4
    assert dict(replay.skipped) == {
        "product_view: unknown_product": 1,
        "remove_from_cart: not_in_cart": 1,
        "page_view: not the landing page": 1,
        "purchase: after the purchase": 1,
    }
    assert [s.action.type for s in replay.steps] == ["add_to_cart", "checkout", "purchase"]
    assert replay.steps[0].observation.startswith("[home]")  # rejected steps change nothing
