"""Nodes of the feature_engineering pipeline: the 403-d buyer vectors of SimPersona Table 5."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
import polars as pl

from persona_shoppers.clickstream.buyers import BEHAVIOURAL_FEATURES
from persona_shoppers.clickstream.engines import EventTable
from persona_shoppers.clickstream.selection import events_in_shops
from persona_shoppers.features.embeddings import (
    TextEmbedder,
    buyer_channel_means,
    product_embedding_table,
)
from persona_shoppers.features.labels import AUX_HEADS, funnel_signature
from persona_shoppers.features.positives import contrastive_positives
from persona_shoppers.features.sampling import assign_splits, shop_roles
from persona_shoppers.features.transform import BuyerFeatureTransformer

logger = logging.getLogger(__name__)

# Exploration and engagement features of the contrastive behavioural gate.
BEHAVIOUR_GATE_FEATURES = (
    "total_product_views",
    "search_sessions",
    "collection_sessions",
    "total_duration_s",
)


def embed_products(
    raw_products: pd.DataFrame,
    embedding_model: str,
    embedding_cache_dir: str | None,
    embedding_batch_size: int,
) -> pd.DataFrame:
    """Embed every product title once (cached on disk per model)."""
    embedder = TextEmbedder(embedding_model, embedding_cache_dir, embedding_batch_size)
    table = product_embedding_table(raw_products, embedder)
    logger.info("embedded %d products (%d-d)", len(table), len(table["embedding"].iloc[0]))
    return table


def split_buyers(
    buyers: pd.DataFrame,
    eval_shops: list[str] | None,
    n_eval_shops: int,
    sampling: dict[str, Any],
    seed: int,
) -> pd.DataFrame:
    """Shop roles (train / eval) and the stratified training sample with its validation split."""
    roles = shop_roles(buyers["shop_id"].unique().tolist(), eval_shops, n_eval_shops, seed)
    splits = assign_splits(
        buyers,
        roles,
        per_shop=sampling["per_shop"],
        per_stratum=sampling["per_stratum"],
        drop_strata=tuple(sampling["drop_strata"]),
        val_share=sampling["val_share"],
        seed=seed,
    )
    logger.info("buyer splits: %s", splits["split"].value_counts().to_dict())
    return splits


def select_held_out_events(enriched_events: EventTable, buyer_splits: pd.DataFrame) -> pl.DataFrame:
    """The held-out shops' events: all that persona mining of held-out buyers, the simulation
    and the alignment suite read of the log (filtered on Spark where the log is there)."""
    shops = buyer_splits.loc[buyer_splits["shop_role"] == "eval", "shop_id"].unique()
    events = events_in_shops(enriched_events, shops)
    logger.info(
        "held-out events: %d of %d shops, %d events",
        len(shops),
        buyer_splits["shop_id"].nunique(),
        len(events),
    )
    return events


def fit_feature_transformer(
    buyers: pd.DataFrame,
    buyer_splits: pd.DataFrame,
    enriched_sessions: pl.DataFrame,
    product_embeddings: pd.DataFrame,
    embedding_pca_dim: int,
    laplace_alpha: float,
    laplace_beta: float,
    logit_eps: float,
    seed: int,
) -> BuyerFeatureTransformer:
    """Fit scalers, channel z-scores, PCAs and auxiliary-bin edges on training rows only."""
    train_keys = buyer_splits.loc[buyer_splits["split"] == "train", ["shop_id", "buyer_id"]]
    train = buyers.merge(train_keys, on=["shop_id", "buyer_id"]).sort_values(
        ["shop_id", "buyer_id"]
    )
    transformer = BuyerFeatureTransformer(
        embedding_dim=embedding_pca_dim,
        laplace_alpha=laplace_alpha,
        laplace_beta=laplace_beta,
        logit_eps=logit_eps,
        seed=seed,
    )
    transformer.fit(train, buyer_channel_means(enriched_sessions, train, product_embeddings))
    logger.info("PCA explained variance per channel: %s", transformer.explained_variance)
    return transformer


def build_buyer_features(
    buyers: pd.DataFrame,
    buyer_splits: pd.DataFrame,
    enriched_sessions: pl.DataFrame,
    product_embeddings: pd.DataFrame,
    feature_transformer: BuyerFeatureTransformer,
    positives: dict[str, int],
) -> pd.DataFrame:
    """Every buyer's 403-d vector with ids, split, stratum, auxiliary bins, funnel signature and,
    for training rows, the row numbers of its contrastive positives among training rows."""
    frame = buyers.merge(
        buyer_splits[["shop_id", "buyer_id", "shop_role", "split"]], on=["shop_id", "buyer_id"]
    )
    frame = frame.sort_values(["shop_id", "buyer_id"], ignore_index=True)
    vectors = feature_transformer.transform(
        frame, buyer_channel_means(enriched_sessions, frame, product_embeddings)
    )
    labels = feature_transformer.labels(frame)
    out = frame[["shop_id", "buyer_id", "stratum", "shop_role", "split"]].copy()
    out["signature"] = funnel_signature(frame)
    for j, head in enumerate(AUX_HEADS):
        out[f"{head}_bin"] = labels[:, j]

    is_train = (out["split"] == "train").to_numpy()
    train_rows = np.flatnonzero(is_train)
    layout = feature_transformer.layout
    product_part = vectors[train_rows, layout.channel(0).start : layout.masks.start]
    behaviour = vectors[train_rows][
        :, [BEHAVIOURAL_FEATURES.index(c) for c in BEHAVIOUR_GATE_FEATURES]
    ]
    positive_rows = contrastive_positives(
        out["signature"].to_numpy()[train_rows],
        product_part,
        behaviour,
        top_m=positives["top_m"],
        top_f=positives["top_f"],
    )
    out["train_row"] = -1
    out.loc[is_train, "train_row"] = np.arange(len(train_rows))
    positive_lists = [[] for _ in range(len(out))]
    for row, pos in zip(train_rows, positive_rows, strict=True):
        positive_lists[row] = pos[pos >= 0].tolist()
    out["positives"] = positive_lists
    features = pd.DataFrame(vectors, columns=layout.column_names(list(BEHAVIOURAL_FEATURES)))
    logger.info("buyer_features: %d buyers x %d dims", len(out), vectors.shape[1])
    return pd.concat([out, features], axis=1)
