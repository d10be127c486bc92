"""Nodes of the persona_mining pipeline: persona tokens for every buyer, p_s(k), persona cards,
population recovery (SimPersona appendix B)."""

from __future__ import annotations

import logging
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import polars as pl

from persona_shoppers.alignment.cases import CUTOFF, before_cutoff, persona_cutoffs
from persona_shoppers.clickstream.buyers import build_buyers
from persona_shoppers.clickstream.engines import EventTable
from persona_shoppers.clickstream.history import build_histories, history_arguments
from persona_shoppers.clickstream.selection import events_in_shops, events_of
from persona_shoppers.clickstream.sessions import build_sessions
from persona_shoppers.features.embeddings import buyer_channel_means
from persona_shoppers.features.labels import AUX_HEADS
from persona_shoppers.features.layout import feature_matrix
from persona_shoppers.features.sampling import even_per_shop
from persona_shoppers.features.transform import BuyerFeatureTransformer
from persona_shoppers.llm import build_llm
from persona_shoppers.personas.cards import (
    STRATA,
    cards_markdown,
    persona_cards,
    population_recovery,
    shop_distributions,
)
from persona_shoppers.personas.evidence import (
    IMPLIED,
    buyer_evidence,
    evidence_lines,
    implied_levels,
    shop_ranks,
)
from persona_shoppers.personas.faithfulness import (
    PLANTED,
    behaviour_agreement,
    evidence_following,
    field_values,
    planted_agreement,
    value_spread,
)
from persona_shoppers.personas.likelihood_mining import behaviour_answers, mine_by_likelihood
from persona_shoppers.personas.text_personas import MINING_METHODS, mine_text_personas
from persona_shoppers.synthetic.generator import planted_buyer_types
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
    persona_assignments: pd.DataFrame,
    enriched_events: pl.DataFrame,
    n_buyers: int,
    seed: int,
    window_s: float,
) -> pd.DataFrame:
    """Held-out buyers (strata A-D) to mine text personas for, the same number per shop,
    seeded, among those with a test cutoff and events before it; ``history_until`` is the
    cutoff (docs/persona_mining.md, "Leakage-free")."""
    pool = persona_assignments[
        (persona_assignments["shop_role"] == "eval") & persona_assignments["stratum"].isin(STRATA)
    ]
    shops = sorted(pool["shop_id"].unique())
    cutoffs = persona_cutoffs(enriched_events.filter(pl.col("shop_id").is_in(shops)), window_s)
    eligible = pool.merge(
        cutoffs.filter(pl.col("events_before") > 0).drop("events_before").to_pandas(), on=_IDS
    )
    logger.info(
        "text personas: %d of %d held-out buyers (strata A-D) have a test event after some "
        "history; %d sampled",
        len(eligible),
        len(pool),
        min(n_buyers, len(eligible)),
    )
    return even_per_shop(eligible, n_buyers, seed)


def _histories(events: pl.DataFrame, history_options: dict[str, Any] | None) -> pd.DataFrame:
    """The buyers' history texts (data_enrichment's ``buyer_histories``) of these events."""
    return build_histories(events, **history_arguments(history_options)).to_pandas()


def _evidence(
    events: pl.DataFrame, reference_events: pl.DataFrame, raw_products: pd.DataFrame
) -> pd.DataFrame:
    """Evidence of the buyers of ``events``, ranked among the buyers of ``reference_events``."""
    ranked = shop_ranks(
        buyer_evidence(events, raw_products), buyer_evidence(reference_events, raw_products)
    )
    ranked["evidence"] = [evidence_lines(row) for row in ranked.to_dict("records")]
    return ranked


def build_persona_inputs(
    persona_buyers: pd.DataFrame,
    enriched_events: pl.DataFrame,
    raw_products: pd.DataFrame,
    history_options: dict[str, Any],
    history_chars: int,
) -> pd.DataFrame:
    """What a persona may be mined from, per sampled buyer: its history text and evidence
    lines from its events before ``history_until``, nothing after."""
    before = before_cutoff(enriched_events, persona_buyers)
    histories = _histories(before, history_options)
    inputs = persona_buyers[[*_IDS, CUTOFF]].merge(
        _evidence(
            before,
            events_in_shops(enriched_events, persona_buyers["shop_id"].unique()),
            raw_products,
        ),
        on=_IDS,
        how="left",
    )
    inputs = inputs.merge(histories[[*_IDS, "history_text"]], on=_IDS, how="left")
    inputs["history"] = [str(t)[-history_chars:] for t in inputs["history_text"].fillna("")]
    return inputs.drop(columns="history_text")


