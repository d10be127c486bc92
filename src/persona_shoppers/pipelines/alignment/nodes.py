"""Nodes of the alignment pipeline: test cases from held-out humans, agent answers per
condition, the instruction-following benchmark, every alignment metric with its baselines and
human noise floor, and the report (PAARS 4-5, appendices B and D; SimPersona 3.2-3.4,
appendices F, I and J). Metric definitions: ``docs/alignment_metrics.md``; the pipeline:
``docs/alignment.md``."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd
import polars as pl
from tqdm.auto import tqdm

from persona_shoppers.agent.conditions import as_dict, condition_llm
from persona_shoppers.agent.population import text_persona_profile
from persona_shoppers.agent.prompts import persona_token
from persona_shoppers.agent.rollout import OUTCOMES, AgentSpec, RolloutEngine
from persona_shoppers.agent.tasks import (
    conditional_perplexity,
    generate_queries,
    goal_claims,
    select_items,
    select_ranks,
    task_prompt,
)
from persona_shoppers.alignment.cases import (
    item_selection_cases,
    query_generation_cases,
    rank_selection_cases,
    redact_history,
)
from persona_shoppers.alignment.instructions import instruction_tasks, task_success
from persona_shoppers.alignment.report import render_report
from persona_shoppers.features.embeddings import TextEmbedder
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
    perplexity_strata,
    rowwise_cosine,
    type_token_ratio,
)
from persona_shoppers.storefront import build_stores

logger = logging.getLogger(__name__)

Metrics = dict[str, float]


# --------------------------------------------------------------------------------------------
# test cases
# --------------------------------------------------------------------------------------------


def _persona_buyers(text_personas: pd.DataFrame) -> pd.DataFrame:
    ok = text_personas[text_personas["status"] == "ok"]
    if ok.empty:
        raise ValueError(
            "alignment: text_personas has no buyer with status 'ok'; run "
            "`kedro run --pipelines=persona_mining` (persona_mining.text_personas.n_buyers > 0)"
        )
    return ok[["shop_id", "buyer_id"]].drop_duplicates().reset_index(drop=True)


def _stores(products, collections, collection_products, shops, params) -> dict:
    return build_stores(
        products,
        collections,
        collection_products,
        shops=shops,
        max_observation_tokens=params["max_observation_tokens"],
    )


def build_alignment_cases(
    enriched_events: pl.DataFrame,
    text_personas: pd.DataFrame,
    raw_products: pd.DataFrame,
    raw_collections: pd.DataFrame,
    raw_collection_products: pd.DataFrame,
    params: dict[str, Any],
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The test sets, from the held-out buyers that have a PAARS text persona (query
    generation, item selection, rank selection) and from their shops' sessions (instruction
    following)."""
    buyers = _persona_buyers(text_personas)
    shops = sorted(buyers["shop_id"].unique())
    cases = params["cases"]
    stores = _stores(raw_products, raw_collections, raw_collection_products, shops, params)
    query = query_generation_cases(
        enriched_events, buyers, cases["window_s"], cases["max_per_buyer"]
    )
    items = item_selection_cases(
        enriched_events,
        raw_products,
        buyers,
        cases["n_distractors"],
        cases["max_per_buyer"],
        params["seed"],
    )
    ranks = rank_selection_cases(
        enriched_events,
        buyers,
        {s: stores[s].search_results for s in shops},
        cases["window_s"],
        cases["max_per_buyer"],
    )
    spec = params["instruction_following"]
    tasks = instruction_tasks(
        enriched_events.filter(pl.col("shop_id").is_in(shops)),
        spec["tasks_per_bin"],
        spec["length_bins"],
        params["seed"],
    )
    for name, table in (
        ("query generation", query),
        ("item selection", items),
        ("rank selection", ranks),
        ("instruction following", tasks),
    ):
        if table.empty:
            raise ValueError(
                f"alignment: no {name} case among {len(buyers)} buyers with a text persona "
                f"in shops {shops}: raise persona_mining.text_personas.n_buyers"
            )
    return query, items, ranks, tasks


