"""The alignment metric families, one function per task, each with its baselines and human
noise floor (docs/alignment.md), and their merge into ``alignment_metrics``. Definitions of
the underlying statistics: docs/alignment_metrics.md."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import pandas as pd
import polars as pl

from persona_shoppers.agent.rollout import OUTCOMES
from persona_shoppers.alignment.naming import metric_name
from persona_shoppers.metrics.behaviour import (
    accuracy,
    calibration,
    discrete_kl,
    noise_floor,
    persona_pairing_alignment,
    rank_distribution_kl,
    separation_tests,
)
from persona_shoppers.metrics.text import (
    by_stratum,
    kde_kl_sweep,
    rowwise_cosine,
    type_token_ratio,
)
from persona_shoppers.personas.token_format import PERSONA_PATTERN

logger = logging.getLogger(__name__)

Metrics = dict[str, float]


class Embedder(Protocol):
    def embed(self, texts: list[str]) -> np.ndarray: ...


def _safe(fn: Callable[[], float], what: str) -> float:
    """A metric, or NaN (logged with the reason) when the sample cannot support it."""
    try:
        return float(fn())
    except ValueError as err:
        logger.warning("alignment: %s is undefined here: %s", what, err)
        return float("nan")


# --------------------------------------------------------------------------------------------
# individual tasks (PAARS 4.3)
# --------------------------------------------------------------------------------------------


def query_generation_metrics(
    query_cases: pd.DataFrame,
    perplexities: pd.DataFrame,
    answers: pd.DataFrame,
    embedder: Embedder,
    kde: Mapping[str, Any],
    seed: int,
    noise_floor_repeats: int,
) -> tuple[Metrics, dict[str, Any]]:
    """Cosine similarity (overall, per perplexity stratum) and the KDE KL sweep, for every
    condition, the title-as-query baseline and the human noise floor."""
    task = "query_generation"
    human = embedder.embed(list(query_cases["query"]))
    strata = perplexities.sort_values("case")["stratum"].to_numpy()
    generated = answers[answers["task"] == task]
    by_condition = {
        c: g.sort_values("case")["query"].fillna("").tolist()
        for c, g in generated.groupby("condition")
    }
    by_condition["title_as_query"] = list(query_cases["title"])
    metrics, detail = {}, {"similarity_by_stratum": {}, "kde_sweep": {}}

    def sweep(p: np.ndarray, q: np.ndarray) -> dict[str, Any]:
        return kde_kl_sweep(
            p,
            q,
            kde["bandwidths"],
            kde["repeats"],
            kde["n_samples"],
            seed,
            kde["reference_bandwidth"],
        )

    for condition, queries in by_condition.items():
        agent = embedder.embed([q if q else " " for q in queries])
        cosine = rowwise_cosine(human, agent)
        metrics[metric_name(task, "cosine", condition)] = float(cosine.mean())
        per_stratum = by_stratum(cosine, strata)
        for s, v in per_stratum.items():
            metrics[metric_name(task, f"cosine_ppl_stratum_{s}", condition)] = v
        detail["similarity_by_stratum"][condition] = per_stratum
        result = sweep(human, agent)
        detail["kde_sweep"][condition] = result
        metrics[metric_name(task, "kde_kl", condition)] = result["kl"]
        for h, m in zip(result["bandwidths"], result["mean"], strict=True):
            metrics[metric_name(task, f"kde_kl_h{h:g}", condition)] = m
    floor = noise_floor(lambda a, b: sweep(a, b)["kl"], human, seed, noise_floor_repeats)
    metrics[metric_name(task, "kde_kl", "human_noise_floor")] = floor["mean"]
    return metrics, detail


def item_selection_metrics(
    item_cases: pd.DataFrame, answers: pd.DataFrame, events: pl.DataFrame, seed: int
) -> Metrics:
    """4-way accuracy per condition, a random choice and the most-purchased option."""
    task = "item_selection"
    truth = item_cases["answer"].to_numpy()
    picked = answers[answers["task"] == task]
    metrics = {
        metric_name(task, "accuracy", c): accuracy(
            g.sort_values("case")["choice"].to_numpy(int), truth
        )
        for c, g in picked.groupby("condition")
    }
    rng = np.random.default_rng(seed)
    sizes = item_cases["product_ids"].map(len).to_numpy()
    metrics[metric_name(task, "accuracy", "random_choice")] = accuracy(
        rng.integers(0, sizes), truth
    )
    sales = events.filter(pl.col("event_type") == "purchase").group_by("product_id").len("n")
    counts = dict(zip(sales["product_id"].to_list(), sales["n"].to_list(), strict=True))
    popular = [int(np.argmax([counts.get(p, 0) for p in ids])) for ids in item_cases["product_ids"]]
    metrics[metric_name(task, "accuracy", "most_popular")] = accuracy(popular, truth)
    return metrics


def rank_selection_metrics(
    rank_cases: pd.DataFrame, answers: pd.DataFrame, seed: int, noise_floor_repeats: int
) -> tuple[Metrics, dict[str, Any]]:
    """Rank-distribution KL(human || agent) per condition, a uniformly random rank and the
    human noise floor; the rank histograms for the report."""
    task = "rank_selection"
    n_ranks = int(rank_cases["results"].map(len).max())
    human = rank_cases["rank"].to_numpy(int)
    chosen = answers[answers["task"] == task]
    ranks = {
        c: g.sort_values("case")["choice"].to_numpy(int) for c, g in chosen.groupby("condition")
    }
    rng = np.random.default_rng(seed)
    ranks["random_rank"] = rng.integers(1, rank_cases["results"].map(len).to_numpy() + 1)
    metrics = {
        metric_name(task, "rank_kl", c): rank_distribution_kl(human, r, n_ranks)
        for c, r in ranks.items()
    }
    floor = noise_floor(
        lambda a, b: rank_distribution_kl(a, b, n_ranks), human, seed, noise_floor_repeats
    )
    metrics[metric_name(task, "rank_kl", "human_noise_floor")] = floor["mean"]
    hist = {
        c: np.bincount(r, minlength=n_ranks + 1)[1:].tolist()
        for c, r in {"human": human, **ranks}.items()
    }
    return metrics, {"rank_histograms": hist}


# --------------------------------------------------------------------------------------------
# sessions (PAARS Tables 2 and 4)
# --------------------------------------------------------------------------------------------

SESSION_COUNTS = {"searches": "n_searches", "views": "n_product_views", "purchases": "n_purchases"}


def held_out_human_sessions(
    enriched_sessions: pl.DataFrame, simulated: pd.DataFrame, n_sessions: int, seed: int
) -> pd.DataFrame:
    """At most ``n_sessions`` human sessions (seeded sample) of the simulated shops."""
    shops = sorted(simulated["shop_id"].unique())
    human = enriched_sessions.filter(pl.col("shop_id").is_in(shops)).to_pandas()
    return human.sample(min(len(human), n_sessions), random_state=seed)


def _counts(sessions: pd.DataFrame, column: str, cap: int) -> np.ndarray:
    return np.minimum(sessions[column].to_numpy(int), cap)


def _ttr(texts: list[str]) -> float:
    return _safe(lambda: type_token_ratio(texts), "type-token ratio") if texts else float("nan")


def _flat(lists: pd.Series) -> list[str]:
    return [t for items in lists for t in (items if items is not None else [])]


def session_metrics(
    human: pd.DataFrame,
    simulated: pd.DataFrame,
    max_count: int,
    seed: int,
    noise_floor_repeats: int,
) -> tuple[Metrics, dict[str, Any]]:
    """KL over searches, views and purchases per session (counts capped at ``max_count``,
    smoothing epsilon 1e-6 on the probability scale), query and title TTRs, per condition; the
    marginal-resample baseline and the human noise floor."""
    task, cap = "session", max_count
    support = np.arange(cap + 1)
    rng = np.random.default_rng(seed)
    size = int(simulated.groupby("condition").size().median())
    # The baseline: per shop, as many sessions as a condition has there, each count drawn
    # independently from the shop's human marginal.
    per_shop = simulated.groupby("shop_id").size() / simulated["condition"].nunique()
    resampled = pd.concat(
        [
            pd.DataFrame(
                {
                    c: rng.choice(_counts(human[human["shop_id"] == shop], c, cap), round(n))
                    for c in SESSION_COUNTS.values()
                }
            )
            for shop, n in per_shop.items()
        ],
        ignore_index=True,
    )
    groups = {c: g for c, g in simulated.groupby("condition")}
    metrics, hist = {}, {}
    for label, column in SESSION_COUNTS.items():
        h = _counts(human, column, cap)
        hist[label] = {"human": (np.bincount(h, minlength=cap + 1) / h.size).tolist()}
        for condition, g in {**groups, "marginal_resample": resampled}.items():
            a = _counts(g, column, cap)
            metrics[metric_name(task, f"kl_{label}", condition)] = discrete_kl(h, a, support)
            hist[label][condition] = (np.bincount(a, minlength=cap + 1) / a.size).tolist()
        floor = noise_floor(lambda x, y: discrete_kl(x, y, support), h, seed, noise_floor_repeats)
        metrics[metric_name(task, f"kl_{label}", "human_noise_floor")] = floor["mean"]
    for condition, g in groups.items():
        metrics[metric_name(task, "query_ttr", condition)] = _ttr(_flat(g["queries"]))
        metrics[metric_name(task, "title_ttr", condition)] = _ttr(_flat(g["viewed_titles"]))
    # Human TTRs on samples of the agents' size: a TTR falls as the sample grows.
    picks = [rng.choice(len(human), min(size, len(human)), replace=False) for _ in range(5)]
    for metric, column in (("query_ttr", "queries"), ("title_ttr", "viewed_titles")):
        values = [_ttr(_flat(human[column].iloc[p])) for p in picks]
        metrics[metric_name(task, metric, "human")] = float(np.nanmean(values))
    return metrics, {"session_histograms": hist, "max_count": cap}


# --------------------------------------------------------------------------------------------
# action rates and behavioural separation (SimPersona Tables 2 and 3)
# --------------------------------------------------------------------------------------------


def _real_rates(buyers: pd.DataFrame, assignments: pd.DataFrame, shops: list[str]) -> pd.DataFrame:
    real = buyers[buyers["shop_id"].isin(shops)].merge(
        assignments[["shop_id", "buyer_id", "token"]], on=["shop_id", "buyer_id"]
    )
    return pd.DataFrame(
        {
            "shop": real["shop_id"],
            "token": real["token"].astype(int),
            "atc": real["atc_sessions"] / real["n_sessions"],
            "purchase": real["purchase_sessions"] / real["n_sessions"],
            "stratum": real["stratum"],
        }
    )


def _session_tokens(sessions: pd.DataFrame) -> np.ndarray:
    """The token that conditioned each session, else the token its agent stands for."""
    conditioned = sessions["persona_token"].str.extract(PERSONA_PATTERN.pattern)[0]
    return conditioned.fillna(sessions["buyer_token"].astype(str)).astype(int).to_numpy()


def _flatten_alignment(result: Mapping[str, Any], condition: str) -> Metrics:
    task, out = "action_rate", {}
    for pairing, table in result.items():
        suffix = "" if pairing == "correct" else f"_{pairing}"
        for metric in ("atc", "purchase", "ara"):
            out[metric_name(task, f"{metric}{suffix}", condition)] = table["stratified"][metric]
            for stratum, row in table["per_stratum"].items():
                out[metric_name(task, f"{metric}{suffix}_stratum_{stratum}", condition)] = row[
                    metric
                ]
    return out


def action_rate_metrics(
    simulated: pd.DataFrame,
    buyers: pd.DataFrame,
    assignments: pd.DataFrame,
    seed: int,
    noise_floor_repeats: int,
) -> tuple[Metrics, dict[str, Any]]:
    """ATC / purchase alignment and ARA per stratum and stratified, correct vs all-mismatch vs
    random-mismatch (SimPersona Table 2), per condition. An agent's pair is (shop, the token
    of the buyer it stands for): under ``token_mismatch`` it is conditioned on another token
    and still compared with its own buyer's pair. A token-blind baseline (every pair
    gets its shop's human rates) and the human noise floor (two halves of the real buyers)."""
    shops = sorted(simulated["shop_id"].unique())
    real = _real_rates(buyers, assignments, shops)
    metrics, detail = {}, {}
    for condition, g in simulated.groupby("condition"):
        agent = pd.DataFrame(
            {
                "shop": g["shop_id"].to_numpy(),
                "token": g["buyer_token"].astype(int).to_numpy(),
                "atc": g["has_add_to_cart"].astype(float).to_numpy(),
                "purchase": g["has_purchase"].astype(float).to_numpy(),
            }
        )
        result = persona_pairing_alignment(real, agent, seed)
        metrics.update(_flatten_alignment(result, condition))
        detail[condition] = {p: r["per_stratum"] for p, r in result.items()}
    shop_rates = real.groupby("shop")[["atc", "purchase"]].transform("mean")
    blind = persona_pairing_alignment(real, real.assign(**shop_rates), seed)
    metrics.update(_flatten_alignment({"correct": blind["correct"]}, "shop_rates_baseline"))
    rng = np.random.default_rng(seed)
    floors = []
    for _ in range(noise_floor_repeats):
        half = rng.permutation(len(real)) < len(real) // 2
        first, second = real[half], real[~half]
        pairs = set(zip(first["shop"], first["token"], strict=True))
        keep = [p in pairs for p in zip(second["shop"], second["token"], strict=True)]
        floors.append(persona_pairing_alignment(first, second[keep], seed)["correct"])
    for metric in ("atc", "purchase", "ara"):
        metrics[metric_name("action_rate", metric, "human_noise_floor")] = float(
            np.mean([f["stratified"][metric] for f in floors])
        )
    return metrics, {"ara_by_stratum": detail}


