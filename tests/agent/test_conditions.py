"""Which model a condition runs on, locally or on a server."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from persona_shoppers.agent.conditions import condition_llm, model_llm

ENDPOINT = {
    "backend": "endpoint",
    "model": "smollm2-135m-instruct",
    "cache": False,
    "endpoint": {
        "base_url": "http://127.0.0.1:9/v1",
        "model": "base-served",
        "models": {
            "sft": "sft-served",
            "sft_single_stage": {"base_url": "http://h:1/v1", "model": "one"},
        },
    },
}


def test_each_kind_gets_its_served_model_and_its_own_tokenizer(tmp_path):
    base = model_llm("llm", None, ENDPOINT)
    assert (base.model, base.tokenizer_source) == ("base-served", "smollm2-135m-instruct")
    sft = condition_llm("sft", {"sft": SimpleNamespace(folder=tmp_path)}, ENDPOINT)
    assert (sft.base_url, sft.model) == ("http://127.0.0.1:9/v1", "sft-served")
    assert sft.tokenizer_source == str(tmp_path)  # the SFT folder knows the persona tokens
    single = model_llm("sft_single_stage", tmp_path, ENDPOINT)
    assert (single.base_url, single.model) == ("http://h:1/v1", "one")


def test_a_kind_without_a_served_model_is_a_clear_error(tmp_path):
    params = {**ENDPOINT, "endpoint": {**ENDPOINT["endpoint"], "models": {}}}
    with pytest.raises(ValueError, match="llm.endpoint.models.sft"):
        model_llm("sft", tmp_path, params)
