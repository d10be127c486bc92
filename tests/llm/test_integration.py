"""The real default model (SmolLM2-135M-Instruct from its PyPI package), end to end."""

from __future__ import annotations

import time

import pytest

from persona_shoppers.llm import models
from persona_shoppers.llm.json_schema import validate

pytestmark = pytest.mark.integration

SCHEMA = {
    "type": "object",
    "properties": {
        "reasoning": {"type": "string", "maxLength": 120},
        "age_range": {"type": "string", "enum": ["18-24", "25-34", "35-44", "45-54", "55+"]},
        "income": {"type": "string", "enum": ["low", "medium", "high"]},
        "visits_per_month": {"type": "integer", "minimum": 0, "maximum": 60},
        "likes_discounts": {"type": "boolean"},
        "interests": {
            "type": "array",
            "items": {"type": "string", "enum": ["Shoes", "Skirts", "Bags", "Electronics"]},
            "maxItems": 2,
        },
    },
    "required": [
        "reasoning",
        "age_range",
        "income",
        "visits_per_month",
        "likes_discounts",
        "interests",
    ],
}


def test_default_model_converts_once_and_answers(tmp_path, monkeypatch):
    models.KNOWN_MODELS["smollm2-135m-instruct"].locate()  # fails clearly if not installed
    from persona_shoppers.llm.local import LocalLLM
    from persona_shoppers.numerics import resolve_dtype

    folder = models.resolve_model("smollm2-135m-instruct", tmp_path)
    assert folder == tmp_path / "smollm2-135m-instruct"
    assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()
    assert (folder / "tokenizer.json").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".smollm2") and p.is_dir()]

    def no_second_conversion(*args, **kwargs):
        raise AssertionError("converted twice")

    monkeypatch.setattr(models, "convert_gguf", no_second_conversion)
    started = time.perf_counter()
    llm = LocalLLM("smollm2-135m-instruct", hf_cache_dir=tmp_path, batch_size=4)
    assert time.perf_counter() - started < 30  # a plain folder load, no conversion
    assert llm.cache_key_prefix == f"local:smollm2-135m-instruct:{resolve_dtype('auto')}"

    prompts = [
        [{"role": "user", "content": "What is the capital of France? Answer in one word."}],
        [
            {
                "role": "user",
                "content": "History: viewed running shoes, bought trail shoes. "
                "Describe this shopper.",
            }
        ],
    ]
    texts = llm.generate(prompts, max_new_tokens=16)
    assert all(isinstance(t, str) and t.strip() for t in texts)
    assert "paris" in texts[0].lower()

    choice = llm.choose(prompts[:1], [["Paris", "Berlin", "Madrid"]])[0]
    assert choice.text == "Paris"

    results = llm.generate_json(prompts, SCHEMA, max_new_tokens_per_field=24)
    for result in results:
        assert result.valid, result.error
        assert validate(result.value, SCHEMA) == []

    fluent, scrambled = llm.perplexity(
        ["I bought a pair of running shoes.", "shoes pair running a bought I of."]
    )
    assert 1 < fluent < scrambled
