"""Constrained JSON decoding: the model fills only the values of a schema (docs/llm.md).

:func:`constrained_json` walks the schema's skeleton: given two text-level primitives (choose
among continuations, generate until a stop string) it writes the braces, keys, quotes and
commas itself and lets the model fill the values, field by field, batched across prompts. Its
output always parses and always validates. The local backend uses it.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from typing import Any, Protocol

from persona_shoppers.llm.base import MAX_NEW_TOKENS_PER_FIELD, JsonResult
from persona_shoppers.llm.json_schema import check_schema, validate

# Bounds for what the skeleton walker generates when the schema does not bound it.
DEFAULT_MAX_ITEMS = 8  # free-string arrays without maxItems
SMALL_RANGE = 21  # integers with at most this many allowed values are chosen, not generated
_NUMBER_RE = re.compile(r"-?\d+(?:\.\d+)?")


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
    max_new_tokens_per_field: int = MAX_NEW_TOKENS_PER_FIELD,
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
