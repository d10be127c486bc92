"""The schema subset, the validator, and skeleton-constrained generation."""

from __future__ import annotations

import json
import random

import pytest

from persona_shoppers.llm.constrained import constrained_json
from persona_shoppers.llm.json_schema import (
    SchemaError,
    check_schema,
    parse_json_answer,
    repair,
    schema_instruction,
    validate,
    with_instruction,
)

EVERY_TYPE = {
    "type": "object",
    "properties": {
        "reasoning": {"type": "string", "maxLength": 40},
        "age_range": {"type": "string", "enum": ["18-24", "25-34", "35-44", "65+"]},
        "nickname": {"type": "string"},
        "visits": {"type": "integer", "minimum": 0, "maximum": 500},
        "rating": {"type": "integer", "minimum": 1, "maximum": 5},
        "budget": {"type": "number", "minimum": -10.5, "maximum": 99.5},
        "size": {"type": "number", "enum": [36, 38.5, 40]},
        "loyal": {"type": "boolean"},
        "interests": {
            "type": "array",
            "items": {"type": "string", "enum": ["Shoes", "Skirts", "Bags", "Hats"]},
            "maxItems": 3,
        },
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 2},
        "must_pick": {
            "type": "array",
            "items": {"type": "string", "enum": ["a", "b", "c"]},
            "minItems": 1,
        },
    },
    "required": ["reasoning", "age_range", "visits", "loyal", "interests"],
}


def test_validator_accepts_and_rejects_with_paths():
    good = {
        "reasoning": "short",
        "age_range": "25-34",
        "nickname": 'with "quotes"',
        "visits": 3,
        "rating": 5,
        "budget": 1.5,
        "size": 38.5,
        "loyal": False,
        "interests": ["Shoes"],
        "tags": [],
        "must_pick": ["a"],
    }
    assert validate(good, EVERY_TYPE) == []
    bad = dict(good, age_range="30", visits=True, budget=200, interests=["Cars"], loyal="no")
    del bad["reasoning"]
    errors = validate(bad, EVERY_TYPE)
    text = "\n".join(errors)
    for needle in (
        "missing required key 'reasoning'",
        "$.age_range",
        "$.visits",
        "$.budget",
        "$.interests[0]",
        "$.loyal",
    ):
        assert needle in text
    assert validate(dict(good, reasoning="x" * 41), EVERY_TYPE)
    assert validate(dict(good, tags=["a", "b", "c"]), EVERY_TYPE)
    assert validate(dict(good, must_pick=[]), EVERY_TYPE)
    assert validate([1], EVERY_TYPE) == ["$: expected object, got list"]


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        ({"type": "array"}, "top level"),
        ({"type": "object", "properties": {}}, "non-empty"),
        ({"type": "object", "properties": {"a": {"type": "object"}}}, "type must be"),
        ({"type": "object", "properties": {"a": {"type": "string", "pattern": "x"}}}, "pattern"),
        (
            {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["b"]},
            "required",
        ),
        (
            {
                "type": "object",
                "properties": {"a": {"type": "array", "items": {"type": "integer"}}},
            },
            "arrays of strings",
        ),
        (
            {"type": "object", "properties": {"a": {"type": "integer", "enum": ["x"]}}},
            "enum values",
        ),
        (
            {
                "type": "object",
                "properties": {"a": {"type": "integer", "minimum": 3, "maximum": 1}},
            },
            "minimum > maximum",
        ),
    ],
)
def test_check_schema_rejects_unsupported(schema, message):
    with pytest.raises(SchemaError, match=message):
        check_schema(schema)


def test_check_schema_accepts_documentation_keywords():
    check_schema(
        {
            "type": "object",
            "title": "x",
            "properties": {"a": {"type": "string", "description": "d", "default": ""}},
        }
    )


def test_parse_json_answer_and_repair():
    assert parse_json_answer('{"a": 1}') == {"a": 1}
    assert parse_json_answer('Sure!\n```json\n{"a": 2}\n```') == {"a": 2}
    assert parse_json_answer('The answer is {"a": 3}. Done') == {"a": 3}
    with pytest.raises(ValueError):
        parse_json_answer("no json here")
    schema = {"type": "object", "properties": {"s": {"type": "string", "maxLength": 3}}}
    assert repair({"s": "abcdef"}, schema) == {"s": "abc"}


