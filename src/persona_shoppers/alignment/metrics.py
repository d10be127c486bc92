"""The alignment metric families, one function per task, each with its baselines and human
noise floor (docs/alignment.md), and their merge into ``alignment_metrics``. Every headline
number comes with its sample size and a 95% bootstrap interval (``.../n``, ``.../ci_low``,
``.../ci_high``); baselines and floors are computed on the same cells and sample sizes as the
conditions beside them. Definitions of the underlying statistics: docs/alignment_metrics.md."""

from __future__ import annotations

import itertools
import logging
import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import pandas as pd
import polars as pl

from persona_shoppers.agent.rollout import OUTCOMES
from persona_shoppers.alignment.naming import MATCHED_HUMANS, metric_name
from persona_shoppers.clickstream.buyers import PERSONA_STRATA
from persona_shoppers.metrics.behaviour import (
    calibration,
    cohens_d,
    discrete_kl,
    pairing_alignment,
    rank_distribution_kl,
    real_pair_rates,
    search_shares,
    separation_tests,
)
from persona_shoppers.metrics.intervals import (
    bootstrap_interval,
    bootstrap_values,
    mean_interval,
    percentile_interval,
)
from persona_shoppers.metrics.text import (
    by_stratum,
    kde_kl_divergence,
    kde_kl_sweep,
    rowwise_cosine,
    type_token_ratio,
)
from persona_shoppers.personas.token_format import PERSONA_PATTERN

logger = logging.getLogger(__name__)

Metrics = dict[str, float]


class Embedder(Protocol):
    def embed(self, texts: list[str]) -> np.ndarray: ...


# Reference rows beside the conditions (docs/alignment.md, "Baselines and floors").
HUMAN_FLOOR = "human_noise_floor"
BASE = "base"
# The persona-token model given another buyer's token: against it, what the token itself adds.
TOKEN_MISMATCH = "token_mismatch"


def _stream(seed: int, *names: str) -> int:
    """A seed of its own for each named quantity, stable across runs and orderings."""
    words = [seed, *(zlib.crc32(n.encode()) for n in names)]
    return int(np.random.SeedSequence(words).generate_state(1)[0])


def _put(
    metrics: Metrics,
    task: str,
    metric: str,
    condition: str,
    value: float,
    n: int | None = None,
    interval: tuple[float, float] | None = None,
) -> None:
    """A value, and its sample size and 95% interval when given."""
    metrics[metric_name(task, metric, condition)] = float(value)
    if n is not None:
        metrics[metric_name(task, metric, condition, "n")] = float(n)
    if interval is not None:
        metrics[metric_name(task, metric, condition, "ci_low")] = float(interval[0])
        metrics[metric_name(task, metric, condition, "ci_high")] = float(interval[1])


def _put_mean(
    metrics: Metrics, task: str, metric: str, condition: str, values: Any, draws: int, seed: int
) -> None:
    """The mean of per-unit values with its n and bootstrap interval."""
    x = np.asarray(values, dtype=float)
    interval = mean_interval(x, draws, _stream(seed, task, metric, condition))
    _put(metrics, task, metric, condition, x.mean() if x.size else np.nan, x.size, interval)


def _disjoint_sample(pool: Sequence[Any], n: int, seed: int, what: str) -> np.ndarray:
    """``n`` entries of ``pool`` without replacement (all of it, logged, when it is smaller)."""
    values = np.asarray(pool)
    if len(values) < n:
        logger.warning(
            "alignment: %s has %d humans for a floor of %d; the floor uses all of them",
            what,
            len(values),
            n,
        )
    rng = np.random.default_rng(seed)
    return values[rng.permutation(len(values))[: min(n, len(values))]]


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


def _answers_of(answers: pd.DataFrame, task: str, column: str) -> dict[str, pd.Series]:
    """Each condition's answers to ``task``, in case order."""
    mine = answers[answers["task"] == task]
    return {c: g.sort_values("case")[column] for c, g in mine.groupby("condition")}


def _put_minus_base(
    metrics: Metrics,
    task: str,
    metric: str,
    per_case: Mapping[str, np.ndarray],
    draws: int,
    seed: int,
) -> None:
    """Each condition's per-case value minus base's on the same cases (paired interval)."""
    if BASE not in per_case:
        return
    for condition, values in per_case.items():
        if condition != BASE:
            diff = np.asarray(values, float) - np.asarray(per_case[BASE], float)
            _put_mean(metrics, task, f"{metric}_minus_base", condition, diff, draws, seed)


