"""The local backend's model: a Hugging Face causal LM run in-process with PyTorch (CPU or GPU).

Prompts are sorted by length and batched, left-padded with explicit position ids (an answer
does not depend on its batch), and the LM head runs only where logits are needed. It never
changes torch's global thread count. See docs/llm.md ("Local").
"""

from __future__ import annotations

import functools
import hashlib
import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import torch

from persona_shoppers.llm.base import (
    LLM,
    MAX_NEW_TOKENS,
    Choice,
    GuidedRequest,
    JsonResult,
    Prompt,
    prompt_seeds,
    render_chat,
    text_start_id,
)
from persona_shoppers.llm.constrained import constrained_json
from persona_shoppers.llm.json_schema import schema_instruction, with_instruction
from persona_shoppers.llm.local.attention import use_sdpa_gqa
from persona_shoppers.llm.local.batching import by_length
from persona_shoppers.llm.local.kv_cache import preallocated_cache
from persona_shoppers.llm.local.prefix_cache import PrefixCache
from persona_shoppers.llm.local.trie import TokenTrie
from persona_shoppers.llm.models import (
    DEFAULT_HF_CACHE_DIR,
    DEFAULT_MODEL,
    KNOWN_MODELS,
    fingerprint,
    resolve_model,
)
from persona_shoppers.numerics import AUTO, resolve_dtype

logger = logging.getLogger(__name__)

T = TypeVar("T")
DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32, "float16": torch.float16}
_END_TOKENS = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<end_of_turn>", "</s>")
_NUMBER_CHARS = set("0123456789-.")
_NUMBER_STOPS = (",", "}", " ", "\n")


def _locked(method: Callable[..., T]) -> Callable[..., T]:
    """Run under the instance's re-entrant lock: one model, used by one thread at a time
    (``build_llm`` shares an instance between the nodes of a run, maybe on threads)."""

    @functools.wraps(method)
    def wrapper(self: LocalLLM, *args: Any, **kwargs: Any) -> T:
        with self._lock:
            return method(self, *args, **kwargs)

    return wrapper


def _best(scores: Sequence[tuple[list[float], list[float]]], normalize: bool) -> list[int]:
    """The index of each prompt's best candidate by (total, mean) log-likelihood scores."""
    picks = []
    for total, mean in scores:
        values = mean if normalize else total
        picks.append(max(range(len(values)), key=values.__getitem__))
    return picks


def guided_logprobs(
    conditional: torch.Tensor, contrast: torch.Tensor, guidance: float
) -> torch.Tensor:
    """Classifier-free guidance (Sanchez et al. 2023): ``log p(x | prompt) + (guidance - 1) *
    (log p(x | prompt) - log p(x | contrast))`` from the two rows of logits (last axis: the
    vocabulary); 1 leaves the prompt's own log-probabilities."""
    conditional = torch.log_softmax(conditional.float(), dim=-1)
    contrast = torch.log_softmax(contrast.float(), dim=-1)
    return conditional + (guidance - 1.0) * (conditional - contrast)


def _row_seed(seed: int, text: str) -> int:
    """A per-prompt seed, so a sampled answer depends on (prompt, seed) only, not the batch."""
    return int.from_bytes(hashlib.sha256(f"{seed}\x00{text}".encode()).digest()[:7], "big")


