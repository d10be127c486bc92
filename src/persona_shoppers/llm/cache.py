"""A disk cache of LLM answers, so a rerun (or a resumed, interrupted run) costs nothing.

One SQLite file (WAL mode: readers and a writer share it across processes), one table
``key -> json``; the key is the sha256 of ``cache_key_prefix`` (backend, model, numerics), the
method and the item's payload. :class:`CachedLLM` wraps any :class:`~.base.LLM`. See
docs/llm.md ("The response cache").
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from persona_shoppers.llm.base import LLM, Choice, GuidedRequest, JsonResult, Prompt

T = TypeVar("T")

CACHE_FILE = "llm_cache.sqlite"


def cache_key(prefix: str, method: str, payload: Any) -> str:
    blob = json.dumps(
        {"llm": prefix, "method": method, "payload": payload},
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class ResponseCache:
    """``key -> JSON value`` in SQLite. ``path`` is a file, or a folder (then
    ``<folder>/llm_cache.sqlite``). Safe to share between threads and processes."""

    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        if path.suffix not in (".sqlite", ".db", ".sqlite3"):
            path = path / CACHE_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(str(path), timeout=60, check_same_thread=False)
        with self._lock:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
            )
            self._conn.commit()

    def get_many(self, keys: Sequence[str]) -> dict[str, Any]:
        found: dict[str, Any] = {}
        unique = list(dict.fromkeys(keys))
        with self._lock:
            for start in range(0, len(unique), 500):
                chunk = unique[start : start + 500]
                marks = ",".join("?" * len(chunk))
                rows = self._conn.execute(
                    f"SELECT key, value FROM responses WHERE key IN ({marks})", chunk
                ).fetchall()
                found.update((k, json.loads(v)) for k, v in rows)
        return found

    def put_many(self, items: dict[str, Any]) -> None:
        if not items:
            return
        rows = [(k, json.dumps(v, ensure_ascii=False)) for k, v in items.items()]
        with self._lock:
            self._conn.executemany(
                "INSERT OR REPLACE INTO responses (key, value) VALUES (?, ?)", rows
            )
            self._conn.commit()

    def __len__(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM responses").fetchone()[0])

    def clear(self) -> None:
        with self._lock:
            self._conn.execute("DELETE FROM responses")
            self._conn.commit()

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def _key_seeds(seeds: list[int], temperature: float) -> list[int]:
    """The seeds a generate call is cached under: greedy answers do not depend on them."""
    return seeds if temperature > 0 else [0] * len(seeds)


class CachedLLM(LLM):
    """``llm`` with a disk cache in front of each method: the arguments are checked once (by
    :class:`~.base.LLM`), and ``llm``'s private steps answer the misses.

    ``chunk_size`` misses are sent to the model at a time and stored as soon as they are
    answered. ``hits`` / ``misses`` count items (not calls) per method; ``stats()`` returns
    both. ``cache_invalid_json`` also stores ``valid=False`` JSON answers.
    """

    def __init__(
        self,
        llm: LLM,
        path: str | Path | ResponseCache,
        chunk_size: int = 64,
        cache_invalid_json: bool = False,
    ) -> None:
        self.llm = llm
        self.cache = path if isinstance(path, ResponseCache) else ResponseCache(path)
        self.chunk_size = max(1, int(chunk_size))
        self.cache_invalid_json = cache_invalid_json
        self.hits: Counter[str] = Counter()
        self.misses: Counter[str] = Counter()

    @property
    def name(self) -> str:
        return self.llm.name

    @property
    def cache_key_prefix(self) -> str:
        return self.llm.cache_key_prefix

    def stats(self) -> dict[str, dict[str, int]]:
        return {"hits": dict(self.hits), "misses": dict(self.misses)}

    def __getattr__(self, item: str) -> Any:  # tokenizer, model, ... of the wrapped backend
        if item == "llm":
            raise AttributeError(item)
        return getattr(self.llm, item)

    def _run(
        self,
        method: str,
        payloads: list[Any],
        call: Callable[[list[int]], list[T]],
        encode: Callable[[T], Any],
        decode: Callable[[Any], T],
        storable: Callable[[T], bool] = lambda _: True,
    ) -> list[T]:
        keys = [cache_key(self.cache_key_prefix, method, p) for p in payloads]
        found = self.cache.get_many(keys)
        out: list[T | None] = [None] * len(keys)
        todo: dict[str, list[int]] = {}
        for i, key in enumerate(keys):
            if key in found:
                out[i] = decode(found[key])
                self.hits[method] += 1
            else:
                todo.setdefault(key, []).append(i)  # identical items are asked once
        firsts = [rows[0] for rows in todo.values()]
        if firsts:
            self.misses[method] += len(firsts)
        for start in range(0, len(firsts), self.chunk_size):
            chunk = firsts[start : start + self.chunk_size]
            answers = call(chunk)
            store = {}
            for i, answer in zip(chunk, answers, strict=True):
                for j in todo[keys[i]]:
                    out[j] = answer
                if storable(answer):
                    store[keys[i]] = encode(answer)
            self.cache.put_many(store)
        return out  # type: ignore[return-value]

    def _generate(
        self,
        prompts: list[Prompt],
        max_new_tokens: int,
        temperature: float,
        stop: list[str],
        seeds: list[int],
    ) -> list[str]:
        seeds = _key_seeds(seeds, temperature)
        settings = {"max_new_tokens": max_new_tokens, "temperature": temperature, "stop": stop}
        return self._run(
            "generate",
            [{"prompt": p, **settings, "seed": s} for p, s in zip(prompts, seeds, strict=True)],
            lambda rows: self.llm._generate(
                [prompts[i] for i in rows],
                max_new_tokens,
                temperature,
                stop,
                [seeds[i] for i in rows],
            ),
            encode=lambda s: s,
            decode=str,
        )

    def _generate_guided(self, request: GuidedRequest) -> list[str]:
        request = replace(request, seeds=_key_seeds(request.seeds, request.temperature))
        payloads = [
            {
                "prompt": prompt,
                "contrast": contrast,
                "guidance": request.guidance,
                "max_new_tokens": request.max_new_tokens,
                "temperature": request.temperature,
                "stop": request.stop,
                "seed": seed,
            }
            for prompt, contrast, seed in zip(
                request.prompts, request.contrast, request.seeds, strict=True
            )
        ]
        return self._run(
            "generate_guided",
            payloads,
            lambda rows: self.llm._generate_guided(request.rows(rows)),
            encode=lambda s: s,
            decode=str,
        )

    def _choose(
        self, prompts: list[Prompt], candidates: list[list[str]], normalize: bool
    ) -> list[Choice]:
        return self._run(
            "choose",
            [
                {"prompt": p, "candidates": c, "normalize": normalize}
                for p, c in zip(prompts, candidates, strict=True)
            ],
            lambda rows: self.llm._choose(
                [prompts[i] for i in rows], [candidates[i] for i in rows], normalize
            ),
            encode=Choice.to_dict,
            decode=Choice.from_dict,
        )

    def _generate_json(
        self,
        prompts: list[Prompt],
        schema: dict[str, Any],
        max_new_tokens_per_field: int,
        temperature: float,
        seed: int,
        **options: Any,
    ) -> list[JsonResult]:
        settings = {
            "schema": schema,
            "max_new_tokens_per_field": max_new_tokens_per_field,
            "temperature": temperature,
            "seed": seed if temperature > 0 else 0,
            **options,
        }
        return self._run(
            "generate_json",
            [{"prompt": p, **settings} for p in prompts],
            lambda rows: self.llm._generate_json(
                [prompts[i] for i in rows],
                schema,
                max_new_tokens_per_field,
                temperature,
                seed,
                **options,
            ),
            encode=JsonResult.to_dict,
            decode=JsonResult.from_dict,
            storable=lambda r: r.valid or self.cache_invalid_json,
        )

    def _perplexity(self, texts: list[str]) -> list[float]:
        return self._run(
            "perplexity",
            [{"text": t} for t in texts],
            lambda rows: self.llm._perplexity([texts[i] for i in rows]),
            encode=lambda x: x if x == x else None,  # NaN -> null
            decode=lambda x: float("nan") if x is None else float(x),
        )
