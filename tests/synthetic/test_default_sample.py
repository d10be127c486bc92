"""The committed default sample is what the generator makes from the default parameters."""

from pathlib import Path

import pandas as pd
import polars as pl
import pytest
import yaml

from persona_shoppers.synthetic import SyntheticConfig, generate

ROOT = Path(__file__).resolve().parents[2]
RAW = ROOT / "data" / "01_raw"


@pytest.mark.integration
def test_committed_sample_is_reproduced_by_the_default_parameters():
    params = yaml.safe_load((ROOT / "conf/base/parameters_synthetic_data.yml").read_text())
    data = generate(SyntheticConfig.from_params(params["synthetic_data"]), progress=False)
    assert data.events.equals(pl.read_parquet(RAW / "events.parquet"))
    pd.testing.assert_frame_equal(data.products, pd.read_parquet(RAW / "products.parquet"))
    pd.testing.assert_frame_equal(data.collections, pd.read_parquet(RAW / "collections.parquet"))
    shops = pd.read_parquet(RAW / "collection_products.parquet")
    pd.testing.assert_frame_equal(data.collection_products, shops)
    assert (RAW / "events.parquet").stat().st_size < 15_000_000
