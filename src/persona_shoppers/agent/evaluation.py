"""How well a model acts as the shopping agent on held-out trace steps: next-action-type
accuracy, JSON validity of free answers and persona-token sensitivity.

See docs/sft.md, "Evaluation before and after SFT (`sft_evaluation`)".
"""

from __future__ import annotations

import itertools
import re
from typing import Any

import numpy as np
import pandas as pd

from ..llm.base import LLM, prefilled
from ..metrics.distributions import kl_divergence
from ..personas.token_format import PERSONA_PATTERN, persona_token
from ..storefront import ACTION_TYPES, Action, InvalidAction
from .rollout import type_text

TYPE_CANDIDATES = [type_text(t) for t in ACTION_TYPES]
_PROFILE = re.compile(rf"Buyer profile: {PERSONA_PATTERN.pattern}")


def action_type_distributions(llm: LLM, prompts: list[list[dict[str, str]]]) -> np.ndarray:
    """(prompts, action types) probabilities of each type as the start of the answer."""
    choices = llm.choose(prompts, [TYPE_CANDIDATES] * len(prompts))
    return np.array([c.probs for c in choices])


def json_validity(llm: LLM, prompts: list[list[dict[str, str]]], max_new_tokens: int) -> float:
    """Share of greedy free answers that are a well-formed store action."""
    valid = 0
    for answer in llm.generate(prompts, max_new_tokens):
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


def evaluate_agent(
    llm: LLM,
    traces: pd.DataFrame,
    tokens: list[int],
    n_examples: int,
    n_sensitivity_prompts: int,
    max_new_tokens: int,
    seed: int,
) -> dict[str, Any]:
    """Accuracy, JSON validity and token sensitivity of ``llm`` on held-out trace steps."""
    rng = np.random.default_rng(seed)
    rows = traces.iloc[np.sort(rng.permutation(len(traces))[:n_examples])]
    prompts = [list(m[:2]) for m in rows["messages"]]
    with prefilled(llm, prompts):  # scoring and answering share each prompt's KV cache
        probs = action_type_distributions(llm, prompts)
        validity = json_validity(llm, prompts, max_new_tokens)
    predicted = np.array(ACTION_TYPES)[probs.argmax(axis=1)]
    truth = rows["action"].to_numpy()
    per_type = {
        t: float((predicted[truth == t] == t).mean()) for t in ACTION_TYPES if (truth == t).any()
    }
    sensitivity_prompts = prompts[:n_sensitivity_prompts]
    variants = [with_token(p, k) for p in sensitivity_prompts for k in tokens]
    with prefilled(llm, variants, upto="Buyer profile: "):  # each prompt's head, once
        by_token = action_type_distributions(llm, variants)
    by_token = by_token.reshape(len(sensitivity_prompts), len(tokens), len(ACTION_TYPES))
    kls = [
        np.mean([kl_divergence(d[i], d[j]) for i, j in itertools.permutations(range(len(d)), 2)])
        for d in by_token
    ]
    return {
        "examples": len(rows),
        "next_action_type_accuracy": float((predicted == truth).mean()),
        "accuracy_by_type": per_type,
        "majority_type_accuracy": float(pd.Series(truth).value_counts(normalize=True).iloc[0]),
        "json_validity": validity,
        "token_sensitivity_kl": float(np.mean(kls)),
        "sensitivity_prompts": len(sensitivity_prompts),
        "sensitivity_tokens": len(tokens),
    }
