"""Text personas by likelihood over the options: every enumerated persona field is answered by
the option the model finds most likely after the buyer's history and evidence lines, with the
options' prior under a content-free history divided out (contextual calibration, Zhao et al.
2021), and few-shot examples of training-shop buyers whose answers come from their behaviour.

No free generation, so a small model's bias towards one answer per field (the same persona for
everyone) is measured and removed rather than sampled. See docs/persona_mining.md,
"Text personas by likelihood".
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from persona_shoppers.agent.population import category_leaf
from persona_shoppers.llm.base import LLM, Prompt, prefilled
from persona_shoppers.personas.evidence import IMPLIED, option_gloss
from persona_shoppers.personas.text_personas import (
    INTERESTS,
    PREFERENCE_FIELDS,
    PROFILE_FIELDS,
    SYSTEM,
    enumerated_options,
)

logger = logging.getLogger(__name__)

CONTENT_FREE = "N/A"  # the history and evidence of the calibration prompt (Zhao et al. 2021)
TARGET = "Customer to describe"  # starts the last user message: all before it is shared
PROMPTS_PER_PASS = 32  # buyers whose prompt KV stays cached while each field is scored


def label(field: str) -> str:
    """``price_sensitivity`` -> ``Price sensitivity``: how a field is named in an answer."""
    return field.replace("_", " ").capitalize()


def customer_message(history: str, evidence: str, heading: str) -> str:
    return f"{heading}.\nShopping history:\n{history}\nEvidence:\n{evidence}"


def shown(field: str, option: str) -> str:
    """``Label: option``, with the option's evidence word where it has one."""
    if field == INTERESTS:
        return f"{label(field)}: {category_leaf(option)}"
    gloss = option_gloss(field, option)
    return f"{label(field)}: {option}" + (f" ({gloss})" if gloss else "")


def answer_text(answers: Mapping[str, Any]) -> str:
    """An example's answer, one line per field it has."""
    lines = []
    for field, value in answers.items():
        if field == INTERESTS:
            lines.append(f"{label(field)}: " + ", ".join(category_leaf(c) for c in value))
        else:
            lines.append(shown(field, value))
    return "\n".join(lines)


def behaviour_answers(levels: Mapping[str, str | None], top_categories: Sequence) -> dict:
    """What an example buyer's behaviour says: the implied levels it has (price sensitivity,
    brand reliance, shopping frequency) and its most viewed categories as interests."""
    answers: dict[str, Any] = {f: levels[f] for f in IMPLIED if levels.get(f)}
    answers[INTERESTS] = list(top_categories)
    return answers


def persona_prompt(
    history: str, evidence: str, examples: Sequence[Mapping[str, Any]]
) -> list[dict[str, str]]:
    """System prompt, the few-shot examples (history, evidence, answers), then the buyer."""
    messages = [{"role": "system", "content": SYSTEM}]
    for example in examples:
        messages.append(
            {
                "role": "user",
                "content": customer_message(
                    example["history"], example["evidence"], "Example customer"
                ),
            }
        )
        messages.append({"role": "assistant", "content": answer_text(example["answers"])})
    messages.append({"role": "user", "content": customer_message(history, evidence, TARGET)})
    return messages


def field_candidates(categories: Sequence[str]) -> dict[str, list[str]]:
    """Every field's options (profile, preferences, then interests among ``categories``)."""
    fields = {f: list(o) for f, o in enumerated_options().items()}
    fields[INTERESTS] = list(categories)
    return fields


def _log_softmax(logprobs: Sequence[float]) -> np.ndarray:
    """log P(option | field) from the options' total log-likelihoods (uniform if none is
    finite)."""
    values = np.asarray(logprobs, dtype=float)
    if not np.isfinite(values).any():
        return np.full(len(values), -np.log(len(values)))
    return values - np.logaddexp.reduce(values[np.isfinite(values)])


def score_fields(
    llm: LLM, prompts: Sequence[Prompt], fields: Sequence[Mapping[str, list[str]]]
) -> list[dict[str, dict[str, float]]]:
    """log P(option | field) for every field of every prompt (``fields[i]``: field -> options,
    the same field names for all). One ``choose`` per field, so each is a question of its own
    that an endpoint answers too; locally the prompts' KV is computed once per
    :data:`PROMPTS_PER_PASS` and every field reuses it."""
    out: list[dict[str, dict[str, float]]] = [{} for _ in prompts]
    bar = tqdm(total=len(prompts), desc="text personas", unit="buyer")
    with bar, prefilled(llm, prompts, upto=TARGET):
        for start in range(0, len(prompts), PROMPTS_PER_PASS):
            rows = list(range(start, min(start + PROMPTS_PER_PASS, len(prompts))))
            chunk = [prompts[i] for i in rows]
            with prefilled(llm, chunk):
                for field in fields[start]:
                    texts = [[shown(field, o) for o in fields[i][field]] for i in rows]
                    for i, choice in zip(rows, llm.choose(chunk, texts), strict=True):
                        scores = _log_softmax(choice.logprobs)
                        out[i][field] = dict(zip(fields[i][field], scores.tolist(), strict=True))
            bar.update(len(rows))
    return out


