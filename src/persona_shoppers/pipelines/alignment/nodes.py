"""Nodes of the alignment pipeline: test cases from held-out humans, agent answers per
condition, the instruction-following benchmark, one node per metric family
(``persona_shoppers.alignment.metrics``) and their merge, and the report (PAARS 4-5,
appendices B and D; SimPersona 3.2-3.4, appendices F, I and J). Metric definitions:
``docs/alignment_metrics.md``; the pipeline: ``docs/alignment.md``."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
import polars as pl
from tqdm.auto import tqdm

from persona_shoppers.agent.conditions import as_dict, condition_llm
from persona_shoppers.agent.population import text_persona_profile
from persona_shoppers.agent.rollout import AgentSpec, RolloutEngine
from persona_shoppers.agent.tasks import (
    conditional_perplexity,
    generate_queries,
    goal_claims,
    select_items,
    select_ranks,
    task_prompt,
)
from persona_shoppers.alignment.cases import (
    CUTOFF,
    item_selection_cases,
    query_generation_cases,
    rank_selection_cases,
    redact_history,
    reference_pairs,
)
from persona_shoppers.alignment.instructions import instruction_tasks, task_success
from persona_shoppers.alignment.metrics import (
    Metrics,
    counterpart_rates,
    funnel_metrics,
    held_out_human_sessions,
    merge_metric_families,
    population_sessions,
    query_generation_metrics,
    search_metrics,
    session_metrics,
)
from persona_shoppers.alignment.report import render_report
from persona_shoppers.features.embeddings import TextEmbedder
from persona_shoppers.features.sampling import even_per_shop
from persona_shoppers.metrics.text import perplexity_strata
from persona_shoppers.personas.token_format import persona_token
from persona_shoppers.storefront import Store

logger = logging.getLogger(__name__)

# The tasks made of a buyer's search and the view after it: a log without searches (REES46,
# RetailRocket) has no case of them, and they are reported as not measured.
SEARCH_TASKS = ("query generation", "rank selection")


# --------------------------------------------------------------------------------------------
# test cases
# --------------------------------------------------------------------------------------------


def _persona_buyers(text_personas: pd.DataFrame) -> pd.DataFrame:
    """The buyers with a valid text persona and their test cutoff (cases come after it)."""
    ok = text_personas[text_personas["status"] == "ok"]
    if ok.empty:
        raise ValueError(
            "alignment: text_personas has no buyer with status 'ok'; run "
            "`kedro run --pipelines=persona_mining` (persona_mining.text_personas.n_buyers > 0)"
        )
    if CUTOFF not in ok:
        raise ValueError(
            f"alignment: text_personas has no {CUTOFF!r} column (personas mined before the "
            "leakage-free cutoffs); rerun `kedro run --pipelines=persona_mining`"
        )
    return ok[["shop_id", "buyer_id", CUTOFF]].drop_duplicates().reset_index(drop=True)


def _stores(storefronts: dict[str, Store], shops: list[str]) -> dict[str, Store]:
    missing = sorted(set(shops) - set(storefronts))
    if missing:
        raise ValueError(f"alignment: storefronts has no store for shops {missing}")
    return {shop: storefronts[shop] for shop in shops}


def build_alignment_cases(
    enriched_events: pl.DataFrame,
    text_personas: pd.DataFrame,
    raw_products: pd.DataFrame,
    storefronts: dict[str, Store],
    cases: dict[str, Any],
    instruction_following: dict[str, Any],
    seed: int,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The test sets, from the held-out buyers that have a PAARS text persona (query
    generation, item selection, rank selection; at most ``cases.max_buyers`` of them, even
    over shops, seeded) and from their shops' sessions (instruction following), and the other
    buyers' query-view pairs the noise floors use."""
    buyers = _persona_buyers(text_personas)
    if cases.get("max_buyers") is not None:
        buyers = even_per_shop(buyers, int(cases["max_buyers"]), seed)
    shops = sorted(buyers["shop_id"].unique())
    stores = _stores(storefronts, shops)
    query = query_generation_cases(
        enriched_events, buyers, cases["window_s"], cases["max_per_buyer"]
    )
    items = item_selection_cases(
        enriched_events,
        raw_products,
        buyers,
        cases["n_distractors"],
        cases["max_per_buyer"],
        seed,
    )
    ranks = rank_selection_cases(
        enriched_events,
        buyers,
        {s: stores[s].search_results for s in shops},
        cases["window_s"],
        cases["max_per_buyer"],
    )
    others = reference_pairs(
        enriched_events, buyers, {s: stores[s].search_results for s in shops}, cases["window_s"]
    )
    spec = instruction_following
    tasks = instruction_tasks(
        enriched_events.filter(pl.col("shop_id").is_in(shops)),
        spec["tasks_per_bin"],
        spec["length_bins"],
        seed,
    )
    searched = enriched_events.filter(
        pl.col("shop_id").is_in(shops)
        & (pl.col("event_type") == "search")
        & pl.col("query").is_not_null()
    ).height
    for name, table in (
        ("query generation", query),
        ("item selection", items),
        ("rank selection", ranks),
        ("instruction following", tasks),
    ):
        if table.empty and name in SEARCH_TASKS and not searched:
            logger.warning(
                "alignment: no search with a query in shops %s (the log has none): %s is "
                "skipped and its metrics are reported as not measured",
                shops,
                name,
            )
        elif table.empty:
            raise ValueError(
                f"alignment: no {name} case among {len(buyers)} buyers with a text persona "
                f"in shops {shops}: raise persona_mining.text_personas.n_buyers"
            )
    return query, items, ranks, tasks, others


