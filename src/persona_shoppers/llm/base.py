"""The LLM interface every pipeline calls, and the small records it returns.

A *prompt* is a list of chat messages ``[{"role": "system" | "user" | "assistant",
"content": str}]``. Every method is batched: it takes a list of prompts and returns one
answer per prompt, in the same order. Backends (``LocalLLM``, ``EndpointLLM``) and the
cache wrapper (``CachedLLM``) all implement :class:`LLM`.
"""

from __future__ import annotations

import contextlib
import math
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

Message = dict[str, str]
Prompt = list[Message]

ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class Choice:
    """The candidate a model prefers as the assistant's continuation of a prompt.

    ``logprobs[j]`` is the total log-likelihood of candidate ``j`` (sum over its tokens);
    ``mean_logprobs[j]`` the same divided by its number of tokens (length-normalised).
    ``index`` / ``text`` is the best candidate by the criterion asked for (total by default).
    """

    index: int
    text: str
    logprobs: list[float]
    mean_logprobs: list[float] = field(default_factory=list)

    @property
    def probs(self) -> list[float]:
        """Softmax of the total log-likelihoods over the candidates (sums to 1)."""
        finite = [lp for lp in self.logprobs if math.isfinite(lp)]
        if not finite:
            return [1.0 / len(self.logprobs)] * len(self.logprobs)
        top = max(finite)
        weights = [math.exp(lp - top) if math.isfinite(lp) else 0.0 for lp in self.logprobs]
        total = sum(weights)
        return [w / total for w in weights]

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "text": self.text,
            "logprobs": list(self.logprobs),
            "mean_logprobs": list(self.mean_logprobs),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Choice:
        return cls(
            index=int(data["index"]),
            text=data["text"],
            logprobs=[float(x) for x in data["logprobs"]],
            mean_logprobs=[float(x) for x in data.get("mean_logprobs", [])],
        )


@dataclass(frozen=True)
class JsonResult:
    """One structured answer.

    ``value`` is the parsed object (None when nothing parseable came back), ``valid`` whether it
    satisfies the schema, ``raw`` the text the model produced (last attempt), ``attempts`` how
    many requests were made and ``error`` why it is invalid (None when valid).
    """

    value: dict[str, Any] | None
    valid: bool
    raw: str
    attempts: int = 1
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "value": self.value,
            "valid": self.valid,
            "raw": self.raw,
            "attempts": self.attempts,
            "error": self.error,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JsonResult:
        return cls(
            value=data["value"],
            valid=bool(data["valid"]),
            raw=data["raw"],
            attempts=int(data.get("attempts", 1)),
            error=data.get("error"),
        )


def prompt_seeds(seed: int | Sequence[int], n: int) -> list[int]:
    """One sampling seed per prompt: ``seed`` for all of them, or one each (a sequence)."""
    if isinstance(seed, int):
        return [seed] * n
    seeds = [int(s) for s in seed]
    if len(seeds) != n:
        raise ValueError(f"generate: {len(seeds)} seeds for {n} prompts")
    return seeds


class LLMError(RuntimeError):
    """An LLM backend could not answer (after its retries, where it has any)."""


def check_prompts(prompts: Sequence[Prompt]) -> list[Prompt]:
    """Validate the prompt format early, with a message naming the bad prompt."""
    if isinstance(prompts, str | dict):
        raise TypeError("prompts must be a list of prompts (each a list of chat messages)")
    out = []
    for i, prompt in enumerate(prompts):
        if isinstance(prompt, str) or not isinstance(prompt, Sequence) or not prompt:
            raise TypeError(
                f"prompt {i} must be a non-empty list of chat messages "
                f'[{{"role": ..., "content": ...}}], got {type(prompt).__name__}'
            )
        for message in prompt:
            if not isinstance(message, dict) or message.get("role") not in ROLES:
                raise ValueError(
                    f"prompt {i}: each message needs a role in {ROLES}, got {message!r:.80}"
                )
            if not isinstance(message.get("content"), str):
                raise ValueError(f"prompt {i}: message content must be a string")
        out.append([{"role": m["role"], "content": m["content"]} for m in prompt])
    return out


class LLM(ABC):
    """The interface: four batched methods and an identity.

    - ``generate``: free text (greedy at temperature 0, seeded sampling otherwise);
    - ``choose``: which of a few candidate continuations the model finds most likely;
    - ``generate_json``: an object following a JSON-Schema subset (see ``json_schema``);
    - ``perplexity``: exp of the mean token negative log-likelihood of plain texts.
    """

    @property
    @abstractmethod
    def name(self) -> str:
        """Human-readable backend + model, e.g. ``local:smollm2-135m-instruct``."""

    @property
    @abstractmethod
    def cache_key_prefix(self) -> str:
        """Backend + model identity (+ numerics) that response-cache keys start from."""

    @abstractmethod
    def generate(
        self,
        prompts: Sequence[Prompt],
        max_new_tokens: int = 64,
        temperature: float = 0.0,
        stop: Sequence[str] | None = None,
        seed: int | Sequence[int] = 0,
    ) -> list[str]:
        """One completion per prompt; ``stop`` strings end it (and are not returned).

        ``seed`` seeds sampling: one for all prompts, or one per prompt (a sequence), so that
        agents sharing a prompt still draw their own answers."""

    @abstractmethod
    def choose(
        self,
        prompts: Sequence[Prompt],
        candidates: Sequence[Sequence[str]],
        normalize: bool = False,
    ) -> list[Choice]:
        """The most likely of ``candidates[i]`` as the assistant's answer to ``prompts[i]``.

        ``normalize`` picks by mean token log-likelihood instead of the total.
        """

    @abstractmethod
    def generate_json(
        self,
        prompts: Sequence[Prompt],
        schema: dict[str, Any],
        max_new_tokens_per_field: int = 48,
        temperature: float = 0.0,
        seed: int = 0,
    ) -> list[JsonResult]:
        """One object per prompt following ``schema``; never raises for a bad answer."""

    @abstractmethod
    def perplexity(self, texts: Sequence[str]) -> list[float]:
        """exp(mean token NLL) of each plain text (no chat template)."""

    def cached(self, path: Any, **kwargs: Any) -> LLM:
        """This backend behind a disk cache at ``path`` (see :class:`~.cache.CachedLLM`)."""
        from persona_shoppers.llm.cache import CachedLLM

        return CachedLLM(self, path, **kwargs)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


@contextlib.contextmanager
def prefilled(llm: LLM, prompts: Sequence[Prompt], upto: str | None = None) -> Iterator[None]:
    """Inside the block a local model keeps the KV cache of each prompt, or of its rendered
    text up to the first ``upto`` (e.g. the shared system prompt), so calls on these prompts
    run only what follows; the caches are released after. Endpoints cache prefixes on the
    server: for them (no ``prefill``) this does nothing."""
    if not prompts or not hasattr(llm, "prefill"):
        yield
        return
    rendered = (llm.render(p) for p in prompts)
    texts = sorted({r[: r.index(upto)] if upto else r for r in rendered})
    llm.prefill(texts)
    try:
        yield
    finally:
        llm.release(texts)
