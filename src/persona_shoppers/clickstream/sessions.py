"""Sessionisation of accepted events (only where ``session_id`` is null) and the enriched
session table.

See docs/data_enrichment.md, "Session rule", "Outputs" (``enriched_sessions``) and "Scale".
"""

from __future__ import annotations

import logging
from datetime import timedelta

import polars as pl

from persona_shoppers.clickstream.ordering import same_as_previous, sort_events
from persona_shoppers.contract import EVENT_TYPES

logger = logging.getLogger(__name__)

SESSION_KEYS: tuple[str, ...] = ("shop_id", "buyer_id", "session_id")
# A generated session id: buyer_id + SESSION_ID_INFIX + the buyer's session number (from 1).
SESSION_ID_INFIX = "-s"

# Per event type: the count column of the session table.
COUNT_COLUMNS: dict[str, str] = {
    "page_view": "n_page_views",
    "collection_view": "n_collection_views",
    "product_view": "n_product_views",
    "search": "n_searches",
    "add_to_cart": "n_add_to_cart",
    "remove_from_cart": "n_remove_from_cart",
    "checkout_start": "n_checkout_starts",
    "purchase": "n_purchases",
}
# Boolean flags: column -> event type it marks.
FLAG_COLUMNS: dict[str, str] = {
    "has_product_view": "product_view",
    "has_search": "search",
    "has_collection_view": "collection_view",
    "has_add_to_cart": "add_to_cart",
    "has_checkout": "checkout_start",
    "has_purchase": "purchase",
}
# List columns in event order: column -> (event type, source column).
LIST_COLUMNS: dict[str, tuple[str, str]] = {
    "queries": ("search", "query"),
    "viewed_product_ids": ("product_view", "product_id"),
    "viewed_titles": ("product_view", "title"),
    "carted_product_ids": ("add_to_cart", "product_id"),
    "carted_titles": ("add_to_cart", "title"),
    "purchased_product_ids": ("purchase", "product_id"),
    "purchased_titles": ("purchase", "title"),
    "collection_titles": ("collection_view", "collection_title"),
}
SESSION_COLUMNS: tuple[str, ...] = (
    *SESSION_KEYS,
    "session_start",
    "session_end",
    "duration_s",
    "n_events",
    *COUNT_COLUMNS.values(),
    *FLAG_COLUMNS,
    "cart_value",
    "order_value",
    *LIST_COLUMNS,
)

assert set(COUNT_COLUMNS) == set(EVENT_TYPES)


def sessionise(events: pl.DataFrame, session_timeout_minutes: float = 30.0) -> pl.DataFrame:
    """Fill null ``session_id`` by the inactivity rule; return events sorted by EVENT_ORDER.

    ``events`` needs shop_id, buyer_id, session_id, ts (UTC datetime) and source_row; the
    result has the same columns and rows. Input order does not matter (already sorted input,
    as validation produces, is not sorted again).
    """
    timeout = timedelta(minutes=session_timeout_minutes)
    frame = sort_events(events)
    generate = pl.col("session_id").is_null()
    n_generated = int(frame.select(generate.sum()).item())
    if n_generated:
        ts = pl.col("ts")
        buyer_run = (~same_as_previous("shop_id", "buyer_id")).cum_sum()
        # previous event without a session id, whoever it belongs to
        previous_run = pl.when(generate).then(pl.col("_buyer_run")).shift(1).forward_fill()
        previous_ts = pl.when(generate).then(ts).shift(1).forward_fill()
        first_of_buyer = previous_run.is_null() | (previous_run != pl.col("_buyer_run"))
        frame = (
            frame.with_columns(buyer_run.alias("_buyer_run"))
            .with_columns((generate & first_of_buyer).alias("_first"))
            .with_columns(
                (generate & (pl.col("_first") | ((ts - previous_ts) >= timeout)))
                .cum_sum()
                .alias("_k")
            )
            .with_columns(
                pl.when(generate)
                .then(
                    pl.concat_str(
                        pl.col("buyer_id"),
                        pl.lit(SESSION_ID_INFIX),
                        (
                            pl.col("_k")
                            - pl.when(pl.col("_first")).then(pl.col("_k")).forward_fill()
                            + 1
                        ).cast(pl.String),
                    )
                )
                .otherwise(pl.col("session_id"))
                .alias("session_id")
            )
            .select(events.columns)
        )
    logger.info(
        "sessionised %d events: %d session ids generated (timeout %s min), %d kept",
        frame.height,
        n_generated,
        session_timeout_minutes,
        frame.height - n_generated,
    )
    return frame