def query_generation_metrics(
    query_cases: pd.DataFrame,
    perplexities: pd.DataFrame,
    answers: pd.DataFrame,
    reference_pairs: pd.DataFrame,
    embedder: Embedder,
    kde: Mapping[str, Any],
    seed: int,
    draws: int,
) -> tuple[Metrics, dict[str, Any]]:
    """Cosine similarity (overall, per perplexity stratum, paired against base) and the KDE KL
    sweep, for every condition and the title-as-query baseline; the human noise floor is the
    KDE KL between the cases' queries and as many queries of other humans of the same shops
    (``reference_pairs``)."""
    task = "query_generation"
    if query_cases.empty:  # a log without searches: not measured (the report says so)
        return {}, {"similarity_by_stratum": {}, "kde_sweep": {}}
    human = embedder.embed(list(query_cases["query"]))
    n = len(human)
    strata = perplexities.sort_values("case")["stratum"].to_numpy()
    by_condition = {
        c: q.fillna("").tolist() for c, q in _answers_of(answers, task, "query").items()
    }
    by_condition["title_as_query"] = list(query_cases["title"])
    metrics, detail = {}, {"similarity_by_stratum": {}, "kde_sweep": {}}
    h, samples = kde["reference_bandwidth"], kde["n_samples"]

    def sweep(p: np.ndarray, q: np.ndarray) -> dict[str, Any]:
        return kde_kl_sweep(p, q, kde["bandwidths"], kde["repeats"], samples, seed, h)

    def put_kde(condition: str, agent: np.ndarray, paired: bool) -> None:
        result = sweep(human, agent)
        detail["kde_sweep"][condition] = result
        s = _stream(seed, task, "kde_kl", condition)
        if paired:  # the same cases on both sides

            def kl(i):
                return kde_kl_divergence(human[i], agent[i], h, samples, seed)

            interval = bootstrap_interval(kl, n, draws, s)
        else:

            def kl(i, j):
                return kde_kl_divergence(human[i], agent[j], h, samples, seed)

            interval = bootstrap_interval(kl, (n, len(agent)), draws, s)
        _put(metrics, task, "kde_kl", condition, result["kl"], len(agent), interval)
        for bw, m in zip(result["bandwidths"], result["mean"], strict=True):
            metrics[metric_name(task, f"kde_kl_h{bw:g}", condition)] = m

    cosines = {}
    for condition, queries in by_condition.items():
        agent = embedder.embed([q if q else " " for q in queries])
        cosines[condition] = rowwise_cosine(human, agent)
        _put_mean(metrics, task, "cosine", condition, cosines[condition], draws, seed)
        per_stratum = by_stratum(cosines[condition], strata)
        for s, v in per_stratum.items():
            metrics[metric_name(task, f"cosine_ppl_stratum_{s}", condition)] = v
        detail["similarity_by_stratum"][condition] = per_stratum
        put_kde(condition, agent, paired=True)
    _put_minus_base(metrics, task, "cosine", cosines, draws, seed)
    others = reference_pairs["query"].dropna().tolist()
    floor = _disjoint_sample(others, n, _stream(seed, task, HUMAN_FLOOR), "query generation")
    if len(floor) >= 2:
        put_kde(HUMAN_FLOOR, embedder.embed(list(floor)), paired=False)
    else:
        _put(metrics, task, "kde_kl", HUMAN_FLOOR, float("nan"), len(floor))
    return metrics, detail


def popular_choices(item_cases: pd.DataFrame, events: pl.DataFrame, seed: int) -> np.ndarray:
    """Per case, the option most purchased by the shop's other buyers (the case's own buyer's
    purchases never count); ties broken at random (seeded)."""
    sales = (
        events.filter(pl.col("event_type") == "purchase")
        .group_by("shop_id", "buyer_id", "product_id")
        .len("n")
        .to_pandas()
    )
    rng = np.random.default_rng(seed)
    picks = []
    for case in item_cases.to_dict("records"):
        others = sales[
            (sales["shop_id"] == case["shop_id"]) & (sales["buyer_id"] != case["buyer_id"])
        ]
        counts = others.groupby("product_id")["n"].sum()
        score = np.array([counts.get(p, 0) for p in case["product_ids"]])
        picks.append(int(rng.choice(np.flatnonzero(score == score.max()))))
    return np.array(picks, dtype=int)


