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


def _flatten(fields: Mapping[str, list[str]]) -> tuple[list[str], list[tuple[str, str]]]:
    texts, owners = [], []
    for field, options in fields.items():
        for option in options:
            texts.append(shown(field, option))
            owners.append((field, option))
    return texts, owners


def _field_logprobs(
    logprobs: Sequence[float], owners: Sequence[tuple[str, str]]
) -> dict[str, dict[str, float]]:
    """log P(option | field) from the candidates' total log-likelihoods (softmax per field)."""
    out: dict[str, dict[str, float]] = {}
    for (field, option), lp in zip(owners, logprobs, strict=True):
        out.setdefault(field, {})[option] = lp
    for field, scores in out.items():
        values = np.array(list(scores.values()))
        norm = np.logaddexp.reduce(values)
        out[field] = {k: float(v - norm) for k, v in scores.items()}
    return out


def calibrated(scores: Mapping[str, float], prior: Mapping[str, float] | None) -> dict[str, float]:
    """P(option) with the content-free prior divided out and renormalised (none: as is)."""
    logits = np.array([scores[k] - (prior[k] if prior else 0.0) for k in scores])
    probs = np.exp(logits - np.logaddexp.reduce(logits))
    return {k: float(p) for k, p in zip(scores, probs, strict=True)}


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
    flat = {shop: _flatten(field_candidates(categories[shop])) for shop in shops}
    prompts: list[Prompt] = [
        persona_prompt(h, e, examples)
        for h, e in zip(buyers["history"], buyers["evidence"], strict=True)
    ]
    candidates = [flat[shop][0] for shop in buyers["shop_id"]]
    logger.info(
        "text personas by likelihood: %d buyers x %d options, %d few-shot examples, %s calibration",
        len(prompts),
        len(candidates[0]) if candidates else 0,
        len(examples),
        calibration,
    )
    with prefilled(llm, prompts, upto=TARGET):
        choices = llm.choose(prompts, candidates)
    raw = [
        _field_logprobs(c.logprobs, flat[shop][1])
        for c, shop in zip(choices, buyers["shop_id"], strict=True)
    ]
    priors: dict[str, dict[str, dict[str, float]] | None] = dict.fromkeys(shops)
    if calibration == "content_free":
        free = [persona_prompt(CONTENT_FREE, CONTENT_FREE, examples) for _ in shops]
        for shop, choice in zip(shops, llm.choose(free, [flat[s][0] for s in shops]), strict=True):
            priors[shop] = _field_logprobs(choice.logprobs, flat[shop][1])
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