class LocalLLM(LLM):
    """A causal LM from a local folder (or a known name converted once from its package).

    Parameters: ``model`` (``"smollm2-135m-instruct"`` or a path to a Hugging Face folder),
    ``dtype`` (``"auto"`` | ``"bfloat16"`` | ``"float32"`` | ``"float16"``), ``batch_size``
    (prompts per forward pass), ``device`` (``"cpu"``, ``"cuda"``, ...), ``hf_cache_dir`` (where
    known names are converted to), ``token_budget`` (padded tokens per forward pass, bounds
    memory in ``choose`` / ``perplexity``), ``max_length`` (longest prompt + answer accepted),
    ``prefix_cache_mb`` (memory for prompt KV caches reused across the fields of
    ``generate_json`` and the steps of an agent; 0 disables it), ``forward_cost_tokens`` (the
    fixed cost of a forward pass in padded tokens: rows of very different lengths run in
    separate passes when padding them would cost more; ``inf``: as few passes as possible, e.g.
    on a GPU where padding is nearly free).
    """

    def __init__(
        self,
        model: str | Path = DEFAULT_MODEL,
        dtype: str = AUTO,
        batch_size: int = 8,
        device: str = "cpu",
        hf_cache_dir: str | Path | None = DEFAULT_HF_CACHE_DIR,
        token_budget: int = 16384,
        max_length: int | None = None,
        prefix_cache_mb: float = 512,
        forward_cost_tokens: float = 64,
    ) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if dtype not in DTYPES and dtype != AUTO:
            raise ValueError(f"dtype must be {AUTO!r} or one of {sorted(DTYPES)}, got {dtype!r}")
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.model_name = str(model)
        self.folder = resolve_model(model, hf_cache_dir)
        self.dtype_name = resolve_dtype(dtype, device)
        self.batch_size = int(batch_size)
        self.token_budget = int(token_budget)
        self.forward_cost_tokens = float(forward_cost_tokens)
        self.device = torch.device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(self.folder)
        self.model = AutoModelForCausalLM.from_pretrained(
            self.folder, dtype=DTYPES[self.dtype_name]
        )
        self.model.to(self.device).eval()
        if self.device.type == "cpu":
            use_sdpa_gqa(self.model)
        self.config = self.model.config
        self.base = self.model.base_model
        self.lm_head = self.model.get_output_embeddings()
        self.softcap = getattr(self.config, "final_logit_softcapping", None)
        limit = getattr(self.config, "max_position_embeddings", None) or 2048
        self.max_length = int(max_length or limit)
        pad = self.tokenizer.pad_token_id
        if pad is None:
            pad = self.tokenizer.eos_token_id if self.tokenizer.eos_token_id is not None else 0
        self.pad_id = int(pad)
        vocab = self.tokenizer.get_vocab()
        ends = {vocab[t] for t in _END_TOKENS if t in vocab}
        for value in (self.tokenizer.eos_token_id, getattr(self.config, "eos_token_id", None)):
            if isinstance(value, int):
                ends.add(value)
            elif isinstance(value, list):
                ends.update(value)
        self.end_ids = sorted(ends)
        self.text_start_id = text_start_id(self.tokenizer)
        self._allowed_masks: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._lock = threading.RLock()
        self.prefix_cache_mb = float(prefix_cache_mb)
        self.prefix_cache = PrefixCache()
        known = self.model_name in KNOWN_MODELS
        self._identity = (
            self.model_name if known else f"{self.folder.resolve()}@{fingerprint(self.folder)}"
        )

    # ------------------------------------------------------------------ identity

    @property
    def name(self) -> str:
        return f"local:{self.model_name if self.model_name in KNOWN_MODELS else self.folder.name}"

    @property
    def cache_key_prefix(self) -> str:
        return f"local:{self._identity}:{self.dtype_name}"

    # ------------------------------------------------------------------ helpers

    def render(self, prompt: Prompt) -> str:
        """The model input text for a chat prompt (:func:`.base.render_chat`)."""
        return render_chat(self.tokenizer, prompt)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _check_length(self, index: int, n: int, extra: int) -> None:
        if n + extra > self.max_length:
            raise ValueError(
                f"prompt {index} is {n} tokens; with {extra} more it exceeds the model's "
                f"max_length {self.max_length}: shorten it"
            )

    def _left_pad(self, seqs: Sequence[Sequence[int]]) -> tuple[torch.Tensor, ...]:
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for r, seq in enumerate(seqs):
            if seq:
                ids[r, width - len(seq) :] = torch.tensor(seq, dtype=torch.long)
                mask[r, width - len(seq) :] = 1
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        return ids.to(self.device), mask.to(self.device), pos.to(self.device)

    def _forward(
        self,
        ids: torch.Tensor,
        mask: torch.Tensor,
        pos: torch.Tensor,
        past: Any = None,
        use_cache: bool = False,
    ) -> tuple[torch.Tensor, Any]:
        out = self.base(
            input_ids=ids,
            attention_mask=mask,
            position_ids=pos,
            cache=past,
            use_cache=use_cache,
        )
        return out.last_hidden_state, out.cache

    # ------------------------------------------------------------------ prompt KV cache

    @_locked
    def prefill(self, prefixes: Sequence[str]) -> None:
        """Keep the KV cache of these raw prefixes, so that later calls whose inputs start
        with one of them only run the rest (``generate_json`` reuses a prompt across fields,
        agents reuse their prompt across a step and its prefix across steps). A prefix that
        itself starts with a cached one only runs its new tokens. Bounded by
        ``prefix_cache_mb`` (least recently used entries are dropped); :meth:`release` frees
        them."""
        if self.prefix_cache_mb <= 0:
            return
        run, parts, uncached = self.prefix_cache.plan([tuple(self.encode(p)) for p in prefixes])
        for batch in self._batches([uncached[seq] for seq in run]):
            seqs = [run[i] for i in batch]
            with torch.inference_mode():
                last, past, mask, _, tail = self._start([list(seq) for seq in seqs])
            valid = mask.bool()
            for r, seq in enumerate(seqs):
                where = valid[r].nonzero()[:, 0]  # the row's cached and new positions, in order
                self.prefix_cache.keep(seq, past, r, where, last[r])
                for part in parts.get(seq, []):
                    # sequence index i sits at column T - len(seq) + i of the left-padded tail
                    end = tail[r, tail.shape[1] - len(seq) + len(part) - 1]
                    self.prefix_cache.keep(part, past, r, where[: len(part)], end)
        self.prefix_cache.trim(self.prefix_cache_mb * 2**20)

    @_locked
    def release(self, prefixes: Sequence[str] | None = None) -> None:
        """Forget cached prefixes (all of them by default)."""
        keys = (
            list(self.prefix_cache.entries)
            if prefixes is None
            else [tuple(self.encode(p)) for p in prefixes]
        )
        for key in keys:
            self.prefix_cache.drop(key)

    def _batches(self, lengths: Sequence[int], passes: int = 1) -> list[list[int]]:
        """Rows grouped for forward passes: ``batch_size`` and ``token_budget`` bound a batch,
        and within them padding is traded against ``forward_cost_tokens`` per pass (a batch
        makes ``passes`` of them)."""
        return by_length(
            lengths, self.batch_size, max(self.token_budget, 1), self.forward_cost_tokens * passes
        )

    def _start(
        self, seqs: list[list[int]], room: int = 0
    ) -> tuple[torch.Tensor, Any, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Run a batch of inputs; returns the last hidden state of each row (B, H), the KV
        cache (with space for ``room`` more positions, written in place), the attention mask
        (B, W), each row's next position (B, 1) and the hidden states of the tokens run
        (B, T, H), left-padded (None when every row was cached whole).

        Rows starting with a cached prefix reuse its KV: the cache is laid out as
        [pad][cached prefix] for every row, then the rest of each row is fed left-padded
        ([pad][rest]), with the padding masked and explicit position ids."""
        cache = self.prefix_cache
        hits = [cache.lookup(seq) for seq in seqs] if cache else [None] * len(seqs)
        rows = len(seqs)
        cached = [len(h) if h else 0 for h in hits]
        width = max(cached)
        tails = [seq[n:] for seq, n in zip(seqs, cached, strict=True)]
        span = max(len(t) for t in tails)
        entries = [cache[h] if h else None for h in hits]  # (KV, last state)
        past = preallocated_cache(
            self.config,
            rows,
            width,
            width + span + room,
            [e and e[0] for e in entries],
            self.model.dtype,
            self.device,
        )
        mask = torch.zeros((rows, width), dtype=torch.long)
        for r, n in enumerate(cached):
            if n:
                mask[r, width - n :] = 1
        mask = mask.to(self.device)
        last = torch.zeros(
            (rows, self.config.hidden_size), dtype=self.model.dtype, device=self.device
        )
        next_pos = torch.tensor([[n] for n in cached], dtype=torch.long, device=self.device)
        hidden = None
        if span:
            ids, tail_mask, tail_pos = self._left_pad([t if t else [self.pad_id] for t in tails])
            for r, t in enumerate(tails):
                if not t:
                    tail_mask[r] = 0
            tail_pos = tail_pos + next_pos
            mask = torch.cat([mask, tail_mask], dim=1)
            hidden, past = self._forward(ids, mask, tail_pos, past, use_cache=True)
            next_pos = next_pos + torch.tensor(
                [[len(t)] for t in tails], dtype=torch.long, device=self.device
            )
            last = hidden[:, -1].clone()
        for r, (t, entry) in enumerate(zip(tails, entries, strict=True)):
            if not t and entry is not None:
                last[r] = entry[1]
        return last, past, mask, next_pos, hidden

    def _logprobs(self, hidden: torch.Tensor) -> torch.Tensor:
        """log-softmax of the LM head over ``hidden`` (..., H) in float32."""
        return torch.log_softmax(self._logits(hidden), dim=-1)

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """The LM head over ``hidden`` (..., H) only, in float32."""
        logits = self.lm_head(hidden).float()
        if self.softcap:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits

    def _allowed(self, kind: str, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(first-step mask, later-step mask) over the vocabulary for constrained fields."""
        key = f"{kind}:{width}"
        if key not in self._allowed_masks:
            if kind != "number":
                raise ValueError(f"unknown allowed-token set {kind!r}")
            first = torch.zeros(width, dtype=torch.bool)
            later = torch.zeros(width, dtype=torch.bool)
            for i in range(min(width, len(self.tokenizer))):
                text = self.tokenizer.decode([i])
                if text and set(text) <= _NUMBER_CHARS:
                    first[i] = later[i] = True
                elif text and text[0] in _NUMBER_STOPS:
                    later[i] = True
            later[self.end_ids] = True
            self._allowed_masks[key] = (first.to(self.device), later.to(self.device))
        return self._allowed_masks[key]

    # ------------------------------------------------------------------ text-level primitives

    @_locked
    @torch.inference_mode()
    def generate_texts(
        self,
        prefixes: Sequence[str],
        max_new_tokens: int = MAX_NEW_TOKENS,
        stop: Sequence[str] | None = None,
        temperature: float = 0.0,
        seed: int | Sequence[int] = 0,
        allowed: str | None = None,
        ignore_eos: bool = False,
        contrast: Sequence[str] | None = None,
        guidance: float = 1.0,
    ) -> list[str]:
        """Continue raw model inputs (no chat template applied here). ``ignore_eos`` keeps
        generating past end-of-turn tokens (for benchmarks: exactly ``max_new_tokens``).
        ``contrast``: one raw input per prefix for classifier-free guidance
        (:func:`guided_logprobs`), run beside its prefix and fed the same tokens."""
        stop = [s for s in (stop or []) if s]
        seqs = [self.encode(p) for p in prefixes]
        others = [self.encode(p) for p in contrast] if contrast is not None else None
        for i, seq in enumerate(seqs):
            self._check_length(
                i, max(len(seq), len(others[i]) if others is not None else 0), max_new_tokens
            )
        seeds = [
            _row_seed(s, p)
            for s, p in zip(prompt_seeds(seed, len(prefixes)), prefixes, strict=True)
        ]
        out: list[str] = [""] * len(prefixes)
        # Each batch also makes up to max_new_tokens one-token passes: few, full batches.
        lengths = self.prefix_cache.uncached_lengths(seqs)
        if others is not None:  # a guided row runs as two
            lengths = [
                a + b
                for a, b in zip(lengths, self.prefix_cache.uncached_lengths(others), strict=True)
            ]
        for batch in self._batches(lengths, passes=1 + max_new_tokens):
            texts = self._generate_batch(
                [seqs[i] for i in batch],
                max_new_tokens,
                stop,
                temperature,
                [seeds[i] for i in batch],
                allowed,
                ignore_eos,
                [others[i] for i in batch] if others is not None else None,
                guidance,
            )
            for i, text in zip(batch, texts, strict=True):
                out[i] = text
        return out

    def _generate_batch(
        self,
        seqs: list[list[int]],
        max_new_tokens: int,
        stop: list[str],
        temperature: float,
        seeds: list[int],
        allowed: str | None,
        ignore_eos: bool = False,
        contrast: list[list[int]] | None = None,
        guidance: float = 1.0,
    ) -> list[str]:
        rows = len(seqs)
        if max_new_tokens <= 0:
            return [""] * rows
        fed = seqs if contrast is None else seqs + contrast  # contrast rows after the prompts
        last, past, mask, next_pos, _ = self._start(fed, room=max_new_tokens)
        generated: list[list[int]] = [[] for _ in range(rows)]
        texts: list[str | None] = [None] * rows
        generators = None
        if temperature > 0:
            generators = [torch.Generator(device="cpu").manual_seed(s) for s in seeds]
        end_ids = set() if ignore_eos else set(self.end_ids)
        for step in range(max_new_tokens):
            logits = self._logits(last)
            if contrast is not None:
                logits = guided_logprobs(logits[:rows], logits[rows:], guidance)
            if allowed is not None:
                first, later = self._allowed(allowed, logits.shape[-1])
                logits = logits.masked_fill(~(first if step == 0 else later), float("-inf"))
            if generators is None:
                tokens = logits.argmax(dim=-1)
            else:
                # Inverse-CDF sampling with one uniform per row from the row's own generator
                # (torch.multinomial with a generator is much slower: docs/llm.md).
                cdf = torch.softmax(logits / temperature, dim=-1).cumsum(dim=-1)
                u = torch.cat([torch.rand(1, generator=g) for g in generators]).to(cdf)
                tokens = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None])[:, 0]
                tokens = tokens.clamp(max=cdf.shape[-1] - 1)
            for r, token in enumerate(tokens.tolist()):
                if texts[r] is not None:
                    continue
                if token in end_ids:
                    texts[r] = self.tokenizer.decode(generated[r], skip_special_tokens=True)
                    continue
                generated[r].append(token)
                if stop:
                    text = self.tokenizer.decode(generated[r], skip_special_tokens=True)
                    cuts = [text.find(s) for s in stop if s in text]
                    if cuts:
                        texts[r] = text[: min(cuts)]
            if all(t is not None for t in texts) or step == max_new_tokens - 1:
                break
            if contrast is not None:
                tokens = tokens.repeat(2)
            ones = torch.ones((len(fed), 1), dtype=mask.dtype, device=self.device)
            mask = torch.cat([mask, ones], 1)
            hidden, past = self._forward(tokens[:, None], mask, next_pos, past, use_cache=True)
            last = hidden[:, -1]
            next_pos = next_pos + 1
        return [
            t if t is not None else self.tokenizer.decode(g, skip_special_tokens=True)
            for t, g in zip(texts, generated, strict=True)
        ]

    def _candidate_ids(self, prefix: str, prefix_ids: list[int], candidate: str) -> list[int]:
        """The candidate's tokens after ``prefix``: from tokenising prefix + candidate
        together where that keeps the prefix's tokens, else tokenised on its own."""
        if not candidate:
            raise ValueError("choose: candidates must be non-empty strings")
        full = self.encode(prefix + candidate)
        if full[: len(prefix_ids)] == prefix_ids and len(full) > len(prefix_ids):
            return full[len(prefix_ids) :]
        return self.encode(candidate)

    @_locked
    @torch.inference_mode()
    def score_texts(
        self, prefixes: Sequence[str], candidates: Sequence[Sequence[str]]
    ) -> list[tuple[list[float], list[float]]]:
        """(total, mean) log-likelihood of each candidate continuing each raw prefix."""
        if len(prefixes) != len(candidates):
            raise ValueError("choose: one list of candidates per prompt")
        seqs = [self.encode(p) for p in prefixes]
        cand_ids = []
        for i, (prefix, seq, cands) in enumerate(zip(prefixes, seqs, candidates, strict=True)):
            if not cands:
                raise ValueError(f"choose: prompt {i} has no candidates")
            ids = [self._candidate_ids(prefix, seq, c) for c in cands]
            self._check_length(i, len(seq), max(len(c) for c in ids))
            cand_ids.append(ids)
        out: list[tuple[list[float], list[float]]] = [([], [])] * len(prefixes)
        # Fed after each prompt: every candidate but its last token, merged into a trie.
        tries = [TokenTrie([c[:-1] for c in cs]) for cs in cand_ids]
        uncached = self.prefix_cache.uncached_lengths(seqs)
        lengths = [n + len(t.tokens) for n, t in zip(uncached, tries, strict=True)]
        for batch in self._batches(lengths):
            scores = self._score_batch(
                [seqs[i] for i in batch], [cand_ids[i] for i in batch], [tries[i] for i in batch]
            )
            for i, score in zip(batch, scores, strict=True):
                out[i] = score
        return out

    def _score_batch(
        self, seqs: list[list[int]], cands: list[list[list[int]]], tries: list[TokenTrie]
    ) -> list[tuple[list[float], list[float]]]:
        """Score every candidate of every prompt in one forward pass over the prompts' KV.

        The candidates of a prompt are fed after it as one token trie ("tree attention"):
        candidates that start alike (``{"action": "view", "product": "p0...``) share those
        tokens, each trie node is fed once, at the position of its depth, and a 4D mask lets it
        see the prompt and its own ancestors only. So the prompt's KV is computed once and
        never copied, and a shared start is computed once, whatever the number of candidates."""
        span = max(1, max(len(t.tokens) for t in tries))
        first, past, mask, next_pos, _ = self._start(seqs, room=span)  # first: predicts token 0
        rows, width = mask.shape
        ids = torch.full((rows, span), self.pad_id, dtype=torch.long)
        pos = torch.zeros((rows, span), dtype=torch.long)
        see = torch.zeros((rows, span, width + span), dtype=torch.bool)
        see[:, :, :width] = mask.bool().cpu()[:, None, :]
        for r, trie in enumerate(tries):
            n = len(trie.tokens)
            if n:
                ids[r, :n] = torch.tensor(trie.tokens, dtype=torch.long)
                pos[r, :n] = next_pos[r, 0].item() + torch.tensor(trie.depths)
                see[r, :n, width : width + n] = trie.ancestry()
            see[r, n:, width + n :] = torch.eye(span - n, dtype=torch.bool)  # padding rows
        attention = see[:, None].to(self.device)
        if self.model.config._attn_implementation == "eager":
            attention = (
                torch.zeros(attention.shape, dtype=self.model.dtype)
                .masked_fill(~attention, torch.finfo(self.model.dtype).min)
                .to(self.device)
            )
        hidden, _ = self._forward(ids.to(self.device), attention, pos.to(self.device), past)
        # Every state that predicts a scored token, once: row r's prompt end, then its trie
        # nodes. A state shared by many candidates (the prompt end, ``{"action": "``) gets its
        # log-normaliser once, and only the scored tokens' logits are read.
        states, index, targets, owners, base = [], [], [], [], 0
        for r, (cs, trie) in enumerate(zip(cands, tries, strict=True)):
            states.append(torch.cat([first[r][None], hidden[r, : len(trie.tokens)]]))
            for j, (c, path) in enumerate(zip(cs, trie.paths, strict=True)):
                index += [base, *(base + 1 + i for i in path)]
                targets += c
                owners += [(r, j)] * len(c)
            base += 1 + len(trie.tokens)
        logits = self._logits(torch.cat(states))
        index_t = torch.tensor(index, device=self.device)
        chosen = logits[index_t, torch.tensor(targets, device=self.device)]
        token_lp = (chosen - torch.logsumexp(logits, dim=-1)[index_t]).tolist()
        totals: list[list[float]] = [[0.0] * len(cs) for cs in cands]
        for (r, j), lp in zip(owners, token_lp, strict=True):
            totals[r][j] += lp
        return [
            (total, [t / len(c) for t, c in zip(total, cs, strict=True)])
            for total, cs in zip(totals, cands, strict=True)
        ]

    def choose_texts(
        self,
        prefixes: Sequence[str],
        candidates: Sequence[Sequence[str]],
        normalize: bool = False,
    ) -> list[int]:
        return _best(self.score_texts(prefixes, candidates), normalize)

    # ------------------------------------------------------------------ the interface

    def _generate(
        self,
        prompts: list[Prompt],
        max_new_tokens: int,
        temperature: float,
        stop: list[str],
        seeds: list[int],
    ) -> list[str]:
        return self.generate_texts(
            [self.render(p) for p in prompts], max_new_tokens, stop, temperature, seeds
        )

    def _generate_guided(self, request: GuidedRequest) -> list[str]:
        return self.generate_texts(
            [self.render(p) for p in request.prompts],
            request.max_new_tokens,
            request.stop,
            request.temperature,
            request.seeds,
            contrast=[self.render(p) for p in request.contrast],
            guidance=request.guidance,
        )

    def _choose(
        self, prompts: list[Prompt], candidates: list[list[str]], normalize: bool
    ) -> list[Choice]:
        scores = self.score_texts([self.render(p) for p in prompts], candidates)
        picks = _best(scores, normalize)
        return [
            Choice(index=k, text=cands[k], logprobs=total, mean_logprobs=mean)
            for cands, (total, mean), k in zip(candidates, scores, picks, strict=True)
        ]

    @_locked
    def _generate_json(
        self,
        prompts: list[Prompt],
        schema: dict[str, Any],
        max_new_tokens_per_field: int,
        temperature: float,
        seed: int,
        describe_schema: bool = True,
    ) -> list[JsonResult]:
        """Schema-valid by construction (see :func:`~persona_shoppers.llm.constrained.
        constrained_json`). ``describe_schema`` appends a short description of the keys and
        allowed values to the last user message, which helps small models."""
        if describe_schema:
            instruction = schema_instruction(schema)
            prompts = [with_instruction(p, instruction) for p in prompts]
        prefixes = [self.render(p) for p in prompts]
        # Groups of a few batches, so that their prompt KV caches stay within memory.
        group = 4 * self.batch_size
        order = sorted(range(len(prefixes)), key=lambda i: -len(prefixes[i]))
        results: list[JsonResult | None] = [None] * len(prefixes)
        for start in range(0, len(order), group):
            rows = order[start : start + group]
            answers = constrained_json(
                self,
                [prefixes[i] for i in rows],
                schema,
                max_new_tokens_per_field,
                temperature,
                seed,
            )
            for i, answer in zip(rows, answers, strict=True):
                results[i] = answer
        return results  # type: ignore[return-value]

    @_locked
    @torch.inference_mode()
    def _perplexity(self, texts: list[str]) -> list[float]:
        """exp(mean NLL) over every token of each text, the first one conditioned on the
        start-of-text token (``<|endoftext|>`` where the vocabulary has it, else BOS/EOS).
        An empty text gives NaN."""
        seqs = []
        for i, text in enumerate(texts):
            seq = ([self.text_start_id] if self.text_start_id is not None else []) + self.encode(
                text
            )
            self._check_length(i, len(seq), 0)
            seqs.append(seq)
        out = [float("nan")] * len(seqs)
        for batch in self._batches([len(s) for s in seqs]):
            group = [seqs[i] for i in batch]
            width = max(len(s) for s in group)
            ids = torch.full((len(group), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(group), width), dtype=torch.long)
            for r, seq in enumerate(group):
                ids[r, : len(seq)] = torch.tensor(seq, dtype=torch.long)
                mask[r, : len(seq)] = 1
            ids, mask = ids.to(self.device), mask.to(self.device)
            pos = torch.arange(width, device=self.device)[None, :].expand(len(group), -1)
            hidden, _ = self._forward(ids, mask, pos)
            scored = mask[:, 1:].bool()  # position t predicts token t + 1
            if not scored.any():
                continue
            logp = self._logprobs(hidden[:, :-1][scored])
            nll = -logp.gather(1, ids[:, 1:][scored][:, None])[:, 0]
            owner = torch.arange(len(group), device=self.device)[:, None].expand(-1, width - 1)
            sums = torch.zeros(len(group), device=self.device).index_add_(0, owner[scored], nll)
            counts = scored.sum(1)
            for r, i in enumerate(batch):
                if counts[r] > 0:
                    out[i] = float(torch.exp(sums[r] / counts[r]))
        return out
