"""The calibration refitted on the states the agents visit themselves.

The calibration of :mod:`.calibration` is fitted on the buyers' own steps. Agents reach other
states (their own progress logs, pages and carts), where the same biases give another action
mix: on its own steps a calibrated agent adds to cart less and views more than on the buyers'.
Each round here rolls out agents with the current biases, keeps the model's own probability of
each valid action type at every step, and refits the biases per context on those steps to the
same buyers' frequencies (iterative proportional fitting), so the mix is matched where the
agents are. See docs/simulation.md, "Calibration on the agents' own steps".
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from ..clickstream.sessions import FLAG_COLUMNS
from ..storefront import ACTION_TYPES
from .calibration import TypeBias, calibrate_by_context, context_groups, fit_type_bias
from .rollout import AgentRun, AgentSpec, RolloutEngine

logger = logging.getLogger(__name__)

# The session table's funnel flags (their event types: clickstream.sessions.FLAG_COLUMNS).
FUNNEL_FLAGS = ("has_add_to_cart", "has_checkout", "has_purchase")


def funnel_shares(runs: Sequence[AgentRun]) -> dict[str, float]:
    """Share of visits with an add to cart, a checkout and a purchase."""
    return {
        flag.removeprefix("has_"): float(
            np.mean([any(e["event_type"] == FLAG_COLUMNS[flag] for e in r.events) for r in runs])
        )
        for flag in FUNNEL_FLAGS
    }


def fit_on_policy(
    engine: RolloutEngine,
    specs: Sequence[AgentSpec],
    targets: Mapping[str, Mapping[str, float]],
    type_bias: TypeBias,
    rounds: int,
    max_bias: float,
) -> dict[str, Any]:
    """Refit ``type_bias`` on the agents' own steps, ``rounds`` times (each round with new
    seeds). A context the round's agents did not reach keeps its bias.

    Returns the final ``type_bias`` and, per round, the steps per context, the mean action
    mix per context on the round's steps under the biases it ran with (``mean_before``) and
    under the refitted ones (``mean_after``), and the round's funnel shares."""
    bias = {context: dict(values) for context, values in type_bias.items()}
    history = []
    for round_index in range(rounds):
        engine.type_bias, engine.record_types, engine.type_records = bias, True, []
        seeded = [
            replace(s, seed=int(np.random.SeedSequence([s.seed, round_index]).generate_state(1)[0]))
            for s in specs
        ]
        runs = engine.run(seeded)
        contexts = [context for context, _ in engine.type_records]
        probs = np.array([[p.get(t, 0.0) for t in ACTION_TYPES] for _, p in engine.type_records])
        before = _mean_mix(probs, contexts, bias)
        bias = {**bias, **fit_type_bias(probs, contexts, targets, ACTION_TYPES, max_bias)}
        history.append(
            {
                "agents": len(runs),
                "steps": len(contexts),
                "steps_by_context": {
                    c: int(rows.sum()) for c, rows in context_groups(contexts).items()
                },
                "mean_before": before,
                "mean_after": _mean_mix(probs, contexts, bias),
                "funnel": funnel_shares(runs),
            }
        )
        logger.info(
            "on-policy calibration, round %d: %d agents, %d steps, funnel %s",
            round_index + 1,
            len(runs),
            len(contexts),
            {k: round(v, 3) for k, v in history[-1]["funnel"].items()},
        )
    engine.record_types, engine.type_records = False, []
    return {"type_bias": bias, "rounds": history}


def _mean_mix(
    probs: np.ndarray, contexts: Sequence[str], bias: TypeBias
) -> dict[str, dict[str, float]]:
    """Per context and pooled context, the mean probability of each action type with each
    step's bias (:func:`.calibration.context_bias`; types above 0)."""
    calibrated = calibrate_by_context(probs, contexts, ACTION_TYPES, bias)
    return {
        context: {
            t: float(m)
            for t, m in zip(ACTION_TYPES, calibrated[rows].mean(axis=0), strict=True)
            if m > 0
        }
        for context, rows in context_groups(contexts).items()
    }