# --------------------------------------------------------------------------------------------
# agent answers
# --------------------------------------------------------------------------------------------


def _persona_parts(
    text_personas: pd.DataFrame, buyer_histories: pd.DataFrame, persona_assignments: pd.DataFrame
) -> pd.DataFrame:
    """Per (shop, buyer): the profile, preferences, history and persona token texts."""
    ok = text_personas[text_personas["status"] == "ok"]
    parts = ok[["shop_id", "buyer_id"]].copy()
    parts["profile"] = [text_persona_profile(as_dict(p), None) for p in ok["profile"]]
    parts["preferences"] = [text_persona_profile(None, as_dict(p)) for p in ok["preferences"]]
    parts = parts.merge(
        buyer_histories[["shop_id", "buyer_id", "history_text"]], on=["shop_id", "buyer_id"]
    ).merge(persona_assignments[["shop_id", "buyer_id", "token"]], on=["shop_id", "buyer_id"])
    parts["token"] = [persona_token(k) for k in parts["token"]]
    return parts.set_index(["shop_id", "buyer_id"])


def _profiles(
    cases: pd.DataFrame,
    parts: pd.DataFrame,
    components: list[str],
    hidden: list[list[str]],
    history_chars: int,
) -> list[str | None]:
    """The profile line of each case: the condition's persona components, the history without
    the case's test items (``hidden``), its most recent ``history_chars`` characters."""
    out = []
    for (shop, buyer), phrases in zip(
        zip(cases["shop_id"], cases["buyer_id"], strict=True), hidden, strict=True
    ):
        row = parts.loc[(shop, buyer)]
        texts = []
        for part in components:
            if part == "history":
                history = redact_history(row["history_text"], phrases)[-history_chars:]
                texts.append("history: " + history.replace("\n", " / "))
            else:
                texts.append(row[part])
        out.append("; ".join(t for t in texts if t) or None)
    return out


def _check_buyers(parts: pd.DataFrame, *tables: pd.DataFrame) -> None:
    known = set(parts.index)
    for table in tables:
        missing = set(zip(table["shop_id"], table["buyer_id"], strict=True)) - known
        if missing:
            raise ValueError(
                f"alignment: {len(missing)} case buyers lack a text persona, a history or a "
                f"token (e.g. {sorted(missing)[:3]}); rerun the persona_mining pipeline"
            )


