"""Out-of-core engine of the clickstream library: logs larger than memory on one machine.

A lazy scan of the raw log (``kedro run --env streaming``) is split, in one streaming pass,
into buckets by a hash of ``buyer_id``, so every buyer's events sit in one bucket; each later
step runs the polars function of the same name on one bucket at a time, so memory follows the
bucket, not the log. The functions take and return :class:`BuyerBuckets` (parquet files in a
spill folder under the system's temporary directory, removed once unused) with the arguments
of the polars functions; ``build_buyers`` gives one polars table, ``build_histories`` stays in
buckets (its text is about the log's size). Same rows as the in-memory engine
(tests/clickstream/test_engine_equality.py).

See docs/scaling.md, "Logs larger than memory".
"""

from __future__ import annotations

import atexit
import logging
import math
import shutil
import tempfile
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pandas as pd
import polars as pl
from tqdm.auto import tqdm

from persona_shoppers.clickstream import buyers, history, sessions, validation
from persona_shoppers.clickstream.ordering import sort_events
from persona_shoppers.clickstream.tables import in_engine_order

logger = logging.getLogger(__name__)

# The bucket of an event: hash(buyer_id, seed) modulo the number of buckets.
BUCKET_SEED = 0
_BUCKET = "_bucket"
# Spilled parts are written for speed, not size (they live for one run).
_SPILL_COMPRESSION = "lz4"
_LIBRARY_LOGGER = "persona_shoppers.clickstream"


@dataclass(frozen=True)
class BuyerBuckets:
    """A table split by buyer: each path (a parquet file, or a folder of them) holds every row
    of the buyers hashed to its bucket. Read one bucket at a time, or scanned lazily."""

    paths: tuple[Path, ...]

    def __len__(self) -> int:
        return len(self.paths)

    def __iter__(self) -> Iterator[pl.DataFrame]:
        for path in self.paths:
            yield pl.read_parquet(path)

    def scan(self) -> pl.LazyFrame:
        """All buckets as one lazy scan."""
        return pl.scan_parquet(list(self.paths))

    def collect(self) -> pl.DataFrame:
        """All rows in memory, in the polars engine's row order."""
        return in_engine_order(self.scan().collect(engine="streaming"))

    # An immutable handle on files: a copy (Kedro's MemoryDataset deep-copies what it holds)
    # is the same handle, so the spilled files stay as long as any holder needs them.
    def __copy__(self) -> BuyerBuckets:
        return self

    def __deepcopy__(self, memo: dict) -> BuyerBuckets:
        return self


_spill_root: Path | None = None


def spill_folder(name: str) -> Path:
    """A new empty folder for one step's parts, under this process's spill root (in the
    system's temporary directory, ``TMPDIR``; removed at exit)."""
    global _spill_root
    if _spill_root is None:
        _spill_root = Path(tempfile.mkdtemp(prefix="persona-shoppers-buckets-"))
        atexit.register(shutil.rmtree, _spill_root, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"{name}-", dir=_spill_root))


@contextmanager
def _library_quiet() -> Iterator[None]:
    """The polars functions' per-call log lines muted (they would log once per bucket); the
    streaming functions log the totals."""
    library = logging.getLogger(_LIBRARY_LOGGER)
    level = library.level
    library.setLevel(logging.ERROR)
    try:
        yield
    finally:
        library.setLevel(level)


def _spilled(paths: Iterable[Path], folder: Path) -> BuyerBuckets:
    """Buckets over spilled parts; their folder is removed once nothing refers to them (Kedro
    releases a hand-off after its last reader, or saves it to a dataset of its own)."""
    buckets = BuyerBuckets(tuple(paths))
    weakref.finalize(buckets, shutil.rmtree, folder, ignore_errors=True)
    return buckets


def _write_part(frame: pl.DataFrame, folder: Path, number: int) -> Path:
    path = folder / f"part-{number:05d}.parquet"
    frame.write_parquet(path, compression=_SPILL_COMPRESSION)
    return path


def _write_parts(frames: Iterable[pl.DataFrame], folder: Path) -> BuyerBuckets:
    return _spilled(
        (_write_part(frame, folder, number) for number, frame in enumerate(frames)), folder
    )


def _progress(buckets: BuyerBuckets, step: str) -> Iterator[pl.DataFrame]:
    return iter(tqdm(buckets, desc=f"{step}: buckets", unit="bucket", total=len(buckets)))


def map_buckets(
    buckets: BuyerBuckets, step: str, function: Callable[[pl.DataFrame], pl.DataFrame]
) -> BuyerBuckets:
    """``function`` applied to each bucket, its results spilled as the buckets of ``step``."""
    with _library_quiet():
        return _write_parts(map(function, _progress(buckets, step)), spill_folder(step))


def split_by_buyer(raw: pl.LazyFrame, rows_per_bucket: int) -> BuyerBuckets:
    """``raw`` (numbered with ``source_row``) split into buckets of about ``rows_per_bucket``
    rows, in one streaming pass (an empty log gives one empty bucket)."""
    if rows_per_bucket < 1:
        raise ValueError(
            f"rows_per_bucket must be a positive number of rows, got {rows_per_bucket}"
        )
    n_rows = raw.select(pl.len()).collect(engine="streaming").item()
    n_buckets = max(1, math.ceil(n_rows / rows_per_bucket))
    folder = spill_folder("raw_events")
    if n_rows == 0:
        return _write_parts([raw.collect()], folder)
    bucket = (pl.col("buyer_id").hash(seed=BUCKET_SEED) % n_buckets).alias(_BUCKET)
    logger.info("raw_events: %d rows split by buyer into %d buckets", n_rows, n_buckets)
    raw.with_columns(bucket).sink_parquet(
        pl.PartitionBy(folder, key=_BUCKET, include_key=False),
        compression=_SPILL_COMPRESSION,
        mkdir=True,
    )
    return _spilled(sorted(path for path in folder.iterdir() if path.is_dir()), folder)