def session_keys(events: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Integer session keys for events in EVENT_ORDER.

    Returns ``(events + _skey, keys)`` where ``keys`` maps ``_skey`` to (shop_id, buyer_id,
    session_id), one row per session, in (shop_id, buyer_id, session_start) order. Runs of
    equal keys are found with one linear pass; a session split into several runs (ids given
    in the data can interleave) is mapped to its first run.
    """
    frame = events.with_columns((~same_as_previous(*SESSION_KEYS)).alias("_new"))
    frame = frame.with_columns((pl.col("_new").cum_sum() - 1).cast(pl.Int64).alias("_run"))
    runs = (
        frame.select("_new", "_run", *SESSION_KEYS)
        .filter(pl.col("_new"))
        .drop("_new")
        .with_columns(pl.col("_run").min().over(list(SESSION_KEYS)).alias("_skey"))
    )
    if runs.select((pl.col("_skey") != pl.col("_run")).any()).item():
        frame = frame.with_columns(
            runs.get_column("_skey").gather(frame.get_column("_run")).alias("_skey")
        )
    else:  # every session is one run: the key is sorted, which speeds up the group_by
        frame = frame.with_columns(pl.col("_run").alias("_skey").set_sorted())
    keys = runs.filter(pl.col("_run") == pl.col("_skey")).select("_skey", *SESSION_KEYS)
    return frame.drop("_new", "_run"), keys


def build_sessions(events: pl.DataFrame) -> pl.DataFrame:
    """One row per (shop_id, buyer_id, session_id): counts, flags, values and lists.

    ``events`` are enriched events (sessionised, joined with titles). List columns follow
    event order (ts, then source_row). Sorted by shop_id, buyer_id, session_start.
    """
    needed = {*SESSION_KEYS, "ts", "source_row", "event_type", "price", "quantity"}
    needed |= {source for _, source in LIST_COLUMNS.values()}
    frame, keys = session_keys(
        sort_events(events).select([c for c in events.columns if c in needed])
    )
    code = {kind: i for i, kind in enumerate(EVENT_TYPES)}
    type_code = pl.col("event_type").cast(pl.Enum(EVENT_TYPES)).to_physical()
    line_value = pl.col("price").fill_null(0.0) * pl.col("quantity").fill_null(1)
    frame = frame.with_columns(type_code.alias("_type")).with_columns(
        *(
            (pl.col("_type") == code[kind]).cast(pl.Int64).alias(name)
            for kind, name in COUNT_COLUMNS.items()
        ),
        pl.when(pl.col("_type") == code["add_to_cart"])
        .then(line_value)
        .otherwise(0.0)
        .alias("cart_value"),
        pl.when(pl.col("_type") == code["purchase"])
        .then(line_value)
        .otherwise(0.0)
        .alias("order_value"),
    )
    sessions = frame.group_by("_skey").agg(
        pl.col("ts").min().alias("session_start"),
        pl.col("ts").max().alias("session_end"),
        pl.len().cast(pl.Int64).alias("n_events"),
        pl.col(*COUNT_COLUMNS.values(), "cart_value", "order_value").sum(),
    )
    for kind in dict.fromkeys(kind for kind, _ in LIST_COLUMNS.values()):
        columns = {name: source for name, (k, source) in LIST_COLUMNS.items() if k == kind}
        lists = (
            frame.select("_skey", "_type", *set(columns.values()))
            .filter(pl.col("_type") == code[kind])
            .group_by("_skey")
            .agg(pl.col(source).alias(name) for name, source in columns.items())
        )
        sessions = sessions.join(lists, on="_skey", how="left").with_columns(
            pl.col(name).fill_null(pl.lit([], dtype=pl.List(pl.String))) for name in columns
        )
    sessions = (
        sessions.join(keys, on="_skey", how="left")
        .with_columns(
            ((pl.col("session_end") - pl.col("session_start")).dt.total_microseconds() / 1e6).alias(
                "duration_s"
            ),
            *((pl.col(COUNT_COLUMNS[kind]) > 0).alias(flag) for flag, kind in FLAG_COLUMNS.items()),
        )
        .sort("_skey")
        .select(SESSION_COLUMNS)
    )
    logger.info("built %d sessions from %d events", sessions.height, events.height)
    return sessions