def answer_individual_tasks(
    query_cases: pd.DataFrame,
    item_cases: pd.DataFrame,
    rank_cases: pd.DataFrame,
    text_personas: pd.DataFrame,
    buyer_histories: pd.DataFrame,
    persona_assignments: pd.DataFrame,
    sft_model: Any,
    raw_products: pd.DataFrame,
    raw_collections: pd.DataFrame,
    raw_collection_products: pd.DataFrame,
    params: dict[str, Any],
    llm_params: dict[str, Any],
) -> pd.DataFrame:
    """Every condition's answers to the three individual tasks (PAARS Table 3's ablation and
    the persona token). One row per (task, case, condition): ``query`` (query generation) or
    ``choice`` (item selection: the option index; rank selection: the 1-based rank)."""
    parts = _persona_parts(text_personas, buyer_histories, persona_assignments)
    _check_buyers(parts, query_cases, item_cases, rank_cases)
    shops = sorted({*query_cases["shop_id"], *item_cases["shop_id"], *rank_cases["shop_id"]})
    stores = _stores(raw_products, raw_collections, raw_collection_products, shops, params)
    chars = params["history_chars"]
    hidden_query = [[q, t] for q, t in zip(query_cases["query"], query_cases["title"], strict=True)]
    hidden_items = [list(t) for t in item_cases["titles"]]
    hidden_ranks = [[q] for q in rank_cases["query"]]
    rows, llms = [], {}
    conditions = params["individual_tasks"]["conditions"]
    for condition, spec in tqdm(conditions.items(), desc="conditions", unit="condition"):
        if spec["model"] not in llms:  # one load per model, shared by its conditions
            llms[spec["model"]] = condition_llm(
                spec["model"], {"sft": sft_model}, llm_params, params["llm_cache"]
            )
        llm = llms[spec["model"]]
        components = list(spec["persona"])
        logger.info("individual tasks: condition %s (%s, %s)", condition, spec["model"], components)
        queries = generate_queries(
            llm,
            stores,
            query_cases["shop_id"],
            query_cases["title"],
            _profiles(query_cases, parts, components, hidden_query, chars),
            params["individual_tasks"]["max_query_tokens"],
            seed=params["seed"],
        )
        picks = select_items(
            llm,
            stores,
            item_cases["shop_id"],
            item_cases["product_ids"],
            _profiles(item_cases, parts, components, hidden_items, chars),
        )
        ranks = select_ranks(
            llm,
            stores,
            rank_cases["shop_id"],
            rank_cases["query"],
            _case_categories(rank_cases, raw_products),
            _profiles(rank_cases, parts, components, hidden_ranks, chars),
            seed=params["seed"],
        )
        rows += [("query_generation", i, condition, q, None) for i, q in enumerate(queries)]
        rows += [("item_selection", i, condition, None, c) for i, c in enumerate(picks)]
        rows += [("rank_selection", i, condition, None, r) for i, r in enumerate(ranks)]
    answers = pd.DataFrame(rows, columns=["task", "case", "condition", "query", "choice"])
    answers["choice"] = answers["choice"].astype("Int64")
    return answers


def _case_categories(rank_cases: pd.DataFrame, products: pd.DataFrame) -> list[str]:
    category = dict(zip(products["product_id"], products["category"], strict=True))
    return [category[p] for p in rank_cases["product_id"]]


def score_query_perplexity(
    query_cases: pd.DataFrame, params: dict[str, Any], llm_params: dict[str, Any]
) -> pd.DataFrame:
    """Each human query's perplexity after its viewed product, by the default LLM (PAARS
    uses GPT-2; no package ships it here), and its quantile stratum."""
    llm = condition_llm("llm", {}, llm_params, params["llm_cache"])
    contexts = [f"Viewed product: {t}\nSearch query that led to it:" for t in query_cases["title"]]
    ppl = conditional_perplexity(llm, contexts, list(query_cases["query"]))
    n_strata = min(params["perplexity_strata"], len(ppl))
    strata, edges = perplexity_strata(ppl, n_strata=n_strata) if n_strata > 1 else ([0], [])
    logger.info("query perplexity: median %.1f, stratum edges %s", np.median(ppl), list(edges))
    return pd.DataFrame({"case": np.arange(len(ppl)), "perplexity": ppl, "stratum": strata})


# --------------------------------------------------------------------------------------------
# instruction following (SimPersona 3.4)
# --------------------------------------------------------------------------------------------