def validate_events(
    events: pl.LazyFrame,
    products: pl.DataFrame | pd.DataFrame,
    collections: pl.DataFrame | pd.DataFrame,
    *,
    product_required_for: Iterable[str] = validation.PRODUCT_EVENT_TYPES,
    price_required_for: Iterable[str] = validation.PRICE_EVENT_TYPES,
    rows_per_bucket: int,
) -> validation.ValidationResult:
    """:func:`.validation.validate_events` of a lazy scan, bucket by bucket: (accepted,
    quarantine) as :class:`BuyerBuckets`. ``source_row`` counts rows of the whole log.

    Raises:
        SchemaError: the log's schema breaks the contract (before any row is read).
    """
    raw = split_by_buyer(validation.number_rows(validation.conform_events(events)), rows_per_bucket)
    catalog, directory = validation.catalog_joins(products, collections)
    accepted_folder, quarantine_folder = spill_folder("accepted"), spill_folder("quarantine")
    accepted, quarantine, n_raw, by_reason = [], [], 0, {}
    with _library_quiet():
        for number, frame in enumerate(_progress(raw, "validate_events")):
            result = validation.validate_numbered(
                frame,
                catalog,
                directory,
                product_required_for=product_required_for,
                price_required_for=price_required_for,
            )
            n_raw += frame.height
            for reason, count in validation.reason_counts(result.quarantine).items():
                by_reason[reason] = by_reason.get(reason, 0) + count
            accepted.append(_write_part(result.accepted, accepted_folder, number))
            quarantine.append(_write_part(result.quarantine, quarantine_folder, number))
    n_accepted = n_raw - sum(by_reason.values())
    validation.log_counts(n_raw, n_accepted, by_reason)
    return validation.ValidationResult(
        _spilled(accepted, accepted_folder), _spilled(quarantine, quarantine_folder)
    )


def sessionise(events: BuyerBuckets, session_timeout_minutes: float = 30.0) -> BuyerBuckets:
    """:func:`.sessions.sessionise` bucket by bucket: the enriched events."""
    result = map_buckets(
        events,
        "sessionise_events",
        lambda frame: sessions.sessionise(frame, session_timeout_minutes),
    )
    logger.info(
        "sessionised the events of %d buckets (timeout %s min)",
        len(result),
        session_timeout_minutes,
    )
    return result


def build_sessions(events: BuyerBuckets) -> BuyerBuckets:
    """:func:`.sessions.build_sessions` bucket by bucket: the enriched sessions."""
    return map_buckets(events, "build_sessions", sessions.build_sessions)


def build_buyers(
    events: BuyerBuckets,
    enriched_sessions: BuyerBuckets,
    intent_weights: dict[str, float] | None = None,
) -> pl.DataFrame:
    """:func:`.buyers.build_buyers` bucket by bucket (the buckets of ``events`` and of
    ``enriched_sessions`` hold the same buyers), as one table."""
    if len(events) != len(enriched_sessions):
        raise ValueError(
            f"enriched_events has {len(events)} buckets and enriched_sessions "
            f"{len(enriched_sessions)}: both must come from the same split of the log"
        )
    with _library_quiet():
        parts = [
            buyers.build_buyers(frame, session_table, intent_weights)
            for frame, session_table in zip(
                _progress(events, "build_buyers"), enriched_sessions, strict=True
            )
        ]
    table = in_engine_order(pl.concat(parts))
    buyers.log_strata(table)
    return table


def build_histories(
    events: BuyerBuckets,
    *,
    recent_days: float = history.RECENT_DAYS,
    reference_time: str | datetime | None = None,
    max_chars: int = history.MAX_CHARS,
) -> BuyerBuckets:
    """:func:`.history.build_histories` bucket by bucket, with the reference time of the whole
    log. Stays in buckets: up to ``max_chars`` of text per buyer is the log's size again."""
    latest = events.scan().select(pl.col("ts").max()).collect(engine="streaming").item()
    reference = history.reference_from_latest(latest, reference_time)
    result = map_buckets(
        events,
        "build_histories",
        lambda frame: history.build_histories(
            frame, recent_days=recent_days, reference_time=reference, max_chars=max_chars
        ),
    )
    n_histories, n_truncated = (
        result.scan().select(pl.len(), pl.col("truncated").sum()).collect().row(0)
    )
    history.log_histories(n_histories, int(n_truncated), reference, max_chars)
    return result


def events_in_shops(events: BuyerBuckets, shops: list[str]) -> pl.DataFrame:
    """The events of these shops, in EVENT_ORDER (:func:`..selection.events_in_shops`)."""
    return sort_events(
        events.scan().filter(pl.col("shop_id").is_in(shops)).collect(engine="streaming")
    )


def events_of(events: BuyerBuckets, keys: pl.DataFrame) -> pl.DataFrame:
    """The events matching a row of ``keys`` on its columns (:func:`..selection.events_of`)."""
    matched = events.scan().join(keys.lazy(), on=keys.columns, how="semi")
    return sort_events(matched.collect(engine="streaming"))