def test_instruction_lists_keys_and_values():
    text = schema_instruction(EVERY_TYPE)
    assert '"age_range": one of "18-24"' in text
    prompt = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]
    out = with_instruction(prompt, "X")
    assert out[1]["content"] == "u\n\nX" and prompt[1]["content"] == "u"


class RandomTextModel:
    """A stand-in backend making random but adversarial choices and texts."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.calls = 0

    def choose_texts(self, prefixes, candidates):
        self.calls += 1
        assert len(prefixes) == len(candidates)
        return [self.rng.randrange(len(c)) for c in candidates]

    def generate_texts(self, prefixes, max_new_tokens, stop, temperature=0.0, seed=0, allowed=None):
        self.calls += 1
        pool = [
            'a "quoted" word',
            "back\\slash \\n",
            "ünïcödé",
            "",
            "x" * 300,
            "  spaced  ",
            "42",
            "-7.25",
            "abc",
            "1e5",
            "\\",
        ]
        out = []
        for _ in prefixes:
            text = self.rng.choice(pool)
            cuts = [text.find(s) for s in stop if s in text]
            out.append(text[: min(cuts)] if cuts else text)
        return out


@pytest.mark.parametrize("seed", range(20))
def test_constrained_json_is_always_valid_with_a_random_model(seed):
    model = RandomTextModel(seed)
    prefixes = [f"prompt {i}: " for i in range(4)]
    results = constrained_json(model, prefixes, EVERY_TYPE, max_new_tokens_per_field=8)
    assert len(results) == 4
    for result in results:
        assert result.valid, result.error
        assert json.loads(result.raw) == result.value
        assert validate(result.value, EVERY_TYPE) == []
        assert list(result.value) == list(EVERY_TYPE["properties"])
        assert len(set(result.value["interests"])) == len(result.value["interests"])


def _jsonschema_validate(value, schema):
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(value, schema)


def test_constrained_json_on_the_tiny_model(tiny_llm, prompts):
    results = tiny_llm.generate_json(prompts, EVERY_TYPE, max_new_tokens_per_field=6)
    assert len(results) == len(prompts)
    for result in results:
        assert result.valid, result.error
        assert result.attempts == 1 and result.error is None
        assert validate(result.value, EVERY_TYPE) == []
        assert json.loads(result.raw) == result.value
    try:
        import jsonschema
    except ImportError:
        return
    for result in results:
        jsonschema.validate(result.value, EVERY_TYPE)


def test_constrained_json_is_batch_independent(tiny_llm, prompts):
    schema = {
        "type": "object",
        "properties": {
            "why": {"type": "string", "maxLength": 30},
            "level": {"type": "string", "enum": ["low", "medium", "high"]},
            "n": {"type": "integer", "minimum": 0, "maximum": 1000},
        },
        "required": ["why", "level", "n"],
    }
    together = tiny_llm.generate_json(prompts, schema, max_new_tokens_per_field=6)
    alone = [tiny_llm.generate_json([p], schema, max_new_tokens_per_field=6)[0] for p in prompts]
    assert [r.raw for r in together] == [r.raw for r in alone]


def test_choices_end_with_the_next_delimiter():
    """``1`` must not beat ``10`` just by being its prefix: candidates carry what follows."""
    seen = []

    class Recorder(RandomTextModel):
        def choose_texts(self, prefixes, candidates):
            seen.append([list(c) for c in candidates])
            return super().choose_texts(prefixes, candidates)

    schema = {
        "type": "object",
        "properties": {
            "n": {"type": "integer", "minimum": 1, "maximum": 12},
            "level": {"type": "string", "enum": ["low", "high"]},
        },
    }
    constrained_json(Recorder(0), ["p"], schema)
    assert seen[0][0] == [f"{k}," for k in range(1, 13)]
    assert seen[1][0] == ['"low"}', '"high"}']
