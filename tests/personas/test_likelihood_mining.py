"""Text personas by likelihood over the options: prompts, calibration, interests."""

import math

import pandas as pd
import pytest

from persona_shoppers.llm.base import Choice
from persona_shoppers.personas.likelihood_mining import (
    CONTENT_FREE,
    TARGET,
    answer_text,
    batch_prior,
    behaviour_answers,
    calibrated,
    mine_by_likelihood,
    persona_prompt,
    pick_interests,
)

CATEGORIES = {"s": ["Shop > Boots", "Shop > Sandals"]}


class BiasedLLM:
    """Likes ``Gender: male`` by 5 nats for everyone, ``Gender: female`` by 1 nat more for a
    history that mentions sandals, and (under the content-free prompt) ``Gender: unknown``."""

    def __init__(self):
        self.calls = []

    def choose(self, prompts, candidates, normalize=False):
        self.calls.append((prompts, candidates))
        out = []
        for prompt, cands in zip(prompts, candidates, strict=True):
            text = prompt[-1]["content"]
            scores = []
            for c in cands:
                score = 0.0
                if c == "Gender: male":
                    score += 5.0
                if c == "Gender: female" and "sandals" in text:
                    score += 6.0
                if c == "Gender: unknown" and CONTENT_FREE in text:
                    score += 9.0
                scores.append(score)
            out.append(Choice(0, cands[0], scores))
        return out


def _buyers():
    return pd.DataFrame(
        {
            "shop_id": ["s", "s", "s"],
            "buyer_id": ["b1", "b2", "b3"],
            "history": ["viewed boots", "viewed sandals", "viewed boots"],
            "evidence": ["- visits: rare visitor (1 sessions)"] * 3,
        }
    )


def test_hand_computed_calibration():
    probs = calibrated({"a": math.log(0.6), "b": math.log(0.4)}, None)
    assert probs == pytest.approx({"a": 0.6, "b": 0.4})
    # divided by a prior of (0.75, 0.25): (0.8, 1.6) -> (1/3, 2/3) after renormalising
    prior = {"a": math.log(0.75), "b": math.log(0.25)}
    assert calibrated({"a": math.log(0.6), "b": math.log(0.4)}, prior) == pytest.approx(
        {"a": 1 / 3, "b": 2 / 3}
    )
    scores = [
        {"f": {"a": math.log(0.9), "b": math.log(0.1)}},
        {"f": {"a": math.log(0.5), "b": math.log(0.5)}},
    ]
    assert {k: math.exp(v) for k, v in batch_prior(scores)["f"].items()} == pytest.approx(
        {"a": 0.7, "b": 0.3}
    )


def test_interests_more_likely_than_uniform_at_least_the_top():
    assert pick_interests({"x": 0.5, "y": 0.3, "z": 0.2}, 3) == ["x"]
    assert pick_interests({"x": 0.4, "y": 0.4, "z": 0.2}, 1) == ["x"]  # ties by name
    assert pick_interests({"x": 1 / 3, "y": 1 / 3, "z": 1 / 3}, 3) == ["x"]


@pytest.mark.parametrize(
    ("calibration", "genders"),
    [
        ("none", ["male", "female", "male"]),  # the 5-nat bias wins unless sandals add 6
        ("batch", ["male", "female", "male"]),
        ("content_free", ["female", "female", "female"]),  # "unknown" is the prior's pick
    ],
)
def test_calibration_divides_out_the_options_prior(calibration, genders):
    llm = BiasedLLM()
    personas = mine_by_likelihood(llm, _buyers(), CATEGORIES, [], calibration)
    assert [p["gender"] for p in personas["profile"]] == genders
    assert (personas["status"] == "ok").all()
    assert set(personas["preferences"][0]) >= {"price_sensitivity", "interests"}
    probs = personas["scores"][1]["gender"]
    assert sum(probs.values()) == pytest.approx(1.0)
    n_fields = len(personas["scores"][0])  # one call per field, twice with the content-free prompt
    assert len(llm.calls) == n_fields * (2 if calibration == "content_free" else 1)


def test_batch_calibration_removes_a_bias_everyone_shares():
    buyers = _buyers()
    buyers["history"] = ["viewed sandals"] * 3
    personas = mine_by_likelihood(BiasedLLM(), buyers, CATEGORIES, [], "batch")
    # everyone alike: calibrated against their own mean, no option stands out -> uniform
    probs = personas["scores"][0]["gender"]
    assert probs == pytest.approx({"female": 1 / 3, "male": 1 / 3, "unknown": 1 / 3})


def test_prompt_shows_examples_then_the_buyer_and_options_carry_evidence_words():
    example = {
        "history": "bought cheap boots",
        "evidence": "- price level: budget",
        "answers": behaviour_answers(
            {"price_sensitivity": "high", "brand_reliance": None, "shopping_frequency": "rare"},
            ["Shop > Boots"],
        ),
    }
    assert answer_text(example["answers"]) == (
        "Price sensitivity: high (budget)\nShopping frequency: rare (rare visitor)\n"
        "Interests: boots"
    )
    prompt = persona_prompt("viewed sandals", "- visits: rare visitor", [example])
    assert [m["role"] for m in prompt] == ["system", "user", "assistant", "user"]
    assert prompt[-1]["content"].startswith(TARGET) and TARGET not in prompt[1]["content"]
    llm = BiasedLLM()
    mine_by_likelihood(llm, _buyers().head(1), CATEGORIES, [example], "none")
    candidates = {c for _, cands in llm.calls for c in cands[0]}
    assert "Price sensitivity: high (budget)" in candidates
    assert "Brand reliance: high (one main brand)" in candidates
    assert "Interests: sandals" in candidates and "Income: high" in candidates


def test_unknown_calibration_is_refused():
    with pytest.raises(ValueError, match="calibration 'prior'"):
        mine_by_likelihood(BiasedLLM(), _buyers(), CATEGORIES, [], "prior")


class OneAnswerLLM:
    """Like an endpoint's ``choose`` beyond ten options: the picked option at 0, the rest at
    -inf (the first option of every field, or the second for buyer b2)."""

    def choose(self, prompts, candidates, normalize=False):
        out = []
        for prompt, cands in zip(prompts, candidates, strict=True):
            k = 1 if "sandals" in prompt[-1]["content"] else 0
            out.append(
                Choice(k, cands[k], [0.0 if j == k else -math.inf for j in range(len(cands))])
            )
        return out


@pytest.mark.parametrize("calibration", ["none", "batch", "content_free"])
def test_options_ruled_out_stay_out_under_every_calibration(calibration):
    personas = mine_by_likelihood(OneAnswerLLM(), _buyers(), CATEGORIES, [], calibration)
    assert [p["gender"] for p in personas["profile"]] == ["female", "male", "female"]
    for scores in personas["scores"]:
        for probs in scores.values():
            assert sum(probs.values()) == pytest.approx(1.0)
            assert all(math.isfinite(p) for p in probs.values())
