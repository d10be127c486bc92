"""The endpoint backend (``backend: endpoint``): any OpenAI-compatible chat-completions server.

vLLM, Ollama, llama.cpp's server, LM Studio or a hosted API, over the standard library
(``urllib``): requests run ``concurrency`` at a time and are retried with backoff;
``generate_json`` validates and retries answers; ``choose`` scores each candidate exactly from
the server's prompt log-probabilities (``/completions`` with ``echo``), or asks for an index
where a server has none (``choose_method: index``, an approximation); ``perplexity`` needs
``echo`` too. See docs/llm.md and docs/models_and_endpoints.md.
"""

from __future__ import annotations

import http.client
import json
import logging
import math
import os
import socket
import threading
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from persona_shoppers.llm.base import (
    LLM,
    Choice,
    JsonResult,
    LLMError,
    Prompt,
    render_chat,
    text_start_id,
)
from persona_shoppers.llm.json_schema import (
    parse_json_answer,
    repair,
    schema_instruction,
    validate,
    with_instruction,
)
from persona_shoppers.llm.models import resolve_model
from persona_shoppers.llm.registry import (
    as_given,
    configured_model,
    parameters,
    register_backend,
)

logger = logging.getLogger(__name__)
T = TypeVar("T")
DEFAULT_API_KEY_ENV = "OPENAI_API_KEY"
R = TypeVar("R")
CHOOSE_METHODS = ("likelihood", "index")


