from datetime import UTC, datetime

from persona_shoppers.clickstream.history import (
    TRUNCATION_MARKER,
    build_histories,
    history_arguments,
    resolve_reference_time,
)
from persona_shoppers.clickstream.sessions import sessionise
from persona_shoppers.clickstream.validation import validate_events

from ._frames import collections, products, raw_events


def _at(month, day, hour, minute=0, year=2026):
    return datetime(year, month, day, hour, minute, tzinfo=UTC).isoformat()


ROWS = [
    # older than 182 days before the reference (2026-03-15 12:00): only purchases are kept
    {"ts": _at(7, 2, 9, year=2025), "event_type": "product_view", "product_id": "p2"},
    {"ts": _at(7, 2, 9, 5, year=2025), "event_type": "purchase", "product_id": "p2", "price": 5.0},
    {"ts": _at(8, 1, 9, year=2025), "event_type": "purchase", "product_id": "p1", "price": 12.0},
    # recent days
    {"ts": _at(3, 13, 18), "event_type": "collection_view", "collection_id": "c1"},
    {"ts": _at(3, 13, 18, 1), "event_type": "product_view", "product_id": "p1"},
    {"ts": _at(3, 13, 18, 2), "event_type": "product_view", "product_id": "p1"},  # repeat
    {"ts": _at(3, 13, 18, 3), "event_type": "product_view", "product_id": "p2"},
    {"ts": _at(3, 13, 18, 4), "event_type": "page_view"},
    {"ts": _at(3, 14, 10), "event_type": "search", "query": "trail running shoes"},
    {"ts": _at(3, 14, 10, 1), "event_type": "product_view", "product_id": "p1"},
    {"ts": _at(3, 14, 10, 2), "event_type": "add_to_cart", "product_id": "p1"},
    {"ts": _at(3, 14, 10, 3), "event_type": "checkout_start"},
    {"ts": _at(3, 14, 10, 4), "event_type": "purchase", "product_id": "p1", "price": 12.0},
    {"ts": _at(3, 15, 12), "event_type": "page_view"},  # the latest event: the reference
]
RECENT_13 = "2026-03-13: browsed collection Trail; viewed Trail Runner, Rain Shell"
RECENT_14 = (
    '2026-03-14: searched "trail running shoes"; viewed Trail Runner; '
    "added to cart Trail Runner; started checkout; purchased Trail Runner"
)
OLDER = [
    "Older purchases:",
    "2025-07-02: purchased Rain Shell",
    "2025-08-01: purchased Trail Runner",
]


def _events(rows):
    raw = raw_events([{"shop_id": "s1", "buyer_id": "b1", **r} for r in rows])
    result = validate_events(raw, products(), collections())
    assert result.quarantine.height == 0
    return sessionise(result.accepted)


def test_history_text_recent_days_then_older_purchases():
    h = build_histories(_events(ROWS)).row(0, named=True)
    assert h["history_text"].split("\n") == [RECENT_13, RECENT_14, *OLDER]
    assert (h["n_days"], h["n_older_purchases"], h["truncated"]) == (2, 2, False)


def test_truncation_keeps_the_most_recent_days():
    full = "\n".join([RECENT_13, RECENT_14, *OLDER])
    cap = len(TRUNCATION_MARKER) + 1 + len(RECENT_14)  # room for the marker and one day
    h = build_histories(_events(ROWS), max_chars=cap).row(0, named=True)
    assert h["history_text"] == f"{TRUNCATION_MARKER}\n{RECENT_14}"
    assert h["truncated"] and len(h["history_text"]) <= cap < len(full)
    # a little more room: both recent days, older purchases cut
    cap = len(TRUNCATION_MARKER) + len(RECENT_13) + len(RECENT_14) + 2
    text = build_histories(_events(ROWS), max_chars=cap)["history_text"][0]
    assert text.split("\n") == [TRUNCATION_MARKER, RECENT_13, RECENT_14]
    # exactly the full length: nothing cut
    h = build_histories(_events(ROWS), max_chars=len(full)).row(0, named=True)
    assert h["history_text"] == full and not h["truncated"]


def test_no_history_is_longer_than_max_chars_the_older_header_counted():
    full = "\n".join([RECENT_13, RECENT_14, *OLDER])
    for cap in range(len(full) - 40, len(full) + 1):
        h = build_histories(_events(ROWS), max_chars=cap).row(0, named=True)
        assert len(h["history_text"]) <= cap, cap
        assert h["truncated"] == (cap < len(full)), cap


def test_an_overlong_day_keeps_its_date_and_latest_actions():
    text = build_histories(_events(ROWS), max_chars=len(TRUNCATION_MARKER) + 40)["history_text"][0]
    marker, line = text.split("\n")
    assert marker == TRUNCATION_MARKER and line.startswith("2026-03-14: …")
    assert line.endswith("purchased Trail Runner") and len(text) <= len(TRUNCATION_MARKER) + 40


def test_reference_time_and_window_are_parameters():
    events = _events(ROWS)
    h = build_histories(events, reference_time="2026-03-13T23:00:00Z", recent_days=1)
    assert h["history_text"][0].split("\n") == [RECENT_13, *OLDER]
    assert resolve_reference_time(events, None) == datetime(2026, 3, 15, 12, tzinfo=UTC)
    assert resolve_reference_time(events, "2026-03-01T00:00:00") == datetime(2026, 3, 1, tzinfo=UTC)


def test_every_buyer_gets_a_row():
    rows = [{"ts": _at(3, 15, 12), "event_type": "page_view", "buyer_id": "a"}, *ROWS]
    h = build_histories(_events(rows))
    assert h["buyer_id"].to_list() == ["a", "b1"]
    assert h["history_text"][0] == "" and h["n_days"][0] == 0


def test_history_arguments_fill_the_defaults_from_partial_parameters():
    assert history_arguments(None) == {
        "recent_days": 182.0,
        "reference_time": None,
        "max_chars": 6000,
    }
    assert history_arguments({"max_chars": "400", "recent_days": 3}) == {
        "recent_days": 3.0,
        "reference_time": None,
        "max_chars": 400,
    }
