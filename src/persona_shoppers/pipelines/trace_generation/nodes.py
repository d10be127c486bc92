"""Nodes of the trace_generation pipeline: replay real sessions of training shops in the
textual storefront and record one chat example per step (SimPersona 2.1.2, 2.3)."""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import polars as pl
from tqdm.auto import tqdm

from persona_shoppers.agent import (
    SYSTEM_PROMPT,
    assistant_turn,
    chat,
    intent_goal,
    interest_goal,
    persona_token,
    user_turn,
)
from persona_shoppers.agent.population import buyer_top_categories, category_leaf
from persona_shoppers.clickstream.engines import EventTable
from persona_shoppers.clickstream.selection import events_of
from persona_shoppers.storefront import Store, build_stores
from persona_shoppers.storefront.replay import recheck_trace, replay_session

logger = logging.getLogger(__name__)

_SESSION_KEYS = ["shop_id", "buyer_id", "session_id"]
_EVENT_COLUMNS = ["event_type", "product_id", "collection_id", "query", "category"]


def build_storefronts(
    raw_products: pd.DataFrame,
    raw_collections: pd.DataFrame,
    raw_collection_products: pd.DataFrame,
    max_observation_tokens: int,
) -> dict[str, Store]:
    """Every shop's store (control variant): the ``storefronts`` dataset that trace replay,
    simulation and alignment share (docs/storefront.md)."""
    stores = build_stores(
        raw_products,
        raw_collections,
        raw_collection_products,
        max_observation_tokens=max_observation_tokens,
    )
    logger.info("built %d storefronts", len(stores))
    return stores


def sample_trace_sessions(
    enriched_sessions: pl.DataFrame,
    persona_assignments: pd.DataFrame,
    seed: int,
    sessions_per_token: int,
    validation_fraction: float,
) -> pd.DataFrame:
    """Sessions of training-shop buyers to replay, stratified by persona token.

    Every token in use among training-shop buyers gets up to ``sessions_per_token`` sessions
    (drawn at random, seeded, from its buyers' sessions); a share ``validation_fraction`` of
    the sampled sessions is held out for SFT evaluation.
    """
    rng = np.random.default_rng(seed)
    buyers = persona_assignments.loc[
        persona_assignments["shop_role"] == "train", ["shop_id", "buyer_id", "token", "stratum"]
    ]
    sessions = (
        enriched_sessions.select(_SESSION_KEYS)
        .join(pl.from_pandas(buyers), on=["shop_id", "buyer_id"])
        .sort(_SESSION_KEYS)
        .to_pandas()
    )
    if sessions.empty:
        raise ValueError(
            "sample_trace_sessions: no sessions of training-shop buyers in enriched_sessions "
            "joined with persona_assignments (shop_role == 'train')"
        )
    sessions["draw"] = rng.random(len(sessions))
    sampled = (
        sessions.sort_values(["token", "draw"], kind="stable")
        .groupby("token", sort=True)
        .head(sessions_per_token)
        .drop(columns="draw")
        .sort_values(_SESSION_KEYS, kind="stable")
        .reset_index(drop=True)
    )
    validation = rng.random(len(sampled)) < validation_fraction
    sampled["split"] = np.where(validation, "validation", "train")
    logger.info(
        "sampled %d sessions (%d validation) covering %d persona tokens of %d training-shop buyers",
        len(sampled),
        int(validation.sum()),
        sampled["token"].nunique(),
        len(buyers),
    )
    return sampled


def _session_category(events: pd.DataFrame, buyer_category: str | None) -> str:
    """What the session is about: its most viewed or carted category (leaf, lower case), else
    the buyer's, else the collection opened or the query searched."""
    categories = events["category"].dropna()
    if len(categories):
        return category_leaf(categories.value_counts().index[0])
    if buyer_category:
        return buyer_category
    for column in ("collection_title", "query"):
        values = events[column].dropna()
        if len(values):
            return str(values.iloc[0]).strip().lower()
    return "products"


def select_trace_events(enriched_events: EventTable, trace_sessions: pd.DataFrame) -> pl.DataFrame:
    """Every event of the buyers whose sessions are replayed (their other sessions give the
    goal's category), filtered on Spark where the log is there."""
    return events_of(enriched_events, trace_sessions[["shop_id", "buyer_id"]])


