"""The disk cache: hits call no model, misses are batched, interrupted runs resume."""

from __future__ import annotations

import math
import sqlite3
from collections import Counter

import pytest

from persona_shoppers.llm.base import LLM, Choice, JsonResult
from persona_shoppers.llm.cache import CachedLLM, ResponseCache

SCHEMA = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}


class CountingLLM(LLM):
    """Deterministic answers; counts calls and items per method."""

    def __init__(self, fail_after: int | None = None, valid: bool = True) -> None:
        self.calls: Counter[str] = Counter()
        self.items: Counter[str] = Counter()
        self.fail_after = fail_after
        self.valid = valid

    def _count(self, method: str, n: int) -> None:
        if self.fail_after is not None and sum(self.calls.values()) >= self.fail_after:
            raise KeyboardInterrupt("simulated interruption")
        self.calls[method] += 1
        self.items[method] += n

    @property
    def name(self) -> str:
        return "counting"

    @property
    def cache_key_prefix(self) -> str:
        return "counting:v1"

    def _generate(self, prompts, max_new_tokens, temperature, stop, seeds):
        self._count("generate", len(prompts))
        return [
            f"{p[-1]['content']}|{max_new_tokens}|{s}" for p, s in zip(prompts, seeds, strict=True)
        ]

    def _choose(self, prompts, candidates, normalize):
        self._count("choose", len(prompts))
        return [Choice(len(c) - 1, c[-1], [-1.0] * len(c), [-0.5] * len(c)) for c in candidates]

    def _generate_json(self, prompts, schema, max_new_tokens_per_field, temperature, seed):
        self._count("generate_json", len(prompts))
        return [
            JsonResult({"a": p[-1]["content"]}, self.valid, "{}", 1, None if self.valid else "bad")
            for p in prompts
        ]

    def _perplexity(self, texts):
        self._count("perplexity", len(texts))
        return [float(len(t)) if t else math.nan for t in texts]


def _prompts(n: int, tag: str = "p") -> list[list[dict[str, str]]]:
    return [[{"role": "user", "content": f"{tag}{i}"}] for i in range(n)]


def test_second_run_hits_the_cache_and_calls_no_model(tmp_path):
    inner = CountingLLM()
    llm = CachedLLM(inner, tmp_path)
    first = (
        llm.generate(_prompts(5), max_new_tokens=7),
        llm.choose(_prompts(3), [["a", "b"], ["c"], ["d", "e", "f"]]),
        llm.generate_json(_prompts(4), SCHEMA),
        llm.perplexity(["ab", "", "abcd"]),
    )
    calls = dict(inner.calls)
    assert llm.stats()["misses"] == {
        "generate": 5,
        "choose": 3,
        "generate_json": 4,
        "perplexity": 3,
    }

    again = CachedLLM(CountingLLM(), tmp_path)  # a new process would see the same file
    second = (
        again.generate(_prompts(5), max_new_tokens=7),
        again.choose(_prompts(3), [["a", "b"], ["c"], ["d", "e", "f"]]),
        again.generate_json(_prompts(4), SCHEMA),
        again.perplexity(["ab", "", "abcd"]),
    )
    assert again.llm.calls == Counter()
    assert again.stats()["hits"] == {
        "generate": 5,
        "choose": 3,
        "generate_json": 4,
        "perplexity": 3,
    }
    assert first[:3] == second[:3]
    assert first[3][0] == second[3][0] and math.isnan(second[3][1])
    assert calls == {"generate": 1, "choose": 1, "generate_json": 1, "perplexity": 1}


def test_only_misses_reach_the_model_and_settings_are_part_of_the_key(tmp_path):
    inner = CountingLLM()
    llm = CachedLLM(inner, tmp_path / "c.sqlite")
    llm.generate(_prompts(3))
    out = llm.generate(_prompts(5))
    assert inner.items["generate"] == 5  # 3, then the 2 new ones
    assert out == [f"p{i}|64|0" for i in range(5)]
    llm.generate(_prompts(5), max_new_tokens=8)
    assert inner.items["generate"] == 10
    llm.generate(_prompts(2), temperature=0.7, seed=1)
    llm.generate(_prompts(2), temperature=0.7, seed=2)
    assert inner.items["generate"] == 14
    llm.generate(_prompts(2), seed=5)  # greedy: the seed does not matter
    assert inner.items["generate"] == 14


