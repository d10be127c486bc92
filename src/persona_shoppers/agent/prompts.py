"""The shopping agent's prompt, one format for SFT traces and for simulation: a system message
(role, action schema, rules), a user message (goal, buyer profile, progress, page) and the
assistant's JSON action, its reason last.

See docs/trace_generation.md, "Examples: one per step".
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from ..clickstream.buyers import BUYING_STRATA
from ..llm.base import LLM, prefilled
from ..storefront import ACTION_ARGUMENTS, Action


def _action_forms() -> str:
    return ", ".join(
        f"{action} ({argument})" if argument else action
        for action, argument in ACTION_ARGUMENTS.items()
    )


SYSTEM_PROMPT = (
    "You are a shopper in an online store. Each turn shows your goal, your buyer profile, "
    "your progress and the current page. Answer with one JSON object "
    '{"action": A, <argument>: "...", "reason": "..."} where A is one of '
    f"{_action_forms()}. Use the ids shown on pages. Purchase only from the checkout page. "
    "End when you are done."
)


def interest_goal(category: str) -> str:
    """Stage-1 goal: intent-neutral (SimPersona 2.3)."""
    return f"You are interested in {category}."


def query_goal(title: str) -> str:
    """The query-generation task's goal (PAARS 4.3): find a given product."""
    return f"Find this product: {title}."


GOAL_PREFIX = "Goal: "  # the user turn's first line


def system_prefilled(llm: LLM, prompts: Sequence[list[dict[str, str]]]):
    """A block in which a local model runs the system prompt the agent's ``prompts`` share
    once (:func:`..llm.base.prefilled` up to the goal line)."""
    return prefilled(llm, prompts, upto=GOAL_PREFIX)


INTENT_GOAL = re.compile(r"^You are here to (buy|browse) ")


def intent_goal(category: str, stratum: str) -> str:
    """Stage-2 goal: the intent of the buyer's funnel stratum (A-C buy, D-E browse)."""
    verb = "buy" if stratum in BUYING_STRATA else "browse"
    return f"You are here to {verb} {category}."


def with_goal(user: str, goal: str) -> str:
    """A user turn of :func:`user_turn` with its goal line replaced by ``goal``."""
    first, newline, rest = user.partition("\n")
    if not first.startswith(GOAL_PREFIX):
        raise ValueError(f"a user turn starts with {GOAL_PREFIX!r}, got {first[:60]!r}")
    return f"{GOAL_PREFIX}{goal}{newline}{rest}"


CONTENT_FREE_GOAL = "N/A"  # the content-free input of contextual calibration (Zhao et al. 2021)


def without_goal(messages: Sequence[dict[str, str]]) -> list[dict[str, str]]:
    """The step's messages with the goal replaced by :data:`CONTENT_FREE_GOAL`: what the
    model would write whatever the goal (the contrast of guided query writing)."""
    return [
        {**m, "content": with_goal(m["content"], CONTENT_FREE_GOAL)} if m["role"] == "user" else m
        for m in messages
    ]


def goal_intent(goal: str) -> str | None:
    """The intent a goal states (``buy`` / ``browse``), None for an intent-neutral goal."""
    found = INTENT_GOAL.match(goal)
    return found.group(1) if found else None


def user_turn(
    goal: str,
    observation: str,
    progress: Sequence[str] = (),
    profile: str | None = None,
    max_progress: int = 8,
) -> str:
    """The user message of one step; ``profile`` None leaves the profile line out.

    Only the last ``max_progress`` progress entries are listed (numbered as in the session),
    after a note on how many earlier steps are not shown.
    """
    lines = [f"{GOAL_PREFIX}{goal}"]
    if profile is not None:
        lines.append(f"Buyer profile: {profile}")
    lines.append("Progress:")
    start = max(0, len(progress) - max_progress)
    if start:
        lines.append(f"({start} earlier steps)")
    lines.extend(f"{i + 1}. {entry}" for i, entry in enumerate(progress) if i >= start)
    if not progress:
        lines.append("(just arrived)")
    lines.extend(["Page:", observation])
    return "\n".join(lines)


def chat(system: str, user: str, assistant: str | None = None) -> list[dict[str, str]]:
    """Chat messages for one step (the assistant turn only for training examples)."""
    messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
    if assistant is not None:
        messages.append({"role": "assistant", "content": assistant})
    return messages


def assistant_turn(action: Action, reason: str) -> str:
    """The assistant's answer: the JSON action with its reason last."""
    return action.to_json(reason)
