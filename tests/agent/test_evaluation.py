"""Agent evaluation on held-out trace steps, with a scripted model."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest

from persona_shoppers.agent import SYSTEM_PROMPT, chat, persona_token, user_turn
from persona_shoppers.agent.evaluation import evaluate_agent, with_token
from persona_shoppers.llm.base import Choice
from persona_shoppers.storefront import ACTION_TYPES


class ScriptedLLM:
    """Prefers the action type named in the goal; if ``by_token``, persona 1 prefers 'end'."""

    def __init__(self, by_token: bool):
        self.by_token = by_token

    def choose(self, prompts, candidates):
        out = []
        for prompt, cands in zip(prompts, candidates, strict=True):
            user = prompt[1]["content"]
            wanted = re.search(r"Goal: do (\w+)", user).group(1)
            if self.by_token and persona_token(1) in user:
                wanted = "end"
            logprobs = [0.0 if f'"{wanted}"' in c else -3.0 for c in cands]
            out.append(Choice(int(np.argmax(logprobs)), "", logprobs))
        return out

    def generate(self, prompts, max_new_tokens=64, *args, **kwargs):
        return ['{"action": "end"}' if i % 2 else "not json" for i in range(len(prompts))]


def _traces() -> pd.DataFrame:
    rows = []
    for i, (goal, truth) in enumerate(
        [("view", "view"), ("search", "search"), ("end", "view"), ("view", "view")]
    ):
        user = user_turn(f"do {goal}", "[home]", profile=persona_token(i % 2))
        rows.append({"messages": chat(SYSTEM_PROMPT, user, "{}"), "action": truth})
    return pd.DataFrame(rows)


def test_accuracy_validity_and_token_sensitivity_by_hand():
    report = evaluate_agent(ScriptedLLM(by_token=False), _traces(), [0, 1], 4, 4, 32, seed=0)
    assert report["next_action_type_accuracy"] == 0.75  # the "do end" step was a view
    assert report["accuracy_by_type"] == {"search": 1.0, "view": 2 / 3}
    assert report["majority_type_accuracy"] == 0.75
    assert report["json_validity"] == 0.5
    assert report["token_sensitivity_kl"] == 0.0  # the tokens change nothing
    sensitive = evaluate_agent(ScriptedLLM(by_token=True), _traces(), [0, 1], 4, 4, 32, seed=0)
    # By hand: each distribution puts a = 1/z on its preferred type and b = e^-3/z on the 9
    # others; two that prefer different types differ by KL = 3 (a - b) nats in both
    # directions. 3 of the 4 prompts ("do end" is the exception) have such a pair.
    z = 1 + 9 * math.exp(-3)
    a, b = 1 / z, math.exp(-3) / z
    assert sensitive["token_sensitivity_kl"] == pytest.approx(0.75 * 3 * (a - b), abs=1e-4)


def test_with_token_replaces_only_the_profile_token():
    prompt = chat(SYSTEM_PROMPT, user_turn("g", "page <|persona_9|>", profile=persona_token(3)))
    swapped = with_token(prompt, 7)
    assert "Buyer profile: <|persona_7|>" in swapped[1]["content"]
    assert "page <|persona_9|>" in swapped[1]["content"]
    with pytest.raises(ValueError, match="no 'Buyer profile"):
        with_token(chat(SYSTEM_PROMPT, user_turn("g", "page")), 1)
    assert len(ACTION_TYPES) == 10
