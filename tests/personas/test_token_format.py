"""The persona-token text format, defined once."""

from __future__ import annotations

import pytest

from persona_shoppers.personas.token_format import (
    PERSONA_PATTERN,
    is_persona_token,
    persona_index,
    persona_token,
)


def test_token_and_index_round_trip():
    assert persona_token(93) == "<|persona_93|>"
    assert persona_index("<|persona_93|>") == 93
    assert persona_index(persona_token(0)) == 0


@pytest.mark.parametrize(
    "text", ["", None, "persona_3", "<|persona_|>", "<|persona_3|> ", "x<|persona_3|>"]
)
def test_anything_else_is_not_a_persona_token(text):
    assert persona_index(text) is None and not is_persona_token(text)


def test_the_pattern_finds_the_index_inside_a_prompt():
    found = PERSONA_PATTERN.search("Buyer profile: <|persona_12|>\nProgress:")
    assert found is not None and found.group(1) == "12"
