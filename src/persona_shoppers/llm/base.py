"""The LLM interface every pipeline calls, and the small records it returns (docs/llm.md).

A *prompt* is a list of chat messages ``[{"role": "system" | "user" | "assistant",
"content": str}]``. Every method is batched: one answer per prompt, in order. :class:`LLM`'s
public methods check their arguments and own the defaults; backends implement its private steps.
"""

from __future__ import annotations

import contextlib
import math
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from persona_shoppers.llm.json_schema import check_schema

Message = dict[str, str]
Prompt = list[Message]

ROLES = ("system", "user", "assistant")
MAX_NEW_TOKENS = 64  # generate
MAX_NEW_TOKENS_PER_FIELD = 64  # generate_json


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


def render_chat(tokenizer: Any, prompt: Prompt) -> str:
    """The model input text for a chat prompt, ready for the assistant to continue, by the
    tokenizer's chat template (``role: content`` lines without one). A prompt ending with an
    assistant message is continued (prefill)."""
    cont = prompt[-1]["role"] == "assistant"
    if tokenizer.chat_template:
        return tokenizer.apply_chat_template(
            prompt, tokenize=False, add_generation_prompt=not cont, continue_final_message=cont
        )
    text = "".join(f"{m['role']}: {m['content']}\n" for m in prompt)
    return text[:-1] if cont else text + "assistant: "


def text_start_id(tokenizer: Any) -> int | None:
    """The token a plain text's first token is conditioned on in ``perplexity``:
    ``<|endoftext|>`` where the vocabulary has it, else BOS, else EOS."""
    start = tokenizer.get_vocab().get("<|endoftext|>")
    if start is None:
        start = tokenizer.bos_token_id
    return start if start is not None else tokenizer.eos_token_id


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


def check_candidates(candidates: Sequence[Sequence[str]], n: int) -> list[list[str]]:
    """One non-empty list of candidate texts per prompt (``n`` prompts)."""
    if isinstance(candidates, str) or len(candidates) != n:
        raise ValueError("choose: one list of candidates per prompt")
    out = []
    for i, cands in enumerate(candidates):
        if isinstance(cands, str):
            raise TypeError(f"choose: the candidates of prompt {i} must be a list of texts")
        if not cands:
            raise ValueError(f"choose: prompt {i} has no candidates")
        out.append(list(cands))
    return out


def check_texts(texts: Sequence[str]) -> list[str]:
    """Plain texts for ``perplexity``: a list of strings."""
    if isinstance(texts, str):
        raise TypeError("perplexity takes a list of texts")
    out = list(texts)
    for i, text in enumerate(out):
        if not isinstance(text, str):
            raise TypeError(f"perplexity: text {i} must be a string, got {type(text).__name__}")
    return out


@dataclass(frozen=True)
class GuidedRequest:
    """A checked ``generate`` call with classifier-free guidance: one contrast prompt and one
    seed per prompt."""

    prompts: list[Prompt]
    contrast: list[Prompt]
    guidance: float
    max_new_tokens: int
    temperature: float
    stop: list[str]
    seeds: list[int]

    def rows(self, index: Sequence[int]) -> GuidedRequest:
        """The same call on the prompts at ``index``."""
        return replace(
            self,
            prompts=[self.prompts[i] for i in index],
            contrast=[self.contrast[i] for i in index],
            seeds=[self.seeds[i] for i in index],
        )


