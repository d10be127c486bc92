"""The streaming engine's parts: the split by buyer, buyer buckets as a Kedro dataset, and the
hook that collects them for in-memory nodes. Its rows against the in-memory engine's:
test_engine_equality.py."""

from __future__ import annotations

import copy
import gc

import polars as pl
import pytest
from kedro.io import DatasetError
from kedro.pipeline import node

from persona_shoppers.clickstream.engines import EVENT_SCALE_TAG, library, to_polars_table
from persona_shoppers.clickstream.streaming import BuyerBuckets, map_buckets, split_by_buyer
from persona_shoppers.datasets import BuyerBucketsDataset
from persona_shoppers.hooks import EventScaleHooks


def _log(n_buyers: int, events_per_buyer: int) -> pl.LazyFrame:
    return pl.LazyFrame(
        {
            "buyer_id": [f"b{b}" for b in range(n_buyers) for _ in range(events_per_buyer)],
            "value": list(range(n_buyers * events_per_buyer)),
        }
    )


def test_the_split_puts_every_buyer_in_one_bucket_and_keeps_every_row():
    buckets = split_by_buyer(_log(50, 4), rows_per_bucket=40)
    assert len(buckets) == 5  # ceil(200 / 40) hash buckets, none empty here
    parts = list(buckets)
    assert sum(part.height for part in parts) == 200
    owners = [set(part["buyer_id"]) for part in parts]
    assert sum(len(buyers) for buyers in owners) == 50  # no buyer in two buckets
    assert sorted(pl.concat(parts)["value"]) == list(range(200))


def test_an_empty_log_is_one_empty_bucket_and_a_bad_size_is_named():
    buckets = split_by_buyer(_log(0, 1), rows_per_bucket=10)
    assert len(buckets) == 1 and next(iter(buckets)).height == 0
    with pytest.raises(ValueError, match="rows_per_bucket must be a positive number"):
        split_by_buyer(_log(2, 2), rows_per_bucket=0)


def test_buckets_save_as_a_folder_of_parts_and_load_back(tmp_path):
    buckets = map_buckets(
        split_by_buyer(_log(30, 3), rows_per_bucket=20),
        "double",
        lambda f: f.with_columns(pl.col("value") * 2),
    )
    dataset = BuyerBucketsDataset(path=str(tmp_path / "table"))
    assert not dataset.exists()
    dataset.save(buckets)
    loaded = dataset.load()
    assert [p.name for p in loaded.paths] == [f"part-{i:05d}.parquet" for i in range(len(buckets))]
    assert loaded.collect().sort("value").equals(buckets.collect().sort("value"))
    dataset.save(BuyerBuckets(loaded.paths[:1]))  # saving over itself: the old parts replaced
    assert len(dataset.load()) == 1 and dataset.exists()


def test_the_dataset_names_what_is_wrong(tmp_path):
    dataset = BuyerBucketsDataset(path=str(tmp_path / "missing"))
    with pytest.raises(DatasetError, match="holds no part-\\*.parquet files"):
        dataset.load()
    with pytest.raises(
        DatasetError, match="saves the streaming engine's BuyerBuckets, got DataFrame"
    ):
        dataset.save(pl.DataFrame({"a": [1]}))


def test_lazy_scans_and_buckets_go_to_the_streaming_engine():
    buckets = split_by_buyer(_log(3, 2), rows_per_bucket=2)
    assert library(buckets, "sessions").__name__ == "persona_shoppers.clickstream.streaming"
    assert library(_log(1, 1), "validation").__name__ == "persona_shoppers.clickstream.streaming"
    assert library(pl.DataFrame(), "sessions").__name__ == "persona_shoppers.clickstream.sessions"
    assert to_polars_table(buckets).height == 6


def test_nodes_not_tagged_event_scale_get_buckets_collected_once():
    hook, buckets = EventScaleHooks(), split_by_buyer(_log(4, 2), rows_per_bucket=3)
    inputs = {"enriched_sessions": buckets, "params:x": 1}
    tagged = node(lambda e, x: e, ["enriched_sessions", "params:x"], "out", tags=EVENT_SCALE_TAG)
    in_memory = node(lambda e, x: e, ["enriched_sessions", "params:x"], "out2")
    assert hook.before_node_run(tagged, inputs) is None
    first = hook.before_node_run(in_memory, inputs)
    assert set(first) == {"enriched_sessions"} and first["enriched_sessions"].height == 8
    assert (
        hook.before_node_run(in_memory, inputs)["enriched_sessions"] is first["enriched_sessions"]
    )


def test_spilled_parts_are_removed_once_nothing_refers_to_them():
    buckets = split_by_buyer(_log(4, 2), rows_per_bucket=3)
    folder = buckets.paths[0].parent
    assert folder.is_dir()
    del buckets
    gc.collect()
    assert not folder.exists()


def test_a_copy_is_the_same_handle_so_the_parts_stay():
    buckets = split_by_buyer(_log(4, 2), rows_per_bucket=3)
    kept = copy.deepcopy(buckets)
    del buckets
    gc.collect()
    assert kept.collect().height == 8
