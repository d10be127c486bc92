"""Nodes of the persona_mining pipeline: persona tokens for every buyer, p_s(k), persona cards,
population recovery (SimPersona appendix B)."""

from __future__ import annotations

import logging
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import polars as pl  # noqa: E402

from persona_shoppers.features.labels import AUX_HEADS  # noqa: E402
from persona_shoppers.models.vq_vae import BehaviourVQVAE  # noqa: E402
from persona_shoppers.personas.tokens import (  # noqa: E402
    STRATA,
    cards_markdown,
    persona_cards,
    population_recovery,
    shop_distributions,
)
from persona_shoppers.pipelines.vq_vae.nodes import feature_matrix  # noqa: E402

logger = logging.getLogger(__name__)

_IDS = ["shop_id", "buyer_id"]


def assign_persona_tokens(
    buyer_features: pd.DataFrame, vq_vae_model: BehaviourVQVAE
) -> pd.DataFrame:
    """Every buyer of training and held-out shops -> its persona token (one encoder pass)."""
    out = buyer_features[[*_IDS, "shop_role", "split", "stratum"]].copy()
    out["token"] = vq_vae_model.assign(feature_matrix(buyer_features)).numpy()
    logger.info("assigned %d buyers to %d distinct tokens", len(out), out["token"].nunique())
    return out


def build_shop_distributions(
    persona_assignments: pd.DataFrame, vq_vae_model: BehaviourVQVAE
) -> pd.DataFrame:
    """p_s(k) per shop over all its buyers."""
    return shop_distributions(persona_assignments, vq_vae_model.hparams.num_codes)


def _members(
    persona_assignments: pd.DataFrame, buyers: pd.DataFrame, buyer_features: pd.DataFrame
) -> pd.DataFrame:
    bins = buyer_features[[*_IDS, *(f"{h}_bin" for h in AUX_HEADS)]]
    return persona_assignments.merge(buyers.drop(columns="stratum"), on=_IDS).merge(bins, on=_IDS)


def build_persona_cards(
    persona_assignments: pd.DataFrame,
    buyers: pd.DataFrame,
    buyer_features: pd.DataFrame,
    enriched_sessions: pl.DataFrame,
    raw_products: pd.DataFrame,
    vq_vae_model: BehaviourVQVAE,
    params: dict[str, Any],
) -> tuple[list[dict], str]:
    """What each token means, from training-shop buyers: json cards and a markdown table."""
    members = _members(persona_assignments, buyers, buyer_features)
    members = members[members["shop_role"] == "train"]
    views = (
        enriched_sessions.select(*_IDS, pl.col("viewed_product_ids").alias("product_id"))
        .explode("product_id")
        .drop_nulls()
        .join(
            pl.from_pandas(raw_products[["shop_id", "product_id", "category"]]),
            on=["shop_id", "product_id"],
        )
        .join(pl.from_pandas(members[[*_IDS, "token"]]), on=_IDS)
        .group_by("token", "category")
        .len("n")
        .to_pandas()
    )
    cards = persona_cards(members, views, vq_vae_model.hparams.num_codes, params["top_categories"])
    return cards, cards_markdown(cards)


def evaluate_population_recovery(
    persona_assignments: pd.DataFrame,
    buyers: pd.DataFrame,
    buyer_features: pd.DataFrame,
    vq_vae_model: BehaviourVQVAE,
    params: dict[str, Any],
) -> tuple[dict, dict, dict]:
    """Appendix B on held-out shops, two ways: token profiles and centroids from all shops (the
    paper's protocol) and from training shops only (strictly held out)."""
    members = _members(persona_assignments, buyers, buyer_features)
    members = members[members["stratum"].isin(STRATA)]
    target = members[members["shop_role"] == "eval"]
    k = vq_vae_model.hparams.num_codes
    report = {
        "paper_protocol": population_recovery(members, target, k, params["js_threshold"]),
        "training_shops_only": population_recovery(
            members[members["shop_role"] == "train"], target, k, params["js_threshold"]
        ),
    }
    metrics = {}
    for variant, result in report.items():
        summary = {"js_mean": result["js_mean"], "js_median": result["js_median"]}
        summary["js_below_threshold"] = result["js_below_threshold"]
        summary.update({f"r2_{f}": v for f, v in result["r2_per_feature"].items()})
        for name, value in summary.items():
            if np.isfinite(value):
                metrics[f"{variant}_{name}"] = {"value": float(value), "step": 0}
        logger.info(
            "population recovery (%s): JS mean %.4f, median %.4f, %d/%d shops below %.2f",
            variant,
            result["js_mean"],
            result["js_median"],
            result["js_below_threshold"],
            len(result["shops"]),
            params["js_threshold"],
        )
    return report, metrics, _recovery_plots(report["paper_protocol"])


def _recovery_plots(result: dict) -> dict:
    shops = result["shops"]
    figure, ax = plt.subplots(figsize=(max(6, 1.2 * len(shops)), 3.8))
    width = 0.1
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for j, stratum in enumerate(STRATA):
        real = [result["real_mix"][s][stratum] for s in shops]
        predicted = [result["predicted_mix"][s][stratum] for s in shops]
        x = np.arange(len(shops)) + (j - 1.5) * 2 * width
        ax.bar(
            x - width / 2,
            np.log1p(100 * np.array(real)),
            width,
            color=colours[j],
            label=f"{stratum} real",
        )
        ax.bar(
            x + width / 2,
            np.log1p(100 * np.array(predicted)),
            width,
            color=colours[j],
            hatch="//",
            alpha=0.6,
            label=f"{stratum} predicted",
        )
    ax.set_xticks(np.arange(len(shops)), shops)
    ax.set(
        ylabel="log(1 + 100 x share)",
        title=f"Stratum mix recovery (mean JS {result['js_mean']:.3f})",
    )
    ax.legend(ncol=4, fontsize=7)
    figure.tight_layout()

    features = result["store_profiles"]["features"]
    actual = np.array(result["store_profiles"]["actual"])
    reconstructed = np.array(result["store_profiles"]["reconstructed"])
    scatter, axes = plt.subplots(4, 4, figsize=(11, 10))
    for ax, j in zip(axes.ravel(), range(len(features)), strict=True):
        ax.scatter(actual[:, j], reconstructed[:, j], s=14)
        lo, hi = (
            np.nanmin([actual[:, j], reconstructed[:, j]]),
            np.nanmax([actual[:, j], reconstructed[:, j]]),
        )
        ax.plot([lo, hi], [lo, hi], lw=0.8, color="grey")
        ax.set_title(f"{features[j]}\nR2 {result['r2_per_feature'][features[j]]:.2f}", fontsize=8)
        ax.tick_params(labelsize=6)
    scatter.suptitle("Store profiles: real (x) vs reconstructed from token mix (y)")
    scatter.tight_layout()
    return {"stratum_recovery.png": figure, "profile_recovery.png": scatter}
