"""The one event order every table is built on: (shop_id, buyer_id, ts, source_row).

Sorting 10M rows by two text keys is the most expensive step of the pipeline, so it is done
once (in validation) and checked, not redone, afterwards: :func:`sort_events` first tests the
order with one linear pass and returns the frame untouched when it already holds. When it
must sort, the text keys are encoded to their lexical ranks (an ``Enum`` built from the
sorted distinct values) and the frame is sorted on integers, which gives exactly the order of
a sort on the text columns.
"""

from __future__ import annotations

from datetime import timedelta

import polars as pl

EVENT_ORDER: tuple[str, ...] = ("shop_id", "buyer_id", "ts", "source_row")
BUYER_KEYS: tuple[str, ...] = ("shop_id", "buyer_id")


def same_as_previous(*columns: str) -> pl.Expr:
    """True where every column equals the previous row's value (False on row 0 or a null)."""
    return pl.all_horizontal((pl.col(c) == pl.col(c).shift(1)).fill_null(False) for c in columns)


def _ordered_expr() -> pl.Expr:
    shop, buyer, ts, row = (pl.col(c) for c in EVENT_ORDER)

    def cmp(col: pl.Expr) -> tuple[pl.Expr, pl.Expr]:
        return col > col.shift(1), col == col.shift(1)

    (shop_gt, shop_eq), (buyer_gt, buyer_eq), (ts_gt, ts_eq) = cmp(shop), cmp(buyer), cmp(ts)
    ok = shop_gt | (shop_eq & (buyer_gt | (buyer_eq & (ts_gt | (ts_eq & (row > row.shift(1)))))))
    first = pl.int_range(pl.len()) == 0
    keys_present = pl.all_horizontal(pl.col(c).is_not_null() for c in EVENT_ORDER)
    return (keys_present & (first | ok.fill_null(False))).all()


def is_event_ordered(frame: pl.DataFrame) -> bool:
    """Whether ``frame`` is sorted by EVENT_ORDER with no null key (one linear pass)."""
    if frame.height <= 1:
        return True
    columns = list(EVENT_ORDER)
    # a cheap look at the head first: unsorted data usually shows it there
    if not frame.head(10_000).select(columns).select(_ordered_expr()).item():
        return False
    return bool(frame.select(columns).select(_ordered_expr()).item())


def lexical_codes(frame: pl.DataFrame, column: str) -> tuple[pl.Expr, int]:
    """Integer codes of a text column that sort like the text (nulls stay null), and their
    number."""
    values = frame.get_column(column).unique().drop_nulls().sort()
    return pl.col(column).cast(pl.Enum(values)).to_physical().cast(pl.UInt64), values.len()


def sort_events(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` sorted by EVENT_ORDER (null keys first); returned as is when already sorted.

    The keys are packed into one Int128 (buyer code, microseconds since the first event,
    source_row) when their bit widths fit, so the sort runs on one integer key, not three.
    """
    if is_event_ordered(frame):
        return frame
    shop_code, n_shops = lexical_codes(frame, "shop_id")
    buyer_code, n_buyers = lexical_codes(frame, "buyer_id")
    n_buyers = max(n_buyers, 1)
    frame = frame.with_columns((shop_code * n_buyers + buyer_code).alias("_order_key"))
    ts_min, ts_max = frame.get_column("ts").min(), frame.get_column("ts").max()
    key_bits = (max(n_shops, 1) * n_buyers).bit_length()
    row_bits = max(int(frame.get_column("source_row").max() or 0), 1).bit_length()
    ts_bits = 64
    if ts_min is not None and ts_max is not None:
        ts_bits = ((ts_max - ts_min) // timedelta(microseconds=1)).bit_length()
    if key_bits + ts_bits + row_bits <= 125 and max(ts_bits, row_bits) <= 62:
        packed = (
            pl.col("_order_key").cast(pl.Int128) * (1 << ts_bits)
            + (pl.col("ts") - pl.lit(ts_min)).dt.total_microseconds().cast(pl.Int128)
        ) * (1 << row_bits) + pl.col("source_row").cast(pl.Int128)
        return frame.with_columns(packed.alias("_order_key")).sort("_order_key").drop("_order_key")
    return frame.sort(["_order_key", "ts", "source_row"]).drop("_order_key")