def calibrated(scores: Mapping[str, float], prior: Mapping[str, float] | None) -> dict[str, float]:
    """P(option) with the prior divided out and renormalised (none: as is). An option the
    model rules out stays out; one the prior rules out but the buyer's prompt allows wins."""
    own = np.array([scores[k] for k in scores], dtype=float)
    base = np.array([prior[k] for k in scores], dtype=float) if prior else np.zeros(len(own))
    logits = np.where(np.isfinite(own), own - np.where(np.isfinite(base), base, -1e6), -np.inf)
    return dict(zip(scores, np.exp(_log_softmax(logits)).tolist(), strict=True))


def pick_interests(probs: Mapping[str, float], max_interests: int) -> list[str]:
    """Up to ``max_interests`` categories more likely than a uniform pick, at least the top."""
    ranked = sorted(probs, key=lambda c: (-probs[c], c))
    uniform = 1.0 / len(ranked)
    chosen = [c for c in ranked[:max_interests] if probs[c] > uniform]
    return chosen or ranked[:1]


CALIBRATIONS = ("content_free", "batch", "none")


def batch_prior(
    scores: Sequence[Mapping[str, Mapping[str, float]]],
) -> dict[str, dict[str, float]]:
    """log of the mean P(option) over the buyers of ``scores`` (batch calibration, Zhou et al.
    2024): what the model says of everyone, divided out of what it says of one buyer."""
    out: dict[str, dict[str, float]] = {}
    for field in scores[0]:
        options = list(scores[0][field])
        probs = np.exp([[s[field][o] for o in options] for s in scores]).mean(axis=0)
        with np.errstate(divide="ignore"):  # an option nobody can have: log 0 = -inf
            out[field] = dict(zip(options, np.log(probs).tolist(), strict=True))
    return out


def mine_by_likelihood(
    llm: LLM,
    buyers: pd.DataFrame,
    categories: Mapping[str, list[str]],
    examples: Sequence[Mapping[str, Any]],
    calibration: str = "batch",
    max_interests: int = 3,
) -> pd.DataFrame:
    """One persona per row of ``buyers`` (shop_id, buyer_id, history, evidence).

    ``categories`` maps a shop to its categories (the interest options); ``examples`` are the
    few-shot buyers (history, evidence, answers); ``calibration`` one of :data:`CALIBRATIONS`
    (the prior of each option divided out: under a content-free prompt, on average over the
    shop's buyers, or none). Returns profile, preferences (the fields of the PAARS prompts),
    the calibrated probability of every option (``scores``), status and error, one row per
    buyer."""
    if calibration not in CALIBRATIONS:
        raise ValueError(f"text personas: calibration {calibration!r} is not one of {CALIBRATIONS}")
    shops = sorted(buyers["shop_id"].unique())
    fields = {shop: field_candidates(categories[shop]) for shop in shops}
    prompts: list[Prompt] = [
        persona_prompt(h, e, examples)
        for h, e in zip(buyers["history"], buyers["evidence"], strict=True)
    ]
    logger.info(
        "text personas by likelihood: %d buyers, %d fields, %d few-shot examples, %s calibration",
        len(prompts),
        len(fields[shops[0]]) if shops else 0,
        len(examples),
        calibration,
    )
    raw = score_fields(llm, prompts, [fields[shop] for shop in buyers["shop_id"]])
    priors: dict[str, dict[str, dict[str, float]] | None] = dict.fromkeys(shops)
    if calibration == "content_free":
        free = [persona_prompt(CONTENT_FREE, CONTENT_FREE, examples) for _ in shops]
        scored = score_fields(llm, free, [fields[s] for s in shops])
        priors.update(zip(shops, scored, strict=True))
    elif calibration == "batch":
        for shop in shops:
            priors[shop] = batch_prior(
                [r for r, s in zip(raw, buyers["shop_id"], strict=True) if s == shop]
            )
    rows = []
    for shop, buyer, history, evidence, scores in zip(
        buyers["shop_id"],
        buyers["buyer_id"],
        buyers["history"],
        buyers["evidence"],
        raw,
        strict=True,
    ):
        prior = priors[shop]
        probs = {f: calibrated(s, prior and prior[f]) for f, s in scores.items()}
        best = {f: max(p, key=p.get) for f, p in probs.items() if f != INTERESTS}
        rows.append(
            {
                "shop_id": shop,
                "buyer_id": buyer,
                "history": history,
                "evidence": evidence,
                "profile": {f: best[f] for f in PROFILE_FIELDS},
                "preferences": {
                    **{f: best[f] for f in PREFERENCE_FIELDS},
                    INTERESTS: pick_interests(probs[INTERESTS], max_interests),
                },
                "scores": probs,
                "status": "ok",
                "error": None,
            }
        )
    return pd.DataFrame(rows)