def item_selection_metrics(
    item_cases: pd.DataFrame, answers: pd.DataFrame, events: pl.DataFrame, seed: int, draws: int
) -> Metrics:
    """Accuracy per condition (and paired against base); a random choice (its expected
    accuracy, and the interval a random chooser falls in on these cases) and the option most
    purchased by other buyers."""
    task = "item_selection"
    truth = item_cases["answer"].to_numpy(int)
    metrics: Metrics = {}
    correct = {
        c: (g.to_numpy(int) == truth).astype(float)
        for c, g in _answers_of(answers, task, "choice").items()
    }
    correct["most_popular"] = (popular_choices(item_cases, events, seed) == truth).astype(float)
    for condition, hits in correct.items():
        _put_mean(metrics, task, "accuracy", condition, hits, draws, seed)
    _put_minus_base(
        metrics,
        task,
        "accuracy",
        {c: v for c, v in correct.items() if c != "most_popular"},
        draws,
        seed,
    )
    sizes = item_cases["product_ids"].map(len).to_numpy()
    rng = np.random.default_rng(_stream(seed, task, "random_choice"))
    chance = (rng.random((draws, sizes.size)) < 1 / sizes).mean(axis=1)
    interval = tuple(np.quantile(chance, [0.025, 0.975])) if draws else (np.nan, np.nan)
    _put(metrics, task, "accuracy", "random_choice", np.mean(1 / sizes), sizes.size, interval)
    return metrics


def rank_selection_metrics(
    rank_cases: pd.DataFrame,
    answers: pd.DataFrame,
    reference_pairs: pd.DataFrame,
    seed: int,
    draws: int,
) -> tuple[Metrics, dict[str, Any]]:
    """Rank-distribution KL(human || agent) per condition and for a uniformly random rank; the
    human noise floor is the KL between the cases' ranks and as many ranks clicked by other
    humans of the same shops (``reference_pairs``). The rank histograms for the report."""
    task = "rank_selection"
    if rank_cases.empty:  # a log without searches: not measured (the report says so)
        return {}, {"rank_histograms": {}}
    human = rank_cases["rank"].to_numpy(int)
    n = human.size
    ranks = {c: r.to_numpy(int) for c, r in _answers_of(answers, task, "choice").items()}
    rng = np.random.default_rng(_stream(seed, task, "random_rank"))
    ranks["random_rank"] = rng.integers(1, rank_cases["results"].map(len).to_numpy() + 1)
    others = reference_pairs["rank"].dropna().astype(int).tolist()
    floor = _disjoint_sample(others, n, _stream(seed, task, HUMAN_FLOOR), "rank selection")
    n_ranks = int(max(rank_cases["results"].map(len).max(), max(floor, default=1)))

    def kl(a: np.ndarray, b: np.ndarray) -> float:
        return rank_distribution_kl(a, b, n_ranks)

    metrics: Metrics = {}
    for condition, r in ranks.items():
        s = _stream(seed, task, condition)
        interval = bootstrap_interval(lambda i, r=r: kl(human[i], r[i]), n, draws, s)
        _put(metrics, task, "rank_kl", condition, kl(human, r), n, interval)
    if floor.size:
        s = _stream(seed, task, HUMAN_FLOOR)
        interval = bootstrap_interval(
            lambda i, j: kl(human[i], floor[j]), (n, floor.size), draws, s
        )
        _put(metrics, task, "rank_kl", HUMAN_FLOOR, kl(human, floor), floor.size, interval)
        ranks[HUMAN_FLOOR] = floor
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


def population_sessions(simulated: pd.DataFrame, population: str) -> pd.DataFrame:
    """The sessions of ``population``; every condition must have run on the same agents, so
    that conditions are compared like for like (docs/alignment.md)."""
    mine = simulated[simulated["population"] == population]
    if mine.empty:
        raise ValueError(
            f"alignment: simulated_sessions has no session of the {population!r} population"
        )
    agents = {c: frozenset(g["agent_id"]) for c, g in mine.groupby("condition")}
    if len(set(agents.values())) > 1:
        sizes = {c: len(a) for c, a in agents.items()}
        raise ValueError(
            f"alignment: the conditions of the {population!r} population ran on different "
            f"agents ({sizes} agents); give every compared condition that population in "
            "simulation.conditions"
        )
    return mine.sort_values(["condition", "agent_id"]).reset_index(drop=True)