def _session_scores(sessions: pd.DataFrame) -> dict[str, np.ndarray]:
    """Per-simulation scores for each auxiliary head (SimPersona Table 3): purchase = funnel
    events (add to cart + checkout + purchase), engagement = actions taken, exploration =
    distinct products viewed."""
    return {
        "purchase": (
            sessions["n_add_to_cart"] + sessions["n_checkout_starts"] + sessions["n_purchases"]
        ).to_numpy(float),
        "engagement": sessions["n_actions"].to_numpy(float),
        "exploration": sessions["viewed_product_ids"]
        .map(lambda ids: len(set(ids)) if ids is not None else 0)
        .to_numpy(float),
    }


def separation_metrics(
    simulated: pd.DataFrame, persona_cards: list[dict], permutation_draws: int, seed: int
) -> Metrics:
    """Cohen's d, Welch t, Kruskal-Wallis and permutation p across Low / Medium / High token
    bins of each auxiliary head, per condition (SimPersona Table 3)."""
    bins = {c["token"]: c["bins"] for c in persona_cards if c.get("bins")}
    metrics = {}
    for condition, g in simulated.groupby("condition"):
        tokens = _session_tokens(g)
        scores = _session_scores(g)
        for head, values in scores.items():
            labels = np.array([bins.get(t, {}).get(head, {}).get("label", "none") for t in tokens])
            for name in ("cohens_d", "welch_p", "kruskal_p", "permutation_p"):
                metrics[metric_name("separation", f"{head}_{name}", condition)] = float("nan")
            try:
                row = separation_tests(values, labels, "low", "high", permutation_draws, seed)
            except ValueError as err:
                logger.warning("separation %s / %s: %s", head, condition, err)
                continue
            for name in ("cohens_d", "welch_p", "kruskal_p", "permutation_p"):
                metrics[metric_name("separation", f"{head}_{name}", condition)] = row[name]
            for level, mean in row["mean_per_bin"].items():
                metrics[metric_name("separation", f"{head}_mean_{level}", condition)] = mean
    return metrics


