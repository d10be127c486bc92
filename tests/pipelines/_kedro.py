"""Helpers the pipeline tests share: run a pipeline slice on an in-memory catalog."""

from __future__ import annotations

import copy
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import polars as pl
from kedro.io import MemoryDataset

from persona_shoppers.storefront import Store
from persona_shoppers.synthetic import SyntheticData

CONF = Path(__file__).resolve().parents[2] / "conf"


class KeptDataset(MemoryDataset):
    """A MemoryDataset the runner does not empty after its last consumer, so a test can read
    every output, intermediate ones included."""

    def _release(self) -> None:
        pass


@cache
def _base_parameters(env: str = "base") -> dict[str, Any]:
    """The parameters as Kedro resolves them in ``env`` (merged over conf/base)."""
    from kedro.config import OmegaConfigLoader

    from persona_shoppers.settings import CONFIG_LOADER_ARGS

    loader = OmegaConfigLoader(conf_source=str(CONF), env=env, **CONFIG_LOADER_ARGS)
    return loader["parameters"]


def conf_params(name: str, env: str = "base") -> dict:
    """The ``name`` block of the parameters as Kedro resolves them in ``env`` (``${globals:...}``
    included); a copy the caller may change."""
    return copy.deepcopy(_base_parameters(env)[name])


def param_datasets(**blocks: Any) -> dict[str, MemoryDataset]:
    """The ``params:`` datasets Kedro makes of top-level parameter blocks: ``params:<block>``
    and every nested entry (``params:<block>.<key>...``), so nodes find the narrow entries
    they take."""
    out: dict[str, MemoryDataset] = {}

    def add(name: str, value: Any) -> None:
        out[f"params:{name}"] = MemoryDataset(value)
        if isinstance(value, dict):
            for key, item in value.items():
                add(f"{name}.{key}", item)

    for name, value in blocks.items():
        add(name, value)
    return out


def storefronts(data: SyntheticData) -> dict[str, Store]:
    """The ``storefronts`` dataset of a generated sample, as trace_generation's node builds it
    with conf/base's storefront parameters."""
    from persona_shoppers.pipelines.trace_generation.nodes import build_storefronts

    return build_storefronts(
        data.products,
        data.collections,
        data.collection_products,
        conf_params("storefront")["max_observation_tokens"],
    )


def enriched_sample(**config) -> tuple[SyntheticData, dict[str, Any]]:
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
            **param_datasets(data_enrichment=conf_params("data_enrichment")),
            **{name: KeptDataset() for name in outputs},
        }
    )
    SequentialRunner().run(data_enrichment.create_pipeline(), catalog)
    return data, {name: catalog.load(name) for name in outputs}


def featured_sample(pca_dim: int, **config) -> tuple[SyntheticData, dict[str, Any]]:
    """:func:`enriched_sample` plus ``buyer_features``, made by feature_engineering's nodes
    from seeded random product embeddings instead of the sentence model (fast, no model);
    ``pca_dim`` dimensions per channel, the generator's own held-out shops."""
    from kedro.io import DataCatalog
    from kedro.runner import SequentialRunner

    from persona_shoppers.pipelines import feature_engineering

    data, enriched = enriched_sample(**config)
    vectors = np.random.default_rng(0).normal(size=(len(data.products), 4 * pca_dim))
    embeddings = data.products[["shop_id", "product_id"]].assign(
        embedding=list(vectors / np.linalg.norm(vectors, axis=1, keepdims=True))
    )
    params = conf_params("feature_engineering")
    shops = data.planted_truth["shops"]
    params["eval_shops"] = [s["shop_id"] for s in shops if s["role"] == "eval"]
    params["embedding_pca_dim"] = pca_dim
    catalog = DataCatalog(
        {
            "buyers": MemoryDataset(enriched["buyers"]),
            "enriched_sessions": MemoryDataset(enriched["enriched_sessions"]),
            "product_embeddings": MemoryDataset(embeddings),
            **param_datasets(feature_engineering=params),
            "buyer_features": KeptDataset(),
            "feature_transformer": KeptDataset(),
        }
    )
    nodes = ("split_buyers", "fit_feature_transformer", "build_buyer_features")
    SequentialRunner().run(feature_engineering.create_pipeline().only_nodes(*nodes), catalog)
    return data, {
        **enriched,
        "product_embeddings": embeddings,
        "buyer_features": catalog.load("buyer_features"),
        "feature_transformer": catalog.load("feature_transformer"),
    }


