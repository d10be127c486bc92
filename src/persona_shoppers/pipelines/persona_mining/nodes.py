"""Nodes of the persona_mining pipeline: persona tokens for every buyer, p_s(k), persona cards,
population recovery (SimPersona appendix B)."""

from __future__ import annotations

import logging
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import polars as pl

from persona_shoppers.features.labels import AUX_HEADS
from persona_shoppers.features.layout import feature_matrix
from persona_shoppers.llm import build_llm
from persona_shoppers.personas.cards import (
    STRATA,
    cards_markdown,
    persona_cards,
    population_recovery,
    shop_distributions,
)
from persona_shoppers.personas.text_personas import buyer_evidence, faithfulness, mine_text_personas
from persona_shoppers.vq_vae.model import BehaviourVQVAE

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
    top_categories: int,
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
    cards = persona_cards(members, views, vq_vae_model.hparams.num_codes, top_categories)
    return cards, cards_markdown(cards)


def evaluate_population_recovery(
    persona_assignments: pd.DataFrame,
    buyers: pd.DataFrame,
    buyer_features: pd.DataFrame,
    vq_vae_model: BehaviourVQVAE,
    js_threshold: float,
) -> tuple[dict, dict, dict]:
    """Appendix B on held-out shops, two ways: token profiles and centroids from all shops (the
    paper's protocol) and from training shops only (strictly held out)."""
    members = _members(persona_assignments, buyers, buyer_features)
    members = members[members["stratum"].isin(STRATA)]
    target = members[members["shop_role"] == "eval"]
    k = vq_vae_model.hparams.num_codes
    report = {
        "paper_protocol": population_recovery(members, target, k, js_threshold),
        "training_shops_only": population_recovery(
            members[members["shop_role"] == "train"], target, k, js_threshold
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
            js_threshold,
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


def sample_persona_buyers(
    persona_assignments: pd.DataFrame, buyer_histories: pd.DataFrame, n_buyers: int, seed: int
) -> pd.DataFrame:
    """Held-out buyers (strata A-D) to mine text personas for: the same number per shop, seeded."""
    pool = persona_assignments[
        (persona_assignments["shop_role"] == "eval") & persona_assignments["stratum"].isin(STRATA)
    ].merge(buyer_histories[[*_IDS, "history_text"]], on=_IDS)
    shops = sorted(pool["shop_id"].unique())
    per_shop = -(-n_buyers // max(len(shops), 1))
    shuffled = pool.sample(frac=1.0, random_state=seed)
    chosen = shuffled[shuffled.groupby("shop_id").cumcount() < per_shop]
    return chosen.sort_values(_IDS).head(n_buyers).reset_index(drop=True)


def mine_personas(
    persona_buyers: pd.DataFrame,
    raw_products: pd.DataFrame,
    history_chars: int,
    llm_params: dict[str, Any],
) -> pd.DataFrame:
    """PAARS two-step prompting (profile, then preferences) for the sampled buyers."""
    llm = build_llm(llm_params)
    categories = (
        raw_products.groupby("shop_id")["category"]
        .apply(lambda c: sorted(c.dropna().unique()))
        .to_dict()
    )
    personas = mine_text_personas(llm, persona_buyers, categories, history_chars)
    failed = int((personas["status"] == "failed").sum())
    log = logger.warning if failed else logger.info
    log("text personas: %d mined, %d failed after retries", len(personas) - failed, failed)
    return personas


def evaluate_text_personas(
    text_personas: pd.DataFrame,
    enriched_sessions: pl.DataFrame,
    raw_products: pd.DataFrame,
    seed: int,
) -> tuple[dict, dict]:
    """Schema-valid rate, failures, and faithfulness against personas shuffled within shops."""
    keys = pl.from_pandas(text_personas[_IDS])
    views = (
        enriched_sessions.join(keys, on=_IDS)
        .select(*_IDS, pl.col("viewed_product_ids").alias("product_id"))
        .explode("product_id")
        .drop_nulls()
        .to_pandas()
    )
    report = {
        "n_buyers": len(text_personas),
        "valid_rate": float((text_personas["status"] == "ok").mean())
        if len(text_personas)
        else 0.0,
        "failures": int((text_personas["status"] == "failed").sum()),
        "failure_reasons": text_personas.loc[text_personas["status"] == "failed", "error"]
        .value_counts()
        .to_dict(),
    }
    report.update(faithfulness(text_personas, buyer_evidence(views, raw_products), seed))
    logger.info("text personas: %s", report)
    metrics = {
        k: {"value": float(v), "step": 0}
        for k, v in report.items()
        if isinstance(v, int | float) and np.isfinite(v)
    }
    return report, metrics
