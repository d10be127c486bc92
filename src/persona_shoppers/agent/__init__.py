"""The persona-conditioned shopping agent: its prompt format (shared by SFT traces and the
simulator)."""

from ..personas.token_format import PERSONA_TOKEN, persona_token
from .prompts import (
    SYSTEM_PROMPT,
    assistant_turn,
    chat,
    intent_goal,
    interest_goal,
    user_turn,
)

__all__ = [
    "PERSONA_TOKEN",
    "SYSTEM_PROMPT",
    "assistant_turn",
    "chat",
    "intent_goal",
    "interest_goal",
    "persona_token",
    "user_turn",
]