def tokenise_persona_buyers(
    persona_buyers: pd.DataFrame,
    enriched_events: pl.DataFrame,
    product_embeddings: pd.DataFrame,
    feature_transformer: BuyerFeatureTransformer,
    vq_vae_model: BehaviourVQVAE,
    intent_weights: dict[str, float] | None,
) -> pd.DataFrame:
    """The persona token of each sampled buyer from its features over the events before its
    cutoff (the same events as its text persona), for the alignment tasks."""
    before = before_cutoff(enriched_events, persona_buyers)
    sessions = build_sessions(before)
    table = build_buyers(before, sessions, intent_weights).to_pandas()
    vectors = feature_transformer.transform(
        table, buyer_channel_means(sessions, table, product_embeddings)
    )
    tokens = table[_IDS].assign(token=vq_vae_model.assign(vectors).numpy())
    return persona_buyers[_IDS].merge(tokens, on=_IDS, how="left")


def select_persona_examples(
    persona_assignments: pd.DataFrame,
    enriched_events: EventTable,
    raw_products: pd.DataFrame,
    history_options: dict[str, Any],
    text_personas: dict[str, Any],
) -> list[dict[str, Any]]:
    """Few-shot examples for likelihood mining: training-shop buyers (strata A-D) with carts
    and a brand focus, one per price-sensitivity level in turn, answered from their behaviour
    (never from planted types)."""
    n_examples = int(text_personas["few_shot"])
    if n_examples <= 0:
        return []
    pool = persona_assignments[
        (persona_assignments["shop_role"] == "train") & persona_assignments["stratum"].isin(STRATA)
    ].sample(frac=1.0, random_state=text_personas["seed"])
    if pool.empty:
        logger.warning("text personas: no training-shop buyer to take few-shot examples from")
        return []
    candidates = pool.head(max(200, 20 * n_examples))
    shop_events = events_in_shops(enriched_events, candidates["shop_id"].unique())
    events = events_of(shop_events, candidates[_IDS])
    evidence = _evidence(events, shop_events, raw_products)
    evidence = evidence[(evidence["n_carts"] > 0) & evidence["top_brand"].notna()]
    histories = _histories(events, history_options).set_index(_IDS)["history_text"]
    levels = [implied_levels(row) for row in evidence.to_dict("records")]
    examples: list[dict[str, Any]] = []
    used: set[tuple[str, str]] = set()
    for k in range(n_examples):
        level = ("high", "medium", "low")[k % 3]
        for row, implied in zip(evidence.to_dict("records"), levels, strict=True):
            key = (row["shop_id"], row["buyer_id"])
            if implied["price_sensitivity"] != level or key in used:
                continue
            used.add(key)
            history = histories.get(key, "")
            examples.append(
                {
                    "shop_id": row["shop_id"],
                    "buyer_id": row["buyer_id"],
                    "history": history[-text_personas["example_history_chars"] :],
                    "evidence": row["evidence"],
                    "answers": behaviour_answers(implied, row["top_categories"]),
                }
            )
            break
    if len(examples) < n_examples:
        logger.warning(
            "text personas: %d of %d few-shot examples found among training buyers",
            len(examples),
            n_examples,
        )
    return examples