def session_metrics(
    human: pd.DataFrame,
    simulated: pd.DataFrame,
    population: str,
    max_count: int,
    seed: int,
    draws: int,
) -> tuple[Metrics, dict[str, Any]]:
    """KL(human || agent) over searches, views and purchases per session (counts capped at
    ``max_count``, smoothing 1e-6), query and title TTRs, per condition of ``population``.
    The human noise floor is a disjoint sample of the held-out humans with as many sessions
    per shop as the agents; the rest of them is the reference of every row."""
    task, cap = "session", max_count
    support = np.arange(cap + 1)
    sim = population_sessions(simulated, population)
    groups = {c: g for c, g in sim.groupby("condition")}
    per_shop = next(iter(groups.values()))["shop_id"].value_counts()
    rng = np.random.default_rng(_stream(seed, task, HUMAN_FLOOR))
    floor_rows = []
    for shop, k in sorted(per_shop.items()):
        rows = np.flatnonzero(human["shop_id"].to_numpy() == shop)
        if rows.size <= k:
            raise ValueError(
                f"alignment: shop {shop!r} has {rows.size} held-out human sessions; the floor "
                f"needs more than {k} (raise alignment.session.human_sessions)"
            )
        floor_rows += rng.choice(rows, k, replace=False).tolist()
    is_floor = np.zeros(len(human), bool)
    is_floor[floor_rows] = True
    reference, floor = human[~is_floor], human[is_floor]
    metrics, hist = {}, {}
    for label, column in SESSION_COUNTS.items():
        h = _counts(reference, column, cap)
        hist[label] = {"human": (np.bincount(h, minlength=cap + 1) / h.size).tolist()}
        for condition, g in {**groups, HUMAN_FLOOR: floor}.items():
            a = _counts(g, column, cap)

            def kl(i, a=a, h=h):
                return discrete_kl(h, a[i], support)

            interval = bootstrap_interval(kl, a.size, draws, _stream(seed, task, label, condition))
            _put(metrics, task, f"kl_{label}", condition, kl(slice(None)), a.size, interval)
            hist[label][condition] = (np.bincount(a, minlength=cap + 1) / a.size).tolist()
    size = len(floor)
    for condition, g in groups.items():
        metrics[metric_name(task, "query_ttr", condition)] = _ttr(_flat(g["queries"]))
        metrics[metric_name(task, "title_ttr", condition)] = _ttr(_flat(g["viewed_titles"]))
    # Human TTRs on samples of the agents' size: a TTR falls as the sample grows.
    picks = [rng.choice(len(reference), min(size, len(reference)), replace=False) for _ in range(5)]
    for metric, column in (("query_ttr", "queries"), ("title_ttr", "viewed_titles")):
        values = [_ttr(_flat(reference[column].iloc[p])) for p in picks]
        metrics[metric_name(task, metric, "human")] = float(np.nanmean(values))
    detail = {
        "session_histograms": hist,
        "max_count": cap,
        "human_reference_sessions": len(reference),
    }
    return metrics, detail


def search_counts(sessions: pd.DataFrame, found: Callable[[str, str], bool]) -> np.ndarray:
    """(sessions, 3): each session's searches, those whose results page lists no product
    (``found(shop_id, query)`` false) and those repeating the session's previous query."""
    rows = []
    for shop, queries in zip(sessions["shop_id"], sessions["queries"], strict=True):
        queries = list(queries) if queries is not None else []
        rows.append(
            (
                len(queries),
                sum(not found(shop, q) for q in queries),
                sum(a == b for a, b in itertools.pairwise(queries)),
            )
        )
    return np.asarray(rows, dtype=float).reshape(-1, 3)


def search_metrics(
    human: pd.DataFrame,
    simulated: pd.DataFrame,
    population: str,
    found: Callable[[str, str], bool],
    seed: int,
    draws: int,
) -> Metrics:
    """Per condition of ``population`` and for the ``human`` sessions: the share of searches
    whose results page lists no product in the store (``found``) and the share repeating the
    session's previous query, with intervals over sessions (:func:`search_shares`)."""
    task = "session"
    groups = {c: g for c, g in population_sessions(simulated, population).groupby("condition")}
    metrics: Metrics = {}
    for condition, sessions in {**groups, "human": human}.items():
        counts = search_counts(sessions, found)
        for name in ("empty", "repeated"):
            shares = search_shares(counts, draws, _stream(seed, task, name, condition))
            interval = tuple(shares[f"{name}_interval"])
            _put(
                metrics,
                task,
                f"{name}_search_share",
                condition,
                shares[name],
                shares["n"],
                interval,
            )
    return metrics