class EndpointHTTPError(LLMError):
    """The server answered with an HTTP error that retrying does not fix."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _retry_after(headers: Any) -> float | None:
    value = headers.get("Retry-After") if headers is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


class EndpointLLM(LLM):
    """An OpenAI-compatible chat-completions server.

    ``api_key``: given, else the environment variable ``api_key_env`` (default
    ``OPENAI_API_KEY``), else none (local servers need none). ``json_attempts``: requests per
    ``generate_json`` item before it is returned invalid. ``strict_schema``: the ``strict``
    flag of the ``json_schema`` response format (OpenAI's strict mode rejects ``maxLength``
    and optional keys, so it is off by default). ``extra_body`` is merged into every request
    (e.g. ``{"top_p": 0.9}`` or vLLM's ``{"guided_decoding_backend": ...}``).

    ``choose_method``: ``likelihood`` (exact: each candidate's log-likelihood after the prompt
    rendered by ``tokenizer``'s chat template, a known model name or a local folder holding the
    served model's tokenizer) or ``index`` (the model answers a candidate's number).
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        api_key_env: str = DEFAULT_API_KEY_ENV,
        timeout_s: float = 30.0,
        max_retries: int = 3,
        backoff_s: float = 0.5,
        concurrency: int = 4,
        json_attempts: int = 3,
        strict_schema: bool = False,
        extra_body: dict[str, Any] | None = None,
        choose_method: str = "likelihood",
        tokenizer: str | Path | None = None,
        hf_cache_dir: str | Path | None = None,
    ) -> None:
        if not base_url:
            raise ValueError("EndpointLLM needs a base_url, e.g. http://localhost:8000/v1")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key = api_key or (os.environ.get(api_key_env) if api_key_env else None)
        self.timeout_s = float(timeout_s)
        self.max_retries = int(max_retries)
        self.backoff_s = float(backoff_s)
        self.concurrency = max(1, int(concurrency))
        self.json_attempts = max(1, int(json_attempts))
        self.strict_schema = strict_schema
        self.extra_body = dict(extra_body or {})
        if choose_method not in CHOOSE_METHODS:
            raise ValueError(
                f"choose_method must be one of {CHOOSE_METHODS}, got {choose_method!r}"
            )
        self.choose_method = choose_method
        self.tokenizer_source = tokenizer
        self.hf_cache_dir = hf_cache_dir
        self._tokenizer: Any = None
        self.json_schema_supported: bool | None = None  # learnt from the first rejection
        self.logprobs_supported: bool | None = None
        self.echo_supported: bool | None = None
        self.requests_sent = 0
        self._count_lock = threading.Lock()

    @property
    def name(self) -> str:
        return f"endpoint:{self.model}"

    @property
    def cache_key_prefix(self) -> str:
        return f"endpoint:{self.base_url}:{self.model}:{self.choose_method}"

    @property
    def tokenizer(self) -> Any:
        """The served model's tokenizer (``tokenizer``), loaded on first use."""
        if self.tokenizer_source is None:
            raise ValueError(
                "scoring candidates (choose_method: likelihood) renders prompts with the "
                "served model's chat template: give llm.endpoint.tokenizer (a known model "
                "name or a local folder with the served model's tokenizer), or set "
                "llm.endpoint.choose_method: index"
            )
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            folder = resolve_model(self.tokenizer_source, self.hf_cache_dir)
            self._tokenizer = AutoTokenizer.from_pretrained(folder)
        return self._tokenizer

    def render(self, prompt: Prompt) -> str:
        """The raw text the served model continues for a chat prompt (its chat template)."""
        return render_chat(self.tokenizer, prompt)

    # ------------------------------------------------------------------ transport

    def _post_once(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        data = json.dumps({**self.extra_body, **body}).encode("utf-8")
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(
            self.base_url + path, data=data, headers=headers, method="POST"
        )
        with self._count_lock:
            self.requests_sent += 1
        with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
            return json.loads(response.read().decode("utf-8"))

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST with retries on timeouts, connection errors, 429 and 5xx."""
        url = self.base_url + path
        last = "no attempt"
        for attempt in range(self.max_retries + 1):
            wait = self.backoff_s * (2**attempt)
            try:
                return self._post_once(path, body)
            except urllib.error.HTTPError as exc:
                detail = exc.read().decode("utf-8", "replace")[:300]
                if exc.code != 429 and exc.code < 500:
                    raise EndpointHTTPError(exc.code, f"{url}: HTTP {exc.code}: {detail}") from None
                last = f"HTTP {exc.code}: {detail}"
                wait = min(_retry_after(exc.headers) or wait, 60.0)
            except TimeoutError as exc:
                last = f"timeout after {self.timeout_s}s ({exc})"
            except urllib.error.URLError as exc:
                reason = exc.reason
                kind = "timeout" if isinstance(reason, TimeoutError | socket.timeout) else "error"
                last = f"connection {kind}: {reason}"
            except (ConnectionError, http.client.HTTPException) as exc:
                last = f"connection error: {type(exc).__name__}: {exc}"
            except json.JSONDecodeError as exc:
                last = f"the answer is not JSON: {exc}"
            if attempt < self.max_retries:
                logger.warning(
                    "%s: %s; retry %d/%d in %.1fs", url, last, attempt + 1, self.max_retries, wait
                )
                time.sleep(wait)
        raise LLMError(f"{url}: no answer after {self.max_retries + 1} attempts; last: {last}")

    def _map(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        if len(items) <= 1 or self.concurrency == 1:
            return [fn(x) for x in items]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(items))) as pool:
            return list(pool.map(fn, items))

    def chat(
        self,
        messages: list[dict[str, str]],
        max_tokens: int,
        temperature: float = 0.0,
        seed: int | None = 0,
        stop: Sequence[str] | None = None,
        response_format: dict[str, Any] | None = None,
        top_logprobs: int | None = None,
    ) -> dict[str, Any]:
        """One chat completion; returns the first choice (``message``, ``logprobs``, ...).

        An optional feature the server rejects with HTTP 400 (``response_format``,
        ``logprobs``) is dropped, remembered, and the request is sent again without it."""
        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "max_tokens": int(max_tokens),
            "temperature": float(temperature),
        }
        if seed is not None:
            body["seed"] = int(seed)
        if stop:
            body["stop"] = list(stop)[:4]
        use_format = response_format is not None and self.json_schema_supported is not False
        use_logprobs = top_logprobs is not None and self.logprobs_supported is not False
        if use_format:
            body["response_format"] = response_format
        if use_logprobs:
            body["logprobs"] = True
            body["top_logprobs"] = int(top_logprobs)
        try:
            answer = self.post("/chat/completions", body)
        except EndpointHTTPError as exc:
            if exc.status not in (400, 422) or not (use_format or use_logprobs):
                raise
            logger.warning(
                "%s rejected optional fields (%s); sending without them", self.base_url, exc
            )
            body.pop("response_format", None)
            body.pop("logprobs", None)
            body.pop("top_logprobs", None)
            answer = self.post("/chat/completions", body)
            if use_format:
                self.json_schema_supported = False
            if use_logprobs:
                self.logprobs_supported = False
        else:
            if use_format:
                self.json_schema_supported = True
        choices = answer.get("choices") or []
        if not choices or not isinstance(choices[0], dict):
            raise LLMError(f"{self.base_url}: answer without choices: {str(answer)[:200]}")
        return choices[0]

    @staticmethod
    def _content(choice: dict[str, Any]) -> str:
        message = choice.get("message") or {}
        return message.get("content") or choice.get("text") or ""

    # ------------------------------------------------------------------ the interface

    def _generate(
        self,
        prompts: list[Prompt],
        max_new_tokens: int,
        temperature: float,
        stop: list[str],
        seeds: list[int],
    ) -> list[str]:
        def one(item: tuple[Prompt, int]) -> str:
            prompt, row_seed = item
            text = self._content(self.chat(prompt, max_new_tokens, temperature, row_seed, stop))
            cuts = [text.find(s) for s in stop if s and s in text]
            return text[: min(cuts)] if cuts else text

        return self._map(one, list(zip(prompts, seeds, strict=True)))

    def _json_one(
        self,
        prompt: Prompt,
        schema: dict[str, Any],
        max_tokens: int,
        temperature: float,
        seed: int,
        top_logprobs: int | None = None,
    ) -> tuple[JsonResult, dict[str, Any] | None]:
        response_format = {
            "type": "json_schema",
            "json_schema": {"name": "answer", "schema": schema, "strict": self.strict_schema},
        }
        messages = with_instruction(prompt, schema_instruction(schema))
        raw, value, error, choice = "", None, "no answer", None
        for attempt in range(1, self.json_attempts + 1):
            try:
                choice = self.chat(
                    messages,
                    max_tokens,
                    temperature,
                    seed + attempt - 1,
                    response_format=response_format,
                    top_logprobs=top_logprobs,
                )
            except LLMError as exc:
                return JsonResult(value, False, raw, attempt, f"request failed: {exc}"), None
            raw = self._content(choice)
            try:
                value = repair(parse_json_answer(raw), schema)
            except ValueError as exc:
                value, error = None, f"invalid JSON: {exc}"
            else:
                errors = validate(value, schema)
                if not errors:
                    return JsonResult(value, True, raw, attempt, None), choice
                error = "; ".join(errors)
            messages = [
                *messages,
                {"role": "assistant", "content": raw},
                {
                    "role": "user",
                    "content": f"That answer is invalid ({error}). Answer again with only the "
                    "JSON object.",
                },
            ]
        return JsonResult(
            value if isinstance(value, dict) else None, False, raw, self.json_attempts, error
        ), choice

    def _generate_json(
        self,
        prompts: list[Prompt],
        schema: dict[str, Any],
        max_new_tokens_per_field: int,
        temperature: float,
        seed: int,
    ) -> list[JsonResult]:
        max_tokens = max_new_tokens_per_field * len(schema["properties"]) + 32
        return self._map(
            lambda p: self._json_one(p, schema, max_tokens, temperature, seed)[0], prompts
        )

    def _choose(
        self, prompts: list[Prompt], candidates: list[list[str]], normalize: bool
    ) -> list[Choice]:
        if self.choose_method == "index":
            return self._choose_by_index(prompts, candidates)

        def one(item: tuple[Prompt, list[str]]) -> Choice:
            # A prompt's candidates go one after another, in text order, so a server that
            # reuses the previous request's prefix (llama.cpp) runs the prompt and the
            # candidates' shared starts once.
            prompt, cands = item
            prefix = self.render(prompt)
            head = self.tokenizer.encode(prefix, add_special_tokens=False)
            order = sorted(range(len(cands)), key=cands.__getitem__)
            scored = {k: self.continuation_logprob(prefix, cands[k], head) for k in order}
            scores = [scored[k] for k in range(len(cands))]
            total = [t for t, _ in scores]
            mean = [t / n for t, n in scores]
            values = mean if normalize else total
            k = max(range(len(cands)), key=values.__getitem__)
            return Choice(index=k, text=cands[k], logprobs=total, mean_logprobs=mean)

        return self._map(one, list(zip(prompts, candidates, strict=True)))

    def continuation_logprob(
        self, prefix: str, candidate: str, head: list[int] | None = None
    ) -> tuple[float, int]:
        """(log-likelihood, number of tokens) of ``candidate`` continuing the raw text
        ``prefix`` (``head``: its tokens, when known): the server's log-probabilities of the
        last tokens of ``prefix + candidate``, those the prefix's own tokens do not cover
        (counted with ``tokenizer``, which must be the served model's: the server's token
        count is checked against it)."""
        if not candidate:
            raise ValueError("choose: candidates must be non-empty strings")
        encode = self.tokenizer.encode
        if head is None:
            head = encode(prefix, add_special_tokens=False)
        full = encode(prefix + candidate, add_special_tokens=False)
        shared = 0
        while shared < min(len(head), len(full) - 1) and head[shared] == full[shared]:
            shared += 1
        logprobs, prompt_tokens = self.prompt_logprobs(prefix + candidate)
        if prompt_tokens != len(full):
            raise LLMError(
                f"{self.base_url}: the server tokenised the prompt into {prompt_tokens} "
                f"tokens, the tokenizer {self.tokenizer_source!r} into {len(full)}: "
                "llm.endpoint.tokenizer must be the served model's"
            )
        scored = logprobs[len(logprobs) - (len(full) - max(shared, 1)) :]
        return float(sum(scored)), len(scored)

    def prompt_logprobs(self, text: str) -> tuple[list[float], int]:
        """(log-probabilities, number of prompt tokens) of ``text``: each token's given the
        ones before it (the first token has none and is left out), from ``/completions``
        with ``echo`` and ``logprobs``. Some servers leave out more (llama-cpp-python every
        BOS token): count from the end. Raises ``NotImplementedError`` where the server
        cannot."""
        if self.echo_supported is False:
            raise NotImplementedError(self._no_echo("(not supported, seen earlier)"))
        body = {
            "model": self.model,
            "prompt": text,
            "echo": True,
            "logprobs": 0,
            "max_tokens": 1,  # some servers read 0 as "up to the context length"
            "temperature": 0.0,
        }
        try:
            answer = self.post("/completions", body)
        except EndpointHTTPError as exc:
            if exc.status in (400, 404, 405, 422, 501):
                self.echo_supported = False
                raise NotImplementedError(self._no_echo(str(exc))) from None
            raise
        choices = answer.get("choices") or [{}]
        values = (choices[0].get("logprobs") or {}).get("token_logprobs") or []
        usage = answer.get("usage") or {}
        generated = int(usage.get("completion_tokens", 0))
        values = [v for v in values[: len(values) - generated] if v is not None]
        if not values:
            self.echo_supported = False
            raise NotImplementedError(self._no_echo("the answer has no prompt logprobs"))
        self.echo_supported = True
        return [float(v) for v in values], int(usage.get("prompt_tokens", len(values) + 1))

    def _choose_by_index(self, prompts: list[Prompt], candidates: list[list[str]]) -> list[Choice]:
        """Approximation: the model answers the index of the best candidate (see docs/llm.md)."""

        def one(item: tuple[int, Prompt, list[str]]) -> Choice:
            i, prompt, cands = item
            n = len(cands)
            listing = "\n".join(f"{k}: {c}" for k, c in enumerate(cands))
            asked = with_instruction(
                prompt,
                f"Possible answers:\n{listing}\n\nWhich answer is best? Reply with its number.",
            )
            schema = {
                "type": "object",
                "properties": {"index": {"type": "integer", "enum": list(range(n))}},
                "required": ["index"],
            }
            result, choice = self._json_one(
                asked, schema, 16, 0.0, 0, top_logprobs=min(20, max(n, 2)) if n <= 10 else None
            )
            if result.valid and result.value is not None:
                k = int(result.value["index"])
            else:
                matches = [k for k, c in enumerate(cands) if c.strip() and c.strip() in result.raw]
                if len(matches) != 1:
                    raise LLMError(
                        f"choose: prompt {i}: no valid candidate index from the endpoint "
                        f"({result.error}); raw answer {result.raw[:120]!r}"
                    )
                k = matches[0]
            logprobs = [0.0 if j == k else -math.inf for j in range(n)]
            if n <= 10 and choice is not None:
                logprobs = self._index_logprobs(choice, n) or logprobs
            return Choice(index=k, text=cands[k], logprobs=logprobs, mean_logprobs=list(logprobs))

        return self._map(one, list(zip(range(len(prompts)), prompts, candidates, strict=True)))

    @staticmethod
    def _index_logprobs(choice: dict[str, Any], n: int) -> list[float] | None:
        """The distribution over single-digit indices at the answer's index token."""
        content = (choice.get("logprobs") or {}).get("content") or []
        for entry in content:
            token = str(entry.get("token", "")).strip()
            if token.isdigit():
                values = [-math.inf] * n
                for alt in entry.get("top_logprobs") or [entry]:
                    alt_token = str(alt.get("token", "")).strip()
                    if alt_token.isdigit() and int(alt_token) < n:
                        k = int(alt_token)
                        values[k] = max(values[k], float(alt.get("logprob", -math.inf)))
                return values if any(math.isfinite(v) for v in values) else None
        return None

    def _perplexity(self, texts: list[str]) -> list[float]:
        """Via ``/completions`` with ``echo`` and ``logprobs``: with the served model's
        ``tokenizer``, every token conditioned as the local backend does (the first on the
        start-of-text token); without one (``choose_method: index``), the first token is not
        scored."""

        def one(text: str) -> float:
            if not text:
                return math.nan
            if self.tokenizer_source is None:
                values, _ = self.prompt_logprobs(text)
                return math.exp(-sum(values) / len(values))
            start = self.tokenizer.convert_ids_to_tokens(text_start_id(self.tokenizer))
            total, n = self.continuation_logprob(start, text)
            return math.exp(-total / n)

        return self._map(one, texts)

    def _no_echo(self, why: str) -> str:
        return (
            f"EndpointLLM needs {self.base_url}/completions with echo + logprobs for perplexity "
            f"and exact choose (vLLM's and llama-cpp-python's servers have it); this server "
            f"cannot: {why}. Use llm.endpoint.choose_method: index, or a LocalLLM "
            "(llm.backend: local)."
        )


def kedro_credentials(name: str = "llm_endpoint", conf_source: str | Path = "conf") -> dict:
    """The ``name`` entry of Kedro's credentials (``conf/local/credentials.yml``), or {}."""
    try:
        from kedro.config import OmegaConfigLoader

        with warnings.catch_warnings():  # omegaconf deprecations raised inside kedro
            warnings.simplefilter("ignore")
            loader = OmegaConfigLoader(
                conf_source=str(conf_source), base_env="base", default_run_env="local"
            )
            entry = loader["credentials"].get(name) or {}
    except Exception as exc:  # no conf folder, no kedro, unreadable yaml: no credentials
        logger.debug("no Kedro credentials %r: %s", name, exc)
        return {}
    return dict(entry) if isinstance(entry, Mapping) else {}


def _api_key(config: Mapping[str, Any], credentials: Mapping[str, Any] | None) -> str | None:
    """The API key, searched in the order docs/llm.md gives ("Configuration")."""
    endpoint = config.get("endpoint") or {}
    for source in (config, endpoint, credentials or {}):
        if source.get("api_key"):
            return str(source["api_key"])
    env = endpoint.get("api_key_env", DEFAULT_API_KEY_ENV)
    if env and os.environ.get(env):
        return None  # EndpointLLM reads the environment variable itself
    name = endpoint.get("credentials", "llm_endpoint")
    if name:
        found = kedro_credentials(name, config.get("conf_source", "conf")).get("api_key")
        return str(found) if found else None
    return None


def _model_tag(config: Mapping[str, Any]) -> str:
    endpoint = config.get("endpoint") or {}
    return f"{endpoint.get('model') or config.get('model')} @ {endpoint.get('base_url')}"


# The ``llm.endpoint`` parameters read as they are given; EndpointLLM's defaults apply to the rest.
PARAMETERS = {
    "api_key_env": as_given,
    "timeout_s": float,
    "max_retries": int,
    "backoff_s": float,
    "concurrency": int,
    "json_attempts": int,
    "strict_schema": bool,
    "extra_body": as_given,
    "choose_method": str,
}


@register_backend("endpoint", model_tag=_model_tag)
def build_endpoint(
    config: Mapping[str, Any], credentials: Mapping[str, Any] | None = None
) -> EndpointLLM:
    """An :class:`EndpointLLM` from the ``llm`` parameters' ``endpoint`` block."""
    endpoint = dict(config.get("endpoint") or {})
    if not endpoint.get("base_url"):
        raise ValueError("llm.endpoint.base_url is required for backend: endpoint")
    choose_method = endpoint.get("choose_method", "likelihood")
    return EndpointLLM(
        base_url=endpoint["base_url"],
        model=endpoint.get("model") or config.get("model") or "default",
        api_key=_api_key(config, credentials),
        tokenizer=endpoint.get("tokenizer") or configured_model(config)
        if choose_method == "likelihood"
        else None,
        hf_cache_dir=config.get("hf_cache_dir"),
        **parameters(endpoint, PARAMETERS),
    )
