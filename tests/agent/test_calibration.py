"""Action-type calibration per kind of page: hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from persona_shoppers.agent.calibration import (
    calibrate,
    calibrate_by_context,
    calibration_context,
    context_bias,
    fit_type_bias,
    pooled_context,
    type_frequencies,
)

TYPES = ["view", "add_to_cart", "end"]


def test_calibrate_multiplies_by_exp_bias_and_renormalises():
    # (0.5, 0.25, 0.25) times (1, e^ln2, 1) = (0.5, 0.5, 0.25) / 1.25
    out = calibrate(np.array([[0.5, 0.25, 0.25]]), np.array([0.0, math.log(2), 0.0]))
    np.testing.assert_allclose(out, [[0.4, 0.4, 0.2]])


def test_fit_matches_the_target_means_per_page():
    probs = np.array([[0.8, 0.1, 0.1], [0.6, 0.2, 0.2], [0.7, 0.1, 0.2], [0.2, 0.3, 0.5]])
    pages = ["product", "product", "product", "cart"]
    targets = {"product": {"view": 0.5, "add_to_cart": 0.3, "end": 0.2}, "cart": {"end": 1.0}}
    bias = fit_type_bias(probs, pages, targets, TYPES)
    product = calibrate(probs[:3], [bias["product"][t] for t in TYPES]).mean(axis=0)
    np.testing.assert_allclose(product, [0.5, 0.3, 0.2], atol=1e-4)
    # A type the buyers never take on a page is pushed to the clip, not to -inf (the biases
    # are centred on the types buyers take).
    assert bias["cart"] == {"view": -5.0, "add_to_cart": -5.0, "end": 0.0}


def test_one_step_of_one_page_has_the_closed_form_bias():
    # One row: the bias is log(target / prob) up to a shift.
    bias = fit_type_bias(
        np.array([[0.5, 0.25, 0.25]]),
        ["p"],
        {"p": {"view": 0.25, "add_to_cart": 0.5, "end": 0.25}},
        TYPES,
    )["p"]
    assert bias["add_to_cart"] - bias["view"] == pytest.approx(math.log(4), abs=1e-5)
    assert bias["end"] - bias["view"] == pytest.approx(math.log(2), abs=1e-5)


def test_pages_without_a_bias_or_without_steps_are_left_alone():
    probs = np.array([[0.5, 0.25, 0.25], [0.2, 0.3, 0.5]])
    bias = {"product": {"add_to_cart": math.log(2)}, "checkout": {"end": 1.0}}
    out = calibrate_by_context(probs, ["product", "home"], TYPES, bias)
    np.testing.assert_allclose(out, [[0.4, 0.4, 0.2], [0.2, 0.3, 0.5]])
    assert set(fit_type_bias(probs, ["a", "b"], {"a": {"end": 1.0}}, TYPES)) == {"a"}


def test_type_frequencies_per_page():
    freq = type_frequencies(
        ["p", "p", "p", "p", "c"], ["view", "view", "add_to_cart", "end", "end"]
    )
    assert freq == {"c": {"end": 1.0}, "p": {"add_to_cart": 0.25, "end": 0.25, "view": 0.5}}


def test_bad_shapes_and_empty_targets_are_errors():
    with pytest.raises(ValueError, match="2 steps and 3 types"):
        fit_type_bias(np.ones((3, 3)) / 3, ["p", "p"], {"p": {"end": 1.0}}, TYPES)
    with pytest.raises(ValueError, match="all zero"):
        fit_type_bias(np.ones((1, 3)) / 3, ["p"], {"p": {"end": 0.0}}, TYPES)


def test_the_context_is_the_page_and_the_cart_state():
    assert calibration_context("product", cart_empty=True) == "product|empty"
    assert calibration_context("product", cart_empty=False) == "product|items"


def test_types_no_step_can_take_are_left_out_of_the_target():
    # "end" is invalid on every step of "p": view and add to cart share the target 0.4 : 0.4,
    # so after calibration they are 0.5 each (from 0.75 : 0.25, a log-bias of log 3 between).
    probs = np.array([[0.75, 0.25, 0.0]])
    bias = fit_type_bias(probs, ["p"], {"p": {"view": 0.4, "add_to_cart": 0.4, "end": 0.2}}, TYPES)
    assert bias["p"]["add_to_cart"] - bias["p"]["view"] == pytest.approx(math.log(3), abs=1e-5)
    np.testing.assert_allclose(
        calibrate(probs, [bias["p"][t] for t in TYPES]), [[0.5, 0.5, 0.0]], atol=1e-6
    )
    # a context whose targeted types no step can take keeps no bias
    assert fit_type_bias(probs, ["p"], {"p": {"end": 1.0}}, TYPES) == {}


def test_intent_contexts_fall_back_to_their_pooled_context():
    assert calibration_context("product", True, "buy") == "product|empty|buy"
    assert pooled_context("product|empty|buy") == "product|empty"
    assert pooled_context("product|empty") == "product|empty"
    bias = {"product|empty|buy": {"view": 1.0}, "product|empty": {"end": 2.0}}
    assert context_bias(bias, "product|empty|buy") == {"view": 1.0}
    assert context_bias(bias, "product|empty|browse") == {"end": 2.0}  # no browse bias
    assert context_bias(bias, "product|empty") == {"end": 2.0}  # a goal without intent
    assert context_bias(bias, "cart|items|buy") is None


def test_pooled_contexts_are_fitted_on_every_intent_s_rows():
    probs = np.array([[0.5, 0.25, 0.25], [0.5, 0.25, 0.25]])
    contexts = ["p|empty|buy", "p|empty|browse"]
    freq = type_frequencies(contexts, ["add_to_cart", "end"])
    assert freq == {
        "p|empty": {"add_to_cart": 0.5, "end": 0.5},
        "p|empty|browse": {"end": 1.0},
        "p|empty|buy": {"add_to_cart": 1.0},
    }
    bias = fit_type_bias(probs, contexts, freq, TYPES)
    assert set(bias) == {"p|empty", "p|empty|buy", "p|empty|browse"}
    pooled = calibrate(probs, [bias["p|empty"][t] for t in TYPES]).mean(axis=0)
    np.testing.assert_allclose(pooled, [0.0, 0.5, 0.5], atol=0.01)
    buy = calibrate(probs[:1], [bias["p|empty|buy"][t] for t in TYPES])
    assert buy[0, 1] > 0.97  # add to cart; the others at the clip, a factor e^-5
    # calibrate_by_context applies the intent's bias, and the pooled one to other intents
    out = calibrate_by_context(probs, ["p|empty|buy", "p|empty|gift"], TYPES, bias)
    np.testing.assert_allclose(out[1], pooled, atol=0.01)