def run_instruction_following(
    instruction_tasks: pd.DataFrame,
    persona_assignments: pd.DataFrame,
    sft_model: Any,
    raw_products: pd.DataFrame,
    raw_collections: pd.DataFrame,
    raw_collection_products: pd.DataFrame,
    params: dict[str, Any],
    llm_params: dict[str, Any],
) -> pd.DataFrame:
    """Each task, ``repeats`` times per condition (seeded sampling), then the agent's own
    claim that it reached its goal. One row per run."""
    spec = params["instruction_following"]
    shops = sorted(instruction_tasks["shop_id"].unique())
    stores = _stores(raw_products, raw_collections, raw_collection_products, shops, params)
    tokens = persona_assignments.set_index(["shop_id", "buyer_id"])["token"]
    rows = []
    for condition, cond in spec["conditions"].items():
        llm = condition_llm(cond["model"], {"sft": sft_model}, llm_params, cache=False)
        engine = RolloutEngine(
            llm,
            stores,
            max_steps=spec["max_steps"],
            decoding="sample",
            temperature=spec["temperature"],
            query_temperature=spec["query_temperature"],
            lockstep=spec["lockstep"],
            max_query_tokens=spec["max_query_tokens"],
        )
        specs, meta = [], []
        for task in instruction_tasks.to_dict("records"):
            token = tokens.get((task["shop_id"], task["buyer_id"]))
            profile = persona_token(token) if cond["profile"] == "token" else None
            for repeat in range(spec["repeats"]):
                seed = int(
                    np.random.SeedSequence([params["seed"], len(specs)]).generate_state(1)[0]
                )
                agent_id = f"{task['task_id']}-{condition}-r{repeat}"
                specs.append(AgentSpec(agent_id, task["shop_id"], task["goal"], profile, seed))
                meta.append({**task, "condition": condition, "repeat": repeat})
        logger.info("instruction following: %s, %d runs", condition, len(specs))
        runs = engine.run(specs)
        claims = goal_claims(
            llm,
            [task_prompt(r.spec.goal, r.observation, r.spec.profile) for r in runs],
        )
        for m, run, claim in zip(meta, runs, claims, strict=True):
            rows.append(
                {
                    "task_id": m["task_id"],
                    "condition": condition,
                    "repeat": m["repeat"],
                    "length_bin": m["length_bin"],
                    "n_task_actions": m["n_actions"],
                    "required": m["required"],
                    "n_steps": len(run.actions),
                    "outcome": run.outcome,
                    "n_errors": len(run.errors),
                    "success": task_success(run.events, m["required"]),
                    "claimed": claim,
                }
            )
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------
# metrics
# --------------------------------------------------------------------------------------------


def _name(task: str, metric: str, condition: str) -> str:
    return f"{task}/{metric}/{condition}"


def _safe(fn: Callable[[], float], what: str) -> float:
    """A metric, or NaN (logged with the reason) when the sample cannot support it."""
    try:
        return float(fn())
    except ValueError as err:
        logger.warning("alignment: %s is undefined here: %s", what, err)
        return float("nan")


def query_generation_metrics(
    query_cases: pd.DataFrame,
    perplexities: pd.DataFrame,
    answers: pd.DataFrame,
    embedder: TextEmbedder,
    params: dict[str, Any],
) -> tuple[Metrics, dict[str, Any]]:
    """Cosine similarity (overall, per perplexity stratum) and the KDE KL sweep, for every
    condition, the title-as-query baseline and the human noise floor."""
    task, kde = "query_generation", params["kde"]
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
            params["seed"],
            kde["reference_bandwidth"],
        )

    for condition, queries in by_condition.items():
        agent = embedder.embed([q if q else " " for q in queries])
        cosine = rowwise_cosine(human, agent)
        metrics[_name(task, "cosine", condition)] = float(cosine.mean())
        per_stratum = by_stratum(cosine, strata)
        for s, v in per_stratum.items():
            metrics[_name(task, f"cosine_ppl_stratum_{s}", condition)] = v
        detail["similarity_by_stratum"][condition] = per_stratum
        result = sweep(human, agent)
        detail["kde_sweep"][condition] = result
        metrics[_name(task, "kde_kl", condition)] = result["kl"]
        for h, m in zip(result["bandwidths"], result["mean"], strict=True):
            metrics[_name(task, f"kde_kl_h{h:g}", condition)] = m
    floor = noise_floor(
        lambda a, b: sweep(a, b)["kl"], human, params["seed"], params["noise_floor_repeats"]
    )
    metrics[_name(task, "kde_kl", "human_noise_floor")] = floor["mean"]
    return metrics, detail