# --------------------------------------------------------------------------------------------
# agent answers
# --------------------------------------------------------------------------------------------


def _persona_parts(text_personas: pd.DataFrame) -> pd.DataFrame:
    """Per (shop, buyer): the profile, preferences, history and persona token texts, all of
    them from the events before the buyer's test cutoff (persona_mining)."""
    ok = text_personas[text_personas["status"] == "ok"]
    parts = ok[["shop_id", "buyer_id"]].copy()
    parts["profile"] = [text_persona_profile(as_dict(p), None) for p in ok["profile"]]
    parts["preferences"] = [text_persona_profile(None, as_dict(p)) for p in ok["preferences"]]
    parts["history_text"] = ok["history"].fillna("").to_numpy()
    parts["token"] = [persona_token(k) for k in ok["token"]]
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
    sft_model: Any,
    raw_products: pd.DataFrame,
    storefronts: dict[str, Store],
    individual_tasks: dict[str, Any],
    history_chars: int,
    llm_cache: bool,
    seed: int,
    llm_params: dict[str, Any],
) -> pd.DataFrame:
    """Every condition's answers to the three individual tasks (PAARS Table 3's ablation and
    the persona token). One row per (task, case, condition): ``query`` (query generation) or
    ``choice`` (item selection: the option index; rank selection: the 1-based rank)."""
    parts = _persona_parts(text_personas)
    _check_buyers(parts, query_cases, item_cases, rank_cases)
    shops = sorted({*query_cases["shop_id"], *item_cases["shop_id"], *rank_cases["shop_id"]})
    stores = _stores(storefronts, shops)
    chars = history_chars
    titles = raw_products.set_index(["shop_id", "product_id"])["title"]
    hidden_query = [
        [q, t, p]
        for q, t, p in zip(
            query_cases["query"], query_cases["title"], query_cases["product_id"], strict=True
        )
    ]
    hidden_items = [
        [*t, *p] for t, p in zip(item_cases["titles"], item_cases["product_ids"], strict=True)
    ]
    hidden_ranks = [
        [q, titles.get((s, p), ""), p]
        for s, q, p in zip(
            rank_cases["shop_id"], rank_cases["query"], rank_cases["product_id"], strict=True
        )
    ]
    rows, llms = [], {}
    conditions = individual_tasks["conditions"]
    for condition, spec in tqdm(conditions.items(), desc="conditions", unit="condition"):
        if spec["model"] not in llms:  # one load per model, shared by its conditions
            llms[spec["model"]] = condition_llm(
                spec["model"], {"sft": sft_model}, llm_params, llm_cache
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
            individual_tasks["max_query_tokens"],
            seed=seed,
            guidance=individual_tasks["query_guidance"],
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
            _profiles(rank_cases, parts, components, hidden_ranks, chars),
            seed=seed,
        )
        rows += [("query_generation", i, condition, q, None) for i, q in enumerate(queries)]
        rows += [("item_selection", i, condition, None, c) for i, c in enumerate(picks)]
        rows += [("rank_selection", i, condition, None, r) for i, r in enumerate(ranks)]
    answers = pd.DataFrame(rows, columns=["task", "case", "condition", "query", "choice"])
    answers["choice"] = answers["choice"].astype("Int64")
    return answers