def mine_personas(
    persona_inputs: pd.DataFrame,
    persona_buyer_tokens: pd.DataFrame,
    persona_examples: list[dict[str, Any]],
    raw_products: pd.DataFrame,
    text_personas: dict[str, Any],
    llm_params: dict[str, Any],
) -> pd.DataFrame:
    """Text personas of the sampled buyers, by ``text_personas.method``: ``likelihood`` (the
    options scored, calibrated, few-shot) or ``paars`` (the two PAARS prompts), with their
    cutoff and leakage-free persona token."""
    method = text_personas["method"]
    if method not in MINING_METHODS:
        raise ValueError(
            f"persona_mining.text_personas.method: {method!r} is not one of {MINING_METHODS}"
        )
    llm = build_llm(llm_params)
    categories = (
        raw_products.groupby("shop_id")["category"]
        .apply(lambda c: sorted(c.dropna().unique()))
        .to_dict()
    )
    if method == "likelihood":
        personas = mine_by_likelihood(
            llm,
            persona_inputs,
            categories,
            persona_examples,
            text_personas["calibration"],
            text_personas["max_interests"],
        )
    else:
        personas = mine_text_personas(llm, persona_inputs, categories)
    personas = (
        persona_inputs[[*_IDS, CUTOFF]]
        .merge(persona_buyer_tokens[[*_IDS, "token"]], on=_IDS)
        .merge(personas, on=_IDS)
    )
    failed = int((personas["status"] == "failed").sum())
    log = logger.warning if failed else logger.info
    log("text personas: %d mined (%s), %d failed", len(personas) - failed, method, failed)
    return personas


def evaluate_text_personas(
    text_personas: pd.DataFrame,
    persona_inputs: pd.DataFrame,
    enriched_events: pl.DataFrame,
    raw_products: pd.DataFrame,
    planted_truth: dict,
    seed: int,
    permutation_draws: int,
) -> tuple[dict, dict, dict]:
    """Valid rate and failures; per field the spread of values; agreement with each buyer's
    behaviour over the whole log against personas shuffled within shops (permutation
    p-values); how often a persona states what its own input's evidence implies; agreement
    with the planted buyer types where the data has them, beside that of the evidence the
    same personas were mined from; plots."""
    ok = text_personas[text_personas["status"] == "ok"].reset_index(drop=True)
    report: dict[str, Any] = {
        "n_buyers": len(text_personas),
        "n_ok": len(ok),
        "failures": int((text_personas["status"] == "failed").sum()),
        "failure_reasons": text_personas.loc[text_personas["status"] == "failed", "error"]
        .value_counts()
        .to_dict(),
    }
    if len(ok) < 2:
        message = f"text personas: {len(ok)} valid personas, nothing to evaluate"
        logger.warning(message)
        return report, {}, {"behaviour_agreement.png": _message_plot(message)}
    mine = enriched_events.join(pl.from_pandas(ok[_IDS]), on=_IDS, how="semi")
    behaviour = ok[_IDS].merge(
        _evidence(mine, events_in_shops(enriched_events, ok["shop_id"].unique()), raw_products),
        on=_IDS,
        how="left",
    )
    implied = [implied_levels(row) for row in behaviour.to_dict("records")]
    given = ok[_IDS].merge(persona_inputs, on=_IDS, how="left")
    from_inputs = [implied_levels(row) for row in given.to_dict("records")]
    shops = ok["shop_id"].tolist()
    stated = field_values(ok)
    report["spread"] = value_spread(ok)
    report["behaviour"] = {
        field: behaviour_agreement(
            stated[field],
            [i[field] for i in implied],
            shops,
            field,
            permutation_draws,
            seed,
        )
        for field in IMPLIED
    }
    report["behaviour"]["interests"] = behaviour_agreement(
        [p["interests"] for p in ok["preferences"]],
        [c if isinstance(c, list) else [] for c in behaviour["categories"]],
        shops,
        "interests",
        permutation_draws,
        seed,
    )
    report["evidence"] = {
        field: evidence_following(stated[field], [i[field] for i in from_inputs])
        for field in IMPLIED
    }
    figures = {"behaviour_agreement.png": _behaviour_plot(report["behaviour"])}
    if planted_truth.get("buyer_type"):
        types = ok[_IDS].merge(planted_buyer_types(planted_truth), on=_IDS, how="left")
        params = {t["name"]: t for t in planted_truth["buyer_types"]}
        kinds = types["buyer_type"].where(types["buyer_type"].notna(), None).tolist()
        report["planted"] = {}
        for field, parameter in PLANTED.items():
            planted = {name: float(t[parameter]) for name, t in params.items()}
            report["planted"][field] = planted_agreement(stated[field], kinds, planted)
            # what a persona copying its evidence would reach on the same buyers
            report["planted"][field]["evidence"] = planted_agreement(
                [i[field] for i in from_inputs], kinds, planted
            )
        figures["planted_types.png"] = _planted_plot(report["planted"])
    logger.info("text personas: %s", {k: v for k, v in report.items() if k != "spread"})
    return report, _flat_metrics(report), figures


