"""How well a model acts as the shopping agent on held-out trace steps: next-action-type
accuracy against baselines, the probability it gives the funnel's actions where buyers take
them, the search queries it writes, JSON validity of free answers and persona-token
sensitivity.

See docs/sft.md, "Evaluation before and after SFT (`sft_evaluation`)".
"""

from __future__ import annotations

import itertools
import json
import re
from typing import Any

import numpy as np
import pandas as pd

from ..clickstream.buyers import BUYING_STRATA
from ..features.embeddings import TextEmbedder
from ..llm.base import LLM, prefilled
from ..metrics.behaviour import accuracy_against_baseline, probability_against_frequency
from ..metrics.distributions import kl_divergence
from ..metrics.intervals import mean_interval
from ..metrics.text import rowwise_cosine
from ..personas.token_format import PERSONA_PATTERN, persona_token
from ..storefront import ACTION_TYPES, EMPTY_CART_LINE, Action, InvalidAction, listed_title
from .calibration import (
    TypeBias,
    calibrate_by_context,
    calibration_context,
    fit_type_bias,
    type_frequencies,
)
from .prompts import GOAL_PREFIX, goal_intent, system_prefilled
from .rollout import type_text, write_queries

TYPE_CANDIDATES = [type_text(t) for t in ACTION_TYPES]
_PROFILE = re.compile(rf"Buyer profile: {PERSONA_PATTERN.pattern}")
# What a query must not be: a store's display id (p0222, c01) or nothing.
_ID_LIKE = re.compile(r"^\W*[a-z]{0,6}\d{2,}\W*$", re.IGNORECASE)
# (page kind, action, intent): where the funnel is decided, and which steps count (the
# goal's intent; None: all).
FUNNEL_CHECKS = {
    "purchase_on_checkout": ("checkout", "purchase", "buy"),
    "add_to_cart_on_product": ("product", "add_to_cart", None),
}


def action_type_distributions(llm: LLM, prompts: list[list[dict[str, str]]]) -> np.ndarray:
    """(prompts, action types) probabilities of each type as the start of the answer."""
    with system_prefilled(llm, prompts):
        choices = llm.choose(prompts, [TYPE_CANDIDATES] * len(prompts))
    return np.array([c.probs for c in choices])


def json_validity(llm: LLM, prompts: list[list[dict[str, str]]], max_new_tokens: int) -> float:
    """Share of greedy free answers that are a well-formed store action."""
    valid = 0
    with system_prefilled(llm, prompts):
        answers = llm.generate(prompts, max_new_tokens)
    for answer in answers:
        try:
            Action.parse(answer.strip())
            valid += 1
        except InvalidAction:
            pass
    return valid / len(prompts)


def with_token(prompt: list[dict[str, str]], k: int) -> list[dict[str, str]]:
    """The prompt with its buyer-profile token replaced by persona ``k``."""
    user = prompt[1]["content"]
    if not _PROFILE.search(user):
        raise ValueError("the prompt has no 'Buyer profile: <|persona_k|>' line")
    replaced = _PROFILE.sub(f"Buyer profile: {persona_token(k)}", user, count=1)
    return [prompt[0], {"role": "user", "content": replaced}, *prompt[2:]]


def funnel_rows(steps: pd.DataFrame, check: str) -> np.ndarray:
    """Which of ``steps`` (trace rows or their scores) a :data:`FUNNEL_CHECKS` check counts."""
    page, _, intent = FUNNEL_CHECKS[check]
    rows = (steps["page"] == page).to_numpy()
    if intent == "buy":
        rows = rows & steps["stratum"].isin(BUYING_STRATA).to_numpy()
    return rows


def funnel_top_up(steps: pd.DataFrame, pool: pd.DataFrame, min_steps: int) -> pd.DataFrame:
    """The steps of ``pool`` outside ``steps`` that bring every :data:`FUNNEL_CHECKS` check to
    ``min_steps`` steps (to all of its kind when the pool holds fewer), in ``pool``'s order.
    ``steps`` is the start of ``pool`` (a seeded draw and the same draw of every held-out
    step), so a check's steps are the first of its kind in the draw: a random draw holds few
    checkout steps, and the purchase check would otherwise rest on a handful."""
    rest = pool.loc[~pool.index.isin(steps.index)]
    extra = [
        rest[funnel_rows(rest, check)].iloc[: max(0, min_steps - funnel_rows(steps, check).sum())]
        for check in FUNNEL_CHECKS
    ]
    return pd.concat(extra).loc[lambda t: ~t.index.duplicated()]


