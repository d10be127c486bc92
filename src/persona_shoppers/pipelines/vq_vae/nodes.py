"""Nodes of the vq_vae pipeline: train the behaviour-aware VQ-VAE and the k-means baseline,
then compare their codebooks (SimPersona Table 1) and log everything to MLflow."""

from __future__ import annotations

import logging
from typing import Any

import lightning.pytorch as pl
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.cluster import MiniBatchKMeans
from sklearn.decomposition import PCA

from persona_shoppers.features.labels import AUX_HEADS
from persona_shoppers.features.layout import FeatureLayout, feature_matrix
from persona_shoppers.metrics.clustering import cluster_report
from persona_shoppers.synthetic import planted_buyer_types
from persona_shoppers.vq_vae.callbacks import EpochMetricHistory
from persona_shoppers.vq_vae.losses import compute_class_weights
from persona_shoppers.vq_vae.model import BehaviourVQVAE, BuyerVectorDataModule

logger = logging.getLogger(__name__)


def _labels(frame: pd.DataFrame) -> np.ndarray:
    return frame[[f"{h}_bin" for h in AUX_HEADS]].to_numpy(dtype=np.int64)


def _positives(train: pd.DataFrame, top_f: int) -> np.ndarray:
    out = np.full((len(train), top_f), -1, dtype=np.int64)
    for i, row in enumerate(train["positives"]):
        out[i, : len(row)] = row
    return out