def token_assignments(buyers: pd.DataFrame, planted_truth: dict) -> pd.DataFrame:
    """persona_assignments as the VQ-VAE would give them: one token per (stratum, buyer id
    parity), so 10 tokens are in use, with each shop's role from the planted truth."""
    roles = {s["shop_id"]: s["role"] for s in planted_truth["shops"]}
    parity = buyers["buyer_id"].str[-1].astype(int) % 2
    return buyers[["shop_id", "buyer_id", "stratum"]].assign(
        shop_role=buyers["shop_id"].map(roles),
        token=buyers["stratum"].map("ABCDE".index) * 2 + parity,
    )


def agent_calibration_inputs(assignments: pd.DataFrame) -> dict[str, MemoryDataset]:
    """What the simulation's calibration node reads, small: ``sft_action_calibration`` with
    the buyers' targets, stage-2 trace sessions of four training-shop buyers to refit it on
    the agents' own steps, and ``params:sft.calibration.max_bias``."""
    from persona_shoppers.personas.token_format import persona_token

    buyers = assignments[assignments["shop_role"] == "train"].sort_values("buyer_id").head(4)
    traces = pd.DataFrame(
        {
            "split": "train",
            "session_id": [f"s{i}" for i in range(len(buyers))],
            "step": 0,
            "shop_id": buyers["shop_id"].to_numpy(),
            "goal": "You are here to buy running shoes.",
            "persona_token": [persona_token(int(t)) for t in buyers["token"]],
        }
    )
    calibration = {
        "type_bias": {"product|empty": {"view": 0.5}},
        "targets": {
            "home|empty": {"search": 0.6, "open": 0.3, "end": 0.1},
            "product|empty": {"view": 0.5, "add_to_cart": 0.3, "end": 0.2},
        },
    }
    return {
        "sft_action_calibration": MemoryDataset(calibration),
        "sft_traces_stage2": MemoryDataset(traces),
        **param_datasets(sft={"calibration": {"max_bias": 5.0}}),
    }


def text_personas(
    assignments: pd.DataFrame,
    n: int,
    events: pl.DataFrame | None = None,
    products: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """``text_personas`` of ``n`` held-out buyers, as persona_mining writes them (a fixed
    persona each, the buyer's token of ``assignments``). With ``events`` and ``products``: the
    buyers, cutoffs and leakage-free histories persona_mining's nodes choose; without: the
    first ``n``, no history."""
    from persona_shoppers.pipelines.persona_mining.nodes import (
        build_persona_inputs,
        sample_persona_buyers,
    )

    if events is None:
        held_out = assignments[assignments["shop_role"] == "eval"].head(n)
        chosen = held_out[["shop_id", "buyer_id"]].assign(history="")
    else:
        window_s = conf_params("alignment")["cases"]["window_s"]
        buyers = sample_persona_buyers(assignments, events, n, 0, window_s)
        history = conf_params("data_enrichment")["history"]
        inputs = build_persona_inputs(buyers, events, products, history, 100_000)
        chosen = inputs[["shop_id", "buyer_id", "history_until", "history", "evidence"]]
    tokens = assignments[["shop_id", "buyer_id", "token"]]
    return chosen.merge(tokens, on=["shop_id", "buyer_id"]).assign(
        status="ok",
        profile=[{"age_range": "25-34", "gender": "female", "reasoning": "x"}] * len(chosen),
        preferences=[{"price_sensitivity": "high", "interests": ["Apparel > Skirts"]}]
        * len(chosen),
    )
