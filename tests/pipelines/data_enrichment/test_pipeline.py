from datetime import UTC, datetime, timedelta

import pandas as pd
import polars as pl
import pytest
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from persona_shoppers.clickstream import BEHAVIOURAL_FEATURES, SESSION_COLUMNS
from persona_shoppers.pipelines.data_enrichment import create_pipeline

from ...clickstream._frames import collections, products, raw_events
from .._kedro import KeptDataset, conf_params, param_datasets

T0 = datetime(2026, 3, 14, 10, tzinfo=UTC)


def _raw():
    rows = []
    for b, buyer in enumerate(["b1", "b2", "b3"]):
        for i, kind in enumerate(["page_view", "product_view", "add_to_cart", "purchase"][: b + 2]):
            row = {
                "shop_id": "s1",
                "buyer_id": buyer,
                "event_type": kind,
                "ts": (T0 + timedelta(minutes=10 * i + 100 * b)).isoformat(),
            }
            if kind != "page_view":
                row["product_id"] = "p1"
            rows.append(row)
    rows.append(
        {
            "shop_id": "s1",
            "buyer_id": "b1",
            "event_type": "page_view",
            "ts": (T0 + timedelta(hours=5)).isoformat(),
        }
    )
    rows.append({"shop_id": None, "buyer_id": "b9", "event_type": "page_view", "ts": "x"})
    rows.append(dict(rows[0]))  # duplicate
    return raw_events(rows)


@pytest.fixture
def params():
    return conf_params("data_enrichment")


def test_pipeline_runs_end_to_end(params):
    raw = _raw()
    catalog = DataCatalog(
        {
            "raw_events": MemoryDataset(raw),
            "raw_products": MemoryDataset(products()),
            "raw_collections": MemoryDataset(collections()),
            **param_datasets(data_enrichment=params),
            **{
                name: KeptDataset()
                for name in (
                    "event_quarantine",
                    "enriched_events",
                    "enriched_sessions",
                    "buyers",
                    "buyer_histories",
                )
            },
        }
    )
    SequentialRunner().run(create_pipeline(), catalog)

    quarantine = catalog.load("event_quarantine")
    events = catalog.load("enriched_events")
    assert isinstance(events, pl.DataFrame) and isinstance(quarantine, pl.DataFrame)
    assert events.height + quarantine.height == raw.height
    assert sorted([*events["source_row"], *quarantine["source_row"]]) == list(range(raw.height))
    assert quarantine["reason"].to_list() == ["missing_shop_id", "duplicate"]
    assert events["session_id"].null_count() == 0
    assert {"price_from_catalog", "title", "category", "brand", "collection_title"} <= set(
        events.columns
    )

    sessions = catalog.load("enriched_sessions")
    assert sessions.columns == list(SESSION_COLUMNS)
    assert sessions.select("buyer_id", "session_id").rows() == [
        ("b1", "b1-s1"),
        ("b1", "b1-s2"),
        ("b2", "b2-s1"),
        ("b3", "b3-s1"),
    ]

    buyers = catalog.load("buyers")
    assert isinstance(buyers, pd.DataFrame)
    assert list(buyers["stratum"]) == ["D", "C", "A"]
    assert set(BEHAVIOURAL_FEATURES) <= set(buyers.columns)
    assert buyers.loc[0, "n_sessions"] == 2

    histories = catalog.load("buyer_histories")
    assert isinstance(histories, pd.DataFrame)
    assert list(histories.columns[:3]) == ["shop_id", "buyer_id", "history_text"]
    assert histories.loc[2, "history_text"].endswith(
        "added to cart Trail Runner; purchased Trail Runner"
    )


def test_node_names():
    names = {n.name for n in create_pipeline().nodes}
    assert names == {
        "validate_events",
        "sessionise_events",
        "build_sessions",
        "build_buyers",
        "build_histories",
    }
