"""The JSON-Schema subset the LLM layer speaks, its validator, and prompt helpers (docs/llm.md).

Supported schemas: one ``object`` with ``properties`` and ``required`` (``additionalProperties``
optional), whose properties are

- ``string``: optional ``enum``, ``maxLength``, ``minLength`` (only with an ``enum``);
- ``integer`` / ``number``: optional ``minimum`` / ``maximum``, optional ``enum``;
- ``boolean``;
- ``array`` of strings: optional ``enum`` on the items, ``maxItems``, ``minItems``,
  ``uniqueItems``.

``description``, ``title``, ``default``, ``examples`` and ``$comment`` are allowed anywhere and
ignored. Anything else (nested objects, ``anyOf``, ``pattern``, ...) is rejected by
:func:`check_schema` with a message naming the property, so that "valid by construction" is
a promise the local backend can keep (:mod:`persona_shoppers.llm.constrained`).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

IGNORED_KEYWORDS = {"description", "title", "default", "examples", "$comment", "$schema"}
_ALLOWED = {
    "object": {"type", "properties", "required", "additionalProperties"},
    "string": {"type", "enum", "maxLength", "minLength"},
    "integer": {"type", "enum", "minimum", "maximum"},
    "number": {"type", "enum", "minimum", "maximum"},
    "boolean": {"type"},
    "array": {"type", "items", "maxItems", "minItems", "uniqueItems"},
}


class SchemaError(ValueError):
    """The schema is outside the supported subset."""


def _check_keys(where: str, node: dict[str, Any], kind: str) -> None:
    extra = set(node) - _ALLOWED[kind] - IGNORED_KEYWORDS
    if extra:
        raise SchemaError(f"{where}: unsupported keyword(s) {sorted(extra)} for type {kind!r}")


def check_schema(schema: dict[str, Any]) -> None:
    """Raise :class:`SchemaError` unless ``schema`` is in the supported subset."""
    if not isinstance(schema, dict) or schema.get("type") != "object":
        raise SchemaError("schema: the top level must be {'type': 'object', 'properties': ...}")
    _check_keys("schema", schema, "object")
    props = schema.get("properties")
    if not isinstance(props, dict) or not props:
        raise SchemaError("schema: 'properties' must be a non-empty mapping")
    required = schema.get("required", [])
    missing = [k for k in required if k not in props]
    if missing:
        raise SchemaError(f"schema: required keys without a property: {missing}")
    for key, prop in props.items():
        where = f"property {key!r}"
        kind = prop.get("type") if isinstance(prop, dict) else None
        if kind not in _ALLOWED or kind == "object":
            raise SchemaError(
                f"{where}: type must be one of string, integer, number, boolean, array"
            )
        _check_keys(where, prop, kind)
        if "enum" in prop:
            enum = prop["enum"]
            if not isinstance(enum, list) or not enum:
                raise SchemaError(f"{where}: enum must be a non-empty list")
            bad = [v for v in enum if validate(v, {k: v2 for k, v2 in prop.items() if k != "enum"})]
            if bad:
                raise SchemaError(f"{where}: enum values {bad!r} do not match the property's type")
        if kind == "string" and "minLength" in prop and "enum" not in prop:
            raise SchemaError(f"{where}: minLength is only supported together with an enum")
        if kind in ("integer", "number"):
            lo, hi = prop.get("minimum"), prop.get("maximum")
            if lo is not None and hi is not None and lo > hi:
                raise SchemaError(f"{where}: minimum > maximum")
            if kind == "integer" and lo is not None and hi is not None and math.ceil(lo) > hi:
                raise SchemaError(f"{where}: no integer between minimum and maximum")
        if kind == "array":
            items = prop.get("items")
            if not isinstance(items, dict) or items.get("type") != "string":
                raise SchemaError(f"{where}: only arrays of strings are supported")
            _check_keys(f"{where} items", items, "string")
            if "maxLength" in items or "minLength" in items:
                raise SchemaError(f"{where}: items support only 'enum'")
            lo, hi = prop.get("minItems", 0), prop.get("maxItems")
            if hi is not None and lo > hi:
                raise SchemaError(f"{where}: minItems > maxItems")
            if "enum" in items and lo > len(set(items["enum"])):
                raise SchemaError(f"{where}: minItems larger than the number of enum values")


def _type_ok(value: Any, kind: str) -> bool:
    if kind == "string":
        return isinstance(value, str)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return (
            isinstance(value, int | float)
            and not isinstance(value, bool)
            and math.isfinite(float(value))
        )
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "array":
        return isinstance(value, list)
    if kind == "object":
        return isinstance(value, dict)
    if kind == "null":
        return value is None
    return False


def validate(value: Any, schema: dict[str, Any], path: str = "$") -> list[str]:
    """Errors of ``value`` against ``schema`` (empty when valid), each naming its path."""
    kind = schema.get("type")
    if kind is not None:
        kinds = kind if isinstance(kind, list) else [kind]
        if not any(_type_ok(value, k) for k in kinds):
            return [f"{path}: expected {kind}, got {type(value).__name__}"]
    errors: list[str] = []
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: {value!r} is not one of {schema['enum']!r}")
    if isinstance(value, str):
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            errors.append(f"{path}: longer than maxLength {schema['maxLength']}")
        if "minLength" in schema and len(value) < schema["minLength"]:
            errors.append(f"{path}: shorter than minLength {schema['minLength']}")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            errors.append(f"{path}: {value} < minimum {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            errors.append(f"{path}: {value} > maximum {schema['maximum']}")
    if isinstance(value, list):
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            errors.append(f"{path}: more than maxItems {schema['maxItems']}")
        if "minItems" in schema and len(value) < schema["minItems"]:
            errors.append(f"{path}: fewer than minItems {schema['minItems']}")
        if schema.get("uniqueItems") and len({json.dumps(v) for v in value}) < len(value):
            errors.append(f"{path}: items are not unique")
        if "items" in schema:
            for i, item in enumerate(value):
                errors.extend(validate(item, schema["items"], f"{path}[{i}]"))
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for key in schema.get("required", []):
            if key not in value:
                errors.append(f"{path}: missing required key {key!r}")
        if schema.get("additionalProperties") is False:
            extra = sorted(set(value) - set(props))
            if extra:
                errors.append(f"{path}: unexpected keys {extra}")
        for key, sub in props.items():
            if key in value:
                errors.extend(validate(value[key], sub, f"{path}.{key}"))
    return errors


def is_valid(value: Any, schema: dict[str, Any]) -> bool:
    return not validate(value, schema)


def parse_json_answer(text: str) -> Any:
    """The JSON object in a model's answer: the whole text, or inside a code fence, or the
    outermost ``{...}``. Raises ``ValueError`` when none parses."""
    candidates = [text.strip()]
    fence = re.search(r"```(?:json)?\s*(.*?)```", text, flags=re.DOTALL)
    if fence:
        candidates.append(fence.group(1).strip())
    start, end = text.find("{"), text.rfind("}")
    if 0 <= start < end:
        candidates.append(text[start : end + 1])
    for candidate in candidates:
        try:
            return json.loads(candidate)
        except (json.JSONDecodeError, ValueError):
            continue
    raise ValueError(f"no JSON object in the answer: {text[:120]!r}")


def repair(value: Any, schema: dict[str, Any]) -> Any:
    """Harmless fixes before validation: strings over ``maxLength`` are truncated."""
    if not isinstance(value, dict):
        return value
    fixed = dict(value)
    for key, prop in schema.get("properties", {}).items():
        item = fixed.get(key)
        if isinstance(item, str) and "maxLength" in prop and "enum" not in prop:
            fixed[key] = item[: prop["maxLength"]]
    return fixed


def describe_field(prop: dict[str, Any]) -> str:
    kind = prop["type"]
    if "enum" in prop:
        return "one of " + ", ".join(json.dumps(v) for v in prop["enum"])
    if kind == "array":
        items = prop.get("items", {})
        what = (
            "a list of " + ", ".join(json.dumps(v) for v in items["enum"])
            if "enum" in items
            else "a list of short texts"
        )
        if "maxItems" in prop:
            what += f" (at most {prop['maxItems']})"
        return what
    if kind in ("integer", "number"):
        bounds = []
        if "minimum" in prop:
            bounds.append(f">= {prop['minimum']}")
        if "maximum" in prop:
            bounds.append(f"<= {prop['maximum']}")
        return f"{'an integer' if kind == 'integer' else 'a number'}" + (
            f" ({', '.join(bounds)})" if bounds else ""
        )
    if kind == "boolean":
        return "true or false"
    limit = f" (at most {prop['maxLength']} characters)" if "maxLength" in prop else ""
    return f"a short text{limit}"


def schema_instruction(schema: dict[str, Any]) -> str:
    """A one-paragraph description of the expected object, appended to the last user turn."""
    lines = ["Answer with one JSON object with these keys, in this order:"]
    for key, prop in schema["properties"].items():
        doc = f" ({prop['description']})" if "description" in prop else ""
        lines.append(f"- {json.dumps(key)}: {describe_field(prop)}{doc}")
    return "\n".join(lines)


def with_instruction(prompt: list[dict[str, str]], instruction: str) -> list[dict[str, str]]:
    """``prompt`` with ``instruction`` appended to its last user message (or as a new one)."""
    messages = [dict(m) for m in prompt]
    for message in reversed(messages):
        if message["role"] == "user":
            message["content"] = f"{message['content']}\n\n{instruction}"
            return messages
    return [*messages, {"role": "user", "content": instruction}]
