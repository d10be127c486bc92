"""Product text embeddings with the real default model, the on-disk cache, channel means."""

from __future__ import annotations

import numpy as np
import pandas as pd
import polars as pl
import pytest

from persona_shoppers.features.embeddings import (
    DEFAULT_MODEL,
    TextEmbedder,
    buyer_channel_means,
    product_embedding_table,
    resolve_model_path,
)

TEXTS = ["Red pleated midi skirt", "Waterproof trail running shoes", "Red pleated midi skirt"]


@pytest.mark.integration
def test_default_model_embeds_and_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    embedder = TextEmbedder(DEFAULT_MODEL, cache_dir=str(tmp_path / "cache"), batch_size=8)
    vectors = embedder.embed(TEXTS)
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(vectors[0], vectors[2])
    # Different products are not the same vector.
    assert float(vectors[0] @ vectors[1]) < 0.9
    assert embedder._model is not None
    assert embedder.cache_file.exists() and embedder.cache_file.parent == tmp_path / "cache"
    cached = pl.read_parquet(embedder.cache_file)
    assert cached["text"].to_list() == TEXTS[:2]  # each distinct text stored once

    # A second embedder over the same cache answers from disk without loading the model.
    again = TextEmbedder(DEFAULT_MODEL, cache_dir=str(tmp_path / "cache"))
    from_cache = again.embed([TEXTS[1], TEXTS[0]])
    assert again._model is None
    np.testing.assert_array_equal(from_cache, vectors[[1, 0]])

    # A new text extends the cache; the known ones keep their vectors.
    more = again.embed([TEXTS[0], "Wool beanie"])
    assert again._model is not None
    np.testing.assert_array_equal(more[0], vectors[0])
    assert pl.read_parquet(again.cache_file)["text"].to_list() == [*TEXTS[:2], "Wool beanie"]


@pytest.mark.integration
def test_product_embedding_table_uses_titles_then_ids(tmp_path):
    products = pd.DataFrame(
        {"shop_id": ["s1", "s1"], "product_id": ["p1", "p2"], "title": ["Wool beanie", None]}
    )
    embedder = TextEmbedder(cache_dir=str(tmp_path))
    table = product_embedding_table(products, embedder)
    assert table.columns.tolist() == ["shop_id", "product_id", "embedding"]
    cached = pl.read_parquet(embedder.cache_file)["text"].to_list()
    assert cached == ["Wool beanie", "p2"]  # a missing title falls back to the product id
    assert len(table["embedding"].iloc[0]) == 384


def test_unknown_model_folder_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no_such_model"):
        resolve_model_path(str(tmp_path / "no_such_model"))
    assert resolve_model_path(str(tmp_path)) == str(tmp_path)


def test_no_cache_dir_means_no_cache_file():
    assert TextEmbedder(cache_dir=None).cache_file is None


# ----------------------------------------------------------------------------- channel means

PRODUCTS = pd.DataFrame(
    {
        "shop_id": ["s1", "s1", "s1", "s2"],
        "product_id": ["p1", "p2", "p3", "p1"],  # p1 of s2 is another product than p1 of s1
        "embedding": [
            np.array([1.0, 0.0, 0.0], dtype=np.float32),
            np.array([0.0, 1.0, 0.0], dtype=np.float32),
            np.array([0.0, 0.0, 1.0], dtype=np.float32),
            np.array([5.0, 5.0, 5.0], dtype=np.float32),
        ],
    }
)
LIST = pl.List(pl.String)
SESSIONS = pl.DataFrame(
    {
        "shop_id": ["s1", "s1", "s2", "s1"],
        "buyer_id": ["b1", "b1", "b2", "b9"],
        "session_id": ["x1", "x2", "x3", "x4"],
        "viewed_product_ids": [["p1", "p2"], ["p1", "unknown"], ["p1"], ["p3"]],
        "carted_product_ids": [["p1"], [], [], []],
        "purchased_product_ids": [[], None, [], []],
    },
    schema_overrides={f"{c}_product_ids": LIST for c in ("viewed", "carted", "purchased")},
)


def test_buyer_channel_means_by_hand():
    # Rows in this order: b2 of s2, b1 of s1, b3 of s1 (no sessions); b9 is not asked for.
    buyers = pd.DataFrame({"shop_id": ["s2", "s1", "s1"], "buyer_id": ["b2", "b1", "b3"]})
    out = buyer_channel_means(SESSIONS, buyers, PRODUCTS)
    assert list(out) == ["viewed", "carted", "purchased"]
    viewed, has_viewed = out["viewed"]
    # b1 viewed p1 twice and p2 once (the unknown product is skipped): (2 p1 + p2) / 3.
    np.testing.assert_allclose(viewed, [[5, 5, 5], [2 / 3, 1 / 3, 0], [0, 0, 0]], rtol=1e-6)
    assert has_viewed.tolist() == [True, True, False]
    carted, has_carted = out["carted"]
    np.testing.assert_allclose(carted, [[0, 0, 0], [1, 0, 0], [0, 0, 0]])
    assert has_carted.tolist() == [False, True, False]
    purchased, has_purchased = out["purchased"]
    assert not purchased.any() and has_purchased.tolist() == [False, False, False]
    assert viewed.dtype == np.float32 and viewed.shape == (3, 3)
