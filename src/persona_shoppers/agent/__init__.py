"""The persona-conditioned shopping agent: its prompt format (shared by SFT traces and the
simulator)."""

from .prompts import (
    PERSONA_TOKEN,
    SYSTEM_PROMPT,
    assistant_turn,
    chat,
    intent_goal,
    interest_goal,
    persona_token,
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