# --------------------------------------------------------------------------------------------
# instruction following, ablations, A/B tests (SimPersona Table 4, appendices F and I; PAARS 5)
# --------------------------------------------------------------------------------------------


def instruction_metrics(runs: pd.DataFrame) -> Metrics:
    """Success rate (overall, per length bin), steps per run, error rate and the calibration of
    the agent's own goal claims, per condition (SimPersona Table 4)."""
    task, metrics = "instruction_following", {}
    for condition, g in runs.groupby("condition"):
        metrics[metric_name(task, "success_rate", condition)] = float(g["success"].mean())
        for label, b in g.groupby("length_bin"):
            metrics[metric_name(task, f"success_rate_len_{label}", condition)] = float(
                b["success"].mean()
            )
        metrics[metric_name(task, "steps_per_run", condition)] = float(g["n_steps"].mean())
        metrics[metric_name(task, "error_rate", condition)] = float((g["n_errors"] > 0).mean())
        for key, value in calibration(g["claimed"], g["success"]).items():
            if key != "n":
                metrics[metric_name(task, f"calibration_{key}", condition)] = value
    return metrics


def ablation_metrics(
    simulated: pd.DataFrame, ablations: Mapping[str, Sequence[str]], population: str
) -> Metrics:
    """Appendix F (two-stage vs single-stage SFT: outcome and error rates) and appendix I
    (persona token vs none under intent-neutral goals: outcomes, add-to-cart and checkout
    counts, actions and pages per session): per ablation (a task name) its conditions, on the
    sessions of ``population``."""
    metrics = {}
    for task, conditions in ablations.items():
        for condition in conditions:
            g = simulated[
                (simulated["condition"] == condition) & (simulated["population"] == population)
            ]
            if g.empty:
                raise ValueError(
                    f"alignment.ablations.{task}: simulated_sessions has no {condition!r} "
                    f"sessions of the {population!r} population; add them to "
                    "simulation.conditions and rerun `kedro run --pipelines=simulation`"
                )
            for outcome in OUTCOMES:
                metrics[metric_name(task, f"outcome_{outcome}", condition)] = float(
                    (g["outcome"] == outcome).mean()
                )
            metrics[metric_name(task, "error_rate", condition)] = float((g["n_errors"] > 0).mean())
            metrics[metric_name(task, "atc_per_session", condition)] = float(
                g["n_add_to_cart"].mean()
            )
            metrics[metric_name(task, "checkout_per_session", condition)] = float(
                g["n_checkout_starts"].mean()
            )
            metrics[metric_name(task, "actions_per_session", condition)] = float(
                g["n_actions"].mean()
            )
            pages = g["n_page_views"] + g["n_product_views"] + g["n_collection_views"]
            metrics[metric_name(task, "pages_per_session", condition)] = float(pages.mean())
    return metrics


