"""Action-type calibration of a fine-tuned agent per kind of page, cart state and intent.

A small model fine-tuned on a few hundred steps learns where the funnel is decided (checkout
-> purchase) but stays far below the buyers on frequent, weakly signalled choices (adding to
cart on a product page). Calibration adds one log-bias per (context, action type), a context
being the kind of page, whether the cart is empty (which decides whether checking out is
possible) and the intent the goal states (a browse goal is a window shopper's, who by the
stratum's definition never adds to cart), so that, on steps the model did not train on, its
mean probability of each type in each context equals the buyers' frequency there: prior
correction of a classifier's intercepts (Saerens et al. 2002; Zhao et al. 2021 for language
models). Pooled contexts (every intent together) serve goals that state none. Everything that
varies between steps, personas and goals still comes from the model. See docs/sft.md,
"Calibration".
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np

logger = logging.getLogger(__name__)

TypeBias = Mapping[str, Mapping[str, float]]  # context -> action type -> log-bias


def calibration_context(page: str, cart_empty: bool, intent: str | None = None) -> str:
    """The context a bias applies to: ``product|empty``, ``cart|items``, ..., and with the
    intent the goal states, ``product|empty|buy``, ``home|empty|browse``."""
    context = f"{page}|{'empty' if cart_empty else 'items'}"
    return f"{context}|{intent}" if intent else context


def pooled_context(context: str) -> str:
    """The context without its intent (``product|empty|buy`` -> ``product|empty``)."""
    return "|".join(context.split("|")[:2])


def context_groups(contexts: Sequence[str]) -> dict[str, np.ndarray]:
    """Rows of each context, and of each pooled context (every intent together)."""
    contexts = np.asarray(contexts, dtype=object)
    pooled = np.array([pooled_context(c) for c in contexts], dtype=object)
    groups = {str(c): contexts == c for c in set(contexts.tolist())}
    groups.update({str(c): pooled == c for c in set(pooled.tolist())})
    return dict(sorted(groups.items()))


def context_bias(type_bias: TypeBias, context: str) -> Mapping[str, float] | None:
    """The biases of a context: its own, else its pooled context's (an agent whose goal
    states no intent, or an intent the calibration had no steps of), else None."""
    return type_bias.get(context) or type_bias.get(pooled_context(context))


def fit_type_bias(
    probs: np.ndarray,
    contexts: Sequence[str],
    targets: Mapping[str, Mapping[str, float]],
    types: Sequence[str],
    max_bias: float = 5.0,
    iterations: int = 500,
    tolerance: float = 1e-6,
) -> dict[str, dict[str, float]]:
    """Log-biases per context (:func:`calibration_context`) that make the mean calibrated
    probability of each type over that context's rows equal ``targets[context][type]``
    (iterative proportional fitting); a pooled context (no intent) is fitted on the rows of
    all its intents together.

    Args:
        probs: (steps, types) model probabilities of each of ``types``.
        contexts: the context of each step.
        targets: per context, the frequency of each type (missing types: 0); types that
            no row of the context can take (probability 0 in every row) are left out and
            the rest renormalised.
        types: the columns of ``probs``.
        max_bias: the bias is clipped to [-max_bias, max_bias]: a type the buyers never take
            in a context is made rare, not impossible.
    """
    probs = np.asarray(probs, dtype=float)
    if probs.shape != (len(contexts), len(types)):
        raise ValueError(
            f"fit_type_bias: probs {probs.shape} for {len(contexts)} steps and {len(types)} types"
        )
    out = {}
    for context, members in context_groups(contexts).items():
        if context not in targets:
            continue
        rows = probs[members]
        target = bias_vector(targets[context], types)
        if target.sum() <= 0:
            raise ValueError(f"fit_type_bias: the targets of context {context!r} are all zero")
        # a type no row can take (invalid wherever the context's steps were) gets no mass:
        # the target is matched over the types the rows can take
        target = np.where(rows.max(axis=0) > 0, target, 0.0)
        if target.sum() <= 0:
            logger.warning(
                "fit_type_bias: no step of context %r can take a type the targets name; "
                "the context keeps no bias",
                context,
            )
            continue
        target = target / target.sum()
        bias = np.zeros(len(types))
        for _ in range(iterations):
            mean = calibrate(rows, bias).mean(axis=0)
            new = bias + np.log(np.maximum(target, 1e-12)) - np.log(np.maximum(mean, 1e-12))
            new = np.clip(new - new[target > 0].mean(), -max_bias, max_bias)  # a shift is free
            converged = np.abs(new - bias).max() < tolerance
            bias = new
            if converged:
                break
        out[str(context)] = {t: float(b) for t, b in zip(types, bias, strict=True)}
    return out


def calibrate(probs: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Rows of ``probs`` times ``exp(bias)``, renormalised."""
    weighted = np.asarray(probs, dtype=float) * np.exp(np.asarray(bias, dtype=float))
    return weighted / weighted.sum(axis=1, keepdims=True)


def calibrate_by_context(
    probs: np.ndarray, contexts: Sequence[str], types: Sequence[str], type_bias: TypeBias
) -> np.ndarray:
    """:func:`calibrate` with each row's context bias (:func:`context_bias`; contexts without
    one: unchanged)."""
    out = np.asarray(probs, dtype=float).copy()
    contexts = np.asarray(contexts, dtype=object)
    for context in set(contexts.tolist()):
        bias = context_bias(type_bias, context)
        if bias:
            rows = contexts == context
            out[rows] = calibrate(out[rows], bias_vector(bias, types))
    return out


def bias_vector(values: Mapping[str, float] | None, types: Sequence[str]) -> np.ndarray:
    """The values of ``types`` in order (0 for a type without one)."""
    return np.array([float((values or {}).get(t, 0.0)) for t in types])


def type_frequencies(
    contexts: Sequence[str], actions: Sequence[str]
) -> dict[str, dict[str, float]]:
    """Per context and pooled context (:func:`context_groups`), the share of steps whose next
    action is each type."""
    actions = np.asarray(actions)
    out = {}
    for context, members in context_groups(contexts).items():
        taken = actions[members]
        kinds, counts = np.unique(taken, return_counts=True)
        out[str(context)] = {
            str(k): float(c / len(taken)) for k, c in zip(kinds, counts, strict=True)
        }
    return out