def held_out_draw(traces: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """``n`` steps of ``traces`` drawn at random (seeded), in draw order: the first ``m`` rows
    of a draw are the draw of ``m`` with the same seed, so smaller evaluations are subsets."""
    order = np.random.default_rng(seed).permutation(len(traces))[:n]
    return traces.iloc[order]


def page_modes(traces: pd.DataFrame) -> dict[str, str]:
    """The most frequent next action of each kind of page (ties: the first action type)."""
    counts = traces.groupby(["page", "action"]).size().unstack(fill_value=0)
    ordered = counts.reindex(columns=[t for t in ACTION_TYPES if t in counts.columns])
    return ordered.idxmax(axis=1).to_dict()


def step_prompts(steps: pd.DataFrame) -> list[list[dict[str, str]]]:
    """The prompt (system and user messages) of each trace step, without the answer."""
    return [list(m[:2]) for m in steps["messages"]]


def _answer(messages: list[dict[str, str]]) -> dict[str, Any]:
    try:
        value = json.loads(messages[2]["content"])
    except (ValueError, IndexError, KeyError, TypeError):
        return {}
    return value if isinstance(value, dict) else {}


def action_scores(llm: LLM, steps: pd.DataFrame) -> pd.DataFrame:
    """Per step: the model's probability of each action type (``p_<type>``), its greedy type
    (``predicted``) and the buyer's (``action``), with the step's page and stratum."""
    probs = action_type_distributions(llm, step_prompts(steps))
    return _scores(probs, steps.assign(context=step_contexts(steps)))


def calibrated_scores(scores: pd.DataFrame, type_bias: TypeBias) -> pd.DataFrame:
    """:func:`action_scores` with each context's calibration applied (:mod:`.calibration`)."""
    columns = [f"p_{t}" for t in ACTION_TYPES]
    probs = calibrate_by_context(
        scores[columns].to_numpy(), scores["context"], ACTION_TYPES, type_bias
    )
    return _scores(probs, scores)


def step_contexts(steps: pd.DataFrame) -> list[str]:
    """Each trace step's calibration context: its kind of page, whether the prompt's page
    says the cart is empty, and the intent its goal states."""
    return [
        calibration_context(
            page,
            EMPTY_CART_LINE in messages[1]["content"],
            goal_intent(messages[1]["content"].removeprefix(GOAL_PREFIX)),
        )
        for page, messages in zip(steps["page"], steps["messages"], strict=True)
    ]


def fit_agent_calibration(
    llm: LLM, steps: pd.DataFrame, targets: pd.DataFrame, max_bias: float
) -> dict[str, Any]:
    """The calibration of ``llm`` (:func:`.calibration.fit_type_bias`) fitted on its scores of
    ``steps`` to the next-action frequencies per context of ``targets`` (trace rows). Returns
    ``type_bias`` with what it was fitted on and the mean probabilities per context before and
    after."""
    scores = action_scores(llm, steps)
    columns = [f"p_{t}" for t in ACTION_TYPES]
    frequencies = type_frequencies(step_contexts(targets), targets["action"])
    probs = scores[columns].to_numpy()
    bias = fit_type_bias(probs, scores["context"], frequencies, ACTION_TYPES, max_bias)
    after = calibrated_scores(scores, bias)

    def means(table: pd.DataFrame) -> dict[str, dict[str, float]]:
        grouped = table.groupby("context")[columns].mean()
        return {c: {k[2:]: float(v) for k, v in row.items()} for c, row in grouped.iterrows()}

    return {
        "type_bias": bias,
        "steps": int(len(steps)),
        "steps_by_context": scores["context"].value_counts().sort_index().to_dict(),
        "target_steps": int(len(targets)),
        "targets": frequencies,
        "mean_before": means(scores),
        "mean_after": means(after),
    }


def _scores(probs: np.ndarray, steps: pd.DataFrame) -> pd.DataFrame:
    scores = pd.DataFrame(probs, columns=[f"p_{t}" for t in ACTION_TYPES], index=steps.index)
    scores["predicted"] = np.array(ACTION_TYPES)[probs.argmax(axis=1)]
    for column in ("action", "page", "stratum", "context"):
        scores[column] = steps[column].to_numpy() if column in steps else None
    return scores


def summarize_actions(
    scores: pd.DataFrame,
    modes: dict[str, str],
    draws: int = 1000,
    seed: int = 0,
    top_up: pd.DataFrame | None = None,
) -> dict[str, Any]:
    """Accuracy against the majority action of the same steps and against the training steps'
    most frequent action per kind of page (paired intervals), the mean probability of the
    buyer's action, per-type and per-page figures, and :data:`FUNNEL_CHECKS` on ``scores``
    and the scores of :func:`funnel_top_up`'s steps (``top_up``)."""
    truth = scores["action"].to_numpy()
    correct = scores["predicted"].to_numpy() == truth
    majority = pd.Series(truth).value_counts().index[0]
    by_page_mode = scores["page"].map(modes).to_numpy()
    unknown = sorted(set(truth) - set(ACTION_TYPES))
    if unknown:
        raise ValueError(f"summarize_actions: action column holds unknown types {unknown}")
    probs = scores[[f"p_{t}" for t in ACTION_TYPES]].to_numpy(dtype=float)
    p_truth = probs[np.arange(len(scores)), [ACTION_TYPES.index(t) for t in truth]]
    report: dict[str, Any] = {
        "examples": len(scores),
        "next_action_type_accuracy": float(correct.mean()),
        "majority_type_accuracy": float((truth == majority).mean()),
        "against_majority": accuracy_against_baseline(correct, truth == majority, draws, seed),
        "against_page_mode": accuracy_against_baseline(correct, truth == by_page_mode, draws, seed),
        "mean_p_next_action": float(p_truth.mean()),
        "mean_p_next_action_interval": list(mean_interval(p_truth, draws, seed)),
        "accuracy_by_type": {
            t: float(correct[truth == t].mean()) for t in ACTION_TYPES if (truth == t).any()
        },
        "by_page": {
            page: {
                "n": int(rows.sum()),
                "accuracy": float(correct[rows].mean()),
                "mean_p_next_action": float(p_truth[rows].mean()),
            }
            for page in sorted(scores["page"].dropna().unique())
            for rows in [(scores["page"] == page).to_numpy()]
        },
    }
    checked = scores if top_up is None else pd.concat([scores, top_up])
    for name, (_, action, _) in FUNNEL_CHECKS.items():
        rows = funnel_rows(checked, name)
        if rows.any():
            report[name] = probability_against_frequency(
                checked[f"p_{action}"].to_numpy()[rows],
                checked["action"].to_numpy()[rows] == action,
                draws,
                seed,
            ) | {"topped_up": int(rows[len(scores) :].sum())}
    return report


def search_targets(traces: pd.DataFrame) -> pd.Series:
    """For each search step of ``traces``, the title of the product the buyer viewed next from
    its results (None where the next step of the session is not a view of a listed product):
    what the query was looking for, as a title-as-query baseline."""
    following = traces.set_index(["session_id", "step"])
    titles = {}
    for index, row in traces[traces["action"] == "search"].iterrows():
        key = (row["session_id"], row["step"] + 1)
        title = None
        if key in following.index:
            after = following.loc[key]
            viewed = (
                _answer(after["messages"]).get("product") if after["action"] == "view" else None
            )
            if isinstance(viewed, str):
                title = listed_title(after["messages"][1]["content"], viewed)
        titles[index] = title
    return pd.Series(titles, dtype=object)


def is_id_like(query: str) -> bool:
    """Whether a query is an id (a few letters and digits, as the store's ``p0012``)."""
    return bool(_ID_LIKE.match(query))


def query_scores(
    llm: LLM,
    steps: pd.DataFrame,
    targets: pd.Series,
    embedder: TextEmbedder,
    max_tokens: int,
    temperature: float,
    seed: int,
    guidance: float = 1.0,
    draws: int = 1000,
) -> dict[str, Any]:
    """The queries the model writes on the search steps of ``steps`` (as the simulation writes
    them) against the buyers' queries: MiniLM cosine (0 for an empty query) beside the
    title-as-query baseline (:func:`search_targets`, on the steps that have one) and the goal's
    category as the query; the share of empty and id-like queries; a few examples."""
    searches = steps[steps["action"] == "search"]
    human = [_answer(m).get("query") for m in searches["messages"]]
    keep = [isinstance(q, str) and bool(q.strip()) for q in human]
    searches, human = searches[keep], [q for q, k in zip(human, keep, strict=True) if k]
    if searches.empty:
        return {"n": 0}
    seeds = np.random.SeedSequence(seed).generate_state(len(searches)).tolist()
    prompts = step_prompts(searches)
    with system_prefilled(llm, prompts):
        agent = write_queries(llm, prompts, max_tokens, temperature, seeds, guidance)
    human_vectors = embedder.embed(human)
    empty = np.array([not q for q in agent])
    cosine = rowwise_cosine(embedder.embed(agent), human_vectors)
    cosine[empty] = 0.0
    report: dict[str, Any] = {
        "n": len(agent),
        "temperature": temperature,
        "guidance": guidance,
        "cosine": float(cosine.mean()),
        "cosine_interval": list(mean_interval(cosine, draws, seed)),
        "empty_share": float(empty.mean()),
        "id_like_share": float(np.mean([is_id_like(q) for q in agent if q] or [0.0])),
        "examples": [{"human": h, "agent": a} for h, a in list(zip(human, agent, strict=True))[:8]],
    }
    titles = targets.reindex(searches.index)
    has_title = titles.notna().to_numpy()
    if has_title.any():
        title_cos = rowwise_cosine(
            embedder.embed(titles[has_title].tolist()), human_vectors[has_title]
        )
        report["title_as_query"] = {
            "cosine": float(title_cos.mean()),
            "cosine_interval": list(mean_interval(title_cos, draws, seed)),
            "agent_cosine_same_steps": float(cosine[has_title].mean()),
            "n": int(has_title.sum()),
        }
    if "category" in searches:
        category_cos = rowwise_cosine(embedder.embed(searches["category"].tolist()), human_vectors)
        report["category_as_query"] = {
            "cosine": float(category_cos.mean()),
            "cosine_interval": list(mean_interval(category_cos, draws, seed)),
            "n": len(searches),
        }
    return report


def token_sensitivity(llm: LLM, prompts: list[list[dict[str, str]]], tokens: list[int]) -> float:
    """The mean KL between the action-type distributions of different persona tokens on the
    same prompts."""
    variants = [with_token(p, k) for p in prompts for k in tokens]
    by_token = _profile_variant_distributions(llm, variants)
    by_token = by_token.reshape(len(prompts), len(tokens), len(ACTION_TYPES))
    kls = [
        np.mean([kl_divergence(d[i], d[j]) for i, j in itertools.permutations(range(len(d)), 2)])
        for d in by_token
    ]
    return float(np.mean(kls))


def token_swap_distributions(
    llm: LLM, steps: pd.DataFrame, tokens: list[int]
) -> tuple[np.ndarray, np.ndarray]:
    """The action-type distributions of each step with its own persona token and with
    ``tokens[i]`` in its place (docs/sft.md, "Does the model read its token?")."""
    prompts = step_prompts(steps)
    if len(tokens) != len(prompts):
        raise ValueError(f"{len(tokens)} swapped tokens for {len(prompts)} steps")
    swapped = [with_token(p, k) for p, k in zip(prompts, tokens, strict=True)]
    distributions = _profile_variant_distributions(llm, [*prompts, *swapped])
    return distributions[: len(prompts)], distributions[len(prompts) :]


def _profile_variant_distributions(llm: LLM, variants: list[list[dict[str, str]]]) -> np.ndarray:
    """:func:`action_type_distributions` of prompts that differ in their profile line, each
    prompt's head (up to the profile) run once."""
    with prefilled(llm, variants, upto="Buyer profile: "):
        return action_type_distributions(llm, variants)


def evaluate_agent(
    llm: LLM,
    steps: pd.DataFrame,
    tokens: list[int],
    modes: dict[str, str],
    n_json: int,
    n_sensitivity_prompts: int,
    max_new_tokens: int,
    queries: dict[str, Any] | None = None,
    seed: int = 0,
    type_bias: TypeBias | None = None,
    funnel_pool: pd.DataFrame | None = None,
    funnel_min_steps: int = 0,
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Every figure of the evaluation of ``llm`` on held-out ``steps`` (draw order: JSON
    validity and token sensitivity use the first ``n_json`` and ``n_sensitivity_prompts``).
    ``queries``: ``query_scores``'s ``targets``, ``embedder``, ``max_tokens``,
    ``temperature`` and ``guidance`` (None: no query figures). ``type_bias``: the model's
    calibration, whose action figures are reported under ``calibrated`` from the same scores.
    The funnel checks are topped up from ``funnel_pool`` to ``funnel_min_steps`` steps each
    (:func:`funnel_top_up`). Returns the report and the per-step scores of ``steps``
    (uncalibrated)."""
    prompts = step_prompts(steps)
    # Only the shared system prompt is prefilled (each call below runs a prompt once, and the
    # KV caches of hundreds of prompts would not fit a prefix cache).
    extra = funnel_top_up(steps, funnel_pool, funnel_min_steps) if funnel_pool is not None else None
    both = action_scores(llm, steps if extra is None else pd.concat([steps, extra]))
    n = len(steps)
    validity = json_validity(llm, prompts[:n_json], max_new_tokens)
    query_report = query_scores(llm, steps, **queries, seed=seed) if queries else None
    report = summarize_actions(both.iloc[:n], modes, seed=seed, top_up=both.iloc[n:])
    if type_bias:
        calibrated = calibrated_scores(both, type_bias)
        report["calibrated"] = summarize_actions(
            calibrated.iloc[:n], modes, seed=seed, top_up=calibrated.iloc[n:]
        )
    report["json_validity"] = validity
    report["json_examples"] = min(n_json, len(prompts))
    if query_report is not None:
        report["queries"] = query_report
    sensitivity_prompts = prompts[:n_sensitivity_prompts]
    report["token_sensitivity_kl"] = token_sensitivity(llm, sensitivity_prompts, tokens)
    report["sensitivity_prompts"] = len(sensitivity_prompts)
    report["sensitivity_tokens"] = len(tokens)
    return report, both.iloc[:n]


def evaluation_setup(
    traces: pd.DataFrame, evaluation: dict[str, Any]
) -> tuple[pd.DataFrame, list[int], dict[str, str], dict[str, Any]]:
    """What every model of ``sft_evaluation`` is scored with (``evaluation``: the
    ``sft.evaluation`` parameters): every held-out step in the order of the seeded draw (a
    model is evaluated on the first ``n``, the funnel checks topped up from the rest), the
    persona tokens of the sensitivity check, the training steps' page modes and the queries'
    settings (:func:`query_scores`)."""
    held_out = traces[traces["split"] == "validation"]
    if held_out.empty:
        raise ValueError("evaluate_sft: sft_traces_stage2 has no validation steps")
    training = traces[traces["split"] == "train"]
    modes = page_modes(training if not training.empty else held_out)
    rng = np.random.default_rng(evaluation["seed"])
    in_use = np.sort(held_out["token"].unique())
    tokens = sorted(rng.choice(in_use, min(evaluation["sensitivity_tokens"], len(in_use)), False))
    queries = {
        "targets": search_targets(held_out),
        "embedder": TextEmbedder(evaluation["embedding_model"], evaluation["embedding_cache_dir"]),
        **evaluation["queries"],
    }
    ordered = held_out_draw(held_out, len(held_out), evaluation["seed"])
    return ordered, [int(t) for t in tokens], modes, queries


def evaluation_settings(evaluation: dict[str, Any], model: str) -> dict[str, Any]:
    """:func:`evaluate_agent`'s settings for ``model`` (``two_stage``, ``zero_shot``,
    ``single_stage``) from the ``sft.evaluation`` parameters."""
    return {
        "n_json": evaluation["json_examples"],
        "n_sensitivity_prompts": evaluation["sensitivity_prompts"],
        "max_new_tokens": evaluation["max_new_tokens"],
        "seed": evaluation["seed"],
        "funnel_min_steps": evaluation["funnel_min_steps"][model],
    }
