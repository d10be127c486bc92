"""The interface checks arguments and owns the defaults once, for every backend."""

from __future__ import annotations

import pytest

from persona_shoppers.llm.base import LLM, Choice, JsonResult
from persona_shoppers.llm.cache import CachedLLM
from persona_shoppers.llm.endpoint import EndpointLLM
from persona_shoppers.llm.json_schema import SchemaError
from persona_shoppers.llm.local import LocalLLM

from .test_cache import CountingLLM

PROMPT = [{"role": "user", "content": "hi"}]
SCHEMA = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}


class RecordingLLM(LLM):
    """A minimal backend: records what its private steps receive."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    @property
    def name(self) -> str:
        return "recording"

    @property
    def cache_key_prefix(self) -> str:
        return "recording:v1"

    def _generate(self, prompts, max_new_tokens, temperature, stop, seeds):
        self.calls.append(("generate", prompts, max_new_tokens, temperature, stop, seeds))
        return [p[-1]["content"] for p in prompts]

    def _generate_guided(self, request):
        self.calls.append(("generate", request.prompts, request.max_new_tokens))
        self.calls.append(("contrast", request.contrast, request.guidance))
        return [p[-1]["content"] for p in request.prompts]

    def _choose(self, prompts, candidates, normalize):
        self.calls.append(("choose", prompts, candidates, normalize))
        return [Choice(0, c[0], [0.0] * len(c)) for c in candidates]

    def _generate_json(self, prompts, schema, max_new_tokens_per_field, temperature, seed, **kw):
        self.calls.append(("json", prompts, max_new_tokens_per_field, temperature, seed, kw))
        return [JsonResult({"a": "x"}, True, '{"a": "x"}') for _ in prompts]

    def _perplexity(self, texts):
        self.calls.append(("perplexity", texts))
        return [1.0] * len(texts)


def test_the_backend_gets_checked_arguments_and_the_defaults():
    llm = RecordingLLM()
    extra = [{"role": "user", "content": "hi", "name": "dropped"}]
    llm.generate([extra])
    assert llm.calls[-1] == ("generate", [PROMPT], 64, 0.0, [], [0])
    llm.generate((PROMPT, PROMPT), 8, 0.5, stop=("\n",), seed=[3, 4])
    assert llm.calls[-1] == ("generate", [PROMPT, PROMPT], 8, 0.5, ["\n"], [3, 4])
    llm.choose([PROMPT], [("a", "b")])
    assert llm.calls[-1] == ("choose", [PROMPT], [["a", "b"]], False)
    llm.generate_json([PROMPT], SCHEMA)
    assert llm.calls[-1] == ("json", [PROMPT], 64, 0.0, 0, {})
    llm.generate_json([PROMPT], SCHEMA, 5, describe_schema=False)
    assert llm.calls[-1] == ("json", [PROMPT], 5, 0.0, 0, {"describe_schema": False})
    llm.perplexity(("a", "b"))
    assert llm.calls[-1] == ("perplexity", ["a", "b"])


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda llm: llm.generate("hello"), TypeError, "list of prompts"),
        (lambda llm: llm.generate([[]]), TypeError, "prompt 0 must be a non-empty list"),
        (lambda llm: llm.generate([[{"role": "bot", "content": "x"}]]), ValueError, "role"),
        (lambda llm: llm.generate([[{"role": "user", "content": 3}]]), ValueError, "string"),
        (lambda llm: llm.generate([PROMPT], seed=[1, 2]), ValueError, "2 seeds for 1 prompts"),
        (lambda llm: llm.choose([PROMPT], [["a"], ["b"]]), ValueError, "one list of candidates"),
        (lambda llm: llm.choose([PROMPT], [[]]), ValueError, "prompt 0 has no candidates"),
        (lambda llm: llm.choose([PROMPT], ["ab"]), TypeError, "must be a list of texts"),
        (lambda llm: llm.generate_json([PROMPT], {"type": "array"}), SchemaError, "top level"),
        (lambda llm: llm.perplexity("text"), TypeError, "list of texts"),
        (lambda llm: llm.perplexity(["a", 3]), TypeError, "text 1 must be a string"),
    ],
)
def test_bad_arguments_never_reach_a_backend(call, error, match, tmp_path):
    for llm in (RecordingLLM(), CachedLLM(RecordingLLM(), tmp_path)):
        with pytest.raises(error, match=match):
            call(llm)
        assert getattr(llm, "llm", llm).calls == []


@pytest.mark.parametrize("backend", [LocalLLM, EndpointLLM, CachedLLM])
def test_backends_implement_the_private_steps_only(backend):
    for method in ("generate", "choose", "generate_json", "perplexity"):
        assert getattr(backend, method) is getattr(LLM, method), f"{backend.__name__}.{method}"


def test_guided_generation_is_checked_and_needs_a_backend_that_implements_it():
    llm = RecordingLLM()
    with pytest.raises(ValueError, match="one contrast prompt per prompt"):
        llm.generate([PROMPT, PROMPT], contrast=[PROMPT], guidance=2.0)
    with pytest.raises(ValueError, match="guidance must be >= 1"):
        llm.generate([PROMPT], contrast=[PROMPT], guidance=0.5)
    with pytest.raises(ValueError, match="guidance must be >= 1"):
        llm.generate([PROMPT], guidance=0.5)  # checked with or without a contrast
    llm.generate([PROMPT], contrast=[PROMPT], guidance=1.0)  # no guidance: plain generation
    assert llm.calls[-1][0] == "generate"
    llm.generate([PROMPT], contrast=[PROMPT], guidance=2.0)
    assert llm.calls[-1] == ("contrast", [PROMPT], 2.0)
    with pytest.raises(NotImplementedError, match="query_guidance"):
        CountingLLM().generate([PROMPT], contrast=[PROMPT], guidance=2.0)  # no guided step
