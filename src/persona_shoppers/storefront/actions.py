"""Store actions: the JSON an agent answers with, its schema, and strict parsing.

An action is one JSON object, for example ``{"action": "search", "query": "ankle boots"}`` or
``{"action": "view", "product": "p0232"}``. A ``reason`` key (a short free-text
justification) may follow the arguments; the store ignores it. Anything else is invalid.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

# action type -> the argument it takes (None: no argument)
ACTION_ARGUMENTS: dict[str, str | None] = {
    "search": "query",
    "view": "product",
    "open": "collection",
    "add_to_cart": "product",
    "remove_from_cart": "product",
    "view_cart": None,
    "checkout": None,
    "purchase": None,
    "back": None,
    "end": None,
}
ACTION_TYPES = tuple(ACTION_ARGUMENTS)
MAX_QUERY_CHARS = 80


def _action_variant(action: str, argument: str | None) -> dict[str, Any]:
    properties: dict[str, Any] = {"action": {"const": action}}
    required = ["action"]
    if argument is not None:
        text: dict[str, Any] = {"type": "string", "minLength": 1}
        if argument == "query":
            text["maxLength"] = MAX_QUERY_CHARS
        properties[argument] = text
        required.append(argument)
    properties["reason"] = {"type": "string"}
    return {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }


# JSON schema of one action (draft 2020-12 subset the LLM layer's validator understands).
ACTION_SCHEMA: dict[str, Any] = {
    "oneOf": [_action_variant(a, arg) for a, arg in ACTION_ARGUMENTS.items()]
}


class InvalidAction(ValueError):
    """An action the store cannot take: the message says why, ``rule`` names the rule broken
    (``malformed`` for answers that are not a well-formed action)."""

    def __init__(self, message: str, rule: str = "malformed"):
        super().__init__(message)
        self.rule = rule


@dataclass(frozen=True)
class Action:
    """One store action: its type and, for the types that take one, its argument."""

    type: str
    argument: str | None = None

    def __post_init__(self) -> None:
        if self.type not in ACTION_ARGUMENTS:
            raise InvalidAction(f"unknown action {self.type!r}; one of {', '.join(ACTION_TYPES)}")
        needs = ACTION_ARGUMENTS[self.type]
        if needs is None and self.argument is not None:
            raise InvalidAction(f"{self.type} takes no argument")
        if needs is not None and not (isinstance(self.argument, str) and self.argument.strip()):
            raise InvalidAction(f"{self.type} needs a non-empty {needs!r}")
        if needs == "query" and len(self.argument) > MAX_QUERY_CHARS:
            raise InvalidAction(f"query longer than {MAX_QUERY_CHARS} characters")

    def to_dict(self, reason: str | None = None) -> dict[str, Any]:
        """The action as the JSON object an agent writes (``reason`` last, when given)."""
        out: dict[str, Any] = {"action": self.type}
        argument = ACTION_ARGUMENTS[self.type]
        if argument is not None:
            out[argument] = self.argument
        if reason is not None:
            out["reason"] = reason
        return out

    def to_json(self, reason: str | None = None) -> str:
        return json.dumps(self.to_dict(reason), ensure_ascii=False)

    @classmethod
    def from_dict(cls, value: Any) -> Action:
        """Validate a decoded JSON value as an action (raises :class:`InvalidAction`)."""
        if not isinstance(value, dict):
            raise InvalidAction(f"an action is a JSON object, got {type(value).__name__}")
        kind = value.get("action")
        if not isinstance(kind, str):
            raise InvalidAction('missing "action" key')
        if kind not in ACTION_ARGUMENTS:
            raise InvalidAction(f"unknown action {kind!r}; one of {', '.join(ACTION_TYPES)}")
        argument = ACTION_ARGUMENTS[kind]
        allowed = {"action", "reason"} | ({argument} if argument else set())
        extra = sorted(set(value) - allowed)
        if extra:
            raise InvalidAction(f"{kind} does not take {', '.join(map(repr, extra))}")
        if "reason" in value and not isinstance(value["reason"], str):
            raise InvalidAction('"reason" must be a string')
        return cls(kind, value.get(argument) if argument else None)

    @classmethod
    def parse(cls, text: str) -> Action:
        """Parse an agent's answer: exactly one JSON object (raises :class:`InvalidAction`)."""
        try:
            value = json.loads(text)
        except (json.JSONDecodeError, TypeError) as err:
            raise InvalidAction(f"not valid JSON: {err}") from None
        return cls.from_dict(value)