def item_selection_metrics(
    item_cases: pd.DataFrame, answers: pd.DataFrame, events: pl.DataFrame, seed: int
) -> Metrics:
    """4-way accuracy per condition, a random choice and the most-purchased option."""
    task = "item_selection"
    truth = item_cases["answer"].to_numpy()
    picked = answers[answers["task"] == task]
    metrics = {
        _name(task, "accuracy", c): accuracy(g.sort_values("case")["choice"].to_numpy(int), truth)
        for c, g in picked.groupby("condition")
    }
    rng = np.random.default_rng(seed)
    sizes = item_cases["product_ids"].map(len).to_numpy()
    metrics[_name(task, "accuracy", "random_choice")] = accuracy(rng.integers(0, sizes), truth)
    sales = events.filter(pl.col("event_type") == "purchase").group_by("product_id").len("n")
    counts = dict(zip(sales["product_id"].to_list(), sales["n"].to_list(), strict=True))
    popular = [int(np.argmax([counts.get(p, 0) for p in ids])) for ids in item_cases["product_ids"]]
    metrics[_name(task, "accuracy", "most_popular")] = accuracy(popular, truth)
    return metrics


def rank_selection_metrics(
    rank_cases: pd.DataFrame, answers: pd.DataFrame, params: dict[str, Any]
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
    rng = np.random.default_rng(params["seed"])
    ranks["random_rank"] = rng.integers(1, rank_cases["results"].map(len).to_numpy() + 1)
    metrics = {
        _name(task, "rank_kl", c): rank_distribution_kl(human, r, n_ranks) for c, r in ranks.items()
    }
    floor = noise_floor(
        lambda a, b: rank_distribution_kl(a, b, n_ranks),
        human,
        params["seed"],
        params["noise_floor_repeats"],
    )
    metrics[_name(task, "rank_kl", "human_noise_floor")] = floor["mean"]
    hist = {
        c: np.bincount(r, minlength=n_ranks + 1)[1:].tolist()
        for c, r in {"human": human, **ranks}.items()
    }
    return metrics, {"rank_histograms": hist}


SESSION_COUNTS = {"searches": "n_searches", "views": "n_product_views", "purchases": "n_purchases"}


def _counts(sessions: pd.DataFrame, column: str, cap: int) -> np.ndarray:
    return np.minimum(sessions[column].to_numpy(int), cap)


def _ttr(texts: list[str]) -> float:
    return _safe(lambda: type_token_ratio(texts), "type-token ratio") if texts else float("nan")


def _flat(lists: pd.Series) -> list[str]:
    return [t for items in lists for t in (items if items is not None else [])]


def session_metrics(
    human: pd.DataFrame, simulated: pd.DataFrame, params: dict[str, Any]
) -> tuple[Metrics, dict[str, Any]]:
    """KL over searches, views and purchases per session (counts capped at ``max_count``,
    smoothing epsilon 1e-6 on the probability scale), query and title TTRs, per condition; the
    marginal-resample baseline and the human noise floor."""
    task, cap, seed = "session", params["session"]["max_count"], params["seed"]
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
            metrics[_name(task, f"kl_{label}", condition)] = discrete_kl(h, a, support)
            hist[label][condition] = (np.bincount(a, minlength=cap + 1) / a.size).tolist()
        floor = noise_floor(
            lambda x, y: discrete_kl(x, y, support), h, seed, params["noise_floor_repeats"]
        )
        metrics[_name(task, f"kl_{label}", "human_noise_floor")] = floor["mean"]
    for condition, g in groups.items():
        metrics[_name(task, "query_ttr", condition)] = _ttr(_flat(g["queries"]))
        metrics[_name(task, "title_ttr", condition)] = _ttr(_flat(g["viewed_titles"]))
    # Human TTRs on samples of the agents' size: a TTR falls as the sample grows.
    picks = [rng.choice(len(human), min(size, len(human)), replace=False) for _ in range(5)]
    for metric, column in (("query_ttr", "queries"), ("title_ttr", "viewed_titles")):
        values = [_ttr(_flat(human[column].iloc[p])) for p in picks]
        metrics[_name(task, metric, "human")] = float(np.nanmean(values))
    return metrics, {"session_histograms": hist, "max_count": cap}


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
    conditioned = sessions["persona_token"].str.extract(r"<\|persona_(\d+)\|>")[0]
    return conditioned.fillna(sessions["buyer_token"].astype(str)).astype(int).to_numpy()


def _flatten_alignment(result: Mapping[str, Any], condition: str) -> Metrics:
    task, out = "action_rate", {}
    for pairing, table in result.items():
        suffix = "" if pairing == "correct" else f"_{pairing}"
        for metric in ("atc", "purchase", "ara"):
            out[_name(task, f"{metric}{suffix}", condition)] = table["stratified"][metric]
            for stratum, row in table["per_stratum"].items():
                out[_name(task, f"{metric}{suffix}_stratum_{stratum}", condition)] = row[metric]
    return out


def action_rate_metrics(
    simulated: pd.DataFrame,
    buyers: pd.DataFrame,
    assignments: pd.DataFrame,
    params: dict[str, Any],
) -> tuple[Metrics, dict[str, Any]]:
    """ATC / purchase alignment and ARA per stratum and stratified, correct vs all-mismatch vs
    random-mismatch (SimPersona Table 2), per condition. An agent's pair is (shop, the token
    of the buyer it stands for): under ``token_mismatch`` it is conditioned on another token
    and still compared with its own buyer's pair. A token-blind baseline (every pair
    gets its shop's human rates) and the human noise floor (two halves of the real buyers)."""
    seed = params["seed"]
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
    for _ in range(params["noise_floor_repeats"]):
        half = rng.permutation(len(real)) < len(real) // 2
        first, second = real[half], real[~half]
        pairs = set(zip(first["shop"], first["token"], strict=True))
        keep = [p in pairs for p in zip(second["shop"], second["token"], strict=True)]
        floors.append(persona_pairing_alignment(first, second[keep], seed)["correct"])
    for metric in ("atc", "purchase", "ara"):
        metrics[_name("action_rate", metric, "human_noise_floor")] = float(
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
    simulated: pd.DataFrame, persona_cards: list[dict], params: dict[str, Any]
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
                metrics[_name("separation", f"{head}_{name}", condition)] = float("nan")
            try:
                row = separation_tests(
                    values, labels, "low", "high", params["permutation_draws"], params["seed"]
                )
            except ValueError as err:
                logger.warning("separation %s / %s: %s", head, condition, err)
                continue
            for name in ("cohens_d", "welch_p", "kruskal_p", "permutation_p"):
                metrics[_name("separation", f"{head}_{name}", condition)] = row[name]
            for level, mean in row["mean_per_bin"].items():
                metrics[_name("separation", f"{head}_mean_{level}", condition)] = mean
    return metrics


def instruction_metrics(runs: pd.DataFrame) -> Metrics:
    """Success rate (overall, per length bin), steps per run, error rate and the calibration of
    the agent's own goal claims, per condition (SimPersona Table 4)."""
    task, metrics = "instruction_following", {}
    for condition, g in runs.groupby("condition"):
        metrics[_name(task, "success_rate", condition)] = float(g["success"].mean())
        for label, b in g.groupby("length_bin"):
            metrics[_name(task, f"success_rate_len_{label}", condition)] = float(
                b["success"].mean()
            )
        metrics[_name(task, "steps_per_run", condition)] = float(g["n_steps"].mean())
        metrics[_name(task, "error_rate", condition)] = float((g["n_errors"] > 0).mean())
        for key, value in calibration(g["claimed"], g["success"]).items():
            if key != "n":
                metrics[_name(task, f"calibration_{key}", condition)] = value
    return metrics


def ablation_metrics(simulated: pd.DataFrame, params: dict[str, Any]) -> Metrics:
    """Appendix F (two-stage vs single-stage SFT: outcome and error rates) and appendix I
    (persona token vs none under intent-neutral goals: outcomes, add-to-cart and checkout
    counts, actions and pages per session)."""
    metrics, population = {}, params["ablation_population"]
    for task, conditions in params["ablations"].items():
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
                metrics[_name(task, f"outcome_{outcome}", condition)] = float(
                    (g["outcome"] == outcome).mean()
                )
            metrics[_name(task, "error_rate", condition)] = float((g["n_errors"] > 0).mean())
            metrics[_name(task, "atc_per_session", condition)] = float(g["n_add_to_cart"].mean())
            metrics[_name(task, "checkout_per_session", condition)] = float(
                g["n_checkout_starts"].mean()
            )
            metrics[_name(task, "actions_per_session", condition)] = float(g["n_actions"].mean())
            pages = g["n_page_views"] + g["n_product_views"] + g["n_collection_views"]
            metrics[_name(task, "pages_per_session", condition)] = float(pages.mean())
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
            metrics[_name("ab_test", f"{stem}.{stat}", row["condition"])] = float(value)
    return metrics


def compute_alignment_metrics(
    query_cases: pd.DataFrame,
    query_perplexities: pd.DataFrame,
    item_cases: pd.DataFrame,
    rank_cases: pd.DataFrame,
    individual_answers: pd.DataFrame,
    instruction_runs: pd.DataFrame,
    enriched_sessions: pl.DataFrame,
    enriched_events: pl.DataFrame,
    simulated_sessions: pd.DataFrame,
    buyers: pd.DataFrame,
    persona_assignments: pd.DataFrame,
    persona_cards: list[dict],
    ab_test_results: pd.DataFrame,
    params: dict[str, Any],
) -> tuple[Metrics, dict[str, Any], dict[str, Any]]:
    """Every alignment number, named ``<task>/<metric>/<condition>`` (json and MLflow), and
    the per-bin details the report plots."""
    embedder = TextEmbedder(params["embedding_model"], params["embedding_cache_dir"])
    logger.info("alignment metrics: query generation (MiniLM cosine, KDE KL sweep)")
    metrics, detail = query_generation_metrics(
        query_cases, query_perplexities, individual_answers, embedder, params
    )
    metrics.update(
        item_selection_metrics(item_cases, individual_answers, enriched_events, params["seed"])
    )
    logger.info("alignment metrics: item and rank selection")
    ranks, rank_detail = rank_selection_metrics(rank_cases, individual_answers, params)
    shops = sorted(simulated_sessions["shop_id"].unique())
    human = enriched_sessions.filter(pl.col("shop_id").is_in(shops)).to_pandas()
    human = human.sample(
        min(len(human), params["session"]["human_sessions"]), random_state=params["seed"]
    )
    logger.info("alignment metrics: sessions, action rates, separation tests, ablations, A/B")
    sessions, session_detail = session_metrics(human, simulated_sessions, params)
    rates, rate_detail = action_rate_metrics(
        simulated_sessions, buyers, persona_assignments, params
    )
    metrics.update(ranks)
    metrics.update(sessions)
    metrics.update(rates)
    metrics.update(separation_metrics(simulated_sessions, persona_cards, params))
    metrics.update(instruction_metrics(instruction_runs))
    metrics.update(ablation_metrics(simulated_sessions, params))
    metrics.update(ab_metrics(ab_test_results))
    detail.update(rank_detail)
    detail.update(session_detail)
    detail.update(rate_detail)
    metrics = {k: float(v) for k, v in sorted(metrics.items())}
    mlflow = {k: {"value": v, "step": 0} for k, v in metrics.items()}  # NaN stays NaN
    logger.info(
        "alignment: %d metrics (%d defined)", len(metrics), sum(np.isfinite(list(metrics.values())))
    )
    return metrics, detail, mlflow


# --------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------


def build_alignment_report(
    alignment_metrics: Metrics,
    alignment_details: dict[str, Any],
    population_recovery: dict[str, Any],
) -> tuple[str, dict[str, Any]]:
    """``alignment_report`` (markdown) and ``alignment_plots`` (PNGs), both also MLflow
    artifacts."""
    return render_report(alignment_metrics, alignment_details, population_recovery)
