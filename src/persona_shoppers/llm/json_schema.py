"""The JSON-Schema subset the LLM layer speaks, its validator, and constrained generation.

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
a promise the local backend can keep.

:func:`constrained_json` is the backend-agnostic skeleton walker: given two text-level
primitives (choose among continuations, generate until a stop string) it writes the braces,
keys, quotes and commas itself and lets the model fill only the values, field by field,
batched across prompts. Its output always parses and always validates.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from typing import Any, Protocol

from persona_shoppers.llm.base import JsonResult

IGNORED_KEYWORDS = {"description", "title", "default", "examples", "$comment", "$schema"}
_ALLOWED = {
    "object": {"type", "properties", "required", "additionalProperties"},
    "string": {"type", "enum", "maxLength", "minLength"},
    "integer": {"type", "enum", "minimum", "maximum"},
    "number": {"type", "enum", "minimum", "maximum"},
    "boolean": {"type"},
    "array": {"type", "items", "maxItems", "minItems", "uniqueItems"},
}
# Bounds for what the skeleton walker generates when the schema does not bound it.
DEFAULT_MAX_ITEMS = 8  # free-string arrays without maxItems
SMALL_RANGE = 21  # integers with at most this many allowed values are chosen, not generated
_NUMBER_RE = re.compile(r"-?\d+(?:\.\d+)?")


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


# --------------------------------------------------------------------------- constrained


class TextModel(Protocol):
    """The two text-level primitives :func:`constrained_json` needs from a backend.

    ``prefixes`` are raw model inputs (chat template already applied, plus the JSON written
    so far): the model continues them directly.
    """

    def choose_texts(
        self, prefixes: Sequence[str], candidates: Sequence[Sequence[str]]
    ) -> list[int]:
        """Index of the most likely continuation of each prefix."""
        ...

    def generate_texts(
        self,
        prefixes: Sequence[str],
        max_new_tokens: int,
        stop: Sequence[str],
        temperature: float = 0.0,
        seed: int = 0,
        allowed: str | None = None,
    ) -> list[str]:
        """Continuations cut before the first stop string. ``allowed="number"`` restricts the
        vocabulary to digits, sign, decimal point and the stop characters."""
        ...


def _dump(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _clean_string(text: str, max_length: int | None) -> str:
    """A generated string body -> its value: unescape when it is valid JSON escaping,
    trim whitespace, truncate to ``max_length``."""
    value = text
    if "\\" in text:
        try:
            value = json.loads(f'"{text}"')
        except json.JSONDecodeError:
            value = text.replace("\\", "")
    value = " ".join(value.split())
    if max_length is not None:
        value = value[:max_length].rstrip()
    return value


def _clamp_number(text: str, prop: dict[str, Any]) -> int | float:
    match = _NUMBER_RE.search(text)
    number: float = float(match.group(0)) if match else 0.0
    lo, hi = prop.get("minimum"), prop.get("maximum")
    if lo is not None:
        number = max(number, lo)
    if hi is not None:
        number = min(number, hi)
    if prop["type"] == "integer":
        result = round(number)
        if lo is not None and result < lo:
            result = math.ceil(lo)
        if hi is not None and result > hi:
            result = math.floor(hi)
        return int(result)
    return float(number) if not float(number).is_integer() else int(number)


class _Walker:
    def __init__(
        self,
        model: TextModel,
        prefixes: Sequence[str],
        max_tokens: int,
        temperature: float,
        seed: int,
    ) -> None:
        self.model = model
        self.prefixes = list(prefixes)
        self.out = ["{"] * len(prefixes)
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.seed = seed

    def full(self, rows: Sequence[int]) -> list[str]:
        return [self.prefixes[i] + self.out[i] for i in rows]

    def choose(self, rows: Sequence[int], options: Sequence[Sequence[str]]) -> list[int]:
        if not rows:
            return []
        return self.model.choose_texts(self.full(rows), options)

    def value(self, rows: list[int], prop: dict[str, Any], closer: str = ",") -> list[Any]:
        """Write one value per row; ``closer`` is the character the skeleton writes next
        (``,`` or ``}``): it ends each chosen candidate, so that ``1`` cannot beat ``10`` just
        by being its prefix."""
        kind = prop["type"]
        enum = prop.get("enum")
        if kind == "boolean":
            enum = [True, False]
        if kind == "integer" and enum is None and "minimum" in prop and "maximum" in prop:
            lo, hi = math.ceil(prop["minimum"]), math.floor(prop["maximum"])
            if hi - lo + 1 <= SMALL_RANGE:
                enum = list(range(lo, hi + 1))
        if enum is not None:
            texts = [_dump(v) for v in enum]
            picks = self.choose(rows, [[t + closer for t in texts]] * len(rows))
            for i, k in zip(rows, picks, strict=True):
                self.out[i] += texts[k]
            return [enum[k] for k in picks]
        if kind in ("integer", "number"):
            answers = self.model.generate_texts(
                self.full(rows),
                max_new_tokens=min(self.max_tokens, 12),
                stop=[",", "}", "\n", " "],
                temperature=self.temperature,
                seed=self.seed,
                allowed="number",
            )
            values = [_clamp_number(a, prop) for a in answers]
            for i, v in zip(rows, values, strict=True):
                self.out[i] += _dump(v)
            return values
        if kind == "string":
            return self.strings(rows, prop.get("maxLength"))
        return self.array(rows, prop)

    def strings(self, rows: list[int], max_length: int | None, opened: bool = False) -> list[str]:
        if not opened:
            for i in rows:
                self.out[i] += '"'
        budget = self.max_tokens if max_length is None else min(self.max_tokens, max_length)
        answers = (
            self.model.generate_texts(
                self.full(rows),
                max_new_tokens=max(budget, 1),
                stop=['"', "\n"],
                temperature=self.temperature,
                seed=self.seed,
            )
            if budget > 0
            else [""] * len(rows)
        )
        values = [_clean_string(a, max_length) for a in answers]
        for i, v in zip(rows, values, strict=True):
            self.out[i] += _dump(v)[1:]  # body + closing quote: the opening one is written
        return values

    def array(self, rows: list[int], prop: dict[str, Any]) -> list[list[str]]:
        """Item by item. Going on or ending is decided between the next item's opening quote
        and ``]`` (so that a one-token ``]`` does not beat every multi-token item), then the
        item is chosen among the enum values not used yet, or generated."""
        items = prop["items"]
        enum = items.get("enum")
        lo = prop.get("minItems", 0)
        hi = prop.get("maxItems")
        if enum is not None:
            enum = list(dict.fromkeys(enum))
            hi = len(enum) if hi is None else min(hi, len(enum))
        elif hi is None:
            hi = max(DEFAULT_MAX_ITEMS, lo)
        for i in rows:
            self.out[i] += "["
        values: dict[int, list[str]] = {i: [] for i in rows}
        active = list(rows)
        while active:
            for i in active:
                if len(values[i]) >= hi:
                    self.out[i] += "]"
            active = [i for i in active if len(values[i]) < hi]
            decide = [i for i in active if len(values[i]) >= lo]
            going = [i for i in active if len(values[i]) < lo]
            openers = {i: (", " if values[i] else "") + '"' for i in active}
            picks = self.choose(decide, [[openers[i], "]"] for i in decide])
            for i, k in zip(decide, picks, strict=True):
                if k == 1:
                    self.out[i] += "]"
                else:
                    going.append(i)
            going.sort()
            for i in going:
                self.out[i] += openers[i]
            if not going:
                break
            if enum is not None:
                left = {i: [v for v in enum if v not in values[i]] for i in going}
                picks = self.choose(going, [[_dump(v)[1:] for v in left[i]] for i in going])
                for i, k in zip(going, picks, strict=True):
                    self.out[i] += _dump(left[i][k])[1:]
                    values[i].append(left[i][k])
            else:
                texts = self.strings(going, None, opened=True)
                for i, text in zip(going, texts, strict=True):
                    values[i].append(text)
            active = going
        return [values[i] for i in rows]


def constrained_json(
    model: TextModel,
    prefixes: Sequence[str],
    schema: dict[str, Any],
    max_new_tokens_per_field: int = 64,
    temperature: float = 0.0,
    seed: int = 0,
) -> list[JsonResult]:
    """Fill ``schema`` for every prefix, field by field, batched across prefixes.

    All properties are written, in the schema's order (so a ``reasoning`` field placed first
    is generated before the answers it supports). Enums, booleans and small integer ranges are
    chosen by likelihood (``choose_texts``); free strings are generated up to the closing
    quote or a newline, re-escaped and truncated to ``maxLength``; other numbers are generated
    as digits and clamped to their bounds; arrays are built item by item, each step choosing
    between the next item's opening quote and an explicit end ``]``, then choosing the item
    among the unused enum values (no repeats) or generating it. The result always validates.
    """
    check_schema(schema)
    if not prefixes:
        return []
    walker = _Walker(model, prefixes, max_new_tokens_per_field, temperature, seed)
    rows = list(range(len(prefixes)))
    values: list[dict[str, Any]] = [{} for _ in rows]
    # A backend that can keep the prompts' KV cache reuses it for every field.
    prefill, release = getattr(model, "prefill", None), getattr(model, "release", None)
    if prefill is not None:
        prefill(prefixes)
    try:
        props = list(schema["properties"].items())
        for f, (key, prop) in enumerate(props):
            for i in rows:
                walker.out[i] += ("" if f == 0 else ", ") + _dump(key) + ": "
            closer = "}" if f == len(props) - 1 else ","
            for i, value in zip(rows, walker.value(rows, prop, closer), strict=True):
                values[i][key] = value
    finally:
        if release is not None:
            release(prefixes)
    results = []
    for i in rows:
        raw = walker.out[i] + "}"
        try:
            parsed = json.loads(raw)
            errors = validate(parsed, schema)
        except json.JSONDecodeError as exc:  # pragma: no cover - the walker writes valid JSON
            parsed, errors = values[i], [f"unparseable: {exc}"]
        results.append(
            JsonResult(
                value=parsed,
                valid=not errors,
                raw=raw,
                attempts=1,
                error="; ".join(errors) if errors else None,
            )
        )
    return results