def _flat_metrics(report: dict[str, Any]) -> dict[str, dict]:
    """The report's numbers as MLflow metrics (``behaviour.price_sensitivity.gain`` ...)."""
    flat: dict[str, float] = {k: report[k] for k in ("n_buyers", "n_ok", "failures")}
    for field, spread in report.get("spread", {}).items():
        flat[f"spread.{field}.top_share"] = spread["top_share"]
        flat[f"spread.{field}.distinct"] = spread["distinct"]
    for field, result in report.get("behaviour", {}).items():
        flat.update({f"behaviour.{field}.{k}": v for k, v in result.items()})
    for field, result in report.get("evidence", {}).items():
        flat.update({f"evidence.{field}.{k}": v for k, v in result.items()})
    for field, result in report.get("planted", {}).items():
        for key in ("spearman_rho", "spearman_p", "n_types"):
            if key in result:
                flat[f"planted.{field}.{key}"] = result[key]
            if key in result["evidence"]:
                flat[f"planted.{field}.evidence.{key}"] = result["evidence"][key]
    return {k: {"value": float(v), "step": 0} for k, v in flat.items() if np.isfinite(float(v))}


def _message_plot(message: str) -> plt.Figure:
    figure, ax = plt.subplots(figsize=(6, 1.5))
    ax.text(0.5, 0.5, message, ha="center", va="center")
    ax.set_axis_off()
    return figure


def _behaviour_plot(behaviour: dict[str, Any]) -> plt.Figure:
    """Per field, agreement with the buyer's own behaviour beside personas shuffled within
    shops, with n and the permutation p-value."""
    fields = [f for f, r in behaviour.items() if "own" in r]
    figure, ax = plt.subplots(figsize=(2 + 2 * max(len(fields), 1), 3.8))
    x = np.arange(len(fields))
    ax.bar(x - 0.2, [behaviour[f]["own"] for f in fields], 0.4, label="own persona")
    ax.bar(x + 0.2, [behaviour[f]["shuffled"] for f in fields], 0.4, label="shuffled within shop")
    labels = [f"{f}\nn={behaviour[f]['n']:.0f}, p={behaviour[f]['p_value']:.3f}" for f in fields]
    ax.set_xticks(x, labels, fontsize=8)
    ax.set(ylabel="agreement with behaviour", title="Text personas against behaviour")
    ax.legend(fontsize=8)
    figure.tight_layout()
    return figure


def _planted_plot(planted: dict[str, Any]) -> plt.Figure:
    """Per planted parameter, the share of each type's personas called ``high`` (and of their
    evidence's implied levels) against the type's planted value, point size = n."""
    figure, axes = plt.subplots(1, len(planted), figsize=(5 * len(planted), 3.8))
    for ax, (field, result) in zip(np.atleast_1d(axes), planted.items(), strict=True):
        sources = ((result, "o", "personas"), (result["evidence"], "x", "evidence"))
        for source, marker, label in sources:
            types = source["types"]
            rho = source.get("spearman_rho")
            ax.scatter(
                [t["planted"] for t in types.values()],
                [t["share_high"] for t in types.values()],
                s=[12 + 4 * t["n"] for t in types.values()],
                marker=marker,
                label=f"{label}: rho {rho:.2f}" if rho is not None else label,
            )
        for name, t in result["types"].items():
            ax.annotate(f"{name} ({t['n']})", (t["planted"], t["share_high"]), fontsize=7)
        ax.set(
            xlabel=f"planted {PLANTED[field]}",
            ylabel=f"share of the type's buyers with {field} high",
            title=field,
        )
        ax.legend(fontsize=8)
    figure.tight_layout()
    return figure