# The funnel: a session's add to cart, checkout start and purchase.
FUNNEL_FLAGS = {"atc": "has_add_to_cart", "checkout": "has_checkout", "purchase": "has_purchase"}


def counterpart_rates(enriched_sessions: pl.DataFrame, agents: pd.DataFrame) -> pd.DataFrame:
    """For each agent (``shop_id``, ``counterpart_id``: the buyer it stands for), the share of
    that buyer's sessions with each :data:`FUNNEL_FLAGS` flag, in the agents' order."""
    keys = ["shop_id", "buyer_id"]
    wanted = agents[["shop_id", "counterpart_id"]].rename(columns={"counterpart_id": "buyer_id"})
    human = (
        enriched_sessions.filter(pl.col("shop_id").is_in(wanted["shop_id"].unique().tolist()))
        .select(*keys, *FUNNEL_FLAGS.values())
        .to_pandas()
    )
    rates = human.groupby(keys)[list(FUNNEL_FLAGS.values())].mean()
    out = rates.reindex(pd.MultiIndex.from_frame(wanted))
    missing = out.index[out.isna().any(axis=1)].tolist()
    if missing:
        raise ValueError(
            f"funnel: {len(missing)} agents stand for buyers without a session in "
            f"enriched_sessions, e.g. {missing[:3]}"
        )
    return out.reset_index(drop=True)


def funnel_metrics(
    simulated: pd.DataFrame,
    human_rates: pd.DataFrame,
    population: str,
    seed: int,
    draws: int,
) -> Metrics:
    """Per condition of ``population`` (the same agents in each): the share of sessions with an
    add to cart, a checkout and a purchase, beside the humans the agents stand for
    (``human_rates``: :func:`counterpart_rates` of the agents in ``agent_id`` order, column
    per flag), and their ratio agent / human with a paired bootstrap interval over agents.
    ``funnel_by_stratum``: the same shares within each funnel stratum of the buyers the agents
    stand for (``stratum``), where the buyers differ most and the persona token is what tells
    an agent which one it is."""
    task = "funnel"
    sim = population_sessions(simulated, population)
    groups = dict(list(sim.groupby("condition")))
    strata = next(iter(groups.values()))["stratum"].to_numpy()  # the same agents everywhere
    metrics: Metrics = {}

    def by_stratum(metric: str, row: str, values: np.ndarray) -> None:
        for stratum in sorted(set(strata)):
            within = values[strata == stratum]
            _put_mean(metrics, "funnel_by_stratum", f"{metric}_{stratum}", row, within, draws, seed)

    for name, flag in FUNNEL_FLAGS.items():
        human = human_rates[flag].to_numpy(float)
        _put_mean(metrics, task, f"{name}_rate", MATCHED_HUMANS, human, draws, seed)
        by_stratum(f"{name}_rate", MATCHED_HUMANS, human)
        for condition, group in groups.items():
            agent = group[flag].to_numpy(float)
            if agent.size != human.size:
                raise ValueError(
                    f"funnel: {condition} has {agent.size} sessions for {human.size} agents"
                )
            _put_mean(metrics, task, f"{name}_rate", condition, agent, draws, seed)
            by_stratum(f"{name}_rate", condition, agent)

            def ratio(i, agent=agent, human=human):
                below = human[i].sum()
                return agent[i].sum() / below if below > 0 else np.nan

            interval = bootstrap_interval(
                ratio, agent.size, draws, _stream(seed, task, name, condition)
            )
            _put(
                metrics, task, f"{name}_ratio", condition, ratio(slice(None)), agent.size, interval
            )
    return metrics


# --------------------------------------------------------------------------------------------
# action rates and behavioural separation (SimPersona Tables 2 and 3)
# --------------------------------------------------------------------------------------------

_FLAGS = {"atc": "has_add_to_cart", "purchase": "has_purchase"}
_PAIRINGS = ("correct", "all_mismatch", "random_mismatch")


def _rate_table(sessions: pd.DataFrame, token: str) -> pd.DataFrame:
    """One row per session: shop, token, atc and purchase flags, stratum."""
    return pd.DataFrame(
        {
            "shop": sessions["shop_id"].to_numpy(),
            "token": sessions[token].astype(int).to_numpy(),
            **{k: sessions[c].astype(float).to_numpy() for k, c in _FLAGS.items()},
            "stratum": sessions["stratum"].to_numpy(),
        }
    )