def replay_trace_sessions(
    trace_sessions: pd.DataFrame,
    trace_events: pl.DataFrame,
    storefronts: dict[str, Store],
    max_progress_steps: int,
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """Replay every sampled session; one chat example per step for each SFT stage.

    Stage 1 and stage 2 hold the same steps and differ only in the goal: intent-neutral
    ("You are interested in <category>") or the intent of the buyer's stratum ("You are here
    to buy / browse <category>"). Returns both trace tables and the replay report.
    """
    keys = pl.from_pandas(trace_sessions[_SESSION_KEYS])
    top = buyer_top_categories(trace_events)
    buyer_category = dict(
        zip(zip(top["shop_id"], top["buyer_id"], strict=True), top["category"], strict=True)
    )
    events = trace_events.join(keys, on=_SESSION_KEYS, how="semi").select(
        *_SESSION_KEYS, *_EVENT_COLUMNS, "collection_title"
    )
    meta = trace_sessions.set_index("session_id")
    rows: list[dict[str, Any]] = []
    skipped: Counter = Counter()
    n_events = n_replayed = 0
    outcomes: Counter = Counter()
    grouped = events.to_pandas().groupby("session_id", sort=False)
    for session_id, session_events in tqdm(grouped, desc="replaying sessions", unit="session"):
        info = meta.loc[session_id]
        store = storefronts[info["shop_id"]]
        replay = replay_session(store, session_events.to_dict("records"))
        n_events += replay.n_events
        n_replayed += replay.n_replayed
        skipped.update(replay.skipped)
        outcomes[replay.outcome] += 1
        category = _session_category(
            session_events, buyer_category.get((info["shop_id"], info["buyer_id"]))
        )
        for step_index, step in enumerate(replay.steps):
            rows.append(
                {
                    "shop_id": info["shop_id"],
                    "buyer_id": info["buyer_id"],
                    "session_id": session_id,
                    "token": int(info["token"]),
                    "persona_token": persona_token(info["token"]),
                    "stratum": info["stratum"],
                    "split": info["split"],
                    "step": step_index,
                    "n_steps": len(replay.steps),
                    "action": step.action.type,
                    "page": step.page,
                    "category": category,
                    "observation": step.observation,
                    "progress": list(step.progress),
                    "assistant": assistant_turn(step.action, step.reason),
                }
            )
    steps = pd.DataFrame(rows)
    stage1 = _examples(steps, 1, max_progress_steps)
    stage2 = _examples(steps, 2, max_progress_steps)
    for stage in (stage1, stage2):
        check_traces(stage, storefronts)
    report = _replay_report(trace_sessions, n_events, n_replayed, skipped, outcomes, steps)
    logger.info(
        "replayed %.2f%% of %d human events into %d steps; skipped: %s",
        100 * report["event_coverage"],
        n_events,
        len(steps),
        dict(skipped) or "none",
    )
    return stage1, stage2, report


def check_traces(traces: pd.DataFrame, stores: dict[str, Store]) -> None:
    """Re-execute every trace in its store; raise if any step is not what the store does."""
    problems = []
    for (shop_id, session_id), session in traces.groupby(["shop_id", "session_id"], sort=False):
        turns = [
            (m[1]["content"], m[2]["content"]) for m in session.sort_values("step")["messages"]
        ]
        problems += [f"{session_id}: {p}" for p in recheck_trace(stores[shop_id], turns)]
    if problems:
        raise RuntimeError(
            f"{len(problems)} trace steps do not re-execute in the store, e.g. {problems[:3]}"
        )
    logger.info(
        "re-executed %d traces (%d steps) in the store: all valid",
        traces["session_id"].nunique(),
        len(traces),
    )


def _examples(steps: pd.DataFrame, stage: int, max_progress: int) -> pd.DataFrame:
    """Chat examples of one stage (system, user, assistant) with their metadata."""
    goals = [
        interest_goal(c) if stage == 1 else intent_goal(c, s)
        for c, s in zip(steps["category"], steps["stratum"], strict=True)
    ]
    messages = [
        chat(
            SYSTEM_PROMPT,
            user_turn(goal, obs, progress, profile, max_progress),
            assistant,
        )
        for goal, obs, progress, profile, assistant in zip(
            goals,
            steps["observation"],
            steps["progress"],
            steps["persona_token"],
            steps["assistant"],
            strict=True,
        )
    ]
    out = steps.drop(columns=["observation", "progress", "assistant"]).copy()
    out.insert(0, "messages", messages)
    out["goal"] = goals
    out["stage"] = stage
    return out


def _replay_report(
    trace_sessions: pd.DataFrame,
    n_events: int,
    n_replayed: int,
    skipped: Counter,
    outcomes: Counter,
    steps: pd.DataFrame,
) -> dict[str, Any]:
    return {
        "sessions": len(trace_sessions),
        "validation_sessions": int((trace_sessions["split"] == "validation").sum()),
        "persona_tokens": int(trace_sessions["token"].nunique()),
        "shops": sorted(trace_sessions["shop_id"].unique()),
        "human_events": n_events,
        "replayed_events": n_replayed,
        "event_coverage": n_replayed / n_events if n_events else 0.0,
        "skipped_events": dict(sorted(skipped.items())),
        "session_outcomes": dict(sorted(outcomes.items())),
        "examples_per_stage": len(steps),
        "actions": steps["action"].value_counts().sort_index().to_dict(),
        "steps_per_session": steps.groupby("session_id").size().describe().round(2).to_dict(),
    }


def _token_counter(llm_params: dict[str, Any], persona_tokens: list[str]):
    """Tokens of a chat example under the default model's tokenizer and chat template, with
    the persona tokens counted as the single tokens the SFT model will have."""
    from transformers import AutoTokenizer

    from persona_shoppers.llm.models import resolve_model

    folder = resolve_model(llm_params["model"], llm_params.get("hf_cache_dir"))
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.add_tokens(persona_tokens, special_tokens=True)

    def count(conversations: list[list[dict[str, str]]]) -> np.ndarray:
        texts = tokenizer.apply_chat_template(conversations, tokenize=False)
        ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
        return np.array([len(x) for x in ids])

    return count


def measure_trace_lengths(
    sft_traces_stage1: pd.DataFrame,
    sft_traces_stage2: pd.DataFrame,
    trace_replay_report: dict[str, Any],
    llm_params: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, Any], plt.Figure]:
    """Token lengths of the examples with the default tokenizer: their distribution, the MLflow
    metrics of the trace set (replay coverage, sizes, lengths) and a histogram."""
    tokens = pd.concat([sft_traces_stage1["persona_token"], sft_traces_stage2["persona_token"]])
    count = _token_counter(llm_params, sorted(tokens.unique()))
    lengths = {
        f"stage{stage}": count(traces["messages"].tolist())
        for stage, traces in ((1, sft_traces_stage1), (2, sft_traces_stage2))
    }
    quantiles = (0.05, 0.25, 0.5, 0.75, 0.95, 1.0)
    distribution = {
        stage: {
            "mean": float(values.mean()),
            **{f"q{int(q * 100)}": float(np.quantile(values, q)) for q in quantiles},
        }
        for stage, values in lengths.items()
    }
    metrics = {
        "event_coverage": trace_replay_report["event_coverage"],
        "examples_per_stage": trace_replay_report["examples_per_stage"],
        **{f"{stage}_median_tokens": d["q50"] for stage, d in distribution.items()},
        **{f"{stage}_q95_tokens": d["q95"] for stage, d in distribution.items()},
    }
    fig, ax = plt.subplots(figsize=(7, 4))
    top = max(int(v.max()) for v in lengths.values())
    bins = np.linspace(0, top + 1, 40)
    for stage, values in lengths.items():
        ax.hist(values, bins=bins, alpha=0.6, label=f"{stage} (median {np.median(values):.0f})")
    ax.axvline(512, color="black", linestyle="--", linewidth=1, label="512 tokens")
    ax.set_xlabel("tokens per example (default tokenizer, chat template)")
    ax.set_ylabel("examples")
    ax.set_title("SFT example lengths")
    ax.legend()
    fig.tight_layout()
    return distribution, {k: {"value": float(v), "step": 0} for k, v in metrics.items()}, fig