def train_vq_vae(
    buyer_features: pd.DataFrame,
    seed: int,
    model_options: dict[str, Any],
    batch_size: int,
    trainer_options: dict[str, Any],
) -> tuple[BehaviourVQVAE, dict]:
    """Train on the training split, validate on the validation split; returns the model and its
    per-epoch metric history (every loss term, active codes, perplexity, dead-code resets).
    ``model_options`` are BehaviourVQVAE's arguments, ``trainer_options`` the Lightning
    Trainer's."""
    pl.seed_everything(seed, workers=True)
    train = buyer_features[buyer_features["split"] == "train"].sort_values("train_row")
    val = buyer_features[buyer_features["split"] == "val"]
    n_scalars = sum(c.startswith("x_") for c in buyer_features.columns)
    n_channels = sum(c.startswith("has_") for c in buyer_features.columns)
    embedding_dim = (feature_matrix(buyer_features).shape[1] - n_scalars - n_channels) // n_channels
    layout = FeatureLayout(n_scalars=n_scalars, embedding_dim=embedding_dim)
    train_labels = _labels(train)
    model = BehaviourVQVAE(
        n_scalars=layout.n_scalars,
        embedding_dim=layout.embedding_dim,
        class_weights=compute_class_weights(train_labels).tolist(),
        init_seed=seed,
        **model_options,
    )
    top_f = max(1, int(train["positives"].map(len).max()))
    data = BuyerVectorDataModule(
        train_x=feature_matrix(train),
        val_x=feature_matrix(val) if len(val) else None,
        train_labels=train_labels,
        val_labels=_labels(val) if len(val) else None,
        train_positives=_positives(train, top_f),
        batch_size=batch_size,
        seed=seed,
    )
    history = EpochMetricHistory()
    trainer = pl.Trainer(
        **trainer_options,
        callbacks=[history],
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    logger.info("training the VQ-VAE on %d buyers (%d validation)", len(train), len(val))
    trainer.fit(model, datamodule=data)
    return model.eval(), history.history


def fit_kmeans(
    buyer_features: pd.DataFrame, seed: int, kmeans_options: dict[str, Any]
) -> MiniBatchKMeans:
    """MiniBatchKMeans with K codes on the same training rows (the Table 1 baseline);
    ``kmeans_options`` are its arguments."""
    train = buyer_features[buyer_features["split"] == "train"]
    kmeans = MiniBatchKMeans(random_state=seed, **kmeans_options)
    return kmeans.fit(feature_matrix(train))


def _assignments(buyer_features: pd.DataFrame, vq_vae_model: BehaviourVQVAE, kmeans_model) -> dict:
    x = feature_matrix(buyer_features)
    return {
        "vq_vae": vq_vae_model.assign(x).numpy(),
        "kmeans": kmeans_model.predict(x),
    }


def evaluate_codebooks(
    buyer_features: pd.DataFrame,
    vq_vae_model: BehaviourVQVAE,
    kmeans_model: MiniBatchKMeans,
    planted_truth: dict,
    thresholds: dict[str, float],
    num_codes: int,
) -> tuple[dict, dict, dict]:
    """SimPersona Table 1 for both methods on training buyers, the same on held-out shops,
    agreement with the planted buyer types on held-out shops, and plots.

    ``thresholds`` are those Table 1 leaves open (docs/metrics.md); ``num_codes`` is K.
    Returns (clustering_metrics json, flat MLflow metrics, figures)."""
    codes = _assignments(buyer_features, vq_vae_model, kmeans_model)
    truth = None
    if planted_truth.get("buyer_type"):
        planted = planted_buyer_types(planted_truth)
        truth = (
            buyer_features[["shop_id", "buyer_id"]]
            .merge(planted, how="left")["buyer_type"]
            .to_numpy()
        )
    x = feature_matrix(buyer_features)
    report: dict[str, dict] = {}
    for scope, mask in (
        ("train", (buyer_features["split"] == "train").to_numpy()),
        (
            "eval",
            (buyer_features["split"] == "eval").to_numpy()
            & (buyer_features["stratum"] != "E").to_numpy(),
        ),
    ):
        for method, assigned in codes.items():
            report[f"{method}/{scope}"] = cluster_report(
                x[mask],
                assigned[mask],
                buyer_features["stratum"].to_numpy()[mask],
                {h: buyer_features[f"{h}_bin"].to_numpy()[mask] for h in AUX_HEADS},
                truth=truth[mask] if truth is not None and scope == "eval" else None,
                k=num_codes,
                mixing_min_share=thresholds["mixing_min_share"],
                mixing_min_size=thresholds["mixing_min_size"],
                incoherence_min_share=thresholds["incoherence_min_share"],
                incoherence_min_count=thresholds["incoherence_min_count"],
            )
    for key, values in report.items():
        logger.info("%s: %s", key, {m: round(v, 4) for m, v in values.items()})
    mlflow_metrics = {
        f"{key.replace('/', '_')}_{name}": {"value": float(value), "step": 0}
        for key, values in report.items()
        for name, value in values.items()
        if np.isfinite(value)
    }
    return report, mlflow_metrics, _plots(buyer_features, x, codes, vq_vae_model, num_codes)


def _plots(
    buyer_features: pd.DataFrame, x: np.ndarray, codes: dict, model: BehaviourVQVAE, k: int
) -> dict:
    train = (buyer_features["split"] == "train").to_numpy()
    usage, ax = plt.subplots(figsize=(8, 3.5))
    for method, assigned in codes.items():
        counts = np.sort(np.bincount(assigned[train], minlength=k))[::-1]
        ax.plot(np.arange(k), counts, label=f"{method} ({(counts > 0).sum()} active)")
    ax.set(
        xlabel="code rank",
        ylabel="training buyers",
        title="Code usage (training buyers)",
        yscale="symlog",
    )
    ax.legend()
    usage.tight_layout()

    z = model.embed(x[train]).numpy()
    xy = PCA(n_components=2, random_state=0).fit_transform(z)
    projection, ax = plt.subplots(figsize=(6, 5))
    strata = buyer_features["stratum"].to_numpy()[train]
    for stratum in sorted(set(strata)):
        sel = strata == stratum
        ax.scatter(xy[sel, 0], xy[sel, 1], s=4, alpha=0.5, label=stratum)
    ax.set(title="VQ-VAE encoder outputs (PCA), training buyers", xlabel="PC 1", ylabel="PC 2")
    ax.legend(title="stratum", markerscale=3)
    projection.tight_layout()
    return {"code_usage.png": usage, "latent_by_stratum.png": projection}