def human_rate_sessions(
    enriched_sessions: pl.DataFrame, buyers: pd.DataFrame, assignments: pd.DataFrame, shops: list
) -> pd.DataFrame:
    """The held-out human sessions of ``shops`` whose buyer is in a persona stratum (A-D), with
    the buyer's token and stratum (SimPersona Table 2 is over A-D)."""
    keys = ["shop_id", "buyer_id"]
    human = (
        enriched_sessions.filter(pl.col("shop_id").is_in(list(shops)))
        .select(*keys, "session_id", *_FLAGS.values())
        .to_pandas()
        .merge(assignments[[*keys, "token"]], on=keys)
        .merge(buyers[[*keys, "stratum"]], on=keys)
    )
    return human[human["stratum"].isin(PERSONA_STRATA)].reset_index(drop=True)


def _stratified_values(result: Mapping[str, Any]) -> np.ndarray:
    """ATC, purchase and ARA, stratified, for each pairing (9 values, ``_PAIRINGS`` order)."""
    return np.array(
        [result[p]["stratified"][m] for p in _PAIRINGS for m in ("atc", "purchase", "ara")]
    )


def _alignment_values(
    rates: Mapping[str, np.ndarray], agent: pd.DataFrame, seed: int
) -> np.ndarray:
    """:func:`_stratified_values` of the agents against the real pair ``rates``; NaN when the
    agents have no cell with a mismatch, as a resample may."""
    try:
        return _stratified_values(pairing_alignment(rates, agent, seed))
    except ValueError:
        return np.full(3 * len(_PAIRINGS), np.nan)


