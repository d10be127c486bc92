"""Nodes of the synthetic_data pipeline."""

from __future__ import annotations

from typing import Any

import pandas as pd
import polars as pl

from persona_shoppers.synthetic import SyntheticConfig, generate


def generate_clickstream(
    params: dict[str, Any],
) -> tuple[pl.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """Generate events, products, collections, collection membership and the planted truth."""
    data = generate(SyntheticConfig.from_params(params))
    return (
        data.events,
        data.products,
        data.collections,
        data.collection_products,
        data.planted_truth,
    )