class LLM(ABC):
    """The interface: four batched methods and an identity.

    - ``generate``: free text (greedy at temperature 0, seeded sampling otherwise);
    - ``choose``: which of a few candidate continuations the model finds most likely;
    - ``generate_json``: an object following a JSON-Schema subset (see ``json_schema``);
    - ``perplexity``: exp of the mean token negative log-likelihood of plain texts.

    Each public method checks its arguments once, here, and calls the backend's private step
    (``_generate``, ``_choose``, ``_generate_json``, ``_perplexity``) with checked ones.
    """

    @property
    @abstractmethod
    def name(self) -> str:
        """Human-readable backend + model, e.g. ``local:smollm2-135m-instruct``."""

    @property
    @abstractmethod
    def cache_key_prefix(self) -> str:
        """Backend + model identity (+ numerics) that response-cache keys start from."""

    def generate(
        self,
        prompts: Sequence[Prompt],
        max_new_tokens: int = MAX_NEW_TOKENS,
        temperature: float = 0.0,
        stop: Sequence[str] | None = None,
        seed: int | Sequence[int] = 0,
        contrast: Sequence[Prompt] | None = None,
        guidance: float = 1.0,
    ) -> list[str]:
        """One completion per prompt; ``stop`` strings end it (and are not returned).

        ``seed`` seeds sampling: one for all prompts, or one per prompt (a sequence), so that
        agents sharing a prompt still draw their own answers. ``contrast`` (one prompt per
        prompt) with ``guidance`` > 1: classifier-free guidance, each token drawn from
        :func:`~persona_shoppers.llm.local.backend.guided_logprobs` of the prompt's and its
        contrast's next-token log-probabilities (docs/llm.md, "Guided generation")."""
        prompts = check_prompts(prompts)
        seeds = prompt_seeds(seed, len(prompts))
        stop = list(stop or [])
        if guidance < 1.0:
            raise ValueError(f"generate: guidance must be >= 1, got {guidance}")
        if contrast is None or guidance == 1.0:
            return self._generate(prompts, max_new_tokens, temperature, stop, seeds)
        contrast = check_prompts(contrast)
        if len(contrast) != len(prompts):
            raise ValueError(
                f"generate: one contrast prompt per prompt, got {len(contrast)} for {len(prompts)}"
            )
        return self._generate_guided(
            GuidedRequest(prompts, contrast, guidance, max_new_tokens, temperature, stop, seeds)
        )

    def choose(
        self,
        prompts: Sequence[Prompt],
        candidates: Sequence[Sequence[str]],
        normalize: bool = False,
    ) -> list[Choice]:
        """The most likely of ``candidates[i]`` as the assistant's answer to ``prompts[i]``.

        ``normalize`` picks by mean token log-likelihood instead of the total.
        """
        prompts = check_prompts(prompts)
        return self._choose(prompts, check_candidates(candidates, len(prompts)), normalize)

    def generate_json(
        self,
        prompts: Sequence[Prompt],
        schema: dict[str, Any],
        max_new_tokens_per_field: int = MAX_NEW_TOKENS_PER_FIELD,
        temperature: float = 0.0,
        seed: int = 0,
        **options: Any,
    ) -> list[JsonResult]:
        """One object per prompt following ``schema``; never raises for a bad answer.
        ``options`` are the backend's own (e.g. the local ``describe_schema``)."""
        prompts = check_prompts(prompts)
        check_schema(schema)
        return self._generate_json(
            prompts, schema, max_new_tokens_per_field, temperature, seed, **options
        )

    def perplexity(self, texts: Sequence[str]) -> list[float]:
        """exp(mean token NLL) of each plain text (no chat template)."""
        return self._perplexity(check_texts(texts))

    @abstractmethod
    def _generate(
        self,
        prompts: list[Prompt],
        max_new_tokens: int,
        temperature: float,
        stop: list[str],
        seeds: list[int],
    ) -> list[str]:
        """``generate`` on checked prompts, with one seed per prompt."""

    def _generate_guided(self, request: GuidedRequest) -> list[str]:
        """``generate`` with classifier-free guidance; backends that see next-token
        distributions implement it."""
        raise NotImplementedError(
            f"{self.name}: guided generation needs the next-token distributions of a local "
            "model; set the guidance to 1 (e.g. agent_decoding.query_guidance in globals.yml)"
        )

    @abstractmethod
    def _choose(
        self, prompts: list[Prompt], candidates: list[list[str]], normalize: bool
    ) -> list[Choice]:
        """``choose`` on checked prompts, each with a non-empty list of candidates."""

    @abstractmethod
    def _generate_json(
        self,
        prompts: list[Prompt],
        schema: dict[str, Any],
        max_new_tokens_per_field: int,
        temperature: float,
        seed: int,
        **options: Any,
    ) -> list[JsonResult]:
        """``generate_json`` on checked prompts and a schema in the supported subset."""

    @abstractmethod
    def _perplexity(self, texts: list[str]) -> list[float]:
        """``perplexity`` on a list of strings."""

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
