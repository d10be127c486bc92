"""The persona-token text format, ``<|persona_k|>`` (SimPersona 2.3), defined here only."""

from __future__ import annotations

import re

PERSONA_TOKEN = "<|persona_{}|>"
PERSONA_PATTERN = re.compile(r"<\|persona_(\d+)\|>")


def persona_token(k: int) -> str:
    """The vocabulary token of persona ``k``: ``<|persona_k|>``."""
    return PERSONA_TOKEN.format(int(k))


def persona_index(text: str | None) -> int | None:
    """``k`` when ``text`` is exactly a persona token, else None."""
    found = PERSONA_PATTERN.fullmatch(text or "")
    return int(found.group(1)) if found else None


def is_persona_token(text: str | None) -> bool:
    """Whether ``text`` is exactly one persona token."""
    return persona_index(text) is not None
