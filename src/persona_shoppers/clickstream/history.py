"""Shopping histories as text, the input of PAARS persona mining (PAARS section 3): per
(shop_id, buyer_id) the recent days, one line each, then the older purchases, capped at
``max_chars``.

See docs/data_enrichment.md, "Outputs" (``buyer_histories``) and "Scale".
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl

from persona_shoppers.clickstream.ordering import same_as_previous, sort_events

logger = logging.getLogger(__name__)

# Defaults of the window and the cap (data_enrichment.history in conf/base sets them too).
RECENT_DAYS, MAX_CHARS = 182, 6000
TRUNCATION_MARKER = "(earlier activity omitted)"
OLDER_HEADER = "Older purchases:"
VERBS: dict[str, str] = {
    "collection_view": "browsed collection",
    "product_view": "viewed",
    "search": "searched",
    "add_to_cart": "added to cart",
    "remove_from_cart": "removed from cart",
    "checkout_start": "started checkout",
    "purchase": "purchased",
}
HISTORY_COLUMNS: tuple[str, ...] = (
    "shop_id",
    "buyer_id",
    "history_text",
    "n_days",
    "n_older_purchases",
    "truncated",
)
# The text of a verb where it starts a run ("viewed A, B"); checkout_start has no object.
RUN_HEADS: dict[str, str] = {
    kind: verb if kind == "checkout_start" else f"{verb} " for kind, verb in VERBS.items()
}
# Sections of a history, in text order.
MARKER_SECTION, RECENT_SECTION, HEADER_SECTION, OLDER_SECTION = 0, 1, 2, 3
# An over-long day keeps its "YYYY-MM-DD: " prefix, an ellipsis, then its latest actions.
DAY_PREFIX_CHARS, ELLIPSIS = 12, "…"
_KEYS = ["shop_id", "buyer_id"]


def history_budget(max_chars: int) -> tuple[int, int]:
    """(characters for the kept lines, longest kept line) of a history of ``max_chars``."""
    budget = max(max_chars - len(TRUNCATION_MARKER), DAY_PREFIX_CHARS + 2)
    return budget, budget - 1  # a kept line costs its length plus one newline


def history_arguments(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """The keyword arguments of :func:`build_histories` from the ``data_enrichment.history``
    parameters (``recent_days``, ``reference_time``, ``max_chars``; a missing one: its default)."""
    options = options or {}
    return {
        "recent_days": float(options.get("recent_days", RECENT_DAYS)),
        "reference_time": options.get("reference_time"),
        "max_chars": int(options.get("max_chars", MAX_CHARS)),
    }


def resolve_reference_time(events: pl.DataFrame, reference_time: str | datetime | None) -> datetime:
    """The history reference time: the given one (naive = UTC) or the latest event ts."""
    return reference_from_latest(events["ts"].max(), reference_time)


def reference_from_latest(
    latest: datetime | None, reference_time: str | datetime | None
) -> datetime:
    """:func:`resolve_reference_time` given the latest event ts (None: no events)."""
    if reference_time is None:
        if latest is None:
            return datetime.now(UTC)
        return latest if latest.tzinfo else latest.replace(tzinfo=UTC)
    if isinstance(reference_time, str):
        reference_time = datetime.fromisoformat(reference_time.strip().replace("Z", "+00:00"))
    if reference_time.tzinfo is None:
        return reference_time.replace(tzinfo=UTC)
    return reference_time.astimezone(UTC)


def _day_lines(events: pl.DataFrame, reference: datetime, recent_days: float) -> pl.DataFrame:
    """One row per (buyer, day) in that order (older days first): _buyer, keys, section, date,
    line.

    ``events`` are in EVENT_ORDER. Each event becomes a text fragment ("; viewed A" when it
    starts a run of one verb, ", B" when it continues one, nothing when it repeats the
    previous object), and a day's line is the join of its fragments: one group_by per day.
    """
    cutoff = reference - timedelta(days=recent_days)
    event_type = pl.col("event_type")
    obj = (
        pl.when(event_type == "search")
        .then(pl.concat_str(pl.lit('"'), pl.col("query"), pl.lit('"')))
        .when(event_type == "collection_view")
        .then(pl.coalesce("collection_title", "collection_id"))
        .when(event_type == "checkout_start")
        .then(pl.lit(None, dtype=pl.String))
        .otherwise(pl.coalesce("title", "product_id"))
    )
    needed = [
        *_KEYS,
        "ts",
        "event_type",
        "query",
        "title",
        "product_id",
        "collection_id",
        "collection_title",
    ]
    frame = (
        events.select(needed)
        .filter(
            (pl.col("ts") <= reference)
            & event_type.is_in(list(VERBS))
            & ((pl.col("ts") > cutoff) | (event_type == "purchase"))
        )
        .select(
            *_KEYS,
            pl.when(pl.col("ts") > cutoff)
            .then(RECENT_SECTION)
            .otherwise(OLDER_SECTION)
            .cast(pl.Int8)
            .alias("section"),
            pl.col("ts").dt.date().alias("date"),
            event_type.cast(pl.Enum(list(VERBS))).to_physical().alias("verb"),
            obj.alias("object"),
        )
    )
    new_buyer = ~same_as_previous(*_KEYS)
    new_day = new_buyer | ~same_as_previous("section", "date")
    new_run = pl.col("_new_day") | ~same_as_previous("verb")
    repeat = ~pl.col("_new_run") & pl.col("object").eq_missing(pl.col("object").shift(1))
    fragment = pl.concat_str(
        pl.when(pl.col("_new_day"))
        .then(pl.concat_str(pl.col("date").dt.to_string("%Y-%m-%d"), pl.lit(": ")))
        .when(pl.col("_new_run"))
        .then(pl.lit("; "))
        .otherwise(pl.lit(", ")),
        pl.when(pl.col("_new_run")).then(
            pl.lit(pl.Series(list(RUN_HEADS.values()), dtype=pl.String)).gather(pl.col("verb"))
        ),
        pl.col("object"),
        ignore_nulls=True,
    )
    frame = (
        frame.with_columns(new_buyer.alias("_new_buyer"), new_day.alias("_new_day"))
        .with_columns(new_run.alias("_new_run"))
        .filter(~repeat)
        .with_columns(
            pl.col("_new_buyer").cum_sum().alias("_buyer"),
            pl.col("_new_day").cum_sum().alias("_day").set_sorted(),
            fragment.alias("fragment"),
        )
    )
    # days are contiguous: their keys come from each day's first row and their text from one
    # order-keeping group_by on the sorted day number, so the two line up row by row
    days = frame.filter(pl.col("_new_day")).select("_buyer", *_KEYS, "section", "date")
    text = (
        frame.select("_day", "fragment")
        .group_by("_day", maintain_order=True)
        .agg("fragment")
        .select(pl.col("fragment").list.join("").alias("line"))
    )
    return days.hstack(text)


def build_histories(
    events: pl.DataFrame,
    *,
    recent_days: float = RECENT_DAYS,
    reference_time: str | datetime | None = None,
    max_chars: int = MAX_CHARS,
) -> pl.DataFrame:
    """Per (shop_id, buyer_id): history_text, n_days, n_older_purchases, truncated.

    ``events`` are enriched events (with title and collection_title). ``n_days`` counts the
    active days in the recent window and ``n_older_purchases`` the purchase events before
    it, both before any truncation. Every (shop, buyer) of ``events`` gets a row (an empty
    text when nothing is in scope). Sorted by shop_id, buyer_id.
    """
    events = sort_events(events)
    reference = resolve_reference_time(events, reference_time)
    cutoff = reference - timedelta(days=recent_days)
    budget, line_cap = history_budget(max_chars)
    lines = _day_lines(events, reference, recent_days)  # in (_buyer, date) order
    line = pl.col("line")
    lines = lines.with_columns(
        pl.when(line.str.len_chars() > line_cap)
        .then(  # keep the date and the latest actions of an over-long day
            pl.concat_str(
                line.str.slice(0, DAY_PREFIX_CHARS),
                pl.lit(ELLIPSIS),
                line.str.tail(line_cap - DAY_PREFIX_CHARS - len(ELLIPSIS)),
            )
        )
        .otherwise(line)
        .alias("line"),
    )
    # Lines are in (buyer, date) order. Priority: recent days newest first, then older
    # purchases newest first; the newest older line also pays for the header line.
    newest_in_section = (pl.int_range(pl.len()) == pl.len() - 1).over("_buyer", "section")
    newest_older = (pl.col("section") == OLDER_SECTION) & newest_in_section
    cost = (
        pl.col("line").str.len_chars()
        + 1
        + pl.when(newest_older).then(len(OLDER_HEADER) + 1).otherwise(0)
    )
    recent_cost = pl.when(pl.col("section") == RECENT_SECTION).then(pl.col("_cost")).otherwise(0)
    lines = (
        lines.with_columns(cost.alias("_cost"))
        .with_columns(
            pl.col("_cost").cum_sum(reverse=True).over("_buyer", "section").alias("_suffix"),
            recent_cost.sum().over("_buyer").alias("_recent_total"),
            (pl.col("_cost").sum().over("_buyer") - 1 <= max_chars).alias("_fits"),
        )
        .with_columns(
            pl.when(pl.col("section") == RECENT_SECTION)
            .then(pl.col("_suffix"))
            .otherwise(pl.col("_recent_total") + pl.col("_suffix"))
            .alias("_spent")
        )
    )
    kept = lines.filter(pl.col("_fits") | (pl.col("_spent") <= budget))
    per_buyer = lines.group_by("_buyer").agg(
        pl.col(*_KEYS).first(),
        (~pl.col("_fits").first()).alias("truncated"),
        pl.col("date")
        .filter(pl.col("section") == RECENT_SECTION)
        .n_unique()
        .cast(pl.Int64)
        .alias("n_days"),
    )
    extra = pl.concat(
        [
            per_buyer.filter(pl.col("truncated")).select(
                "_buyer",
                pl.lit(MARKER_SECTION, dtype=pl.Int8).alias("section"),
                pl.lit(TRUNCATION_MARKER).alias("line"),
            ),
            kept.filter(pl.col("section") == OLDER_SECTION)
            .select("_buyer")
            .unique()
            .select(
                "_buyer",
                pl.lit(HEADER_SECTION, dtype=pl.Int8).alias("section"),
                pl.lit(OLDER_HEADER).alias("line"),
            ),
        ]
    )
    texts = (
        pl.concat([kept.select("_buyer", "section", "date", "line"), extra], how="diagonal")
        .sort(["_buyer", "section", "date"], nulls_last=False)
        .group_by("_buyer", maintain_order=True)
        .agg("line")
        .select("_buyer", pl.col("line").list.join("\n").alias("history_text"))
    )
    n_older = (
        events.filter(
            (pl.col("event_type") == "purchase")
            & (pl.col("ts") <= cutoff)
            & (pl.col("ts") <= reference)
        )
        .group_by(_KEYS)
        .agg(pl.len().cast(pl.Int64).alias("n_older_purchases"))
    )
    all_buyers = events.select(_KEYS).filter(~same_as_previous(*_KEYS))
    histories = (
        all_buyers.join(
            per_buyer.join(texts, on="_buyer", how="left").drop("_buyer"),
            on=_KEYS,
            how="left",
            maintain_order="left",
        )
        .join(n_older, on=_KEYS, how="left", maintain_order="left")
        .with_columns(
            pl.col("history_text").fill_null(""),
            pl.col("n_days").fill_null(0),
            pl.col("n_older_purchases").fill_null(0),
            pl.col("truncated").fill_null(False),
        )
        .select(HISTORY_COLUMNS)
    )
    log_histories(histories.height, int(histories["truncated"].sum()), reference, max_chars)
    return histories


def log_histories(n_histories: int, n_truncated: int, reference: datetime, max_chars: int) -> None:
    """Log the number of histories, their reference time and how many were truncated."""
    logger.info(
        "built %d buyer histories (reference %s, %d truncated to %d chars)",
        n_histories,
        reference.isoformat(),
        n_truncated,
        max_chars,
    )