def ab_metrics(ab_test_results: pd.DataFrame) -> Metrics:
    """Per A/B test and metric: simulated and reference effect, direction agreement (1 / 0,
    NaN when undefined) and magnitude ratio."""
    metrics = {}
    for row in ab_test_results.to_dict("records"):
        stem = f"{row['test']}.{row['metric']}"
        agrees = row["direction_agreement"]
        values = {
            "simulated_effect": row["simulated_effect"],
            "reference_effect": row["reference_effect"],
            "direction_agreement": float("nan")
            if agrees is None or pd.isna(agrees)
            else float(agrees),
            "magnitude_ratio": row["magnitude_ratio"],
        }
        for stat, value in values.items():
            metrics[metric_name("ab_test", f"{stem}.{stat}", row["condition"])] = float(value)
    return metrics


# --------------------------------------------------------------------------------------------
# merge
# --------------------------------------------------------------------------------------------


def merge_metric_families(
    families: Sequence[Metrics], details: Sequence[Mapping[str, Any]]
) -> tuple[Metrics, dict[str, Any], dict[str, Any]]:
    """Every family's numbers in one dict sorted by name (a later family wins a shared name),
    the same as MLflow metrics (NaN stays NaN), and the families' details in the given
    order."""
    merged: Metrics = {}
    for family in families:
        merged.update(family)
    metrics = {k: float(v) for k, v in sorted(merged.items())}
    detail: dict[str, Any] = {}
    for part in details:
        detail.update(part)
    mlflow = {k: {"value": v, "step": 0} for k, v in metrics.items()}
    logger.info(
        "alignment: %d metrics (%d defined)", len(metrics), sum(np.isfinite(list(metrics.values())))
    )
    return metrics, detail, mlflow
