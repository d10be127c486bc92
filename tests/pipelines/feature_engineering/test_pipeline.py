"""The feature_engineering pipeline end to end on a small generated sample, run by Kedro's
SequentialRunner on an in-memory catalog (synthetic data -> data_enrichment -> features)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from persona_shoppers.clickstream.buyers import BEHAVIOURAL_FEATURES
from persona_shoppers.features.embeddings import buyer_channel_means
from persona_shoppers.features.transform import BuyerFeatureTransformer
from persona_shoppers.pipelines import data_enrichment, feature_engineering
from persona_shoppers.synthetic import SyntheticConfig, generate

from .._kedro import KeptDataset, conf_params, param_datasets

PCA_DIM = 16
OUTPUTS = (
    "product_embeddings",
    "buyer_splits",
    "feature_transformer",
    "buyer_features",
    "held_out_events",
)

pytestmark = pytest.mark.integration  # runs the real sentence embedding model


@pytest.fixture(scope="module")
def enriched():
    data = generate(
        SyntheticConfig(
            n_shops=3, n_eval_shops=1, products_per_shop=60, buyers_per_shop=400, seed=3
        ),
        progress=False,
    )
    catalog = DataCatalog(
        {
            "raw_events": MemoryDataset(data.events),
            "raw_products": MemoryDataset(data.products),
            "raw_collections": MemoryDataset(data.collections),
            **param_datasets(data_enrichment=conf_params("data_enrichment")),
            "enriched_events": KeptDataset(),
            "enriched_sessions": KeptDataset(),
            "buyers": KeptDataset(),
        }
    )
    SequentialRunner().run(data_enrichment.create_pipeline(), catalog)
    eval_shops = [s["shop_id"] for s in data.planted_truth["shops"] if s["role"] == "eval"]
    return {
        "raw_products": data.products,
        "buyers": catalog.load("buyers"),
        "enriched_events": catalog.load("enriched_events"),
        "enriched_sessions": catalog.load("enriched_sessions"),
        "eval_shops": eval_shops,
    }


@pytest.fixture(scope="module")
def params(enriched, tmp_path_factory):
    values = conf_params("feature_engineering")
    values.update(
        eval_shops=enriched["eval_shops"],
        embedding_pca_dim=PCA_DIM,
        embedding_cache_dir=str(tmp_path_factory.mktemp("embedding_cache")),
    )
    return values


@pytest.fixture(scope="module")
def outputs(enriched, params):
    catalog = DataCatalog(
        {
            "raw_products": MemoryDataset(enriched["raw_products"]),
            "buyers": MemoryDataset(enriched["buyers"]),
            "enriched_events": MemoryDataset(enriched["enriched_events"]),
            "enriched_sessions": MemoryDataset(enriched["enriched_sessions"]),
            **param_datasets(feature_engineering=params),
            **{name: KeptDataset() for name in OUTPUTS},
        }
    )
    returned = SequentialRunner().run(feature_engineering.create_pipeline(), catalog)
    assert set(returned) == {"buyer_features", "held_out_events"}
    return {name: catalog.load(name) for name in OUTPUTS}


def _feature_columns() -> list[str]:
    columns = [f"x_{n}" for n in BEHAVIOURAL_FEATURES]
    for channel in ("viewed", "carted", "purchased"):
        columns += [f"{channel}_emb_{i:03d}" for i in range(PCA_DIM)]
    return columns + ["has_viewed", "has_carted", "has_purchased"]


def test_one_row_per_buyer_with_the_feature_columns(enriched, outputs):
    features = outputs["buyer_features"]
    buyers = enriched["buyers"]
    assert len(features) == len(buyers)
    assert not features.duplicated(["shop_id", "buyer_id"]).any()
    assert set(zip(features["shop_id"], features["buyer_id"], strict=True)) == set(
        zip(buyers["shop_id"], buyers["buyer_id"], strict=True)
    )
    feature_columns = _feature_columns()
    assert len(feature_columns) == 16 + 3 * 16 + 3
    meta = ["shop_id", "buyer_id", "stratum", "shop_role", "split", "signature"]
    meta += ["engagement_bin", "exploration_bin", "purchase_bin", "train_row", "positives"]
    assert features.columns.tolist() == meta + feature_columns
    matrix = features[feature_columns].to_numpy()
    assert matrix.dtype == np.float32 and np.isfinite(matrix).all()
    assert set(np.unique(matrix[:, -3:])) <= {0.0, 1.0}


def test_splits_and_shop_roles(enriched, outputs):
    features = outputs["buyer_features"]
    assert set(features["split"]) == {"train", "val", "unsampled", "eval"}
    is_eval = features["shop_id"].isin(enriched["eval_shops"])
    assert (features.loc[is_eval, "split"] == "eval").all()
    assert (features.loc[is_eval, "shop_role"] == "eval").all()
    assert (features.loc[~is_eval, "shop_role"] == "train").all()
    sampled = features[features["split"].isin(["train", "val"])]
    assert (sampled["stratum"] != "E").all()
    share = (sampled["split"] == "val").groupby(sampled["shop_id"]).mean()
    assert ((share > 0.12) & (share < 0.18)).all()
    splits = outputs["buyer_splits"]
    merged = features.merge(splits, on=["shop_id", "buyer_id"], suffixes=("", "_s"))
    assert len(merged) == len(features) and (merged["split"] == merged["split_s"]).all()


def test_the_held_out_events_are_every_event_of_the_eval_shops(enriched, outputs):
    events = enriched["enriched_events"]
    held_out = outputs["held_out_events"]
    assert held_out.equals(events.filter(pl.col("shop_id").is_in(enriched["eval_shops"])))
    assert 0 < len(held_out) < len(events)


def test_positives_and_train_rows(outputs):
    features = outputs["buyer_features"]
    train = features[features["split"] == "train"]
    assert train["train_row"].tolist() == list(range(len(train)))
    assert (features.loc[features["split"] != "train", "train_row"] == -1).all()
    assert (features.loc[features["split"] != "train", "positives"].map(len) == 0).all()
    signature = train["signature"].to_numpy()
    for row, positives in zip(train["train_row"], train["positives"], strict=True):
        assert len(positives) == 3 and row not in positives
        assert (signature[list(positives)] == signature[row]).all()


def test_transformer_and_product_embeddings(enriched, outputs):
    transformer = outputs["feature_transformer"]
    assert isinstance(transformer, BuyerFeatureTransformer)
    assert transformer.layout.dim == 16 + 3 * PCA_DIM + 3
    assert transformer.aux_edges["purchase"] == [1.5, 4.5]
    products = outputs["product_embeddings"]
    assert len(products) == len(enriched["raw_products"])
    assert len(products["embedding"].iloc[0]) == 384
    # The transformer was fitted on the training split: robust z medians are 0 there.
    features = outputs["buyer_features"]
    train = features[features["split"] == "train"]
    scalars = train[[f"x_{n}" for n in BEHAVIOURAL_FEATURES]].to_numpy()
    np.testing.assert_allclose(np.median(scalars, axis=0), 0.0, atol=1e-5)


def test_a_new_buyer_in_one_pass_matches_its_row(enriched, outputs):
    features = outputs["buyer_features"]
    transformer = outputs["feature_transformer"]
    buyers = enriched["buyers"]
    row = features[features["split"] == "eval"].iloc[0]
    one = buyers[(buyers["shop_id"] == row["shop_id"]) & (buyers["buyer_id"] == row["buyer_id"])]
    vector = transformer.transform(
        one, buyer_channel_means(enriched["enriched_sessions"], one, outputs["product_embeddings"])
    )
    assert len(one) == 1
    expected = row[_feature_columns()].to_numpy(dtype=np.float32)
    # float32 products: one row and a batch may round differently in the last bits.
    np.testing.assert_allclose(vector[0], expected, rtol=1e-5, atol=1e-5)