def score_query_perplexity(
    query_cases: pd.DataFrame,
    llm_cache: bool,
    strata_count: int,
    llm_params: dict[str, Any],
) -> pd.DataFrame:
    """Each human query's perplexity after its viewed product, by the default LLM (PAARS
    uses GPT-2; no package ships it here), and its quantile stratum."""
    if query_cases.empty:  # a log without searches
        return pd.DataFrame({"case": [], "perplexity": [], "stratum": []}).astype(
            {"case": int, "perplexity": float, "stratum": int}
        )
    llm = condition_llm("llm", {}, llm_params, llm_cache)
    contexts = [f"Viewed product: {t}\nSearch query that led to it:" for t in query_cases["title"]]
    ppl = conditional_perplexity(llm, contexts, list(query_cases["query"]))
    n_strata = min(strata_count, len(ppl))
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
    storefronts: dict[str, Store],
    instruction_following: dict[str, Any],
    seed: int,
    llm_params: dict[str, Any],
) -> pd.DataFrame:
    """Each task, ``repeats`` times per condition (seeded sampling), then the agent's own
    claim that it reached its goal. One row per run."""
    spec = instruction_following
    shops = sorted(instruction_tasks["shop_id"].unique())
    stores = _stores(storefronts, shops)
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
            query_guidance=spec["query_guidance"],
            lockstep=spec["lockstep"],
            max_query_tokens=spec["max_query_tokens"],
        )
        specs, meta = [], []
        for task in instruction_tasks.to_dict("records"):
            token = tokens.get((task["shop_id"], task["buyer_id"]))
            profile = persona_token(token) if cond["profile"] == "token" else None
            for repeat in range(spec["repeats"]):
                seed = int(np.random.SeedSequence([seed, len(specs)]).generate_state(1)[0])
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
# metrics: one node per family (persona_shoppers.alignment.metrics), then their merge
# --------------------------------------------------------------------------------------------


def measure_query_generation(
    query_cases: pd.DataFrame,
    query_perplexities: pd.DataFrame,
    individual_answers: pd.DataFrame,
    reference_pairs: pd.DataFrame,
    embedding_model: str,
    embedding_cache_dir: str,
    kde: dict[str, Any],
    seed: int,
    bootstrap_draws: int,
) -> tuple[Metrics, dict[str, Any]]:
    """Query-generation metrics on MiniLM embeddings of the queries (docs/alignment.md)."""
    logger.info("alignment metrics: query generation (MiniLM cosine, KDE KL sweep)")
    embedder = TextEmbedder(embedding_model, embedding_cache_dir)
    return query_generation_metrics(
        query_cases,
        query_perplexities,
        individual_answers,
        reference_pairs,
        embedder,
        kde,
        seed,
        bootstrap_draws,
    )


def measure_sessions(
    enriched_sessions: pl.DataFrame,
    simulated_sessions: pd.DataFrame,
    storefronts: dict[str, Store],
    session: dict[str, Any],
    population: str,
    seed: int,
    bootstrap_draws: int,
) -> tuple[Metrics, dict[str, Any]]:
    """Session-generation metrics against a sample of the simulated shops' human sessions
    (with how often a search finds nothing in the store), and the funnel against the humans
    the same agents stand for."""
    human = held_out_human_sessions(
        enriched_sessions, simulated_sessions, session["human_sessions"], seed
    )
    metrics, detail = session_metrics(
        human, simulated_sessions, population, session["max_count"], seed, bootstrap_draws
    )

    def found(shop: str, query: str) -> bool:
        return bool(storefronts[shop].search_results(query))

    metrics |= search_metrics(human, simulated_sessions, population, found, seed, bootstrap_draws)
    agents = population_sessions(simulated_sessions, population)
    agents = agents[agents["condition"] == agents["condition"].iloc[0]]
    rates = counterpart_rates(enriched_sessions, agents)
    metrics |= funnel_metrics(simulated_sessions, rates, population, seed, bootstrap_draws)
    return metrics, detail


def merge_alignment_metrics(
    query_generation: Metrics,
    item_selection: Metrics,
    rank_selection: Metrics,
    session: Metrics,
    action_rate: Metrics,
    separation: Metrics,
    instruction_following: Metrics,
    ablation: Metrics,
    ab_test: Metrics,
    query_generation_details: dict[str, Any],
    rank_selection_details: dict[str, Any],
    session_details: dict[str, Any],
    action_rate_details: dict[str, Any],
) -> tuple[Metrics, dict[str, Any], dict[str, Any]]:
    """``alignment_metrics`` (``<task>/<metric>/<condition>``, json), ``alignment_details``
    (the per-bin values the report plots) and ``alignment_mlflow_metrics``."""
    return merge_metric_families(
        [
            query_generation,
            item_selection,
            rank_selection,
            session,
            action_rate,
            separation,
            instruction_following,
            ablation,
            ab_test,
        ],
        [query_generation_details, rank_selection_details, session_details, action_rate_details],
    )


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
