"""Helpers the pipeline tests share: run a pipeline slice on an in-memory catalog."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from kedro.io import MemoryDataset

CONF = Path(__file__).resolve().parents[2] / "conf" / "base"


class KeptDataset(MemoryDataset):
    """A MemoryDataset the runner does not empty after its last consumer, so a test can read
    every output, intermediate ones included."""

    def _release(self) -> None:
        pass


def conf_params(name: str) -> dict:
    """The ``name`` block of conf/base/parameters_<name>.yml."""
    return yaml.safe_load((CONF / f"parameters_{name}.yml").read_text())[name]


def enriched_sample(**config) -> tuple[Any, dict[str, Any]]:
    """A small generated sample and its data_enrichment outputs (enriched_events,
    enriched_sessions, buyers, buyer_histories), run on an in-memory catalog."""
    from kedro.io import DataCatalog
    from kedro.runner import SequentialRunner

    from persona_shoppers.pipelines import data_enrichment
    from persona_shoppers.synthetic import SyntheticConfig, generate

    data = generate(SyntheticConfig(**config), progress=False)
    outputs = ("enriched_events", "enriched_sessions", "buyers", "buyer_histories")
    catalog = DataCatalog(
        {
            "raw_events": MemoryDataset(data.events),
            "raw_products": MemoryDataset(data.products),
            "raw_collections": MemoryDataset(data.collections),
            "params:data_enrichment": MemoryDataset(conf_params("data_enrichment")),
            **{name: KeptDataset() for name in outputs},
        }
    )
    SequentialRunner().run(data_enrichment.create_pipeline(), catalog)
    return data, {name: catalog.load(name) for name in outputs}


def token_assignments(buyers: pd.DataFrame, planted_truth: dict) -> pd.DataFrame:
    """persona_assignments as the VQ-VAE would give them: one token per (stratum, buyer id
    parity), so 10 tokens are in use, with each shop's role from the planted truth."""
    roles = {s["shop_id"]: s["role"] for s in planted_truth["shops"]}
    parity = buyers["buyer_id"].str[-1].astype(int) % 2
    return buyers[["shop_id", "buyer_id", "stratum"]].assign(
        shop_role=buyers["shop_id"].map(roles),
        token=buyers["stratum"].map("ABCDE".index) * 2 + parity,
    )


def text_personas(assignments: pd.DataFrame, n: int) -> pd.DataFrame:
    """``text_personas`` of the first ``n`` held-out buyers, as persona_mining writes them."""
    held_out = assignments[assignments["shop_role"] == "eval"].head(n)
    return held_out[["shop_id", "buyer_id"]].assign(
        status="ok",
        profile=[{"age_range": "25-34", "gender": "female", "reasoning": "x"}] * len(held_out),
        preferences=[{"price_sensitivity": "high", "interests": ["Apparel > Skirts"]}]
        * len(held_out),
    )