def action_rate_metrics(
    simulated: pd.DataFrame,
    enriched_sessions: pl.DataFrame,
    buyers: pd.DataFrame,
    assignments: pd.DataFrame,
    population: str,
    seed: int,
    draws: int,
) -> tuple[Metrics, dict[str, Any]]:
    """ATC / purchase alignment and ARA (SimPersona Table 2) of every condition of
    ``population`` (the same agents), over strata A-D, correct vs all-mismatch vs
    random-mismatch tokens, with bootstrap intervals over agents (paired for correct minus
    all-mismatch and for each condition minus base and minus token_mismatch).

    An agent's cell is (shop, the token of the buyer it stands for), rates are per session on
    both sides. The human noise floor takes, in every cell, as many held-out human sessions
    as the cell has agents; every row is compared with the remaining sessions (the
    reference). Baselines on the same agents: each agent's session flags drawn from its
    shop's human rates (``shop_rate_baseline``) and from its shop and stratum's, which is what
    the agent's intent carries (``shop_stratum_rate_baseline``)."""
    task = "action_rate"
    sim = population_sessions(simulated, population)
    sim = sim[sim["stratum"].isin(PERSONA_STRATA)]
    shops = sorted(sim["shop_id"].unique())
    human = human_rate_sessions(enriched_sessions, buyers, assignments, shops)
    first = next(iter(sim.groupby("condition")))[1]
    cells = first.groupby(["shop_id", "buyer_token"]).size()
    rng = np.random.default_rng(_stream(seed, task, HUMAN_FLOOR))
    floor_rows, short = [], []
    for (shop, token), k in cells.items():
        rows = np.flatnonzero(
            (human["shop_id"] == shop).to_numpy() & (human["token"] == token).to_numpy()
        )
        if rows.size <= k:
            short.append((shop, int(token)))
            continue
        floor_rows += rng.choice(rows, k, replace=False).tolist()
    if short:
        logger.warning(
            "action rates: %d cells have too few human sessions for a floor and are left out "
            "of every row: %s",
            len(short),
            short[:5],
        )
        keep = [
            (s, int(t)) not in set(short)
            for s, t in zip(sim["shop_id"], sim["buyer_token"], strict=True)
        ]
        sim = sim[keep]
    if sim.empty:
        raise ValueError("action rates: no agent cell has enough human sessions for a floor")
    is_floor = np.zeros(len(human), bool)
    is_floor[floor_rows] = True
    reference = _rate_table(human[~is_floor], "token")
    floor = _rate_table(human[is_floor], "token")
    rows = {c: _rate_table(g, "buyer_token") for c, g in sim.groupby("condition")}
    agents = next(iter(rows.values()))
    for name, keys in (
        ("shop_rate_baseline", ["shop"]),
        ("shop_stratum_rate_baseline", ["shop", "stratum"]),
    ):
        rates = reference.groupby(keys)[list(_FLAGS)].mean()
        expected = rates.reindex(
            pd.MultiIndex.from_frame(agents[keys]) if len(keys) > 1 else agents[keys[0]]
        )
        draw = np.random.default_rng(_stream(seed, task, name))
        flags = {
            k: (draw.random(len(agents)) < expected[k].fillna(0).to_numpy()).astype(float)
            for k in _FLAGS
        }
        rows[name] = agents.assign(**flags)
    rows[HUMAN_FLOOR] = floor
    metrics, detail, values, resampled = {}, {}, {}, {}
    agents_seed = _stream(seed, task, "agents")  # one resample of the agents for every row
    rates = real_pair_rates(reference)  # the reference's pairs, once for every resample
    for condition, table in rows.items():
        s = _stream(seed, task, condition)
        result = pairing_alignment(rates, table, s)
        values[condition] = _stratified_values(result)
        detail[condition] = {p: r["per_stratum"] for p, r in result.items()}

        def stat(i, table=table, s=s):
            return _alignment_values(rates, table.iloc[i], s)

        units_seed = s if condition == HUMAN_FLOOR else agents_seed
        resampled[condition] = bootstrap_values(stat, len(table), draws, units_seed)
        low, high = percentile_interval(resampled[condition])
        for j, pairing in enumerate(_PAIRINGS):
            suffix = "" if pairing == "correct" else f"_{pairing}"
            for m, metric in enumerate(("atc", "purchase", "ara")):
                k = 3 * j + m
                bounds = (low[k], high[k])
                value = values[condition][k]
                _put(metrics, task, f"{metric}{suffix}", condition, value, len(table), bounds)
            for stratum, row in result[pairing]["per_stratum"].items():
                for metric in ("atc", "purchase", "ara"):
                    name = metric_name(task, f"{metric}{suffix}_stratum_{stratum}", condition)
                    metrics[name] = row[metric]
        # paired: correct minus all-mismatch ARA on the same resamples
        gap = resampled[condition][:, 2] - resampled[condition][:, 5]
        value = values[condition][2] - values[condition][5]
        interval = percentile_interval(gap)
        _put(
            metrics, task, "ara_correct_minus_all_mismatch", condition, value, len(table), interval
        )
    for against in (r for r in (BASE, TOKEN_MISMATCH) if r in rows):
        for condition in rows:
            if condition in (against, HUMAN_FLOOR):  # the floor's rows are not the agents'
                continue
            gap = resampled[condition][:, 2] - resampled[against][:, 2]
            value = values[condition][2] - values[against][2]
            n, interval = len(rows[condition]), percentile_interval(gap)
            _put(metrics, task, f"ara_minus_{against}", condition, value, n, interval)
    detail = {"ara_by_stratum": detail, "action_rate_reference_sessions": len(reference)}
    return metrics, detail


def _session_tokens(sessions: pd.DataFrame) -> np.ndarray:
    """The token that conditioned each session, else the token its agent stands for."""
    conditioned = sessions["persona_token"].str.extract(PERSONA_PATTERN.pattern)[0]
    return conditioned.fillna(sessions["buyer_token"].astype(str)).astype(int).to_numpy()


def _session_scores(sessions: pd.DataFrame) -> dict[str, np.ndarray]:
    """Per-simulation scores for each auxiliary head (SimPersona Table 3): purchase = funnel
    events (add to cart + checkout + purchase), engagement = actions taken, exploration =
    searches + collection views + product views."""
    return {
        "purchase": (
            sessions["n_add_to_cart"] + sessions["n_checkout_starts"] + sessions["n_purchases"]
        ).to_numpy(float),
        "engagement": sessions["n_actions"].to_numpy(float),
        "exploration": (
            sessions["n_searches"] + sessions["n_collection_views"] + sessions["n_product_views"]
        ).to_numpy(float),
    }


