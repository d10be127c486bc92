from datetime import UTC, datetime, timedelta

import polars as pl

from persona_shoppers.clickstream.ordering import EVENT_ORDER, is_event_ordered, sort_events


def _frame(n=500, seed=3):
    start = datetime(2026, 1, 1, tzinfo=UTC)
    return pl.DataFrame(
        {
            "shop_id": [f"s{(i * 7 + seed) % 3}" for i in range(n)],
            "buyer_id": [f"b{(i * 13 + seed) % 11}" for i in range(n)],
            "ts": [start + timedelta(minutes=(i * 37) % 50) for i in range(n)],  # many ties
            "source_row": list(range(n)),
        }
    )


def test_sort_events_matches_a_plain_sort():
    frame = _frame()
    expected = frame.sort(list(EVENT_ORDER))
    assert sort_events(frame).equals(expected)
    assert is_event_ordered(expected) and not is_event_ordered(frame)


def test_sorted_input_is_returned_untouched():
    frame = _frame().sort(list(EVENT_ORDER))
    assert sort_events(frame) is frame


def test_null_keys_are_not_ordered():
    frame = _frame(3).sort(list(EVENT_ORDER)).with_columns(pl.lit(None, pl.String).alias("shop_id"))
    assert not is_event_ordered(frame)
