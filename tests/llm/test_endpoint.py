"""The endpoint backend against a scripted OpenAI-compatible server on 127.0.0.1."""

from __future__ import annotations

import json
import math
import time

import pytest

from persona_shoppers.llm.base import LLMError
from persona_shoppers.llm.endpoint import EndpointLLM

SCHEMA = {
    "type": "object",
    "properties": {
        "level": {"type": "string", "enum": ["low", "high"]},
        "why": {"type": "string", "maxLength": 10},
    },
    "required": ["level", "why"],
}
PROMPT = [{"role": "user", "content": "How price sensitive?"}]


def _llm(server, **kwargs) -> EndpointLLM:
    options = {"timeout_s": 2.0, "max_retries": 2, "backoff_s": 0.01, "concurrency": 4}
    options.update(kwargs)
    options.setdefault("choose_method", "likelihood" if "tokenizer" in options else "index")
    return EndpointLLM(server.url, "test-model", **options)


def test_normal_answer_and_request_shape(fake_server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    fake_server.script = [{"content": "Hello there. More"}]
    llm = _llm(fake_server)
    assert llm.generate([PROMPT], max_new_tokens=5, stop=["."]) == ["Hello there"]
    request = fake_server.requests[0]
    assert request["path"] == "/v1/chat/completions"
    assert request["body"]["model"] == "test-model"
    assert request["body"]["messages"] == PROMPT
    assert request["body"]["max_tokens"] == 5 and request["body"]["stop"] == ["."]
    assert request["headers"]["Authorization"] == "Bearer sk-test"
    assert llm.name == "endpoint:test-model"


def test_concurrent_requests_keep_the_order(fake_server):
    fake_server.script = [{"sleep": 0.3}]
    llm = _llm(fake_server, concurrency=4)
    prompts = [[{"role": "user", "content": f"q{i}"}] for i in range(4)]
    started = time.perf_counter()
    assert llm.generate(prompts) == [f"echo: q{i}" for i in range(4)]
    assert time.perf_counter() - started < 1.0  # 4 x 0.3 s in parallel, not in sequence


def test_json_schema_answer(fake_server):
    fake_server.script = [{"content": '{"level": "low", "why": "cheap items only"}'}]
    result = _llm(fake_server).generate_json([PROMPT], SCHEMA)[0]
    assert result.valid and result.attempts == 1 and result.error is None
    assert result.value == {"level": "low", "why": "cheap item"}  # repaired to maxLength
    sent = fake_server.requests[0]["body"]
    assert sent["response_format"]["type"] == "json_schema"
    assert sent["response_format"]["json_schema"]["schema"] == SCHEMA
    assert '"level": one of "low", "high"' in sent["messages"][-1]["content"]


def test_a_timeout_is_retried(fake_server):
    fake_server.script = [{"sleep": 1.5, "content": "late"}, {"content": "on time"}]
    llm = _llm(fake_server, timeout_s=0.5)
    started = time.perf_counter()
    assert llm.generate([PROMPT]) == ["on time"]
    assert time.perf_counter() - started < 3.0
    assert len(fake_server.requests) == 2


def test_a_server_error_is_retried(fake_server):
    fake_server.script = [{"status": 500}, {"status": 429}, {"content": "fine"}]
    assert _llm(fake_server).generate([PROMPT]) == ["fine"]
    assert len(fake_server.requests) == 3


def test_errors_after_the_last_retry_are_clear(fake_server):
    fake_server.script = [{"status": 503}]
    llm = _llm(fake_server, max_retries=2)
    with pytest.raises(LLMError, match=r"no answer after 3 attempts; last: HTTP 503"):
        llm.generate([PROMPT])
    assert len(fake_server.requests) == 3
    result = llm.generate_json([PROMPT], SCHEMA)[0]  # never raises
    assert not result.valid and "request failed" in result.error


def test_client_errors_are_not_retried(fake_server):
    fake_server.script = [{"status": 401}]
    with pytest.raises(LLMError, match="HTTP 401"):
        _llm(fake_server).generate([PROMPT])
    assert len(fake_server.requests) == 1


def test_invalid_json_answers_end_invalid_after_the_attempts(fake_server):
    fake_server.script = [
        {"content": "I think low."},
        {"content": '{"level": "medium", "why": "x"}'},
        {"content": '{"level": "low"}'},
    ]
    result = _llm(fake_server, json_attempts=3).generate_json([PROMPT], SCHEMA)[0]
    assert not result.valid
    assert result.attempts == 3 and len(fake_server.requests) == 3
    assert "missing required key 'why'" in result.error
    assert result.raw == '{"level": "low"}' and result.value == {"level": "low"}
    retry = fake_server.requests[1]["body"]["messages"]
    assert retry[-2] == {"role": "assistant", "content": "I think low."}
    assert "invalid" in retry[-1]["content"]


def test_an_invalid_answer_then_a_valid_one(fake_server):
    fake_server.script = [{"content": "nope"}, {"content": '{"level": "high", "why": "ok"}'}]
    result = _llm(fake_server).generate_json([PROMPT], SCHEMA)[0]
    assert result.valid and result.attempts == 2


def test_a_server_without_json_schema_is_asked_without_it(fake_server):
    fake_server.script = [{"status": 400}, {"content": '{"level": "high", "why": "ok"}'}]
    llm = _llm(fake_server)
    result = llm.generate_json([PROMPT], SCHEMA)[0]
    assert result.valid
    assert "response_format" in fake_server.requests[0]["body"]
    assert "response_format" not in fake_server.requests[1]["body"]
    assert llm.json_schema_supported is False


def test_choose_asks_for_an_index_and_reads_its_logprobs(fake_server):
    logprobs = [
        {"token": '{"', "logprob": 0.0, "top_logprobs": []},
        {"token": "index", "logprob": 0.0, "top_logprobs": []},
        {"token": '":', "logprob": 0.0, "top_logprobs": []},
        {
            "token": " 1",
            "logprob": -0.2,
            "top_logprobs": [{"token": " 1", "logprob": -0.2}, {"token": "0", "logprob": -1.8}],
        },
        {"token": "}", "logprob": 0.0, "top_logprobs": []},
    ]
    fake_server.script = [{"content": '{"index": 1}', "logprobs": logprobs}]
    choice = _llm(fake_server).choose([PROMPT], [["low", "high", "medium"]])[0]
    assert (choice.index, choice.text) == (1, "high")
    assert choice.logprobs[:2] == [-1.8, -0.2] and choice.logprobs[2] == -math.inf
    body = fake_server.requests[0]["body"]
    assert body["response_format"]["json_schema"]["schema"]["properties"]["index"]["enum"] == [
        0,
        1,
        2,
    ]
    assert "2: medium" in body["messages"][-1]["content"]


def test_choose_without_logprobs_is_one_hot(fake_server):
    fake_server.script = [{"content": '{"index": 0}'}]
    choice = _llm(fake_server).choose([PROMPT], [["yes", "no"]])[0]
    assert choice.index == 0 and choice.logprobs == [0.0, -math.inf]


def _echo(token_logprobs: list, generated: int = 1) -> dict:
    """A ``/completions`` answer with ``echo``: the prompt's token log-probabilities (the
    first None), then ``generated`` tokens."""
    values = [*token_logprobs, *([-0.5] * generated)]
    usage = {"prompt_tokens": len(token_logprobs), "completion_tokens": generated}
    return {"json": {"choices": [{"logprobs": {"token_logprobs": values}}], "usage": usage}}


def test_perplexity_via_completions_echo(fake_server):
    fake_server.script = [_echo([None, -1.0, -3.0])]
    assert _llm(fake_server).perplexity(["a b"]) == [pytest.approx(math.exp(2.0))]
    body = fake_server.requests[0]["body"]
    assert fake_server.requests[0]["path"] == "/v1/completions"
    assert body["echo"] is True and body["logprobs"] == 0 and body["max_tokens"] == 1


def test_choose_scores_each_candidate_from_prompt_logprobs(fake_server, tiny_model_dir):
    llm = _llm(fake_server, tokenizer=tiny_model_dir, concurrency=1)
    candidates = ['{"action": "view",', '{"action": "end"}']
    values = {candidates[0]: -1.0, candidates[1]: -2.0}  # per token of the candidate's own
    prefix = llm.render(PROMPT)
    n_prefix = len(llm.tokenizer.encode(prefix, add_special_tokens=False))
    answers, expected = [], {}
    for candidate in sorted(candidates):  # sent in text order: shared starts stay cached
        n = len(llm.tokenizer.encode(prefix + candidate, add_special_tokens=False))
        tail = [values[candidate]] * (n - n_prefix)
        answers.append(_echo([None, *[-0.1] * (n_prefix - 1), *tail]))
        expected[candidate] = sum(tail)
    fake_server.script = answers
    choice = llm.choose([PROMPT], [candidates])[0]
    assert choice.logprobs == pytest.approx([expected[c] for c in candidates])
    assert choice.text == max(candidates, key=expected.__getitem__)
    sent = [r["body"]["prompt"] for r in fake_server.requests]
    assert sent == [prefix + c for c in sorted(candidates)]


def test_choose_stops_when_the_server_tokenises_otherwise(fake_server, tiny_model_dir):
    fake_server.script = [_echo([None, -1.0, -1.0])]  # 3 tokens: not this tokenizer's count
    with pytest.raises(LLMError, match="tokenizer must be the served model's"):
        _llm(fake_server, tokenizer=tiny_model_dir).choose([PROMPT], [["yes", "no"]])


def test_likelihood_choose_needs_the_served_models_tokenizer(fake_server):
    with pytest.raises(ValueError, match="llm.endpoint.tokenizer"):
        EndpointLLM(fake_server.url, "m").choose([PROMPT], [["yes", "no"]])
    assert not fake_server.requests


def test_perplexity_not_implemented_without_echo(fake_server):
    fake_server.script = [{"status": 404}]
    llm = _llm(fake_server)
    with pytest.raises(NotImplementedError, match="echo"):
        llm.perplexity(["a b"])
    with pytest.raises(NotImplementedError):  # remembered, no new request
        llm.perplexity(["c"])
    assert len(fake_server.requests) == 1


def test_connection_refused_is_retried_then_clear(unused_port):
    llm = EndpointLLM(f"http://127.0.0.1:{unused_port}/v1", "m", max_retries=1, backoff_s=0.01)
    with pytest.raises(LLMError, match="2 attempts; last: connection"):
        llm.generate([PROMPT])


@pytest.fixture
def unused_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_requests_are_json(fake_server):
    _llm(fake_server).generate([PROMPT], temperature=0.5, seed=7)
    body = fake_server.requests[0]["body"]
    assert body["temperature"] == 0.5 and body["seed"] == 7
    json.dumps(body)