def separation_metrics(
    simulated: pd.DataFrame,
    persona_cards: list[dict],
    population: str,
    permutation_draws: int,
    seed: int,
    draws: int,
) -> Metrics:
    """Cohen's d (with a bootstrap interval), Welch t, Kruskal-Wallis and permutation p across
    Low / Medium / High token bins of each auxiliary head, per condition of ``population``
    (SimPersona Table 3); sessions whose token has no bin are left out."""
    bins = {c["token"]: c["bins"] for c in persona_cards if c.get("bins")}
    metrics: Metrics = {}
    task = "separation"
    for condition, g in population_sessions(simulated, population).groupby("condition"):
        tokens = _session_tokens(g)
        for head, values in _session_scores(g).items():
            labels = np.array([bins.get(t, {}).get(head, {}).get("label", "none") for t in tokens])
            binned = labels != "none"
            for name in ("cohens_d", "welch_p", "kruskal_p", "permutation_p"):
                metrics[metric_name(task, f"{head}_{name}", condition)] = float("nan")
            try:
                row = separation_tests(
                    values[binned], labels[binned], "low", "high", permutation_draws, seed
                )
            except ValueError as err:
                logger.warning("separation %s / %s: %s", head, condition, err)
                continue
            hi, lo = values[labels == "high"], values[labels == "low"]
            interval = bootstrap_interval(
                lambda i, j, hi=hi, lo=lo: cohens_d(hi[i], lo[j]),
                (hi.size, lo.size),
                draws,
                _stream(seed, task, head, condition),
            )
            _put(
                metrics,
                task,
                f"{head}_cohens_d",
                condition,
                row["cohens_d"],
                hi.size + lo.size,
                interval,
            )
            for name in ("welch_p", "kruskal_p", "permutation_p"):
                metrics[metric_name(task, f"{head}_{name}", condition)] = row[name]
            for level, mean in row["mean_per_bin"].items():
                metrics[metric_name(task, f"{head}_mean_{level}", condition)] = mean
    return metrics


# --------------------------------------------------------------------------------------------
# instruction following, ablations, A/B tests (SimPersona Table 4, appendices F and I; PAARS 5)
# --------------------------------------------------------------------------------------------


def instruction_metrics(runs: pd.DataFrame, seed: int, draws: int) -> Metrics:
    """Success rate (overall with its interval over runs, per length bin), steps per run, error
    rate and the calibration of the agent's own goal claims, per condition (SimPersona
    Table 4)."""
    task, metrics = "instruction_following", {}
    for condition, g in runs.groupby("condition"):
        _put_mean(metrics, task, "success_rate", condition, g["success"], draws, seed)
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
    simulated: pd.DataFrame,
    ablations: Mapping[str, Sequence[str]],
    population: str,
    seed: int,
    draws: int,
) -> Metrics:
    """Appendix F (two-stage vs single-stage SFT: outcome and error rates) and appendix I
    (persona token vs none under intent-neutral goals: outcomes, add-to-cart and checkout
    counts, actions and pages per session): per ablation (a task name) its conditions, on the
    sessions of ``population``, each rate with its n and interval over sessions."""
    metrics: Metrics = {}
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
            pages = g["n_page_views"] + g["n_product_views"] + g["n_collection_views"]
            per_session = {
                **{f"outcome_{o}": g["outcome"] == o for o in OUTCOMES},
                "error_rate": g["n_errors"] > 0,
                "atc_per_session": g["n_add_to_cart"],
                "checkout_per_session": g["n_checkout_starts"],
                "actions_per_session": g["n_actions"],
                "pages_per_session": pages,
            }
            for metric, values in per_session.items():
                _put_mean(metrics, task, metric, condition, values.to_numpy(float), draws, seed)
    return metrics


def ab_metrics(ab_test_results: pd.DataFrame) -> Metrics:
    """Per A/B test and metric: the simulated effect (n sessions per arm, paired interval),
    the reference effect, direction agreement (1 / 0 where the simulated interval excludes
    zero; NaN when inconclusive or undefined), whether it was conclusive, and the magnitude
    ratio."""
    metrics: Metrics = {}
    for row in ab_test_results.to_dict("records"):
        stem, condition = f"{row['test']}.{row['metric']}", row["condition"]
        agrees = row["direction_agreement"]
        _put(
            metrics,
            "ab_test",
            f"{stem}.simulated_effect",
            condition,
            row["simulated_effect"],
            row["sessions_per_arm"],
            (row["ci_low"], row["ci_high"]),
        )
        values = {
            "reference_effect": row["reference_effect"],
            "direction_agreement": float("nan")
            if agrees is None or pd.isna(agrees)
            else float(agrees),
            "conclusive": float("nan")
            if row["status"] == "undefined"
            else float(row["status"] != "inconclusive"),
            "magnitude_ratio": row["magnitude_ratio"],
        }
        for stat, value in values.items():
            metrics[metric_name("ab_test", f"{stem}.{stat}", condition)] = float(value)
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