def test_duplicates_in_one_call_are_asked_once(tmp_path):
    inner = CountingLLM()
    llm = CachedLLM(inner, tmp_path)
    out = llm.generate(_prompts(2) * 3)
    assert inner.items["generate"] == 2
    assert out == ["p0|64|0", "p1|64|0"] * 3


def test_an_interrupted_run_resumes_from_the_stored_chunks(tmp_path):
    inner = CountingLLM(fail_after=2)
    llm = CachedLLM(inner, tmp_path, chunk_size=4)
    with pytest.raises(KeyboardInterrupt):
        llm.generate(_prompts(10))
    assert len(llm.cache) == 8  # two chunks of four were stored before the interruption
    resumed = CachedLLM(CountingLLM(), tmp_path, chunk_size=4)
    out = resumed.generate(_prompts(10))
    assert resumed.llm.items["generate"] == 2
    assert out == [f"p{i}|64|0" for i in range(10)]


def test_invalid_json_answers_are_not_cached_by_default(tmp_path):
    inner = CountingLLM(valid=False)
    llm = CachedLLM(inner, tmp_path)
    llm.generate_json(_prompts(2), SCHEMA)
    llm.generate_json(_prompts(2), SCHEMA)
    assert inner.items["generate_json"] == 4
    keep = CachedLLM(CountingLLM(valid=False), tmp_path / "k.sqlite", cache_invalid_json=True)
    keep.generate_json(_prompts(2), SCHEMA)
    keep.generate_json(_prompts(2), SCHEMA)
    assert keep.llm.items["generate_json"] == 2


def test_cache_file_is_sqlite_in_wal_mode(tmp_path):
    cache = ResponseCache(tmp_path)
    cache.put_many({"k": {"x": [1, 2]}})
    assert cache.get_many(["k", "missing"]) == {"k": {"x": [1, 2]}}
    mode = sqlite3.connect(cache.path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_cached_local_backend_calls_no_model_on_rerun(tiny_llm, prompts, tmp_path, monkeypatch):
    schema = {
        "type": "object",
        "properties": {
            "level": {"type": "string", "enum": ["low", "high"]},
            "n": {"type": "integer"},
        },
        "required": ["level", "n"],
    }
    llm = CachedLLM(tiny_llm, tmp_path)
    first = llm.generate_json(prompts, schema, max_new_tokens_per_field=4)
    gen = llm.generate(prompts, max_new_tokens=5)
    contrast = prompts[::-1]
    guided = llm.generate(prompts, max_new_tokens=5, contrast=contrast, guidance=2.0)
    assert guided == tiny_llm.generate(prompts, max_new_tokens=5, contrast=contrast, guidance=2.0)

    def forbidden(*args, **kwargs):
        raise AssertionError("the model was called")

    monkeypatch.setattr(tiny_llm, "_forward", forbidden)
    again = CachedLLM(tiny_llm, tmp_path)
    assert again.generate_json(prompts, schema, max_new_tokens_per_field=4) == first
    assert again.generate(prompts, max_new_tokens=5) == gen
    assert again.generate(prompts, max_new_tokens=5, contrast=contrast, guidance=2.0) == guided
    assert again.stats()["misses"] == {}
    with pytest.raises(AssertionError, match="the model was called"):  # guidance: in the key
        again.generate(prompts, max_new_tokens=5, contrast=contrast, guidance=3.0)


def test_per_prompt_seeds_are_part_of_the_key(tmp_path):
    inner = CountingLLM()
    llm = CachedLLM(inner, tmp_path / "c.sqlite")
    same = [_prompts(1)[0]] * 2
    assert llm.generate(same, temperature=1.0, seed=[1, 2]) == ["p0|64|1", "p0|64|2"]
    assert llm.generate(same, temperature=1.0, seed=[2, 3]) == ["p0|64|2", "p0|64|3"]
    assert inner.items["generate"] == 3  # seed 2 was answered from the cache
    with pytest.raises(ValueError, match="2 seeds for 1 prompts"):
        llm.generate(_prompts(1), temperature=1.0, seed=[1, 2])
